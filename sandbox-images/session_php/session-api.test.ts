/**
 * The session app's API, checked the same way against both implementations: the real PHP one
 * (router.php under `php -S`) and its Express stand-in (../session_express/server.js), each run
 * as two real replicas by the lab's ProcessRuntime. Same answers, same cookie, same behaviour.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ProcessRuntime } from '../../lab/runtime/process-runtime.ts';
import type { ReplicaHandle } from '../../lab/seams.ts';

const HAS_PHP = (() => {
  try {
    return execFileSync('php', ['-r', 'echo extension_loaded("session") ? "yes" : "no";'], { encoding: 'utf8' }) === 'yes';
  } catch {
    return false;
  }
})();
if (!HAS_PHP) console.warn('php (with its session extension) is not on PATH: the PHP half of the session API suite is skipped.');

interface View {
  hostname: string;
  user: string | null;
  sessionId: string | null;
  knownSession: boolean;
  visits: number;
}

const IMPLEMENTATIONS = [
  { name: 'php', php: 'php' as string | null, backend: /^php \d+\.\d+\.\d+/, skip: !HAS_PHP },
  { name: 'express stand-in', php: null, backend: /^express \(php not found\)$/, skip: false },
];

describe.each(IMPLEMENTATIONS)('session app: $name', ({ name, php, backend, skip }) => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-session-api-'));
  const runtime = new ProcessRuntime({ sessionId: `api${process.pid}-${name.replace(/\W/g, '')}`, stateDir, php });
  const logs: string[] = [];
  let a: ReplicaHandle;
  let b: ReplicaHandle;

  beforeAll(async () => {
    if (skip) return;
    const hooks = { onLog: (_s: 'stdout' | 'stderr', text: string) => void logs.push(text), onExit() {} };
    [a, b] = await Promise.all([
      runtime.start({ service: 'session_php', hostname: 'sess-a' }, hooks),
      runtime.start({ service: 'session_php', hostname: 'sess-b' }, hooks),
    ]);
  });

  afterAll(async () => {
    await runtime.stopAll();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  const url = (h: ReplicaHandle, p: string) => `http://127.0.0.1:${h.port}${p}`;
  const withCookie = (id: string | null): Record<string, string> => (id === null ? {} : { cookie: `PHPSESSID=${id}` });

  async function get(h: ReplicaHandle, id: string | null = null) {
    const res = await fetch(url(h, '/'), { headers: withCookie(id) });
    expect(res.status).toBe(200);
    return { res, body: (await res.json()) as View };
  }

  async function post(h: ReplicaHandle, p: string, init: { id?: string | null; type?: string; body?: string } = {}) {
    const headers: Record<string, string> = { ...withCookie(init.id ?? null) };
    if (init.type) headers['content-type'] = init.type;
    const res = await fetch(url(h, p), { method: 'POST', headers, body: init.body });
    const text = await res.text();
    return { res, text, json: () => JSON.parse(text) as View & { error?: string } };
  }

  /** The new session id from a login answer's Set-Cookie, checking the cookie's attributes. */
  function issuedId(res: Response): string {
    const cookies = res.headers.getSetCookie();
    expect(cookies).toHaveLength(1);
    const m = /^PHPSESSID=([a-v0-9]{26}); path=\/; HttpOnly; SameSite=Lax$/i.exec(cookies[0]);
    expect(m, cookies[0]).not.toBeNull();
    return m![1];
  }

  test.skipIf(skip)('GET / without a cookie: anonymous, no session and no cookie; the usual headers', async () => {
    const { res, body } = await get(a);
    expect(body).toEqual({ hostname: 'sess-a', user: null, sessionId: null, knownSession: false, visits: 0 });
    expect(res.headers.getSetCookie()).toEqual([]);
    expect(res.headers.get('x-served-by')).toBe('sess-a');
    expect(res.headers.get('x-session-backend')).toMatch(backend);
    expect(res.headers.get('x-session-backend')).toBe(a.implementation);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.headers.get('x-powered-by')).toBeNull();

    const health = await fetch(url(b, '/health'));
    expect(health.status).toBe(200);
    expect(health.headers.get('x-served-by')).toBe('sess-b');
    expect(await health.json()).toEqual({ status: 'ok' });
    const head = await fetch(url(a, '/'), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  test.skipIf(skip)('a login lives on the replica that made it; the other adopts the id as an empty session', async () => {
    const login = await post(a, '/login', { type: 'application/json', body: JSON.stringify({ user: 'bob' }) });
    expect(login.res.status).toBe(200);
    const id = issuedId(login.res);
    expect(login.json()).toEqual({ hostname: 'sess-a', user: 'bob', sessionId: id, knownSession: false, visits: 1 });

    const again = await get(a, id);
    expect(again.body).toEqual({ hostname: 'sess-a', user: 'bob', sessionId: id, knownSession: true, visits: 2 });
    expect(again.res.headers.getSetCookie()).toEqual([]); // the cookie is left alone

    // B never heard of it: anonymous. Like PHP without strict mode it adopts the id (and leaves the
    // cookie alone), so the next visit to B finds that (empty) session: known, still anonymous.
    const first = await get(b, id);
    expect(first.body).toEqual({ hostname: 'sess-b', user: null, sessionId: id, knownSession: false, visits: 1 });
    expect(first.res.headers.getSetCookie()).toEqual([]);
    expect((await get(b, id)).body).toEqual({ hostname: 'sess-b', user: null, sessionId: id, knownSession: true, visits: 2 });
    // ...and A still has bob: the login flips between replicas.
    expect((await get(a, id)).body).toMatchObject({ user: 'bob', knownSession: true, visits: 3 });
  });

  test.skipIf(skip)('logging in again moves the session to a new id (no fixation); the old id is forgotten', async () => {
    const first = await post(a, '/login', { type: 'application/x-www-form-urlencoded', body: 'user=carol' });
    const oldId = issuedId(first.res);
    expect(first.json()).toMatchObject({ user: 'carol', sessionId: oldId, visits: 1 });
    const second = await post(a, '/login', { id: oldId }); // no body: the default user
    const newId = issuedId(second.res);
    expect(newId).not.toBe(oldId);
    expect(second.json()).toEqual({ hostname: 'sess-a', user: 'alice', sessionId: newId, knownSession: true, visits: 2 });
    expect((await get(a, newId)).body).toMatchObject({ user: 'alice', knownSession: true });
    expect((await get(a, oldId)).body).toMatchObject({ user: null, knownSession: false });
  });

  test.skipIf(skip)('logout destroys the session and expires the cookie', async () => {
    const id = issuedId((await post(b, '/login', { type: 'application/json', body: '{"user":"dave"}' })).res);
    const out = await post(b, '/logout', { id });
    expect(out.res.status).toBe(200);
    expect(out.json()).toEqual({ hostname: 'sess-b', user: null, sessionId: null, knownSession: true, visits: 0 });
    const cookies = out.res.headers.getSetCookie();
    expect(cookies).toHaveLength(1);
    expect(cookies[0]).toMatch(/^PHPSESSID=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; path=\/; HttpOnly; SameSite=Lax$/i);
    expect((await get(b, id)).body).toMatchObject({ user: null, knownSession: false });

    const anonymous = await post(b, '/logout');
    expect(anonymous.json()).toEqual({ hostname: 'sess-b', user: null, sessionId: null, knownSession: false, visits: 0 });
    expect(anonymous.res.headers.getSetCookie()).toEqual([]);
  });

  test.skipIf(skip)('a malformed cookie is ignored by GET / and replaced at login', async () => {
    expect((await get(a, 'not!valid')).body).toEqual({ hostname: 'sess-a', user: null, sessionId: null, knownSession: false, visits: 0 });
    const login = await post(a, '/login', { id: 'not!valid' });
    expect(login.res.status).toBe(200);
    const id = issuedId(login.res);
    expect(login.json()).toMatchObject({ user: 'alice', sessionId: id, knownSession: false });
  });

  test.skipIf(skip)('refuses bad user names and bodies with a 4xx that names the replica', async () => {
    const json = 'application/json';
    const cases: [string | undefined, string, number, RegExp][] = [
      [json, '{"user":"b o b"}', 400, /user must be 1-32 letters or digits/],
      [json, '{"user":""}', 400, /user must be 1-32 letters or digits/],
      [json, JSON.stringify({ user: 'x'.repeat(33) }), 400, /user must be 1-32 letters or digits/],
      [json, '{"user":5}', 400, /user must be 1-32 letters or digits/],
      [json, '["alice"]', 400, /must be a JSON object/],
      [json, 'null', 400, /must be a JSON object/],
      [json, '{"user":', 400, /not valid JSON/],
      ['application/x-www-form-urlencoded', 'user=', 400, /user must be 1-32 letters or digits/],
      ['text/plain', 'alice', 415, /send the user as JSON/],
      [json, JSON.stringify({ user: 'alice', pad: 'x'.repeat(20_000) }), 413, /at most 16384 bytes/],
    ];
    for (const [type, body, status, error] of cases) {
      const res = await post(a, '/login', { type, body });
      expect(res.res.status, `${type} ${body.slice(0, 40)}`).toBe(status);
      expect(res.json()).toMatchObject({ hostname: 'sess-a' });
      expect(res.json().error).toMatch(error);
      expect(res.res.headers.getSetCookie()).toEqual([]);
      expect(res.res.headers.get('x-served-by')).toBe('sess-a');
    }
  });

  test.skipIf(skip)('unknown paths are 404 and wrong methods 405, as JSON', async () => {
    const missing = await fetch(url(a, '/nope'));
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: 'no route for GET /nope', hostname: 'sess-a' });
    const getLogin = await fetch(url(a, '/login'));
    expect(getLogin.status).toBe(405);
    expect(getLogin.headers.get('allow')).toBe('POST');
    expect(await getLogin.json()).toEqual({ error: '/login answers POST only', hostname: 'sess-a' });
    const postRoot = await fetch(url(a, '/'), { method: 'POST' });
    expect(postRoot.status).toBe(405);
    expect(postRoot.headers.get('allow')).toBe('GET, HEAD');
    await postRoot.arrayBuffer();
  });

  test.skipIf(skip)('logs one access line per request, naming the replica', async () => {
    await (await fetch(url(b, '/health'))).arrayBuffer();
    expect(logs).toContainEqual(expect.stringMatching(/^sess-b 127\.0\.0\.1 GET \/health 200 15 - [\d.]+ ms$/));
    expect(logs).toContainEqual(expect.stringMatching(/^sess-a 127\.0\.0\.1 POST \/login 400 \d+ - [\d.]+ ms$/));
  });
});
