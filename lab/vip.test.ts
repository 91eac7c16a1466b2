import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus, type ConnectionClosed, type ConnectionOpened } from './events.ts';
import { Vip } from './vip.ts';

/** Tiny HTTP backends answering their name; keep-alive timeout as given. */
async function backend(name: string, keepAliveMs = 5000): Promise<{ name: string; host: string; port: number; server: http.Server }> {
  const server = http.createServer((_req, res) => {
    res.setHeader('X-Served-By', name);
    res.end(name);
  });
  server.keepAliveTimeout = keepAliveMs;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { name, host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, server };
}

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function setup(opts: { idleTimeoutMs?: number; keepAliveMs?: number } = {}) {
  const bus = new EventBus();
  const backends = await Promise.all(['r1', 'r2', 'r3'].map((n) => backend(n, opts.keepAliveMs)));
  cleanup.push(() => Promise.all(backends.map((b) => new Promise<void>((r) => { b.server.closeAllConnections(); b.server.close(() => r()); }))).then(() => undefined));
  const vip = new Vip({ bus, name: 'svc-vip', ...(opts.idleTimeoutMs ? { idleTimeoutMs: opts.idleTimeoutMs } : {}) });
  const port = await vip.start();
  cleanup.push(() => vip.stop());
  vip.setBackends(backends.map((b) => ({ name: b.name, host: b.host, port: b.port })));
  const opened: ConnectionOpened[] = [];
  const closed: ConnectionClosed[] = [];
  bus.on('connection:opened', (e) => opened.push(e));
  bus.on('connection:closed', (e) => closed.push(e));
  return { bus, vip, port, backends, opened, closed };
}

function get(agent: http.Agent, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

describe('Vip', () => {
  it('balances per connection: a new connection per request goes round-robin, one keep-alive connection stays on one replica', async () => {
    const { port } = await setup();
    const perRequest = new http.Agent({ keepAlive: false });
    const answers: string[] = [];
    for (let i = 0; i < 6; i++) answers.push(await get(perRequest, port));
    expect(answers).toEqual(['r1', 'r2', 'r3', 'r1', 'r2', 'r3']);

    const pooled = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanup.push(() => pooled.destroy());
    const pinned: string[] = [];
    for (let i = 0; i < 6; i++) pinned.push(await get(pooled, port));
    expect(new Set(pinned).size).toBe(1);
  });

  it('reports both hops, matched by address:port, and who closed', async () => {
    const { bus, port, opened, closed } = await setup();
    const agent = new http.Agent({ keepAlive: false });
    const done = bus.once('connection:closed', (e) => e.hop === 'vip-backend');
    expect(await get(agent, port)).toBe('r1');
    const c = await done;
    const front = opened.find((e) => e.hop === 'proxy-vip')!;
    const back = opened.find((e) => e.hop === 'vip-backend')!;
    expect(front.remote).toBe(`127.0.0.1:${port}`);
    expect(back.replica).toBe('r1');
    expect(back.local).toMatch(/^127\.0\.0\.1:\d+$/);
    // Connection: close from the client: node:http's server ends after the answer, so the backend sends the first FIN.
    expect(['proxy', 'backend']).toContain(c.closedBy);
    await bus.once('connection:closed', (e) => e.hop === 'proxy-vip').catch(() => undefined);
    expect(closed.filter((e) => e.hop === 'proxy-vip')).toHaveLength(1);
  });

  it('closes an idle connection after its idle timeout (closedBy vip), not before', async () => {
    const { bus, port } = await setup({ idleTimeoutMs: 300 });
    const agent = new http.Agent({ keepAlive: true });
    cleanup.push(() => agent.destroy());
    const closedEvent = bus.once('connection:closed', (e) => e.hop === 'vip-backend');
    await get(agent, port);
    const lastByte = Date.now();
    const c = await closedEvent;
    expect(c.closedBy).toBe('vip');
    expect(c.reason).toBe('idle timeout');
    expect(c.at - lastByte).toBeGreaterThanOrEqual(250);
    expect(c.at - lastByte).toBeLessThan(5000);
  });

  it("forwards a backend's keep-alive close (closedBy backend)", async () => {
    const { bus, port } = await setup({ keepAliveMs: 200 });
    const closedEvent = bus.once('connection:closed', (e) => e.hop === 'proxy-vip');
    // A raw client that never closes first (node:http's agent would obey Keep-Alive: timeout=0).
    const socket = net.connect(port, '127.0.0.1');
    cleanup.push(() => void socket.destroy());
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const c = await closedEvent;
    expect(c, JSON.stringify(c)).toMatchObject({ closedBy: 'backend' });
  });

  it('setBackends: new connections go to the new list; stop() closes everything', async () => {
    const { vip, port, backends, bus } = await setup();
    vip.setBackends([{ name: 'r3', host: backends[2].host, port: backends[2].port }]);
    const agent = new http.Agent({ keepAlive: true });
    cleanup.push(() => agent.destroy());
    expect(await get(agent, port)).toBe('r3');
    expect(vip.connections).toBe(1);
    const closedEvent = bus.once('connection:closed', (e) => e.hop === 'vip-backend');
    await vip.stop();
    expect((await closedEvent).closedBy).toBe('vip');
    expect(vip.connections).toBe(0);
    expect(vip.port).toBeNull();
  });

  it('with no replica behind it, a connection is closed at once', async () => {
    const { vip, port, bus } = await setup();
    vip.setBackends([]);
    const closedEvent = bus.once('connection:closed', (e) => e.hop === 'proxy-vip');
    await expect(get(new http.Agent(), port)).rejects.toThrow();
    const c = await closedEvent;
    expect(c.closedBy).toBe('vip');
    expect(c.reason).toMatch(/no replica/);
  });
});
