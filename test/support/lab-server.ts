/**
 * A whole lab server for the tests that drive it through its HTTP API (test/lessons/, and
 * test/server/ tests of the same kind): started on free ports with a state directory of its own,
 * the engines present on this machine, the API with the lab's token, and the lessons' checks.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import { CHECKS } from '../../lab/checks.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import type { DriverName } from '../../lab/topology.ts';
import { startLab, type RunningLab } from '../../server/compose.ts';
import type { LabStatus } from '../../server/protocol.ts';

/**
 * Starts a lab server on 127.0.0.1 (server and proxy on free ports) with a fresh state directory
 * `<tmp>/<prefix>XXXXXX`; its stop() also removes that directory.
 */
export async function startTestLab(prefix: string): Promise<RunningLab> {
  const stateDir = mkdtempSync(path.join(tmpdir(), prefix));
  const lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir });
  const stop = lab.stop.bind(lab);
  lab.stop = async () => {
    await stop();
    rmSync(stateDir, { recursive: true, force: true });
  };
  return lab;
}

/**
 * The engines a test runs on: the embedded proxy, and HAProxy where it can run here (otherwise a
 * line says `<what> on haproxy: skipped because ...`).
 */
export async function enginesPresent(what: string): Promise<DriverName[]> {
  const haproxy = await HaproxyDriver.available();
  if (!haproxy.ok) console.log(`${what} on haproxy: skipped because ${haproxy.reason}`);
  return haproxy.ok ? ['embedded', 'haproxy'] : ['embedded'];
}

/** One call of the lab's API with its token: GET without a body, POST with one; any status. */
export async function api<T = LabStatus>(lab: RunningLab, pathname: string, body?: unknown): Promise<{ status: number; json: T & { error?: string } }> {
  const res = await fetch(`${lab.apiUrl}${pathname}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${lab.token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as T & { error?: string } };
}

/** POSTs `body` (JSON) with the lab's token, expects 200 (the answer's text in the failure) and returns the parsed answer. */
export async function apiPost<T>(lab: RunningLab, pathname: string, body: unknown = {}): Promise<T> {
  const res = await fetch(`${lab.apiUrl}${pathname}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${lab.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as T;
}

/** What POST /api/checks/:id answers. */
export interface CheckAnswer {
  id: string;
  ok: boolean;
  message: string;
}

/** Runs the checks `ids` through the lab server (POST /api/checks/:id, with the server's event history). */
export function checkThroughApi(lab: RunningLab, ids: readonly string[]): Promise<CheckAnswer[]> {
  return Promise.all(ids.map((id) => apiPost<CheckAnswer>(lab, `/api/checks/${id}`)));
}

/** Runs the checks `ids` in this process, against the lab's proxy and status (no event history). */
export function runChecks(lab: RunningLab, ids: readonly string[]) {
  const status = lab.lab.status();
  return Promise.all(ids.map((id) => CHECKS.get(id)!.run({ proxyBase: `http://127.0.0.1:${status.proxy.port}`, status })));
}
