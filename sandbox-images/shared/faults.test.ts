/**
 * The Node backends' fault module: validation, the middleware's modes on a real HTTP server, and
 * the LAB_FAULT_FILE side channel (what Docker mode uses) on a real web_dynamic process.
 * (The IPC channel is covered through ProcessRuntime in lab/runtime/process-runtime-faults.test.ts.)
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, test } from 'vitest';
import { describeFault, Faults, parseFault } from './faults.js';

const servers: http.Server[] = [];

afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((resolve) => s.close(resolve));
  }
});

/**
 * A plain node:http server: X-Served-By, then the fault middleware, then 200 "ok". `requests(n)`
 * resolves once n more requests went through the middleware (its 'request' listener runs after
 * the handler), e.g. once hang holds them.
 */
async function serve(faults: Faults): Promise<{ port: number; requests(n: number): Promise<void> }> {
  const mw = faults.middleware();
  const server = http.createServer((req, res) => {
    res.setHeader('X-Served-By', 'r1');
    mw(req, res, () => res.end('ok'));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    requests: (n) =>
      new Promise<void>((resolve) => {
        let seen = 0;
        const onRequest = () => {
          if (++seen < n) return;
          server.off('request', onRequest);
          resolve();
        };
        server.on('request', onRequest);
      }),
  };
}

/** GET with node:http (no retries): the status and body, or the error code. */
function get(port: number, p: string): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
  });
}

describe('parseFault', () => {
  test('accepts the five modes and refuses anything else with a sentence', () => {
    for (const mode of ['healthy', 'unhealthy', 'errors', 'hang']) expect(parseFault({ mode })).toEqual({ ok: true, fault: { mode } });
    expect(parseFault({ mode: 'slow', ms: 500 })).toEqual({ ok: true, fault: { mode: 'slow', ms: 500 } });
    expect(parseFault({ mode: 'hang', ms: 5 })).toEqual({ ok: true, fault: { mode: 'hang' } }); // extra fields dropped
    expect(parseFault({ mode: 'slow' })).toEqual({ ok: false, error: 'slow needs ms, a whole number from 1 to 60000' });
    expect(parseFault({ mode: 'slow', ms: 60_001 })).toMatchObject({ ok: false });
    expect(parseFault({ mode: 'slow', ms: 1.5 })).toMatchObject({ ok: false });
    expect(parseFault({ mode: 'crash' })).toEqual({ ok: false, error: 'mode must be one of healthy, unhealthy, slow, errors, hang' });
    expect(parseFault('hang')).toMatchObject({ ok: false });
    expect(parseFault(null)).toMatchObject({ ok: false });
    expect(describeFault({ mode: 'slow', ms: 500 })).toBe('slow 500 ms');
  });
});

describe('Faults middleware', () => {
  test('hang holds requests; a new fault lets them go on under it; dropHeld closes them unanswered', async () => {
    const lines: string[] = [];
    const faults = new Faults({ hostname: 'r1', log: (l) => void lines.push(l) });
    const { port, requests } = await serve(faults);
    faults.set({ mode: 'hang' });

    const twoHeld = requests(2);
    const held = [get(port, '/'), get(port, '/health')];
    await twoHeld;
    expect(faults.heldCount).toBe(2);
    faults.set({ mode: 'errors' });
    expect(await held[0]).toEqual({ status: 500, body: '{"error":"fault: errors","hostname":"r1"}' });
    expect(await held[1]).toEqual({ status: 200, body: 'ok' }); // /health is spared by errors

    faults.set({ mode: 'hang' });
    const oneHeld = requests(1);
    const dropped = get(port, '/');
    await oneHeld;
    expect(faults.heldCount).toBe(1);
    faults.dropHeld();
    expect(await dropped).toEqual({ error: 'ECONNRESET' });
    expect(faults.heldCount).toBe(0);
    expect(lines).toEqual(['r1 fault: hang', 'r1 fault: errors', 'r1 fault: hang']);
  });

  test('unhealthy fails only the health paths it was given', async () => {
    const faults = new Faults({ hostname: 'r2', healthPaths: ['/health', '/app/health'], log: () => {} });
    const { port } = await serve(faults);
    faults.set({ mode: 'unhealthy' });
    expect(await get(port, '/app/health?x=1')).toMatchObject({ status: 503 });
    expect(await get(port, '/health')).toEqual({ status: 503, body: '{"status":"failing","error":"fault: unhealthy","hostname":"r2"}' });
    expect(await get(port, '/')).toEqual({ status: 200, body: 'ok' });
  });
});

describe('LAB_FAULT_FILE (the Docker-mode channel) on a real web_dynamic', () => {
  test('a fault written to the file is applied and logged; bad content is reported; no file is healthy', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-fault-file-'));
    const file = path.join(dir, 'fault.json');
    const write = (text: string) => {
      fs.writeFileSync(`${file}.tmp`, text);
      fs.renameSync(`${file}.tmp`, file);
    };
    const child = spawn(process.execPath, [fileURLToPath(new URL('../web_dynamic/server.js', import.meta.url))], {
      stdio: ['ignore', 'pipe', 'pipe'], // no IPC: the file is the only channel
      env: { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', LAB_HOSTNAME: 'web_dynamic-file', LAB_FAULT_FILE: file },
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      const out = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
      const err = readline.createInterface({ input: child.stderr! })[Symbol.asyncIterator]();
      /** The next stdout line that is not an access log line. */
      const nextFaultLine = async () => {
        for (;;) {
          const r = await out.next();
          if (r.done) throw new Error('stdout ended');
          if (!/ (GET|HEAD) /.test(r.value as string)) return r.value as string;
        }
      };
      const listening = (await out.next()).value as string;
      const port = Number(/:(\d+)$/.exec(listening)![1]);
      expect(await get(port, '/health')).toMatchObject({ status: 200 });

      write('{"mode":"errors"}\n');
      expect(await nextFaultLine()).toBe('web_dynamic-file fault: errors');
      expect(await get(port, '/')).toMatchObject({ status: 500 });
      expect(await get(port, '/health')).toMatchObject({ status: 200 });

      write('{"mode":');
      expect((await err.next()).value).toBe(`LAB_FAULT_FILE ${file} is not JSON; fault unchanged`);
      expect(await get(port, '/')).toMatchObject({ status: 500 });

      write('{"mode":"unhealthy"}');
      expect(await nextFaultLine()).toBe('web_dynamic-file fault: unhealthy');
      expect(await get(port, '/health')).toMatchObject({ status: 503 });

      fs.rmSync(file);
      expect(await nextFaultLine()).toBe('web_dynamic-file fault: healthy');
      expect(await get(port, '/health')).toMatchObject({ status: 200 });
      expect(await get(port, '/')).toMatchObject({ status: 200 });

      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
