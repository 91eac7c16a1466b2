/**
 * The predict-then-run claims of lessons 01 and 02, measured through the lab server's probe
 * (POST /api/probe, what the PredictBurst widget sends) on the lessons' starting topologies, on
 * the embedded proxy and on HAProxy:
 * - 01: 30 requests, a new connection each, no cookie jar, 3 replicas: 10/10/10;
 * - 02: 30 requests from a client with a cookie jar to 4 replicas: sticky off 8/8/7/7, sticky on
 *   all 30 on one replica (the first answer set the cookie).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import type { DriverName } from '../../lab/topology.ts';

const haproxy = await HaproxyDriver.available();
const engines: DriverName[] = haproxy.ok ? ['embedded', 'haproxy'] : ['embedded'];
if (!haproxy.ok) console.log(`predict-then-run on haproxy: skipped because ${haproxy.reason}`);

let lab: RunningLab;
let stateDir: string;

async function post<T>(pathname: string, body: unknown = {}): Promise<T> {
  const res = await fetch(`${lab.apiUrl}${pathname}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${lab.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as T;
}

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
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-predict-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir });
});

afterAll(async () => {
  await lab?.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

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
