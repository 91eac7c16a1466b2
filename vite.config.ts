/**
 * Build of the lesson web app (web/ + lessons/). The lab server calls Vite's build() with this
 * file when dist/web is missing or stale, so every path here is absolute (independent of cwd).
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

export default defineConfig({
  root: here('./web'),
  // Assets are referenced from /, so deep links such as /lessons/round-robin work with the SPA fallback.
  base: '/',
  plugins: [svelte({ configFile: here('./svelte.config.js') })],
  build: {
    outDir: here('./dist/web'),
    emptyOutDir: true,
    // xterm alone is ~300 kB; this is a local app, not a website.
    chunkSizeWarningLimit: 1500,
  },
  server: {
    fs: { allow: [here('./web'), here('./lessons'), here('./lab'), here('./server'), here('./node_modules')] },
  },
});
