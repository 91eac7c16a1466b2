/**
 * The embedded proxy's WebSocket tunnel, against web_dynamic's real echo (createApp +
 * attachWebSocketEcho on plain servers): routing and StripPrefix as for requests, 404 / 503 / 502
 * before the upgrade, the sticky cookie on the 101, a request:completed of status 101, connection
 * events for both hops of the tunnel, and stop() closing an open WebSocket.
 */
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { EventBus, type ConnectionClosed, type ConnectionOpened, type RequestCompleted } from '../../events.ts';
import { Topology, type ServiceName } from '../../topology.ts';
import { buildProxyConfig, type PoolMember } from '../config.ts';
import { EmbeddedProxy } from './embedded-proxy.ts';
import { attachWebSocketEcho, createApp } from '../../../sandbox-images/web_dynamic/server.js';

const servers: http.Server[] = [];
const proxies: EmbeddedProxy[] = [];

afterEach(async () => {
  for (const p of proxies.splice(0)) await p.stop();
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

async function echoReplica(hostname: string): Promise<PoolMember> {
  const server = http.createServer(createApp({ hostname, log: false }));
  attachWebSocketEcho(server, { hostname, instanceId: `id-${hostname}` });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  // An upgraded socket is no longer the server's: closeAllConnections() misses it.
  server.on('upgrade', (_req, socket: net.Socket) => server.once('close', () => socket.destroy()));
  return { hostname, host: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
}

async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

async function start(members: PoolMember[], proxy: Record<string, unknown> = {}) {
  const topo = Topology.parse({
    services: { web_dynamic: { replicas: 3 } },
    routes: [{ service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true }],
    proxy,
  });
  const bus = new EventBus();
  const requests: RequestCompleted[] = [];
  const opened: ConnectionOpened[] = [];
  const closed: ConnectionClosed[] = [];
  bus.on('request:completed', (e) => requests.push(e));
  bus.on('connection:opened', (e) => opened.push(e));
  bus.on('connection:closed', (e) => closed.push(e));
  const p = new EmbeddedProxy({ bus });
  proxies.push(p);
  const port = await p.start(buildProxyConfig(topo, new Map<ServiceName, PoolMember[]>([['web_dynamic', members]]), { name: 'web', host: '127.0.0.1', port: 0 }));
  return { proxy: p, port, requests, opened, closed };
}

/** Opens a WebSocket; resolves with its first message (the replica's hello) or the refusal's status. */
function connect(url: string, headers: Record<string, string> = {}) {
  const ws = new WebSocket(url, { headers });
  let setCookie: string[] | undefined;
  ws.on('upgrade', (res) => (setCookie = res.headers['set-cookie']));
  return new Promise<{ ws: WebSocket; hello?: { hostname: string }; status?: number; setCookie?: string[] }>((resolve, reject) => {
    ws.once('message', (data) => resolve({ ws, hello: JSON.parse(data.toString()) as { hostname: string }, setCookie }));
    ws.once('unexpected-response', (_req, res) => {
      resolve({ ws, status: res.statusCode });
      res.resume();
    });
    ws.once('error', reject);
  });
}

const until = async (cond: () => boolean, ms = 3000) => {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('embedded proxy: WebSockets', () => {
  it('tunnels /api/ws/echo (prefix stripped) to one replica; the upgrade is a request:completed 101; both hops open', async () => {
    const { port, requests, opened } = await start([await echoReplica('web_dynamic-1'), await echoReplica('web_dynamic-2')]);
    const c = await connect(`ws://127.0.0.1:${port}/api/ws/echo`);
    expect(c.hello?.hostname).toBe('web_dynamic-1');
    const echoes: string[] = [];
    c.ws.on('message', (d) => echoes.push((JSON.parse(d.toString()) as { hostname: string }).hostname));
    for (let i = 0; i < 4; i++) c.ws.send(`m${i}`);
    await until(() => echoes.length === 4);
    expect(new Set(echoes)).toEqual(new Set(['web_dynamic-1']));
    await until(() => requests.length === 1);
    expect(requests[0]).toMatchObject({ status: 101, replica: 'web_dynamic-1', path: '/api/ws/echo', method: 'GET', service: 'web_dynamic' });
    expect(requests[0]!.upstreamConnId).toMatch(/^u\d+$/);
    expect(opened.map((e) => e.hop).sort()).toEqual(['client-proxy', 'proxy-backend']);
    c.ws.close();
  });

  it('404 for no route, 503 with no server, 502 when the server is unreachable: answered before any upgrade', async () => {
    const a = await start([]);
    expect((await connect(`ws://127.0.0.1:${a.port}/nope`)).status).toBe(404);
    expect((await connect(`ws://127.0.0.1:${a.port}/api/ws/echo`)).status).toBe(503);
    const b = await start([{ hostname: 'web_dynamic-1', host: '127.0.0.1', port: await deadPort() }]);
    expect((await connect(`ws://127.0.0.1:${b.port}/api/ws/echo`)).status).toBe(502);
    await until(() => a.requests.length === 2 && b.requests.length === 1);
    expect(a.requests.map((r) => r.status)).toEqual([404, 503]);
    expect(b.requests[0]).toMatchObject({ status: 502, error: 'ECONNREFUSED' });
  });

  it('sticky: the 101 carries the sticky cookie, and WebSockets sent with it stay on its replica', async () => {
    const { port } = await start([await echoReplica('web_dynamic-1'), await echoReplica('web_dynamic-2'), await echoReplica('web_dynamic-3')], { sticky: true });
    const first = await connect(`ws://127.0.0.1:${port}/api/ws/echo`);
    expect(first.setCookie?.[0]).toMatch(/^_[0-9a-f]+=[0-9a-f]+; Path=\//);
    const cookie = first.setCookie![0]!.split(';')[0]!;
    first.ws.close();
    for (let i = 0; i < 3; i++) {
      const again = await connect(`ws://127.0.0.1:${port}/api/ws/echo`, { Cookie: cookie });
      expect(again.hello?.hostname).toBe(first.hello?.hostname);
      again.ws.close();
    }
    // Without the cookie: the rotation goes on.
    const other = await connect(`ws://127.0.0.1:${port}/api/ws/echo`);
    expect(other.hello?.hostname).not.toBe(first.hello?.hostname);
    other.ws.close();
  });

  it('stop() closes an open WebSocket; both hops report closed by proxy (proxy stopped)', async () => {
    const h = await start([await echoReplica('web_dynamic-1')]);
    const c = await connect(`ws://127.0.0.1:${h.port}/api/ws/echo`);
    const gone = new Promise<void>((resolve) => c.ws.once('close', () => resolve()));
    await h.proxy.stop();
    await gone;
    await until(() => h.closed.length === 2);
    expect(h.closed.map((e) => [e.hop, e.closedBy, e.reason]).sort()).toEqual([
      ['client-proxy', 'proxy', 'proxy stopped'],
      ['proxy-backend', 'proxy', 'proxy stopped'],
    ]);
  });
});
