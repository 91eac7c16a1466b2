/**
 * The embedded proxy's balancing against real backends (node:http servers on 127.0.0.1) and the
 * ProbeClient: weights, least-connections, Traefik's sticky cookie, header hashing, live apply().
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus, type RequestCompleted } from '../../events.ts';
import { ProbeClient, type ProbeClientOptions, type ProbeResponse } from '../../probe-client.ts';
import type { ProxyConfig } from '../../seams.ts';
import { Topology } from '../../topology.ts';
import { buildProxyConfig, defaultStickyCookieName, type PoolMember } from '../config.ts';
import { EmbeddedProxy } from './embedded-proxy.ts';

// ------------------------------------------------------------------ helpers

interface Backend {
  name: string;
  port: number;
  url: string;
  server: http.Server;
  member(weight?: number): PoolMember;
  /** Requests to `/slow` wait here until release(). */
  held: http.ServerResponse[];
  /** Resolves when the next `/slow` request arrives. */
  nextHeld(): Promise<void>;
  release(): void;
}

const backends: Backend[] = [];
const clients: ProbeClient[] = [];
const proxies: EmbeddedProxy[] = [];

/** A backend answering its name (body and X-Served-By); `/slow` is held until release(); `/session` also sets its own cookie. */
async function startBackend(name: string): Promise<Backend> {
  const held: http.ServerResponse[] = [];
  let waiters: Array<() => void> = [];
  const server = http.createServer((req, res) => {
    res.setHeader('X-Served-By', name);
    if (req.url?.startsWith('/session')) res.setHeader('Set-Cookie', 'PHPSESSID=abc123; path=/');
    if (req.url?.startsWith('/slow')) {
      held.push(res);
      for (const w of waiters.splice(0)) w();
      return;
    }
    res.end(name);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const b: Backend = {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    server,
    member: (weight) => ({ hostname: name, host: '127.0.0.1', port, ...(weight !== undefined ? { weight } : {}) }),
    held,
    nextHeld: () => new Promise<void>((resolve) => waiters.push(resolve)),
    release: () => {
      for (const res of held.splice(0)) res.end(`${name} (slow)`);
    },
  };
  backends.push(b);
  return b;
}

async function startBackends(...names: string[]): Promise<Backend[]> {
  return Promise.all(names.map((n) => startBackend(n)));
}

const entrypoint = { name: 'web', host: '127.0.0.1', port: 0 };

/** web_dynamic behind `/` with the given balancer settings (proxy-wide). */
function topo(proxy: Record<string, unknown> = {}): Topology {
  return Topology.parse({ services: { web_dynamic: { replicas: 5 } }, routes: [{ service: 'web_dynamic', pathPrefix: '/' }], proxy });
}

function configFor(t: Topology, members: PoolMember[]): ProxyConfig {
  return buildProxyConfig(t, new Map([['web_dynamic', members]]), entrypoint);
}

interface Harness {
  proxy: EmbeddedProxy;
  baseUrl: string;
  events: RequestCompleted[];
  client(opts?: Partial<ProbeClientOptions>): ProbeClient;
}

async function startProxy(config: ProxyConfig): Promise<Harness> {
  const bus = new EventBus();
  const events: RequestCompleted[] = [];
  bus.on('request:completed', (e) => events.push(e));
  const proxy = new EmbeddedProxy({ bus });
  proxies.push(proxy);
  const port = await proxy.start(config);
  const baseUrl = `http://127.0.0.1:${port}`;
  return {
    proxy,
    baseUrl,
    events,
    client(opts = {}) {
      const c = new ProbeClient({ baseUrl, connection: 'reuse', ...opts });
      clients.push(c);
      return c;
    },
  };
}

async function servedBy(c: ProbeClient, n: number, path = '/', headers: Record<string, string> = {}): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await c.get(path, { headers });
    expect(r.status).toBe(200);
    out.push(r.servedBy ?? '?');
  }
  return out;
}

function count(list: string[]): Record<string, number> {
  const m: Record<string, number> = {};
  for (const x of list) m[x] = (m[x] ?? 0) + 1;
  return m;
}

/** Traefik v3's sticky cookie value for a server: SHA-256 of its URL, 16 hex digits. */
function cookieValue(b: Backend): string {
  return createHash('sha256').update(b.url).digest('hex').slice(0, 16);
}

function setCookies(r: ProbeResponse): string[] {
  return r.headers['set-cookie'] ?? [];
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(proxies.splice(0).map((p) => p.stop()));
  for (const b of backends) b.release();
  await Promise.all(
    backends.splice(0).map((b) => {
      b.server.closeAllConnections();
      return new Promise<void>((resolve) => b.server.close(() => resolve()));
    }),
  );
});

// ------------------------------------------------------------------ tests

describe('EmbeddedProxy: weighted round-robin', () => {
  it('weights 3:1:1:0 give 30/10/10/0 of 50 requests, interleaved a a b c a in every 5', async () => {
    const [a, b, c, z] = await startBackends('a', 'b', 'c', 'z');
    const h = await startProxy(configFor(topo(), [a.member(3), b.member(1), c.member(1), z.member(0)]));
    const seq = await servedBy(h.client(), 50);
    expect(count(seq)).toEqual({ a: 30, b: 10, c: 10 });
    for (let i = 0; i < 50; i += 5) expect(seq.slice(i, i + 5)).toEqual(['a', 'a', 'b', 'c', 'a']);
    expect(h.events.map((e) => e.replica)).toEqual(seq);
    const doc = JSON.parse(h.proxy.render(configFor(topo(), [a.member(3), z.member(0)])).split('\n').filter((l) => !l.startsWith('#')).join('\n'));
    expect(doc.http.services.web_dynamic.loadBalancer.servers).toEqual([
      { url: a.url, weight: 3 },
      { url: z.url, weight: 0 },
    ]);
    expect(h.proxy.capabilities).toMatchObject({ weights: true, leastConnections: true, stickyCookie: true, headerHash: true });
  });

  it('apply() changes weights live', async () => {
    const [a, b] = await startBackends('a', 'b');
    const h = await startProxy(configFor(topo(), [a.member(), b.member()]));
    const c = h.client();
    expect(count(await servedBy(c, 10))).toEqual({ a: 5, b: 5 });
    await h.proxy.apply(configFor(topo(), [a.member(4), b.member(1)]));
    expect(count(await servedBy(c, 50))).toEqual({ a: 40, b: 10 });
    await h.proxy.apply(configFor(topo(), [a.member(0), b.member(1)]));
    expect(count(await servedBy(c, 5))).toEqual({ b: 5 });
  });
});

describe('EmbeddedProxy: least-connections', () => {
  it('avoids a server busy with a slow request; round-robin (applied live) does not', async () => {
    const [a, b, c] = await startBackends('a', 'b', 'c');
    const members = [a.member(), b.member(), c.member()];
    const h = await startProxy(configFor(topo({ algorithm: 'least-connections' }), members));
    expect(h.proxy.render(configFor(topo({ algorithm: 'least-connections' }), members))).toMatch(
      /^# web_dynamic: least-connections has no Traefik v3 equivalent; the embedded proxy follows HAProxy's balance leastconn\.$/m,
    );

    const arrived = Promise.race([a, b, c].map((x) => x.nextHeld().then(() => x)));
    const slow = h.client({ connection: 'new' }).get('/slow');
    const busy = await arrived;
    const others = [a, b, c].filter((x) => x !== busy).map((x) => x.name);

    const fast = h.client();
    const during = await servedBy(fast, 6);
    expect(during).not.toContain(busy.name);
    expect(count(during)).toEqual({ [others[0]]: 3, [others[1]]: 3 });

    // Same moment, round-robin: the busy server still gets its turn.
    await h.proxy.apply(configFor(topo({ algorithm: 'round-robin' }), members));
    expect(count(await servedBy(fast, 6))).toEqual({ a: 2, b: 2, c: 2 });

    await h.proxy.apply(configFor(topo({ algorithm: 'least-connections' }), members));
    busy.release();
    expect(await slow).toMatchObject({ status: 200, servedBy: busy.name });
    // Nothing in flight: every server again, in turn.
    expect(new Set(await servedBy(fast, 3))).toEqual(new Set(['a', 'b', 'c']));
  });
});

describe("EmbeddedProxy: Traefik's sticky cookie", () => {
  const name = defaultStickyCookieName('web_dynamic');

  it('pins a client with a cookie jar to one server, over new connections; Set-Cookie only on the first response', async () => {
    const all = await startBackends('a', 'b', 'c');
    const h = await startProxy(configFor(topo({ sticky: true }), all.map((x) => x.member())));
    const text = h.proxy.render(configFor(topo({ sticky: true }), all.map((x) => x.member())));
    expect(JSON.parse(text.split('\n').filter((l) => !l.startsWith('#')).join('\n')).http.services.web_dynamic.loadBalancer.sticky).toEqual({
      cookie: { name, httpOnly: false, secure: false },
    });
    const c = h.client({ connection: 'new', cookies: true });
    const rs: ProbeResponse[] = [];
    for (let i = 0; i < 8; i++) rs.push(await c.get('/'));
    const pinned = all.find((x) => x.name === rs[0].servedBy) as Backend;
    expect(rs.map((r) => r.servedBy)).toEqual(Array(8).fill(pinned.name));
    expect(new Set(rs.map((r) => r.localPort)).size).toBe(8);
    expect(setCookies(rs[0])).toEqual([`${name}=${cookieValue(pinned)}; Path=/`]);
    for (const r of rs.slice(1)) expect(setCookies(r)).toEqual([]);
    expect(h.events[0].stickyCookie).toBe(`${name}=${cookieValue(pinned)}; Path=/`);
    for (const e of h.events.slice(1)) expect(e.stickyCookie).toBe(`${name}=${cookieValue(pinned)}`);
  });

  it('without a cookie jar every request is balanced again and gets a new cookie', async () => {
    const all = await startBackends('a', 'b', 'c');
    const h = await startProxy(configFor(topo({ sticky: true }), all.map((x) => x.member())));
    const c = h.client({ cookies: false });
    const rs: ProbeResponse[] = [];
    for (let i = 0; i < 6; i++) rs.push(await c.get('/'));
    expect(rs.map((r) => r.servedBy)).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
    for (const r of rs) {
      const b = all.find((x) => x.name === r.servedBy) as Backend;
      expect(setCookies(r)).toEqual([`${name}=${cookieValue(b)}; Path=/`]);
    }
  });

  it('re-pins and rewrites the cookie when the pinned server leaves the pool; a deleted cookie re-pins elsewhere', async () => {
    const all = await startBackends('a', 'b', 'c');
    const t = topo({ sticky: true });
    const h = await startProxy(configFor(t, all.map((x) => x.member())));
    const c = h.client({ connection: 'new', cookies: true });
    const first = await c.get('/');
    const pinned = all.find((x) => x.name === first.servedBy) as Backend;
    expect(await servedBy(c, 3)).toEqual(Array(3).fill(pinned.name));

    await h.proxy.apply(configFor(t, all.filter((x) => x !== pinned).map((x) => x.member())));
    const moved = await c.get('/');
    const now = all.find((x) => x.name === moved.servedBy) as Backend;
    expect(now).toBeDefined();
    expect(now).not.toBe(pinned);
    expect(setCookies(moved)).toEqual([`${name}=${cookieValue(now)}; Path=/`]);
    expect(await c.jar?.getCookieString(h.baseUrl)).toBe(`${name}=${cookieValue(now)}`);
    const after = [];
    for (let i = 0; i < 3; i++) after.push(await c.get('/'));
    expect(after.map((r) => r.servedBy)).toEqual(Array(3).fill(now.name));
    expect(after.flatMap(setCookies)).toEqual([]);

    await c.jar?.removeAllCookies();
    const fresh = await c.get('/');
    expect(fresh.servedBy).not.toBe(now.name);
    expect(setCookies(fresh)).toEqual([`${name}=${cookieValue(all.find((x) => x.name === fresh.servedBy) as Backend)}; Path=/`]);
  });

  it('re-pins an unknown or invalid cookie value; honours and rewrites an older Traefik cookie (the raw server URL)', async () => {
    const all = await startBackends('a', 'b', 'c');
    const h = await startProxy(configFor(topo({ sticky: true }), all.map((x) => x.member())));
    const c = h.client();
    for (const value of ['nonsense', '0123456789abcdef', '']) {
      const r = await c.get('/', { headers: { Cookie: `${name}=${value}` } });
      const b = all.find((x) => x.name === r.servedBy) as Backend;
      expect(setCookies(r)).toEqual([`${name}=${cookieValue(b)}; Path=/`]);
    }
    const c3 = all[2];
    const legacy = await c.get('/', { headers: { Cookie: `other=1; ${name}=${c3.url}` } });
    expect(legacy.servedBy).toBe('c');
    expect(setCookies(legacy)).toEqual([`${name}=${cookieValue(c3)}; Path=/`]);
    // The current format, sent by hand, is honoured without a new cookie.
    const current = await c.get('/', { headers: { Cookie: `${name}=${cookieValue(c3)}` } });
    expect(current.servedBy).toBe('c');
    expect(setCookies(current)).toEqual([]);
  });

  it('writes the configured name and attributes, and keeps the backend’s own cookies after its own', async () => {
    const [a] = await startBackends('a');
    const named = configFor(topo({ sticky: true, stickyCookie: 'lab_sticky' }), [a.member()]);
    const h = await startProxy(named);
    const c = h.client();
    const plain = await c.get('/session');
    expect(setCookies(plain)).toEqual([`lab_sticky=${cookieValue(a)}; Path=/`, 'PHPSESSID=abc123; path=/']);

    const flagged = structuredClone(named);
    const lb = flagged.services.find((s) => s.name === 'web_dynamic')?.loadBalancer;
    if (!lb?.sticky) throw new Error('sticky expected in the config');
    lb.sticky.cookie = { name: 'lab_sticky', httpOnly: true, secure: true, sameSite: 'strict' };
    await h.proxy.apply(flagged);
    expect(setCookies(await c.get('/'))).toEqual([`lab_sticky=${cookieValue(a)}; Path=/; HttpOnly; Secure; SameSite=Strict`]);
    lb.sticky.cookie = { name: 'lab_sticky', httpOnly: false, secure: false, sameSite: 'lax' };
    await h.proxy.apply(flagged);
    expect(setCookies(await c.get('/'))).toEqual([`lab_sticky=${cookieValue(a)}; Path=/; SameSite=Lax`]);
  });

  it('apply() turns stickiness on and off live', async () => {
    const all = await startBackends('a', 'b', 'c');
    const members = all.map((x) => x.member());
    const h = await startProxy(configFor(topo(), members));
    const c = h.client({ cookies: true });
    const before = [];
    for (let i = 0; i < 3; i++) before.push(await c.get('/'));
    expect(before.map((r) => r.servedBy)).toEqual(['a', 'b', 'c']);
    expect(before.flatMap(setCookies)).toEqual([]);
    expect(h.events.every((e) => e.stickyCookie === undefined)).toBe(true);

    await h.proxy.apply(configFor(topo({ sticky: true }), members));
    const on = await servedBy(c, 4);
    expect(new Set(on).size).toBe(1);

    await h.proxy.apply(configFor(topo(), members));
    expect(new Set(await servedBy(c, 3))).toEqual(new Set(['a', 'b', 'c']));
  });
});

describe('EmbeddedProxy: hashing a header (HAProxy balance hdr())', () => {
  it('sends the same X-Session-ID to the same server every time; without it, round-robin', async () => {
    const all = await startBackends('h1', 'h2', 'h3', 'h4');
    const h = await startProxy(configFor(topo({ algorithm: 'hash' }), all.map((x) => x.member())));
    const c = h.client();
    const owners = new Set<string>();
    for (const id of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) {
      const seq = await servedBy(c, 5, '/', { 'X-Session-ID': id });
      expect(new Set(seq).size).toBe(1);
      owners.add(seq[0]);
    }
    expect(owners.size).toBeGreaterThan(1);
    const without = await servedBy(c, 8);
    expect(without.slice(0, 4).sort()).toEqual(['h1', 'h2', 'h3', 'h4']);
    expect(without.slice(4)).toEqual(without.slice(0, 4));
  });

  async function movement(hashType: 'consistent' | 'map-based'): Promise<{ moved: number; toNew: number }> {
    const all = await startBackends('h1', 'h2', 'h3', 'h4', 'h5');
    const t = topo({ algorithm: 'hash', hashType });
    const h = await startProxy(configFor(t, all.slice(0, 4).map((x) => x.member())));
    const c = h.client();
    const ids = Array.from({ length: 100 }, (_, i) => `user-${i}`);
    const before: Array<string | null> = [];
    for (const id of ids) before.push((await c.get('/', { headers: { 'X-Session-ID': id } })).servedBy);
    await h.proxy.apply(configFor(t, all.map((x) => x.member())));
    const after: Array<string | null> = [];
    for (const id of ids) after.push((await c.get('/', { headers: { 'X-Session-ID': id } })).servedBy);
    expect(new Set(before).size).toBe(4);
    expect(new Set(after)).toContain('h5');
    const moved = ids.filter((_, i) => before[i] !== after[i]);
    return { moved: moved.length, toNew: ids.filter((_, i) => before[i] !== after[i] && after[i] === 'h5').length };
  }

  it('consistent: adding a 5th server moves fewer than 40 of 100 ids, only to the new server', async () => {
    const r = await movement('consistent');
    expect(r.moved).toBeGreaterThan(0);
    expect(r.moved).toBeLessThan(40);
    expect(r.toNew).toBe(r.moved);
  });

  it('map-based: adding a 5th server moves more than 50 of 100 ids', async () => {
    const r = await movement('map-based');
    expect(r.moved).toBeGreaterThan(50);
  });
});
