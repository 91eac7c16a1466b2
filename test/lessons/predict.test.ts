/**
 * The predict-then-run claims of lessons 01 and 02, measured through the lab server's probe
 * (POST /api/probe, what the PredictBurst widget sends) on the lessons' starting topologies, on
 * the embedded proxy and on HAProxy:
 * - 01: 30 requests, a new connection each, no cookie jar, 3 replicas: 10/10/10;
 * - 02: 30 requests from a client with a cookie jar to 4 replicas: sticky off 8/8/7/7, sticky on
 *   all 30 on one replica (the first answer set the cookie).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningLab } from '../../server/compose.ts';
import { apiPost, enginesPresent, startTestLab } from '../support/lab-server.ts';

const engines = await enginesPresent(`predict-then-run`);

let lab: RunningLab;

const post = <T>(pathname: string, body?: unknown) => apiPost<T>(lab, pathname, body);

/** The burst PredictBurst runs; returns the answers per replica, largest first. */
async function burst(cookies: boolean): Promise<number[]> {
  const { results } = await post<{ results: Array<{ status: number; servedBy: string | null; setCookie: string[] }> }>('/api/probe', {
    path: '/api/',
    count: 30,
    cookies,
    connection: 'new',
  });
  expect(results).toHaveLength(30);
  for (const r of results) expect(r.status).toBe(200);
  const counts = new Map<string, number>();
  for (const r of results) counts.set(r.servedBy!, (counts.get(r.servedBy!) ?? 0) + 1);
  return [...counts.values()].sort((a, b) => b - a);
}

beforeAll(async () => {
  lab = await startTestLab('lab-predict-');
});

afterAll(() => lab?.stop());

describe.each(engines)('predict, then run, on %s', (engine) => {
  it('lesson 01: 30 requests over 3 replicas are 10/10/10', async () => {
    await lab.lab.switchProxy(engine);
    await post('/api/reset', { lesson: '01-round-robin' });
    expect(lab.lab.status().proxy.driver).toBe(engine);
    expect(await burst(false)).toEqual([10, 10, 10]);
  });

  it('lesson 02: a client with a cookie jar, sticky off: 8/8/7/7 over the 4 replicas', async () => {
    await post('/api/reset', { lesson: '02-sticky-sessions' });
    expect(lab.lab.status().services.find((s) => s.name === 'web_dynamic')?.instances).toHaveLength(4);
    expect(await burst(true)).toEqual([8, 8, 7, 7]);
  });

  it('lesson 02: sticky on, the same client: one replica takes all 30', async () => {
    await post('/api/settings', { settings: ['sticky=on'] });
    expect(await burst(true)).toEqual([30]);
    // Without the cookie jar, sticky on changes nothing: the client never sends the cookie back.
    expect(await burst(false)).toEqual([8, 8, 7, 7]);
  });
});
