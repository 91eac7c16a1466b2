/**
 * ProcessRuntime against real child processes (the real demo backends and a few broken fixtures).
 * No mocks, no sleeps: every wait is for an event (exit, log line) or a promise settling.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { recorder } from '../../test/support/replica-recorder.ts';
import { ProcessRuntime, type ProcessRuntimeOptions } from './process-runtime.ts';

const fixture = (name: string) => fileURLToPath(new URL(`./test-fixtures/${name}`, import.meta.url));

const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-process-runtime-'));
/** Every pid a test saw; all must be gone at the end. */
const pids = new Set<number>();
const runtimes: ProcessRuntime[] = [];
const strays: ChildProcess[] = [];
let sessionCounter = 0;

function newRuntime(opts: Partial<ProcessRuntimeOptions> = {}): ProcessRuntime {
  const runtime = new ProcessRuntime({ sessionId: `t${process.pid}-${++sessionCounter}`, stateDir, ...opts });
  runtimes.push(runtime);
  return runtime;
}

/** PHP CLI with sessions on this machine? The php tests need it (CI installs php-cli) and say so when skipped. */
const HAS_PHP = (() => {
  try {
    return execFileSync('php', ['-r', 'echo extension_loaded("session") ? "yes" : "no";'], { encoding: 'utf8' }) === 'yes';
  } catch {
    return false;
  }
})();
if (!HAS_PHP) console.warn('php (with its session extension) is not on PATH: the php -S tests of session_php are skipped.');

function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** Gone, or a zombie waiting for its (new) parent to reap it: either way it runs no more. */
function isDead(pid: number): boolean {
  if (isGone(pid)) return true;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]);
  } catch {
    return true; // vanished between the two checks
  }
}

function readState(file: string): { sessionId: string; replicas: { pid: number; hostname: string; service: string; startedAt: number; sessionId: string }[] } | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

afterEach(async () => {
  await Promise.all(runtimes.map((r) => r.stopAll()));
});

afterAll(async () => {
  await Promise.all(runtimes.map((r) => r.stopAll()));
  for (const child of strays) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
  }
  const alive = [...pids].filter((pid) => !isDead(pid));
  fs.rmSync(stateDir, { recursive: true, force: true });
  expect(alive, 'processes left running').toEqual([]);
});

describe('ProcessRuntime', () => {
  test('starts web_dynamic and web_static replicas that answer / and /health with their hostname', async () => {
    const runtime = newRuntime();
    const d1 = recorder();
    const d2 = recorder();
    const s1 = recorder();
    const [h1, h2, hs] = await Promise.all([
      runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-1-aa' }, d1.hooks),
      runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-2-bb' }, d2.hooks),
      runtime.start({ service: 'web_static', hostname: 'web_static-1-cc' }, s1.hooks),
    ]);
    for (const h of [h1, h2, hs]) {
      expect(h.pid).toBeTypeOf('number');
      pids.add(h.pid!);
      expect(h.host).toBe('127.0.0.1');
      expect(h.port).toBeGreaterThan(0);
      expect(h.readyAt).toBeLessThanOrEqual(Date.now());
    }
    expect(new Set([h1.port, h2.port, hs.port]).size).toBe(3);
    expect(h1).toMatchObject({ service: 'web_dynamic', hostname: 'web_dynamic-1-aa' });

    // The state file lists every live replica of this session.
    const state = readState(runtime.stateFile);
    expect(state?.replicas.map((r) => [r.hostname, r.pid, r.service]).sort()).toEqual(
      [
        ['web_dynamic-1-aa', h1.pid, 'web_dynamic'],
        ['web_dynamic-2-bb', h2.pid, 'web_dynamic'],
        ['web_static-1-cc', hs.pid, 'web_static'],
      ].sort(),
    );

    const bodies: { hostname: string; instanceId: string; joke: string; at: string }[] = [];
    for (const h of [h1, h2]) {
      const res = await fetch(`http://127.0.0.1:${h.port}/`);
      expect(res.status).toBe(200);
      expect(res.headers.get('x-served-by')).toBe(h.hostname);
      const body = (await res.json()) as (typeof bodies)[number];
      expect(body.hostname).toBe(h.hostname);
      expect(body.instanceId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(body.joke.length).toBeGreaterThan(10);
      expect(Number.isNaN(Date.parse(body.at))).toBe(false);
      bodies.push(body);

      const again = (await (await fetch(`http://127.0.0.1:${h.port}/`)).json()) as (typeof bodies)[number];
      expect(again.instanceId).toBe(body.instanceId); // once per process, not per request

      const health = await fetch(`http://127.0.0.1:${h.port}/health`);
      expect(health.status).toBe(200);
      expect(health.headers.get('x-served-by')).toBe(h.hostname);
      expect(await health.json()).toEqual({ status: 'ok' });
    }
    expect(bodies[0].instanceId).not.toBe(bodies[1].instanceId);

    const page = await fetch(`http://127.0.0.1:${hs.port}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('x-served-by')).toBe('web_static-1-cc');
    expect(await page.text()).toContain('data-testid="served-by">web_static-1-cc</h1>');
    const staticHealth = await fetch(`http://127.0.0.1:${hs.port}/health`);
    expect(staticHealth.status).toBe(200);
    expect(staticHealth.headers.get('x-served-by')).toBe('web_static-1-cc');

    // stdout lines reach onLog: the startup line and access log lines naming the replica.
    expect(d1.lines[0]).toEqual({ stream: 'stdout', text: `listening on http://127.0.0.1:${h1.port}` });
    expect(await d1.line(/GET \/health 200/)).toMatch(/^web_dynamic-1-aa 127\.0\.0\.1 GET \/health 200/);
    expect(await s1.line(/GET \/ 200/)).toMatch(/^web_static-1-cc /);

    // stop(): graceful (the backend exits 0 on SIGTERM), reported as expected, gone from the state file.
    await runtime.stop('web_dynamic-1-aa');
    expect(isGone(h1.pid!)).toBe(true);
    expect(d1.exits).toEqual([{ code: 0, signal: null, expected: true }]);
    expect(readState(runtime.stateFile)?.replicas.map((r) => r.hostname).sort()).toEqual(['web_dynamic-2-bb', 'web_static-1-cc']);

    // stop() of an unknown or already stopped hostname resolves.
    await runtime.stop('web_dynamic-1-aa');
    await runtime.stop('no-such-replica');

    await runtime.stopAll();
    for (const h of [h2, hs]) expect(isGone(h.pid!)).toBe(true);
    expect(d2.exits).toEqual([{ code: 0, signal: null, expected: true }]);
    expect(s1.exits).toEqual([{ code: 0, signal: null, expected: true }]);
    expect(readState(runtime.stateFile)).toBeNull(); // nothing live: no state file
  });

  test('stop() with SIGKILL kills at once and reports it as expected', async () => {
    const runtime = newRuntime();
    const rec = recorder();
    const h = await runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-k' }, rec.hooks);
    pids.add(h.pid!);
    await runtime.stop('web_dynamic-k', { signal: 'SIGKILL' });
    expect(isGone(h.pid!)).toBe(true);
    expect(rec.exits).toEqual([{ code: null, signal: 'SIGKILL', expected: true }]);
  });

  test('a replica killed from outside is reported with expected=false', async () => {
    const runtime = newRuntime();
    const rec = recorder();
    const h = await runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-crash' }, rec.hooks);
    pids.add(h.pid!);
    process.kill(-h.pid!, 'SIGKILL');
    expect(await rec.exited).toEqual({ code: null, signal: 'SIGKILL', expected: false });
    expect(isGone(h.pid!)).toBe(true);
    expect(readState(runtime.stateFile)).toBeNull();
    await runtime.stop('web_dynamic-crash'); // already gone: resolves
    expect(rec.exits).toHaveLength(1);
  });

  test('rejects a second replica with the same hostname', async () => {
    const runtime = newRuntime();
    const h = await runtime.start({ service: 'web_static', hostname: 'web_static-dup' }, recorder().hooks);
    pids.add(h.pid!);
    await expect(runtime.start({ service: 'web_static', hostname: 'web_static-dup' }, recorder().hooks)).rejects.toThrow(
      /already running/,
    );
    await runtime.stopAll();
    expect(isGone(h.pid!)).toBe(true);
  });

  test('sweep() kills the replicas an abandoned runtime left, and nothing without its session', async () => {
    const abandoned = newRuntime();
    const a1 = recorder();
    const a2 = recorder();
    const [h1, h2] = await Promise.all([
      abandoned.start({ service: 'web_dynamic', hostname: 'web_dynamic-old-1' }, a1.hooks),
      abandoned.start({ service: 'web_static', hostname: 'web_static-old-1' }, a2.hooks),
    ]);
    pids.add(h1.pid!);
    pids.add(h2.pid!);
    expect(readState(abandoned.stateFile)?.replicas).toHaveLength(2);

    // A decoy: a live process listed in a state file, but without LAB_SESSION=<that session>
    // in its environment (as a recycled pid would be). sweep() must leave it alone.
    const decoy = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1 << 30)'], {
      detached: true,
      stdio: 'ignore',
      env: { PATH: process.env.PATH ?? '' },
    });
    strays.push(decoy);
    expect(decoy.pid).toBeTypeOf('number');
    pids.add(decoy.pid!);
    const decoyFile = path.join(stateDir, 'process-runtime-decoy.json');
    fs.writeFileSync(
      decoyFile,
      JSON.stringify({
        sessionId: 'decoy',
        // Its "owner" pid is running but started at another time: a recycled pid, not a live lab.
        ownerPid: decoy.pid,
        ownerStart: 1,
        updatedAt: Date.now(),
        replicas: [{ pid: decoy.pid, hostname: 'web_dynamic-x', service: 'web_dynamic', startedAt: Date.now(), sessionId: 'decoy' }],
      }),
    );

    // A new run of the lab (new session, same state dir) sweeps.
    const fresh = newRuntime();
    expect(await fresh.sweep()).toBe(2);
    expect(isGone(decoy.pid!)).toBe(false);

    // The abandoned runtime's own children: reported as crashes, then gone.
    expect(await a1.exited).toEqual({ code: null, signal: 'SIGKILL', expected: false });
    expect(await a2.exited).toEqual({ code: null, signal: 'SIGKILL', expected: false });
    expect(isGone(h1.pid!)).toBe(true);
    expect(isGone(h2.pid!)).toBe(true);
    expect(fs.existsSync(abandoned.stateFile)).toBe(false);
    expect(fs.existsSync(decoyFile)).toBe(false);

    // Nothing left to sweep; the fresh runtime still works.
    expect(await fresh.sweep()).toBe(0);
    const h3 = await fresh.start({ service: 'web_dynamic', hostname: 'web_dynamic-new-1' }, recorder().hooks);
    pids.add(h3.pid!);
    expect((await fetch(`http://127.0.0.1:${h3.port}/health`)).status).toBe(200);
    expect(await newRuntime().sweep()).toBe(1); // another session would sweep this one's live replica
    await fresh.stopAll();

    const decoyExit = new Promise((resolve) => decoy.once('exit', resolve));
    decoy.kill('SIGKILL');
    await decoyExit;
  });

  test('sweep() leaves the replicas of another lab process that is running, and removes them once it crashed', async () => {
    // A separate lab process (its own ProcessRuntime, same state dir) with one replica.
    const owner = spawn(process.execPath, ['--import', 'tsx', fixture('lab-owner.ts'), stateDir, `owner${process.pid}`], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    strays.push(owner);
    pids.add(owner.pid!);
    const ownerExit = new Promise((resolve) => owner.once('exit', resolve));
    const first = await readline.createInterface({ input: owner.stdout! })[Symbol.asyncIterator]().next();
    expect(first.value).toMatch(/^ready \d+$/);
    const replicaPid = Number((first.value as string).split(' ')[1]);
    pids.add(replicaPid);
    const ownerFile = path.join(stateDir, `process-runtime-owner${process.pid}.json`);
    expect(readState(ownerFile)?.replicas.map((r) => r.pid)).toEqual([replicaPid]);

    const fresh = newRuntime();
    expect(await fresh.sweep()).toBe(0); // its lab is alive: not a leftover
    expect(isGone(replicaPid)).toBe(false);
    expect(fs.existsSync(ownerFile)).toBe(true);

    // The lab crashes (SIGKILL: no cleanup). Its replica lives on in its own process group.
    owner.kill('SIGKILL');
    await ownerExit;
    expect(isGone(replicaPid)).toBe(false);

    expect(await fresh.sweep()).toBe(1);
    // Not our child: once killed it is reaped by init, which may take a moment; a zombie is dead.
    expect(isDead(replicaPid)).toBe(true);
    expect(fs.existsSync(ownerFile)).toBe(false);
  });

  test('sweep() of a state dir that does not exist finds nothing', async () => {
    const runtime = newRuntime({ stateDir: path.join(stateDir, 'missing', 'dir') });
    expect(await runtime.sweep()).toBe(0);
  });

  test('start() rejects within readyTimeoutMs when the backend never prints its line, and kills it', async () => {
    const runtime = newRuntime({ readyTimeoutMs: 1500, entries: { web_dynamic: { entry: fixture('never-ready.js') } } });
    const rec = recorder();
    const started = Date.now();
    await expect(runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-slow' }, rec.hooks)).rejects.toThrow(
      'web_dynamic replica "web_dynamic-slow" did not become ready within 1500 ms: it never printed "listening on http://<host>:<port>" on stdout. It was stopped.',
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400); // clock granularity
    const pid = Number(/^pid (\d+)$/.exec(await rec.line(/^pid \d+$/))![1]);
    pids.add(pid);
    expect(isGone(pid)).toBe(true);
    expect(rec.exits).toEqual([]); // a failed start is reported by the rejection only
    expect(readState(runtime.stateFile)).toBeNull();
  });

  test('start() rejects with the last /health answer when the backend listens but is never healthy', async () => {
    const runtime = newRuntime({ readyTimeoutMs: 5000, entries: { web_static: { entry: fixture('unhealthy.js') } } });
    const rec = recorder();
    await expect(runtime.start({ service: 'web_static', hostname: 'web_static-sick' }, rec.hooks)).rejects.toThrow(
      /did not become ready within 5000 ms: GET \/health did not answer 200 \(last answer: HTTP 503\)/,
    );
    const pid = Number(/^pid (\d+)$/.exec(await rec.line(/^pid \d+$/))![1]);
    pids.add(pid);
    expect(isGone(pid)).toBe(true);
  });

  test('start() rejects with the exit code and stderr when the backend dies while starting', async () => {
    const runtime = newRuntime({ entries: { web_dynamic: { entry: fixture('exits-early.js') } } });
    const rec = recorder();
    await expect(runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-broken' }, rec.hooks)).rejects.toThrow(
      'web_dynamic replica "web_dynamic-broken" exited with code 3 before it was ready. Last stderr: boom: cannot read config',
    );
    expect(rec.lines).toEqual([{ stream: 'stderr', text: 'boom: cannot read config' }]);
    expect(readState(runtime.stateFile)).toBeNull();
  });

  test('stop() while a replica is starting makes start() reject', async () => {
    const runtime = newRuntime({ entries: { web_dynamic: { entry: fixture('never-ready.js') } } });
    const rec = recorder();
    const starting = runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-early' }, rec.hooks);
    const pid = Number(/^pid (\d+)$/.exec(await rec.line(/^pid \d+$/))![1]);
    pids.add(pid);
    await runtime.stop('web_dynamic-early', { graceMs: 500 });
    await expect(starting).rejects.toThrow('web_dynamic replica "web_dynamic-early" was stopped before it was ready.');
    expect(isGone(pid)).toBe(true);
  });

  test('the constructor refuses a session id that could escape the state file name', () => {
    expect(() => new ProcessRuntime({ sessionId: '../x', stateDir })).toThrow(/sessionId must be/);
  });
});

// ---------------------------------------------------------------- session_php: php -S, or its Express stand-in

/** The session.save_path a php replica was started with, read from its real command line. */
function savePathOf(pid: number): string {
  const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const arg = args.find((a) => a.startsWith('session.save_path='));
  expect(arg, `command line of ${pid}: ${args.join(' ')}`).toBeDefined();
  return arg!.slice('session.save_path='.length);
}

/** PHPSESSID=<id> from a response's Set-Cookie, or null. */
function sessionCookie(res: Response): string | null {
  for (const c of res.headers.getSetCookie()) {
    const m = /^PHPSESSID=([^;]*)/.exec(c);
    if (m) return m[1];
  }
  return null;
}

interface SessionView {
  hostname: string;
  user: string | null;
  sessionId: string | null;
  knownSession: boolean;
  visits: number;
}

async function sessionGet(port: number, cookie?: string): Promise<{ res: Response; body: SessionView }> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { headers: cookie ? { cookie: `PHPSESSID=${cookie}` } : {} });
  expect(res.status).toBe(200);
  return { res, body: (await res.json()) as SessionView };
}

async function sessionLogin(port: number, user: string): Promise<{ res: Response; body: SessionView; id: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  expect(res.status).toBe(200);
  const id = sessionCookie(res);
  expect(id).toMatch(/^[a-v0-9]{26}$/);
  return { res, body: (await res.json()) as SessionView, id: id! };
}

/** A server holding a port, answering /health 200 as someone else (what a php replica must not mistake for itself). */
async function portHolder(): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'x-served-by': 'intruder', 'content-type': 'application/json' }).end('{"status":"ok"}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('ProcessRuntime: session_php', () => {
  test.skipIf(!HAS_PHP)('runs php -S replicas, each with its own session directory: a login on one is unknown to the other', async () => {
    const sessionId = `php${process.pid}-${++sessionCounter}`;
    const runtime = newRuntime({ sessionId });
    const ra = recorder();
    const rb = recorder();
    const [a, b] = await Promise.all([
      runtime.start({ service: 'session_php', hostname: 'session_php-1-aa' }, ra.hooks),
      runtime.start({ service: 'session_php', hostname: 'session_php-2-bb' }, rb.hooks),
    ]);
    for (const h of [a, b]) {
      pids.add(h.pid!);
      expect(h.implementation).toMatch(/^php \d+\.\d+\.\d+/);
      expect(h.host).toBe('127.0.0.1');
    }
    expect(a.port).not.toBe(b.port);
    // Really php, really its built-in server, on the port the runtime picked.
    const cmdline = fs.readFileSync(`/proc/${a.pid}/cmdline`, 'utf8').split('\0');
    expect(cmdline.slice(1, 4)).toEqual(['-q', '-S', `127.0.0.1:${a.port}`]);
    expect(cmdline.at(-2)).toMatch(/sandbox-images\/session_php\/router\.php$/);

    // One session directory per replica, under the state dir, named after this run.
    const runDir = path.join(stateDir, `php-sessions-${sessionId}`);
    const [dirA, dirB] = [savePathOf(a.pid!), savePathOf(b.pid!)];
    expect(path.dirname(dirA)).toBe(runDir);
    expect(path.dirname(dirB)).toBe(runDir);
    expect(dirA).not.toBe(dirB);
    expect(fs.readdirSync(runDir).sort()).toEqual([path.basename(dirA), path.basename(dirB)].sort());

    // Log in on A (through its own port): A knows the session, its file is in A's directory only.
    const login = await sessionLogin(a.port, 'alice');
    expect(login.res.headers.get('x-served-by')).toBe('session_php-1-aa');
    expect(login.res.headers.get('x-session-backend')).toBe(a.implementation);
    expect(login.body).toEqual({ hostname: 'session_php-1-aa', user: 'alice', sessionId: login.id, knownSession: false, visits: 1 });
    expect((await sessionGet(a.port, login.id)).body).toMatchObject({ user: 'alice', sessionId: login.id, knownSession: true, visits: 2 });
    expect(fs.readdirSync(dirA)).toEqual([`sess_${login.id}`]);
    expect(fs.readdirSync(dirB)).toEqual([]);

    // The same cookie on B: B has never heard of it.
    const onB = await sessionGet(b.port, login.id);
    expect(onB.res.headers.get('x-served-by')).toBe('session_php-2-bb');
    expect(onB.body).toMatchObject({ hostname: 'session_php-2-bb', user: null, knownSession: false });

    // Each php -S logs its requests (stdout) with its own name.
    expect(await ra.line(/ POST \/login /)).toMatch(/^session_php-1-aa 127\.0\.0\.1 POST \/login 200 \d+ - [\d.]+ ms$/);
    expect(await rb.line(/ GET \/ /)).toMatch(/^session_php-2-bb 127\.0\.0\.1 GET \/ 200 \d+ - [\d.]+ ms$/);
    expect(readState(runtime.stateFile)?.replicas.map((r) => r.pid).sort()).toEqual([a.pid, b.pid].sort());

    // stop(): the process group is gone and so is the replica's session directory.
    await runtime.stop('session_php-1-aa');
    expect(isGone(a.pid!)).toBe(true);
    expect(ra.exits).toHaveLength(1);
    expect(ra.exits[0].expected).toBe(true);
    expect(fs.existsSync(dirA)).toBe(false);
    expect(fs.existsSync(dirB)).toBe(true);
    await runtime.stopAll();
    expect(isGone(b.pid!)).toBe(true);
    expect(fs.existsSync(runDir)).toBe(false);
    expect(readState(runtime.stateFile)).toBeNull();
  });

  test('runs the Express stand-in when php is not found, and says so', async () => {
    const sessionId = `nophp${process.pid}-${++sessionCounter}`;
    const runtime = newRuntime({ sessionId, php: path.join(stateDir, 'no-such-dir', 'php') });
    const ra = recorder();
    const rb = recorder();
    const [a, b] = await Promise.all([
      runtime.start({ service: 'session_php', hostname: 'session_php-1-xa' }, ra.hooks),
      runtime.start({ service: 'session_php', hostname: 'session_php-2-xb' }, rb.hooks),
    ]);
    for (const h of [a, b]) {
      pids.add(h.pid!);
      expect(h.implementation).toBe('express (php not found)');
      expect(fs.readFileSync(`/proc/${h.pid}/cmdline`, 'utf8').split('\0')[1]).toMatch(/sandbox-images\/session_express\/server\.js$/);
    }
    expect(await ra.line(/^\[runtime\]/)).toMatch(/^\[runtime\] php not found \(.*ENOENT\): session_php runs on its Node stand-in \(express \(php not found\)\)$/);

    const login = await sessionLogin(a.port, 'alice');
    expect(login.res.headers.get('x-session-backend')).toBe('express (php not found)');
    expect(login.body).toEqual({ hostname: 'session_php-1-xa', user: 'alice', sessionId: login.id, knownSession: false, visits: 1 });
    expect((await sessionGet(a.port, login.id)).body).toMatchObject({ user: 'alice', knownSession: true });
    const onB = await sessionGet(b.port, login.id);
    expect(onB.res.headers.get('x-session-backend')).toBe('express (php not found)');
    expect(onB.body).toMatchObject({ hostname: 'session_php-2-xb', user: null, knownSession: false });
    expect(fs.existsSync(path.join(stateDir, `php-sessions-${sessionId}`))).toBe(false); // in memory: no directory

    await runtime.stopAll();
    for (const h of [a, b]) expect(isGone(h.pid!)).toBe(true);
    expect(ra.exits).toEqual([{ code: 0, signal: null, expected: true }]);
  });

  test('php: null forces the stand-in too', async () => {
    const runtime = newRuntime({ php: null });
    const h = await runtime.start({ service: 'session_php', hostname: 'session_php-off' }, recorder().hooks);
    pids.add(h.pid!);
    expect(h.implementation).toBe('express (php not found)');
    expect((await sessionGet(h.port)).res.headers.get('x-session-backend')).toBe('express (php not found)');
    await runtime.stopAll();
    expect(isGone(h.pid!)).toBe(true);
  });

  test.skipIf(!HAS_PHP)('a php replica whose port was taken is started again on another one, never fooled by the intruder', async () => {
    const holder = await portHolder();
    try {
      let calls = 0;
      const sessionId = `taken${process.pid}-${++sessionCounter}`;
      // The first port handed out is held by another server that even answers /health 200.
      const runtime = newRuntime({
        sessionId,
        pickPort: async () => (++calls === 1 ? holder.port : freePort()),
      });
      const rec = recorder();
      const h = await runtime.start({ service: 'session_php', hostname: 'session_php-retry' }, rec.hooks);
      pids.add(h.pid!);
      expect(calls).toBe(2);
      expect(h.port).not.toBe(holder.port);
      expect(rec.lines).toContainEqual({ stream: 'stderr', text: `[runtime] port ${holder.port} was taken before php could bind it; trying another one` });
      expect(rec.lines.some((l) => /Failed to listen on 127\.0\.0\.1:\d+ \(reason: Address already in use\)/.test(l.text))).toBe(true);
      const res = await fetch(`http://127.0.0.1:${h.port}/health`);
      expect(res.headers.get('x-served-by')).toBe('session_php-retry');
      // Only the live replica's session directory is left.
      expect(fs.readdirSync(path.join(stateDir, `php-sessions-${sessionId}`))).toEqual([path.basename(savePathOf(h.pid!))]);
      await runtime.stopAll();
      expect(isGone(h.pid!)).toBe(true);
    } finally {
      await holder.close();
    }
  });

  test.skipIf(!HAS_PHP)('start() gives up after 5 taken ports, leaving no process and no directory', async () => {
    const holder = await portHolder();
    try {
      const sessionId = `full${process.pid}-${++sessionCounter}`;
      let calls = 0;
      const runtime = newRuntime({ sessionId, pickPort: async () => (calls++, holder.port) });
      const rec = recorder();
      await expect(runtime.start({ service: 'session_php', hostname: 'session_php-nope' }, rec.hooks)).rejects.toThrow(
        `session_php replica "session_php-nope" found no free port in 5 tries (the last, ${holder.port}, was taken before php could bind it).`,
      );
      expect(calls).toBe(5);
      expect(fs.existsSync(path.join(stateDir, `php-sessions-${sessionId}`))).toBe(false);
      expect(readState(runtime.stateFile)).toBeNull();
      expect(rec.exits).toEqual([]);
    } finally {
      await holder.close();
    }
  });

  test.skipIf(!HAS_PHP)('stop() while a php start waits for its port: start() rejects, nothing is spawned', async () => {
    let handOut!: (port: number) => void;
    let asked!: () => void;
    const portAsked = new Promise<void>((resolve) => (asked = resolve));
    const runtime = newRuntime({
      pickPort: () => {
        asked();
        return new Promise<number>((resolve) => (handOut = resolve));
      },
    });
    const rec = recorder();
    const starting = runtime.start({ service: 'session_php', hostname: 'session_php-early' }, rec.hooks);
    await portAsked;
    const stopped = runtime.stop('session_php-early');
    handOut(await freePort());
    await expect(starting).rejects.toThrow('session_php replica "session_php-early" was stopped before it was ready.');
    await stopped;
    expect(rec.lines).toEqual([]);
    expect(readState(runtime.stateFile)).toBeNull();
  });

  test.skipIf(!HAS_PHP)('sweep() kills the php replicas of an abandoned runtime and removes their session directories', async () => {
    const sessionId = `oldphp${process.pid}-${++sessionCounter}`;
    const abandoned = newRuntime({ sessionId });
    const rec = recorder();
    const h = await abandoned.start({ service: 'session_php', hostname: 'session_php-old' }, rec.hooks);
    pids.add(h.pid!);
    const runDir = path.join(stateDir, `php-sessions-${sessionId}`);
    expect(fs.existsSync(savePathOf(h.pid!))).toBe(true);

    expect(await newRuntime().sweep()).toBe(1);
    expect(await rec.exited).toEqual({ code: null, signal: 'SIGKILL', expected: false });
    expect(isGone(h.pid!)).toBe(true);
    expect(fs.existsSync(runDir)).toBe(false);
    expect(fs.existsSync(abandoned.stateFile)).toBe(false);
  });
});

/** A port free a moment ago (what the runtime's default picker does). */
async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
