/**
 * The lessons: every `lessons/NN-slug/index.md`, compiled by mdsvex, with its front matter.
 * The route of `lessons/01-round-robin` is `/lessons/round-robin`.
 */
import type { Component } from 'svelte';

export interface LessonMeta {
  title: string;
  summary: string;
  order: number;
  proxies: string[];
}

export interface Lesson {
  slug: string;
  /** Folder name, e.g. `01-round-robin`. */
  folder: string;
  meta: LessonMeta;
  component: Component;
}

type LessonModule = { default: Component; metadata?: Record<string, unknown> };

// Relative to this file: the Vite root is web/, the lessons live beside it.
const modules = import.meta.glob<LessonModule>('../../../lessons/*/index.md', { eager: true });

function toLesson(path: string, mod: LessonModule): Lesson {
  const folder = path.split('/').at(-2) ?? path;
  const md = mod.metadata ?? {};
  const order = Number(md.order ?? (/^(\d+)/.exec(folder)?.[1] ?? 999));
  return {
    slug: folder.replace(/^\d+-/, ''),
    folder,
    component: mod.default,
    meta: {
      title: typeof md.title === 'string' ? md.title : folder,
      summary: typeof md.summary === 'string' ? md.summary : '',
      order: Number.isFinite(order) ? order : 999,
      proxies: Array.isArray(md.proxies) ? md.proxies.map(String) : ['embedded'],
    },
  };
}

export const lessons: Lesson[] = Object.entries(modules)
  .map(([path, mod]) => toLesson(path, mod))
  .sort((a, b) => a.meta.order - b.meta.order || a.folder.localeCompare(b.folder));

export function findLesson(slug: string): Lesson | undefined {
  return lessons.find((l) => l.slug === slug || l.folder === slug);
}

export const lessonHref = (lesson: Lesson) => `/lessons/${lesson.slug}`;
