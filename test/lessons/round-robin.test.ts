/**
 * Lesson 01 (round-robin): every check in its front matter fails on the starting topology and
 * passes once its step is done, through the real lab server (POST /api/checks/:id, which hands the
 * check the server's event history) against the real proxies and real web_dynamic replicas.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningLab } from '../../server/compose.ts';
import { loadLessons } from '../../server/lessons.ts';
import { ProbeClient } from '../../lab/probe-client.ts';
import { apiPost, checkThroughApi, enginesPresent, startTestLab } from '../support/lab-server.ts';

const SLUG = '01-round-robin';
const lesson = loadLessons().find((l) => l.slug === SLUG);
const engines = await enginesPresent(`lesson ${SLUG}`);

let lab: RunningLab;

const reset = () => apiPost(lab, '/api/reset', { lesson: SLUG });
const check = async (id: string) => (await checkThroughApi(lab, [id]))[0];

/** Sends `n` GETs to /api/ through the proxy and waits until the proxy reported each of them. */
async function sendAndSee(n: number): Promise<void> {
  let seen = 0;
  let wake = () => {};
  const off = lab.bus.on('request:completed', (e) => {
    if (e.service === 'web_dynamic') {
      seen++;
      wake();
    }
  });
  const client = new ProbeClient({ baseUrl: `http://127.0.0.1:${lab.proxyPort}`, connection: 'new' });
  try {
    for (let i = 0; i < n; i++) expect((await client.get('/api/', { timeoutMs: 10_000 })).status).toBe(200);
    // HAProxy reports requests through its log: wait for the events, not for a time.
    while (seen < n) await new Promise<void>((resolve) => (wake = resolve));
  } finally {
    client.close();
    off();
  }
}

beforeAll(async () => {
  lab = await startTestLab('lab-lesson01-');
});

afterAll(() => lab?.stop());

describe(`lesson ${SLUG}`, () => {
  it('exists and declares its three checks', () => {
    expect(lesson, `lessons/${SLUG}/index.md`).toBeDefined();
    expect(lesson!.checks).toEqual(['rotation-seen', 'rotation-grew', 'weighted-shares']);
  });

  describe.each(engines)('on %s', (engine) => {
    it('every check fails on the starting topology, each with its sentence', async () => {
      await lab.lab.switchProxy(engine);
      await reset();
      expect(lab.lab.status().proxy.driver).toBe(engine);
      const results = await Promise.all(lesson!.checks.map((id) => check(id)));
      for (const r of results) expect(r.ok, `${r.id}: ${r.message}`).toBe(false);
      expect(results[0].message).toMatch(/0 of 6 requests to web_dynamic so far/);
      expect(results[1].message).toMatch(/web_dynamic runs 3 replica\(s\): scale it to 5/);
      expect(results[2].message).toMatch(/Every web_dynamic replica has weight 1/);
    });

    it('rotation-seen: 4 requests are not enough, 6 went round the 3 replicas twice', async () => {
      await sendAndSee(4);
      const early = await check('rotation-seen');
      expect(early.ok, early.message).toBe(false);
      expect(early.message).toMatch(/4 of 6 requests/);
      await sendAndSee(2);
      const done = await check('rotation-seen');
      expect(done.ok, done.message).toBe(true);
    });

    it('rotation-grew: scaled to 5, it passes once the next 5 requests reached 5 different replicas', async () => {
      await lab.lab.scale('web_dynamic', 5);
      const before = await check('rotation-grew');
      expect(before.ok, before.message).toBe(false);
      expect(before.message).toMatch(/never reached/);
      await sendAndSee(5);
      const r = await check('rotation-grew');
      expect(r.ok, r.message).toBe(true);
      expect(r.message).toMatch(/reached 5 different replicas/);
    });

    it('weighted-shares: weights 3:1:1 and 50 requests pass; under least-connections 50 more fail it', async () => {
      await reset();
      const [first] = lab.lab.status().services.find((s) => s.name === 'web_dynamic')!.instances;
      await lab.lab.setWeight(first.hostname, 3);
      const none = await check('weighted-shares');
      expect(none.ok, none.message).toBe(false);
      expect(none.message).toMatch(/0 of 50 requests/);
      await sendAndSee(50);
      const r = await check('weighted-shares');
      expect(r.ok, r.message).toBe(true);
      expect(r.message).toMatch(/weight 3\): (2[6-9]|3[0-4]),/);
      await lab.lab.configure(['web_dynamic.algorithm=least-connections']);
      await sendAndSee(50);
      const lc = await check('weighted-shares');
      expect(lc.ok, lc.message).toBe(false);
      expect(lc.message).toMatch(/least-connections does not follow weights/);
    });
  });
});
