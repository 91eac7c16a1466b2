/**
 * `kill -9` of a running lab, then a new start on the same state directory: the leftovers of the
 * first run (replica processes and HAProxy) are removed before anything starts, and counted.
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
if (!haproxy.ok) console.log(`restart after SIGKILL: skipped because ${haproxy.reason}`);
