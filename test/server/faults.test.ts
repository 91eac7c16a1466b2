/**
 * Faults from outside, against a real lab (process runtime, real replicas, real HAProxy 2.6):
 * a replica and then HAProxy are killed with SIGKILL by someone else (not through the lab), and
 * the lab must notice on its own — the change is awaited on the socket's `status` message (the
 * page's feed), then read in GET /api/status and in `npm run lab -- status` — and `reset` must
 * recover: a working HAProxy on the same port and the replicas again, nothing of the dead one left.
 *
 * (kill -9 of the lab server itself is restart-after-kill.test.ts.)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import { startLab, type RunningLab } from '../../server/compose.ts';
import type { LabStatus } from '../../server/protocol.ts';
import { REPO_ROOT } from '../../server/state-file.ts';
import { isGone } from '../support/processes.ts';

const haproxy = await HaproxyDriver.available();

let lab: RunningLab;
let stateDir: string;
let socket: Socket;
const statuses: LabStatus[] = [];
let waiters: Array<() => void> = [];
const pids = new Set<number>();

/** Resolves with the first `status` message (now or later) for which `test` holds. */
function statusWhere(test: (s: LabStatus) => boolean): Promise<LabStatus> {
  return new Promise((resolve) => {
    const check = () => {
      const found = statuses.find(test);
      if (!found) return false;
      resolve(found);
      return true;
    };
    if (check()) return;
    const w = () => {
      if (check()) waiters = waiters.filter((x) => x !== w);
    };
    waiters.push(w);
  });
}

async function api<T = LabStatus>(p: string, body?: unknown): Promise<{ status: number; json: T }> {
  const res = await fetch(`${lab.apiUrl}${p}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${lab.token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as T };
}

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'server/cli.ts'), ...args, '--url', lab.apiUrl, '--token', lab.token], {
      cwd: REPO_ROOT,
      env: { ...process.env, LAB_STATE_DIR: stateDir },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The HAProxy processes whose configuration is in this lab's state directory: [pid, ppid]. */
function haproxyProcesses(): Array<{ pid: number; ppid: number }> {
  const found: Array<{ pid: number; ppid: number }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (!/haproxy$/.test(cmd[0] ?? '') || !cmd.some((a) => a.startsWith(stateDir))) continue;
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z') continue;
      found.push({ pid: Number(name), ppid: Number(fields[1]) });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-faults-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir });
  socket = io(lab.apiUrl, { auth: { token: lab.token }, transports: ['websocket'], reconnection: false, forceNew: true });
  socket.on('status', (s: LabStatus) => {
    statuses.push(s);
    for (const w of [...waiters]) w();
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', reject);
  });
}, 120_000);

afterAll(async () => {
  socket?.close();
  for (const r of lab?.lab.status().services.flatMap((s) => s.instances) ?? []) if (r.pid) pids.add(r.pid);
  await lab?.stop();
  for (const pid of pids) expect(isGone(pid), `pid ${pid}`).toBe(true);
  expect(haproxyProcesses()).toEqual([]);
  rmSync(stateDir, { recursive: true, force: true });
});

describe('a replica dying on its own', () => {
  it('is reported on the socket, in GET /api/status and in `lab status`; reset brings the topology back', async () => {
    const before = lab.lab.status();
    const victim = before.services.find((s) => s.name === 'web_dynamic')!.instances[1];
    pids.add(victim.pid!);
    const seen = statusWhere((s) => !s.services.some((x) => x.instances.some((r) => r.hostname === victim.hostname)));
    process.kill(victim.pid!, 'SIGKILL'); // from outside: the lab did not ask for it
    const after = await seen;
    expect(after.services.find((s) => s.name === 'web_dynamic')!.instances).toHaveLength(2);

    const { json } = await api('/api/status');
    expect(json.services.flatMap((s) => s.instances.map((r) => r.hostname))).not.toContain(victim.hostname);
    const status = await cli(['status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('web_dynamic  (2/2 replicas)');
    expect(status.stdout).not.toContain(victim.hostname);
    const history = await api<{ replicaEvents: Array<{ type: string; hostname: string }> }>('/api/export');
    expect(history.json.replicaEvents.some((e) => e.type === 'crashed' && e.hostname === victim.hostname)).toBe(true);

    for (const r of after.services.flatMap((s) => s.instances)) if (r.pid) pids.add(r.pid);
    const reset = await api('/api/reset', { lesson: null });
    expect(reset.status).toBe(200);
    expect(reset.json.services.map((s) => [s.name, s.instances.filter((r) => r.state === 'running').length])).toEqual([
      ['web_static', 3],
      ['web_dynamic', 3],
    ]);
    const res = await fetch(`http://127.0.0.1:${lab.proxyPort}/api/`);
    expect(res.status).toBe(200);
  });
});

describe.runIf(haproxy.ok)('HAProxy dying on its own', () => {
  it('is reported as down (socket, GET /api/status, `lab status`), commands say so, and reset starts it again', async () => {
    const switched = await api('/api/proxy', { driver: 'haproxy' });
    expect(switched.status).toBe(200);
    expect(switched.json.proxy.down).toBeNull();
    const port = switched.json.proxy.port;
    const procs = haproxyProcesses();
    const master = procs.find((p) => !procs.some((q) => q.pid === p.ppid));
    expect(master, JSON.stringify(procs)).toBeDefined();

    const down = statusWhere((s) => s.proxy.driver === 'haproxy' && s.proxy.down !== null);
    process.kill(master!.pid, 'SIGKILL');
    const seen = await down;
    expect(seen.proxy.down).toMatch(/SIGKILL/);

    const { json } = await api('/api/status');
    expect(json.proxy.down).toMatch(/SIGKILL/);
    expect(await refused(port)).toBe(true);
    const status = await cli(['status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^PROXY DOWN: haproxy died \(signal SIGKILL\); nothing answers on port \d+\. `reset` starts it again\.$/m);
    // The lab log says it too (the page's terminal shows it).
    const exported = await api<{ log: Array<{ text: string }> }>('/api/export');
    expect(JSON.stringify(exported.json)).toMatch(/the haproxy proxy died \(signal SIGKILL\)/);
    // A command that needs the proxy says it is down, in a sentence (not a 500).
    const scale = await api<{ error: string }>('/api/services/web_dynamic/scale', { replicas: 4 });
    expect(scale.status).toBe(409);
    expect(scale.json.error).toMatch(/haproxy proxy is down \(signal SIGKILL\); `reset` starts it again\./);
    // Nothing of the dead HAProxy is left (its workers go with it).
    await expect.poll(() => haproxyProcesses(), { timeout: 10_000 }).toEqual([]);

    const reset = await api('/api/reset', { lesson: null });
    expect(reset.status, JSON.stringify(reset.json)).toBe(200);
    expect(reset.json.proxy.down).toBeNull();
    expect(reset.json.proxy.driver).toBe('haproxy');
    expect(reset.json.proxy.port).toBe(port);
    await statusWhere((s) => s.proxy.driver === 'haproxy' && s.proxy.down === null && s !== seen && statuses.indexOf(s) > statuses.indexOf(seen));
    const served = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/api/`);
      expect(res.status).toBe(200);
      served.add(res.headers.get('x-served-by') ?? '');
    }
    expect(served.size).toBe(3);
    expect(haproxyProcesses().length).toBeGreaterThan(0);
    expect((await cli(['status'])).stdout).not.toContain('PROXY DOWN');
    // And the lab takes commands again.
    expect((await api('/api/services/web_dynamic/scale', { replicas: 4 })).status).toBe(200);
  });
});
describe.runIf(haproxy.ok)('HAProxy dying on its own, then another engine', () => {
  it('switching to the embedded proxy also recovers: same port, down cleared, the replicas kept', async () => {
    const current = (await api('/api/status')).json;
    expect(current.proxy).toMatchObject({ driver: 'haproxy', down: null });
    const hosts = current.services.flatMap((s) => s.instances.map((r) => r.hostname));
    const procs = haproxyProcesses();
    const master = procs.find((p) => !procs.some((q) => q.pid === p.ppid))!;
    const from = statuses.length;
    const down = statusWhere((s) => statuses.indexOf(s) >= from && s.proxy.down !== null);
    process.kill(master.pid, 'SIGKILL');
    await down;
    const switched = await api('/api/proxy', { driver: 'embedded' });
    expect(switched.status, JSON.stringify(switched.json)).toBe(200);
    expect(switched.json.proxy).toMatchObject({ driver: 'embedded', port: current.proxy.port, down: null });
    expect(switched.json.services.flatMap((s) => s.instances.map((r) => r.hostname))).toEqual(hosts);
    expect((await fetch(`http://127.0.0.1:${current.proxy.port}/api/`)).status).toBe(200);
    await expect.poll(() => haproxyProcesses(), { timeout: 10_000 }).toEqual([]);
  });
});
if (!haproxy.ok) console.log(`faults: the HAProxy part skipped because ${haproxy.reason}`);
