/**
 * Lesson 05's WebSocket claims, through a whole Lab on each proxy engine present (embedded always;
 * haproxy when installed), in front of 3 real web_dynamic replicas (ProcessRuntime):
 * one WebSocket stays on one replica for its whole life, while plain requests on one keep-alive
 * connection rotate; with `algorithm=hash` on X-Session-ID two WebSockets with the same header land
 * on the same replica. The upgrade is a request:completed with status 101 naming the replica. An
 * idle WebSocket outlives the entrypoint idle timeout (HAProxy: `timeout tunnel`). A settings
 * change leaves it alone on the embedded proxy; HAProxy reloads, and its old process cuts the
 * WebSocket at `hard-stop-after` (15 s).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { EventBus, type RequestCompleted } from '../../lab/events.ts';
import { Lab } from '../../lab/lab.ts';
import { ProbeClient } from '../../lab/probe-client.ts';
import { ProcessRuntime } from '../../lab/runtime/process-runtime.ts';
import { ENGINES, haproxy, topology } from './engines.ts';

if (!haproxy.ok) console.warn(`websocket contract: haproxy skipped: ${haproxy.reason}`);

type Msg = { hostname: string; instanceId?: string; echo?: string };

/** Opens a WebSocket, collects its messages; `until(n)` resolves once n have arrived. */
async function openWs(url: string, headers: Record<string, string> = {}) {
  const ws = new WebSocket(url, { headers });
  const messages: Msg[] = [];
  const waiters: Array<() => void> = [];
  ws.on('message', (data) => {
    messages.push(JSON.parse(data.toString()) as Msg);
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const until = (n: number) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${messages.length} of ${n} messages`)), 10_000);
      const check = () => {
        if (messages.length >= n) {
          clearTimeout(timer);
          resolve();
        } else waiters.push(check);
      };
      check();
    });
  const close = () =>
    new Promise<void>((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) return resolve();
      ws.once('close', () => resolve());
      ws.close();
    });
  return { ws, messages, until, close };
}

for (const engine of ENGINES) {
  describe.skipIf(!engine.ok)(`WebSockets through ${engine.name}`, () => {
    let lab: Lab;
    let bus: EventBus;
    let dir: string;
    let port: number;
    const completed: RequestCompleted[] = [];

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), `lab-ws-${engine.name}-`));
      bus = new EventBus();
      bus.on('request:completed', (e) => completed.push(e));
      const sessionId = `ws${engine.name[0]}${process.pid}`;
      lab = new Lab({
        runtime: new ProcessRuntime({ sessionId, stateDir: path.join(dir, 'state') }),
        proxy: engine.create(bus, dir),
        bus,
        sessionId,
        proxyListen: { host: '127.0.0.1', port: 0 },
        topology: topology(),
      });
      await lab.start();
      port = lab.status().proxy.port!;
    }, 60_000);

    afterAll(async () => {
      await lab?.stop();
      rmSync(dir, { recursive: true, force: true });
    }, 60_000);

    it('one WebSocket: all 6 echoes name one replica, while 6 requests on one keep-alive connection reach 3; the upgrade is a 101 request event', async () => {
      await lab.reset(topology());
      const sock = await openWs(`ws://127.0.0.1:${port}/api/ws/echo`);
      const probe = new ProbeClient({ baseUrl: `http://127.0.0.1:${port}`, connection: 'reuse' });
      const plain: string[] = [];
      try {
        await sock.until(1);
        for (let i = 0; i < 6; i++) {
          sock.ws.send(`m${i}`);
          const res = await probe.get('/api/', { timeoutMs: 10_000 });
          expect(res.status).toBe(200);
          plain.push(res.servedBy ?? '?');
        }
        await sock.until(7);
      } finally {
        probe.close();
        await sock.close();
      }
      const hello = sock.messages[0]!;
      const echoes = sock.messages.slice(1);
      expect(echoes.map((m) => m.echo)).toEqual(['m0', 'm1', 'm2', 'm3', 'm4', 'm5']);
      expect(new Set(echoes.map((m) => m.hostname))).toEqual(new Set([hello.hostname]));
      expect(new Set(plain).size).toBe(3);
      // The upgrade's request event: status 101 on the echo's replica (events may trail the socket).
      const deadline = Date.now() + 5000;
      let upgrade: RequestCompleted | undefined;
      while (!(upgrade = completed.find((e) => e.status === 101)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(upgrade).toMatchObject({ status: 101, replica: hello.hostname, method: 'GET' });
      expect(upgrade!.path).toMatch(/^\/api\/ws\/echo/);
    }, 60_000);

    it('algorithm=hash on X-Session-ID: two WebSockets with the same header land on the same replica', async () => {
      await lab.reset(topology({ algorithm: 'hash', hashHeader: 'X-Session-ID' }));
      const seen: string[] = [];
      for (const session of ['abc123', 'abc123', 'abc123']) {
        const sock = await openWs(`ws://127.0.0.1:${port}/api/ws/echo`, { 'X-Session-ID': session });
        try {
          await sock.until(1);
          seen.push(sock.messages[0]!.hostname);
        } finally {
          await sock.close();
        }
      }
      expect(new Set(seen).size).toBe(1);
    }, 60_000);

    it('with clientIdle 1 s an idle WebSocket stays open 2.5 s and still echoes (the idle timeout is for keep-alive, not tunnels)', async () => {
      await lab.reset(topology({ clientIdle: 1000 }));
      const sock = await openWs(`ws://127.0.0.1:${port}/api/ws/echo`);
      try {
        await sock.until(1);
        await new Promise((r) => setTimeout(r, 2500));
        expect(sock.ws.readyState).toBe(WebSocket.OPEN);
        sock.ws.send('still here');
        await sock.until(2);
        expect(sock.messages[1]).toEqual({ hostname: sock.messages[0]!.hostname, echo: 'still here' });
      } finally {
        await sock.close();
      }
    }, 60_000);

    it(engine.name === 'embedded'
      ? 'a settings change (apply) leaves an open WebSocket alone'
      : 'a settings change reloads HAProxy: the old process cuts an open WebSocket at hard-stop-after (15 s)', async () => {
      await lab.reset(topology());
      const sock = await openWs(`ws://127.0.0.1:${port}/api/ws/echo`);
      const t0 = Date.now();
      const closed = new Promise<number>((resolve) => sock.ws.once('close', () => resolve(Date.now() - t0)));
      try {
        await sock.until(1);
        await lab.configure(['timeouts.clientIdle=5000']);
        if (engine.name === 'embedded') {
          await new Promise((r) => setTimeout(r, 1500));
          sock.ws.send('after apply');
          await sock.until(2);
          expect(sock.messages[1]).toEqual({ hostname: sock.messages[0]!.hostname, echo: 'after apply' });
        } else {
          const ms = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(-1), 20_000))]);
          expect(ms).toBeGreaterThan(13_000);
          expect(ms).toBeLessThan(18_000);
        }
      } finally {
        await sock.close();
      }
    }, 60_000);
  });
}
