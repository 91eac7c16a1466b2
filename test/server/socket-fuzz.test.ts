/**
 * Property-based fuzzing (fast-check) of the socket.io side of a real lab (process runtime,
 * embedded proxy, real replicas): clients with the instructor's token, the watch-only token, a
 * wrong token and none send random event names and payloads (unicode, binary, nested JSON, huge),
 * and raw WebSocket clients send random engine.io/socket.io frames. The server takes no command
 * over the socket, so every one must be ignored or refused (a too-large frame closes that client
 * only): the server never crashes, never sends a client without a valid token any lab data,
 * keeps serving REST, sockets and the proxy, has the replicas it had, holds no socket of the
 * fuzzers afterwards, and leaves no process after stop.
 */
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { io, type Socket } from 'socket.io-client';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Topology } from '../../lab/topology.ts';
import { startLab, type RunningLab } from '../../server/compose.ts';
import type { LabStatus, SessionInfo } from '../../server/protocol.ts';
import { isGone } from '../support/processes.ts';

const READONLY = 'socket-fuzz-watch-only-token';
let lab: RunningLab;
let stateDir: string;
let pids: number[] = [];
const serverErrors: unknown[] = [];
const onError = (err: unknown) => serverErrors.push(err);

beforeAll(async () => {
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-socket-fuzz-'));
  lab = await startLab({
    host: '127.0.0.1',
    port: 0,
    proxyPort: 0,
    stateDir,
    readonlyToken: READONLY,
    topology: Topology.parse({ services: { web_dynamic: { replicas: 2 } }, routes: [{ service: 'web_dynamic', pathPrefix: '/' }] }),
  });
  pids = lab.lab.status().services.flatMap((s) => s.instances).map((r) => r.pid!);
}, 120_000);

afterAll(async () => {
  process.off('uncaughtException', onError);
  process.off('unhandledRejection', onError);
  await lab?.stop();
  for (const pid of pids) expect(isGone(pid), `replica pid ${pid}`).toBe(true);
  rmSync(stateDir, { recursive: true, force: true });
});

/** Names socket.io-client refuses to emit (they are its own); the fuzzer skips those. */
const RESERVED = new Set(['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener']);

const eventName = fc.oneof(
  fc.constantFrom('reset', 'navigate', 'scale', 'kill', 'status', 'session', 'history', 'batch', 'command', 'proxy', 'fault', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'then', '../../etc/passwd', '$(id)', ''),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
);

const payload = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.string({ unit: 'grapheme', maxLength: 200 }),
  fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)),
  fc.record({ service: fc.constant('web_dynamic'), replicas: fc.integer({ min: -5, max: 1e9 }) }),
  fc.record({ token: fc.string(), lesson: fc.string() }),
  fc.constant({ __proto__: { polluted: true }, constructor: { prototype: { polluted: true } } }),
  fc.integer({ min: 17_000, max: 200_000 }).map((n) => 'x'.repeat(n)), // over maxHttpBufferSize (16 KiB)
  fc.constantFrom(1e308, -0, Number.MAX_SAFE_INTEGER, null, true),
);

function connect(token: string | undefined): Socket {
  return io(lab.apiUrl, { ...(token === undefined ? {} : { auth: { token } }), transports: ['websocket'], reconnection: false, forceNew: true, timeout: 10_000 });
}

/** Resolves 'connected' or 'refused: <message>'. */
function outcome(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    if (s.connected) return resolve('connected');
    s.once('connect', () => resolve('connected'));
    s.once('connect_error', (err) => resolve(`refused: ${err.message}`));
  });
}

describe('socket.io fuzz: random events never crash the server or do anything', () => {
  for (const [role, token] of [
    ['instructor token', () => lab.token],
    ['watch-only token', () => READONLY],
  ] as const) {
    it(`clients with the ${role}: 400 random events, ignored; a too-large one closes only that client`, async () => {
      let client = connect(token());
      expect(await outcome(client)).toBe('connected');
      let sent = 0;
      let reconnects = 0;
      const before = lab.lab.status();
      await fc.assert(
        fc.asyncProperty(eventName, fc.array(payload, { maxLength: 3 }), fc.boolean(), async (name, args, withAck) => {
          if (!client.connected) {
            client.close();
            client = connect(token());
            expect(await outcome(client)).toBe('connected');
            reconnects++;
          }
          if (RESERVED.has(name)) return;
          if (withAck) client.emit(name, ...args, () => undefined);
          else client.emit(name, ...args);
          sent++;
          // A round trip through the server after each emit: a REST call that must still work.
          const res = await fetch(`${lab.apiUrl}/api/status`, { headers: { authorization: `Bearer ${lab.token}` } });
          if (res.status !== 200) throw new Error(`after emitting ${JSON.stringify(name)}: /api/status ${res.status}`);
          await res.arrayBuffer();
        }),
        { numRuns: 400 },
      );
      client.close();
      expect(sent).toBeGreaterThan(350);
      // The large payloads closed their client (socket.io's maxHttpBufferSize), nothing else did.
      expect(reconnects).toBeGreaterThan(0);
      const after = lab.lab.status();
      expect(after.services.map((s) => s.instances.map((r) => r.hostname))).toEqual(before.services.map((s) => s.instances.map((r) => r.hostname)));
      expect(after.topology).toEqual(before.topology);
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    }, 300_000);
  }

  it('clients with a wrong token or none are refused, get no lab data, and their events go nowhere', async () => {
    const wrongToken = fc.oneof(
      fc.constant(undefined),
      fc.string({ unit: 'grapheme', maxLength: 60 }).filter((t) => t !== lab.token && t !== READONLY),
      fc.constant(`${lab.token}x`),
      fc.constant(lab.token.slice(1)),
      fc.constant(READONLY.toUpperCase()),
    );
    await fc.assert(
      fc.asyncProperty(wrongToken, eventName, fc.array(payload, { maxLength: 2 }), async (token, name, args) => {
        const s = connect(token);
        const got: string[] = [];
        s.onAny((event) => got.push(String(event)));
        if (!RESERVED.has(name)) s.emit(name, ...args);
        const result = await outcome(s);
        s.close();
        if (!result.startsWith('refused')) throw new Error(`token ${JSON.stringify(token)} was let in`);
        if (!/token/.test(result)) throw new Error(`refusal without a sentence about the token: ${result}`);
        if (got.length) throw new Error(`a refused client received ${got.join(', ')}`);
      }),
      { numRuns: 120 },
    );
  }, 300_000);
});

/** A raw engine.io WebSocket (no socket.io client): the fuzzer writes the frames itself. */
async function rawSocket(): Promise<{ ws: WebSocket; received: Array<string | Buffer> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${lab.port}/socket.io/?EIO=4&transport=websocket`, { headers: { origin: `http://127.0.0.1:${lab.port}` } });
  const received: Array<string | Buffer> = [];
  ws.on('message', (data, isBinary) => received.push(isBinary ? (data as Buffer) : data.toString()));
  ws.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return { ws, received };
}

describe('raw engine.io / socket.io frames', () => {
  const frame = fc.oneof(
    // socket.io packets on engine.io "message" (4): CONNECT (0), EVENT (2), ACK (3), BINARY_EVENT (5), with junk.
    fc.tuple(fc.constantFrom('40', '41', '42', '43', '44', '45', '46', '4', '2', '3', '5', '6', '1', '0', '49', '4-1', '42/', '40/admin,', '42/nsp,'), fc.oneof(fc.json(), fc.string({ unit: 'grapheme', maxLength: 100 }))).map(([p, j]) => p + j),
    fc.constantFrom('42["reset"]', '42["scale",{"service":"web_dynamic","replicas":0}]', '40{"token":"nope"}', '40{"token":null}', '40[]', '451-["x",{"_placeholder":true,"num":0}]', '42["__proto__",{"a":1}]', '4' + '['.repeat(5000)),
    fc.string({ unit: 'binary', maxLength: 300 }),
    fc.uint8Array({ maxLength: 4096 }).map((a) => Buffer.from(a)),
    fc.integer({ min: 17_000, max: 100_000 }).map((n) => `42["x","${'y'.repeat(n)}"]`),
  );

  it('600 random frames on raw WebSockets: no lab data without a token, the server stays up', async () => {
    let conn = await rawSocket();
    let opened = 1;
    const allReceived: Array<string | Buffer> = [];
    await fc.assert(
      fc.asyncProperty(fc.array(frame, { minLength: 1, maxLength: 4 }), async (frames) => {
        if (conn.ws.readyState !== WebSocket.OPEN) {
          allReceived.push(...conn.received);
          conn.ws.terminate();
          conn = await rawSocket();
          opened++;
        }
        for (const f of frames) {
          if (conn.ws.readyState !== WebSocket.OPEN) break;
          conn.ws.send(f);
        }
        // A round trip: the server still answers on its HTTP side.
        const res = await fetch(`${lab.apiUrl}/api/status`, { headers: { authorization: `Bearer ${lab.token}` } });
        if (res.status !== 200) throw new Error(`/api/status ${res.status} after ${JSON.stringify(frames).slice(0, 200)}`);
        await res.arrayBuffer();
      }),
      { numRuns: 600 },
    );
    allReceived.push(...conn.received);
    conn.ws.terminate();
    expect(opened).toBeGreaterThan(1);
    // Without the token no socket.io CONNECT succeeds, so no lab data (status, history, batches) went out.
    const text = allReceived.map((m) => m.toString()).join('\n');
    expect(text).not.toMatch(/"sessionId"|"services"|42\["(status|history|batch|session)"/);
    expect(text).not.toContain(lab.token);
  }, 300_000);
});

describe('afterwards', () => {
  it('the lab still serves: a new page connects and gets status and history, REST and the proxy answer, no fuzz socket is left', async () => {
    const s = connect(lab.token);
    const got = { status: null as LabStatus | null, history: false };
    s.on('status', (st: LabStatus) => (got.status = st));
    s.on('history', () => (got.history = true));
    expect(await outcome(s)).toBe('connected');
    await expect.poll(() => got.status !== null && got.history, { timeout: 10_000 }).toBe(true);
    expect(got.status!.services.flatMap((x) => x.instances).map((r) => r.pid).sort()).toEqual([...pids].sort());
    // Only this page is connected: every fuzz client's socket was let go.
    await expect
      .poll(async () => {
        const res = await fetch(`${lab.apiUrl}/api/session`, { headers: { authorization: `Bearer ${lab.token}` } });
        return ((await res.json()) as SessionInfo).pages;
      }, { timeout: 10_000 })
      .toEqual({ control: 1, watch: 0 });
    s.close();
    const proxied = await fetch(`http://127.0.0.1:${lab.proxyPort}/`);
    expect(proxied.status).toBe(200);
    expect(serverErrors).toEqual([]);
  });
});
