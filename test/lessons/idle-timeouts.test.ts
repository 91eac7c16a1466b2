/**
 * Lesson 05 (keep-alive and idle timeouts): its check fails on the starting topology (the proxy
 * keeps an idle client connection for minutes) and passes once `timeouts.clientIdle` is short,
 * through the real lab server against the real proxies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { loadLessons } from '../../server/lessons.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import type { DriverName } from '../../lab/topology.ts';

const SLUG = '05-idle-timeouts';
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
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-lesson05-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir });
});

afterAll(async () => {
  await lab?.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

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
