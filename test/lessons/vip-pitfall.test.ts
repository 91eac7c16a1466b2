/**
 * Lesson 06 (the VIP pitfall): its check fails on the starting topology (the proxy reaches
 * web_dynamic through a per-connection VIP and reuses its connection: one replica takes the 30
 * requests) and passes after each of the lesson's three fixes, through the real lab server
 * against the real proxies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { loadLessons } from '../../server/lessons.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import type { DriverName } from '../../lab/topology.ts';

const SLUG = '06-vip-pitfall';
const lesson = loadLessons().find((l) => l.slug === SLUG);
const haproxy = await HaproxyDriver.available();
const engines: DriverName[] = haproxy.ok ? ['embedded', 'haproxy'] : ['embedded'];
if (!haproxy.ok) console.log(`lesson ${SLUG} on haproxy: skipped because ${haproxy.reason}`);

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

const checkAll = () => Promise.all(lesson!.checks.map((id) => post<{ id: string; ok: boolean; message: string }>(`/api/checks/${id}`)));

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-lesson06-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir });
});

afterAll(async () => {
  await lab?.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

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
