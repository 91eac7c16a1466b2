/**
 * The ProxyDriver contract: one suite, run against every proxy driver present here (embedded
 * always; haproxy when its binary is found, else skipped with the reason printed), in front of
 * real web_dynamic replica processes started through ProcessRuntime, with configurations built by
 * buildProxyConfig as the Lab builds them.
 *
 * Each scenario runs where the driver's `capabilities` declare the feature, and says so when it
 * does not. The least-connections scenario needs a request that stays in flight: its replicas are
 * web_dynamic's own app (createApp) served in this process, with one extra route, /slow, that
 * answers only when the test releases it.
 */
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventBus, type RequestCompleted } from '../../lab/events.ts';
import { ProbeClient, type ProbeResponse } from '../../lab/probe-client.ts';
import { buildProxyConfig, type PoolMember } from '../../lab/proxy/config.ts';
import { EmbeddedProxy } from '../../lab/proxy/embedded/embedded-proxy.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import { ProcessRuntime } from '../../lab/runtime/process-runtime.ts';
import type { ProxyConfig, ProxyDriver, ReplicaHandle } from '../../lab/seams.ts';
import { Topology, type Balancer } from '../../lab/topology.ts';
// web_dynamic's Express app, exported so tests can serve it in-process.
import { createApp } from '../../sandbox-images/web_dynamic/server.js';

interface DriverCase {
  name: ProxyDriver['name'];
  available(): Promise<{ ok: true; version: string } | { ok: false; reason: string }>;
  create(bus: EventBus, workDir: string): ProxyDriver;
  /** Process ids that must be gone once the driver stopped (none for the in-process proxy). */
  pids(driver: ProxyDriver): number[];
}

const DRIVERS: DriverCase[] = [
  {
    name: 'embedded',
    available: async () => ({ ok: true, version: `Node ${process.version}` }),
    create: (bus) => new EmbeddedProxy({ bus }),
    pids: () => [],
  },
  {
    name: 'haproxy',
    available: () => HaproxyDriver.available(),
    create: (bus, workDir) => new HaproxyDriver({ bus, workDir }),
    pids: (d) => [(d as HaproxyDriver).pid, (d as HaproxyDriver).workerPid].filter((p): p is number => p !== null),
  },
];
const availability = await Promise.all(DRIVERS.map((d) => d.available()));

const REPLICAS = 5;
/** Fixed hostnames: hash placements then do not depend on the run. */
const hostnameOf = (i: number) => `web_dynamic-${i + 1}-c0de`;

let root: string;
let runtime: ProcessRuntime;
let replicas: ReplicaHandle[];

beforeAll(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'lab-contract-'));
  runtime = new ProcessRuntime({ sessionId: `pd${process.pid}`, stateDir: path.join(root, 'state') });
  replicas = await Promise.all(
    Array.from({ length: REPLICAS }, (_, i) =>
      runtime.start({ service: 'web_dynamic', hostname: hostnameOf(i) }, { onLog: () => {}, onExit: () => {} }),
    ),
  );
  replicas.sort((a, b) => a.hostname.localeCompare(b.hostname));
});

afterAll(async () => {
  const pids = (replicas ?? []).map((r) => r.pid!);
  await runtime?.stopAll();
  for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  rmSync(root, { recursive: true, force: true });
});

function member(r: { hostname: string; host: string; port: number }, weight = 1): PoolMember {
  return { hostname: r.hostname, host: r.host, port: r.port, weight };
}

/**
 * The Lab's configuration for web_dynamic alone: `/api/` routed to it with the prefix stripped
 * (web_dynamic answers `GET /` with its hostname), with these pool members and balancer settings.
 */
function configFor(members: PoolMember[], balancer: Partial<Balancer> = {}): ProxyConfig {
  const topology = Topology.parse({
    services: { web_dynamic: { replicas: members.length } },
    routes: [{ service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true }],
    proxy: balancer,
  });
  return buildProxyConfig(topology, new Map([['web_dynamic', members]]), { name: 'web', host: '127.0.0.1', port: 0 });
}

const first = (n: number, weights: number[] = []) => replicas.slice(0, n).map((r, i) => member(r, weights[i] ?? 1));

/** Resolves with the next `n` request events that `match`, in order. */
function collect(bus: EventBus, n: number, match: (r: RequestCompleted) => boolean): Promise<RequestCompleted[]> {
  return new Promise((resolve) => {
    const got: RequestCompleted[] = [];
    const off = bus.on('request:completed', (r) => {
      if (!match(r)) return;
      got.push(r);
      if (got.length === n) {
        off();
        resolve(got);
      }
    });
  });
}

function count(hosts: (string | null)[]): Map<string | null, number> {
  const m = new Map<string | null, number>();
  for (const h of hosts) m.set(h, (m.get(h) ?? 0) + 1);
  return m;
}

/** An in-process web_dynamic whose `/slow` answers only once `release()` is called. */
interface SlowReplica {
  hostname: string;
  host: string;
  port: number;
  server: http.Server;
}

async function slowReplica(hostname: string, onHeld: (hostname: string, release: () => void) => void): Promise<SlowReplica> {
  const app = createApp({ hostname, log: false });
  const server = http.createServer((req, res) => {
    if (req.url === '/slow') {
      onHeld(hostname, () => {
        if (res.headersSent) return;
        res.setHeader('X-Served-By', hostname);
        res.end(JSON.stringify({ hostname, slow: true }));
      });
      return;
    }
    app(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { hostname, host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, server };
}

DRIVERS.forEach((dc, i) => {
  const avail = availability[i];
  if (!avail.ok) console.warn(`proxy-driver contract: ${dc.name} skipped: ${avail.reason}`);
  (avail.ok ? describe : describe.skip)(`ProxyDriver contract: ${dc.name}`, () => {
    let bus: EventBus;
    let driver: ProxyDriver;
    let base: string;
    const clients: ProbeClient[] = [];

    function client(connection: 'reuse' | 'new' = 'reuse', cookies = false): ProbeClient {
      const c = new ProbeClient({ baseUrl: base, connection, cookies });
      clients.push(c);
      return c;
    }

    async function hosts(c: ProbeClient, n: number, headers?: Record<string, string>): Promise<ProbeResponse[]> {
      const out: ProbeResponse[] = [];
      for (let k = 0; k < n; k++) {
        const res = await c.get('/api/', headers ? { headers } : {});
        expect(res.status).toBe(200);
        expect(JSON.parse(res.body).hostname).toBe(res.servedBy);
        out.push(res);
      }
      return out;
    }

    /** Skips (saying why) when the driver does not declare the capability. */
    function needs(ctx: { skip: (note?: string) => void }, cap: keyof ProxyDriver['capabilities']): void {
      if (!driver.capabilities[cap]) {
        console.warn(`proxy-driver contract: ${dc.name}: skipped, capabilities.${cap} is false`);
        ctx.skip(`${dc.name} does not declare ${cap}`);
      }
    }

    beforeAll(async () => {
      bus = new EventBus();
      driver = dc.create(bus, path.join(root, dc.name));
      const port = await driver.start(configFor(first(3)));
      base = `http://127.0.0.1:${port}`;
    });

    afterAll(async () => {
      for (const c of clients.splice(0)) c.close();
      if (!driver) return;
      const pids = dc.pids(driver);
      await driver.stop();
      for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
      const refused = await new Promise<boolean>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: Number(new URL(base).port) });
        s.once('connect', () => (s.destroy(), resolve(false)));
        s.once('error', () => resolve(true));
      });
      expect(refused).toBe(true);
    });

    it('round-robin: 9 requests on ONE keep-alive connection hit each of 3 replicas 3 times, in a repeating order; each is one request event', async (ctx) => {
      needs(ctx, 'roundRobin');
      await driver.apply(configFor(first(3)));
      const c = client('reuse');
      const events = driver.capabilities.perRequestEvents ? collect(bus, 9, (r) => r.path === '/api/' && r.service === 'web_dynamic') : null;
      const res = await hosts(c, 9);
      expect(new Set(res.map((r) => r.localPort)).size).toBe(1);
      const order = res.map((r) => r.servedBy!);
      const cycle = order.slice(0, 3);
      expect(new Set(cycle)).toEqual(new Set(first(3).map((m) => m.hostname)));
      expect(order).toEqual([...cycle, ...cycle, ...cycle]);
      if (events) {
        const ev = await events;
        expect(ev.map((e) => e.replica)).toEqual(order);
        expect(ev.map((e) => e.hostname)).toEqual(order);
        expect(new Set(ev.map((e) => e.clientConnId)).size).toBe(1);
        expect(ev.every((e) => e.status === 200 && e.router === 'web_dynamic' && e.upstreamConnId !== null)).toBe(true);
        for (let k = 1; k < ev.length; k++) expect(ev[k].id).toBeGreaterThan(ev[k - 1].id);
      }
    });

    it('weights 3:1:1: 50 requests split 3/5, 1/5, 1/5', async (ctx) => {
      needs(ctx, 'weights');
      const pool = first(3, [3, 1, 1]);
      await driver.apply(configFor(pool));
      const tally = count((await hosts(client(), 50)).map((r) => r.servedBy));
      expect(tally.get(pool[0].hostname)).toBeGreaterThanOrEqual(28);
      expect(tally.get(pool[0].hostname)).toBeLessThanOrEqual(32);
      for (const m of pool.slice(1)) {
        expect(tally.get(m.hostname)).toBeGreaterThanOrEqual(8);
        expect(tally.get(m.hostname)).toBeLessThanOrEqual(12);
      }
    });

    describe('sticky cookie', () => {
      const STICKY = { sticky: true, stickyCookie: 'lab_sticky' } as const;

      it('the first response sets the cookie; with a cookie jar every later request lands on that replica', async (ctx) => {
        needs(ctx, 'stickyCookie');
        await driver.apply(configFor(first(3), STICKY));
        const c = client('reuse', true);
        const [firstRes, ...rest] = await hosts(c, 9);
        expect(firstRes.headers['set-cookie']?.[0]).toMatch(/^lab_sticky=[^;]+; (?:path|Path)=\//);
        for (const r of rest) {
          expect(r.servedBy).toBe(firstRes.servedBy);
          expect(r.headers['set-cookie']).toBeUndefined();
        }
      });

      it('without a cookie jar it rotates (and sets the cookie every time)', async (ctx) => {
        needs(ctx, 'stickyCookie');
        await driver.apply(configFor(first(3), STICKY));
        const res = await hosts(client('reuse', false), 6);
        expect(new Set(res.map((r) => r.servedBy)).size).toBe(3);
        for (const r of res) expect(r.headers['set-cookie']?.[0]).toMatch(/^lab_sticky=/);
      });

      it('deleting the cookie re-pins; removing the pinned replica from the pool re-pins elsewhere and rewrites the cookie', async (ctx) => {
        needs(ctx, 'stickyCookie');
        await driver.apply(configFor(first(3), STICKY));
        const c = client('reuse', true);
        const [pinned] = await hosts(c, 2);
        await c.jar!.removeAllCookies();
        const [again, ...after] = await hosts(c, 4);
        expect(again.headers['set-cookie']?.[0]).toMatch(/^lab_sticky=/);
        for (const r of after) expect(r.servedBy).toBe(again.servedBy);
        expect(pinned.servedBy).toBeTruthy();

        const gone = again.servedBy!;
        const oldCookie = await c.jar!.getCookieString(base);
        await driver.apply(configFor(first(3).filter((m) => m.hostname !== gone), STICKY));
        const [moved, ...stays] = await hosts(c, 4);
        expect(moved.servedBy).not.toBe(gone);
        expect(moved.headers['set-cookie']?.[0]).toMatch(/^lab_sticky=/);
        expect(await c.jar!.getCookieString(base)).not.toBe(oldCookie);
        for (const r of stays) expect(r.servedBy).toBe(moved.servedBy);
      });
    });

    it('hashing X-Session-ID over 4 replicas: a 5th moves about 1/5 of 100 ids (consistent), most of them (map-based)', async (ctx) => {
      needs(ctx, 'headerHash');
      const ids = Array.from({ length: 100 }, (_, k) => `user-${k + 1}`);
      const placement = async (c: ProbeClient) => {
        const m = new Map<string, string>();
        for (const id of ids) m.set(id, (await hosts(c, 1, { 'X-Session-ID': id }))[0].servedBy!);
        return m;
      };
      const moved: Record<string, number> = {};
      for (const hashType of ['consistent', 'map-based'] as const) {
        const settings = { algorithm: 'hash', hashType, hashHeader: 'X-Session-ID' } as const;
        await driver.apply(configFor(first(4), settings));
        const c = client();
        const before = await placement(c);
        expect(new Set(before.values()).size).toBe(4);
        // The same id lands on the same replica again; without the header the requests are spread
        // (round-robin; HAProxy walks its hash tree for that, so not in pool order).
        for (const id of ids.slice(0, 10)) expect((await hosts(c, 1, { 'X-Session-ID': id }))[0].servedBy).toBe(before.get(id));
        expect(new Set((await hosts(c, 8)).map((r) => r.servedBy)).size).toBeGreaterThanOrEqual(2);

        await driver.apply(configFor(first(5), settings));
        const after = await placement(client());
        const movedIds = ids.filter((id) => after.get(id) !== before.get(id));
        moved[hashType] = movedIds.length;
        if (hashType === 'consistent') {
          // A ring: only the keys the new replica takes move, all of them to it.
          for (const id of movedIds) expect(after.get(id)).toBe(replicas[4].hostname);
        }
      }
      console.info(`proxy-driver contract: ${dc.name}: adding a 5th replica moved ${moved.consistent}/100 ids (consistent), ${moved['map-based']}/100 (map-based)`);
      expect(moved.consistent).toBeGreaterThan(0);
      expect(moved.consistent).toBeLessThan(45);
      expect(moved['map-based']).toBeGreaterThan(50);
    });

    it('least-connections: with a slow request in flight on one replica, the next requests go to the idle ones', async (ctx) => {
      needs(ctx, 'leastConnections');
      const held: { hostname: string | null; release: () => void } = { hostname: null, release: () => {} };
      let onHeld!: () => void;
      const heldSeen = new Promise<void>((resolve) => (onHeld = resolve));
      const slow = await Promise.all(
        ['slow-1', 'slow-2', 'slow-3'].map((h) =>
          slowReplica(h, (hostname, release) => {
            held.hostname = hostname;
            held.release = release;
            onHeld();
          }),
        ),
      );
      try {
        await driver.apply(configFor(slow.map((s) => member(s)), { algorithm: 'least-connections' }));
        const slowRes = client('new').get('/api/slow');
        await heldSeen;
        const busy = held.hostname;
        const res = await hosts(client(), 6);
        expect(res.map((r) => r.servedBy)).not.toContain(busy);
        expect(new Set(res.map((r) => r.servedBy)).size).toBe(2);
        held.release();
        const done = await slowRes;
        expect(done.status).toBe(200);
        expect(done.servedBy).toBe(busy);
      } finally {
        held.release();
        await driver.apply(configFor(first(3)));
        for (const s of slow) {
          s.server.closeAllConnections();
          await new Promise<void>((resolve) => s.server.close(() => resolve()));
        }
      }
    });

    it('a configuration the driver refuses leaves the running routing as it was', async () => {
      const good = configFor(first(3));
      await driver.apply(good);
      // buildProxyConfig refuses weights above 256 itself: the neutral config is changed by hand.
      const bad: ProxyConfig = structuredClone(good);
      bad.services[0].loadBalancer.servers[0].weight = 300;
      await expect(driver.apply(bad)).rejects.toThrow(/weight/);
      const res = await hosts(client(), 6);
      expect(new Set(res.map((r) => r.servedBy))).toEqual(new Set(first(3).map((m) => m.hostname)));

      // A router naming a service that does not exist: refused (haproxy -c), or accepted as a
      // router that answers 404 (Traefik disables such a router). Either way nothing else changes.
      const lost: ProxyConfig = structuredClone(good);
      lost.routers.unshift({ name: 'lost', pathPrefix: '/lost/', stripPrefix: false, service: 'nowhere', priority: 99 });
      const outcome = await driver.apply(lost).then(
        () => 'accepted',
        (err: Error) => err.message,
      );
      console.info(`proxy-driver contract: ${dc.name}: a router to a missing service was ${outcome === 'accepted' ? 'accepted (404 for it)' : `refused: ${outcome}`}`);
      if (outcome === 'accepted') expect((await client('new').get('/lost/')).status).toBe(404);
      else expect(outcome).toMatch(/nowhere/);
      expect(new Set((await hosts(client(), 3)).map((r) => r.servedBy))).toEqual(new Set(first(3).map((m) => m.hostname)));
    });

    it('a steady request loop (one keep-alive client, one new-connection client) loses no request during 5 applies', async () => {
      await driver.apply(configFor(first(3)));
      const caps = driver.capabilities;
      const sticky = caps.stickyCookie ? ({ sticky: true } as const) : {};
      const steps: ProxyConfig[] = [
        configFor(first(4)), // a replica joins
        configFor(first(4), sticky), // sticky on (HAProxy: a reload)
        configFor(first(4, caps.weights ? [2, 1, 1, 3] : []), sticky), // weights
        configFor(first(3, caps.weights ? [2, 1, 1] : []), sticky), // a replica leaves
        configFor(first(3)), // sticky off again
      ];
      let done = false;
      const failures: string[] = [];
      const statuses: number[] = [];
      const waiters: { n: number; resolve: () => void }[] = [];
      /** Resolves once `n` answers have come back in all. */
      const answered = (n: number) => new Promise<void>((resolve) => (statuses.length >= n ? resolve() : waiters.push({ n, resolve })));
      const loop = async (c: ProbeClient) => {
        while (!done) {
          try {
            const r = await c.get('/api/', { timeoutMs: 10_000 });
            statuses.push(r.status);
            if (r.status !== 200) failures.push(`HTTP ${r.status} from ${r.servedBy ?? 'the proxy'}`);
          } catch (err) {
            statuses.push(0);
            failures.push((err as Error).message);
          }
          for (const w of waiters.filter((x) => statuses.length >= x.n)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve();
          }
        }
      };
      const loops = [loop(client('reuse')), loop(client('new'))];
      // Let both loops get going, then change the configuration 5 times, with traffic after each.
      await answered(10);
      for (const step of steps) {
        await driver.apply(step);
        await answered(statuses.length + 5);
      }
      done = true;
      await Promise.all(loops);
      expect(failures).toEqual([]);
      expect(statuses.length).toBeGreaterThanOrEqual(35);
    });
  });
});
