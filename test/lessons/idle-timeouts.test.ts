/**
 * Lesson 05 (keep-alive and idle timeouts): its check fails on the starting topology (the proxy
 * keeps an idle client connection for minutes) and passes once `timeouts.clientIdle` is short,
 * through the real lab server against the real proxies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningLab } from '../../server/compose.ts';
import { loadLessons } from '../../server/lessons.ts';
import { apiPost, checkThroughApi, enginesPresent, startTestLab } from '../support/lab-server.ts';

const SLUG = '05-idle-timeouts';
const lesson = loadLessons().find((l) => l.slug === SLUG);
const engines = await enginesPresent(`lesson ${SLUG}`);

let lab: RunningLab;

const post = <T>(pathname: string, body?: unknown) => apiPost<T>(lab, pathname, body);

const checkAll = () => checkThroughApi(lab, lesson!.checks);

beforeAll(async () => {
  lab = await startTestLab('lab-lesson05-');
});

afterAll(() => lab?.stop());

describe(`lesson ${SLUG}`, () => {
  it('exists and declares its check', () => {
    expect(lesson, `lessons/${SLUG}/index.md`).toBeDefined();
    expect(lesson!.checks).toEqual(['idle-close-seen']);
  });

  describe.each(engines)('on %s', (engine) => {
    it('fails on the starting topology: the idle timeout is too long to watch', async () => {
      await lab.lab.switchProxy(engine);
      await post('/api/reset', { lesson: SLUG });
      expect(lab.lab.status().proxy.driver).toBe(engine);
      const [r] = await checkAll();
      expect(r.ok, r.message).toBe(false);
      expect(r.message).toMatch(/keeps an idle client connection open for \d+ s: set timeouts.clientIdle/);
    });

    it('passes with timeouts.clientIdle=2000: the proxy closes the silent connection after 2 s', async () => {
      await post('/api/settings', { settings: ['timeouts.clientIdle=2000'] });
      const [r] = await checkAll();
      expect(r.ok, r.message).toBe(true);
      expect(r.message).toMatch(/idle timeout 2000 ms/);
    }, 90_000);
  });
});
