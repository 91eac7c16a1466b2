import { describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadLessons } from './lessons.ts';

describe('loadLessons', () => {
  it('reads every real lesson with a valid starting topology, in order', () => {
    const lessons = loadLessons();
    expect(lessons[0]?.slug).toBe('01-round-robin');
    expect(lessons[0]?.topology?.services.web_dynamic?.replicas).toBe(3);
    expect(lessons.map((l) => l.order)).toEqual([...lessons.map((l) => l.order)].sort((a, b) => a - b));
  });

  it('names the file and the field when a topology is invalid', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'lessons-'));
    mkdirSync(path.join(dir, '09-bad'));
    writeFileSync(path.join(dir, '09-bad', 'index.md'), '---\ntitle: Bad\norder: 9\ntopology:\n  services:\n    web_dynamic: { replicas: 42 }\n  routes: []\n---\ntext\n');
    expect(() => loadLessons(dir)).toThrow(/09-bad\/index\.md: front matter field topology\.services\.web_dynamic\.replicas: replicas must be at most 10/);
    rmSync(dir, { recursive: true, force: true });
  });
});
