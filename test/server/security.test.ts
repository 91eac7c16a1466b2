/**
 * Security checks against a real lab (process runtime, real replicas, the real server on free
 * ports), issue 8 "Robustness and security":
 *
 * - every /api route, enumerated from the Express app itself (not a hand list), refuses a missing,
 *   wrong or wrongly sent token with 401 and a sentence; the watch-only token cannot command (403);
 * - a foreign Origin or a Host other than this lab's is refused with 403 on every route, on the
 *   page and on the socket (DNS rebinding);
 * - the token never reaches the proxy side: no request arriving at the proxy carries it (the lab's
 *   own probes included), no answer through the proxy (the demo apps' pages, headers) contains it,
 *   and nothing the lab answers sets a cookie;
 * - every POST body over 16 KiB is refused with 413 and a sentence (chunked too);
 * - the HAProxy Runtime API console forwards only its allow-listed commands (fast-check), and
 *   HAProxy is the same process and still serves afterwards;
 * - no input reaches a shell: no source under lab/ or server/ uses child_process exec/execSync or
 *   `shell: true`.
 *
 * Already covered elsewhere and not repeated: the 401/403 for /api/status and a wrong socket token
 * (api.test.ts), the watch-only 403 on a hand list of commands (classroom.test.ts), the allow-list
 * patterns themselves (lab/proxy/haproxy/runtime-api.test.ts) and the console on a bare driver
 * (haproxy-driver.test.ts).
 */
import diagnostics from 'node:diagnostics_channel';
import http from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { io } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventBus } from '../../lab/events.ts';
import type { Lab } from '../../lab/lab.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import { ALLOWED_COMMANDS } from '../../lab/proxy/haproxy/runtime-api.ts';
import { createLabServer } from '../../server/app.ts';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { WATCH_ONLY_REFUSAL, type LabStatus } from '../../server/protocol.ts';
import { REPO_ROOT } from '../../server/state-file.ts';
import { isGone } from '../support/processes.ts';

const READONLY = 'security-watch-only-token-0123456789';
const haproxy = await HaproxyDriver.available();

interface ApiRoute {
  method: 'GET' | 'POST';
  path: string;
}

/**
 * The /api routes as the Express app declares them: a lab server is built (never listening) and
 * its router stack read. `http.createServer` is wrapped for that one call to get the app, since the
 * server's request listener is socket.io's wrapper around it.
 */
async function declaredApiRoutes(): Promise<ApiRoute[]> {
  let app: { router: { stack: Array<{ name: string; handle: { stack?: Array<{ route?: { path: string; methods: Record<string, boolean> } }> }; matchers: Array<(p: string) => unknown> }> } } | undefined;
  const original = http.createServer;
  (http as { createServer: unknown }).createServer = (handler: http.RequestListener) => {
    app = handler as unknown as typeof app;
    return original(handler);
  };
  let server;
  try {
    server = createLabServer({ lab: {} as Lab, bus: new EventBus(), token: 'enumerate', staticDir: tmpdir() });
  } finally {
    (http as { createServer: unknown }).createServer = original;
  }
  await server.close();
  const mount = app!.router.stack.find((l) => l.handle.stack && l.matchers.some((m) => m('/api/status')));
  expect(mount, 'the /api router').toBeDefined();
  return mount!.handle.stack!.flatMap((l) =>
    l.route ? Object.keys(l.route.methods).map((m) => ({ method: m.toUpperCase() as 'GET' | 'POST', path: `/api${l.route!.path}` })) : [],
  );
}

let lab: RunningLab;
let stateDir: string;
let routes: ApiRoute[];
let replicaHost: string;
const pids = new Set<number>();
/** Every request that arrived at the proxy's port while the lab ran (node:http's diagnostics channel). */
const atProxy: Array<{ url: string; headers: http.IncomingHttpHeaders }> = [];
const onServerRequest = (message: unknown) => {
  const { request, server } = message as { request: http.IncomingMessage; server: http.Server };
  const addr = server.address();
  if (lab && typeof addr === 'object' && addr && addr.port === lab.lab.status().proxy.port) atProxy.push({ url: request.url ?? '', headers: { ...request.headers } });
};

/** A concrete path for a declared route: parameters filled with names that exist. */
function concrete(p: string): string {
  return p.replace(':service', 'web_dynamic').replace(':hostname', replicaHost).replace(':id', 'rotation-seen');
}

/** One request through node:http (Host and Origin can be set; fetch forbids Host). */
function raw(
  method: string,
  target: string,
  headers: Record<string, string> = {},
  body?: string | Buffer,
  port = lab.port,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: target, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString() }));
    });
    // The server may answer (401/403/413) and close before the whole body is sent.
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)));
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

function errorOf(text: string): string {
  try {
    return String((JSON.parse(text) as { error?: unknown }).error ?? '');
  } catch {
    return '';
  }
}

/** A sentence in `{error}`: a few words on one line, no stack trace. */
function expectSentence(text: string, what: string): void {
  const error = errorOf(text);
  expect(error, `${what}: ${text.slice(0, 200)}`).toMatch(/^\S.{9,}$/);
  expect(error, what).not.toMatch(/\n\s+at |\[object /);
}

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

beforeAll(async () => {
  routes = await declaredApiRoutes();
  diagnostics.subscribe('http.server.request.start', onServerRequest);
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-security-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir, readonlyToken: READONLY });
  const status = lab.lab.status();
  replicaHost = status.services.find((s) => s.name === 'web_dynamic')!.instances[0].hostname;
  for (const r of status.services.flatMap((s) => s.instances)) if (r.pid) pids.add(r.pid);
}, 120_000);

afterAll(async () => {
  diagnostics.unsubscribe('http.server.request.start', onServerRequest);
  for (const r of lab?.lab.status().services.flatMap((s) => s.instances) ?? []) if (r.pid) pids.add(r.pid);
  await lab?.stop();
  for (const pid of pids) expect(isGone(pid), `replica pid ${pid}`).toBe(true);
  rmSync(stateDir, { recursive: true, force: true });
});

describe('the token', () => {
  it('the app declares the /api routes the lab serves (read from its router, not a hand list)', () => {
    expect(routes.length).toBeGreaterThanOrEqual(25);
    expect(routes).toContainEqual({ method: 'GET', path: '/api/status' });
    expect(routes).toContainEqual({ method: 'POST', path: '/api/reset' });
    expect(routes).toContainEqual({ method: 'POST', path: '/api/proxy/runtime' });
  });

  it('every /api route refuses a missing, wrong or wrongly sent token with 401 and a sentence', async () => {
    const wrongs: Array<[string, Record<string, string>, string]> = [
      ['no header', {}, ''],
      ['wrong token of the same length', bearer('x'.repeat(lab.token.length)), ''],
      ['token with one character changed', bearer(`${lab.token.slice(0, -1)}${lab.token.endsWith('A') ? 'B' : 'A'}`), ''],
      ['token prefix', bearer(lab.token.slice(0, 8)), ''],
      ['token plus a suffix', bearer(`${lab.token}x`), ''],
      ['Basic scheme', { authorization: `Basic ${lab.token}` }, ''],
      ['bare token, no scheme', { authorization: lab.token }, ''],
      ['token in the query string', {}, `?token=${encodeURIComponent(lab.token)}`],
      ['token in a cookie', { cookie: `token=${lab.token}` }, ''],
      ['token in X-Token', { 'x-token': lab.token }, ''],
    ];
    const before = lab.lab.status();
    for (const route of routes) {
      for (const [what, headers, query] of wrongs) {
        const body = route.method === 'POST' ? '{}' : undefined;
        const r = await raw(route.method, `${concrete(route.path)}${query}`, { ...headers, ...(body ? { 'content-type': 'application/json' } : {}) }, body);
        expect(r.status, `${route.method} ${route.path} with ${what}`).toBe(401);
        expectSentence(r.text, `${route.method} ${route.path} with ${what}`);
      }
    }
    const after = lab.lab.status();
    expect(after.services.map((s) => s.instances.map((r) => r.hostname))).toEqual(before.services.map((s) => s.instances.map((r) => r.hostname)));
  });

  it('the watch-only token reads every GET route and is refused every other one with 403, before the body is read', async () => {
    const before = lab.lab.status();
    for (const route of routes) {
      const target = concrete(route.path);
      if (route.method === 'GET') {
        const r = await raw('GET', target, bearer(READONLY));
        // /api/capture/file without a recording is a 404; never a 401/403.
        expect([200, 404], `GET ${route.path}`).toContain(r.status);
        continue;
      }
      const r = await raw('POST', target, { ...bearer(READONLY), 'content-type': 'application/json' }, JSON.stringify({ pad: 'x'.repeat(64 * 1024) }));
      expect(r.status, `POST ${route.path}`).toBe(403);
      expect(errorOf(r.text)).toBe(WATCH_ONLY_REFUSAL);
    }
    for (const method of ['PUT', 'DELETE', 'PATCH']) expect((await raw(method, '/api/reset', bearer(READONLY))).status).toBe(403);
    const after = lab.lab.status();
    expect(after.topology).toEqual(before.topology);
    expect(after.services.map((s) => s.instances.map((r) => `${r.hostname} ${r.state}`))).toEqual(before.services.map((s) => s.instances.map((r) => `${r.hostname} ${r.state}`)));
  });
});

describe('Host and Origin (no CSRF, no DNS rebinding)', () => {
  const foreignHosts = (port: number) => [
    `attacker.example:${port}`,
    `localhost.attacker.example:${port}`,
    `127.0.0.1.nip.io:${port}`,
    `192.168.1.20:${port}`,
    `0.0.0.0:${port}`,
    `[::ffff:127.0.0.1]:${port}`,
    'attacker.example',
  ];
  const foreignOrigins = (port: number) => [
    'http://attacker.example',
    `http://attacker.example:${port}`,
    `https://localhost:${port}`,
    `http://localhost:${port + 1}`,
    `http://localhost.attacker.example:${port}`,
    'null',
    'file://',
    `ws://localhost:${port}`,
  ];

  it('every /api route refuses a foreign Host or Origin with 403 and a sentence, even with the token', async () => {
    for (const route of routes) {
      const target = concrete(route.path);
      for (const host of foreignHosts(lab.port)) {
        const r = await raw(route.method, target, { ...bearer(lab.token), host });
        expect(r.status, `${route.method} ${route.path} Host ${host}`).toBe(403);
        expectSentence(r.text, `Host ${host}`);
      }
      for (const origin of foreignOrigins(lab.port)) {
        const r = await raw(route.method, target, { ...bearer(lab.token), host: `localhost:${lab.port}`, origin });
        expect(r.status, `${route.method} ${route.path} Origin ${origin}`).toBe(403);
        expectSentence(r.text, `Origin ${origin}`);
      }
    }
  });

  it('the page itself is refused on a foreign Host (a rebinding page cannot read it), served on its own', async () => {
    for (const host of foreignHosts(lab.port)) expect((await raw('GET', '/', { host })).status, host).toBe(403);
    for (const host of [`localhost:${lab.port}`, `127.0.0.1:${lab.port}`, `[::1]:${lab.port}`]) expect((await raw('GET', '/', { host })).status, host).not.toBe(403);
  });

  it('the socket refuses a foreign Origin and a foreign Host even with the token', async () => {
    const refused = async (extraHeaders: Record<string, string>) => {
      const socket = io(lab.apiUrl, { auth: { token: lab.token }, transports: ['polling'], reconnection: false, forceNew: true, extraHeaders });
      const outcome = await new Promise<string>((resolve) => {
        socket.on('connect', () => resolve('connected'));
        socket.on('connect_error', (err) => resolve(`refused: ${err.message}`));
      });
      socket.close();
      return outcome;
    };
    expect(await refused({ origin: 'http://attacker.example' })).toMatch(/^refused/);
    expect(await refused({ origin: `http://localhost:${lab.port + 1}` })).toMatch(/^refused/);
    // With its own Origin it connects (the refusals above are about the Origin, not the transport).
    expect(await refused({ origin: `http://127.0.0.1:${lab.port}` })).toBe('connected');
    // Host over a raw handshake (the client cannot set Host): engine.io answers 403.
    const r = await raw('GET', '/socket.io/?EIO=4&transport=polling', { host: `attacker.example:${lab.port}` });
    expect(r.status).toBe(403);
  });
});

describe('the token never reaches the proxy side', () => {
  it('no answer through the proxy contains it, no request at the proxy carries it, nothing sets a cookie with it', async () => {
    const secrets = [lab.token, READONLY, encodeURIComponent(lab.token)];
    const leaks = (text: string) => secrets.filter((s) => text.includes(s));
    // The lab page opened the way a person opens it (token in the URL), and every GET of the API:
    // the lab server sets no cookie at all (cookies ignore ports: the demo apps would get it).
    const seen: Array<{ what: string; headers: http.IncomingHttpHeaders; text: string }> = [];
    for (const target of ['/', `/?token=${encodeURIComponent(lab.token)}`, '/lessons/round-robin', '/assets/none.js']) {
      const r = await raw('GET', target, { host: `localhost:${lab.port}` });
      expect(r.headers['set-cookie'], `lab server ${target}`).toBeUndefined();
    }
    for (const route of routes.filter((r) => r.method === 'GET')) {
      const r = await raw('GET', concrete(route.path), bearer(lab.token));
      expect(r.headers['set-cookie'], route.path).toBeUndefined();
    }
    // The lab's own traffic through the proxy: a probe burst, the request tester, a short load.
    const post = (p: string, body: unknown) => raw('POST', p, { ...bearer(lab.token), 'content-type': 'application/json' }, JSON.stringify(body));
    const probe = await post('/api/probe', { path: '/api/', count: 6, cookies: true });
    expect(probe.status).toBe(200);
    seen.push({ what: 'probe results', headers: {}, text: probe.text });
    const tested = await post('/api/route-test', { host: 'localhost', path: '/' });
    expect(tested.status).toBe(200);
    seen.push({ what: 'route-test result', headers: {}, text: tested.text });
    expect((await post('/api/load', { rate: 10, seconds: 1, path: '/api/' })).status).toBe(200);
    // Pages as a browser with the lab open would fetch them, on both host names it may use.
    for (const host of [`localhost:${lab.proxyPort}`, `demo.localhost:${lab.proxyPort}`, `127.0.0.1:${lab.proxyPort}`]) {
      for (const target of ['/', '/index.html', '/api/', '/api/health', '/health', '/no-such-page', `/?token=probe`]) {
        const r = await raw('GET', target, { host, referer: `http://localhost:${lab.port}/` }, undefined, lab.proxyPort);
        seen.push({ what: `proxy ${host}${target}`, headers: r.headers, text: r.text });
      }
    }
    await new Promise<void>((resolve) => {
      const off = lab.bus.on('load:finished', () => {
        off();
        resolve();
      });
    });
    for (const s of seen) {
      expect(leaks(s.text), `${s.what} body`).toEqual([]);
      expect(leaks(JSON.stringify(s.headers)), `${s.what} headers`).toEqual([]);
      for (const c of [s.headers['set-cookie'] ?? []].flat()) expect(leaks(c), `${s.what} Set-Cookie`).toEqual([]);
    }
    // Everything that arrived at the proxy (our requests above and the lab's own probe, route
    // test and load): none carried the token in its target or headers.
    expect(atProxy.length).toBeGreaterThan(30);
    for (const r of atProxy) expect(leaks(`${r.url} ${JSON.stringify(r.headers)}`), r.url).toEqual([]);
    expect(atProxy.filter((r) => r.headers.authorization !== undefined)).toEqual([]);
  });
});

describe('request bodies are size-limited', () => {
  it('every POST route refuses a body over 16 KiB with 413 and a sentence; the lab is unchanged', async () => {
    const before = lab.lab.status();
    const big = JSON.stringify({ settings: ['x'.repeat(17 * 1024)] });
    for (const route of routes.filter((r) => r.method === 'POST')) {
      const r = await raw('POST', concrete(route.path), { ...bearer(lab.token), 'content-type': 'application/json' }, big);
      expect(r.status, route.path).toBe(413);
      expectSentence(r.text, route.path);
      expect(errorOf(r.text)).toMatch(/larger than 16384 bytes/);
    }
    expect(lab.lab.status().services.map((s) => s.instances.map((r) => r.hostname))).toEqual(before.services.map((s) => s.instances.map((r) => r.hostname)));
  });

  it('also when the body is chunked (no Content-Length), and at once when a declared length is over the limit', async () => {
    const chunked = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: lab.port, method: 'POST', path: '/api/settings', agent: false, headers: { ...bearer(lab.token), 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)));
      req.write('{"settings":["');
      for (let i = 0; i < 40; i++) req.write('x'.repeat(1024));
      req.end('"]}');
    });
    expect(chunked.status).toBe(413);
    expectSentence(chunked.text, 'chunked');
    // A declared length over the limit is answered at once, without waiting for (or reading) the body.
    const declared = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: lab.port, method: 'POST', path: '/api/reset', agent: false, headers: { ...bearer(lab.token), 'content-type': 'application/json', 'content-length': String(1024 ** 3) } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)));
      req.write('{"lesson":'); // and never the rest of the declared gigabyte
    });
    expect(declared.status).toBe(413);
    expectSentence(declared.text, 'declared 1 GiB');
  });
});

describe('no input reaches a shell', () => {
  /** Every .ts/.js/.mjs source under lab/ and server/ (tests included: they run on the same machine). */
  function sources(dir: string): string[] {
    return readdirSync(dir).flatMap((name) => {
      const p = path.join(dir, name);
      if (name === 'node_modules') return [];
      if (statSync(p).isDirectory()) return sources(p);
      return /\.(ts|js|mjs|cjs)$/.test(name) ? [p] : [];
    });
  }

  it('no source under lab/ or server/ uses child_process exec/execSync or shell: true', () => {
    const files = [...sources(path.join(REPO_ROOT, 'lab')), ...sources(path.join(REPO_ROOT, 'server'))];
    expect(files.length).toBeGreaterThan(30);
    const problems: string[] = [];
    let spawning = 0;
    for (const file of files) {
      const text = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
      const rel = path.relative(REPO_ROOT, file);
      const imports = [...text.matchAll(/import\s+(?:(\*\s+as\s+\w+|\w+)\s*,?\s*)?(?:\{([^}]*)\})?\s*from\s*['"](?:node:)?child_process['"]/g)];
      const requires = /require\(\s*['"](?:node:)?child_process['"]\s*\)/.test(text);
      if (imports.length === 0 && !requires) {
        if (/\bshell\s*:\s*(true|['"`])/.test(text)) problems.push(`${rel}: shell option`);
        continue;
      }
      spawning++;
      for (const m of imports) {
        const named = (m[2] ?? '').split(',').map((s) => s.trim().split(/\s+as\s+/)[0]).filter(Boolean);
        for (const n of named) if (n === 'exec' || n === 'execSync') problems.push(`${rel}: imports ${n} from child_process`);
        const ns = m[1]?.replace(/^\*\s+as\s+/, '').trim();
        if (ns && new RegExp(`\\b${ns}\\.(exec|execSync)\\s*\\(`).test(text)) problems.push(`${rel}: calls ${ns}.exec/execSync`);
      }
      if (requires) problems.push(`${rel}: require('child_process') (not checked; use an import)`);
      if (/\bshell\s*:\s*(true|['"`])/.test(text)) problems.push(`${rel}: shell option`);
      // A command through a shell binary: spawn('sh', ['-c', ...]) / execFile('bash', ...).
      if (/\b(?:spawn|spawnSync|execFile|execFileSync)\(\s*['"](?:\/bin\/|\/usr\/bin\/)?(?:sh|bash|dash|zsh)['"]/.test(text)) problems.push(`${rel}: runs a shell binary`);
    }
    expect(problems).toEqual([]);
    expect(spawning, 'files that start processes (with argument arrays)').toBeGreaterThan(0);
  });
});

// Last: it switches the lab to HAProxy.
describe.runIf(haproxy.ok)('the HAProxy Runtime API console', () => {
  const command = (c: unknown, token = lab.token) =>
    raw('POST', '/api/proxy/runtime', { ...bearer(token), 'content-type': 'application/json' }, JSON.stringify({ command: c }));

  it('forwards allow-listed commands and refuses every other one with 400 and the list of allowed commands', async () => {
    const switched = await raw('POST', '/api/proxy', { ...bearer(lab.token), 'content-type': 'application/json' }, JSON.stringify({ driver: 'haproxy' }));
    expect(switched.status).toBe(200);
    const status = JSON.parse(switched.text) as LabStatus;
    const backend = 'web_dynamic';
    const server = status.services.find((s) => s.name === 'web_dynamic')!.instances[0].hostname;
    const info = await command('show info');
    expect(info.status).toBe(200);
    const pid = /^Pid: (\d+)$/m.exec((JSON.parse(info.text) as { output: string }).output)?.[1];
    expect(pid).toBeDefined();
    expect((await command('show stat')).status).toBe(200);
    expect((await command(`show servers state ${backend}`)).status).toBe(200);

    const refused = [
      'shutdown frontend web',
      'shutdown sessions server web_dynamic/x',
      'show info; shutdown frontend web',
      'show info\nshutdown frontend web',
      'show info\r\nquit',
      `set server ${backend}/${server} addr 10.0.0.1`,
      `set server ${backend}/${server} weight 999`,
      'set maxconn global 1',
      'set rate-limit connections global 1',
      'clear counters all',
      'show acl',
      'add acl #0 /',
      'set ssl cert /etc/passwd',
      'show cli sockets',
      'show fd',
      'show env',
      'debug dev exit 1',
      'expert-mode on',
      'prompt',
      'quit',
      '@master show proc',
      '@!1 show info',
      'show info '.repeat(40),
      '',
      '   ',
      'show\u0000info',
      'show stat\u001b[2J',
      '$(reboot)',
      '`id`',
    ];
    for (const c of refused) {
      const r = await command(c);
      if (c.length > 300 || c === '') {
        expect(r.status, JSON.stringify(c)).toBe(400); // refused by the body schema
        expectSentence(r.text, JSON.stringify(c));
        continue;
      }
      expect(r.status, JSON.stringify(c)).toBe(400);
      expect(errorOf(r.text), JSON.stringify(c)).toMatch(/Allowed commands: show info;/);
    }
    for (const c of [42, null, ['show info'], { command: 'show info' }]) expect((await command(c)).status, JSON.stringify(c)).toBe(400);
    // The watch-only token cannot use the console, not even for a read-only command.
    const watch = await command('show info', READONLY);
    expect(watch.status).toBe(403);

    const again = await command('show info');
    expect(/^Pid: (\d+)$/m.exec((JSON.parse(again.text) as { output: string }).output)?.[1]).toBe(pid);
  });

  it('fast-check: any text no allowed pattern matches is refused, and HAProxy still serves afterwards', async () => {
    const allowed = (c: string) => {
      const norm = c.trim().replace(/[ \t]+/g, ' ');
      return ALLOWED_COMMANDS.some((a) => a.re.test(norm));
    };
    const words = fc.constantFrom('show', 'set', 'add', 'del', 'shutdown', 'clear', 'enable', 'disable', 'server', 'health', 'info', 'stat', 'sess', 'web_dynamic/x', 'weight', '1', 'state', 'maint', 'frontend', 'web', 'acl', 'map', 'ssl', 'debug', ';', '\n', 'ü', '../../etc/passwd', '$(id)', '@master');
    const commands = fc.oneof(
      fc.array(words, { minLength: 1, maxLength: 6 }).map((w) => w.join(' ')),
      fc.string({ unit: 'grapheme', maxLength: 80 }),
      fc.string({ unit: 'binary', maxLength: 80 }),
    );
    let refusedCount = 0;
    await fc.assert(
      fc.asyncProperty(commands, async (c) => {
        if (allowed(c)) return;
        const r = await command(c);
        if (r.status !== 400) throw new Error(`${JSON.stringify(c)} -> ${r.status} ${r.text.slice(0, 200)}`);
        expectSentence(r.text, JSON.stringify(c));
        refusedCount++;
      }),
      { numRuns: 300 },
    );
    expect(refusedCount).toBeGreaterThan(250);
    const s = lab.lab.status();
    expect(s.proxy.driver).toBe('haproxy');
    const page = await raw('GET', '/api/', { host: `localhost:${s.proxy.port}` }, undefined, s.proxy.port);
    expect(page.status).toBe(200);
    expect(page.headers['x-served-by']).toMatch(/^web_dynamic-/);
  });
});
if (!haproxy.ok) console.log(`security: the Runtime API console checks skipped because ${haproxy.reason}`);
