/**
 * web_dynamic: the JSON answer names the replica and its per-process instance id; the process
 * follows the lab's conventions (startup line, X-Served-By, keep-alive timeout, graceful SIGTERM).
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { appMounter, ended, startProcess } from '../shared/test-servers.js';
import { createApp, JOKES } from './server.js';

const ENTRY = fileURLToPath(new URL('./server.js', import.meta.url));
const mount = appMounter();

const serve = (options: { hostname: string; instanceId?: string }) => mount(createApp({ ...options, log: false }));

describe('web_dynamic app', () => {
  test('answers { hostname, instanceId, joke, at } with X-Served-By', async () => {
    const base = await serve({ hostname: 'web_dynamic-3', instanceId: 'id-1' });
    const before = Date.now();
    const res = await fetch(`${base}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-served-by')).toBe('web_dynamic-3');
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(['at', 'hostname', 'instanceId', 'joke']);
    expect(body).toMatchObject({ hostname: 'web_dynamic-3', instanceId: 'id-1' });
    expect(JOKES).toContain(body.joke);
    expect(Date.parse(body.at as string)).toBeGreaterThanOrEqual(before - 1000);
  });

  test('one instanceId per app, a new one per app', async () => {
    const a = await serve({ hostname: 'a' });
    const b = await serve({ hostname: 'b' });
    const get = async (base: string) => ((await (await fetch(`${base}/`)).json()) as { instanceId: string }).instanceId;
    const a1 = await get(a);
    expect(await get(a)).toBe(a1);
    expect(await get(b)).not.toBe(a1);
  });

  test('/health and an unknown path', async () => {
    const base = await serve({ hostname: 'web_dynamic-1' });
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
    expect(health.headers.get('x-served-by')).toBe('web_dynamic-1');
    expect(await health.json()).toEqual({ status: 'ok' });
    const missing = await fetch(`${base}/api/`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get('x-served-by')).toBe('web_dynamic-1');
    expect(await missing.json()).toEqual({ error: 'no route for GET /api/', hostname: 'web_dynamic-1' });
  });
});

describe('web_dynamic process', () => {
  test('prints its listening line, logs each request with its hostname, honours KEEPALIVE_TIMEOUT_MS, exits 0 on SIGTERM', async () => {
    const p = await startProcess(ENTRY, { LAB_HOSTNAME: 'web_dynamic-p1', KEEPALIVE_TIMEOUT_MS: '3000' });
    try {
      expect(p.startup).toHaveLength(1);
      expect(p.startup[0]).toMatch(/^listening on http:\/\/127\.0\.0\.1:\d+$/);
      const { port } = p;

      const res = await fetch(`http://127.0.0.1:${port}/`);
      expect(res.headers.get('x-served-by')).toBe('web_dynamic-p1');
      expect(res.headers.get('keep-alive')).toBe('timeout=3');
      expect(((await res.json()) as { hostname: string }).hostname).toBe('web_dynamic-p1');
      expect(await p.next()).toMatch(/^web_dynamic-p1 127\.0\.0\.1 GET \/ 200 \d+ - [\d.]+ ms$/);

      // SIGTERM with the fetch's keep-alive connection still open: it closes it and exits 0.
      p.child.kill('SIGTERM');
      expect(await p.exited).toEqual({ code: 0, signal: null });
    } finally {
      await ended(p);
    }
  });
});

describe('web_dynamic WebSocket echo', () => {
  test('/ws/echo: a hello naming the replica, then each message echoed with the hostname; SIGTERM closes it (1001), exit 0', async () => {
    const { WebSocket } = await import('ws');
    const p = await startProcess(ENTRY, { LAB_HOSTNAME: 'web_dynamic-ws' });
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${p.port}/ws/echo`);
      const messages: Array<Record<string, string>> = [];
      const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
      const got = (n: number) =>
        new Promise<void>((resolve) => {
          const check = () => (messages.length >= n ? resolve() : setTimeout(check, 10));
          check();
        });
      ws.on('message', (data) => messages.push(JSON.parse(data.toString()) as Record<string, string>));
      await new Promise((resolve, reject) => ws.on('open', resolve).on('error', reject));
      await got(1);
      expect(messages[0]).toMatchObject({ hostname: 'web_dynamic-ws' });
      expect(messages[0]!.instanceId).toMatch(/^[0-9a-f-]{36}$/);
      ws.send('one');
      ws.send('two');
      await got(3);
      expect(messages.slice(1)).toEqual([
        { hostname: 'web_dynamic-ws', echo: 'one' },
        { hostname: 'web_dynamic-ws', echo: 'two' },
      ]);
      p.child.kill('SIGTERM');
      expect(await closed).toBe(1001);
      expect(await p.exited).toEqual({ code: 0, signal: null });
    } finally {
      await ended(p);
    }
  });
});
