/**
 * Lesson 02's checks against the real proxies: they fail on the lesson's starting topology (plain
 * round-robin: the login is lost) and pass once sticky sessions are on, on every engine present.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningLab } from '../../server/compose.ts';
import { loadLessons } from '../../server/lessons.ts';
import { enginesPresent, runChecks as runChecksOf, startTestLab } from '../support/lab-server.ts';

const SLUG = '02-sticky-sessions';
const lesson = loadLessons().find((l) => l.slug === SLUG);
const engines = await enginesPresent(`lesson ${SLUG}`);

let lab: RunningLab;

const runChecks = () => runChecksOf(lab, lesson!.checks);

beforeAll(async () => {
  lab = await startTestLab('lab-lesson02-');
});

afterAll(() => lab.stop());

describe(`lesson ${SLUG}`, () => {
  it('exists and declares checks', () => {
    expect(lesson, `lessons/${SLUG}/index.md`).toBeDefined();
    expect(lesson!.checks.length).toBeGreaterThan(0);
    expect(lesson!.topology?.services.session_php?.replicas).toBeGreaterThanOrEqual(2);
  });

  describe.each(engines)('on %s', (engine) => {
    it('the checks fail on the starting topology: the login is lost', async () => {
      await lab.lab.switchProxy(engine);
      await lab.lab.reset(lesson!.topology, SLUG);
      expect(lab.lab.status().proxy.driver).toBe(engine);
      const results = await runChecks();
      expect(results.some((r) => !r.ok)).toBe(true);
      expect(results.find((r) => !r.ok)?.message).toMatch(/The login was lost on [1-6] of 6 reloads/);
    });

    it('the checks pass with sticky sessions on', async () => {
      await lab.lab.configure(['sticky=on']);
      const results = await runChecks();
      for (const r of results) expect(r.ok, r.message).toBe(true);
    });
  });
});
