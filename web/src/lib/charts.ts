/**
 * Chart.js 4, with only the pieces the lab's charts use registered (tree-shaken): stacked bars
 * (LoadChart) and a scatter over a linear time axis (ProbeTimeline). Animations are off: the charts
 * are redrawn as events arrive and must stay cheap.
 */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  PointElement,
  ScatterController,
  Tooltip,
  type ChartConfiguration,
  type Plugin,
} from 'chart.js';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, PointElement, ScatterController, Tooltip, Legend);

Chart.defaults.animation = false;
Chart.defaults.font.family = getComputedStyle(document.documentElement).getPropertyValue('--font-sans').trim() || 'system-ui, sans-serif';
Chart.defaults.color = '#59626b';

export { Chart };
export type { ChartConfiguration, Plugin };

/** A vertical line with a label at `x` (scale units), for ProbeTimeline's DOWN/UP moments. */
export interface VerticalMarker {
  x: number;
  color: string;
  label: string;
  dash?: number[];
}

/**
 * Draws `markers()` as vertical lines across the chart area, labels at the top. Registered per chart
 * (in its `plugins` list), not globally.
 */
export function verticalMarkers(markers: () => readonly VerticalMarker[]): Plugin {
  return {
    id: 'verticalMarkers',
    afterDatasetsDraw(chart) {
      const { ctx, chartArea, scales } = chart;
      const x = scales.x;
      if (!x) return;
      ctx.save();
      ctx.font = `600 11px ${Chart.defaults.font.family}`;
      ctx.textBaseline = 'top';
      let lastLabelEnd = -Infinity;
      let row = 0;
      for (const m of markers()) {
        const px = x.getPixelForValue(m.x);
        if (px < chartArea.left || px > chartArea.right) continue;
        ctx.strokeStyle = m.color;
        ctx.lineWidth = 2;
        ctx.setLineDash(m.dash ?? []);
        ctx.beginPath();
        ctx.moveTo(px, chartArea.top);
        ctx.lineTo(px, chartArea.bottom);
        ctx.stroke();
        ctx.setLineDash([]);
        // Labels that would overlap the previous one go one line lower.
        const width = ctx.measureText(m.label).width;
        row = px + 3 < lastLabelEnd ? (row + 1) % 3 : 0;
        const lx = Math.min(px + 3, chartArea.right - width);
        ctx.fillStyle = 'rgba(255,255,255,0.85)';
        ctx.fillRect(lx - 1, chartArea.top + 1 + row * 13, width + 2, 12);
        ctx.fillStyle = m.color;
        ctx.fillText(m.label, lx, chartArea.top + 1 + row * 13);
        lastLabelEnd = Math.max(lastLabelEnd, lx + width);
      }
      ctx.restore();
    },
  };
}

const patterns = new Map<string, CanvasPattern>();

/**
 * A diagonal hatch in `color` (over a pale tint of it), for failed requests: a failure never looks
 * like a replica's plain colour, whatever hue that replica got. Cached per colour.
 */
export function hatch(color: string): CanvasPattern | string {
  const cached = patterns.get(color);
  if (cached) return cached;
  const tile = document.createElement('canvas');
  tile.width = 8;
  tile.height = 8;
  const ctx = tile.getContext('2d');
  if (!ctx) return color;
  ctx.fillStyle = color;
  ctx.globalAlpha = 0.3;
  ctx.fillRect(0, 0, 8, 8);
  ctx.globalAlpha = 1;
  ctx.strokeStyle = color;
  ctx.lineWidth = 2.5;
  ctx.beginPath();
  for (const [x0, y0, x1, y1] of [[-2, 10, 10, -2], [-2, 2, 2, -2], [6, 10, 10, 6]]) {
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
  }
  ctx.stroke();
  const pattern = ctx.createPattern(tile, 'repeat');
  if (!pattern) return color;
  patterns.set(color, pattern);
  return pattern;
}
