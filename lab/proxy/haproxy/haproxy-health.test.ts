/**
 * HaproxyDriver's health checks, retry and drain against the real haproxy binary and small
 * in-process HTTP backends that the test kills (closes) and brings back on the same port.
 * Skipped, with the reason printed, where haproxy is missing. No fixed sleeps: every wait is for an
 * event or an answer, bounded by a deadline.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EventBus, type HealthcheckProbed, type LabEventName, type LabEvents, type ReplicaHealthChanged, type RequestCompleted } from '../../events.ts';
import { ProbeClient, type ProbeResponse } from '../../probe-client.ts';
import type { HealthCheck, ProxyConfig, ProxyService } from '../../seams.ts';
import { HaproxyDriver } from './haproxy-driver.ts';
import { parseShowStat } from './runtime-api.ts';
import { isAlive as alive } from '../../../test/support/processes.ts';
import { nextEvent as nextBusEvent } from '../../../test/support/events.ts';

const haproxy = await HaproxyDriver.available();
if (!haproxy.ok) console.warn(`haproxy-health.test.ts skipped: ${haproxy.reason}`);

/** A backend: answers with its name in X-Served-By; `/slow` is held until released; `mode` 500 answers 500 (not /health). */
interface Backend {
  name: string;
  port: number;
  server: http.Server | null;
  mode: 'ok' | '500' | 'hang';
  held: Array<() => void>;
  onHeld: (() => void) | null;
}

function listen(b: Backend, port = 0): Promise<void> {
  const server = http.createServer((req, res) => {
    res.setHeader('X-Served-By', b.name);
    if (req.url === '/api/slow') {
      b.held.push(() => res.end(JSON.stringify({ name: b.name, slow: true })));
      b.onHeld?.();
      return;
    }
    if (b.mode === 'hang' && req.url === '/health') return; // accepted, never answered
    if (b.mode === '500' && req.url !== '/health') res.statusCode = 500;
    res.end(JSON.stringify({ name: b.name }));
  });
  b.server = server;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      b.port = (server.address() as net.AddressInfo).port;
      resolve();
    });
  });
}

async function backend(name: string, mode: Backend['mode'] = 'ok'): Promise<Backend> {
  const b: Backend = { name, port: 0, server: null, mode, held: [], onHeld: null };
  await listen(b);
  return b;
}

/** Kills a backend: its port refuses connections from now on. */
async function kill(b: Backend): Promise<void> {
  const s = b.server!;
  b.server = null;
  const closed = new Promise<void>((resolve) => s.close(() => resolve()));
  s.closeAllConnections();
  await closed;
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const b = await backend('dead');
  await kill(b);
  return b.port;
}

/** A TCP server that accepts and resets every connection once the request arrives (no answer). */
async function resetter(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.once('data', () => s.resetAndDestroy());
    s.on('error', () => {});
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  };
}

const HC: HealthCheck = { path: '/health', intervalMs: 200, timeoutMs: 500, fall: 2, rise: 1 };

type Member = Backend | { name: string; port: number };

function config(members: Member[], lb: Partial<ProxyService['loadBalancer']> = {}, drained: string[] = []): ProxyConfig {
  return {
    entrypoint: { name: 'web', host: '127.0.0.1', port: 0 },
    routers: [{ name: 'api', pathPrefix: '/api/', stripPrefix: false, service: 'web_dynamic', priority: 17 }],
    services: [
      {
        name: 'web_dynamic',
        loadBalancer: {
          algorithm: 'round-robin',
          servers: members.map((m) => ({ name: m.name, url: `http://127.0.0.1:${m.port}`, weight: 1, ...(drained.includes(m.name) ? { state: 'drain' as const } : {}) })),
          ...lb,
        },
      },
    ],
  };
}

let root: string;
let n = 0;

beforeAll(() => {
  root = fs.mkdtempSync(path.join(tmpdir(), 'lab-hh-'));
});

afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

describe.skipIf(!haproxy.ok)('HaproxyDriver: health checks, retry, drain', () => {
  let bus: EventBus;
  let driver: HaproxyDriver;
  let requests: RequestCompleted[];
  let probes: HealthcheckProbed[];
  let changes: ReplicaHealthChanged[];
  const clients: ProbeClient[] = [];
  const servers: Backend[] = [];

  function client(cookies = false): ProbeClient {
    const c = new ProbeClient({ baseUrl: `http://127.0.0.1:${driver.port}`, connection: 'reuse', cookies });
    clients.push(c);
    return c;
  }

  async function make(name: string, mode: Backend['mode'] = 'ok'): Promise<Backend> {
    const b = await backend(name, mode);
    servers.push(b);
    return b;
  }

  async function started(c: ProxyConfig): Promise<void> {
    bus = new EventBus();
    requests = [];
    probes = [];
    changes = [];
    bus.on('request:completed', (r) => requests.push(r));
    bus.on('healthcheck:probed', (p) => probes.push(p));
    bus.on('replica:health-changed', (h) => changes.push(h));
    driver = new HaproxyDriver({ bus, workDir: path.join(root, `w${++n}`) });
    await driver.start(c);
  }

  /** The next event of `name` that `match`es, or a rejection after `ms`. */
  const next = <K extends LabEventName>(name: K, match: (p: LabEvents[K]) => boolean, ms = 10_000) => nextBusEvent(bus, name, match, ms);

  /** `show stat` rows of web_dynamic, by server name. */
  async function stat(): Promise<Map<string, ReturnType<typeof parseShowStat>[number]>> {
    return new Map(parseShowStat(await driver.runtimeCommand('show stat')).filter((r) => r.backend === 'web_dynamic').map((r) => [r.server, r]));
  }

  /** Resolves once `check()` is true, polling every 10 ms; rejects after `ms`. */
  async function until(check: () => boolean, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`not true within ${ms} ms: ${check.toString()}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  async function gets(c: ProbeClient, count: number, target = '/api/'): Promise<ProbeResponse[]> {
    const out: ProbeResponse[] = [];
    for (let i = 0; i < count; i++) out.push(await c.get(target, { timeoutMs: 10_000 }));
    return out;
  }

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const b of servers) for (const release of b.held.splice(0)) release();
    const cfg = driver?.configPath;
    const pids = [driver?.pid, driver?.workerPid].filter((p): p is number => typeof p === 'number');
    await driver?.stop();
    for (const pid of pids) expect(alive(pid)).toBe(false);
    // Nothing of the run is left in its work directory but haproxy.cfg.
    if (cfg) expect(fs.readdirSync(path.dirname(cfg))).toEqual(['haproxy.cfg']);
    for (const b of servers.splice(0)) if (b.server) await kill(b);
  });

  it(
    'a killed server with a check (inter 200 ms, fall 2, rise 1): 503s for at most about fall x inter + timeout, then skipped; ' +
      'probes observed; back in the rotation when it answers again',
    async () => {
      const [b1, b2, victim] = [await make('b1'), await make('b2'), await make('victim')];
      await started(config([b1, b2, victim], { healthCheck: HC }));
      expect(driver.capabilities).toMatchObject({ activeHealthCheck: true, retry: true });
      expect(driver.configText).toMatch(/server victim 127\.0\.0\.1:\d+ id \d+ weight 1 check inter 200ms fall 2 rise 1\n/);
      // HAProxy logs the first probe that moves the victim's health (1 of 2 -> 2 of 2): an exact probe event.
      await next('healthcheck:probed', (p) => p.replica === 'victim' && p.ok);
      const c = client();
      expect(new Set((await gets(c, 6)).map((r) => r.servedBy))).toEqual(new Set(['b1', 'b2', 'victim']));

      const t0 = Date.now();
      await kill(victim);
      const ejected = next('replica:health-changed', (h) => h.hostname === 'victim' && !h.healthy);
      let ejectedAt: number | null = null;
      void ejected.then((h) => (ejectedAt = h.at), () => undefined);
      const seen: { at: number; status: number; servedBy: string | null }[] = [];
      const deadline = Date.now() + 15_000;
      // Requests until the ejection, then 15 more.
      while (Date.now() < deadline) {
        const r = await c.get('/api/', { timeoutMs: 10_000 });
        seen.push({ at: Date.now(), status: r.status, servedBy: r.servedBy });
        if (ejectedAt !== null && seen.filter((s) => s.at > ejectedAt! + 50).length >= 15) break;
      }
      const down = await ejected;
      expect(down).toMatchObject({ service: 'web_dynamic', hostname: 'victim', port: victim.port, pid: null, healthy: false, reason: 'health check failed: ECONNREFUSED' });

      const failures = seen.filter((s) => s.status !== 200);
      const bound = HC.fall * HC.intervalMs + HC.timeoutMs + 1500;
      console.info(
        `haproxy health: ${failures.length} of ${seen.length} requests failed; ejected ${down.at - t0} ms after the kill, last failure ${failures.length ? failures.at(-1)!.at - t0 : '-'} ms (bound ${bound} ms)`,
      );
      expect(failures.length).toBeGreaterThan(0);
      for (const f of failures) expect(f).toMatchObject({ status: 503, servedBy: null });
      expect(failures.at(-1)!.at - t0).toBeLessThanOrEqual(bound);
      expect(down.at - t0).toBeLessThanOrEqual(bound);
      const after = seen.filter((s) => s.at > down.at + 50);
      expect(after.length).toBeGreaterThanOrEqual(10);
      for (const s of after) expect(s.status).toBe(200);
      expect(after.map((s) => s.servedBy)).not.toContain('victim');
      // Every answer has its request event (access-log lines come a moment after the answers).
      await until(() => requests.length >= 6 + seen.length);
      const failedEvents = requests.filter((r) => r.status === 503);
      expect(failedEvents.length).toBe(failures.length);
      for (const e of failedEvents) expect(e).toMatchObject({ replica: 'victim', error: 'server connection failed' });

      // The probes that took it out (HAProxy logs each one that moves the health counter)...
      const failedProbes = probes.filter((p) => p.replica === 'victim' && !p.ok && p.at >= t0 && p.at <= down.at + 1000);
      expect(failedProbes.length).toBeGreaterThanOrEqual(HC.fall);
      for (const p of failedProbes) expect(p).toMatchObject({ service: 'web_dynamic', status: null, error: 'ECONNREFUSED' });
      // ...then, DOWN and steady, one probe event per interval or so, read from `show stat`.
      const sampled: HealthcheckProbed[] = [];
      for (let i = 0; i < 3; i++) sampled.push(await next('healthcheck:probed', (p) => p.replica === 'victim' && p.at > (sampled.at(-1)?.at ?? down.at + 50)));
      for (const p of sampled) expect(p).toMatchObject({ ok: false, error: 'ECONNREFUSED' });
      for (let i = 1; i < sampled.length; i++) expect(sampled[i].at - sampled[i - 1].at).toBeGreaterThanOrEqual(HC.intervalMs * 0.9 - 20);
      // The healthy ones are probed too.
      const b1Probe = await next('healthcheck:probed', (p) => p.replica === 'b1' && p.at > down.at);
      expect(b1Probe, JSON.stringify(probes.filter((p) => p.replica === 'b1'))).toMatchObject({ ok: true, status: 200 });
      expect((await stat()).get('victim')).toMatchObject({ status: 'DOWN', checkStatus: 'L4CON' });

      // Back on the same port: one good probe (rise 1) and it takes requests again.
      const back = next('replica:health-changed', (h) => h.hostname === 'victim' && h.healthy);
      await listen(victim, victim.port);
      expect(await back).toMatchObject({ healthy: true, reason: 'health check passed' });
      expect(probes.some((p) => p.replica === 'victim' && p.ok && p.at > down.at)).toBe(true);
      const res = await gets(c, 6);
      expect(res.every((r) => r.status === 200)).toBe(true);
      expect(res.map((r) => r.servedBy)).toContain('victim');
      expect(changes.filter((h) => h.hostname === 'victim').map((h) => h.healthy)).toEqual([false, true]);
    },
  );

  it('a server whose /health hangs: probes time out (error `timeout`), it is ejected after fall x (inter + timeout) or so', async () => {
    const [b1, slow] = [await make('b1'), await make('hangs')];
    await started(config([b1, slow], { healthCheck: HC }));
    await next('healthcheck:probed', (p) => p.replica === 'hangs' && p.ok);
    const t0 = Date.now();
    slow.mode = 'hang';
    const down = await next('replica:health-changed', (h) => h.hostname === 'hangs' && !h.healthy);
    const bound = HC.fall * (HC.intervalMs + HC.timeoutMs) + 1500;
    console.info(`haproxy health: /health hanging, ejected ${down.at - t0} ms later (bound ${bound} ms)`);
    expect(down.at - t0).toBeLessThanOrEqual(bound);
    // At least one probe timed out before (the first one may have been in flight when the fault began).
    expect(down.at - t0).toBeGreaterThanOrEqual(HC.timeoutMs);
    expect(down.reason).toBe('health check failed: timeout');
    const timedOut = probes.filter((p) => p.replica === 'hangs' && !p.ok);
    expect(timedOut.length).toBeGreaterThanOrEqual(HC.fall);
    for (const p of timedOut) {
      expect(p).toMatchObject({ error: 'timeout', status: null });
      expect(p.ms).toBeGreaterThanOrEqual(HC.timeoutMs - 10);
    }
    // DOWN and steady, it is still probed (each probe lasts the timeout): sampled events keep coming.
    const later = await next('healthcheck:probed', (p) => p.replica === 'hangs' && p.at > down.at + 50);
    expect(later).toMatchObject({ ok: false, error: 'timeout' });
    expect((await gets(client(), 4)).map((r) => r.servedBy)).toEqual(['b1', 'b1', 'b1', 'b1']);
  });

  it('a server DOWN by health checks stays DOWN across a reload (server-state file): no request fails after it', async () => {
    const [b1, victim] = [await make('b1'), await make('victim')];
    await started(config([b1, victim], { healthCheck: HC }));
    const down = next('replica:health-changed', (h) => h.hostname === 'victim' && !h.healthy);
    await kill(victim);
    await down;
    const worker = driver.workerPid;
    // Retry on is a new backend setting: a reload.
    await driver.apply(config([b1, victim], { healthCheck: HC, retry: { attempts: 1 } }));
    expect(driver.workerPid).not.toBe(worker);
    expect((await stat()).get('victim')?.status).toBe('DOWN');
    const res = await gets(client(), 10);
    expect(res.map((r) => r.status)).toEqual(Array(10).fill(200));
    expect(changes.filter((h) => h.hostname === 'victim').map((h) => h.healthy)).toEqual([false]);
  });

  it('turning the check off puts a server that was out back in the rotation (health-changed, reason `health check off`)', async () => {
    const [b1, victim] = [await make('b1'), await make('victim')];
    await started(config([b1, victim], { healthCheck: HC }));
    const down = next('replica:health-changed', (h) => h.hostname === 'victim' && !h.healthy);
    await kill(victim);
    await down;
    const back = next('replica:health-changed', (h) => h.hostname === 'victim' && h.healthy);
    await driver.apply(config([b1, victim]));
    expect(await back).toMatchObject({ reason: 'health check off' });
    // Without a check HAProxy sends it requests again (and, without retry, they fail).
    const statuses = (await gets(client(), 4)).map((r) => r.status);
    expect(statuses.filter((s) => s === 503).length).toBe(2);
  });

  it('retry on (3 attempts): a closed port and a reset are hidden (0 failures, retried: true); a 500 is an answer, not retried', async () => {
    const [b1, b2, b500] = [await make('b1'), await make('b2'), await make('b500', '500')];
    const dead = { name: 'dead', port: await deadPort() };
    const reset = await resetter();
    try {
      await started(config([b1, dead, { name: 'reset', port: reset.port }, b2], { retry: { attempts: 3 } }));
      expect(driver.configText).toContain('  retries 2\n  option redispatch 1\n  retry-on conn-failure empty-response\n');
      const res = await gets(client(), 24);
      expect(res.map((r) => r.status)).toEqual(Array(24).fill(200));
      const retried = requests.filter((r) => r.retried);
      // Half of the picks land on the dead or resetting server: each of those is retried elsewhere.
      expect(retried.length).toBeGreaterThanOrEqual(8);
      for (const r of retried) expect(['b1', 'b2']).toContain(r.replica);
      expect(requests.every((r) => r.status === 200)).toBe(true);

      // A server answering 500: the 500 reaches the client (a third of the requests), never retried.
      requests.length = 0;
      await driver.apply(config([b1, b500, b2], { retry: { attempts: 3 } }));
      const more = await gets(client(), 9);
      expect(more.filter((r) => r.status === 500).map((r) => r.servedBy)).toEqual(['b500', 'b500', 'b500']);
      await until(() => requests.filter((r) => r.status === 500).length >= 3);
      const fives = requests.filter((r) => r.status === 500);
      expect(fives.length).toBe(3);
      for (const r of fives) expect(r.retried).toBeUndefined();
    } finally {
      await reset.close();
    }
  });

  it('retry off: a closed port gives a 503 at once (no retry, no 1 s turn-around)', async () => {
    const [b1, b2] = [await make('b1'), await make('b2')];
    const dead = { name: 'dead', port: await deadPort() };
    await started(config([b1, dead, b2]));
    expect(driver.configText).toMatch(/\n {2}retries 0\n/);
    const res = await gets(client(), 9);
    expect(res.map((r) => r.status).filter((s) => s === 503).length).toBe(3);
    await until(() => requests.length >= 9);
    const failed = requests.filter((r) => r.status === 503);
    expect(failed.length).toBe(3);
    for (const r of failed) {
      expect(r).toMatchObject({ replica: 'dead', error: 'server connection failed' });
      expect(r.retried).toBeUndefined();
      // HAProxy's default would wait 1 s before each of its 3 retries on the same server.
      expect(r.ms).toBeLessThan(900);
    }
  });

  it('drain (Runtime API, same worker): the request in flight finishes with 200, new ones skip the server, drained() resolves; ready again takes requests', async () => {
    const [slow, b2] = [await make('slow'), await make('b2')];
    await started(config([slow, b2]));
    const worker = driver.workerPid;
    // A request held on `slow`: round-robin sends one of two there.
    const heldSeen = new Promise<void>((resolve) => (slow.onHeld = resolve));
    const c1 = client();
    const c2 = client();
    const pending: Promise<ProbeResponse>[] = [c1.get('/api/slow', { timeoutMs: 20_000 }), c2.get('/api/slow', { timeoutMs: 20_000 })];
    await heldSeen;
    expect(await driver.drained('slow', 0)).toBe(false);

    await driver.apply(config([slow, b2], {}, ['slow']));
    expect(driver.workerPid).toBe(worker);
    expect((await stat()).get('slow')).toMatchObject({ status: 'DRAIN', scur: 1 });
    expect(await driver.drained('slow', 200)).toBe(false);
    const during = await gets(client(), 10);
    expect(during.map((r) => r.servedBy)).toEqual(Array(10).fill('b2'));

    const drained = driver.drained('slow', 10_000);
    for (const release of [...slow.held.splice(0), ...b2.held.splice(0)]) release();
    const results = await Promise.all(pending);
    expect(results.map((r) => r.status)).toEqual([200, 200]);
    expect(results.map((r) => r.servedBy).sort()).toEqual(['b2', 'slow']);
    expect(await drained).toBe(true);
    expect(await driver.drained('nobody', 0)).toBe(true);

    await driver.apply(config([slow, b2]));
    expect(driver.workerPid).toBe(worker);
    expect(new Set((await gets(client(), 4)).map((r) => r.servedBy))).toEqual(new Set(['slow', 'b2']));
  });

  it('drain with sticky sessions: the pinned client is re-pinned (new cookie); a drained server stays drained across a reload', async () => {
    const [a, b] = [await make('a'), await make('b')];
    const sticky = { sticky: { cookie: { name: 'LAB_STICKY', httpOnly: false, secure: false, sameSite: '' as const } } };
    await started(config([a, b], sticky));
    const c = client(true);
    const first = await c.get('/api/');
    const pinned = first.servedBy!;
    const other = pinned === 'a' ? 'b' : 'a';
    expect((await gets(c, 3)).map((r) => r.servedBy)).toEqual([pinned, pinned, pinned]);

    await driver.apply(config([a, b], sticky, [pinned]));
    const moved = await c.get('/api/');
    expect(moved.servedBy).toBe(other);
    expect(moved.headers['set-cookie']?.[0]).toMatch(new RegExp(`^LAB_STICKY=${other}`));
    expect((await gets(c, 3)).map((r) => r.servedBy)).toEqual([other, other, other]);
    // A client that still sends the old cookie is re-pinned too (its other cookies pass).
    const res = await client().get('/api/', { headers: { Cookie: `app=1; LAB_STICKY=${pinned}; x=2` } });
    expect(res.servedBy).toBe(other);

    // Health check on: a reload; the drained server starts drained in the new worker.
    const worker = driver.workerPid;
    await driver.apply(config([a, b], { ...sticky, healthCheck: HC }, [pinned]));
    expect(driver.workerPid).not.toBe(worker);
    expect((await stat()).get(pinned)?.status).toBe('DRAIN');
    expect((await gets(client(), 4)).map((r) => r.servedBy)).toEqual(Array(4).fill(other));
    expect(await driver.drained(pinned, 5000)).toBe(true);

    // Ready again: new clients reach it.
    await driver.apply(config([a, b], { ...sticky, healthCheck: HC }));
    expect(new Set((await gets(client(), 4)).map((r) => r.servedBy))).toEqual(new Set(['a', 'b']));
  });
});
