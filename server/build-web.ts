/**
 * Builds the web app with Vite when dist/web is missing or older than its sources, so a fresh
 * clone only needs `npm install && npm start`.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './state-file.ts';

export const WEB_DIST = path.join(REPO_ROOT, 'dist', 'web');
const SOURCES = ['web', 'lessons', 'vite.config.ts', 'svelte.config.js'];

/** Newest modification time (ms) under `p`, 0 when absent. */
function newestMtime(p: string): number {
  if (!existsSync(p)) return 0;
  const st = statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const entry of readdirSync(p)) {
    if (entry === 'node_modules') continue;
    newest = Math.max(newest, newestMtime(path.join(p, entry)));
  }
  return newest;
}

/** True when dist/web/index.html is missing or older than any source file. */
export function webBuildIsStale(): boolean {
  const built = path.join(WEB_DIST, 'index.html');
  if (!existsSync(built)) return true;
  const builtAt = statSync(built).mtimeMs;
  return SOURCES.some((s) => newestMtime(path.join(REPO_ROOT, s)) > builtAt);
}

/** Runs Vite's build (in this process, no shell) if needed. `log` gets progress sentences. */
export async function buildWebIfNeeded(log: (line: string) => void): Promise<boolean> {
  if (!webBuildIsStale()) return false;
  log('Building the web app (first start, or lessons changed)...');
  const started = Date.now();
  const { build } = await import('vite');
  await build({ configFile: path.join(REPO_ROOT, 'vite.config.ts'), logLevel: 'warn' });
  log(`Web app built in ${((Date.now() - started) / 1000).toFixed(1)} s.`);
  return true;
}
