import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ProbeClient } from './probe-client.ts';

let server: http.Server;
let baseUrl: string;
const clients: ProbeClient[] = [];
/** Remote ports of the connections the server accepted, in order. */
let accepted: number[];

beforeEach(async () => {
  accepted = [];
  server = http.createServer((req, res) => {
    res.setHeader('X-Served-By', 'probe-test');
    if (req.url === '/login') res.setHeader('Set-Cookie', 'session=abc; Path=/; HttpOnly');
    res.end(JSON.stringify({ cookie: req.headers.cookie ?? null, connection: req.headers.connection ?? null, port: req.socket.remotePort }));
  });
  server.on('connection', (s) => accepted.push(s.remotePort ?? -1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function client(opts: ConstructorParameters<typeof ProbeClient>[0]): ProbeClient {
  const c = new ProbeClient(opts);
  clients.push(c);
  return c;
}

describe('ProbeClient', () => {
  it("'reuse' sends every request over one keep-alive connection", async () => {
    const c = client({ baseUrl, connection: 'reuse' });
    const results = [];
    for (let i = 0; i < 5; i++) results.push(await c.get('/'));
    const ports = new Set(results.map((r) => r.localPort));
    expect(ports.size).toBe(1);
    expect(results.map((r) => r.reused)).toEqual([false, true, true, true, true]);
    expect(accepted).toEqual([results[0].localPort]);
    expect(results[0].status).toBe(200);
    expect(results[0].servedBy).toBe('probe-test');
    expect(JSON.parse(results[0].body).port).toBe(results[0].localPort);
  });

  it("'new' opens a fresh connection per request and asks the server to close it", async () => {
    const c = client({ baseUrl, connection: 'new' });
    const results = [];
    for (let i = 0; i < 4; i++) results.push(await c.get('/'));
    expect(new Set(results.map((r) => r.localPort)).size).toBe(4);
    expect(results.every((r) => !r.reused)).toBe(true);
    expect(accepted).toEqual(results.map((r) => r.localPort));
    expect(JSON.parse(results[0].body).connection).toBe('close');
  });

  it('keeps cookies only when asked to', async () => {
    const withJar = client({ baseUrl, connection: 'reuse', cookies: true });
    await withJar.get('/login');
    expect(JSON.parse((await withJar.get('/')).body).cookie).toBe('session=abc');
    expect(withJar.jar).not.toBeNull();

    const noJar = client({ baseUrl, connection: 'reuse' });
    await noJar.get('/login');
    expect(JSON.parse((await noJar.get('/')).body).cookie).toBeNull();
    expect(noJar.jar).toBeNull();
  });

  it('sends extra headers and rejects after close()', async () => {
    const c = client({ baseUrl, connection: 'reuse' });
    const r = await c.get('/', { headers: { Cookie: 'x=1' } });
    expect(JSON.parse(r.body).cookie).toBe('x=1');
    c.close();
    await expect(c.get('/')).rejects.toThrow(/closed/);
  });

  it('rejects with the socket error when nothing listens', async () => {
    const port = (server.address() as AddressInfo).port;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const c = client({ baseUrl: `http://127.0.0.1:${port}`, connection: 'new' });
    await expect(c.get('/')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    // afterEach closes again: give it a fresh listener.
    server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
});
