/**
 * Lesson 07 (routing): every claim the page makes, against the real proxies (embedded and, when
 * installed, HAProxy 2.6) and real web_static / web_dynamic replicas, through the lab server's
 * HTTP API: the request tester (POST /api/route-test), the routes editor (POST /api/routes), the
 * side-by-side configurations (GET /api/proxy/configs) and the lesson check.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningLab } from '../../server/compose.ts';
import { loadLessons } from '../../server/lessons.ts';
import type { Route } from '../../lab/topology.ts';
import type { LabStatus, ProxyConfigsView, RouteTestResult } from '../../server/protocol.ts';
import { api as apiOf, enginesPresent, startTestLab } from '../support/lab-server.ts';

const lesson = loadLessons().find((l) => l.slug === '07-routing');
const engines = await enginesPresent(`lesson 07`);

let lab: RunningLab;

const api = <T = LabStatus>(pathname: string, body?: unknown) => apiOf<T>(lab, pathname, body);

async function send(host: string, target: string): Promise<RouteTestResult> {
  const r = await api<RouteTestResult>('/api/route-test', { host, path: target });
  expect(r.status, r.json.error).toBe(200);
  expect(r.json.reported, 'the proxy reported the request').toBe(true);
  return r.json;
}

async function setRoutes(routes: Array<Partial<Route>>) {
  const r = await api('/api/routes', { routes });
  expect(r.status, r.json.error).toBe(200);
  return r.json;
}

async function check() {
  const r = await api<{ ok: boolean; message: string }>('/api/checks/routing-works', {});
  expect(r.status, r.json.error).toBe(200);
  return r.json;
}

const START: Array<Partial<Route>> = [
  { service: 'web_static', host: 'demo.localhost', pathPrefix: '/' },
  { service: 'web_dynamic', host: 'demo.localhost', pathPrefix: '/api/' },
  { service: 'web_dynamic', host: 'api.localhost', pathPrefix: '/' },
];
const withStrip = (routes: Array<Partial<Route>>) => routes.map((r) => (r.pathPrefix === '/api/' ? { ...r, stripPrefix: true } : r));

beforeAll(async () => {
  lab = await startTestLab('lab-lesson07-');
});

afterAll(() => lab?.stop());

describe('lesson 07-routing front matter', () => {
  it('starts with web_static and web_dynamic on demo.localhost (/api/ not stripped) and api.localhost', () => {
    expect(lesson, 'lessons/07-routing/index.md').toBeDefined();
    expect(lesson!.checks).toEqual(['routing-works']);
    expect(lesson?.topology?.routes).toEqual(START.map((r) => ({ stripPrefix: false, ...r })));
  });
});

describe.each(engines)('lesson 07-routing on %s', (engine) => {
  it('Host picks the site: demo.localhost -> web_static, api.localhost -> web_dynamic, case and port ignored', async () => {
    await lab.lab.switchProxy(engine);
    await lab.lab.reset(lesson!.topology, '07-routing');

    const demo = await send('demo.localhost', '/');
    expect(demo).toMatchObject({ driver: engine, status: 200, router: 'web_static', service: 'web_static', receivedPath: '/', priority: 41 });
    expect(demo.rule).toBe('Host(`demo.localhost`) && PathPrefix(`/`)');
    expect(demo.replica).toMatch(/^web_static-\d+-/);

    const apiHost = await send('api.localhost', '/');
    expect(apiHost).toMatchObject({ status: 200, router: 'web_dynamic-2', service: 'web_dynamic', receivedPath: '/' });
    expect(apiHost.replica).toMatch(/^web_dynamic-\d+-/);
    expect(JSON.parse(apiHost.body)).toMatchObject({ hostname: apiHost.replica });

    const upper = await send('DEMO.localhost', '/');
    expect(upper).toMatchObject({ status: 200, router: 'web_static', service: 'web_static' });
  });

  it('no router matches localhost: the proxy itself answers 404 page not found', async () => {
    const none = await send('localhost', '/');
    expect(none).toMatchObject({ status: 404, router: null, service: null, replica: null, receivedPath: null });
    expect(none.body).toBe('404 page not found\n');
  });

  it('PathPrefix without strip: /api/ reaches web_dynamic as /api/ and the replica answers 404; the check fails', async () => {
    const r = await send('demo.localhost', '/api/');
    expect(r).toMatchObject({ status: 404, router: 'web_dynamic-1', service: 'web_dynamic', receivedPath: '/api/', stripPrefix: false, priority: 45 });
    expect(r.replica).toMatch(/^web_dynamic-\d+-/);
    expect(r.body).toContain('no route for GET /api/');
    const result = await check();
    expect(result.ok, result.message).toBe(false);
    expect(result.message).toMatch(/received \/api\/ .*strip the \/api\/ prefix/);
  });

  it('with StripPrefix: /api/ arrives as / (200), /api/jokes?n=1 as /jokes?n=1; / still reaches web_static; the check passes', async () => {
    const before = lab.lab.status().services.flatMap((s) => s.instances.map((r) => r.hostname));
    await setRoutes(withStrip(START));
    // The replicas kept running: routes change live.
    expect(lab.lab.status().services.flatMap((s) => s.instances.map((r) => r.hostname))).toEqual(before);

    const r = await send('demo.localhost', '/api/');
    expect(r).toMatchObject({ status: 200, router: 'web_dynamic-1', service: 'web_dynamic', receivedPath: '/', stripPrefix: true });
    expect(JSON.parse(r.body)).toHaveProperty('joke');
    const deep = await send('demo.localhost', '/api/jokes?n=1');
    expect(deep).toMatchObject({ router: 'web_dynamic-1', receivedPath: '/jokes?n=1', status: 404 });
    expect(await send('demo.localhost', '/')).toMatchObject({ status: 200, router: 'web_static', receivedPath: '/' });

    const result = await check();
    expect(result.ok, result.message).toBe(true);
  });

  it('the longer rule wins: without its Host the /api/ rule (19) loses to Host(demo) && PathPrefix(/) (41); order changes nothing', async () => {
    const hostless = withStrip(START).map((r) => (r.pathPrefix === '/api/' ? { service: r.service, pathPrefix: r.pathPrefix, stripPrefix: true } : r));
    await setRoutes(hostless);
    const lost = await send('demo.localhost', '/api/');
    expect(lost).toMatchObject({ router: 'web_static', service: 'web_static', receivedPath: '/api/' });
    const anyHost = await send('localhost', '/api/');
    expect(anyHost).toMatchObject({ status: 200, router: 'web_dynamic-1', service: 'web_dynamic', receivedPath: '/', priority: 19 });
    const result = await check();
    expect(result.ok, result.message).toBe(false);

    // The same routes in reverse order: the same winners.
    await setRoutes([...hostless].reverse());
    expect(await send('demo.localhost', '/api/')).toMatchObject({ router: 'web_static' });
    // With the host back, in reverse order too, /api/ wins again.
    await setRoutes([...withStrip(START)].reverse());
    expect(await send('demo.localhost', '/api/')).toMatchObject({ service: 'web_dynamic', receivedPath: '/' });
    expect((await check()).ok).toBe(true);
  });

  it('renders the routes side by side: HAProxy ACLs in priority order, set-path for the strip, the 404; Traefik routers, stripPrefix middleware, labels', async () => {
    await setRoutes(withStrip(START));
    const r = await api<ProxyConfigsView>('/api/proxy/configs');
    expect(r.status).toBe(200);
    expect(r.json.driver).toBe(engine);
    expect(r.json.routers.map((x) => [x.name, x.priority])).toEqual([
      ['web_dynamic-1', 45],
      ['web_static', 41],
      ['web_dynamic-2', 40],
    ]);
    const cfg = r.json.configs.find((c) => c.engine === 'haproxy')!;
    expect(cfg.error).toBeUndefined();
    const lines = cfg.excerpt.split('\n');
    const firstRouter = lines.findIndex((l) => l.includes('str(web_dynamic-1)'));
    expect(lines[firstRouter]).toContain('{ path -m beg /api/ }');
    expect(lines[firstRouter]).toContain('req.hdr(host),host_only -m str demo.localhost');
    expect(firstRouter).toBeLessThan(lines.findIndex((l) => l.includes('str(web_static)')));
    expect(lines[firstRouter]).toContain('if !{ var(txn.router) -m found }');
    expect(cfg.excerpt).toMatch(/http-request set-path .* if \{ var\(txn.router\) -m str web_dynamic-1 \}/);
    expect(cfg.excerpt).toContain('use_backend web_dynamic if { var(txn.router) -m str web_dynamic-1 }');
    expect(cfg.excerpt).toContain('use_backend web_static if { var(txn.router) -m str web_static }');
    expect(cfg.excerpt).toContain('404 page not found');
    expect(cfg.text).toContain(cfg.excerpt);

    const dynamic = r.json.configs.find((c) => c.engine === 'traefik' && c.kind === 'dynamic')!;
    expect(dynamic.error).toBeUndefined();
    expect(dynamic.excerpt).toContain('rule: Host(`demo.localhost`) && PathPrefix(`/api/`)');
    expect(dynamic.excerpt).toMatch(/stripPrefix:\n\s+prefixes:\n\s+- \/api\//);
    expect(dynamic.excerpt).not.toContain('servers:');
    const labels = r.json.configs.find((c) => c.engine === 'traefik' && c.kind === 'labels')!;
    expect(labels.error).toBeUndefined();
    expect(labels.excerpt).toContain('"traefik.http.routers.web_dynamic-1.rule=Host(`demo.localhost`) && PathPrefix(`/api/`)"');
    expect(labels.excerpt).toMatch(/"traefik\.http\.middlewares\.[\w-]+\.stripprefix\.prefixes=\/api\/"/);
    expect(labels.excerpt).toMatch(/"traefik\.http\.routers\.web_dynamic-1\.middlewares=[\w-]+"/);
  });
});

describe('route API input', () => {
  it('refuses a bad host or path with a 400 sentence and keeps the routes', async () => {
    const before = lab.lab.status().topology.routes;
    for (const [body, message] of [
      [{ host: 'demo.localhost:8080', path: '/' }, /^host must be a DNS name such as demo.localhost/],
      [{ host: 'http://demo.localhost', path: '/' }, /^host must be a DNS name/],
      [{ host: 'demo.localhost', path: 'api' }, /^path must start with \//],
      [{ host: 'demo.localhost', path: '/a b' }, /^path must start with \//],
      [{ host: 'x'.repeat(254), path: '/' }, /^host is at most 253/],
      [{ host: 'demo.localhost', path: '/' + 'a'.repeat(300) }, /^path is at most 300/],
      [{ host: 'demo.localhost' }, /^path must be text/],
      [{ host: 'demo.localhost', path: '/', extra: 1 }, /.+/],
    ] as const) {
      const r = await api('/api/route-test', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.error).toMatch(message);
    }
    for (const [body, message] of [
      [{ routes: [{ service: 'nope', pathPrefix: '/' }] }, /^routes\.0\.service: /],
      [{ routes: [{ service: 'web_static', host: 'bad host', pathPrefix: '/' }] }, /^routes\.0\.host: host must be a DNS name/],
      [{ routes: [{ service: 'web_static', pathPrefix: 'api' }] }, /^routes\.0\.pathPrefix: pathPrefix must start with \//],
      [{ routes: Array.from({ length: 21 }, () => ({ service: 'web_static' })) }, /^routes: /],
      [{ routes: 'web_static' }, /^routes: /],
      [{}, /^routes: |body must be/],
    ] as const) {
      const r = await api('/api/routes', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.error).toMatch(message);
    }
    expect(lab.lab.status().topology.routes).toEqual(before);
  });

  it('needs the token', async () => {
    const res = await fetch(`${lab.apiUrl}/api/route-test`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ host: 'demo.localhost', path: '/' }) });
    expect(res.status).toBe(401);
  });
});
