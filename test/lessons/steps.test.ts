/**
 * The step structure of the lessons (what the shell splits on, see web/src/lib/steps.ts): every
 * `##` heading is a step; every check a lesson places (`<StepCheck id>` or `<CheckButton id>`) is
 * listed in its front matter `checks:`, and every listed check is placed in a step; StepCheck's
 * `on` is one of its triggers; a widget shared with other steps (`<div data-steps="5-8">`) names
 * later steps that exist. No lesson carries hand-written step numbers (the shell numbers
 * the steps; a number in a heading would disagree with it).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { LESSONS_DIR, loadLessons } from '../../server/lessons.ts';

const lessons = loadLessons();

function body(slug: string): string {
  const text = readFileSync(path.join(LESSONS_DIR, slug, 'index.md'), 'utf8');
  return text.replace(/^---\r?\n[\s\S]*?\r?\n---/, '');
}

describe.each(lessons.map((l) => [l.slug, l] as const))('lesson %s', (slug, lesson) => {
  const md = body(slug);
  const headings = [...md.matchAll(/^## (.+)$/gm)].map((m) => m[1]);
  const placed = [...md.matchAll(/<(?:StepCheck|CheckButton)\b[^>]*\bid="([^"]+)"/g)].map((m) => m[1]);

  it('has steps: at least three ## headings', () => {
    expect(headings.length, headings.join(' | ')).toBeGreaterThanOrEqual(3);
  });

  it('places exactly the checks its front matter lists, each once', () => {
    expect([...placed].sort()).toEqual([...lesson.checks].sort());
  });

  it('shares widgets (data-steps) only with later steps that exist', () => {
    const stepOfIndex = (i: number) => [...md.slice(0, i).matchAll(/^## /gm)].length;
    for (const m of md.matchAll(/<div data-steps="([^"]+)">/g)) {
      const own = stepOfIndex(m.index);
      const listed = m[1].split(',').flatMap((part) => {
        const [a, b] = part.split('-').map(Number);
        return Array.from({ length: (b || a) - a + 1 }, (_, k) => a + k);
      });
      for (const n of listed) {
        expect(n, `data-steps="${m[1]}" in step ${own}`).toBeGreaterThan(own);
        expect(n).toBeLessThanOrEqual(headings.length);
      }
    }
  });

  it('gives every StepCheck a known trigger', () => {
    for (const m of md.matchAll(/<StepCheck\b[^>]*\bon="([^"]+)"/g)) expect(['status', 'requests', 'manual']).toContain(m[1]);
  });

  {
    it('numbers no heading itself (the shell numbers the steps)', () => {
      expect(headings.filter((h) => /^step\s+\d/i.test(h))).toEqual([]);
      expect(md).not.toMatch(/\bStep \d\b/);
    });
  }
});
