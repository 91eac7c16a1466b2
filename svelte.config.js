// Svelte + mdsvex: lessons are Markdown (.md) with live Svelte widgets inside.
import { mdsvex } from 'mdsvex';
import { vitePreprocess } from '@sveltejs/vite-plugin-svelte';

/** @type {import('@sveltejs/vite-plugin-svelte').SvelteConfig} */
export default {
  extensions: ['.svelte', '.md'],
  preprocess: [vitePreprocess(), mdsvex({ extensions: ['.md'] })],
  compilerOptions: {
    // mdsvex emits pre-runes Svelte: let .md files (and libraries) pick their mode, force runes in ours.
    runes: ({ filename }) => (filename?.endsWith('.md') || filename?.includes('/node_modules/') ? undefined : true),
    // mdsvex 0.12 still writes <script context="module"> for front matter; harmless in Svelte 5.
    warningFilter: (w) => !(w.code === 'script_context_deprecated' && w.filename?.endsWith('.md')),
  },
};
