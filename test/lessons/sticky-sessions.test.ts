/**
 * Lesson 02's checks against the real proxies: they fail on the lesson's starting topology (plain
 * round-robin: the login is lost) and pass once sticky sessions are on, on every engine present.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { loadLessons } from '../../server/lessons.ts';
import { CHECKS } from '../../lab/checks.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import type { DriverName } from '../../lab/topology.ts';

const SLUG = '02-sticky-sessions';
const lesson = loadLessons().find((l) => l.slug === SLUG);
const haproxy = await HaproxyDriver.available();
const engines: DriverName[] = haproxy.ok ? ['embedded', 'haproxy'] : ['embedded'];
if (!haproxy.ok) console.log(`lesson ${SLUG} on haproxy: skipped because ${haproxy.reason}`);

let lab: RunningLab;
let stateDir: string;

async function runChecks() {
  const status = lab.lab.status();
  return Promise.all(lesson!.checks.map((id) => CHECKS.get(id)!.run({ proxyBase: `http://127.0.0.1:${status.proxy.port}`, status })));
}

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-lesson02-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir });
});

afterAll(async () => {
  await lab.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

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
