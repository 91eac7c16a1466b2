/**
 * Traefik renderers: every key rendered is one of Traefik v3's documented option names (lists
 * below, with the page of each group), the YAML round-trips, and the lab's settings land where
 * Traefik reads them.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { ProxyConfig, ProxyService } from '../../seams.ts';
import { Topology, type ServiceName } from '../../topology.ts';
import { buildProxyConfig, type PoolMember } from '../config.ts';
import {
  goDuration,
  htpasswdSha1,
  renderTraefikDynamic,
  renderTraefikLabels,
  renderTraefikStatic,
  traefikDynamicModel,
} from './render.ts';

/**
 * Documented option names, as generic paths (`*` = a name the user chooses, `[]` = a list item).
 * Only the options the lab can render are listed; a key outside the list fails the test.
 */
const DOCUMENTED_DYNAMIC: Record<string, string[]> = {
  // https://doc.traefik.io/traefik/routing/routers/
  'https://doc.traefik.io/traefik/routing/routers/': [
    'http.routers.*.rule',
    'http.routers.*.priority',
    'http.routers.*.service',
    'http.routers.*.middlewares[]',
    'http.routers.*.entryPoints[]',
  ],
  'https://doc.traefik.io/traefik/routing/services/': [
    'http.services.*.loadBalancer.servers[].url',
    'http.services.*.loadBalancer.servers[].weight',
    'http.services.*.loadBalancer.passHostHeader',
    'http.services.*.loadBalancer.serversTransport',
    'http.services.*.loadBalancer.sticky.cookie.name',
    'http.services.*.loadBalancer.sticky.cookie.httpOnly',
    'http.services.*.loadBalancer.sticky.cookie.secure',
    'http.services.*.loadBalancer.sticky.cookie.sameSite',
    'http.services.*.loadBalancer.healthCheck.path',
    'http.services.*.loadBalancer.healthCheck.interval',
    'http.services.*.loadBalancer.healthCheck.timeout',
    'http.serversTransports.*.maxIdleConnsPerHost',
    'http.serversTransports.*.forwardingTimeouts.dialTimeout',
    'http.serversTransports.*.forwardingTimeouts.responseHeaderTimeout',
    'http.serversTransports.*.forwardingTimeouts.idleConnTimeout',
  ],
  'https://doc.traefik.io/traefik/middlewares/http/stripprefix/': ['http.middlewares.*.stripPrefix.prefixes[]'],
  'https://doc.traefik.io/traefik/middlewares/http/retry/': ['http.middlewares.*.retry.attempts', 'http.middlewares.*.retry.initialInterval'],
  'https://doc.traefik.io/traefik/middlewares/http/basicauth/': ['http.middlewares.*.basicAuth.users[]'],
};

const DOCUMENTED_STATIC: Record<string, string[]> = {
  'https://doc.traefik.io/traefik/routing/entrypoints/': [
    'entryPoints.*.address',
    'entryPoints.*.transport.respondingTimeouts.idleTimeout',
    'entryPoints.*.transport.respondingTimeouts.readTimeout',
    'entryPoints.*.transport.respondingTimeouts.writeTimeout',
  ],
  'https://doc.traefik.io/traefik/operations/api/': ['api.dashboard', 'api.insecure'],
  'https://doc.traefik.io/traefik/operations/ping/': ['ping.entryPoint'],
  'https://doc.traefik.io/traefik/observability/logs/': ['log.level', 'log.format', 'log.filePath'],
  'https://doc.traefik.io/traefik/observability/access-logs/': [
    'accessLog.format',
    'accessLog.filePath',
    'accessLog.addInternals',
    'accessLog.fields.defaultMode',
    'accessLog.fields.names.*',
    'accessLog.fields.headers.defaultMode',
    'accessLog.fields.headers.names.*',
  ],
  'https://doc.traefik.io/traefik/providers/file/': ['providers.file.directory', 'providers.file.filename', 'providers.file.watch'],
  'https://doc.traefik.io/traefik/contributing/data-collection/': ['global.checkNewVersion', 'global.sendAnonymousUsage'],
};

/** Docker provider labels, `<...>` = a name: https://doc.traefik.io/traefik/routing/providers/docker/ */
const DOCUMENTED_LABELS = [
  'traefik.enable',
  'traefik.http.routers.*.rule',
  'traefik.http.routers.*.priority',
  'traefik.http.routers.*.entrypoints',
  'traefik.http.routers.*.service',
  'traefik.http.routers.*.middlewares',
  'traefik.http.middlewares.*.stripprefix.prefixes',
  'traefik.http.middlewares.*.retry.attempts',
  'traefik.http.services.*.loadbalancer.server.port',
  'traefik.http.services.*.loadbalancer.passhostheader',
  'traefik.http.services.*.loadbalancer.serverstransport',
  'traefik.http.services.*.loadbalancer.sticky.cookie.name',
  'traefik.http.services.*.loadbalancer.sticky.cookie.httponly',
  'traefik.http.services.*.loadbalancer.sticky.cookie.secure',
  'traefik.http.services.*.loadbalancer.sticky.cookie.samesite',
  'traefik.http.services.*.loadbalancer.healthcheck.path',
  'traefik.http.services.*.loadbalancer.healthcheck.interval',
  'traefik.http.services.*.loadbalancer.healthcheck.timeout',
];

/** Keys whose children are names the user chooses. */
const NAMED = new Set(['http.routers', 'http.services', 'http.middlewares', 'http.serversTransports', 'entryPoints', 'accessLog.fields.names', 'accessLog.fields.headers.names']);

/** Every leaf of `value` as a generic path (`*` for user-chosen names, `[]` for list items). */
function leafPaths(value: unknown, prefix = ''): string[] {
  if (Array.isArray(value)) return value.flatMap((v) => leafPaths(v, `${prefix}[]`));
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).flatMap(([k, v]) => leafPaths(v, NAMED.has(prefix) ? `${prefix}.*` : prefix === '' ? k : `${prefix}.${k}`));
  }
  return [prefix];
}

function undocumented(value: unknown, documented: Record<string, string[]>): string[] {
  const known = new Set(Object.values(documented).flat());
  return [...new Set(leafPaths(value))].filter((p) => !known.has(p));
}

function service(name: string, ports: [string, number, number?][], lb: Partial<ProxyService['loadBalancer']> = {}): ProxyService {
  return {
    name,
    loadBalancer: {
      algorithm: 'round-robin',
      servers: ports.map(([n, port, weight]) => ({ name: n, url: `http://127.0.0.1:${port}`, weight: weight ?? 1 })),
      ...lb,
    },
  };
}

/** Host demo.localhost: /api/ (stripped) -> web_dynamic, / -> web_static; as buildProxyConfig sorts them. */
function routingConfig(services: ProxyService[], idleTimeoutMs?: number): ProxyConfig {
  return {
    entrypoint: { name: 'web', host: '127.0.0.1', port: 8080, ...(idleTimeoutMs ? { idleTimeoutMs } : {}) },
    routers: [
      { name: 'web_dynamic', host: 'demo.localhost', pathPrefix: '/api/', stripPrefix: true, service: 'web_dynamic', priority: 49 },
      { name: 'web_static', host: 'demo.localhost', pathPrefix: '/', stripPrefix: false, service: 'web_static', priority: 45 },
    ],
    services,
  };
}

/** Everything on: sticky, health check, retry, weights, reuse off, a drained server. */
function fullConfig(): ProxyConfig {
  return routingConfig(
    [
      service('web_dynamic', [['web_dynamic-1-a1b2', 41001, 3], ['web_dynamic-2-c3d4', 41002], ['web_dynamic-3-e5f6', 41003]], {
        sticky: { cookie: { name: 'lab_sticky', httpOnly: true, secure: false, sameSite: 'lax' } },
        healthCheck: { path: '/health', intervalMs: 1000, timeoutMs: 500, fall: 3, rise: 2 },
        retry: { attempts: 3 },
        reuse: false,
      }),
      service('web_static', [['web_static-1-0000', 42001], ['web_static-2-1111', 42002]]),
    ],
    10_000,
  );
}

describe('renderTraefikDynamic', () => {
  it('renders only documented option names, and round-trips', () => {
    const cfg = fullConfig();
    const yaml = renderTraefikDynamic(cfg, { dashboard: { users: [htpasswdSha1('lab', 'secret')] } });
    const parsed = parse(yaml);
    expect(parsed).toEqual(traefikDynamicModel(cfg, { dashboard: { users: [htpasswdSha1('lab', 'secret')] } }));
    expect(undocumented(parsed, DOCUMENTED_DYNAMIC)).toEqual([]);
    // The checker itself catches a key Traefik does not know.
    expect(undocumented({ http: { services: { a: { loadBalancer: { method: 'leastconn' } } } } }, DOCUMENTED_DYNAMIC)).toEqual(['http.services.*.loadBalancer.method']);
  });

  it('a Host + PathPrefix route with stripPrefix: rule, priority, entrypoint, stripPrefix middleware', () => {
    const d = parse(renderTraefikDynamic(fullConfig()));
    expect(d.http.routers.web_dynamic).toEqual({
      rule: 'Host(`demo.localhost`) && PathPrefix(`/api/`)',
      priority: 49,
      entryPoints: ['web'],
      service: 'web_dynamic',
      middlewares: ['web_dynamic-stripprefix', 'web_dynamic-retry'],
    });
    expect(d.http.middlewares['web_dynamic-stripprefix']).toEqual({ stripPrefix: { prefixes: ['/api/'] } });
    // No strip, no retry: no middlewares key at all.
    expect(d.http.routers.web_static).toEqual({ rule: 'Host(`demo.localhost`) && PathPrefix(`/`)', priority: 45, entryPoints: ['web'], service: 'web_static' });
    // Router order is config order (highest priority first).
    expect(Object.keys(d.http.routers)).toEqual(['web_dynamic', 'web_static']);
  });

  it('weights, sticky cookie, health check (no fall/rise), retry, reuse off', () => {
    const yaml = renderTraefikDynamic(fullConfig());
    const lb = parse(yaml).http.services.web_dynamic.loadBalancer;
    expect(lb.servers).toEqual([
      { url: 'http://127.0.0.1:41001', weight: 3 },
      { url: 'http://127.0.0.1:41002', weight: 1 },
      { url: 'http://127.0.0.1:41003', weight: 1 },
    ]);
    expect(lb.sticky).toEqual({ cookie: { name: 'lab_sticky', httpOnly: true, secure: false, sameSite: 'lax' } });
    expect(lb.healthCheck).toEqual({ path: '/health', interval: '1s', timeout: '500ms' });
    expect(lb.passHostHeader).toBe(true);
    expect(lb.serversTransport).toBe('web_dynamic-transport');
    expect(parse(yaml).http.serversTransports).toEqual({ 'web_dynamic-transport': { maxIdleConnsPerHost: -1 } });
    expect(parse(yaml).http.middlewares['web_dynamic-retry']).toEqual({ retry: { attempts: 3 } });
    expect(yaml).toMatch(/^# .*no fall\/rise \(asked: fall 3, rise 2\)/m);
    // web_static: none of these.
    expect(parse(yaml).http.services.web_static.loadBalancer).toEqual({
      servers: [{ url: 'http://127.0.0.1:42001', weight: 1 }, { url: 'http://127.0.0.1:42002', weight: 1 }],
      passHostHeader: true,
    });
  });

  it('sameSite "" is not sent; Traefik default cookie attributes come from buildProxyConfig', () => {
    const topo = Topology.parse({ services: { web_dynamic: { replicas: 2 } }, routes: [{ service: 'web_dynamic', pathPrefix: '/', stripPrefix: false }], proxy: { sticky: true } });
    const pools = new Map<ServiceName, PoolMember[]>([['web_dynamic', [{ hostname: 'a', host: '127.0.0.1', port: 1 }, { hostname: 'b', host: '127.0.0.1', port: 2 }]]]);
    const cfg = buildProxyConfig(topo, pools, { name: 'web', host: '127.0.0.1', port: 8080 });
    const d = parse(renderTraefikDynamic(cfg));
    expect(d.http.services.web_dynamic.loadBalancer.sticky.cookie).toEqual({ name: cfg.services[0].loadBalancer.sticky!.cookie.name, httpOnly: false, secure: false });
    expect(undocumented(d, DOCUMENTED_DYNAMIC)).toEqual([]);
  });

  it('least-connections and hash render as round-robin with a comment; drained and weight-0 servers are left out', () => {
    const cfg = routingConfig([
      service('web_dynamic', [['d1', 1], ['d2', 2, 0], ['d3', 3]], { algorithm: 'least-connections' }),
      service('web_static', [['s1', 4], ['s2', 5]], { algorithm: 'hash', hash: { header: 'X-Session-ID', type: 'consistent' } }),
    ]);
    cfg.services[0].loadBalancer.servers[2].state = 'drain';
    const yaml = renderTraefikDynamic(cfg);
    expect(yaml).toMatch(/^# web_dynamic: least-connections is not a Traefik v3 load-balancing algorithm; rendered as weighted round-robin\./m);
    expect(yaml).toMatch(/^# web_static: hash is not a Traefik v3/m);
    expect(yaml).toMatch(/^# web_dynamic: left out .*: d2, d3\./m);
    const d = parse(yaml);
    expect(d.http.services.web_dynamic.loadBalancer.servers).toEqual([{ url: 'http://127.0.0.1:1', weight: 1 }]);
    expect(undocumented(d, DOCUMENTED_DYNAMIC)).toEqual([]);
  });

  it('the dashboard router: api@internal on the traefik entrypoint behind basic auth', () => {
    const d = parse(renderTraefikDynamic(fullConfig(), { dashboard: { users: ['lab:{SHA}abc='] } }));
    expect(d.http.routers['lab-dashboard']).toEqual({
      rule: 'PathPrefix(`/api`) || PathPrefix(`/dashboard`)',
      entryPoints: ['traefik'],
      service: 'api@internal',
      middlewares: ['lab-dashboard-auth'],
    });
    expect(d.http.middlewares['lab-dashboard-auth']).toEqual({ basicAuth: { users: ['lab:{SHA}abc='] } });
  });

  it('the drain marker router: highest priority, Host + Path, answered by noop@internal', () => {
    const d = parse(renderTraefikDynamic(fullConfig(), { drainMarker: true }));
    expect(d.http.routers['lab-drain-marker']).toEqual({
      rule: 'Host(`drain-marker.balancer-lab.invalid`) && Path(`/.well-known/balancer-lab/drain`)',
      priority: 1_000_000,
      entryPoints: ['web'],
      service: 'noop@internal',
    });
    expect(undocumented(d, DOCUMENTED_DYNAMIC)).toEqual([]);
  });

  it('refuses what could break out of a rule or is not Traefik-safe, with a sentence', () => {
    const bad = (mut: (c: ProxyConfig) => void) => {
      const c = fullConfig();
      mut(c);
      return () => renderTraefikDynamic(c);
    };
    expect(bad((c) => (c.routers[0].host = 'a`) || Host(`b'))).toThrow(/is not a host name/);
    expect(bad((c) => (c.routers[0].pathPrefix = '/api`)'))).toThrow(/path prefix/);
    expect(bad((c) => (c.routers[0].name = 'r@docker'))).toThrow(/router name "r@docker"/);
    expect(bad((c) => (c.services[0].loadBalancer.servers[0].url = 'http://127.0.0.1:1/x'))).toThrow(/http:\/\/host:port/);
    expect(bad((c) => (c.services[0].loadBalancer.sticky!.cookie.name = 'a b'))).toThrow(/sticky cookie name/);
    expect(bad((c) => (c.services[0].loadBalancer.healthCheck!.intervalMs = 0))).toThrow(/health check interval 0/);
    expect(bad((c) => (c.services[0].loadBalancer.retry!.attempts = 0))).toThrow(/retry attempts/);
    expect(() => renderTraefikDynamic(fullConfig(), { dashboard: { users: [] } })).toThrow(/at least one/);
  });

  it('goDuration: whole seconds as s, else ms', () => {
    expect(goDuration(180_000)).toBe('180s');
    expect(goDuration(1500)).toBe('1500ms');
  });
});

describe('renderTraefikStatic', () => {
  const opts = { entrypoint: { name: 'web', host: '127.0.0.1', port: 8080, idleTimeoutMs: 10_000 }, api: { host: '127.0.0.1', port: 8081 }, dynamicDir: '/lab/traefik/dynamic' };

  it('renders only documented option names, and round-trips', () => {
    const s = parse(renderTraefikStatic({ ...opts, accessLogFile: '/lab/access.log' }));
    expect(undocumented(s, DOCUMENTED_STATIC)).toEqual([]);
    expect(s.accessLog.filePath).toBe('/lab/access.log');
  });

  it('idle timeout, the API entrypoint, ping, JSON access log keeping X-Served-By and Set-Cookie, file provider watch', () => {
    const s = parse(renderTraefikStatic(opts));
    expect(s.entryPoints.web).toEqual({ address: '127.0.0.1:8080', transport: { respondingTimeouts: { idleTimeout: '10s' } } });
    expect(s.entryPoints.traefik).toEqual({ address: '127.0.0.1:8081' });
    expect(s.api).toEqual({ dashboard: true });
    expect(s.ping).toEqual({ entryPoint: 'traefik' });
    expect(s.accessLog.format).toBe('json');
    expect(s.accessLog.addInternals).toBe(true);
    expect(s.accessLog.filePath).toBeUndefined();
    expect(s.accessLog.fields.headers).toEqual({ defaultMode: 'drop', names: { 'X-Served-By': 'keep', 'Set-Cookie': 'keep' } });
    expect(s.providers).toEqual({ file: { directory: '/lab/traefik/dynamic', watch: true } });
  });

  it('sandbox-images/traefik/traefik.example.yml is what the renderer writes', () => {
    const example = readFileSync(new URL('../../../sandbox-images/traefik/traefik.example.yml', import.meta.url), 'utf8');
    const text = renderTraefikStatic({ entrypoint: { name: 'web', host: '0.0.0.0', port: 8080, idleTimeoutMs: 180_000 }, api: { host: '127.0.0.1', port: 8081 }, dynamicDir: '/lab/traefik/dynamic' });
    expect(example.split('\n').filter((l) => !l.startsWith('# An example') && !l.startsWith('# for entrypoint') && !l.startsWith('# the renderer')).join('\n')).toBe(text);
  });

  it('no idle timeout given: Traefik default 180s; IPv6 bracketed; bad values refused', () => {
    const s = parse(renderTraefikStatic({ ...opts, entrypoint: { name: 'web', host: '::1', port: 0 } }));
    expect(s.entryPoints.web).toEqual({ address: '[::1]:0', transport: { respondingTimeouts: { idleTimeout: '180s' } } });
    expect(() => renderTraefikStatic({ ...opts, entrypoint: { ...opts.entrypoint, name: 'traefik' } })).toThrow(/dashboard's entrypoint/);
    expect(() => renderTraefikStatic({ ...opts, entrypoint: { ...opts.entrypoint, port: 70000 } })).toThrow(/not a TCP port/);
    expect(() => renderTraefikStatic({ ...opts, entrypoint: { ...opts.entrypoint, idleTimeoutMs: 0.5 } })).toThrow(/idle timeout/);
  });
});

describe('renderTraefikLabels', () => {
  it('the same routers, middlewares and load balancer as Docker provider labels (v3 names)', () => {
    const labels = renderTraefikLabels(fullConfig(), 'web_dynamic');
    expect(labels).toEqual({
      'traefik.enable': 'true',
      'traefik.http.routers.web_dynamic.rule': 'Host(`demo.localhost`) && PathPrefix(`/api/`)',
      'traefik.http.routers.web_dynamic.priority': '49',
      'traefik.http.routers.web_dynamic.entrypoints': 'web',
      'traefik.http.routers.web_dynamic.service': 'web_dynamic',
      'traefik.http.routers.web_dynamic.middlewares': 'web_dynamic-stripprefix,web_dynamic-retry',
      'traefik.http.middlewares.web_dynamic-stripprefix.stripprefix.prefixes': '/api/',
      'traefik.http.middlewares.web_dynamic-retry.retry.attempts': '3',
      'traefik.http.services.web_dynamic.loadbalancer.server.port': '41001',
      'traefik.http.services.web_dynamic.loadbalancer.passhostheader': 'true',
      'traefik.http.services.web_dynamic.loadbalancer.sticky.cookie.name': 'lab_sticky',
      'traefik.http.services.web_dynamic.loadbalancer.sticky.cookie.httponly': 'true',
      'traefik.http.services.web_dynamic.loadbalancer.sticky.cookie.secure': 'false',
      'traefik.http.services.web_dynamic.loadbalancer.sticky.cookie.samesite': 'lax',
      'traefik.http.services.web_dynamic.loadbalancer.healthcheck.path': '/health',
      'traefik.http.services.web_dynamic.loadbalancer.healthcheck.interval': '1s',
      'traefik.http.services.web_dynamic.loadbalancer.healthcheck.timeout': '500ms',
      'traefik.http.services.web_dynamic.loadbalancer.serverstransport': 'web_dynamic-transport@file',
    });
  });

  it('every label key is documented; the port can be given; an unknown service is refused', () => {
    const labels = renderTraefikLabels(fullConfig(), 'web_static', { port: 80 });
    const generic = Object.keys(labels).map((k) => k.replace(/^(traefik\.http\.(?:routers|services|middlewares))\.[^.]+\./, '$1.*.'));
    expect(generic.filter((k) => !DOCUMENTED_LABELS.includes(k))).toEqual([]);
    expect(labels['traefik.http.services.web_static.loadbalancer.server.port']).toBe('80');
    expect(labels['traefik.http.routers.web_static.rule']).toBe('Host(`demo.localhost`) && PathPrefix(`/`)');
    expect(() => renderTraefikLabels(fullConfig(), 'nope')).toThrow(/no service named nope/);
  });
});

describe('htpasswdSha1', () => {
  it('is the {SHA} htpasswd form (base64 of SHA-1)', () => {
    // SHA-1("password") = 5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8
    expect(htpasswdSha1('docker', 'password')).toBe('docker:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=');
    expect(() => htpasswdSha1('a:b', 'x')).toThrow(/user name/);
  });
});
