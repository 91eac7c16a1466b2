/**
 * A Playwright fixture that runs the real lab (`node --import tsx server/main.ts`) on free ports
 * with its own state directory, waits for its `Lab ready:` line (no sleeps), and on teardown
 * stops it with SIGTERM and checks that it exited and left no process behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { test as base, expect } from '@playwright/test';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import { ProcessRuntime } from '../../lab/runtime/process-runtime.ts';
import type { LabStatus } from '../../server/protocol.ts';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const READY_TIMEOUT_MS = 200_000;
const EXIT_TIMEOUT_MS = 30_000;

export interface RunningLab {
  /** The URL the lab printed, with its token. */
  url: string;
  /** http://localhost:<port> */
  origin: string;
  token: string;
  proxyUrl: string;
  /** Everything the server printed so far (for failure messages). */
  output(): string;
  /** GET /api/status with the token. */
  status(): Promise<LabStatus>;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Polls (no fixed sleep) until `check` is true or the deadline passes. */
async function waitFor(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

async function startLab(stateDir: string, args: string[]): Promise<{ child: ChildProcess; lab: RunningLab; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, LAB_PORT: '0', LAB_PROXY_PORT: '0', LAB_STATE_DIR: stateDir, LAB_TOKEN: '' },
    detached: true, // its own process group: teardown can check that the whole group is gone
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const lines = createInterface({ input: child.stdout! });
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));

  const ready = new Promise<{ url: string; proxyUrl: string }>((resolve, reject) => {
    let proxyUrl = '';
    const timer = setTimeout(() => reject(new Error(`The lab printed no "Lab ready:" line within ${READY_TIMEOUT_MS / 1000} s.\n${output}`)), READY_TIMEOUT_MS);
    lines.on('line', (line) => {
      output += `${line}\n`;
      const proxy = /^Proxy: (\S+)/.exec(line);
      if (proxy) proxyUrl = proxy[1];
      const m = /^Lab ready: (\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], proxyUrl });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`The lab exited (code ${code}) before it was ready.\n${output}`));
    });
  });

  const { url, proxyUrl } = await ready;
  const parsed = new URL(url);
  const token = parsed.searchParams.get('token') ?? '';
  const origin = parsed.origin;
  const lab: RunningLab = {
    url,
    origin,
    token,
    proxyUrl,
    output: () => output,
    async status() {
      const res = await fetch(`${origin}/api/status`, { headers: { Authorization: `Bearer ${token}` } });
      if (!res.ok) throw new Error(`GET /api/status answered ${res.status}: ${await res.text()}`);
      return (await res.json()) as LabStatus;
    },
  };
  return { child, lab, exited };
}

/**
 * `lab`: a fresh lab per test (it starts in a few seconds), so tests never depend on each other's
 * state. `labArgs`: extra `npm start` flags, e.g. `test.use({ labArgs: ['--runtime', 'docker'] })`;
 * in Docker mode teardown also checks that no container or network of the lab's session is left.
 */
export const test = base.extend<{ labArgs: string[]; lab: RunningLab }>({
  labArgs: [[], { option: true }],
  lab: [
    async ({ labArgs }, use) => {
      const stateDir = mkdtempSync(path.join(tmpdir(), 'balancer-lab-e2e-'));
      const { child, lab, exited } = await startLab(stateDir, labArgs);
      const sessionId = (await lab.status()).sessionId;
      const pid = child.pid!;
      try {
        await use(lab);
      } finally {
        // The replicas run in their own process groups: note their pids to check them too.
        const replicaPids = await lab
          .status()
          .then((s) => s.services.flatMap((svc) => svc.instances.map((i) => i.pid)).filter((p): p is number => p !== null))
          .catch(() => [] as number[]);

        child.kill('SIGTERM');
        const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), EXIT_TIMEOUT_MS))]);
        const groupGone = await waitFor(() => !isAlive(-pid), 5_000);
        const leftovers = replicaPids.filter(isAlive);
        if (code === 'timeout' || !groupGone || leftovers.length > 0) {
          // Clean up so a failure here does not leak processes into the next run.
          try {
            process.kill(-pid, 'SIGKILL');
          } catch {
            /* already gone */
          }
          for (const p of leftovers) {
            try {
              process.kill(p, 'SIGKILL');
            } catch {
              /* already gone */
            }
          }
        }
        // Anything the lab started and did not stop (an HAProxy, a replica) is swept and counted.
        const sweptProxies = await HaproxyDriver.sweep(stateDir);
        const sweptReplicas = await new ProcessRuntime({ sessionId: 'e2e-teardown', stateDir }).sweep();
        rmSync(stateDir, { recursive: true, force: true });
        expect(sweptProxies, 'no HAProxy of the lab should remain after it stopped').toBe(0);
        expect(sweptReplicas, 'no replica of the lab should remain after it stopped').toBe(0);
        expect(code, `the lab should exit after SIGTERM\n${lab.output()}`).not.toBe('timeout');
        expect(code, `the lab should exit cleanly after SIGTERM\n${lab.output()}`).toBe(0);
        expect(groupGone, 'no process of the lab’s process group should remain').toBe(true);
        expect(() => process.kill(-pid, 0)).toThrow();
        expect(leftovers, 'every replica process should be gone').toEqual([]);
        if (labArgs.includes('docker')) {
          const { connectDocker, labelFilter } = await import('../../lab/runtime/docker/docker-client.ts');
          const docker = await connectDocker();
          const containers = await docker.listContainers({ all: true, filters: labelFilter(sessionId) });
          const networks = await docker.listNetworks({ filters: labelFilter(sessionId) });
          expect(containers.map((c) => c.Names[0]), 'no container of the lab should remain').toEqual([]);
          expect(networks.map((n) => n.Name), 'no network of the lab should remain').toEqual([]);
        }
      }
    },
    { timeout: READY_TIMEOUT_MS + 60_000 },
  ],
});

export { expect };
