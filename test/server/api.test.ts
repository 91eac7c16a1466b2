/**
 * The real lab (process runtime, embedded proxy, real replicas) behind the real server on free
 * ports, driven over HTTP and socket.io as the page and the CLI drive it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { io, type Socket } from 'socket.io-client';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { readStateFile } from '../../server/state-file.ts';
import type { EventBatch, LabStatus } from '../../server/protocol.ts';
import { ProbeClient } from '../../lab/probe-client.ts';
import { isAlive as alive } from '../support/processes.ts';

let lab: RunningLab;
let stateDir: string;
const pids: number[] = [];

function api(pathname: string, init: RequestInit & { token?: string | null } = {}) {
  const { token = lab.token, headers, ...rest } = init;
  return fetch(`${lab.apiUrl}${pathname}`, {
    ...rest,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json', ...(headers as Record<string, string>) },
  });
}

function connect(token: string, extra: Partial<Parameters<typeof io>[1]> = {}): Socket {
  return io(lab.apiUrl, { auth: { token }, transports: ['websocket'], reconnection: false, forceNew: true, ...extra });
}

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-api-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir });
});

afterAll(async () => {
  const last = lab.lab.status();
  pids.push(...last.services.flatMap((s) => s.instances.map((r) => r.pid ?? 0)).filter(Boolean));
  await lab.stop();
  for (const pid of pids) expect(alive(pid), `replica pid ${pid} still running after stop`).toBe(false);
  expect(readStateFile(stateDir)).toBeNull();
  rmSync(stateDir, { recursive: true, force: true });
});

describe('security', () => {
  it('refuses /api without the token (401) and with a wrong one', async () => {
    const none = await api('/api/status', { token: null });
    expect(none.status).toBe(401);
    expect((await none.json()).error).toMatch(/token/);
    expect((await api('/api/status', { token: 'x'.repeat(lab.token.length) })).status).toBe(401);
  });

  it('refuses a foreign Origin and a foreign Host (DNS rebinding) with 403', async () => {
    const origin = await api('/api/status', { headers: { origin: 'http://evil.example' } });
    expect(origin.status).toBe(403);
    expect((await origin.json()).error).toMatch(/Origin/);
    // fetch forbids setting Host; use node:http through the probe client.
    const probe = new ProbeClient({ baseUrl: lab.apiUrl, connection: 'new' });
    const res = await probe.get('/api/status', { headers: { host: 'attacker.example:4000', authorization: `Bearer ${lab.token}` } });
    probe.close();
    expect(res.status).toBe(403);
  });

  it('accepts its own origin', async () => {
    const res = await api('/api/status', { headers: { origin: `http://127.0.0.1:${lab.port}` } });
    expect(res.status).toBe(200);
  });

  it('writes the state file with the token, mode 0600', async () => {
    const state = readStateFile(stateDir);
    expect(state?.token).toBe(lab.token);
    expect(state?.port).toBe(lab.port);
    const { statSync } = await import('node:fs');
    expect(statSync(path.join(stateDir, 'lab.json')).mode & 0o777).toBe(0o600);
  });

  it('refuses a socket without the token', async () => {
    const s = connect('wrong');
    const err = await new Promise<Error>((resolve) => s.on('connect_error', resolve));
    s.close();
    expect(err.message).toMatch(/token/);
  });
});

describe('validation', () => {
  it('answers 404 with a sentence for an unknown service', async () => {
    const res = await api('/api/services/nope/scale', { method: 'POST', body: JSON.stringify({ replicas: 2 }) });
    expect(res.status).toBe(404);
    expect((await res.json()).error).toMatch(/Unknown service "nope".*web_dynamic/);
  });

  it.each([[11], [-1], [2.5], ['3'], [null]])('answers 400 for replicas=%j', async (replicas) => {
    const res = await api('/api/services/web_dynamic/scale', { method: 'POST', body: JSON.stringify({ replicas }) });
    expect(res.status).toBe(400);
    expect((await res.json()).error).toMatch(/replicas/);
  });

  it('answers 400 for malformed JSON, extra fields, and 413 for a huge body', async () => {
    const bad = await api('/api/services/web_dynamic/scale', { method: 'POST', body: '{"replicas":' });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toMatch(/JSON/);
    const extra = await api('/api/services/web_dynamic/scale', { method: 'POST', body: JSON.stringify({ replicas: 2, x: 1 }) });
    expect(extra.status).toBe(400);
    const huge = await api('/api/services/web_dynamic/scale', { method: 'POST', body: JSON.stringify({ replicas: 2, pad: 'x'.repeat(100_000) }) });
    expect(huge.status).toBe(413);
  });

  it('answers 404 for an unknown replica and an unknown command', async () => {
    const res = await api('/api/replicas/web_dynamic-9-zzzz/kill', { method: 'POST' });
    expect(res.status).toBe(404);
    expect((await res.json()).error).toMatch(/No replica named/);
    expect((await api('/api/nothing')).status).toBe(404);
  });

  it('lost nothing: the lab still has its 3 + 3 replicas after the bad requests', async () => {
    const s = (await (await api('/api/status')).json()) as LabStatus;
    expect(s.services.map((x) => [x.name, x.instances.filter((r) => r.state === 'running').length])).toEqual([
      ['web_static', 3],
      ['web_dynamic', 3],
    ]);
  });
});

describe('commands and the event stream', () => {
  it('streams request:completed batches with exact counts, and status on scale and kill', async () => {
    const socket = connect(lab.token);
    const statuses: LabStatus[] = [];
    const batches: EventBatch[] = [];
    socket.on('status', (s: LabStatus) => statuses.push(s));
    socket.on('batch', (b: EventBatch) => batches.push(b));
    await new Promise<void>((resolve, reject) => {
      socket.on('connect', () => resolve());
      socket.on('connect_error', reject);
    });

    const probe = new ProbeClient({ baseUrl: `http://127.0.0.1:${lab.proxyPort}`, connection: 'reuse' });
    const before = lab.lab.status().requestsTotal;
    for (let i = 0; i < 6; i++) expect((await probe.get('/api/')).status).toBe(200);
    probe.close();
    // The counts are exact totals; wait for a batch that includes all six.
    await expect.poll(() => batches.at(-1)?.counts.total ?? 0, { timeout: 10_000 }).toBe(before + 6);
    const seen = batches.flatMap((b) => b.requests).filter((r) => r.service === 'web_dynamic');
    expect(new Set(seen.map((r) => r.replica)).size).toBe(3);

    const scaled = (await (await api('/api/services/web_dynamic/scale', { method: 'POST', body: JSON.stringify({ replicas: 5 }) })).json()) as LabStatus;
    const dyn = scaled.services.find((s) => s.name === 'web_dynamic')!;
    expect(dyn.instances.filter((r) => r.state === 'running')).toHaveLength(5);
    await expect
      .poll(() => statuses.at(-1)?.services.find((s) => s.name === 'web_dynamic')?.instances.length, { timeout: 10_000 })
      .toBe(5);

    const victim = dyn.instances[1];
    pids.push(victim.pid!);
    const killed = await api(`/api/replicas/${victim.hostname}/kill`, { method: 'POST' });
    expect(killed.status).toBe(200);
    expect(alive(victim.pid!)).toBe(false);
    await expect
      .poll(() => statuses.at(-1)?.services.find((s) => s.name === 'web_dynamic')?.instances.map((r) => r.hostname), { timeout: 10_000 })
      .not.toContain(victim.hostname);
    await expect.poll(() => batches.flatMap((b) => b.replicas).some((e) => e.type === 'stopped' && e.hostname === victim.hostname)).toBe(true);
    socket.close();
  });

  it('reset restores web_static x3 / web_dynamic x3 with new hostnames and zero counts', async () => {
    const before = (await (await api('/api/status')).json()) as LabStatus;
    const oldHosts = before.services.flatMap((s) => s.instances.map((r) => r.hostname));
    pids.push(...before.services.flatMap((s) => s.instances.map((r) => r.pid!)));
    const res = await api('/api/reset', { method: 'POST' });
    expect(res.status).toBe(200);
    const after = (await res.json()) as LabStatus;
    expect(after.services.map((s) => s.instances.length)).toEqual([3, 3]);
    expect(after.requestsTotal).toBe(0);
    const newHosts = after.services.flatMap((s) => s.instances.map((r) => r.hostname));
    expect(newHosts.filter((h) => oldHosts.includes(h))).toEqual([]);
  });
});
