/**
 * Test helpers for the Node demo backends' tests (not shipped in an image): an app mounted in the
 * test's process on a free port, and the real process (`node server.js`, started as the lab's
 * process runtime does through ./serve.js) read line by line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import readline from 'node:readline';
import { afterEach } from 'vitest';

/**
 * Returns `mount(app)`, which serves `app` on a free port of 127.0.0.1 and resolves to its base
 * URL; every mounted server is closed after each test. Call it at a test file's top level.
 */
export function appMounter(): (app: http.RequestListener) => Promise<string> {
  const servers: http.Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) {
      s.closeAllConnections();
      await new Promise((resolve) => s.close(resolve));
    }
  });
  return async (app) => {
    const server = http.createServer(app);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };
}

export interface Started {
  child: ChildProcess;
  /** The port of the `listening on` line. */
  port: number;
  /** Lines before and including `listening on`. */
  startup: string[];
  /** The next stdout line (rejects once stdout has ended). */
  next(): Promise<string>;
  exited: Promise<{ code: number | null; signal: string | null }>;
}

/**
 * Spawns `node <entry>` with only PATH, PORT=0, HOST=127.0.0.1 and `env` (optionally with the
 * Node IPC channel) and reads its stdout up to the `listening on` line.
 */
export async function startProcess(entry: string, env: Record<string, string>, ipc = false): Promise<Started> {
  const child = spawn(process.execPath, [entry], {
    stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', ...env },
  });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    const r = await lines.next();
    if (r.done) throw new Error('stdout ended');
    return r.value as string;
  };
  const startup: string[] = [];
  try {
    for (;;) {
      const line = await next();
      startup.push(line);
      if (line.startsWith('listening on ')) break;
    }
  } catch (err) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    throw err;
  }
  const port = Number(/:(\d+)$/.exec(startup.at(-1)!)![1]);
  return { child, port, startup, next, exited };
}

/** Kills the process if it still runs, and waits for its exit. */
export async function ended(p: Started): Promise<void> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await p.exited;
}
