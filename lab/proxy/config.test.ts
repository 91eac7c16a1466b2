import { describe, expect, it } from 'vitest';
import { Topology, defaultTopology, type ServiceName } from '../topology.ts';
import {
  buildProxyConfig,
  defaultStickyCookieName,
  matchRouter,
  requestHost,
  ruleText,
  stripPath,
  traefikCookieName,
  type PoolMember,
} from './config.ts';

const entrypoint = { name: 'web', host: '127.0.0.1', port: 0 };

function pools(entries: Array<[ServiceName, PoolMember[]]>): Map<ServiceName, PoolMember[]> {
  return new Map(entries);
}

describe('buildProxyConfig', () => {
  it('orders routers by rule length, longest first, with Traefik default priorities', () => {
    const topo = Topology.parse({
      services: { web_static: { replicas: 1 }, web_dynamic: { replicas: 1 } },
      routes: [
        { service: 'web_static', pathPrefix: '/' },
        { service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true },
        { service: 'web_dynamic', host: 'demo.localhost', pathPrefix: '/api/', stripPrefix: true },
      ],
    });
    const cfg = buildProxyConfig(topo, new Map(), entrypoint);
    expect(cfg.routers.map((r) => r.name)).toEqual(['web_dynamic-2', 'web_dynamic-1', 'web_static']);
    expect(cfg.routers.map((r) => r.priority)).toEqual([
      'Host(`demo.localhost`) && PathPrefix(`/api/`)'.length,
      'PathPrefix(`/api/`)'.length,
      'PathPrefix(`/`)'.length,
    ]);
    expect(cfg.routers[0]).toMatchObject({ host: 'demo.localhost', pathPrefix: '/api/', stripPrefix: true, service: 'web_dynamic' });
    expect(cfg.routers[2]).not.toHaveProperty('host');
    expect(cfg.entrypoint).toEqual({ ...entrypoint, idleTimeoutMs: 180_000 });
  });

  it('keeps route order between routers of equal priority', () => {
    const topo = Topology.parse({
      services: {},
      routes: [
        { service: 'web_static', pathPrefix: '/b/' },
        { service: 'web_dynamic', pathPrefix: '/a/' },
      ],
    });
    const cfg = buildProxyConfig(topo, new Map(), entrypoint);
    expect(cfg.routers.map((r) => r.name)).toEqual(['web_static', 'web_dynamic']);
  });

  it('lists servers in pool order with weight 1 and an http url; empty pools give no servers', () => {
    const cfg = buildProxyConfig(
      defaultTopology(),
      pools([
        ['web_dynamic', [
          { hostname: 'web_dynamic-1', host: '127.0.0.1', port: 4001 },
          { hostname: 'web_dynamic-2', host: '127.0.0.1', port: 4002 },
          { hostname: 'web_dynamic-3', host: '::1', port: 4003 },
        ]],
      ]),
      entrypoint,
    );
    const dyn = cfg.services.find((s) => s.name === 'web_dynamic');
    expect(dyn?.loadBalancer).toEqual({
      algorithm: 'round-robin',
      servers: [
        { name: 'web_dynamic-1', url: 'http://127.0.0.1:4001', weight: 1 },
        { name: 'web_dynamic-2', url: 'http://127.0.0.1:4002', weight: 1 },
        { name: 'web_dynamic-3', url: 'http://[::1]:4003', weight: 1 },
      ],
    });
    expect(cfg.services.find((s) => s.name === 'web_static')?.loadBalancer.servers).toEqual([]);
    expect(cfg.routers.map((r) => [r.name, r.service])).toEqual([
      ['web_dynamic', 'web_dynamic'],
      ['web_static', 'web_static'],
    ]);
  });

  it('creates a service for a routed service that has no replicas entry', () => {
    const topo = Topology.parse({ services: {}, routes: [{ service: 'web_static' }] });
    const cfg = buildProxyConfig(topo, new Map(), entrypoint);
    expect(cfg.services.map((s) => s.name)).toEqual(['web_static']);
  });
});

describe('buildProxyConfig: balancing settings', () => {
  const members: PoolMember[] = [
    { hostname: 'web_dynamic-1', host: '127.0.0.1', port: 4001, weight: 3 },
    { hostname: 'web_dynamic-2', host: '127.0.0.1', port: 4002 },
    { hostname: 'web_dynamic-3', host: '127.0.0.1', port: 4003, weight: 0 },
  ];
  const lbOf = (topo: Topology, service = 'web_dynamic') =>
    buildProxyConfig(topo, pools([['web_dynamic', members]]), entrypoint).services.find((s) => s.name === service)?.loadBalancer;

  it('carries each server weight (default 1)', () => {
    expect(lbOf(defaultTopology())?.servers.map((s) => s.weight)).toEqual([3, 1, 0]);
  });

  it('rejects a weight outside 0..256 with a sentence', () => {
    for (const weight of [257, -1, 1.5]) {
      const bad = pools([['web_dynamic', [{ hostname: 'web_dynamic-1', host: '127.0.0.1', port: 4001, weight }]]]);
      expect(() => buildProxyConfig(defaultTopology(), bad, entrypoint)).toThrow(/web_dynamic-1 has weight .*whole number from 0 to 256/);
    }
  });

  it("adds Traefik's sticky cookie with its default name and attributes when sticky is on", () => {
    const topo = Topology.parse({ ...defaultTopology(), proxy: { sticky: true } });
    expect(lbOf(topo)).toMatchObject({
      algorithm: 'round-robin',
      sticky: { cookie: { name: defaultStickyCookieName('web_dynamic'), httpOnly: false, secure: false, sameSite: '' } },
    });
    expect(lbOf(topo)).not.toHaveProperty('hash');
    expect(lbOf(topo, 'web_static')?.sticky?.cookie.name).toBe(defaultStickyCookieName('web_static'));
    const named = Topology.parse({ ...defaultTopology(), proxy: { sticky: true, stickyCookie: 'lab_sticky' } });
    expect(lbOf(named)?.sticky?.cookie.name).toBe('lab_sticky');
    expect(lbOf(defaultTopology())).not.toHaveProperty('sticky');
  });

  it('adds the hash settings only for the hash algorithm, and applies per-service overrides', () => {
    const topo = Topology.parse({
      services: {
        web_static: { replicas: 1 },
        web_dynamic: { replicas: 3, balancer: { algorithm: 'hash', hashType: 'map-based', hashHeader: 'X-User' } },
      },
      routes: [{ service: 'web_dynamic', pathPrefix: '/api/' }, { service: 'web_static' }],
      proxy: { algorithm: 'least-connections' },
    });
    expect(lbOf(topo)).toMatchObject({ algorithm: 'hash', hash: { header: 'X-User', type: 'map-based' } });
    expect(lbOf(topo, 'web_static')).toEqual({ algorithm: 'least-connections', servers: [] });
  });

  it('adds the health check (path, interval, timeout, fall, rise) only when it is on, with per-service overrides', () => {
    expect(lbOf(defaultTopology())).not.toHaveProperty('healthCheck');
    const defaults = Topology.parse({ ...defaultTopology(), proxy: { healthCheck: true } });
    expect(lbOf(defaults)?.healthCheck).toEqual({ path: '/health', intervalMs: 3000, timeoutMs: 1000, fall: 3, rise: 2 });
    const tuned = Topology.parse({
      services: {
        web_static: { replicas: 1 },
        web_dynamic: {
          replicas: 3,
          balancer: { healthCheck: true, healthCheckPath: '/app/health', healthCheckInterval: 200, healthCheckTimeout: 100, healthCheckFall: 1, healthCheckRise: 4 },
        },
      },
      routes: [{ service: 'web_dynamic', pathPrefix: '/api/' }, { service: 'web_static' }],
    });
    expect(lbOf(tuned)?.healthCheck).toEqual({ path: '/app/health', intervalMs: 200, timeoutMs: 100, fall: 1, rise: 4 });
    expect(lbOf(tuned, 'web_static')).not.toHaveProperty('healthCheck');
    // Turned off for one service while on proxy-wide.
    const off = Topology.parse({
      services: { web_static: { replicas: 1 }, web_dynamic: { replicas: 3, balancer: { healthCheck: false } } },
      routes: [{ service: 'web_dynamic', pathPrefix: '/api/' }, { service: 'web_static' }],
      proxy: { healthCheck: true, healthCheckInterval: 500 },
    });
    expect(lbOf(off)).not.toHaveProperty('healthCheck');
    expect(lbOf(off, 'web_static')?.healthCheck?.intervalMs).toBe(500);
  });

  it('adds retry {attempts} only when retry is on', () => {
    expect(lbOf(defaultTopology())).not.toHaveProperty('retry');
    expect(lbOf(Topology.parse({ ...defaultTopology(), proxy: { retry: true } }))?.retry).toEqual({ attempts: 3 });
    expect(lbOf(Topology.parse({ ...defaultTopology(), proxy: { retry: true, retryAttempts: 2 } }))?.retry).toEqual({ attempts: 2 });
    expect(lbOf(Topology.parse({ ...defaultTopology(), proxy: { retryAttempts: 2 } }))).not.toHaveProperty('retry');
  });

  it("passes a pool member's state to its server only when given", () => {
    const cfg = buildProxyConfig(
      defaultTopology(),
      pools([
        ['web_dynamic', [
          { hostname: 'web_dynamic-1', host: '127.0.0.1', port: 4001, state: 'drain' },
          { hostname: 'web_dynamic-2', host: '127.0.0.1', port: 4002, state: 'ready' },
          { hostname: 'web_dynamic-3', host: '127.0.0.1', port: 4003 },
        ]],
      ]),
      entrypoint,
    );
    const servers = cfg.services.find((s) => s.name === 'web_dynamic')?.loadBalancer.servers ?? [];
    expect(servers.map((s) => s.state)).toEqual(['drain', 'ready', undefined]);
    expect(servers[2]).not.toHaveProperty('state');
  });

  it("derives the default cookie name as Traefik v3 does: '_' + 5 hex of sha1('_TRAEFIK_BACKEND_' + name)", () => {
    // Traefik's own test vectors (pkg/server/cookie/cookie_test.go).
    expect(traefikCookieName('backend')).toBe('_76eb3');
    expect(traefikCookieName('/my/BACKEND-v1.0~rc1')).toBe('_5f7bc');
    // The lab's services, qualified as Traefik's file provider names them.
    expect(defaultStickyCookieName('web_dynamic')).toBe(traefikCookieName('web_dynamic@file'));
    expect(defaultStickyCookieName('web_dynamic@docker')).toBe(traefikCookieName('web_dynamic@docker'));
    expect(defaultStickyCookieName('web_dynamic')).toMatch(/^_[0-9a-f]{5}$/);
    expect(defaultStickyCookieName('web_dynamic')).not.toBe(defaultStickyCookieName('web_static'));
  });
});

describe('matchRouter', () => {
  const topo = Topology.parse({
    services: {},
    routes: [
      { service: 'web_static', pathPrefix: '/' },
      { service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true },
      { service: 'web_dynamic', host: 'demo.localhost', pathPrefix: '/v2/' },
    ],
  });
  const cfg = buildProxyConfig(topo, new Map(), entrypoint);
  const name = (host: string | undefined, path: string) => matchRouter(cfg, host, path)?.name ?? null;

  it('picks the longest matching rule', () => {
    expect(name('localhost:8080', '/api/jokes')).toBe('web_dynamic-1');
    expect(name('localhost:8080', '/index.html')).toBe('web_static');
    expect(name('localhost', '/')).toBe('web_static');
  });

  it('treats PathPrefix as a plain string prefix of the path, ignoring the query', () => {
    expect(name('localhost', '/api')).toBe('web_static');
    expect(name('localhost', '/api/')).toBe('web_dynamic-1');
    expect(name('localhost', '/apix/')).toBe('web_static');
    expect(name('localhost', '/x?/api/')).toBe('web_static');
  });

  it('compares Host case-insensitively, without port, ignoring a trailing dot', () => {
    expect(name('demo.localhost', '/v2/a')).toBe('web_dynamic-2');
    expect(name('DEMO.Localhost:8080', '/v2/a')).toBe('web_dynamic-2');
    expect(name('demo.localhost.', '/v2/a')).toBe('web_dynamic-2');
    expect(name('other.localhost', '/v2/a')).toBe('web_static');
    expect(name(undefined, '/v2/a')).toBe('web_static');
  });

  it('returns null when nothing matches', () => {
    const only = buildProxyConfig(
      Topology.parse({ services: {}, routes: [{ service: 'web_dynamic', host: 'demo.localhost', pathPrefix: '/api/' }] }),
      new Map(),
      entrypoint,
    );
    expect(matchRouter(only, 'localhost', '/api/')).toBeNull();
    expect(matchRouter(only, 'demo.localhost', '/')).toBeNull();
    expect(matchRouter(only, 'demo.localhost', '/api/x')?.name).toBe('web_dynamic');
  });

  it('extracts the request host as Traefik does', () => {
    expect(requestHost('Demo.Localhost:80')).toBe('demo.localhost');
    expect(requestHost('[::1]:8080')).toBe('::1');
    expect(requestHost('127.0.0.1')).toBe('127.0.0.1');
    expect(requestHost(undefined)).toBe('');
  });
});

describe('stripPath (Traefik StripPrefix)', () => {
  const slash = { pathPrefix: '/api/', stripPrefix: true };
  const bare = { pathPrefix: '/api', stripPrefix: true };

  it('removes the prefix and keeps a leading slash and the query', () => {
    expect(stripPath(slash, '/api/x?y')).toBe('/x?y');
    expect(stripPath(slash, '/api/x/y')).toBe('/x/y');
    expect(stripPath(slash, '/api/')).toBe('/');
    expect(stripPath(slash, '/api/?a=1')).toBe('/?a=1');
    expect(stripPath(bare, '/api')).toBe('/');
    expect(stripPath(bare, '/api?q')).toBe('/?q');
    expect(stripPath(bare, '/api/x')).toBe('/x');
    expect(stripPath(bare, '/apix')).toBe('/x');
  });

  it('leaves the path alone when not stripping or not prefixed', () => {
    expect(stripPath({ pathPrefix: '/api/', stripPrefix: false }, '/api/x')).toBe('/api/x');
    expect(stripPath(slash, '/other')).toBe('/other');
    expect(stripPath({ pathPrefix: '/', stripPrefix: true }, '/a/b')).toBe('/a/b');
  });

  it('writes rules as Traefik does', () => {
    expect(ruleText({ pathPrefix: '/' })).toBe('PathPrefix(`/`)');
    expect(ruleText({ host: 'demo.localhost', pathPrefix: '/api/' })).toBe('Host(`demo.localhost`) && PathPrefix(`/api/`)');
  });
});
