import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
// Plain JS module of the demo backends.
import { reportConnections } from './conn-events.js';

const servers: http.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()); });
});

async function serve(keepAliveMs: number): Promise<{ port: number; lines: string[]; next: (re: RegExp) => Promise<string> }> {
  const server = http.createServer((_req, res) => res.end('ok'));
  server.keepAliveTimeout = keepAliveMs;
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  const on = reportConnections(server, {
    env: { LAB_CONN_EVENTS: '1' },
    write: (line: string) => {
      lines.push(line);
      for (const w of [...waiters]) if (w.re.test(line)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(line); }
    },
  });
  expect(on).toBe(true);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const next = (re: RegExp) => {
    const found = lines.find((l) => re.test(l));
    return found ? Promise.resolve(found) : new Promise<string>((resolve) => waiters.push({ re, resolve }));
  };
  return { port: (server.address() as net.AddressInfo).port, lines, next };
}

describe('reportConnections', () => {
  it('is off without LAB_CONN_EVENTS=1', () => {
    expect(reportConnections(http.createServer(), { env: {}, write: () => {} })).toBe(false);
  });

  it('reports the peer address:port, and the keep-alive timeout as a close by the server', async () => {
    const { port, next } = await serve(200);
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((r) => socket.once('connect', () => r()));
    const peer = `127.0.0.1:${socket.localPort}`;
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(await next(/^conn opened/)).toBe(`conn opened ${peer}`);
    expect(await next(/^conn closed/)).toBe(`conn closed ${peer} by server (keep-alive timeout)`);
    socket.destroy();
  });

  it('a client that closes first is named', async () => {
    const { port, next } = await serve(5000);
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((r) => socket.once('connect', () => r()));
    const peer = `127.0.0.1:${socket.localPort}`;
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise<void>((r) => socket.once('data', () => r()));
    socket.end();
    expect(await next(/^conn closed/)).toBe(`conn closed ${peer} by client (client closed)`);
  });

  it('Connection: close from the client: the server closes after the answer', async () => {
    const { port, next } = await serve(5000);
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((r) => socket.once('connect', () => r()));
    socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(await next(/^conn closed/)).toMatch(/by server \(Connection: close\)$/);
    socket.destroy();
  });
});
