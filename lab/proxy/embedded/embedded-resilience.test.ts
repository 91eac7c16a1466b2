/**
 * The embedded proxy when servers fail, against real node:http backends on 127.0.0.1 (some failing
 * on purpose: a closed port, 500 answers, /health 503, a server that accepts and never answers):
 * Traefik's active health check, Traefik's retry middleware, and drain. No mocks and no fixed
 * sleeps: every wait is for an event or an answer; time bounds are generous for a loaded machine.
 */
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus } from '../../events.ts';
import { ProbeClient } from '../../probe-client.ts';
import type { ProxyConfig } from '../../seams.ts';
import { Topology, type Balancer } from '../../topology.ts';
import { buildProxyConfig, type PoolMember } from '../config.ts';
import { collect, deadPort } from '../../../test/support/events.ts';
import { EmbeddedProxy } from './embedded-proxy.ts';

// ------------------------------------------------------------------ helpers

type Mode = 'ok' | 'errors' | 'unhealthy' | 'hang';

interface Backend {
  name: string;
  port: number;
  server: http.Server;
  mode: Mode;
  /** GET /health requests received. */
  healthHits: number;
  /** Requests to `/slow` wait until release(). */
  held: http.ServerResponse[];
  nextHeld(): Promise<void>;
  release(): void;
  member(extra?: Partial<PoolMember>): PoolMember;
  /** Stops listening and drops every connection (a crash, as far as the proxy can tell). */
  kill(): Promise<void>;
  /** Listens again on the same port. */
  revive(): Promise<void>;
}

const backends: Backend[] = [];
const clients: ProbeClient[] = [];
const proxies: EmbeddedProxy[] = [];

/**
 * A backend answering its name (body and X-Served-By), echoing a POST body as `<name>:<body>`.
 * Modes: `errors` = 500 for everything but /health; `unhealthy` = /health 503; `hang` = accepts and
 * never answers anything.
 */
async function startBackend(name: string, mode: Mode = 'ok'): Promise<Backend> {
  let waiters: Array<() => void> = [];
  const sockets = new Set<net.Socket>();
  const b = { name, mode, healthHits: 0, held: [] as http.ServerResponse[] } as Backend;
  const server = http.createServer((req, res) => {
    if (b.mode === 'hang') return;
    res.setHeader('X-Served-By', name);
    if (req.url === '/health') {
      b.healthHits++;
      res.statusCode = b.mode === 'unhealthy' ? 503 : 200;
      res.end(b.mode === 'unhealthy' ? 'unhealthy' : 'ok');
      return;
    }
    if (b.mode === 'errors') {
      res.statusCode = 500;
      res.end(`${name} error`);
      return;
    }
    if (req.url?.startsWith('/slow')) {
      b.held.push(res);
      for (const w of waiters.splice(0)) w();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => res.end(req.method === 'POST' ? `${name}:${Buffer.concat(chunks).toString()}` : name));
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  Object.assign(b, {
    port,
    server,
    nextHeld: () => new Promise<void>((resolve) => waiters.push(resolve)),
    release: () => {
      for (const res of b.held.splice(0)) res.end(`${name} (slow)`);
    },
    member: (extra: Partial<PoolMember> = {}) => ({ hostname: name, host: '127.0.0.1', port, ...extra }),
    kill: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
    revive: () => new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    }),
  });
  backends.push(b);
  return b;
}

/** A pool member on a port nothing listens on (bound, then closed). */
async function deadMember(name: string): Promise<PoolMember> {
  return { hostname: name, host: '127.0.0.1', port: await deadPort() };
}

const entrypoint = { name: 'web', host: '127.0.0.1', port: 0 };

/** web_dynamic behind `/` with these pool members and balancer settings. */
function configFor(members: PoolMember[], balancer: Partial<Balancer> = {}): ProxyConfig {
  const topology = Topology.parse({
    services: { web_dynamic: { replicas: members.length } },
    routes: [{ service: 'web_dynamic', pathPrefix: '/' }],
    proxy: balancer,
  });
  return buildProxyConfig(topology, new Map([['web_dynamic', members]]), entrypoint);
}

/** Health check every 200 ms, 150 ms timeout; fall/rise set high on purpose: Traefik ignores them. */
const CHECK = { healthCheck: true, healthCheckInterval: 200, healthCheckTimeout: 150, healthCheckFall: 3, healthCheckRise: 3 } as const;

async function startProxy(config: ProxyConfig) {
  const bus = new EventBus();
  const h = {
    bus,
    requests: collect(bus, 'request:completed'),
    probes: collect(bus, 'healthcheck:probed'),
    health: collect(bus, 'replica:health-changed'),
    opened: collect(bus, 'connection:opened'),
  };
  const proxy = new EmbeddedProxy({ bus });
  proxies.push(proxy);
  const startedAt = Date.now();
  const port = await proxy.start(config);
  const baseUrl = `http://127.0.0.1:${port}`;
  return {
    ...h,
    proxy,
    startedAt,
    client(connection: 'reuse' | 'new' = 'reuse', cookies = false) {
      const c = new ProbeClient({ baseUrl, connection, cookies });
      clients.push(c);
      return c;
    },
  };
}

/**
 * A steady request loop (one keep-alive client) until stop(): answers in order, each with its
 * status, replica and when it was sent (epoch ms).
 */
function steadyLoop(c: ProbeClient, path = '/') {
  let running = true;
  const answers: Array<{ status: number; servedBy: string | null; sentAt: number }> = [];
  const waiters: Array<{ test: () => boolean; resolve: () => void }> = [];
  const done = (async () => {
    while (running) {
      const sentAt = Date.now();
      const r = await c.get(path, { timeoutMs: 10_000 });
      answers.push({ status: r.status, servedBy: r.servedBy, sentAt });
      for (const w of [...waiters]) {
        if (w.test()) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    }
  })();
  return {
    answers,
    until(test: () => boolean): Promise<void> {
      if (test()) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ test, resolve }));
    },
    async stop() {
      running = false;
      await done;
    },
  };
}

function activeTimeouts(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(proxies.splice(0).map((p) => p.stop()));
  for (const b of backends) b.release();
  await Promise.all(
    backends.splice(0).map((b) => {
      b.server.closeAllConnections();
      return new Promise<void>((resolve) => (b.server.listening ? b.server.close(() => resolve()) : resolve()));
    }),
  );
});

// ------------------------------------------------------------------ health check

describe('EmbeddedProxy: active health check (Traefik)', () => {
  it('without a health check, a dead server fails about 1 request in 3 for as long as it stays in the pool', async () => {
    const [a, b] = await Promise.all([startBackend('a'), startBackend('b')]);
    const h = await startProxy(configFor([a.member(), b.member(), await deadMember('c')]));
    const c = h.client();
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push((await c.get('/')).status);
    expect(statuses.filter((s) => s === 502).length).toBe(10);
    expect(statuses.filter((s) => s === 200).length).toBe(20);
    expect(h.probes.items).toEqual([]);
    expect(h.proxy.healthChecks()).toEqual([]);
  });

  it('a dead server: failures stop once the first probe fails (one interval after the check starts), then it is skipped', async () => {
    const [a, b] = await Promise.all([startBackend('a'), startBackend('b')]);
    const dead = await deadMember('c');
    // With a check whose first probe is a minute away, c is in the rotation: servers start healthy.
    const h = await startProxy(configFor([a.member(), b.member(), dead], { ...CHECK, healthCheckInterval: 60_000 }));
    const c = h.client();
    expect([(await c.get('/')).status, (await c.get('/')).status, (await c.get('/')).status]).toEqual([200, 200, 502]);
    // Now every 200 ms (a new interval restarts the timer): the first probe comes 200 ms later.
    const loop = steadyLoop(c);
    const checkFrom = Date.now();
    await h.proxy.apply(configFor([a.member(), b.member(), dead], CHECK));
    await h.health.until((xs) => xs.some((e) => e.hostname === 'c' && !e.healthy));
    const ejected = h.health.items.find((e) => e.hostname === 'c')!;
    const sentAfter = () => loop.answers.filter((x) => x.sentAt > ejected.at);
    await loop.until(() => sentAfter().length >= 20);
    await loop.stop();

    expect(ejected).toMatchObject({ service: 'web_dynamic', hostname: 'c', port: dead.port, pid: null, healthy: false });
    expect(ejected.reason).toMatch(/ECONNREFUSED/);
    // The first probe goes out one interval after the check started: ejection then.
    const ejectedAfter = ejected.at - checkFrom;
    expect(ejectedAfter).toBeGreaterThanOrEqual(150);
    expect(ejectedAfter).toBeLessThanOrEqual(200 + 150 + 1500);
    // ONE failed probe was enough (fall=3 is ignored, as Traefik has none).
    const cProbes = h.probes.items.filter((p) => p.replica === 'c');
    expect(cProbes[0]).toMatchObject({ service: 'web_dynamic', replica: 'c', ok: false, status: null, error: 'ECONNREFUSED' });
    expect(cProbes[0].at).toBe(ejected.at);

    const failures = h.requests.items.filter((r) => r.status !== 200);
    expect(failures.length).toBeGreaterThanOrEqual(1); // the one above, at least
    for (const f of failures) expect(f).toMatchObject({ status: 502, replica: 'c', error: 'ECONNREFUSED' });
    // Every failure arrived before the ejection; after it, c is skipped.
    expect(Math.max(...failures.map((f) => f.at))).toBeLessThanOrEqual(ejected.at);
    const after = sentAfter();
    expect(after.every((x) => x.status === 200 && x.servedBy !== 'c')).toBe(true);
    expect(new Set(after.map((x) => x.servedBy))).toEqual(new Set(['a', 'b']));
    expect(h.proxy.healthChecks()[0].servers.map((s) => [s.name, s.healthy])).toEqual([['a', true], ['b', true], ['c', false]]);
  });

  it('recovery: one good probe puts the server back (rise=3 ignored) and requests reach it again', async () => {
    const [a, b] = await Promise.all([startBackend('a'), startBackend('b', 'unhealthy')]);
    const h = await startProxy(configFor([a.member(), b.member()], CHECK));
    await h.health.until((xs) => xs.some((e) => e.hostname === 'b' && !e.healthy));
    const out = h.health.items[0];
    expect(out.reason).toBe('health check failed: status 503');
    const c = h.client();
    for (let i = 0; i < 6; i++) expect((await c.get('/')).servedBy).toBe('a');

    // The backend recovers; the next probe (one) brings it back.
    b.mode = 'ok';
    const probesBefore = h.probes.items.length;
    await h.health.until((xs) => xs.some((e) => e.hostname === 'b' && e.healthy));
    const back = h.health.items.find((e) => e.hostname === 'b' && e.healthy)!;
    expect(back).toMatchObject({ service: 'web_dynamic', hostname: 'b', port: b.port, healthy: true, reason: 'health check passed' });
    const bProbesSinceRecovery = h.probes.items.slice(probesBefore).filter((p) => p.replica === 'b');
    expect(bProbesSinceRecovery.filter((p) => p.ok)).toHaveLength(1);
    expect(bProbesSinceRecovery.find((p) => p.ok)!.at).toBe(back.at);
    const served = [];
    for (let i = 0; i < 6; i++) served.push((await c.get('/')).servedBy);
    expect(served.filter((s) => s === 'b')).toHaveLength(3);
    expect(h.health.items.map((e) => [e.hostname, e.healthy])).toEqual([['b', false], ['b', true]]);
  });

  it('a crashed server is ejected; listening again on its port brings it back', async () => {
    const [a, b] = await Promise.all([startBackend('a'), startBackend('b')]);
    const h = await startProxy(configFor([a.member(), b.member()], CHECK));
    const c = h.client();
    await h.probes.until((xs) => xs.filter((p) => p.replica === 'b' && p.ok).length >= 1);
    await b.kill();
    await h.health.until((xs) => xs.some((e) => e.hostname === 'b' && !e.healthy));
    for (let i = 0; i < 4; i++) expect(await c.get('/')).toMatchObject({ status: 200, servedBy: 'a' });
    await b.revive();
    await h.health.until((xs) => xs.some((e) => e.hostname === 'b' && e.healthy));
    const served = [];
    for (let i = 0; i < 4; i++) served.push((await c.get('/')).servedBy);
    expect(served.sort()).toEqual(['a', 'a', 'b', 'b']);
  });

  it('probes each server once per interval, over their own connections (not the request pools)', async () => {
    const bs = await Promise.all(['a', 'b', 'c'].map((n) => startBackend(n)));
    const h = await startProxy(configFor(bs.map((b) => b.member()), { ...CHECK, healthCheckPath: '/health' }));
    const N = 8;
    await h.probes.until((xs) => xs.filter((p) => p.replica === 'a').length >= N);
    const aProbes = h.probes.items.filter((p) => p.replica === 'a');
    // N probes of a took about N intervals from start (timers never fire early).
    const elapsed = aProbes[N - 1].at - h.startedAt;
    expect(elapsed).toBeGreaterThanOrEqual(N * 200 - 50);
    expect(elapsed).toBeLessThanOrEqual(N * 200 * 2 + 1500);
    for (const p of h.probes.items) {
      expect(p).toMatchObject({ service: 'web_dynamic', ok: true, status: 200 });
      expect(p).not.toHaveProperty('error');
      expect(p.ms).toBeGreaterThanOrEqual(0);
      expect(p.ms).toBeLessThan(150);
    }
    const per = ['a', 'b', 'c'].map((n) => h.probes.items.filter((p) => p.replica === n).length);
    expect(Math.max(...per) - Math.min(...per)).toBeLessThanOrEqual(1);
    // Every probe reached its backend as GET /health; none opened a pooled proxy-backend connection.
    expect(bs[0].healthHits).toBeGreaterThanOrEqual(N);
    expect(h.opened.items.filter((o) => o.hop === 'proxy-backend')).toEqual([]);
    expect(h.health.items).toEqual([]);
  });

  it('a server that accepts and never answers fails its probe at the timeout', async () => {
    const [a, hang] = await Promise.all([startBackend('a'), startBackend('hang', 'hang')]);
    const h = await startProxy(configFor([a.member(), hang.member()], CHECK));
    await h.health.until((xs) => xs.some((e) => e.hostname === 'hang' && !e.healthy));
    const p = h.probes.items.find((x) => x.replica === 'hang')!;
    expect(p).toMatchObject({ ok: false, status: null, error: 'timeout' });
    expect(p.ms).toBeGreaterThanOrEqual(145);
    expect(p.ms).toBeLessThan(150 + 1000);
  });

  it('every server out: 503 "no available server"; one back: served again', async () => {
    const [a, b] = await Promise.all([startBackend('a', 'unhealthy'), startBackend('b', 'unhealthy')]);
    const h = await startProxy(configFor([a.member(), b.member()], CHECK));
    await h.health.until((xs) => xs.filter((e) => !e.healthy).length === 2);
    const c = h.client();
    const r = await c.get('/');
    expect(r.status).toBe(503);
    expect(r.body).toBe('no available server\n');
    expect(h.requests.items.at(-1)).toMatchObject({ status: 503, replica: null, upstreamConnId: null });
    a.mode = 'ok';
    await h.health.until((xs) => xs.some((e) => e.hostname === 'a' && e.healthy));
    expect(await c.get('/')).toMatchObject({ status: 200, servedBy: 'a' });
  });

  it('a sticky client pinned to a server that goes out is re-pinned, and the cookie rewritten', async () => {
    const [a, b] = await Promise.all([startBackend('a'), startBackend('b')]);
    const h = await startProxy(configFor([a.member(), b.member()], { ...CHECK, sticky: true, stickyCookie: 'lab_sticky' }));
    const c = h.client('reuse', true);
    const first = await c.get('/');
    const pinned = backends.find((x) => x.name === first.servedBy)!;
    pinned.mode = 'unhealthy';
    await h.health.until((xs) => xs.some((e) => e.hostname === pinned.name && !e.healthy));
    const moved = await c.get('/');
    expect(moved.servedBy).not.toBe(pinned.name);
    expect(moved.headers['set-cookie']?.[0]).toMatch(/^lab_sticky=/);
    expect((await c.get('/')).servedBy).toBe(moved.servedBy);
  });

  it('apply() while checking: health kept for servers that stay, new ones start healthy, probes follow the pool, check off puts servers back', async () => {
    const [a, b, sick] = await Promise.all([startBackend('a'), startBackend('b'), startBackend('sick', 'unhealthy')]);
    const h = await startProxy(configFor([a.member(), sick.member()], CHECK));
    await h.health.until((xs) => xs.some((e) => e.hostname === 'sick' && !e.healthy));
    const loop = steadyLoop(h.client());
    const answered = (n: number) => loop.until(() => loop.answers.length >= n);
    const probesOf = (name: string) => h.probes.items.filter((p) => p.replica === name).length;
    const moreProbes = (name: string, n: number) => {
      const base = probesOf(name);
      return h.probes.until(() => probesOf(name) >= base + n);
    };

    // b joins: healthy at once (before its first probe), sick stays out.
    await h.proxy.apply(configFor([a.member(), sick.member(), b.member()], CHECK));
    const joinedAt = loop.answers.length;
    await answered(joinedAt + 6);
    expect(loop.answers.slice(joinedAt).map((x) => x.servedBy)).not.toContain('sick');
    expect(loop.answers.slice(joinedAt).map((x) => x.servedBy)).toContain('b');
    await moreProbes('b', 2);

    // Another interval: the timer restarts, the health stays.
    await h.proxy.apply(configFor([a.member(), sick.member(), b.member()], { ...CHECK, healthCheckInterval: 100 }));
    expect(h.proxy.healthChecks()[0]).toMatchObject({ check: { intervalMs: 100 }, running: true });
    expect(h.proxy.healthChecks()[0].servers.find((s) => s.name === 'sick')?.healthy).toBe(false);
    await moreProbes('a', 3);

    // a leaves: no more probes for it (another server's probes keep coming).
    await h.proxy.apply(configFor([sick.member(), b.member()], { ...CHECK, healthCheckInterval: 100 }));
    const aProbes = probesOf('a');
    await moreProbes('b', 4);
    expect(probesOf('a')).toBe(aProbes);

    // Check off: sick is back in the rotation at once.
    await h.proxy.apply(configFor([sick.member(), b.member()]));
    expect(h.health.items.at(-1)).toMatchObject({ hostname: 'sick', healthy: true, reason: 'health check off' });
    expect(h.proxy.healthChecks()).toEqual([]);
    const offAt = loop.answers.length;
    await answered(offAt + 4);
    expect(loop.answers.slice(offAt).map((x) => x.servedBy)).toContain('sick');

    // On again: sick starts healthy (as a new server does), then its first probe takes it out.
    await h.proxy.apply(configFor([sick.member(), b.member()], CHECK));
    await h.health.until((xs) => xs.filter((e) => e.hostname === 'sick' && !e.healthy).length === 2);
    await loop.stop();
    expect(loop.answers.every((x) => x.status === 200)).toBe(true);
  });

  it('stop() leaves no probe timer and drops a probe in flight', async () => {
    const timeoutsBefore = activeTimeouts();
    const [a, hang] = await Promise.all([startBackend('a'), startBackend('hang', 'hang')]);
    const hangConn = new Promise<net.Socket>((resolve) => hang.server.once('connection', resolve));
    const h = await startProxy(configFor([a.member(), hang.member()], { ...CHECK, healthCheckTimeout: 10_000 }));
    const probeSocket = await hangConn; // a probe is in flight to the hanging server
    expect(h.proxy.healthChecks()[0]).toMatchObject({ running: true });
    const closed = new Promise<void>((resolve) => probeSocket.once('close', () => resolve()));
    await h.proxy.stop();
    await closed;
    expect(h.proxy.healthChecks()).toEqual([]);
    expect(h.probes.items.filter((p) => p.replica === 'hang')).toEqual([]);
    expect(activeTimeouts()).toBeLessThanOrEqual(timeoutsBefore);
  });
});

// ------------------------------------------------------------------ retry

describe('EmbeddedProxy: retry on connection failure (Traefik retry middleware)', () => {
  it('hides a closed-port server completely: 0 failures over 30 requests, the retried ones flagged', async () => {
    const [a, b] = await Promise.all([startBackend('a'), startBackend('b')]);
    const h = await startProxy(configFor([a.member(), b.member(), await deadMember('c')], { retry: true, retryAttempts: 3 }));
    const statuses: number[] = [];
    for (const mode of ['reuse', 'new'] as const) {
      const c = h.client(mode);
      for (let i = 0; i < 15; i++) {
        const r = await c.get('/');
        statuses.push(r.status);
        expect(['a', 'b']).toContain(r.servedBy);
      }
    }
    expect(statuses.every((s) => s === 200)).toBe(true);
    // As in Traefik, a retry re-enters round-robin and takes the next server's turn: the order goes
    // a, b, c->a, b, c->a, ... so about every other request meets c first (14 of 30).
    const retried = h.requests.items.filter((e) => e.retried);
    expect(retried.length).toBeGreaterThanOrEqual(10);
    expect(retried.length).toBeLessThanOrEqual(15);
    for (const e of retried) {
      expect(['a', 'b']).toContain(e.replica);
      expect(e).toMatchObject({ status: 200 });
      expect(e).not.toHaveProperty('error');
    }
    expect(h.requests.items.filter((e) => !e.retried).every((e) => e.status === 200 && e.replica !== 'c')).toBe(true);
  });

  it('does not hide a server that answers 500: the 500s reach the client, not retried', async () => {
    const [a, e] = await Promise.all([startBackend('a'), startBackend('e', 'errors')]);
    const h = await startProxy(configFor([a.member(), e.member()], { retry: true, retryAttempts: 3 }));
    const c = h.client();
    const got = [];
    for (let i = 0; i < 10; i++) got.push(await c.get('/'));
    expect(got.filter((r) => r.status === 500)).toHaveLength(5);
    expect(got.filter((r) => r.status === 500).every((r) => r.servedBy === 'e')).toBe(true);
    expect(h.requests.items.some((x) => x.retried)).toBe(false);
  });

  it('resends a POST body to the next server when the first could not be reached', async () => {
    const [a] = await Promise.all([startBackend('a')]);
    const h = await startProxy(configFor([await deadMember('dead'), a.member()], { retry: true, retryAttempts: 2 }));
    const c = h.client();
    for (let i = 0; i < 4; i++) {
      const r = await c.post('/login', { user: `u${i}`, pad: 'x'.repeat(20_000) });
      expect(r.status).toBe(200);
      expect(r.body).toBe(`a:${JSON.stringify({ user: `u${i}`, pad: 'x'.repeat(20_000) })}`);
    }
    // Round-robin over [dead, a]: each retry takes a's turn, so every request meets `dead` first.
    expect(h.requests.items.filter((e) => e.retried)).toHaveLength(4);
  });

  it('gives up after trying every server (502, retried, the connection error)', async () => {
    const h = await startProxy(configFor([await deadMember('d1'), await deadMember('d2')], { retry: true, retryAttempts: 3 }));
    const r = await h.client().get('/');
    expect(r.status).toBe(502);
    expect(h.requests.items[0]).toMatchObject({ status: 502, retried: true, error: 'ECONNREFUSED' });
    expect(['d1', 'd2']).toContain(h.requests.items[0].replica);
  });

  it('attempts=1 means no retry', async () => {
    const [a] = await Promise.all([startBackend('a')]);
    const h = await startProxy(configFor([await deadMember('dead'), a.member()], { retry: true, retryAttempts: 1 }));
    const c = h.client();
    expect((await c.get('/')).status).toBe(502);
    expect((await c.get('/')).status).toBe(200);
    expect(h.requests.items.some((x) => x.retried)).toBe(false);
  });

  it('a server that accepts and never answers is not a connection failure: not retried', async () => {
    const [hang, a] = await Promise.all([startBackend('hang', 'hang'), startBackend('a')]);
    const h = await startProxy(configFor([hang.member(), a.member()], { retry: true, retryAttempts: 3 }));
    // The first request goes to `hang` and stays there until the client gives up.
    await expect(h.client('new').get('/', { timeoutMs: 400 })).rejects.toThrow(/no complete response/);
    await h.requests.until((xs) => xs.length === 1);
    expect(h.requests.items[0]).toMatchObject({ replica: 'hang', status: 499 });
    expect(h.requests.items[0]).not.toHaveProperty('retried');
    expect(await h.client().get('/')).toMatchObject({ status: 200, servedBy: 'a' });
  });
});

// ------------------------------------------------------------------ drain

describe('EmbeddedProxy: drain', () => {
  it('a draining server finishes its slow request (200) while new requests, sticky ones included, go elsewhere; drained() resolves after it', async () => {
    const [b, a] = await Promise.all([startBackend('b'), startBackend('a')]);
    const sticky = { sticky: true, stickyCookie: 'lab_sticky' } as const;
    const h = await startProxy(configFor([b.member(), a.member()], sticky));
    // A sticky client pinned to b (round-robin starts with the first server).
    const pinned = h.client('reuse', true);
    const first = await pinned.get('/');
    expect(first.servedBy).toBe('b');
    const cookie = first.headers['set-cookie']![0].split(';')[0];
    // A slow request in flight on b.
    const held = b.nextHeld();
    const slow = h.client('new').get('/slow', { headers: { Cookie: cookie } });
    await held;
    expect(await h.proxy.drained('a', 1000)).toBe(true); // nothing in flight there

    await h.proxy.apply(configFor([b.member({ state: 'drain' }), a.member()], sticky));
    let drainedAt: number | null = null;
    const drained = h.proxy.drained('b', 10_000).then((v) => {
      drainedAt = Date.now();
      return v;
    });
    expect(await h.proxy.drained('b', 50)).toBe(false); // still busy after 50 ms

    const moved = await pinned.get('/');
    expect(moved.servedBy).toBe('a');
    expect(moved.headers['set-cookie']?.[0]).toMatch(/^lab_sticky=/);
    const plain = h.client('new');
    for (let i = 0; i < 6; i++) expect((await plain.get('/')).servedBy).toBe('a');
    expect(drainedAt).toBeNull();

    b.release();
    const done = await slow;
    expect(done).toMatchObject({ status: 200, servedBy: 'b', body: 'b (slow)' });
    expect(await drained).toBe(true);
    const slowEvent = h.requests.items.find((e) => e.path === '/slow')!;
    expect(slowEvent).toMatchObject({ status: 200, replica: 'b' });
    expect(drainedAt!).toBeGreaterThanOrEqual(slowEvent.at + slowEvent.ms - 5);
    expect(h.requests.items.filter((e) => e.status !== 200)).toEqual([]);

    // Back to ready: b takes requests again.
    await h.proxy.apply(configFor([b.member(), a.member()]));
    const again = [];
    for (let i = 0; i < 4; i++) again.push((await plain.get('/')).servedBy);
    expect(again).toContain('b');
  });

  it('every server draining: 503, as with no server', async () => {
    const [a] = await Promise.all([startBackend('a')]);
    const h = await startProxy(configFor([a.member({ state: 'drain' })]));
    expect((await h.client().get('/')).status).toBe(503);
  });
});

describe('EmbeddedProxy.render: health check, retry and drain as Traefik reads them', () => {
  it('healthCheck {path, interval, timeout} on the service, a retry middleware on its routers, a draining server left out, with notes', () => {
    const members: PoolMember[] = [
      { hostname: 'a', host: '127.0.0.1', port: 4001 },
      { hostname: 'b', host: '127.0.0.1', port: 4002, state: 'drain' },
    ];
    const topology = Topology.parse({
      services: { web_dynamic: { replicas: 2 } },
      routes: [{ service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true }],
      proxy: { ...CHECK, healthCheckInterval: 3000, healthCheckPath: '/app/health', retry: true, retryAttempts: 4 },
    });
    const text = new EmbeddedProxy({ bus: new EventBus() }).render(buildProxyConfig(topology, new Map([['web_dynamic', members]]), entrypoint));
    const doc = JSON.parse(text.split('\n').filter((l) => !l.startsWith('#')).join('\n'));
    expect(doc.http.services.web_dynamic.loadBalancer).toMatchObject({
      servers: [{ url: 'http://127.0.0.1:4001', weight: 1 }],
      healthCheck: { path: '/app/health', interval: '3s', timeout: '150ms' },
    });
    expect(doc.http.middlewares['web_dynamic-retry']).toEqual({ retry: { attempts: 4 } });
    expect(doc.http.routers.web_dynamic.middlewares).toEqual(['web_dynamic-retry', 'web_dynamic-stripprefix']);
    expect(text).toMatch(/^# web_dynamic: draining b \(http:\/\/127\.0\.0\.1:4002\): Traefik has no drain state/m);
    expect(text).toMatch(/^# web_dynamic: health check fall=3 rise=3 not rendered: Traefik has no fall\/rise/m);
  });
});
