import { describe, expect, it } from 'vitest';
import { readLoad, type CheckAtRun } from './load-reading.ts';
import type { LoadFinished } from '../../../lab/events.ts';

const finished = (over: Partial<LoadFinished>): LoadFinished => ({
  runId: 'r1',
  sent: 400,
  ok: 400,
  failed: 0,
  failureWindowMs: null,
  firstFailureAt: null,
  lastFailureAt: null,
  at: 100_000,
  ...over,
});
const on = (intervalMs: number, fall = 3): CheckAtRun => ({ on: true, intervalMs, fall });
const off: CheckAtRun = { on: false, intervalMs: 3000, fall: 3 };
const failures = { failed: 60, ok: 340, failureWindowMs: 5000, firstFailureAt: 10_000, lastFailureAt: 15_000 };

describe('readLoad', () => {
  it('says nothing failed', () => {
    const r = readLoad({ result: finished({}), atStart: on(1000), atEnd: on(1000), checkOnAt: null, driver: 'embedded' });
    expect(r.sentence).toBe('No request failed: all 400 got an answer from a replica.');
    expect(r.boundMs).toBe(1000);
  });

  it('without a health check, failures last until someone acts', () => {
    const r = readLoad({ result: finished(failures), atStart: off, atEnd: off, checkOnAt: null, driver: 'embedded' });
    expect(r.boundMs).toBeNull();
    expect(r.sentence).toMatch(/^With no health check nothing took the broken replica out: 60 of 400 requests \(15%\) failed over 5\.0 s/);
  });

  it('check on for the whole run: one interval on Traefik semantics, fall × interval on HAProxy', () => {
    const short = finished({ ...failures, failureWindowMs: 800, lastFailureAt: 10_800 });
    expect(readLoad({ result: short, atStart: on(1000), atEnd: on(1000), checkOnAt: null, driver: 'embedded' }).sentence).toBe(
      'The failures lasted 800 ms, within about one interval, 1000 ms: no longer than a check that takes a replica out at its first failed probe allows.',
    );
    const h = readLoad({ result: finished({ ...failures, failureWindowMs: 2500 }), atStart: on(1000), atEnd: on(1000), checkOnAt: null, driver: 'haproxy' });
    expect(h.boundMs).toBe(3000);
    expect(h.sentence).toContain('fall × interval = 3 × 1000 ms');
    const long = readLoad({ result: finished(failures), atStart: on(1000), atEnd: on(1000), checkOnAt: null, driver: 'embedded' });
    expect(long.sentence).toMatch(/^The failures lasted 5000 ms, more than one interval, 1000 ms/);
  });

  it('check switched on during the run: measured from that moment', () => {
    const r = readLoad({ result: finished(failures), atStart: off, atEnd: on(1000), checkOnAt: 14_100, driver: 'embedded' });
    expect(r.sentence).toBe(
      'The failures had gone on for 4.1 s when the health check was switched on; the last one came 900 ms later, within about one interval, 1000 ms: the proxy took the replica out at its first failed probe.',
    );
    const h = readLoad({ result: finished(failures), atStart: off, atEnd: on(1000), checkOnAt: 13_100, driver: 'haproxy' });
    expect(h.sentence).toMatch(/the last one came 1900 ms later, within about fall × interval = 3 × 1000 ms: HAProxy took the replica out/);
    const before = readLoad({ result: finished(failures), atStart: off, atEnd: on(1000), checkOnAt: 16_000, driver: 'embedded' });
    expect(before.sentence).toMatch(/ended before the health check was switched on/);
  });
});
