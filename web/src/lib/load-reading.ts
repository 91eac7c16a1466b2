/**
 * The one-sentence reading of a finished load run: its measured failure window (first to last
 * failed request) set against the health check that was configured. Pure, so it is unit-tested.
 */
import type { LoadFinished } from '../../../lab/events.ts';

export interface CheckAtRun {
  /** Was the active health check on (for the service the load reached)? */
  on: boolean;
  intervalMs: number;
  fall: number;
}

export interface ReadingInput {
  result: LoadFinished;
  /** The check in force when the run started and when it finished. */
  atStart: CheckAtRun | null;
  atEnd: CheckAtRun | null;
  /** When this page saw the check switched on during the run (epoch ms), else null. */
  checkOnAt: number | null;
  /** The engine at the end (fall/rise count on HAProxy only). */
  driver: string | undefined;
}

export interface Reading {
  /** How long failures should last at most with the check at the end (ms), or null without a check. */
  boundMs: number | null;
  /** What the bound is made of, e.g. `one interval, 1000 ms` or `fall × interval = 3 × 1000 ms`. */
  boundText: string | null;
  sentence: string;
}

export const seconds = (ms: number) => (ms >= 10_000 ? `${Math.round(ms / 1000)} s` : `${(ms / 1000).toFixed(1)} s`);

/** Measured windows land a little past the bound: a probe's own time, request timing, scheduling. */
const SLACK_MS = 400;

export function readLoad({ result, atStart, atEnd, checkOnAt, driver }: ReadingInput): Reading {
  const haproxy = driver === 'haproxy';
  const boundMs = atEnd?.on ? atEnd.intervalMs * (haproxy ? atEnd.fall : 1) : null;
  const boundText = atEnd?.on
    ? haproxy
      ? `fall × interval = ${atEnd.fall} × ${atEnd.intervalMs} ms`
      : `one interval, ${atEnd.intervalMs} ms`
    : null;
  const base = { boundMs, boundText };

  if (result.failed === 0 || result.firstFailureAt === null || result.lastFailureAt === null) {
    return { ...base, sentence: `No request failed: all ${result.sent} got an answer from a replica.` };
  }
  const window = result.failureWindowMs ?? result.lastFailureAt - result.firstFailureAt;
  const share = Math.round((result.failed / Math.max(1, result.sent)) * 100);

  if (!atEnd?.on) {
    return {
      ...base,
      sentence:
        `With no health check nothing took the broken replica out: ${result.failed} of ${result.sent} requests (${share}%) failed ` +
        `over ${seconds(window)}, and only a restart or the end of the run stops that.`,
    };
  }
  // Just switched on: HAProxy has seen no good probe of the server yet, so one failed probe is enough.
  const who = haproxy ? 'HAProxy took the replica out (until it has seen a good probe, one failed probe is enough)' : 'the proxy took the replica out at its first failed probe';
  if (!atStart?.on && checkOnAt !== null) {
    const after = result.lastFailureAt - checkOnAt;
    if (after <= 0) {
      return { ...base, sentence: `The failures (${seconds(window)}) ended before the health check was switched on: the replica came back by itself or was restarted.` };
    }
    const within = after <= (boundMs ?? 0) + SLACK_MS;
    return {
      ...base,
      sentence:
        `The failures had gone on for ${seconds(Math.max(0, checkOnAt - result.firstFailureAt))} when the health check was switched on; ` +
        `the last one came ${after} ms later, ${within ? `within about ${boundText}: ${who}` : `more than ${boundText}: the replica may answer its health path while its requests fail (a 500 is an answer)`}.`,
    };
  }
  const within = window <= (boundMs ?? 0) + SLACK_MS;
  const allows = haproxy
    ? `no longer than HAProxy's check allows (a replica is out after ${atEnd.fall} failed probe${atEnd.fall === 1 ? '' : 's'} in a row)`
    : 'no longer than a check that takes a replica out at its first failed probe allows';
  return {
    ...base,
    sentence: within
      ? `The failures lasted ${window} ms, within about ${boundText}: ${allows}.`
      : `The failures lasted ${window} ms, more than ${boundText}: the replica failed more than once, or its requests fail while its health path answers (a 500 is an answer, the check does not see it).`,
  };
}
