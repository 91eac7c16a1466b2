/**
 * Lesson 06 (the VIP pitfall): its check fails on the starting topology (the proxy reaches
 * web_dynamic through a per-connection VIP and reuses its connection: one replica takes the 30
 * requests) and passes after each of the lesson's three fixes, through the real lab server
 * against the real proxies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningLab } from '../../server/compose.ts';
import { loadLessons } from '../../server/lessons.ts';
import { apiPost, checkThroughApi, enginesPresent, startTestLab } from '../support/lab-server.ts';

const SLUG = '06-vip-pitfall';
const lesson = loadLessons().find((l) => l.slug === SLUG);
const engines = await enginesPresent(`lesson ${SLUG}`);

let lab: RunningLab;

const post = <T>(pathname: string, body?: unknown) => apiPost<T>(lab, pathname, body);

const checkAll = () => checkThroughApi(lab, lesson!.checks);

beforeAll(async () => {
  lab = await startTestLab('lab-lesson06-');
});

afterAll(() => lab?.stop());

describe(`lesson ${SLUG}`, () => {
  it('exists and declares its check', () => {
    expect(lesson, `lessons/${SLUG}/index.md`).toBeDefined();
    expect(lesson!.checks).toEqual(['vip-spread']);
  });

  describe.each(engines)('on %s', (engine) => {
    it('fails on the starting topology: the VIP connection pins the requests', async () => {
      await lab.lab.switchProxy(engine);
      await post('/api/reset', { lesson: SLUG });
      expect(lab.lab.status().proxy.driver).toBe(engine);
      const [r] = await checkAll();
      expect(r.ok, r.message).toBe(false);
      expect(r.message).toMatch(/One replica served all 30 requests|stayed \(almost\) on one replica/);
    });

    for (const fix of ['reuse=off', 'vip=off', 'dnsrr=on']) {
      it(`passes after the fix ${fix}`, async () => {
        await post('/api/reset', { lesson: SLUG });
        await post('/api/settings', { settings: [`web_dynamic.${fix}`] });
        const [r] = await checkAll();
        expect(r.ok, r.message).toBe(true);
      });
    }
  });
});
