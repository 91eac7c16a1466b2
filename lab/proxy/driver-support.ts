/**
 * What the drivers of the real proxies share (HaproxyDriver in haproxy/haproxy-driver.ts,
 * TraefikDriver in traefik/traefik-driver.ts): ports and connections on the host, atomic writes
 * of the files the proxy reads, the bounded polling behind drained(), and the health-changed event
 * of a checked server.
 */
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import type { EventBus } from '../events.ts';

/** A TCP port nobody listens on right now, on `host`. */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves true if a TCP connection to host:port opens within timeoutMs. */
export function canConnect(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Writes `file` (mode 600) through a temporary file and a rename, so a reader never sees half of it. */
export function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Calls `done` until it says true (-> true) or `deadline` (epoch ms) has passed (-> false), every
 * 10 ms at first, doubling up to 100 ms, never sleeping past the deadline; `done` runs at least once.
 */
export async function pollUntil(deadline: number, done: () => boolean | Promise<boolean>): Promise<boolean> {
  let backoff = 10;
  for (;;) {
    if (await done()) return true;
    if (Date.now() >= deadline) return false;
    await delay(Math.min(backoff, Math.max(1, deadline - Date.now())));
    backoff = Math.min(backoff * 2, 100);
  }
}

/** A health-checked server as a driver tracks it. */
export interface CheckedReplica {
  service: string;
  hostname: string;
  port: number;
  healthy: boolean;
}

/** Sets `c.healthy` and emits `replica:health-changed` when it changes (nothing when it does not). */
export function healthChanged(bus: EventBus, c: CheckedReplica, healthy: boolean, reason: string): void {
  if (c.healthy === healthy) return;
  c.healthy = healthy;
  bus.emit('replica:health-changed', { service: c.service, hostname: c.hostname, port: c.port, pid: null, at: Date.now(), reason, healthy });
}
