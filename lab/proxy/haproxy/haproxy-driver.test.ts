/**
 * HaproxyDriver against the real haproxy binary and small in-process HTTP backends (each answers
 * with its name in X-Served-By and the request target it received). Skipped, with the reason
 * printed, where haproxy is missing. The proxy-level claims shared with other drivers are in
 * test/contract/proxy-driver.contract.test.ts.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EventBus, type LogLine, type RequestCompleted } from '../../events.ts';
import { ProbeClient } from '../../probe-client.ts';
import type { ProxyConfig, ProxyService } from '../../seams.ts';
import { stripPath } from '../config.ts';
import { HaproxyDriver } from './haproxy-driver.ts';
import { isAlive as alive } from '../../../test/support/processes.ts';

const haproxy = await HaproxyDriver.available();
if (!haproxy.ok) console.warn(`haproxy-driver.test.ts skipped: ${haproxy.reason}`);

interface Backend {
  name: string;
  port: number;
  server: http.Server;
}

async function backend(name: string): Promise<Backend> {
  const server = http.createServer((req, res) => {
    res.setHeader('X-Served-By', name);
    res.setHeader('Keep-Alive', 'timeout=5'); // as node:http servers (web_dynamic) send it
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ name, url: req.url, prefix: req.headers['x-forwarded-prefix'] ?? null }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { name, port: (server.address() as net.AddressInfo).port, server };
}

/** A port nothing listens on (bound, then closed). */
async function deadPort(): Promise<number> {
  const b = await backend('dead');
  await new Promise<void>((resolve) => b.server.close(() => resolve()));
  return b.port;
}

/** The pids of haproxy processes whose command line names `cfg` (Linux /proc). */
function haproxyProcessesFor(cfg: string): number[] {
  const pids: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      if (cmd.includes(cfg) && !/\) Z /.test(stat)) pids.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

let backends: Backend[];
let root: string;
let n = 0;

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(tmpdir(), 'lab-hx-'));
  backends = await Promise.all(['b1', 'b2', 'b3', 'b4'].map(backend));
});

afterAll(async () => {
  await Promise.all(backends.map((b) => new Promise<void>((resolve) => b.server.close(() => resolve()))));
  for (const b of backends) b.server.closeAllConnections();
  fs.rmSync(root, { recursive: true, force: true });
});

function config(servers: [Backend | number, number?][], lb: Partial<ProxyService['loadBalancer']> = {}, extraRouters: ProxyConfig['routers'] = []): ProxyConfig {
  return {
    entrypoint: { name: 'web', host: '127.0.0.1', port: 0 },
    routers: [
      ...extraRouters,
      { name: 'api', pathPrefix: '/api/', stripPrefix: true, service: 'web_dynamic', priority: 17 },
      { name: 'empty', pathPrefix: '/empty/', stripPrefix: false, service: 'web_static', priority: 18 },
    ],
    services: [
      {
        name: 'web_dynamic',
        loadBalancer: {
          algorithm: 'round-robin',
          servers: servers.map(([b, weight]) =>
            typeof b === 'number' ? { name: `dead-${b}`, url: `http://127.0.0.1:${b}`, weight: weight ?? 1 } : { name: b.name, url: `http://127.0.0.1:${b.port}`, weight: weight ?? 1 },
          ),
          ...lb,
        },
      },
      { name: 'web_static', loadBalancer: { algorithm: 'round-robin', servers: [] } },
    ],
  };
}

describe.skipIf(!haproxy.ok)('HaproxyDriver', () => {
  let bus: EventBus;
  let driver: HaproxyDriver;
  let requests: RequestCompleted[];
  let logs: LogLine[];
  const clients: ProbeClient[] = [];

  function probe(connection: 'reuse' | 'new' = 'reuse', cookies = false, baseUrl = `http://127.0.0.1:${driver.port}`): ProbeClient {
    const c = new ProbeClient({ baseUrl, connection, cookies });
    clients.push(c);
    return c;
  }

  /** The request event of the next access-log line (they arrive just after the response). */
  function nextRequest(match: (r: RequestCompleted) => boolean = () => true): Promise<RequestCompleted> {
    return bus.once('request:completed', match);
  }

  async function started(c: ProxyConfig): Promise<number> {
    bus = new EventBus();
    requests = [];
    logs = [];
    bus.on('request:completed', (r) => requests.push(r));
    bus.on('log:line', (l) => logs.push(l));
    driver = new HaproxyDriver({ bus, workDir: path.join(root, `w${++n}`) });
    return driver.start(c);
  }

  async function serversState(): Promise<Map<string, { weight: number; admin: number }>> {
    const text = await driver.runtimeCommand('show servers state web_dynamic');
    const rows = new Map<string, { weight: number; admin: number }>();
    for (const line of text.split('\n')) {
      const f = line.trim().split(/\s+/);
      // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight ...
      if (f[1] === 'web_dynamic' && f.length > 8) rows.set(f[3], { admin: Number(f[6]), weight: Number(f[7]) });
    }
    return rows;
  }

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    const cfg = driver?.configPath;
    const pids = [driver?.pid, driver?.workerPid].filter((p): p is number => typeof p === 'number');
    await driver?.stop();
    for (const pid of pids) expect(alive(pid)).toBe(false);
    if (cfg) expect(haproxyProcessesFor(cfg)).toEqual([]);
  });

  it('available() names the version, or says how to install haproxy', async () => {
    expect(haproxy.ok && haproxy.version).toMatch(/^\d+\.\d+/);
    const missing = await HaproxyDriver.available('/nonexistent/haproxy');
    expect(missing).toEqual({ ok: false, reason: expect.stringMatching(/^haproxy was not found at \/nonexistent\/haproxy; install it with `apt-get install haproxy`/) });
  });

  it('starts on a free port, serves, writes the running config to disk, shows its stats page, and stops leaving nothing behind', async () => {
    const port = await started(config([[backends[0]], [backends[1]]]));
    expect(port).toBeGreaterThan(0);
    expect(driver.port).toBe(port);
    expect(driver.capabilities).toMatchObject({ roundRobin: true, weights: true, leastConnections: true, stickyCookie: true, headerHash: true, runtimeApi: true, connectionEvents: false });
    expect(fs.readFileSync(driver.configPath, 'utf8')).toBe(driver.configText);
    expect(driver.configText).toContain(`bind 127.0.0.1:${port}\n`);
    expect(driver.render(config([[backends[0]], [backends[1]]]))).toBe(driver.configText);
    const res = await probe().get('/api/hello');
    expect(res.status).toBe(200);
    expect(res.headers['keep-alive']).toBeUndefined();
    expect(['b1', 'b2']).toContain(res.servedBy);

    const stats = await probe('new', false, driver.statsUrl!).get('/');
    expect(stats.status).toBe(200);
    expect(stats.body).toContain('Statistics Report');

    const master = driver.pid!;
    const worker = driver.workerPid!;
    const cfg = driver.configPath;
    expect(alive(master) && alive(worker)).toBe(true);
    expect(haproxyProcessesFor(cfg).sort((a, b) => a - b)).toEqual([master, worker].sort((a, b) => a - b));
    await driver.stop();
    await driver.stop(); // idempotent
    expect(alive(master) || alive(worker)).toBe(false);
    expect(haproxyProcessesFor(cfg)).toEqual([]);
    expect(fs.existsSync(driver.socketPath)).toBe(false);
    expect(driver.port).toBeNull();
    expect(driver.statsUrl).toBeNull();
  });

  it('refuses to start on a port in use, with a sentence, and leaves nothing running', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = (blocker.address() as net.AddressInfo).port;
    try {
      const c = config([[backends[0]]]);
      c.entrypoint.port = taken;
      await expect(started(c)).rejects.toThrow(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken}: port ${taken} is already in use.*LAB_PROXY_PORT`));
      expect(driver.pid).toBeNull();
      expect(haproxyProcessesFor(driver.configPath)).toEqual([]);
      expect(fs.existsSync(driver.socketPath)).toBe(false);
    } finally {
      blocker.close();
    }
  });

  it('refuses to start with a configuration HAProxy rejects, quoting HAProxy', async () => {
    await expect(started(config([[backends[0], 300]]))).rejects.toThrow(
      /^HAProxy refused the configuration: ALERT: \[haproxy\.next\.cfg:\d+\] : 'server web_dynamic\/b1' : weight of server b1 is not within 0 and 256 \(300\)/,
    );
    expect(driver.pid).toBeNull();
  });

  it('turns every access-log line into a request event and a log line', async () => {
    const dead = await deadPort();
    await started(config([[backends[0]], [backends[1]]]));
    const c = probe();
    const seen = nextRequest();
    const res = await c.get('/api/x?y=1');
    const e = await seen;
    expect(e).toMatchObject({
      method: 'GET',
      path: '/api/x?y=1',
      router: 'api',
      service: 'web_dynamic',
      replica: res.servedBy,
      hostname: res.servedBy,
      status: 200,
      clientConnId: `127.0.0.1:${res.localPort}`,
    });
    expect(e.upstreamConnId).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(e.error).toBeUndefined();
    expect(e.ms).toBeGreaterThanOrEqual(0);
    expect(Math.abs(e.at - Date.now())).toBeLessThan(10_000);
    const second = nextRequest();
    await c.get('/api/x');
    expect((await second).id).toBe(e.id + 1);
    expect(logs.filter((l) => l.stream === 'access' && l.source === 'proxy' && l.text.includes('"GET /api/x?y=1 HTTP/1.1"'))).toHaveLength(1);

    const nf = nextRequest();
    expect((await c.get('/nowhere')).body).toBe('404 page not found\n');
    expect(await nf).toMatchObject({ status: 404, router: null, service: null, replica: null, hostname: null, upstreamConnId: null });
    expect((await nf).error).toBeUndefined();

    const empty = nextRequest();
    const r503 = await c.get('/empty/');
    expect(r503.status).toBe(503);
    expect(r503.body).toContain('No server is available to handle this request.');
    expect(await empty).toMatchObject({ status: 503, router: 'empty', service: 'web_static', replica: null, error: 'no server available' });

    // A server whose port is closed: HAProxy's 503 (Traefik answers 502), the server is named.
    await driver.apply(config([[dead]]));
    const down = nextRequest();
    const r = await probe('new').get('/api/');
    expect(r.status).toBe(503);
    // Retry off is `retries 0`: one try, no retry (HAProxy's default would try the same server 3 more times).
    const ev = await down;
    expect(ev).toMatchObject({ status: 503, replica: `dead-${dead}`, hostname: null, upstreamConnId: null, error: 'server connection failed' });
    expect(ev.retried).toBeUndefined();
    // The stats page is not lesson traffic.
    await probe('new', false, driver.statsUrl!).get('/');
    const countBefore = requests.length;
    const marker = nextRequest();
    await c.get('/nowhere-2');
    await marker;
    expect(requests.length).toBe(countBefore + 1);
  });

  it('StripPrefix forwards what stripPath() computes, query kept (parity with the embedded proxy)', async () => {
    const prefixes = ['/api/', '/api', '/v1.0/'];
    const routers = prefixes.map((p, i) => ({ name: `r${i}`, pathPrefix: p, stripPrefix: true, service: 'web_dynamic', priority: 100 - i }));
    await started(config([[backends[0]]], {}, routers));
    const c = probe();
    const targets = ['/api/', '/api/x', '/api/x/y?z=1&w=%20', '/api', '/api?q=1', '/apix', '/api//x', '/v1.0/', '/v1.0/a?b', '/v1x0/a'];
    for (const target of targets) {
      const router = routers.find((r) => target.split('?')[0].startsWith(r.pathPrefix));
      const res = await c.get(target);
      if (!router) {
        expect(res.status, target).toBe(404);
        continue;
      }
      expect(JSON.parse(res.body), target).toEqual({ name: 'b1', url: stripPath(router, target), prefix: router.pathPrefix });
    }
  });

  it('applies weights and added or removed servers through the Runtime API (same worker), the rest by a reload (new worker); the file follows', async () => {
    await started(config([[backends[0]], [backends[1]]]));
    const worker = driver.workerPid;

    await driver.apply(config([[backends[0], 3], [backends[1]]]));
    expect(driver.workerPid).toBe(worker);
    expect((await serversState()).get('b1')?.weight).toBe(3);
    expect(fs.readFileSync(driver.configPath, 'utf8')).toBe(driver.configText);
    expect(driver.configText).toMatch(/server b1 127\.0\.0\.1:\d+ id \d+ weight 3\n/);
    expect(logs.some((l) => l.stream === 'stdout' && l.text === '[lab] Runtime API: set server web_dynamic/b1 weight 3')).toBe(true);

    await driver.apply(config([[backends[0], 3], [backends[1]], [backends[2]]]));
    expect(driver.workerPid).toBe(worker);
    expect([...(await serversState()).keys()]).toEqual(['b1', 'b2', 'b3']);
    const hosts = new Set<string>();
    const c = probe();
    for (let i = 0; i < 10; i++) hosts.add((await c.get('/api/')).servedBy!);
    expect(hosts).toEqual(new Set(['b1', 'b2', 'b3']));

    await driver.apply(config([[backends[0], 3], [backends[2]]]));
    expect(driver.workerPid).toBe(worker);
    expect([...(await serversState()).keys()]).toEqual(['b1', 'b3']);
    expect(fs.readFileSync(driver.configPath, 'utf8')).toBe(driver.configText);

    const sticky = config([[backends[0], 3], [backends[2]]], { sticky: { cookie: { name: 'LAB', httpOnly: true, secure: false, sameSite: 'lax' } } });
    await driver.apply(sticky);
    expect(driver.workerPid).not.toBe(worker);
    expect(fs.readFileSync(driver.configPath, 'utf8')).toBe(driver.configText);
    const first = await probe().get('/api/');
    expect(first.headers['set-cookie']?.[0]).toBe(`LAB=${first.servedBy}; path=/; HttpOnly; SameSite=Lax`);

    const reloaded = driver.workerPid;
    const lines = logs.length;
    await driver.apply(structuredClone(sticky)); // the same text: nothing at all
    expect(driver.workerPid).toBe(reloaded);
    expect(logs.slice(lines).filter((l) => l.stream === 'stdout')).toEqual([]);
  });

  it('sticky: a cookie naming an unknown, disabled or deleted server is re-pinned and rewritten (no redispatch needed)', async () => {
    const sticky = (bs: Backend[]) => config(bs.map((b) => [b] as [Backend]), { sticky: { cookie: { name: 'LAB', httpOnly: false, secure: false, sameSite: '' } } });
    await started(sticky(backends.slice(0, 3)));
    const c = probe('new');
    const honoured = nextRequest();
    const pinned = await c.get('/api/', { headers: { Cookie: 'LAB=b2' } });
    expect(pinned.servedBy).toBe('b2');
    expect(pinned.headers['set-cookie']).toBeUndefined();
    expect(await honoured).toMatchObject({ replica: 'b2', stickyCookie: 'LAB=b2' });

    const seen = nextRequest();
    const ghost = await c.get('/api/', { headers: { Cookie: 'LAB=ghost' } });
    expect(ghost.headers['set-cookie']).toEqual([`LAB=${ghost.servedBy}; path=/`]);
    expect(await seen).toMatchObject({ replica: ghost.servedBy, stickyCookie: `LAB=${ghost.servedBy}; path=/` });

    await driver.runtimeCommand('disable server web_dynamic/b2');
    const down = await c.get('/api/', { headers: { Cookie: 'LAB=b2' } });
    expect(down.servedBy).not.toBe('b2');
    expect(down.headers['set-cookie']).toEqual([`LAB=${down.servedBy}; path=/`]);

    await driver.apply(sticky([backends[0], backends[2]])); // restores b2's state (console change), then b2 leaves
    const gone = await c.get('/api/', { headers: { Cookie: 'LAB=b2' } });
    expect(['b1', 'b3']).toContain(gone.servedBy);
    expect(gone.headers['set-cookie']).toEqual([`LAB=${gone.servedBy}; path=/`]);
    expect(driver.configText).not.toContain('b2');
  });

  it('rejects a configuration HAProxy refuses and keeps the running one, file included', async () => {
    await started(config([[backends[0]], [backends[1]]]));
    const text = driver.configText;
    const worker = driver.workerPid;
    await expect(driver.apply(config([[backends[0], 300]]))).rejects.toThrow(/HAProxy refused the configuration: .*weight of server b1 is not within 0 and 256 \(300\)/);
    const missing = config([[backends[0]]], {}, [{ name: 'lost', pathPrefix: '/lost/', stripPrefix: false, service: 'nowhere', priority: 99 }]);
    await expect(driver.apply(missing)).rejects.toThrow(/unable to find required use_backend: 'nowhere'/);
    const badCookie = config([[backends[0]]], { sticky: { cookie: { name: 'a b', httpOnly: false, secure: false, sameSite: '' } } });
    await expect(driver.apply(badCookie)).rejects.toThrow(/cookie name "a b"/);
    expect(driver.configText).toBe(text);
    expect(fs.readFileSync(driver.configPath, 'utf8')).toBe(text);
    expect(driver.workerPid).toBe(worker);
    const c = probe();
    const hosts = [(await c.get('/api/')).servedBy, (await c.get('/api/')).servedBy];
    expect(new Set(hosts)).toEqual(new Set(['b1', 'b2']));
  });

  it('console: forwards allow-listed commands, refuses others; a state change is undone by the next apply', async () => {
    const c0 = config([[backends[0]], [backends[1]]]);
    await started(c0);
    expect(await driver.runtimeCommand('show info')).toMatch(new RegExp(`^Pid: ${driver.workerPid}$`, 'm'));
    await expect(driver.runtimeCommand('shutdown frontend web')).rejects.toThrow(/not a command this console forwards\. Allowed commands: show info;/);
    await expect(driver.runtimeCommand('show info; shutdown frontend web')).rejects.toThrow(/one command at a time/);
    expect(await driver.runtimeCommand('set server web_dynamic/b1 weight 0')).toBe('\n');
    expect((await serversState()).get('b1')?.weight).toBe(0);
    const c = probe();
    expect([(await c.get('/api/')).servedBy, (await c.get('/api/')).servedBy]).toEqual(['b2', 'b2']);
    await driver.apply(structuredClone(c0)); // same text, but the running state differs: reload
    expect((await serversState()).get('b1')?.weight).toBe(1);
  });

  it('a lab killed before stop() leaves HAProxy running; sweep() (and the next start() in the same workDir) stops it', async () => {
    const workDir = path.join(root, `w${++n}`);
    const fixture = fileURLToPath(new URL('./test-fixtures/lab-that-dies.ts', import.meta.url));
    const spawnLab = async () => {
      const child = spawn(process.execPath, ['--import', 'tsx', fixture, workDir, String(backends[0].port)], { stdio: ['ignore', 'pipe', 'inherit'] });
      const line = await new Promise<string>((resolve, reject) => {
        readline.createInterface({ input: child.stdout! }).once('line', resolve);
        child.once('exit', (code) => reject(new Error(`the fixture exited with ${code}`)));
      });
      const [, port, pid] = /^port (\d+) pid (\d+)$/.exec(line)!.map(Number);
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('close', resolve));
      return { port, pid };
    };

    const left = await spawnLab();
    expect(alive(left.pid)).toBe(true);
    const c = new ProbeClient({ baseUrl: `http://127.0.0.1:${left.port}`, connection: 'new' });
    clients.push(c);
    expect((await c.get('/')).servedBy).toBe('b1'); // the orphan still serves
    expect(await HaproxyDriver.sweep(root)).toBe(1);
    expect(haproxyProcessesFor(path.join(workDir, 'haproxy.cfg'))).toEqual([]);
    expect(await HaproxyDriver.sweep(root)).toBe(0);

    const again = await spawnLab();
    expect(alive(again.pid)).toBe(true);
    bus = new EventBus();
    driver = new HaproxyDriver({ bus, workDir });
    const cleared = bus.once('log:line', (l) => /stopped a leftover HAProxy/.test(l.text));
    await driver.start(config([[backends[1]]]));
    await cleared;
    expect(alive(again.pid)).toBe(false);
    expect(haproxyProcessesFor(driver.configPath).sort((a, b) => a - b)).toEqual([driver.pid!, driver.workerPid!].sort((a, b) => a - b));
  });

  it('reports HAProxy dying on its own, and can start again', async () => {
    await started(config([[backends[0]]]));
    const master = driver.pid!;
    const said = bus.once('log:line', (l) => l.stream === 'stderr' && /HAProxy exited unexpectedly/.test(l.text));
    process.kill(-master, 'SIGKILL');
    expect((await said).text).toMatch(/signal SIGKILL/);
    expect(driver.port).toBeNull();
    await expect(driver.apply(config([[backends[1]]]))).rejects.toThrow(/HAProxy is not running/);
    const port = await driver.start(config([[backends[1]]]));
    expect((await probe().get('/api/')).servedBy).toBe('b2');
    expect(driver.port).toBe(port);
  });
});
