/**
 * Lessons 03 (health checks) and 04 (rolling redeploy): their checks fail on the starting
 * topology and pass once solved, against the real proxies and real spring_app replicas.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningLab } from '../../server/compose.ts';
import { loadLessons } from '../../server/lessons.ts';
import { LoadRequest, LoadRun } from '../../lab/load.ts';
import type { DriverName } from '../../lab/topology.ts';
import { enginesPresent, runChecks, startTestLab } from '../support/lab-server.ts';

const lessons = loadLessons();
const engines = await enginesPresent(`lessons 03/04`);

let lab: RunningLab;

function check(slug: string) {
  return runChecks(lab, lessons.find((l) => l.slug === slug)!.checks);
}

async function start(slug: string, engine: DriverName) {
  const lesson = lessons.find((l) => l.slug === slug);
  expect(lesson, `lessons/${slug}/index.md`).toBeDefined();
  await lab.lab.switchProxy(engine);
  await lab.lab.reset(lesson!.topology, slug);
}

function springReplicas() {
  return lab.lab.status().services.find((s) => s.name === 'spring_app')!.instances;
}

beforeAll(async () => {
  lab = await startTestLab('lab-lesson03-');
});

afterAll(() => lab.stop());

describe.each(engines)('lesson 03-health-checks on %s', (engine) => {
  it('fails with a crashed replica and no health check: about half the requests fail', async () => {
    await start('03-health-checks', engine);
    const [victim] = springReplicas();
    await lab.lab.fault(victim.hostname, { mode: 'crash' });
    expect(springReplicas().find((r) => r.hostname === victim.hostname)?.state).toBe('crashed');
    const [result] = await check('03-health-checks');
    expect(result.ok, result.message).toBe(false);
    expect(result.message).toMatch(/of 40 requests failed/);
    const failed = Number(/^(\d+) of 40/.exec(result.message)?.[1]);
    expect(failed).toBeGreaterThanOrEqual(10); // ~1 in 2 with 2 replicas
    expect(failed).toBeLessThanOrEqual(30);
  });

  it('passes once the health check has taken the crashed replica out', async () => {
    const [victim] = springReplicas();
    const down = new Promise<void>((resolve) => {
      const off = lab.bus.on('replica:health-changed', (e) => {
        if (e.hostname === victim.hostname && !e.healthy) {
          off();
          resolve();
        }
      });
    });
    await lab.lab.configure(['healthcheck=on', 'healthcheck.interval=500', 'healthcheck.fall=1']);
    await down;
    const [result] = await check('03-health-checks');
    expect(result.ok, result.message).toBe(true);
  });

  it('passes with retry instead of a health check', async () => {
    await lab.lab.configure(['healthcheck=off', 'retry=on']);
    const [result] = await check('03-health-checks');
    expect(result.ok, result.message).toBe(true);
  });
});

describe.each(engines)('lesson 04-rolling-redeploy on %s', (engine) => {
  async function redeployUnderLoad(strategy: 'naive' | 'drain') {
    const port = lab.lab.status().proxy.port;
    const run = new LoadRun(LoadRequest.parse({ rate: 100, seconds: 60, path: '/app/helloParams?name=lab' }), `http://127.0.0.1:${port}`, lab.bus);
    try {
      await lab.lab.redeploy('spring_app', strategy);
    } finally {
      run.stop();
      await run.done;
    }
  }

  it('a naive redeploy under load fails requests, so the check fails', async () => {
    await start('04-rolling-redeploy', engine);
    await redeployUnderLoad('naive');
    const [result] = await check('04-rolling-redeploy');
    expect(result.ok, result.message).toBe(false);
    expect(result.message).toMatch(/failed during the naive redeploy/);
  });

  it('a drain redeploy under load fails none, so the check passes', async () => {
    await redeployUnderLoad('drain');
    const [result] = await check('04-rolling-redeploy');
    expect(result.ok, result.message).toBe(true);
  });
});
