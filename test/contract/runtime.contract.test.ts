/**
 * The runtime contract (lab/seams.ts BackendRuntime): the same scenarios on ProcessRuntime and on
 * DockerRuntime, against real backends (processes, containers).
 *
 * Docker runs when connectDocker() succeeds and the images can be built; otherwise its suite is
 * skipped with a console warning saying why, unless LAB_REQUIRE_DOCKER=1 (CI), where that is a
 * failure. Images are built FROM LAB_DOCKER_BASE when set (this machine: balancer-lab/base:bookworm);
 * the host-side npm install for them is cached in node_modules/.cache/balancer-lab.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { BackendRuntime } from '../../lab/seams.ts';
import { recorder } from '../support/replica-recorder.ts';
import type { ServiceName } from '../../lab/topology.ts';
import { ProcessRuntime } from '../../lab/runtime/process-runtime.ts';
import { connectDocker, labelFilter, type Docker } from '../../lab/runtime/docker/docker-client.ts';
import { DockerRuntime } from '../../lab/runtime/docker/docker-runtime.ts';
import { isGone } from '../support/processes.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CACHE_DIR = path.join(ROOT, 'node_modules', '.cache', 'balancer-lab');
const OWNER_FIXTURE = path.join(ROOT, 'lab/runtime/docker/test-fixtures/runtime-owner.ts');
/** Services the scenarios start (their images are built before the Docker suite runs). */
const SERVICES: ServiceName[] = ['web_dynamic', 'session_php'];

// ------------------------------------------------------------------ Docker availability

async function dockerForTests(): Promise<{ docker: Docker | null; reason: string }> {
  let docker: Docker;
  try {
    docker = await connectDocker();
  } catch (err) {
    return { docker: null, reason: (err as Error).message };
  }
  // Build once here, so each scenario's readiness clock does not include a cold image build.
  const builder = new DockerRuntime({ docker, sessionId: `build${process.pid}`, stateDir: os.tmpdir(), cacheDir: CACHE_DIR });
  try {
    for (const service of SERVICES) await builder.prepareImage(service);
  } catch (err) {
    return { docker: null, reason: `the sandbox images could not be built: ${(err as Error).message}` };
  }
  return { docker, reason: '' };
}

const dockerCheck = await dockerForTests();
if (!dockerCheck.docker) {
  if (process.env.LAB_REQUIRE_DOCKER === '1') throw new Error(`LAB_REQUIRE_DOCKER=1 but ${dockerCheck.reason}`);
  console.warn(`runtime contract on Docker skipped: ${dockerCheck.reason}`);
}

// ------------------------------------------------------------------ helpers

interface Answer {
  status: number;
  servedBy: string | null;
  body: string;
}

/** True when host:port no longer answers as `hostname` (nothing answers, or another server reused the address). */
async function notServedBy(host: string, port: number, hostname: string): Promise<boolean> {
  const a = await get(host, port, '/health', 1500);
  return a.status === 0 || a.servedBy !== hostname;
}

/** One GET on a new connection; status 0 and the error code when nothing answered. */
function get(host: string, port: number, pathname: string, timeoutMs = 10_000): Promise<Answer & { error?: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: pathname, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, servedBy: (res.headers['x-served-by'] as string) ?? null, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ status: 0, servedBy: null, body: '', error: err.code ?? err.message }));
  });
}

function session(prefix: string): string {
  return `${prefix}${randomBytes(4).toString('hex')}`;
}

interface RuntimeKind {
  name: 'process' | 'docker';
  make(sessionId: string, stateDir: string): BackendRuntime;
  /** What is left of a session after stopAll: [] when nothing. */
  leftovers(sessionId: string, pids: number[]): Promise<string[]>;
}

const kinds: RuntimeKind[] = [
  {
    name: 'process',
    make: (sessionId, stateDir) => new ProcessRuntime({ sessionId, stateDir, connectionReports: true }),
    leftovers: async (_s, pids) => pids.filter((pid) => !isGone(pid)).map((pid) => `process ${pid}`),
  },
  {
    name: 'docker',
    make: (sessionId, stateDir) =>
      new DockerRuntime({ docker: dockerCheck.docker!, sessionId, stateDir, cacheDir: CACHE_DIR, connectionReports: true, readyTimeoutMs: 90_000 }),
    leftovers: async (sessionId) => {
      const d = dockerCheck.docker!;
      const containers = await d.listContainers({ all: true, filters: labelFilter(sessionId) });
      const networks = await d.listNetworks({ filters: labelFilter(sessionId) });
      return [...containers.map((c) => `container ${c.Names[0]}`), ...networks.map((n) => `network ${n.Name}`)];
    },
  },
];

// ------------------------------------------------------------------ the scenarios

for (const kind of kinds) {
  const enabled = kind.name === 'process' || dockerCheck.docker !== null;
  describe.skipIf(!enabled)(`runtime contract: ${kind.name}`, () => {
    let stateDir: string;
    const runtimes: BackendRuntime[] = [];
    const sessions: string[] = [];
    const pids: number[] = [];
    const children: ChildProcess[] = [];

    const newRuntime = (prefix = 'rc') => {
      const id = session(prefix);
      sessions.push(id);
      const rt = kind.make(id, stateDir);
      runtimes.push(rt);
      return { rt, id };
    };

    beforeAll(() => {
      stateDir = fs.mkdtempSync(path.join(os.tmpdir(), `runtime-contract-${kind.name}-`));
    });

    afterEach(async () => {
      await Promise.all(runtimes.splice(0).map((rt) => rt.stopAll()));
    });

    afterAll(async () => {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      const left: string[] = [];
      for (const id of sessions) left.push(...(await kind.leftovers(id, pids)));
      fs.rmSync(stateDir, { recursive: true, force: true });
      expect(left).toEqual([]);
    });

    test('start: ready, /health 200 at host:port with X-Served-By = hostname, and its log lines arrive', async () => {
      const { rt } = newRuntime();
      const rec = recorder();
      const h = await rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-1-c0de' }, rec.hooks);
      if (h.pid !== null) pids.push(h.pid);
      expect(h).toMatchObject({ service: 'web_dynamic', hostname: 'web_dynamic-1-c0de' });
      if (kind.name === 'docker') {
        expect(h.pid).toBeNull();
        expect(h.containerId).toMatch(/^[0-9a-f]{12}$/);
        expect(h.host).not.toBe('127.0.0.1');
      } else {
        expect(h.host).toBe('127.0.0.1');
      }
      const health = await get(h.host, h.port, '/health');
      expect(health.status).toBe(200);
      expect(health.servedBy).toBe('web_dynamic-1-c0de');
      expect(await rec.line(/^listening on http:\/\//)).toBeTruthy();
      // An access-log line for a request of ours, and a connection report (connectionReports).
      const page = await get(h.host, h.port, '/');
      expect(page.status).toBe(200);
      expect(JSON.parse(page.body).hostname).toBe('web_dynamic-1-c0de');
      expect(await rec.line(/GET \/ 200/)).toContain('web_dynamic-1-c0de');
      expect(await rec.line(/^conn (opened|closed) /)).toBeTruthy();
    });

    test('session_php starts and says what implementation runs', async () => {
      const { rt } = newRuntime();
      const h = await rt.start({ service: 'session_php', hostname: 'session_php-1-c0de' }, recorder().hooks);
      if (h.pid !== null) pids.push(h.pid);
      expect(h.implementation).toMatch(/^(php \d+\.\d+\.\d+|express \(.+\))$/);
      if (kind.name === 'docker') expect(h.implementation).toMatch(/^php 8\./);
      const answer = await get(h.host, h.port, '/');
      expect(answer.status).toBe(200);
      expect(answer.servedBy).toBe('session_php-1-c0de');
    });

    test('scale: 3 replicas started at once, each at its own address, each naming itself', async () => {
      const { rt } = newRuntime();
      const names = ['web_dynamic-1-aaaa', 'web_dynamic-2-bbbb', 'web_dynamic-3-cccc'];
      const handles = await Promise.all(names.map((hostname) => rt.start({ service: 'web_dynamic', hostname }, recorder().hooks)));
      for (const h of handles) if (h.pid !== null) pids.push(h.pid);
      expect(new Set(handles.map((h) => `${h.host}:${h.port}`)).size).toBe(3);
      for (const h of handles) {
        const a = await get(h.host, h.port, '/health');
        expect([a.status, a.servedBy]).toEqual([200, h.hostname]);
      }
    });

    test('a second start of a running hostname is refused with a sentence', async () => {
      const { rt } = newRuntime();
      const h = await rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-1-dddd' }, recorder().hooks);
      if (h.pid !== null) pids.push(h.pid);
      await expect(rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-1-dddd' }, recorder().hooks)).rejects.toThrow(/already running/);
    });

    test('crash: onExit with expected false, and the address stops answering', async () => {
      const { rt } = newRuntime();
      const rec = recorder();
      const h = await rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-1-dead' }, rec.hooks);
      if (h.pid !== null) pids.push(h.pid);
      await rt.crash('web_dynamic-1-dead');
      expect(await rec.exited).toEqual({ code: null, signal: 'SIGKILL', expected: false });
      expect(await notServedBy(h.host, h.port, h.hostname)).toBe(true);
      await expect(rt.crash('web_dynamic-1-dead')).rejects.toThrow(/web_dynamic-1-dead/);
    });

    test('stop: SIGTERM, onExit with expected true; an unknown hostname resolves', async () => {
      const { rt } = newRuntime();
      const rec = recorder();
      const h = await rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-1-5709' }, rec.hooks);
      if (h.pid !== null) pids.push(h.pid);
      await rt.stop('web_dynamic-1-5709');
      // The Node backends shut down gracefully on SIGTERM: exit code 0.
      expect(await rec.exited).toEqual({ code: 0, signal: null, expected: true });
      expect(await notServedBy(h.host, h.port, h.hostname)).toBe(true);
      await expect(rt.stop('web_dynamic-9-none')).resolves.toBeUndefined();
    });

    test('setFault: unhealthy, errors, slow, then healthy (Node backend)', async () => {
      const { rt } = newRuntime();
      const rec = recorder();
      const h = await rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-1-fa17' }, rec.hooks);
      if (h.pid !== null) pids.push(h.pid);

      await rt.setFault(h.hostname, { mode: 'unhealthy' });
      expect((await get(h.host, h.port, '/health')).status).toBe(503);
      expect((await get(h.host, h.port, '/')).status).toBe(200);

      await rt.setFault(h.hostname, { mode: 'errors' });
      expect((await get(h.host, h.port, '/health')).status).toBe(200);
      expect((await get(h.host, h.port, '/')).status).toBe(500);

      await rt.setFault(h.hostname, { mode: 'slow', ms: 400 });
      const t0 = Date.now();
      expect((await get(h.host, h.port, '/')).status).toBe(200);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(380); // a lower bound: the delay happened

      await rt.setFault(h.hostname, { mode: 'healthy' });
      expect((await get(h.host, h.port, '/health')).status).toBe(200);
      expect((await get(h.host, h.port, '/')).status).toBe(200);
      // The same fault twice is acknowledged twice (not ignored as "no change").
      await rt.setFault(h.hostname, { mode: 'healthy' });
      expect(rec.lines.filter((l) => l.text.endsWith('web_dynamic-1-fa17 fault: healthy')).length).toBeGreaterThanOrEqual(2);

      await expect(rt.setFault(h.hostname, { mode: 'slow', ms: 0 } as never)).rejects.toThrow(/slow/);
      await expect(rt.setFault('web_dynamic-9-none', { mode: 'errors' })).rejects.toThrow(/web_dynamic-9-none/);
    });

    test('setFault hang: a request is held until the fault is cleared, then answered', async () => {
      const { rt } = newRuntime();
      const h = await rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-1-4a46' }, recorder().hooks);
      if (h.pid !== null) pids.push(h.pid);
      await rt.setFault(h.hostname, { mode: 'hang' });
      let settled = false;
      const held = get(h.host, h.port, '/', 30_000).then((a) => {
        settled = true;
        return a;
      });
      // An absence can only be watched for a while: no answer in 300 ms while the fault holds.
      await new Promise((r) => setTimeout(r, 300));
      expect(settled).toBe(false);
      await rt.setFault(h.hostname, { mode: 'healthy' });
      const a = await held;
      expect([a.status, a.servedBy]).toEqual([200, h.hostname]);
    });

    test('setFault on session_php: unhealthy then healthy', async () => {
      const { rt } = newRuntime();
      const rec = recorder();
      const h = await rt.start({ service: 'session_php', hostname: 'session_php-1-fa17' }, rec.hooks);
      if (h.pid !== null) pids.push(h.pid);
      await rt.setFault(h.hostname, { mode: 'unhealthy' });
      expect((await get(h.host, h.port, '/health')).status).toBe(503);
      expect((await get(h.host, h.port, '/')).status).toBe(200);
      await rt.setFault(h.hostname, { mode: 'healthy' });
      expect((await get(h.host, h.port, '/health')).status).toBe(200);
      expect(await rec.line(/session_php-1-fa17 fault: unhealthy$/)).toBeTruthy();
    });

    test('restart at the same address (spec.port) after a crash', async () => {
      const { rt } = newRuntime();
      const first = await rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-2-5a3e' }, recorder().hooks);
      if (first.pid !== null) pids.push(first.pid);
      // Another replica started meanwhile must not take the crashed one's address.
      await rt.crash(first.hostname);
      const other = await rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-3-0the' }, recorder().hooks);
      if (other.pid !== null) pids.push(other.pid);
      const again = await rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-2-5a3e', port: first.port }, recorder().hooks);
      if (again.pid !== null) pids.push(again.pid);
      expect(`${again.host}:${again.port}`).toBe(`${first.host}:${first.port}`);
      const a = await get(again.host, again.port, '/health');
      expect([a.status, a.servedBy]).toEqual([200, 'web_dynamic-2-5a3e']);
    });

    test('sweep: removes what a killed lab left, not what a running lab owns', async () => {
      const owner = session('old');
      sessions.push(owner);
      const child = spawn(process.execPath, ['--import', 'tsx', OWNER_FIXTURE, kind.name, stateDir, owner, CACHE_DIR], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      children.push(child);
      const childExit = new Promise((r) => child.once('exit', r));
      const first = await readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]().next();
      expect(first.value).toMatch(/^ready \S+:\d+ (\d+|-)$/);
      const [address, pidText] = (first.value as string).slice('ready '.length).split(' ');
      const [host, port] = address.split(/:(?=\d+$)/);
      const ownerPids = pidText === '-' ? [] : [Number(pidText)];
      pids.push(...ownerPids);
      expect((await get(host, Number(port), '/health')).status).toBe(200);

      // Docker's sweep is machine-wide: another suite's lab may die (and be swept, by it or by us)
      // while this runs, so exact counts are asserted where the sweep is this suite's own (process).
      const exact = kind.name === 'process';
      const { rt } = newRuntime('new');
      const before = await rt.sweep(); // leftovers of earlier killed runs, if any
      if (exact) expect(before).toBe(0);
      if (exact) expect(await rt.sweep()).toBe(0);
      else await rt.sweep();
      expect((await get(host, Number(port), '/health')).status).toBe(200); // its lab is alive: left alone
      expect(await kind.leftovers(owner, ownerPids)).not.toEqual([]);

      child.kill('SIGKILL'); // the lab dies without cleaning up
      await childExit;
      expect((await get(host, Number(port), '/health')).status).toBe(200);
      const removed = await rt.sweep();
      if (exact) expect(removed).toBe(1);
      expect(await kind.leftovers(owner, ownerPids)).toEqual([]);
      expect(await notServedBy(host, Number(port), `web_dynamic-${owner}`)).toBe(true);
      if (exact) expect(await rt.sweep()).toBe(0);
    });

    test('stopAll: every replica stopped (expected), nothing of the session left', async () => {
      const { rt, id } = newRuntime();
      const recs = [recorder(), recorder()];
      const hs = await Promise.all([
        rt.start({ service: 'web_dynamic', hostname: 'web_dynamic-1-a11a' }, recs[0].hooks),
        rt.start({ service: 'session_php', hostname: 'session_php-1-a11a' }, recs[1].hooks),
      ]);
      const own = hs.map((h) => h.pid).filter((p): p is number => p !== null);
      pids.push(...own);
      await rt.stopAll();
      for (const r of recs) expect((await r.exited).expected).toBe(true);
      expect(await kind.leftovers(id, own)).toEqual([]);
    });
  });
}
