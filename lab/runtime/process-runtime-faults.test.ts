/**
 * ProcessRuntime: faults, crash(), ReplicaSpec.port and ReplicaSpec.env, against the real demo
 * backends run as real processes. Every fault is observed from outside, by real HTTP requests on
 * the replica's own port (the side channel itself is never an HTTP path). No mocks, no sleeps:
 * waits are for answers, timeouts of the probe client, log lines and socket events.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ProbeClient } from '../probe-client.ts';
import type { Fault, ReplicaHandle } from '../seams.ts';
import { recorder } from '../../test/support/replica-recorder.ts';
import type { ServiceName } from '../topology.ts';
import { ProcessRuntime, type ProcessRuntimeOptions } from './process-runtime.ts';

const HAS_PHP = (() => {
  try {
    return execFileSync('php', ['-r', 'echo extension_loaded("session") ? "yes" : "no";'], { encoding: 'utf8' }) === 'yes';
  } catch {
    return false;
  }
})();
if (!HAS_PHP) console.warn('php (with its session extension) is not on PATH: the php -S fault tests are skipped.');

const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-runtime-faults-'));
const runtimes: ProcessRuntime[] = [];
const pids = new Set<number>();
let counter = 0;

function newRuntime(opts: Partial<ProcessRuntimeOptions> = {}): ProcessRuntime {
  const runtime = new ProcessRuntime({ sessionId: `f${process.pid}-${++counter}`, stateDir, ...opts });
  runtimes.push(runtime);
  return runtime;
}

function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** Resolves with the error code of a TCP connect to 127.0.0.1:port (or 'connected'). */
function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** A server holding a port (it answers /health 200 as someone else). */
async function portHolder(): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => res.writeHead(200, { 'x-served-by': 'intruder' }).end('{"status":"ok"}'));
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

/**
 * Sends one keep-alive GET on a raw TCP connection, reads the whole answer, then waits for the
 * server to close the idle connection. Resolves with the Keep-Alive header and how long after
 * the answer the server's FIN came. Rejects if the connection sees anything but a clean close.
 */
function idleCloseAfterAnswer(port: number, pathname: string): Promise<{ status: number; keepAlive: string | null; idleMs: number }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let buffer = Buffer.alloc(0);
    let answeredAt = 0;
    let status = 0;
    let keepAlive: string | null = null;
    socket.once('connect', () => socket.write(`GET ${pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n`));
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (answeredAt || end < 0) return;
      const head = buffer.subarray(0, end).toString('latin1');
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? NaN);
      if (!Number.isFinite(length)) {
        reject(new Error(`no Content-Length in ${JSON.stringify(head)}`));
        socket.destroy();
        return;
      }
      if (buffer.length >= end + 4 + length) {
        answeredAt = performance.now();
        status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
        keepAlive = /\r\nkeep-alive: *([^\r]*)/i.exec(head)?.[1] ?? null;
      }
    });
    socket.once('end', () => {
      // The server's FIN: it closed the idle connection (we never send anything more).
      if (!answeredAt) reject(new Error('the server closed the connection before answering'));
      else resolve({ status, keepAlive, idleMs: performance.now() - answeredAt });
      socket.destroy();
    });
    socket.once('error', reject);
  });
}

afterAll(async () => {
  await Promise.all(runtimes.map((r) => r.stopAll()));
  fs.rmSync(stateDir, { recursive: true, force: true });
  expect([...pids].filter((pid) => !isGone(pid)), 'processes left running').toEqual([]);
});

// ---------------------------------------------------------------- every fault mode, on every backend kind

interface Kind {
  name: string;
  service: ServiceName;
  /** ProcessRuntime's php option (session_php: real php, or null for the Express stand-in). */
  php?: string | null;
  /** A path the proxy would route (not a health path). */
  path: string;
  skip: boolean;
  implementation?: RegExp;
}

const KINDS: Kind[] = [
  { name: 'web_static', service: 'web_static', path: '/', skip: false },
  { name: 'web_dynamic', service: 'web_dynamic', path: '/', skip: false },
  { name: 'spring_app', service: 'spring_app', path: '/app/helloParams?name=lab', skip: false },
  { name: 'session_php on php -S', service: 'session_php', php: 'php', path: '/', skip: !HAS_PHP, implementation: /^php \d/ },
  { name: 'session_php on its Express stand-in', service: 'session_php', php: null, path: '/', skip: false, implementation: /^express / },
];

describe.each(KINDS)('faults: $name', (kind) => {
  const hostname = `${kind.service}-1-${kind.php === null ? 'x' : 'f'}`;
  let runtime: ProcessRuntime;
  let handle: ReplicaHandle;
  let client: ProbeClient;
  const rec = recorder();

  beforeAll(async () => {
    if (kind.skip) return;
    runtime = newRuntime(kind.php === undefined ? {} : { php: kind.php });
    handle = await runtime.start({ service: kind.service, hostname }, rec.hooks);
    pids.add(handle.pid!);
    if (kind.implementation) expect(handle.implementation).toMatch(kind.implementation);
    client = new ProbeClient({ baseUrl: `http://127.0.0.1:${handle.port}`, connection: 'new' });
  });

  afterAll(async () => {
    client?.close();
    await runtime?.stopAll();
  });

  /** Sets a fault and checks the replica's own `fault:` log line came with it. */
  async function setFault(fault: Fault): Promise<void> {
    const from = rec.lines.length;
    await runtime.setFault(hostname, fault);
    const words = fault.mode === 'slow' ? `slow ${fault.ms} ms` : fault.mode;
    expect(await rec.line(new RegExp(`${hostname} fault: ${words}$`), from)).toContain(`${hostname} fault: ${words}`);
  }

  async function timed(p: string, timeoutMs = 10_000) {
    const started = performance.now();
    const res = await client.get(p, { timeoutMs });
    return { res, ms: performance.now() - started };
  }

  test.skipIf(kind.skip)('unhealthy: /health answers 503, the app still 200', async () => {
    await setFault({ mode: 'unhealthy' });
    const health = await client.get('/health');
    expect(health.status).toBe(503);
    expect(health.servedBy).toBe(hostname);
    const app = await client.get(kind.path);
    expect(app.status).toBe(200);
    expect(app.servedBy).toBe(hostname);
  });

  test.skipIf(kind.skip)('errors: every answer but /health is a short 500', async () => {
    await setFault({ mode: 'errors' });
    for (const p of [kind.path, '/no-such-page']) {
      const res = await client.get(p);
      expect(res.status).toBe(500);
      expect(res.servedBy).toBe(hostname);
      expect(res.body.length).toBeGreaterThan(0);
      expect(res.body.length).toBeLessThan(300);
    }
    const health = await client.get('/health');
    expect(health.status).toBe(200);
  });

  test.skipIf(kind.skip)('slow: every answer, /health included, takes at least ms', async () => {
    await setFault({ mode: 'slow', ms: 400 });
    for (const p of [kind.path, '/health']) {
      const { res, ms } = await timed(p);
      expect(res.status).toBe(200);
      expect(res.servedBy).toBe(hostname);
      expect(ms).toBeGreaterThanOrEqual(400);
    }
  });

  test.skipIf(kind.skip)('hang: requests are accepted and never answered, /health too; healthy restores', async () => {
    await setFault({ mode: 'hang' });
    // The connection is accepted (the port is open) ...
    expect(await connectOutcome(handle.port)).toBe('connected');
    // ... but no answer comes: the probe client gives up after its timeoutMs, for the app and for /health.
    const started = performance.now();
    const [app, health] = await Promise.allSettled([client.get(kind.path, { timeoutMs: 500 }), client.get('/health', { timeoutMs: 500 })]);
    expect(performance.now() - started).toBeGreaterThanOrEqual(500);
    for (const outcome of [app, health]) {
      expect(outcome.status).toBe('rejected');
      expect(String((outcome as PromiseRejectedResult).reason)).toMatch(/got no complete response within 500 ms/);
    }

    await setFault({ mode: 'healthy' });
    const after = await client.get(kind.path);
    expect(after.status).toBe(200);
    expect(after.servedBy).toBe(hostname);
    expect((await client.get('/health')).status).toBe(200);
  });

  test.skipIf(kind.skip)('healthy after slow, errors and unhealthy restores normal answers', async () => {
    await setFault({ mode: 'slow', ms: 3000 });
    await setFault({ mode: 'healthy' });
    const { res, ms } = await timed('/health');
    expect(res.status).toBe(200);
    expect(ms).toBeLessThan(3000); // no longer slow
    await setFault({ mode: 'errors' });
    expect((await client.get(kind.path)).status).toBe(500);
    await setFault({ mode: 'unhealthy' });
    expect((await client.get('/health')).status).toBe(503);
    await setFault({ mode: 'healthy' });
    expect((await client.get(kind.path)).status).toBe(200);
    expect((await client.get('/health')).status).toBe(200);
  });
});

// ---------------------------------------------------------------- setFault() refusals

describe('setFault() refuses', () => {
  test('an unknown hostname, an invalid fault, a replica still starting, a stopped one', async () => {
    const runtime = newRuntime({ entries: { web_static: { entry: fileURLToPath(new URL('./test-fixtures/never-ready.js', import.meta.url)) } } });
    await expect(runtime.setFault('nobody-1', { mode: 'errors' })).rejects.toThrow('There is no running replica named "nobody-1".');

    const rec = recorder();
    const starting = runtime.start({ service: 'web_static', hostname: 'web_static-early' }, rec.hooks);
    pids.add(Number(/^pid (\d+)$/.exec(await rec.line(/^pid \d+$/))![1]));
    await expect(runtime.setFault('web_static-early', { mode: 'hang' })).rejects.toThrow(
      'Replica "web_static-early" is still starting; faults apply to running replicas.',
    );
    await runtime.stop('web_static-early', { signal: 'SIGKILL' });
    await expect(starting).rejects.toThrow(/was stopped before it was ready/);

    const h = await runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-v' }, recorder().hooks);
    pids.add(h.pid!);
    await expect(runtime.setFault('web_dynamic-v', { mode: 'slow', ms: 0 })).rejects.toThrow(
      'A slow fault needs ms, a whole number from 1 to 60000, got 0.',
    );
    await expect(runtime.setFault('web_dynamic-v', { mode: 'slow', ms: 60_001 })).rejects.toThrow(/from 1 to 60000, got 60001/);
    await expect(runtime.setFault('web_dynamic-v', { mode: 'broken' } as unknown as Fault)).rejects.toThrow(
      "A fault's mode must be one of healthy, unhealthy, slow, errors, hang.",
    );
    await runtime.stop('web_dynamic-v');
    await expect(runtime.setFault('web_dynamic-v', { mode: 'errors' })).rejects.toThrow('There is no running replica named "web_dynamic-v".');
  });

  test('a node replica that never acknowledges: rejects after faultTimeoutMs', async () => {
    // unhealthy.js has an IPC channel but no fault support; it never gets ready either, so give it a backend that does.
    const silent = path.join(stateDir, 'silent.mjs');
    fs.writeFileSync(
      silent,
      `import http from 'node:http';
const s = http.createServer((_q, r) => r.end('{"status":"ok"}'));
s.listen(Number(process.env.PORT), '127.0.0.1', () => process.stdout.write('listening on http://127.0.0.1:' + s.address().port + '\\n'));
process.on('message', () => {}); // reads fault messages, never answers
`,
    );
    const runtime = newRuntime({ faultTimeoutMs: 300, entries: { web_dynamic: { entry: silent } } });
    const h = await runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-mute' }, recorder().hooks);
    pids.add(h.pid!);
    const started = performance.now();
    await expect(runtime.setFault('web_dynamic-mute', { mode: 'slow', ms: 5 })).rejects.toThrow(
      'web_dynamic replica "web_dynamic-mute" did not acknowledge the fault "slow 5 ms" within 300 ms.',
    );
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    await runtime.stop('web_dynamic-mute', { signal: 'SIGKILL' });
  });
});

// ---------------------------------------------------------------- crash(), and a restart on the same port

const CRASH_KINDS = KINDS.filter((k) => k.service !== 'web_static');

describe.each(CRASH_KINDS)('crash and restart at the same port: $name', (kind) => {
  test.skipIf(kind.skip)('crash(): onExit expected false, the port closed; start({ port }) brings it back there', async () => {
    const runtime = newRuntime(kind.php === undefined ? {} : { php: kind.php });
    const hostname = `${kind.service}-c${++counter}`;
    const first = recorder();
    const h = await runtime.start({ service: kind.service, hostname }, first.hooks);
    pids.add(h.pid!);
    await runtime.setFault(hostname, { mode: 'errors' });
    // php: the fault sits in the replica's own file (LAB_FAULT_FILE, beside its session directory).
    const environ = fs.readFileSync(`/proc/${h.pid}/environ`, 'utf8').split('\0');
    const faultFile = environ.find((e) => e.startsWith('LAB_FAULT_FILE='))?.slice('LAB_FAULT_FILE='.length);
    if (kind.php === 'php') {
      expect(faultFile).toMatch(new RegExp(`/php-sessions-[^/]+/${hostname}-[^/]+\\.fault\\.json$`));
      expect(fs.readFileSync(faultFile!, 'utf8')).toBe('{"mode":"errors"}\n');
    } else {
      expect(faultFile).toBeUndefined(); // node backends: the IPC channel
    }

    await runtime.crash(hostname);
    expect(first.exits).toEqual([{ code: null, signal: 'SIGKILL', expected: false }]);
    if (faultFile) expect(fs.existsSync(faultFile)).toBe(false);
    expect(isGone(h.pid!)).toBe(true);
    expect(await connectOutcome(h.port)).toBe('ECONNREFUSED');
    await expect(runtime.setFault(hostname, { mode: 'healthy' })).rejects.toThrow(`There is no running replica named "${hostname}".`);
    await expect(runtime.crash(hostname)).rejects.toThrow(`There is no running replica named "${hostname}" to crash.`);

    // The same hostname at the same address, as an operator restarting a node behind a static server list.
    const second = recorder();
    const again = await runtime.start({ service: kind.service, hostname, port: h.port }, second.hooks);
    pids.add(again.pid!);
    expect(again.port).toBe(h.port);
    expect(again.pid).not.toBe(h.pid);
    const res = await fetch(`http://127.0.0.1:${h.port}${kind.path}`);
    expect(res.status).toBe(200); // a new process: healthy, the old fault is gone
    expect(res.headers.get('x-served-by')).toBe(hostname);
    await res.arrayBuffer();

    await runtime.stop(hostname);
    expect(second.exits).toHaveLength(1);
    expect(second.exits[0].expected).toBe(true);
  });

  test.skipIf(kind.skip)('start({ port }) on a taken port is refused with a sentence naming it', async () => {
    const holder = await portHolder();
    try {
      const runtime = newRuntime(kind.php === undefined ? {} : { php: kind.php });
      const rec = recorder();
      await expect(runtime.start({ service: kind.service, hostname: `${kind.service}-t`, port: holder.port }, rec.hooks)).rejects.toThrow(
        `Port ${holder.port} on 127.0.0.1 is taken by another process: ${kind.service} replica "${kind.service}-t" cannot listen there.`,
      );
      expect(rec.exits).toEqual([]);
      expect(fs.existsSync(runtime.stateFile)).toBe(false);
    } finally {
      await holder.close();
    }
  });
});

// ---------------------------------------------------------------- ReplicaSpec.env

describe('ReplicaSpec.env', () => {
  test('KEEPALIVE_TIMEOUT_MS reaches spring_app: an idle keep-alive connection is closed by the backend after about that long', async () => {
    const runtime = newRuntime();
    const h = await runtime.start({ service: 'spring_app', hostname: 'spring_app-ka', env: { KEEPALIVE_TIMEOUT_MS: '1500' } }, recorder().hooks);
    pids.add(h.pid!);
    const { status, keepAlive, idleMs } = await idleCloseAfterAnswer(h.port, '/app/health');
    expect(status).toBe(200);
    expect(keepAlive).toBe('timeout=1');
    expect(idleMs).toBeGreaterThanOrEqual(1400);
    expect(idleMs).toBeLessThan(1500 + 5000);

    // Without it: Tomcat's 60 s default, announced in the Keep-Alive header.
    const d = await runtime.start({ service: 'spring_app', hostname: 'spring_app-default' }, recorder().hooks);
    pids.add(d.pid!);
    const res = await fetch(`http://127.0.0.1:${d.port}/app/health`);
    expect(res.headers.get('keep-alive')).toBe('timeout=60');
    await res.arrayBuffer();
    await runtime.stopAll();
  });

  test('KEEPALIVE_TIMEOUT_MS reaches web_dynamic and its idle connection closes after about that long', async () => {
    const runtime = newRuntime();
    const h = await runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-ka', env: { KEEPALIVE_TIMEOUT_MS: '1000' } }, recorder().hooks);
    pids.add(h.pid!);
    const { keepAlive, idleMs } = await idleCloseAfterAnswer(h.port, '/health');
    expect(keepAlive).toBe('timeout=1');
    expect(idleMs).toBeGreaterThanOrEqual(900);
    expect(idleMs).toBeLessThan(1000 + 5000);
    await runtime.stopAll();
  });

  test('names and values are checked before anything starts', async () => {
    const runtime = newRuntime();
    const start = (env: Record<string, string>) => runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-env', env }, recorder().hooks);
    await expect(start({ lower: 'x' })).rejects.toThrow(
      'Cannot start web_dynamic replica "web_dynamic-env": environment variable names are 1-64 of A-Z, 0-9 and _, starting with a letter; got "lower".',
    );
    for (const name of ['NODE_OPTIONS', 'PORT', 'LAB_HOSTNAME', 'PATH', 'LD_PRELOAD']) {
      await expect(start({ [name]: 'x' })).rejects.toThrow(
        `Cannot start web_dynamic replica "web_dynamic-env": ${name} is set by the lab or changes how the runtime itself runs; it cannot be passed in env.`,
      );
    }
    await expect(start({ KEEPALIVE_TIMEOUT_MS: '1\n2' })).rejects.toThrow(/the value of KEEPALIVE_TIMEOUT_MS must be a string of at most 4096 printable characters/);
    await expect(runtime.start({ service: 'web_dynamic', hostname: 'web_dynamic-p', port: 70_000 }, recorder().hooks)).rejects.toThrow(
      'Cannot start web_dynamic replica "web_dynamic-p": port must be a whole number from 1 to 65535, got 70000.',
    );
    expect(fs.existsSync(runtime.stateFile)).toBe(false);
  });
});
