/**
 * A steady load: `rate` requests a second for `seconds`, sent on schedule whether or not earlier
 * ones have answered (like many independent users), each on a new connection with a timeout.
 * Emits `load:ticked` once a second and `load:finished` with the measured failure window, so
 * the lessons can show failures per second and by replica, and how long they lasted.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { EventBus, LoadFinished, LoadTicked } from './events.ts';
import { ProbeClient } from './probe-client.ts';

export const LoadRequest = z.strictObject({
  /** Requests per second, 1..200. */
  rate: z.number().int('rate must be whole requests a second').min(1, 'rate must be at least 1 a second').max(200, 'rate must be at most 200 a second').default(20),
  /** Duration, 1..120 s. */
  seconds: z.number().int('seconds must be whole').min(1, 'seconds must be at least 1').max(120, 'seconds must be at most 120').default(15),
  path: z
    .string()
    .max(200)
    .regex(/^\/[A-Za-z0-9._~\-/]*(\?[A-Za-z0-9._~\-=&%]*)?$/, 'path must start with / and use URL path characters only')
    .default('/api/'),
  /** A request without a complete answer after this many ms counts as failed (status 0). */
  timeoutMs: z.number().int().min(100).max(30_000).default(2000),
});
export type LoadRequest = z.infer<typeof LoadRequest>;

/** One answer (or failure) of a load run. */
export interface LoadSample {
  at: number;
  status: number;
  servedBy: string | null;
  ms: number;
}

export class LoadRun {
  readonly id = randomBytes(4).toString('hex');
  readonly samples: LoadSample[] = [];
  #stopped = false;
  /** True once every request has answered or timed out. */
  finished = false;
  readonly done: Promise<LoadFinished>;

  /**
   * Starts at once; `done` resolves when every request of the run has answered or timed out.
   * @param proxyBase the lab's proxy, e.g. http://127.0.0.1:8080
   */
  constructor(
    readonly request: LoadRequest,
    proxyBase: string,
    bus: EventBus,
  ) {
    this.done = this.#run(proxyBase, bus).finally(() => {
      this.finished = true;
    });
  }

  /** Stops sending; requests in flight still finish. */
  stop(): void {
    this.#stopped = true;
  }

  async #run(proxyBase: string, bus: EventBus): Promise<LoadFinished> {
    const { rate, seconds, path, timeoutMs } = this.request;
    const client = new ProbeClient({ baseUrl: proxyBase, connection: 'new' });
    const started = Date.now();
    const total = rate * seconds;
    const inFlight: Promise<void>[] = [];
    let ticked = 0;
    const tick = (upTo: number) => {
      // Emit every full second whose requests have all been sent and answered.
      while (ticked < upTo) {
        const from = started + ticked * 1000;
        const inSecond = this.samples.filter((s) => s.at >= from && s.at < from + 1000);
        const t: LoadTicked = { runId: this.id, second: ticked, ok: 0, failed: 0, byReplica: {}, byStatus: {}, at: Date.now() };
        for (const s of inSecond) {
          if (s.status >= 200 && s.status < 400) t.ok++;
          else t.failed++;
          const who = s.servedBy ?? 'none';
          t.byReplica[who] = (t.byReplica[who] ?? 0) + 1;
          t.byStatus[String(s.status)] = (t.byStatus[String(s.status)] ?? 0) + 1;
        }
        bus.emit('load:ticked', t);
        ticked++;
      }
    };
    try {
      for (let i = 0; i < total && !this.#stopped; i++) {
        const due = started + (i * 1000) / rate;
        const wait = due - Date.now();
        // Pacing the schedule, not waiting for readiness: the load is meant to be steady.
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const at = Date.now();
        inFlight.push(
          client.get(path, { timeoutMs }).then(
            (res) => {
              this.samples.push({ at, status: res.status, servedBy: res.servedBy, ms: Date.now() - at });
            },
            () => {
              this.samples.push({ at, status: 0, servedBy: null, ms: Date.now() - at });
            },
          ),
        );
        const fullSeconds = Math.floor((Date.now() - started - timeoutMs) / 1000);
        if (fullSeconds > ticked) tick(Math.min(fullSeconds, seconds));
      }
      await Promise.all(inFlight);
    } finally {
      client.close();
    }
    tick(Math.ceil(this.samples.length ? (Math.max(...this.samples.map((s) => s.at)) - started + 1) / 1000 : 0));
    const failures = this.samples.filter((s) => s.status < 200 || s.status >= 400).map((s) => s.at);
    const first = failures.length ? Math.min(...failures) : null;
    const last = failures.length ? Math.max(...failures) : null;
    const finished: LoadFinished = {
      runId: this.id,
      sent: this.samples.length,
      ok: this.samples.length - failures.length,
      failed: failures.length,
      failureWindowMs: first !== null && last !== null ? last - first : null,
      firstFailureAt: first,
      lastFailureAt: last,
      at: Date.now(),
    };
    bus.emit('load:finished', finished);
    return finished;
  }
}
