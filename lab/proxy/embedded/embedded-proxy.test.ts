import http from 'node:http';
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventBus } from '../../events.ts';
import { ProbeClient } from '../../probe-client.ts';
import type { ProxyConfig } from '../../seams.ts';
import { Topology, type ServiceName } from '../../topology.ts';
import { buildProxyConfig, type PoolMember } from '../config.ts';
import { collect, deadPort } from '../../../test/support/events.ts';
import { EmbeddedProxy, type EmbeddedProxyOptions } from './embedded-proxy.ts';

// ------------------------------------------------------------------ helpers

interface Backend {
  name: string;
  port: number;
  server: http.Server;
  /** Request targets as the backend received them. */
  paths: string[];
  headers: http.IncomingHttpHeaders[];
  /** TCP connections the backend accepted. */
  connections: number;
  member: PoolMember;
}

const backends: Backend[] = [];
const clients: ProbeClient[] = [];
const proxies: EmbeddedProxy[] = [];
const blockers: net.Server[] = [];

async function startBackend(name: string, opts: { keepAliveTimeoutMs?: number } = {}): Promise<Backend> {
  const b: Partial<Backend> & { paths: string[]; headers: http.IncomingHttpHeaders[]; connections: number } = {
    name,
    paths: [],
    headers: [],
    connections: 0,
  };
  const server = http.createServer((req, res) => {
    b.paths.push(req.url ?? '');
    b.headers.push(req.headers);
    res.setHeader('X-Served-By', name);
    res.setHeader('Content-Type', 'text/plain');
    res.end(name);
  });
  if (opts.keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = opts.keepAliveTimeoutMs;
  server.on('connection', () => b.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  Object.assign(b, { server, port, member: { hostname: name, host: '127.0.0.1', port } });
  backends.push(b as Backend);
  return b as Backend;
}

async function closeServer(server: http.Server | net.Server): Promise<void> {
  if (server instanceof http.Server) server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

const entrypoint = { name: 'web', host: '127.0.0.1', port: 0 };

/** web_dynamic behind `/api/` (stripped) and behind Host demo.localhost; web_static behind `/`. */
const topology = Topology.parse({
  services: { web_static: { replicas: 1 }, web_dynamic: { replicas: 3 } },
  routes: [
    { service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true },
    { service: 'web_static', pathPrefix: '/' },
    { service: 'web_dynamic', host: 'demo.localhost', pathPrefix: '/' },
  ],
});

function configFor(pools: Array<[ServiceName, Backend[] | PoolMember[]]>, topo = topology): ProxyConfig {
  const map = new Map<ServiceName, PoolMember[]>(
    pools.map(([svc, list]) => [svc, list.map((x) => ('member' in x ? x.member : x))]),
  );
  return buildProxyConfig(topo, map, entrypoint);
}

interface Harness {
  bus: EventBus;
  proxy: EmbeddedProxy;
  port: number;
  baseUrl: string;
  requests: ReturnType<typeof collect<'request:completed'>>;
  opened: ReturnType<typeof collect<'connection:opened'>>;
  closed: ReturnType<typeof collect<'connection:closed'>>;
  logs: ReturnType<typeof collect<'log:line'>>;
  client(connection: 'reuse' | 'new'): ProbeClient;
}

async function startProxy(config: ProxyConfig, opts: Omit<EmbeddedProxyOptions, 'bus'> = {}): Promise<Harness> {
  const bus = new EventBus();
  const h = {
    bus,
    requests: collect(bus, 'request:completed'),
    opened: collect(bus, 'connection:opened'),
    closed: collect(bus, 'connection:closed'),
    logs: collect(bus, 'log:line'),
  };
  const proxy = new EmbeddedProxy({ bus, ...opts });
  proxies.push(proxy);
  const port = await proxy.start(config);
  const baseUrl = `http://127.0.0.1:${port}`;
  return {
    ...h,
    proxy,
    port,
    baseUrl,
    client(connection) {
      const c = new ProbeClient({ baseUrl, connection });
      clients.push(c);
      return c;
    },
  };
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(proxies.splice(0).map((p) => p.stop()));
  await Promise.all(backends.splice(0).map((b) => closeServer(b.server)));
  await Promise.all(blockers.splice(0).map((s) => closeServer(s)));
});

// ------------------------------------------------------------------ tests

describe('EmbeddedProxy: round-robin per request over pooled connections', () => {
  let dyn: Backend[];
  let stat: Backend;
  let h: Harness;

  beforeEach(async () => {
    dyn = [await startBackend('dyn-1'), await startBackend('dyn-2'), await startBackend('dyn-3')];
    stat = await startBackend('static-1');
    h = await startProxy(configFor([['web_dynamic', dyn], ['web_static', [stat]]]));
  });

  it('balances each request of ONE keep-alive client connection separately, over one pooled connection per server', async () => {
    const c = h.client('reuse');
    const results = [];
    for (let i = 0; i < 9; i++) results.push(await c.get(`/api/hello?i=${i}`));

    // One client connection...
    expect(new Set(results.map((r) => r.localPort)).size).toBe(1);
    expect(results.slice(1).every((r) => r.reused)).toBe(true);
    // ...yet every request went to the next server: 3 servers, 3 times each, in a repeating order.
    const order = results.map((r) => r.servedBy);
    expect(new Set(order.slice(0, 3))).toEqual(new Set(['dyn-1', 'dyn-2', 'dyn-3']));
    expect(order.slice(3, 6)).toEqual(order.slice(0, 3));
    expect(order.slice(6, 9)).toEqual(order.slice(0, 3));
    expect(results.map((r) => r.body)).toEqual(order);
    for (const b of dyn) {
      expect(b.paths).toHaveLength(3);
      expect(b.connections).toBe(1); // the proxy reused its pooled connection to each server
    }
    // StripPrefix: the backend saw the path without /api.
    expect(dyn.flatMap((b) => b.paths).sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => `/hello?i=${i}`).sort());

    await h.requests.until((e) => e.length >= 9);
    const ev = h.requests.items;
    expect(ev.map((e) => e.id)).toEqual([...ev.map((e) => e.id)].sort((a, b) => a - b));
    expect(new Set(ev.map((e) => e.clientConnId)).size).toBe(1);
    expect(ev[0].clientConnId).toMatch(/^c\d+$/);
    const upstreamIds = new Set(ev.map((e) => e.upstreamConnId));
    expect(upstreamIds.size).toBe(3);
    for (const id of upstreamIds) expect(id).toMatch(/^u\d+$/);
    for (const e of ev) {
      expect(e).toMatchObject({ method: 'GET', router: 'web_dynamic-1', service: 'web_dynamic', status: 200 });
      expect(e.hostname).toBe(e.replica);
      expect(e.path).toMatch(/^\/api\/hello\?i=\d$/);
      expect(e.ms).toBeGreaterThanOrEqual(0);
      expect(e.error).toBeUndefined();
    }
    expect(ev.map((e) => e.replica)).toEqual(order);
    // Each upstream connection belongs to one replica, as the connection:opened events say.
    const upstreamOpened = h.opened.items.filter((o) => o.hop === 'proxy-backend');
    expect(upstreamOpened.map((o) => o.id).sort()).toEqual([...upstreamIds].sort());
    for (const e of ev) expect(upstreamOpened.find((o) => o.id === e.upstreamConnId)?.replica).toBe(e.replica);
    const clientOpened = h.opened.items.filter((o) => o.hop === 'client-proxy');
    expect(clientOpened).toHaveLength(1);
    expect(clientOpened[0].id).toBe(ev[0].clientConnId);
    expect(clientOpened[0].local).toBe(`127.0.0.1:${results[0].localPort}`);
  });

  it('forwards /api/ as / and sets the forwarding headers', async () => {
    const c = h.client('reuse');
    const r = await c.get('/api/', { headers: { 'X-Forwarded-For': '6.6.6.6', 'User-Agent': 'lab-test' } });
    expect(r.status).toBe(200);
    const b = dyn.find((x) => x.name === r.servedBy);
    expect(b?.paths).toEqual(['/']);
    const headers = b?.headers[0] ?? {};
    expect(headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(headers['x-forwarded-proto']).toBe('http');
    expect(headers['x-forwarded-host']).toBe(`127.0.0.1:${h.port}`);
    expect(headers['x-forwarded-prefix']).toBe('/api/');
    expect(headers['x-real-ip']).toBe('127.0.0.1');
    expect(headers.host).toBe(`127.0.0.1:${h.port}`);
    expect(headers.connection).toBe('keep-alive');
  });

  it('routes by PathPrefix and by Host rule, longest rule first', async () => {
    const c = h.client('reuse');
    const root = await c.get('/index.html');
    expect(root.servedBy).toBe('static-1');
    expect(stat.paths).toEqual(['/index.html']);

    const byHost = await c.get('/index.html', { headers: { Host: 'demo.localhost' } });
    expect(byHost.servedBy).toMatch(/^dyn-/);
    // The Host rule (longer) beats PathPrefix(`/api/`), and does not strip.
    const apiByHost = await c.get('/api/x', { headers: { Host: `DEMO.localhost:${h.port}` } });
    expect(apiByHost.servedBy).toMatch(/^dyn-/);
    expect(dyn.flatMap((b) => b.paths).sort()).toEqual(['/api/x', '/index.html']);

    await h.requests.until((e) => e.length >= 3);
    expect(h.requests.items.map((e) => e.router)).toEqual(['web_static', 'web_dynamic-2', 'web_dynamic-2']);
  });

  it("writes one access-log line per request in Traefik's CLF format", async () => {
    const c = h.client('reuse');
    await c.get('/api/a', { headers: { 'User-Agent': 'lab-test/1.0', Referer: 'http://localhost/lesson' } });
    await c.get('/b');
    await h.logs.until((l) => l.length >= 2);
    const clf =
      /^(\S+) - (\S+) \[(\d{2})\/([A-Z][a-z]{2})\/(\d{4}):(\d{2}):(\d{2}):(\d{2}) \+0000\] "(\S+) (\S+) HTTP\/(1\.[01])" (\d{3}) (\d+) "([^"]*)" "([^"]*)" (\d+) "([^"]*)" "([^"]*)" (\d+)ms$/;
    const [a, b] = h.logs.items;
    expect(a).toMatchObject({ source: 'proxy', stream: 'access' });
    const m = clf.exec(a.text);
    expect(m, a.text).not.toBeNull();
    const [, ip, user, , , , , , , method, path, , status, bytes, referer, ua, count, router, url] = m ?? [];
    expect({ ip, user, method, path, status, referer, ua, router }).toEqual({
      ip: '127.0.0.1',
      user: '-',
      method: 'GET',
      path: '/api/a',
      status: '200',
      referer: 'http://localhost/lesson',
      ua: 'lab-test/1.0',
      router: 'web_dynamic-1',
    });
    expect(Number(bytes)).toBe(5); // "dyn-N"
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const m2 = clf.exec(b.text);
    expect(m2, b.text).not.toBeNull();
    expect(Number(m2?.[16])).toBe(Number(count) + 1);
    expect(m2?.[17]).toBe('web_static');
    expect(m2?.[18]).toBe(`http://127.0.0.1:${stat.port}`);
    expect(m2?.[15]).toBe('-'); // no user agent sent by node:http
  });

  it('apply() adds a server to the rotation, and removing one closes its pooled connection', async () => {
    const c = h.client('reuse');
    for (let i = 0; i < 3; i++) await c.get('/api/');
    const dyn4 = await startBackend('dyn-4');

    await h.proxy.apply(configFor([['web_dynamic', [...dyn, dyn4]], ['web_static', [stat]]]));
    const four = [];
    for (let i = 0; i < 8; i++) four.push((await c.get('/api/')).servedBy);
    expect(new Set(four.slice(0, 4))).toEqual(new Set(['dyn-1', 'dyn-2', 'dyn-3', 'dyn-4']));
    expect(four.slice(4)).toEqual(four.slice(0, 4));

    await h.requests.until((e) => e.length >= 11);
    const removed = dyn[1];
    const removedConn = h.requests.items.find((e) => e.replica === removed.name)?.upstreamConnId;
    expect(removedConn).toMatch(/^u\d+$/);
    const closing = h.closed.until((e) => e.some((x) => x.id === removedConn));

    await h.proxy.apply(configFor([['web_dynamic', [dyn[0], dyn[2], dyn4]], ['web_static', [stat]]]));
    await closing;
    expect(h.closed.items.find((x) => x.id === removedConn)).toMatchObject({
      hop: 'proxy-backend',
      replica: removed.name,
      closedBy: 'proxy',
      reason: 'pool removed',
    });
    const three = [];
    for (let i = 0; i < 6; i++) three.push((await c.get('/api/')).servedBy);
    expect(three).not.toContain(removed.name);
    expect(new Set(three.slice(0, 3))).toEqual(new Set(['dyn-1', 'dyn-3', 'dyn-4']));
    expect(three.slice(3)).toEqual(three.slice(0, 3));
    // The other pooled connections survived the applies.
    for (const b of [dyn[0], dyn[2], dyn4]) expect(b.connections).toBe(1);
  });

  it('stop() closes client and backend connections and says why', async () => {
    const c = h.client('reuse');
    await c.get('/api/');
    await c.get('/');
    await h.proxy.stop();
    const closed = h.closed.items;
    expect(closed.map((x) => x.hop).sort()).toEqual(['client-proxy', 'proxy-backend', 'proxy-backend']);
    for (const x of closed) expect(x).toMatchObject({ closedBy: 'proxy', reason: 'proxy stopped' });
    expect(h.proxy.port).toBeNull();
  });
});

describe("EmbeddedProxy: Traefik's own answers", () => {
  it('404 page not found when no router matches', async () => {
    const topo = Topology.parse({ services: {}, routes: [{ service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true }] });
    const h = await startProxy(configFor([], topo));
    const r = await h.client('new').get('/nothing-here');
    expect(r.status).toBe(404);
    expect(r.body).toBe('404 page not found\n');
    await h.requests.until((e) => e.length >= 1);
    expect(h.requests.items[0]).toMatchObject({ status: 404, router: null, service: null, replica: null, hostname: null, upstreamConnId: null });
    await h.logs.until((l) => l.length >= 1);
    expect(h.logs.items[0].text).toMatch(/"GET \/nothing-here HTTP\/1\.1" 404 19 "-" "-" 1 "-" "-" \d+ms$/);
  });

  it('503 no available server when the service has no server', async () => {
    const h = await startProxy(configFor([]));
    const r = await h.client('reuse').get('/');
    expect(r.status).toBe(503);
    expect(r.body).toBe('no available server\n');
    await h.requests.until((e) => e.length >= 1);
    expect(h.requests.items[0]).toMatchObject({ status: 503, router: 'web_static', service: 'web_static', replica: null, upstreamConnId: null });
  });

  it('502 Bad Gateway with the error when the server refuses connections', async () => {
    const port = await deadPort();
    const h = await startProxy(configFor([['web_static', [{ hostname: 'static-dead', host: '127.0.0.1', port }]]]));
    const r = await h.client('reuse').get('/x');
    expect(r.status).toBe(502);
    expect(r.body).toBe('Bad Gateway');
    await h.requests.until((e) => e.length >= 1);
    expect(h.requests.items[0]).toMatchObject({
      status: 502,
      error: 'ECONNREFUSED',
      replica: 'static-dead',
      hostname: null,
      upstreamConnId: null,
    });
    expect(h.opened.items.filter((o) => o.hop === 'proxy-backend')).toEqual([]);
  });

  it('one dead server out of two: every other request fails, the others succeed', async () => {
    const alive = await startBackend('static-ok');
    const port = await deadPort();
    const h = await startProxy(
      configFor([['web_static', [alive.member, { hostname: 'static-dead', host: '127.0.0.1', port }]]]),
    );
    const c = h.client('reuse');
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await c.get('/')).status);
    expect(statuses).toEqual([200, 502, 200, 502]);
  });
});

describe('EmbeddedProxy: listening', () => {
  it('rejects EADDRINUSE with a sentence naming the port and LAB_PROXY_PORT', async () => {
    const blocker = net.createServer();
    blockers.push(blocker);
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    const proxy = new EmbeddedProxy({ bus: new EventBus() });
    proxies.push(proxy);
    const config = configFor([]);
    await expect(proxy.start({ ...config, entrypoint: { ...entrypoint, port } })).rejects.toThrow(
      new RegExp(`port ${port} is already in use.*LAB_PROXY_PORT`),
    );
    // Still usable afterwards on a free port.
    expect(await proxy.start(config)).toBeGreaterThan(0);
  });

  it('renders a Traefik file-provider dynamic configuration', async () => {
    const b = await startBackend('dyn-1');
    const config = configFor([['web_dynamic', [b]]]);
    const text = new EmbeddedProxy({ bus: new EventBus() }).render(config);
    expect(text.startsWith('# ')).toBe(true);
    const doc = JSON.parse(text.split('\n').filter((l) => !l.startsWith('#')).join('\n'));
    expect(doc.http.routers['web_dynamic-1']).toEqual({
      entryPoints: ['web'],
      rule: 'PathPrefix(`/api/`)',
      priority: 'PathPrefix(`/api/`)'.length,
      service: 'web_dynamic',
      middlewares: ['web_dynamic-1-stripprefix'],
    });
    expect(doc.http.routers['web_dynamic-2'].rule).toBe('Host(`demo.localhost`) && PathPrefix(`/`)');
    expect(doc.http.middlewares['web_dynamic-1-stripprefix']).toEqual({ stripPrefix: { prefixes: ['/api/'] } });
    expect(doc.http.services.web_dynamic.loadBalancer.servers).toEqual([{ url: `http://127.0.0.1:${b.port}`, weight: 1 }]);
    expect(doc.http.services.web_static.loadBalancer.servers).toEqual([]);
  });
});

describe('EmbeddedProxy: who closes idle connections', () => {
  it('the proxy closes an idle client connection after its idle timeout', async () => {
    const b = await startBackend('static-1');
    const cfg = configFor([['web_static', [b]]]);
    // The configuration's entrypoint idle timeout wins over the constructor's default.
    const h = await startProxy({ ...cfg, entrypoint: { ...cfg.entrypoint, idleTimeoutMs: 150 } }, { entrypointIdleTimeoutMs: 90_000 });
    const r = await h.client('reuse').get('/');
    await h.requests.until((e) => e.length >= 1);
    const id = h.requests.items[0].clientConnId;
    await h.closed.until((e) => e.some((x) => x.id === id));
    expect(h.closed.items.find((x) => x.id === id)).toMatchObject({
      hop: 'client-proxy',
      closedBy: 'proxy',
      reason: 'idle timeout',
      local: `127.0.0.1:${r.localPort}`,
    });
  });

  it('a backend closes an idle pooled connection after its keep-alive timeout, before the proxy does', async () => {
    const b = await startBackend('static-1', { keepAliveTimeoutMs: 150 });
    const h = await startProxy(configFor([['web_static', [b]]]));
    await h.client('reuse').get('/');
    await h.requests.until((e) => e.length >= 1);
    const id = h.requests.items[0].upstreamConnId;
    expect(id).toMatch(/^u\d+$/);
    await h.closed.until((e) => e.some((x) => x.id === id));
    expect(h.closed.items.find((x) => x.id === id)).toMatchObject({
      hop: 'proxy-backend',
      replica: 'static-1',
      closedBy: 'backend',
      reason: 'keep-alive timeout',
    });
  });

  it('the proxy closes an idle pooled connection after its own idle timeout', async () => {
    const b = await startBackend('static-1');
    const h = await startProxy(configFor([['web_static', [b]]]), { serverIdleConnTimeoutMs: 150 });
    await h.client('reuse').get('/');
    await h.requests.until((e) => e.length >= 1);
    const id = h.requests.items[0].upstreamConnId;
    await h.closed.until((e) => e.some((x) => x.id === id));
    expect(h.closed.items.find((x) => x.id === id)).toMatchObject({ closedBy: 'proxy', reason: 'idle timeout' });
  });

  it('a client that closes its connection is reported as the closer; Connection: close makes the proxy close', async () => {
    const b = await startBackend('static-1');
    const h = await startProxy(configFor([['web_static', [b]]]));
    const reuse = h.client('reuse');
    await reuse.get('/');
    await h.requests.until((e) => e.length >= 1);
    const first = h.requests.items[0].clientConnId;
    reuse.close();
    await h.closed.until((e) => e.some((x) => x.id === first));
    expect(h.closed.items.find((x) => x.id === first)).toMatchObject({ closedBy: 'client', reason: 'client closed' });

    const fresh = h.client('new');
    const r1 = await fresh.get('/');
    const r2 = await fresh.get('/');
    expect(r1.localPort).not.toBe(r2.localPort);
    await h.requests.until((e) => e.length >= 3);
    const ids = h.requests.items.slice(1).map((e) => e.clientConnId);
    expect(new Set(ids).size).toBe(2);
    await h.closed.until((e) => ids.every((id) => e.some((x) => x.id === id)));
    // The backend connection stays pooled: Connection: close is hop-by-hop.
    expect(b.connections).toBe(1);
    for (const id of ids) {
      const x = h.closed.items.find((c) => c.id === id);
      expect(x?.hop).toBe('client-proxy');
      // Who sends the first FIN here is a race between the two ends; both are honest answers.
      expect(['proxy:Connection: close', 'client:client closed']).toContain(`${x?.closedBy}:${x?.reason}`);
    }
  });
});

describe('EmbeddedProxy: failures during a request', () => {
  /** A backend whose behaviour per request is given by the test. */
  async function customBackend(name: string, handler: http.RequestListener): Promise<Backend> {
    const b = await startBackend(name);
    b.server.removeAllListeners('request');
    b.server.on('request', handler);
    return b;
  }

  it('replays an idempotent request once when a reused pooled connection was closed by the backend', async () => {
    const served = new WeakMap<net.Socket, number>();
    const b = await customBackend('static-1', (req, res) => {
      const n = (served.get(req.socket) ?? 0) + 1;
      served.set(req.socket, n);
      if (n === 2) {
        req.socket.destroy(); // closes the reused connection without answering
        return;
      }
      res.setHeader('X-Served-By', 'static-1');
      res.end('ok');
    });
    const h = await startProxy(configFor([['web_static', [b]]]));
    const c = h.client('reuse');
    expect((await c.get('/')).status).toBe(200);
    expect((await c.get('/')).status).toBe(200);
    expect(b.connections).toBe(2);
    await h.requests.until((e) => e.length >= 2);
    const [first, second] = h.requests.items;
    expect(second.error).toBeUndefined();
    expect(second.upstreamConnId).not.toBe(first.upstreamConnId);
  });

  it('cuts the client response when the backend dies mid-response, and reports the error', async () => {
    const b = await customBackend('static-1', (_req, res) => {
      res.writeHead(200, { 'Content-Length': '100', 'X-Served-By': 'static-1' });
      res.write('partial', () => res.socket?.destroy());
    });
    const h = await startProxy(configFor([['web_static', [b]]]));
    await expect(h.client('reuse').get('/')).rejects.toThrow();
    await h.requests.until((e) => e.length >= 1);
    expect(h.requests.items[0]).toMatchObject({ status: 200, replica: 'static-1', error: 'ECONNRESET' });
  });

  it('apply() removing a server lets its request in flight finish, then closes that connection', async () => {
    let arrived!: () => void;
    const requestArrived = new Promise<void>((resolve) => (arrived = resolve));
    let answer!: () => void;
    const b = await customBackend('slow-1', (_req, res) => {
      answer = () => res.end('late');
      arrived();
    });
    const other = await startBackend('static-2');
    const h = await startProxy(configFor([['web_static', [b]]]));
    const pending = h.client('reuse').get('/');
    await requestArrived;
    await h.proxy.apply(configFor([['web_static', [other]]]));
    // New requests already go to the new pool, while the old one is still in flight.
    expect((await h.client('new').get('/')).servedBy).toBe('static-2');
    answer();
    const r = await pending;
    expect(r).toMatchObject({ status: 200, body: 'late' });
    const slowConn = h.opened.items.find((o) => o.replica === 'slow-1')?.id;
    await h.closed.until((e) => e.some((x) => x.id === slowConn));
    expect(h.closed.items.find((x) => x.id === slowConn)).toMatchObject({ closedBy: 'proxy', reason: 'pool removed' });
  });

  it('logs 499 when the client goes away first, and closes the backend connection for it', async () => {
    let arrived!: () => void;
    const requestArrived = new Promise<void>((resolve) => (arrived = resolve));
    const b = await customBackend('static-1', () => arrived()); // never answers
    const h = await startProxy(configFor([['web_static', [b]]]));
    const c = h.client('reuse');
    const pending = c.get('/hang');
    await requestArrived;
    c.close();
    await expect(pending).rejects.toThrow();
    await h.requests.until((e) => e.length >= 1);
    const ev = h.requests.items[0];
    expect(ev).toMatchObject({ status: 499, error: 'client closed request', replica: 'static-1' });
    expect(ev.upstreamConnId).toMatch(/^u\d+$/);
    await h.closed.until((e) => e.some((x) => x.id === ev.upstreamConnId));
    expect(h.closed.items.find((x) => x.id === ev.upstreamConnId)).toMatchObject({
      hop: 'proxy-backend',
      closedBy: 'proxy',
      reason: 'client closed request',
    });
  });
});
