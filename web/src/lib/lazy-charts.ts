/**
 * Chart.js is loaded on demand (its own chunk): only the lessons with charts pay for it. Every
 * chart widget awaits the same import.
 */
export type ChartsModule = typeof import('./charts.ts');

let loading: Promise<ChartsModule> | null = null;

export function loadCharts(): Promise<ChartsModule> {
  loading ??= import('./charts.ts');
  return loading;
}
