/**
 * The ProxyDriver contract: one suite, run against every proxy driver present here (engines.ts
 * DRIVERS: embedded always; haproxy when its binary is found; haproxy-container, HAProxy in a
 * Docker container, when Docker answers and its image builds; else skipped with the reason printed), in front of
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
import { EventBus, type HealthcheckProbed, type LabEventName, type LabEvents, type RequestCompleted } from '../../lab/events.ts';
import { ProbeClient, type ProbeResponse } from '../../lab/probe-client.ts';
import { buildProxyConfig, type PoolMember } from '../../lab/proxy/config.ts';
import { ProcessRuntime } from '../../lab/runtime/process-runtime.ts';
import type { ProxyConfig, ProxyDriver, ReplicaHandle } from '../../lab/seams.ts';
import { Topology, type Balancer } from '../../lab/topology.ts';
// web_dynamic's Express app, exported so tests can serve it in-process.
import { createApp } from '../../sandbox-images/web_dynamic/server.js';
import { DRIVERS } from './engines.ts';
import { nextEvent as nextBusEvent } from '../support/events.ts';

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

// ------------------------------------------------------------------ health check events, health kept across applies, sticky drain

/**
 * What a health check lets a lesson show, by capabilities: probe events for every server (about one
 * per interval; failed ones for a killed replica), an ejected replica that stays out when another
 * setting changes (HAProxy reloads for that: its server-state file keeps the server DOWN), and a
 * drain that re-pins sticky clients. Each scenario starts its own replicas (`web_dynamic-4N-hx`).
 */
DRIVERS.forEach((dc, i) => {
  const avail = availability[i];
  (avail.ok ? describe : describe.skip)(`ProxyDriver contract, probes and drain: ${dc.name}`, () => {
    let bus: EventBus;
    let driver: ProxyDriver;
    let base: string;
    const clients: ProbeClient[] = [];
    const started: string[] = [];
    let seq = 0;
    const I = 300;
    const CHECK = { healthCheck: true, healthCheckInterval: I, healthCheckTimeout: 200, healthCheckFall: 2, healthCheckRise: 1 } as const;

    function client(cookies = false): ProbeClient {
      const c = new ProbeClient({ baseUrl: base, connection: 'reuse', cookies });
      clients.push(c);
      return c;
    }

    function skipUnless(ctx: { skip: (note?: string) => void }, cap: keyof ProxyDriver['capabilities']): void {
      if (!driver.capabilities[cap]) {
        console.warn(`proxy-driver contract: ${dc.name}: skipped, capabilities.${cap} is false`);
        ctx.skip(`${dc.name} does not declare ${cap}`);
      }
    }

    async function replica(): Promise<ReplicaHandle> {
      const hostname = `web_dynamic-${40 + ++seq}-hx`;
      const h = await runtime.start({ service: 'web_dynamic', hostname }, { onLog: () => {}, onExit: () => {} });
      started.push(hostname);
      return h;
    }

    /** The next event of `name` that `match`es, or a rejection saying what was awaited (and on which driver) after `ms`. */
    const nextEvent = <K extends LabEventName>(name: K, match: (p: LabEvents[K]) => boolean, ms: number, what: string) =>
      nextBusEvent(bus, name, match, ms, `${what} (${dc.name})`);

    beforeAll(async () => {
      bus = new EventBus();
      driver = dc.create(bus, path.join(root, `${dc.name}-hx`));
      base = `http://127.0.0.1:${await driver.start(configFor(first(2)))}`;
    });

    afterAll(async () => {
      for (const c of clients.splice(0)) c.close();
      const pids = dc.pids(driver);
      await driver?.stop();
      for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
      for (const h of started) await runtime.stop(h, { signal: 'SIGKILL' });
    });

    it('probe events: each server about once per interval (ok, 200); a killed replica\'s probes fail (no status), it is ejected and stays out when another setting changes', async (ctx) => {
      skipUnless(ctx, 'activeHealthCheck');
      const v = await replica();
      const pool = [...first(2), member(v)];
      const probes: HealthcheckProbed[] = [];
      const off = bus.on('healthcheck:probed', (p) => probes.push(p));
      try {
        await driver.apply(configFor(pool, CHECK));
        const of = (h: string) => probes.filter((p) => p.replica === h);
        await nextEvent('healthcheck:probed', () => pool.every((x) => of(x.hostname).length >= 4), 20 * I + 10_000, 'four probes of each server');
        for (const m of pool) {
          const ps = of(m.hostname).slice(0, 4);
          for (const p of ps) expect(p).toMatchObject({ service: 'web_dynamic', ok: true, status: 200 });
          // About one per interval: never a flood, never a long silence (a loaded machine: slack).
          for (let k = 1; k < ps.length; k++) {
            expect(ps[k].at - ps[k - 1].at).toBeGreaterThanOrEqual(I / 2);
            expect(ps[k].at - ps[k - 1].at).toBeLessThanOrEqual(3 * I + 1500);
          }
        }

        const killedAt = Date.now();
        const out = nextEvent('replica:health-changed', (h) => h.hostname === v.hostname && !h.healthy, 10 * I + 10_000, `${v.hostname} ejected`);
        out.catch(() => undefined); // awaited below; a failure before that must not be unhandled
        const failed = nextEvent('healthcheck:probed', (p) => p.replica === v.hostname && !p.ok, 10 * I + 10_000, `a failed probe of ${v.hostname}`);
        await runtime.stop(v.hostname, { signal: 'SIGKILL' });
        const f = await failed;
        expect(f).toMatchObject({ status: null });
        // Refused once the port is closed; a probe caught in flight by the kill is reset instead.
        expect(f.error).toMatch(/ECONNREFUSED|refused|reset/i);
        const down = await out;
        console.info(`proxy-driver contract: ${dc.name}: probes every ${I} ms; killed replica ejected after ${down.at - killedAt} ms`);

        // Another setting changes (sticky on: HAProxy reloads): the ejected replica stays out.
        const backIn = bus.once('replica:health-changed', (h) => h.hostname === v.hostname && h.healthy);
        let cameBack = false;
        void backIn.then(() => (cameBack = true));
        await driver.apply(configFor(pool, { ...CHECK, sticky: true }));
        const res: ProbeResponse[] = [];
        const c = client();
        for (let k = 0; k < 12; k++) res.push(await c.get('/api/'));
        expect(res.map((r) => r.status)).toEqual(Array(12).fill(200));
        expect(res.map((r) => r.servedBy)).not.toContain(v.hostname);
        expect(cameBack).toBe(false);
      } finally {
        off();
        await driver.apply(configFor(first(2)));
      }
    });

    it('drain with a sticky cookie: the pinned client is re-pinned elsewhere and its cookie rewritten; drained() resolves', async (ctx) => {
      skipUnless(ctx, 'stickyCookie');
      const STICKY = { sticky: true, stickyCookie: 'lab_sticky' } as const;
      await driver.apply(configFor(first(3), STICKY));
      const c = client(true);
      const pinned = (await c.get('/api/')).servedBy!;
      for (let k = 0; k < 3; k++) expect((await c.get('/api/')).servedBy).toBe(pinned);
      await driver.apply(configFor(first(3).map((m) => (m.hostname === pinned ? { ...m, state: 'drain' as const } : m)), STICKY));
      const moved = await c.get('/api/');
      expect(moved.status).toBe(200);
      expect(moved.servedBy).not.toBe(pinned);
      expect(moved.headers['set-cookie']?.[0]).toMatch(/^lab_sticky=/);
      for (let k = 0; k < 3; k++) expect((await c.get('/api/')).servedBy).toBe(moved.servedBy);
      expect(await driver.drained(pinned, 10_000)).toBe(true);
      await driver.apply(configFor(first(2)));
    });
  });
});

// ------------------------------------------------------------------ failures: health check, retry, drain

/**
 * The claims of the health-checks lesson, per driver, by capabilities: a replica crashed
 * (BackendRuntime.crash: SIGKILL) or put in a fault (BackendRuntime.setFault) behind a steady
 * request loop. Each scenario starts its own victim replicas; the shared replicas only ever answer
 * normally. A driver that declares `activeHealthCheck` must emit `replica:health-changed` when its
 * check takes a server out and when it puts it back: the ejection time is read from that event.
 * Traefik's semantics (the embedded proxy): one failed probe ejects, one good probe re-adds;
 * HAProxy's: `fall` consecutive failures `inter` apart eject, `rise` good ones re-add.
 */
let victimSeq = 0;

/** A steady request loop on one client until stop(): every answer with when it was sent and came back. */
function steadyLoop(c: ProbeClient) {
  let running = true;
  const answers: Array<{ status: number; servedBy: string | null; sentAt: number; doneAt: number; error?: string }> = [];
  const waiters: Array<{ test: () => boolean; resolve: () => void }> = [];
  const done = (async () => {
    while (running) {
      const sentAt = Date.now();
      try {
        const r = await c.get('/api/', { timeoutMs: 15_000 });
        answers.push({ status: r.status, servedBy: r.servedBy, sentAt, doneAt: Date.now() });
      } catch (err) {
        answers.push({ status: 0, servedBy: null, sentAt, doneAt: Date.now(), error: (err as Error).message });
      }
      for (const w of waiters.filter((x) => x.test())) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  })();
  return {
    answers,
    until(test: () => boolean): Promise<void> {
      return test() ? Promise.resolve() : new Promise((resolve) => waiters.push({ test, resolve }));
    },
    async stop() {
      running = false;
      await done;
    },
  };
}

/** Resolves with `p`, or rejects with a sentence once `ms` have passed without it. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

DRIVERS.forEach((dc, i) => {
  const avail = availability[i];
  (avail.ok ? describe : describe.skip)(`ProxyDriver contract, failures: ${dc.name}`, () => {
    let bus: EventBus;
    let driver: ProxyDriver;
    const clients: ProbeClient[] = [];
    const victims: string[] = [];
    let base: string;

    function client(connection: 'reuse' | 'new' = 'reuse'): ProbeClient {
      const c = new ProbeClient({ baseUrl: base, connection });
      clients.push(c);
      return c;
    }

    function needs(ctx: { skip: (note?: string) => void }, cap: keyof ProxyDriver['capabilities']): void {
      if (!driver.capabilities[cap]) {
        console.warn(`proxy-driver contract: ${dc.name}: skipped, capabilities.${cap} is false`);
        ctx.skip(`${dc.name} does not declare ${cap}`);
      }
    }

    /** A fresh web_dynamic replica for one scenario (optionally at a given address and name). */
    async function victim(at?: { port: number; hostname: string }): Promise<ReplicaHandle> {
      const hostname = at?.hostname ?? `web_dynamic-${20 + ++victimSeq}-dead`;
      const h = await runtime.start(
        { service: 'web_dynamic', hostname, ...(at ? { port: at.port } : {}) },
        { onLog: () => {}, onExit: () => {} },
      );
      victims.push(hostname);
      return h;
    }

    /** Health transitions the driver reports, and a way to await one. */
    function healthEvents() {
      const items: Array<{ hostname: string; healthy: boolean; at: number }> = [];
      const waiters: Array<{ test: (e: (typeof items)[number]) => boolean; resolve: (e: (typeof items)[number]) => void }> = [];
      const off = bus.on('replica:health-changed', (e) => {
        items.push(e);
        for (const w of waiters.filter((x) => x.test(e))) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(e);
        }
      });
      return {
        items,
        off,
        next(test: (e: (typeof items)[number]) => boolean, ms: number, what: string) {
          const seen = items.find(test);
          return seen ? Promise.resolve(seen) : within(new Promise<(typeof items)[number]>((resolve) => waiters.push({ test, resolve })), ms, what);
        },
      };
    }

    beforeAll(async () => {
      bus = new EventBus();
      driver = dc.create(bus, path.join(root, `${dc.name}-failures`));
      base = `http://127.0.0.1:${await driver.start(configFor(first(2)))}`;
    });

    afterAll(async () => {
      for (const c of clients.splice(0)) c.close();
      await driver?.stop();
      for (const h of victims) await runtime.stop(h, { signal: 'SIGKILL' });
    });

    it('crash with no health check: about 1 request in 3 fails (502/503) over 30 requests, for as long as the replica stays in the pool', async (ctx) => {
      needs(ctx, 'roundRobin');
      const v = await victim();
      await driver.apply(configFor([...first(2), member(v)]));
      const c = client('new');
      const warm = [];
      for (let k = 0; k < 3; k++) warm.push((await c.get('/api/')).servedBy);
      expect(warm).toContain(v.hostname);
      await runtime.crash(v.hostname);
      const got: Array<{ status: number; servedBy: string | null }> = [];
      const t0 = Date.now();
      for (let k = 0; k < 30; k++) {
        const r = await c.get('/api/', { timeoutMs: 15_000 });
        got.push({ status: r.status, servedBy: r.servedBy });
      }
      const failed = got.filter((r) => r.status !== 200);
      console.info(`proxy-driver contract: ${dc.name}: no health check, one of 3 replicas crashed: ${failed.length}/30 failed (${[...new Set(failed.map((f) => f.status))].join(', ')}) over ${Date.now() - t0} ms`);
      expect(failed.length).toBeGreaterThanOrEqual(7);
      expect(failed.length).toBeLessThanOrEqual(13);
      for (const f of failed) expect([502, 503]).toContain(f.status);
      for (const r of got.filter((x) => x.status === 200)) expect(first(2).map((m) => m.hostname)).toContain(r.servedBy);
    });

    it('crash with a health check (interval I): failures stop at the ejection, within I + timeout (+ (fall-1) x I where fall counts); back on its port, the replica is re-added', async (ctx) => {
      needs(ctx, 'activeHealthCheck');
      const I = 300;
      const TIMEOUT = 200;
      const FALL = 2;
      const SLACK = 1500; // a loaded 2-core machine
      const check = { healthCheck: true, healthCheckInterval: I, healthCheckTimeout: TIMEOUT, healthCheckFall: FALL, healthCheckRise: 1 } as const;
      // Traefik (embedded) has no fall: one failed probe ejects. HAProxy waits for `fall` of them.
      const fallWait = dc.engine === 'haproxy' ? (FALL - 1) * I : 0;
      const health = healthEvents();
      try {
        const v = await victim();
        await driver.apply(configFor([...first(2), member(v)], check));
        const loop = steadyLoop(client('reuse'));
        await loop.until(() => loop.answers.some((a) => a.servedBy === v.hostname));
        const crashAt = Date.now();
        await runtime.crash(v.hostname);
        const out = await health.next((e) => e.hostname === v.hostname && !e.healthy, I + TIMEOUT + fallWait + 10_000, `${v.hostname} ejected`);
        await loop.until(() => loop.answers.filter((a) => a.sentAt > out.at + 250).length >= 20);

        const failures = loop.answers.filter((a) => a.status !== 200);
        const window = failures.length ? `${Math.min(...failures.map((f) => f.sentAt)) - crashAt}..${Math.max(...failures.map((f) => f.sentAt)) - crashAt} ms` : 'none';
        console.info(`proxy-driver contract: ${dc.name}: check every ${I} ms, crash -> ejection ${out.at - crashAt} ms, ${failures.length} failed requests sent ${window} after the crash`);
        expect(out.at - crashAt).toBeLessThanOrEqual(I + TIMEOUT + fallWait + SLACK);
        for (const f of failures) {
          expect([0, 502, 503]).toContain(f.status);
          expect(f.sentAt).toBeGreaterThanOrEqual(crashAt);
          // The last failure was sent before the ejection (a little slack for drivers that learn it from a log).
          expect(f.sentAt).toBeLessThanOrEqual(out.at + 250);
        }
        // No lower bound on the failures: the crash may fall just before a probe (the no-check scenario shows them).
        const after = loop.answers.filter((a) => a.sentAt > out.at + 250);
        expect(after.every((a) => a.status === 200 && a.servedBy !== v.hostname)).toBe(true);

        // The same replica back at the same address (a static server list, as Traefik's file provider):
        // the check re-adds it without any apply().
        await victim({ port: v.port, hostname: v.hostname });
        const back = await health.next((e) => e.hostname === v.hostname && e.healthy && e.at > out.at, I + TIMEOUT + 10_000, `${v.hostname} re-added`);
        await loop.until(() => loop.answers.some((a) => a.sentAt > back.at && a.servedBy === v.hostname));
        await loop.stop();
        expect(loop.answers.filter((a) => a.sentAt > back.at).every((a) => a.status === 200)).toBe(true);
      } finally {
        health.off();
      }
    });

    it('retry hides a crashed replica completely (0 failures in 30 requests) but not one answering 500', async (ctx) => {
      needs(ctx, 'retry');
      const RETRY = { retry: true, retryAttempts: 3 } as const;
      const v = await victim();
      await driver.apply(configFor([...first(2), member(v)], RETRY));
      const warm = client('new');
      const seen = [];
      for (let k = 0; k < 3; k++) seen.push((await warm.get('/api/')).servedBy);
      expect(seen).toContain(v.hostname);
      await runtime.crash(v.hostname);
      const events = driver.capabilities.perRequestEvents ? collect(bus, 30, (r) => r.path === '/api/') : null;
      const got: ProbeResponse[] = [];
      for (const mode of ['reuse', 'new'] as const) {
        const c = client(mode);
        for (let k = 0; k < 15; k++) got.push(await c.get('/api/', { timeoutMs: 15_000 }));
      }
      expect(got.map((r) => r.status)).toEqual(Array(30).fill(200));
      for (const r of got) expect(first(2).map((m) => m.hostname)).toContain(r.servedBy);
      if (events) {
        const ev = await events;
        const retried = ev.filter((e) => e.retried);
        console.info(`proxy-driver contract: ${dc.name}: retry hid a crashed replica: ${retried.length}/30 requests were retried`);
        expect(retried.length).toBeGreaterThanOrEqual(5);
        for (const e of retried) expect(first(2).map((m) => m.hostname)).toContain(e.replica);
      }

      // A replica that answers 500 is reached: its answers are not retried.
      const e500 = await victim();
      await runtime.setFault(e500.hostname, { mode: 'errors' });
      await driver.apply(configFor([...first(2), member(e500)], RETRY));
      const c = client('reuse');
      const answers: ProbeResponse[] = [];
      for (let k = 0; k < 12; k++) answers.push(await c.get('/api/'));
      const errors = answers.filter((r) => r.status === 500);
      expect(errors.length).toBeGreaterThanOrEqual(3);
      expect(errors.length).toBeLessThanOrEqual(5);
      for (const r of errors) expect(r.servedBy).toBe(e500.hostname);
      await driver.apply(configFor(first(2)));
    });

    it('drain under load: requests in flight on the drained replica finish (200), none new reaches it, drained() resolves, then it leaves: zero failed requests', async () => {
      const v = await victim();
      await runtime.setFault(v.hostname, { mode: 'slow', ms: 2000 });
      await driver.apply(configFor([...first(2), member(v)]));
      const loops = [steadyLoop(client('reuse')), steadyLoop(client('new'))];
      // Wait until a request is in flight on the slow replica (drained() answers false at once then).
      await within(
        (async () => {
          while (await driver.drained(v.hostname, 0)) await new Promise((resolve) => setImmediate(resolve));
        })(),
        20_000,
        `a request in flight on ${v.hostname}`,
      );
      await driver.apply(configFor([...first(2), { ...member(v), state: 'drain' }]));
      const drainedFrom = Date.now();
      expect(await driver.drained(v.hostname, 20_000)).toBe(true);
      const drainedAt = Date.now();
      // The replica leaves the pool and stops (a rolling redeploy's step); traffic goes on.
      await driver.apply(configFor(first(2)));
      await runtime.stop(v.hostname);
      const n = loops.map((l) => l.answers.length);
      await Promise.all(loops.map((l, k) => l.until(() => l.answers.length >= n[k] + 5)));
      await Promise.all(loops.map((l) => l.stop()));

      const all = loops.flatMap((l) => l.answers);
      console.info(`proxy-driver contract: ${dc.name}: drain: ${all.length} requests, drained after ${drainedAt - drainedFrom} ms`);
      expect(all.filter((a) => a.status !== 200)).toEqual([]);
      // The request in flight when the drain began finished on the drained replica.
      expect(all.some((a) => a.servedBy === v.hostname && a.sentAt < drainedFrom && a.doneAt >= drainedFrom)).toBe(true);
      // No request sent after the drain reached it.
      expect(all.filter((a) => a.sentAt > drainedFrom && a.servedBy === v.hostname)).toEqual([]);
    });
  });
});
