/**
 * The classroom over the real server (process runtime, embedded proxy, real replicas): the
 * watch-only token (GETs and the socket work, every command 403 with a sentence), `navigate` to
 * every connected socket, reset (no stray process, the current lesson's topology, every socket
 * told, history cleared) and the run export (JSON, and an HTML report that escapes what it shows).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { io, type Socket } from 'socket.io-client';
import { startLab, type RunningLab } from '../../server/compose.ts';
import type { EventBatch, NavigateMessage, ResetMessage, RunExport, SessionInfo } from '../../server/protocol.ts';
import { WATCH_ONLY_REFUSAL } from '../../server/protocol.ts';
import { loadLessons } from '../../server/lessons.ts';
import { isAlive as alive } from '../support/processes.ts';

const READONLY = 'watch-only-token-for-tests';
let lab: RunningLab;
let stateDir: string;
const sockets: Socket[] = [];

function api(pathname: string, init: { method?: string; body?: unknown; token?: string } = {}) {
  return fetch(`${lab.apiUrl}${pathname}`, {
    method: init.method ?? 'GET',
    headers: { authorization: `Bearer ${init.token ?? lab.token}`, 'content-type': 'application/json' },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
}

/** A socket.io client that records every message it gets; resolves once connected. */
async function connect(token: string) {
  const socket = io(lab.apiUrl, { auth: { token }, transports: ['websocket'], reconnection: false, forceNew: true });
  sockets.push(socket);
  const got = { session: [] as SessionInfo[], navigate: [] as NavigateMessage[], reset: [] as ResetMessage[], history: [] as EventBatch[] };
  socket.on('session', (m: SessionInfo) => got.session.push(m));
  socket.on('navigate', (m: NavigateMessage) => got.navigate.push(m));
  socket.on('reset', (m: ResetMessage) => got.reset.push(m));
  socket.on('history', (m: EventBatch) => got.history.push(m));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', reject);
  });
  return { socket, got };
}

/** Waits (polling, with a deadline) until `check` holds. */
async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** One GET through the proxy with a raw path (the test controls every byte). */
function rawGet(pathname: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: lab.proxyPort, path: pathname, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
}

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-classroom-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir, readonlyToken: READONLY, allowedHosts: ['lab.classroom.test'] });
});

afterAll(async () => {
  for (const s of sockets) s.disconnect();
  const pids = lab.lab.status().services.flatMap((s) => s.instances.map((r) => r.pid ?? 0)).filter(Boolean);
  await lab.stop();
  for (const pid of pids) expect(alive(pid), `replica pid ${pid} still running after stop`).toBe(false);
  rmSync(stateDir, { recursive: true, force: true });
});

describe('watch-only token', () => {
  it('is printed as its own URL (on the first allowed host name) and differs from the lab token', () => {
    expect(lab.readonlyToken).toBe(READONLY);
    expect(lab.watchUrl).toBe(`http://lab.classroom.test:${lab.port}/?token=${READONLY}`);
    expect(lab.url).toBe(`http://localhost:${lab.port}/?token=${lab.token}`);
  });

  it('answers on an allowed extra host name (a class on the LAN) and still refuses others', async () => {
    const get = (host: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: lab.port, path: '/api/status', headers: { host, authorization: `Bearer ${READONLY}` }, agent: false }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
      });
    expect(await get(`lab.classroom.test:${lab.port}`)).toBe(200);
    expect(await get(`evil.example:${lab.port}`)).toBe(403);
  });

  it('reads every GET route', async () => {
    for (const route of ['/api/status', '/api/session', '/api/export', '/api/export.html', '/api/proxy/config', '/api/proxies']) {
      const res = await api(route, { token: READONLY });
      expect(res.status, route).toBe(200);
    }
    const session = (await (await api('/api/session', { token: READONLY })).json()) as SessionInfo;
    expect(session.role).toBe('watch');
    expect((await (await api('/api/session')).json()).role).toBe('control');
  });

  it('is refused every command with 403 and a sentence, and nothing changes', async () => {
    const before = lab.lab.status();
    const host = before.services.find((s) => s.name === 'web_dynamic')!.instances[0].hostname;
    const commands: Array<[string, unknown]> = [
      ['/api/services/web_dynamic/scale', { replicas: 5 }],
      [`/api/replicas/${host}/kill`, undefined],
      ['/api/reset', {}],
      ['/api/settings', { settings: ['sticky=on'] }],
      ['/api/proxy', { driver: 'embedded' }],
      [`/api/replicas/${host}/fault`, { mode: 'crash' }],
      ['/api/load', { rate: 5, seconds: 1 }],
      ['/api/navigate', { lesson: '01-round-robin' }],
      ['/api/probe', { path: '/api/', count: 1 }],
      ['/api/checks/rotation-seen', undefined],
      ['/api/routes', { routes: [] }],
      ['/api/capture/start', {}],
      ['/api/no-such-command', {}],
    ];
    for (const [route, body] of commands) {
      const res = await api(route, { method: 'POST', body, token: READONLY });
      expect(res.status, route).toBe(403);
      expect((await res.json()).error, route).toBe(WATCH_ONLY_REFUSAL);
    }
    for (const method of ['PUT', 'DELETE', 'PATCH']) expect((await api('/api/status', { method, token: READONLY })).status).toBe(403);
    const after = lab.lab.status();
    expect(after.services.map((s) => s.instances.map((r) => `${r.hostname} ${r.state} ${r.fault}`))).toEqual(
      before.services.map((s) => s.instances.map((r) => `${r.hostname} ${r.state} ${r.fault}`)),
    );
    expect(after.topology).toEqual(before.topology);
  });

  it('connects a socket that gets the status, the history and its role', async () => {
    const watcher = await connect(READONLY);
    await until(() => watcher.got.session.length > 0 && watcher.got.history.length > 0, 'session and history');
    expect(watcher.got.session[0].role).toBe('watch');
    expect(watcher.got.session[0].lessons.map((l) => l.folder)).toEqual(loadLessons().map((l) => l.slug));
    const wrong = io(lab.apiUrl, { auth: { token: 'nope' }, transports: ['websocket'], reconnection: false, forceNew: true });
    sockets.push(wrong);
    const err = await new Promise<Error>((resolve) => wrong.once('connect_error', resolve));
    expect(err.message).toMatch(/wrong token/);
  });
});

describe('navigate', () => {
  it('sends every connected page to the lesson, by folder or page slug', async () => {
    const a = await connect(lab.token);
    const b = await connect(READONLY);
    const res = await api('/api/navigate', { method: 'POST', body: { lesson: 'sticky-sessions' } });
    expect(res.status).toBe(200);
    const result = await res.json();
    expect(result).toMatchObject({ folder: '02-sticky-sessions', slug: 'sticky-sessions', path: '/lessons/sticky-sessions', title: 'Sticky sessions' });
    expect(result.browsers).toBeGreaterThanOrEqual(2);
    await until(() => a.got.navigate.length > 0 && b.got.navigate.length > 0, 'navigate on both sockets');
    expect(a.got.navigate[0].path).toBe('/lessons/sticky-sessions');
    expect(b.got.navigate[0].folder).toBe('02-sticky-sessions');
    // A page connecting later learns the class's lesson with its role.
    const late = await connect(READONLY);
    await until(() => late.got.session.length > 0, 'session');
    expect(late.got.session[0].lesson?.folder).toBe('02-sticky-sessions');
  });

  it('refuses an unknown lesson with 404 and the list, and bad bodies with 400', async () => {
    const res = await api('/api/navigate', { method: 'POST', body: { lesson: '99-nope' } });
    expect(res.status).toBe(404);
    expect((await res.json()).error).toBe(`Unknown lesson "99-nope". Lessons: ${loadLessons().map((l) => l.slug).join(', ')}.`);
    expect((await api('/api/navigate', { method: 'POST', body: {} })).status).toBe(400);
    expect((await api('/api/navigate', { method: 'POST', body: { lesson: 3 } })).status).toBe(400);
    expect((await api('/api/navigate', { method: 'POST', body: { lesson: 'x', extra: 1 } })).status).toBe(400);
  });

  it('answers any body with a 2xx or a 4xx sentence, never a 5xx (fuzz)', async () => {
    const known = new Set(loadLessons().flatMap((l) => [l.slug, l.slug.replace(/^\d+-/, '')]));
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.jsonValue(), fc.record({ lesson: fc.oneof(fc.string({ maxLength: 150 }), fc.jsonValue()) })), async (body) => {
        const res = await api('/api/navigate', { method: 'POST', body });
        const answer = (await res.json()) as { error?: string; folder?: string };
        const valid = typeof body === 'object' && body !== null && !Array.isArray(body) && Object.keys(body).length === 1 && known.has((body as { lesson: unknown }).lesson as string);
        if (valid) expect(res.status).toBe(200);
        else {
          expect([400, 404]).toContain(res.status);
          expect(answer.error).toMatch(/^[A-Z"].{5,}[.)]$|must|Unknown/);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('reset', () => {
  it("kills every replica, restores the current lesson's topology, tells every page and clears the history", async () => {
    // The class is on lesson 02 (previous test): reset without a lesson restores its start.
    await api('/api/navigate', { method: 'POST', body: { lesson: '02-sticky-sessions' } });
    const watcher = await connect(READONLY);
    for (let i = 0; i < 6; i++) expect(await rawGet('/api/')).toBe(200);
    const host = lab.lab.status().services.find((s) => s.name === 'web_dynamic')!.instances[0].hostname;
    await api(`/api/replicas/${host}/fault`, { method: 'POST', body: { mode: 'errors' } });
    const old = lab.lab.status().services.flatMap((s) => s.instances);
    expect(old.length).toBeGreaterThan(0);

    const res = await api('/api/reset', { method: 'POST', body: {} });
    expect(res.status).toBe(200);
    const status = await res.json();
    expect(status.lesson).toBe('02-sticky-sessions');
    const lesson = loadLessons().find((l) => l.slug === '02-sticky-sessions')!;
    for (const [name, spec] of Object.entries(lesson.topology!.services)) {
      const svc = status.services.find((s: { name: string }) => s.name === name);
      expect(svc.instances.filter((r: { state: string }) => r.state === 'running'), name).toHaveLength(spec!.replicas);
    }
    expect(status.topology.routes).toEqual(lesson.topology!.routes);
    // No stray process: every old replica's process is gone, and none of its names is back.
    for (const r of old) expect(alive(r.pid!), `${r.hostname} (pid ${r.pid})`).toBe(false);
    const names = status.services.flatMap((s: { instances: Array<{ hostname: string; fault: string }> }) => s.instances);
    expect(names.map((r: { hostname: string }) => r.hostname)).not.toContain(host);
    expect(names.every((r: { fault: string }) => r.fault === 'healthy')).toBe(true);
    expect(status.requestsTotal).toBe(0);

    await until(() => watcher.got.reset.length > 0, 'the reset message');
    expect(watcher.got.reset[0].lesson).toBe('02-sticky-sessions');
    expect(watcher.got.reset[0].ms).toBeGreaterThan(0);
    const run = (await (await api('/api/export')).json()) as RunExport;
    expect(run.counts.total).toBe(0);
    expect(run.requests).toEqual([]);
    // A page that connects now sees no request of the old run.
    const late = await connect(READONLY);
    await until(() => late.got.history.length > 0, 'history');
    expect(late.got.history[0].requests.filter((r) => old.some((o) => o.hostname === r.replica))).toEqual([]);
  });

  it('clears sessions: a login on a session backend is unknown after the reset', async () => {
    expect((await api('/api/reset', { method: 'POST', body: { lesson: '02-sticky-sessions' } })).status).toBe(200);
    // Sticky on, so the login and the check land on the same replica before the reset.
    expect((await api('/api/settings', { method: 'POST', body: { settings: ['session_php.sticky=on'] } })).status).toBe(200);
    const proxy = `http://127.0.0.1:${lab.proxyPort}/session`;
    const login = await fetch(`${proxy}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'bob' }) });
    expect(login.status).toBe(200);
    const cookie = login.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
    expect(cookie).toMatch(/PHPSESSID=/);
    const before = (await (await fetch(`${proxy}/`, { headers: { cookie } })).json()) as { user: string | null; knownSession: boolean };
    expect(before).toMatchObject({ user: 'bob', knownSession: true });

    expect((await api('/api/reset', { method: 'POST', body: {} })).status).toBe(200);
    expect(lab.lab.status().topology.services.session_php?.balancer?.sticky).toBeUndefined();
    for (let i = 0; i < 3; i++) {
      const after = (await (await fetch(`${proxy}/`, { headers: { cookie } })).json()) as { user: string | null; knownSession: boolean };
      expect(after.knownSession, JSON.stringify(after)).toBe(false);
      expect(after.user).toBeNull();
    }
  });

  it('{lesson: null} restores the default topology and forgets the class lesson', async () => {
    const res = await api('/api/reset', { method: 'POST', body: { lesson: null } });
    expect(res.status).toBe(200);
    const status = await res.json();
    expect(status.lesson).toBeNull();
    expect(status.services.map((s: { name: string; instances: unknown[] }) => `${s.name} x${s.instances.length}`)).toEqual(['web_static x3', 'web_dynamic x3']);
    expect(((await (await api('/api/session')).json()) as SessionInfo).lesson).toBeNull();
    expect((await api('/api/reset', { method: 'POST', body: { lesson: 'nope' } })).status).toBe(404);
  });
});

describe('export', () => {
  it('gives the run as JSON: exact counts per replica, the requests, topology and proxy config', async () => {
    await api('/api/reset', { method: 'POST', body: { lesson: null } });
    for (let i = 0; i < 9; i++) expect(await rawGet('/api/')).toBe(200);
    let run: RunExport | null = null;
    await until(async () => {
      run = (await (await api('/api/export', { token: READONLY })).json()) as RunExport;
      return run.counts.total >= 9;
    }, '9 requests in the export');
    const r = run!;
    expect(r.format).toBe('balancer-lab-run');
    const dynamic = lab.lab.status().services.find((s) => s.name === 'web_dynamic')!.instances.map((i) => i.hostname);
    // Round-robin over 3: 3 each, and the list names the same replicas in rotation.
    expect(Object.fromEntries(dynamic.map((h) => [h, r.counts.byReplica[h]]))).toEqual(Object.fromEntries(dynamic.map((h) => [h, 3])));
    expect(r.requests.filter((q) => q.service === 'web_dynamic')).toHaveLength(9);
    expect(r.requests.every((q) => q.at >= r.startedAt)).toBe(true);
    expect(r.topology.services.web_dynamic?.replicas).toBe(3);
    expect(r.proxy.driver).toBe('embedded');
    expect(r.proxy.config).toContain('web_dynamic');
    expect(r.replicas.map((x) => x.hostname).sort()).toEqual(lab.lab.status().services.flatMap((s) => s.instances.map((i) => i.hostname)).sort());
    expect(r.labLog.some((l) => l.text === 'reset')).toBe(true);
  });

  it('gives a self-contained HTML report that names the replicas and escapes what it shows', async () => {
    expect(await rawGet('/"><script>alert(1)</script>')).toBeGreaterThan(0);
    let html = '';
    await until(async () => {
      const res = await api('/api/export.html', { token: READONLY });
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="?balancer-lab-run-[\dT-]+Z\.html"?$/);
      html = await res.text();
      return html.includes('script&gt;alert(1)');
    }, 'the odd request in the report');
    expect(html).not.toContain('<script>alert(1)');
    expect(html).toContain("default-src 'none'");
    // Nothing is loaded from anywhere: no src or href to another document.
    expect(html).not.toMatch(/\s(src|href)=["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/<link\s/i);
    for (const h of lab.lab.status().services.find((s) => s.name === 'web_dynamic')!.instances.map((i) => i.hostname)) {
      expect(html).toContain(`data-replica="${h}" data-count="3"`);
    }
  });
});
