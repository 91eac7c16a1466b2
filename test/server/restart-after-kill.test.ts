/**
 * `kill -9` of a running lab, then a new start on the same state directory: the leftovers of the
 * first run (replica processes and HAProxy) are removed before anything starts, and counted —
 * in-process (startLab's `swept`), and as `npm start` prints it ("Removed 7 leftover ...").
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { REPO_ROOT, readStateFile } from '../../server/state-file.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import { ProcessRuntime } from '../../lab/runtime/process-runtime.ts';
import type { LabStatus } from '../../lab/status.ts';

const stateDir = mkdtempSync(path.join(tmpdir(), 'lab-restart-'));
let second: RunningLab | null = null;
const haproxy = await HaproxyDriver.available();

/** Running, not a zombie: orphans of the killed lab are reparented to an init that may not reap them. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

afterAll(async () => {
  await second?.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

describe.runIf(haproxy.ok)('a lab killed with SIGKILL', () => {
  it('leaves replicas and HAProxy that the next start removes and counts', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'server/main.ts')], {
      cwd: REPO_ROOT,
      env: { ...process.env, LAB_PORT: '0', LAB_PROXY_PORT: '0', LAB_STATE_DIR: stateDir },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      readline.createInterface({ input: child.stdout! }).on('line', (l) => l.startsWith('Lab ready:') && resolve());
      child.once('exit', (code) => reject(new Error(`lab exited early (${code})`)));
    });
    const state = readStateFile(stateDir)!;
    const call = async (p: string, body?: unknown) =>
      (await (
        await fetch(`${state.url}${p}`, {
          method: body ? 'POST' : 'GET',
          headers: { authorization: `Bearer ${state.token}`, 'content-type': 'application/json' },
          body: body ? JSON.stringify(body) : undefined,
        })
      ).json()) as LabStatus;
    await call('/api/proxy', { driver: 'haproxy' });
    const status = await call('/api/status');
    const replicaPids = status.services.flatMap((s) => s.instances.map((r) => r.pid!));
    expect(replicaPids).toHaveLength(6);

    child.kill('SIGKILL');
    await exited;
    expect(replicaPids.every(alive)).toBe(true); // orphans, as after a real crash

    second = await startLab({ host: '127.0.0.1', port: 0, proxyPort: state.proxyPort, stateDir });
    expect(second.swept).toBe(7); // 6 replicas + 1 HAProxy
    for (const pid of replicaPids) expect(alive(pid), `leftover replica ${pid}`).toBe(false);
    expect(second.proxyPort).toBe(state.proxyPort); // the port HAProxy held is free again
  });
});

/** `npm start` (server/main.ts) as a child on `dir`; resolves with its stdout lines once it printed "Lab ready:". */
async function startMain(dir: string, proxyPort = 0) {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'server/main.ts')], {
    cwd: REPO_ROOT,
    env: { ...process.env, LAB_PORT: '0', LAB_PROXY_PORT: String(proxyPort), LAB_STATE_DIR: dir, LAB_TOKEN: '' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const lines: string[] = [];
  await new Promise<void>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on('line', (l) => {
      lines.push(l);
      if (l.startsWith('Lab ready:')) resolve();
    });
    void exited.then((code) => reject(new Error(`lab exited early (${code}): ${lines.join('\n')}`)));
  });
  return { child, exited, lines };
}

describe.runIf(haproxy.ok)('a lab killed with SIGKILL, then `npm start` again', () => {
  it('prints how many leftovers it removed, removes them before any new replica starts, and serves', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'lab-restart-main-'));
    let next: Awaited<ReturnType<typeof startMain>> | null = null;
    try {
      const first = await startMain(dir);
      const state = readStateFile(dir)!;
      const headers = { authorization: `Bearer ${state.token}`, 'content-type': 'application/json' };
      expect((await fetch(`${state.url}/api/proxy`, { method: 'POST', headers, body: JSON.stringify({ driver: 'haproxy' }) })).status).toBe(200);
      const old = (await (await fetch(`${state.url}/api/status`, { headers })).json()) as LabStatus;
      const oldPids = old.services.flatMap((s) => s.instances.map((r) => r.pid!));
      first.child.kill('SIGKILL');
      await first.exited;
      expect(oldPids.every(alive)).toBe(true);

      // The same proxy port: the orphaned HAProxy holds it until the sweep.
      next = await startMain(dir, state.proxyPort);
      const ready = next.lines.findIndex((l) => l.startsWith('Lab ready:'));
      const removed = next.lines.findIndex((l) => l === 'Removed 7 leftover process(es) of an earlier run.');
      expect(removed, next.lines.join('\n')).toBeGreaterThanOrEqual(0);
      expect(removed).toBeLessThan(ready);
      for (const pid of oldPids) expect(alive(pid), `leftover replica ${pid}`).toBe(false);

      const now = readStateFile(dir)!;
      const nowHeaders = { authorization: `Bearer ${now.token}` };
      const status = (await (await fetch(`${now.url}/api/status`, { headers: nowHeaders })).json()) as LabStatus;
      const newPids = status.services.flatMap((s) => s.instances.filter((r) => r.state === 'running').map((r) => r.pid!));
      expect(newPids).toHaveLength(6);
      expect(newPids.filter((p) => oldPids.includes(p))).toEqual([]);
      expect(status.proxy.port).toBe(state.proxyPort);
      // The sweep came first: the lab's log says so before any replica of this run started.
      const run = (await (await fetch(`${now.url}/api/export`, { headers: nowHeaders })).json()) as { labLog: Array<{ at: number; text: string }>; replicaEvents: Array<{ type: string; at: number }> };
      const swept = run.labLog.find((l) => /removed 6 leftover replica process\(es\)/.test(l.text));
      expect(swept, JSON.stringify(run.labLog.slice(0, 5))).toBeDefined();
      const firstStart = Math.min(...run.replicaEvents.filter((e) => e.type === 'started').map((e) => e.at));
      expect(swept!.at).toBeLessThanOrEqual(firstStart);
      expect((await fetch(`http://127.0.0.1:${status.proxy.port}/api/`)).status).toBe(200);

      next.child.kill('SIGTERM');
      expect(await next.exited).toBe(0);
      next = null;
      for (const pid of newPids) expect(alive(pid), `replica ${pid} after SIGTERM`).toBe(false);
    } finally {
      next?.child.kill('SIGKILL');
      // After a failure midway: nothing of either run may outlive the test.
      await HaproxyDriver.sweep(dir);
      await new ProcessRuntime({ sessionId: 'restart-cleanup', stateDir: dir }).sweep();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
if (!haproxy.ok) console.log(`restart after SIGKILL: skipped because ${haproxy.reason}`);
