// Lessons are mdsvex Markdown modules: a component plus the front matter as `metadata`.
declare module '*.md' {
  import type { Component } from 'svelte';
  const component: Component<Record<string, never>>;
  export default component;
  export const metadata: Record<string, unknown>;
}
