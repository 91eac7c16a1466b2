/**
 * The lessons: every `lessons/NN-slug/index.md`, compiled by mdsvex, with its front matter.
 * The route of `lessons/01-round-robin` is `/lessons/round-robin`.
 */
import type { Component } from 'svelte';

/** The part of a lesson's starting topology the shell compares with the running lab. */
export interface LessonTopology {
  /** Service name -> replica count. */
  services: Record<string, number>;
  /** `host` absent = any host. */
  routes: Array<{ service: string; host?: string; pathPrefix: string; stripPrefix: boolean }>;
  /** `static` or `dynamic` when the lesson says so. */
  discovery?: string;
}

export interface LessonMeta {
  title: string;
  summary: string;
  order: number;
  proxies: string[];
  /** The lesson's starting topology; null when it uses the lab's default. */
  topology: LessonTopology | null;
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
      topology: toTopology(md.topology),
    },
  };
}

function toTopology(raw: unknown): LessonTopology | null {
  if (!raw || typeof raw !== 'object') return null;
  const t = raw as { services?: Record<string, { replicas?: unknown }>; routes?: Array<Record<string, unknown>>; discovery?: unknown };
  const services: Record<string, number> = {};
  for (const [name, spec] of Object.entries(t.services ?? {})) services[name] = Number(spec?.replicas ?? 0);
  const routes = (t.routes ?? []).map((r) => ({
    service: String(r.service),
    ...(typeof r.host === 'string' ? { host: r.host } : {}),
    pathPrefix: typeof r.pathPrefix === 'string' ? r.pathPrefix : '/',
    stripPrefix: r.stripPrefix === true,
  }));
  return { services, routes, ...(typeof t.discovery === 'string' ? { discovery: t.discovery } : {}) };
}

/**
 * What the running lab lacks for this lesson: services it declares (with replicas) that the lab does
 * not run, and routes it declares that the lab does not have. Empty lists = ready.
 *
 * When the lab was last set up for another lesson (`running.lesson`, a folder name), `others` also
 * lists where it differs from this lesson's start: replica counts and discovery (lessons 03 and 04
 * run the same service with different counts). Scaling within a lesson is never flagged.
 */
export function lessonGaps(
  lesson: Lesson,
  running: {
    services: Record<string, unknown>;
    routes: Array<{ service: string; host?: string; pathPrefix: string }>;
    lesson?: string | null;
    discovery?: string;
  },
): { services: string[]; routes: string[]; others: string[] } {
  const topo = lesson.meta.topology;
  if (!topo) return { services: [], routes: [], others: [] };
  const services = Object.entries(topo.services)
    .filter(([name, n]) => n > 0 && !(name in running.services))
    .map(([name]) => name);
  // Hosts count when the lab was set up for another lesson: a route on demo.localhost (lesson 07)
  // does not serve a lesson whose pages use localhost. Within a lesson, editing a host is the lesson.
  const sameHost = (a?: string, b?: string) => running.lesson === lesson.folder || (a ?? '').toLowerCase() === (b ?? '').toLowerCase();
  const routes = topo.routes
    .filter((r) => !running.routes.some((x) => x.service === r.service && x.pathPrefix === r.pathPrefix && sameHost(x.host, r.host)))
    .map((r) => `${r.host ?? ''}${r.pathPrefix} → ${r.service}`);
  const others: string[] = [];
  if (running.lesson && running.lesson !== lesson.folder) {
    for (const [name, n] of Object.entries(topo.services)) {
      const spec = running.services[name] as { replicas?: number } | undefined;
      if (spec && typeof spec.replicas === 'number' && spec.replicas !== n) others.push(`${name} ×${n} (the lab runs ×${spec.replicas})`);
    }
    if (topo.discovery && running.discovery && topo.discovery !== running.discovery) others.push(`${topo.discovery} discovery (the lab uses ${running.discovery})`);
  }
  return { services, routes, others };
}

export const lessons: Lesson[] = Object.entries(modules)
  .map(([path, mod]) => toLesson(path, mod))
  .sort((a, b) => a.meta.order - b.meta.order || a.folder.localeCompare(b.folder));

export function findLesson(slug: string): Lesson | undefined {
  return lessons.find((l) => l.slug === slug || l.folder === slug);
}

export const lessonHref = (lesson: Lesson) => `/lessons/${lesson.slug}`;
