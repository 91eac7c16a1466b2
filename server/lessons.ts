/**
 * Reads the lessons' front matter (lessons/NN-slug/index.md) so the server can restore a
 * lesson's starting topology (`reset <lesson>`). The web app reads the same files through Vite.
 */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { Topology } from '../lab/topology.ts';
import { CHECKS } from '../lab/checks.ts';
import { REPO_ROOT } from './state-file.ts';

export const LESSONS_DIR = path.join(REPO_ROOT, 'lessons');

const FrontMatter = z.object({
  title: z.string(),
  order: z.number().int(),
  summary: z.string().optional(),
  topology: Topology.optional(),
  /** Ids of checks in lab/checks.ts. */
  checks: z.array(z.string()).optional(),
});

export interface LessonInfo {
  /** Folder name, e.g. `01-round-robin`. */
  slug: string;
  title: string;
  order: number;
  /** The starting topology ("before"); undefined = the default topology. */
  topology?: Topology;
  checks: string[];
}

/**
 * Loads every lesson's front matter, sorted by `order`.
 * @throws Error naming the lesson file when its front matter is missing or invalid.
 */
export function loadLessons(dir: string = LESSONS_DIR): LessonInfo[] {
  if (!existsSync(dir)) return [];
  const lessons: LessonInfo[] = [];
  for (const slug of readdirSync(dir).sort()) {
    const file = path.join(dir, slug, 'index.md');
    if (!existsSync(file)) continue;
    const text = readFileSync(file, 'utf8');
    const m = /^---\r?\n([\s\S]*?)\r?\n---/.exec(text);
    if (!m) throw new Error(`${file} has no front matter (--- ... ---).`);
    const parsed = FrontMatter.safeParse(parseYaml(m[1]));
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(`${file}: front matter field ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
    }
    const unknown = (parsed.data.checks ?? []).filter((id) => !CHECKS.has(id));
    if (unknown.length) throw new Error(`${file}: unknown check(s) ${unknown.join(', ')}; known: ${[...CHECKS.keys()].join(', ')}.`);
    lessons.push({ slug, title: parsed.data.title, order: parsed.data.order, topology: parsed.data.topology, checks: parsed.data.checks ?? [] });
  }
  return lessons.sort((a, b) => a.order - b.order);
}
