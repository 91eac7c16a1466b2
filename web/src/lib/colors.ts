/**
 * One colour per replica, derived from its hostname only, shared by every widget (list, timeline,
 * count bars, terminal). Hostnames such as `web_dynamic-2-a1b2` put their replica number on the
 * golden angle (137.5°), so consecutive replicas of a service get well separated hues; other
 * names fall back to a hash. Colour is never the only cue: widgets also print the hostname.
 */

function hash(text: string): number {
  // FNV-1a, 32 bit
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const NUMBERED = /^(.*?)[-_](\d+)(?:[-_][a-z0-9]+)?$/i;

/** Hue in degrees (0..360) of a replica. */
export function replicaHue(hostname: string): number {
  const m = NUMBERED.exec(hostname);
  if (m) {
    const base = (hash(m[1]) % 360) * 1.0;
    return (base + Number(m[2]) * 137.508) % 360;
  }
  return hash(hostname) % 360;
}

/** CSS colour for a replica. `tone: 'dark'` for marks and dots on a light page, `'light'` on a dark background. */
export function replicaColor(hostname: string, tone: 'dark' | 'light' = 'dark'): string {
  const h = replicaHue(hostname).toFixed(1);
  return tone === 'dark' ? `hsl(${h} 70% 40%)` : `hsl(${h} 80% 70%)`;
}

/** The same colour as RGB (0..255), for ANSI true-colour escapes in the terminal. */
export function replicaRgb(hostname: string, tone: 'dark' | 'light' = 'light'): [number, number, number] {
  const [s, l] = tone === 'dark' ? [0.7, 0.4] : [0.8, 0.7];
  return hslToRgb(replicaHue(hostname), s, l);
}

function hslToRgb(h: number, s: number, l: number): [number, number, number] {
  const a = s * Math.min(l, 1 - l);
  const f = (n: number) => {
    const k = (n + h / 30) % 12;
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

/**
 * Colour of an HTTP status in charts (`0` = no answer: refused, reset or timed out). Successes are
 * a pale green; the failure codes are distinct saturated reds/browns, so 502 and 503 can be told apart.
 */
export function statusColor(status: string | number): string {
  const s = Number(status);
  if (s === 0 || Number.isNaN(s)) return '#4a1410';
  // Pale, so that successes never look like a replica's (saturated) colour next to them.
  if (s < 300) return '#bfdcc7';
  if (s < 400) return '#c9d6ea';
  if (s < 500) return '#d9a640';
  if (s === 500) return '#e8743b';
  if (s === 502) return '#c0392b';
  if (s === 503) return '#a84a00';
  if (s === 504) return '#7a1c16';
  return '#a8322d';
}

/** How a status reads in a legend or a table. */
export function statusLabel(status: string | number): string {
  return String(status) === '0' ? 'no answer' : String(status);
}

/** Grey of "no replica answered" in per-replica charts. */
export const NO_REPLICA_COLOR = '#aab2ba';

/** Whether a status counts as failed (5xx, or `0` = no answer), as the lab counts failures. */
export const isFailedStatus = (status: string | number): boolean => {
  const s = Number(status);
  return s === 0 || Number.isNaN(s) || s >= 500;
};

/** CSS background for a legend swatch: failed statuses hatched like the chart's bars. */
export function statusSwatch(status: string | number): string {
  const c = statusColor(status);
  return isFailedStatus(status) ? `repeating-linear-gradient(135deg, ${c} 0 2px, ${c}4d 2px 5px)` : c;
}
