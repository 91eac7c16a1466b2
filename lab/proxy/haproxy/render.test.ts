/**
 * renderHaproxyConfig: the text, the names, what is refused; then every kind of configuration
 * checked by the real `haproxy -c -f` (skipped, with the reason printed, where haproxy is missing).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ProxyConfig, ProxyService } from '../../seams.ts';
import { buildProxyConfig, type PoolMember } from '../config.ts';
import { Topology, type ServiceName } from '../../topology.ts';
import { HaproxyDriver } from './haproxy-driver.ts';
import { buildHaproxyModel, haproxyNames, LOG_FORMAT, renderHaproxyConfig, sanitizeName } from './render.ts';
import { drainAclText, serverStateText } from './server-state.ts';

const OPTS = { statsSocket: '/run/lab/haproxy.sock', statsPort: 8404 };

function service(name: string, servers: [string, number, number?][], lb: Partial<ProxyService['loadBalancer']> = {}): ProxyService {
  return {
    name,
    loadBalancer: {
      algorithm: 'round-robin',
      servers: servers.map(([n, port, weight]) => ({ name: n, url: `http://127.0.0.1:${port}`, weight: weight ?? 1 })),
      ...lb,
    },
  };
}

/** The lab's default routes: /api/ (stripped) -> web_dynamic, / -> web_static. */
function labConfig(services: ProxyService[], routers?: ProxyConfig['routers']): ProxyConfig {
  return {
    entrypoint: { name: 'web', host: '127.0.0.1', port: 8080 },
    routers: routers ?? [
      { name: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true, service: 'web_dynamic', priority: 17 },
      { name: 'web_static', pathPrefix: '/', stripPrefix: false, service: 'web_static', priority: 13 },
    ],
    services,
  };
}

const STICKY_WEIGHTED = labConfig([
  service('web_dynamic', [['web_dynamic-1-a1b2', 4001, 3], ['web_dynamic-2-c3d4', 4002, 1], ['web_dynamic-3-e5f6', 4003, 1]], {
    sticky: { cookie: { name: 'LAB_STICKY', httpOnly: true, secure: false, sameSite: 'lax' } },
  }),
  service('web_static', [['web_static-1-0a0b', 5001]]),
]);

describe('renderHaproxyConfig', () => {
  it('renders global, defaults, one frontend with routers in priority order, one backend per service and the stats page', () => {
    const text = renderHaproxyConfig(STICKY_WEIGHTED, OPTS);
    expect(text).toContain('  log stdout format raw local0\n');
    expect(text).toContain('  stats socket /run/lab/haproxy.sock mode 600 level admin expose-fd listeners\n');
    expect(text).toContain('\ndefaults\n  mode http\n');
    expect(text).toContain(`  log-format "${LOG_FORMAT}"\n`);
    expect(text).toContain('\nfrontend web\n  bind 127.0.0.1:8080\n');
    expect(text).toContain('  capture response header X-Served-By len 128\n');
    const dyn = text.indexOf('set-var(txn.router) str(web_dynamic) if !{ var(txn.router) -m found } { path -m beg /api/ }');
    const stat = text.indexOf('set-var(txn.router) str(web_static) if !{ var(txn.router) -m found } { path -m beg / }');
    expect(dyn).toBeGreaterThan(0);
    expect(stat).toBeGreaterThan(dyn);
    expect(text).toContain(
      '  http-request return status 404 content-type "text/plain; charset=utf-8" string "404 page not found\\n" unless { var(txn.router) -m found }\n',
    );
    expect(text).toContain('  http-request set-path /%[path,regsub(^/api//?,)] if { var(txn.router) -m str web_dynamic }\n');
    expect(text).not.toContain('regsub(^//?,)'); // web_static does not strip
    expect(text).toContain('  use_backend web_dynamic if { var(txn.router) -m str web_dynamic }\n');
    expect(text).toContain('  use_backend web_static if { var(txn.router) -m str web_static }\n');
    expect(text).toMatch(/\nlisten stats\n {2}bind 127\.0\.0\.1:8404\n {2}stats enable\n {2}stats uri \/\n {2}stats refresh 2s\n/);
    expect(text).not.toContain('redispatch');
  });

  it('writes the sticky cookie with its attributes and one cookie value (the server name) per server, with weights', () => {
    const text = renderHaproxyConfig(STICKY_WEIGHTED, OPTS);
    expect(text).toContain('\nbackend web_dynamic\n');
    expect(text).toContain('  balance roundrobin\n  cookie LAB_STICKY insert indirect nocache httponly attr "SameSite=Lax"\n');
    const ids = haproxyNames(STICKY_WEIGHTED).serversOf.get('web_dynamic')!.map((s) => s.id);
    expect(text).toContain(`  server web_dynamic-1-a1b2 127.0.0.1:4001 id ${ids[0]} weight 3 cookie web_dynamic-1-a1b2\n`);
    expect(text).toContain(`  server web_dynamic-2-c3d4 127.0.0.1:4002 id ${ids[1]} weight 1 cookie web_dynamic-2-c3d4\n`);
    const plain = renderHaproxyConfig(labConfig([service('web_dynamic', [['a', 1]]), service('web_static', [])]), OPTS);
    expect(plain).not.toMatch(/^\s*cookie /m);
    const secure = renderHaproxyConfig(
      labConfig([service('web_dynamic', [['a', 1]], { sticky: { cookie: { name: 'S', httpOnly: false, secure: true, sameSite: '' } } }), service('web_static', [])]),
      OPTS,
    );
    expect(secure).toContain('  cookie S insert indirect nocache secure\n');
  });

  it('renders least-connections and header hashing, consistent or map-based', () => {
    const lc = renderHaproxyConfig(labConfig([service('web_dynamic', [['a', 1]], { algorithm: 'least-connections' }), service('web_static', [])]), OPTS);
    expect(lc).toContain('\nbackend web_dynamic\n  # service web_dynamic: least-connections\n  balance leastconn\n');
    for (const type of ['consistent', 'map-based'] as const) {
      const h = renderHaproxyConfig(
        labConfig([service('web_dynamic', [['a', 1]], { algorithm: 'hash', hash: { header: 'X-Session-ID', type } }), service('web_static', [])]),
        OPTS,
      );
      expect(h).toContain(`  balance hdr(X-Session-ID)\n  hash-type ${type}\n`);
    }
  });

  it('matches Host case-insensitively without port and with or without a trailing dot', () => {
    const text = renderHaproxyConfig(
      labConfig(
        [service('web_dynamic', [['a', 1]]), service('web_static', [])],
        [{ name: 'web_dynamic', host: 'Demo.Localhost', pathPrefix: '/', stripPrefix: false, service: 'web_dynamic', priority: 40 }],
      ),
      OPTS,
    );
    expect(text).toContain('{ req.hdr(host),host_only -m str demo.localhost demo.localhost. } { path -m beg / }');
  });

  it('leaves an empty pool without servers (HAProxy then answers 503)', () => {
    const text = renderHaproxyConfig(labConfig([service('web_dynamic', []), service('web_static', [])]), OPTS);
    expect(text).toMatch(/backend web_dynamic\n.*\n {2}balance roundrobin\n(?: {2}#.*\n| {2}retries 0\n)* {2}# no server: HAProxy answers 503/);
    expect(text).not.toMatch(/^\s*server /m);
  });

  it('renders a health check (httpchk, expect 2xx/3xx, timeout check, check inter/fall/rise per server, log-health-checks) and retry', () => {
    const hc = { path: '/health', intervalMs: 200, timeoutMs: 1000, fall: 2, rise: 1 };
    const model = buildHaproxyModel(labConfig([service('web_dynamic', [['a', 4001], ['b', 4002]], { healthCheck: hc, retry: { attempts: 3 } }), service('web_static', [])]), OPTS);
    const text = model.text;
    const dyn = text.slice(text.indexOf('\nbackend web_dynamic\n'), text.indexOf('\nbackend web_static\n'));
    for (const l of [
      '  option httpchk\n  http-check send meth GET uri /health\n  http-check expect status 200-399\n  timeout check 1000ms\n',
      '  option log-health-checks\n',
      '  retries 2\n  option redispatch 1\n  retry-on conn-failure empty-response\n',
    ]) {
      expect(dyn).toContain(l);
    }
    const ids = model.backends[0].servers.map((x) => x.id);
    expect(dyn).toContain(`  server a 127.0.0.1:4001 id ${ids[0]} weight 1 check inter 200ms fall 2 rise 1\n`);
    expect(dyn).toContain(`  server b 127.0.0.1:4002 id ${ids[1]} weight 1 check inter 200ms fall 2 rise 1\n`);
    expect(model.backends[0]).toMatchObject({ healthCheck: hc, retry: { attempts: 3 }, drainAcl: null });
    // Every backend gets a server-state file; without retry, `retries 0`; without check, no check keyword.
    expect(text).toContain('  server-state-file /run/lab/servers.state\n');
    expect(text).toContain('\ndefaults\n  mode http\n  log global\n  load-server-state-from-file global\n');
    const stat = text.slice(text.indexOf('\nbackend web_static\n'));
    expect(stat).toMatch(/\n {2}retries 0\n/);
    expect(stat).not.toMatch(/httpchk|redispatch|retry-on/);
    expect(model.stateFile).toBe('/run/lab/servers.state');
    // Attempts 1 = the first try only.
    const once = renderHaproxyConfig(labConfig([service('web_dynamic', [['a', 4001]], { retry: { attempts: 1 } })]), OPTS);
    expect(once).toContain('  retries 0\n  option redispatch 1\n');
  });

  it('drain: no server keyword (a Runtime API state), a comment; a sticky backend strips a drained server\'s cookie listed in its ACL file', () => {
    const sticky = { sticky: { cookie: { name: 'LAB_STICKY', httpOnly: false, secure: false, sameSite: '' as const } } };
    const cfg = labConfig([service('web_dynamic', [['a', 4001], ['b', 4002]], sticky)]);
    cfg.services[0].loadBalancer.servers[1].state = 'drain';
    const model = buildHaproxyModel(cfg, { ...OPTS, stateDir: '/var/lab' });
    expect(model.backends[0].servers.map((x) => x.state)).toEqual(['ready', 'drain']);
    expect(model.backends[0].drainAcl).toBe('/var/lab/drain.web_dynamic.acl');
    expect(model.text).toContain('  server-state-file /var/lab/servers.state\n');
    expect(model.text).toContain(
      '  http-request replace-header Cookie (^|;\\s*)LAB_STICKY=[^;]*;?\\s* \\1 if { req.cook(LAB_STICKY) -m str -f /var/lab/drain.web_dynamic.acl }\n',
    );
    expect(model.text).toMatch(/ {2}# b: state drain \(set server web_dynamic\/b state drain; .*\)\n {2}server b 127\.0\.0\.1:4002 id \d+ weight 1 cookie b\n/);
    // The drain is in the server lines only: the skeleton is that of the same config without it.
    const ready = buildHaproxyModel(labConfig([service('web_dynamic', [['a', 4001], ['b', 4002]], sticky)]), { ...OPTS, stateDir: '/var/lab' });
    expect(model.skeleton).toBe(ready.skeleton);
    expect(model.text).not.toBe(ready.text);
  });

  it('refuses health check and retry values it cannot write', () => {
    const hc = { path: '/health', intervalMs: 200, timeoutMs: 1000, fall: 2, rise: 1 };
    const bad: [Partial<ProxyService['loadBalancer']>, RegExp][] = [
      [{ healthCheck: { ...hc, path: '/a b' } }, /health check path "\/a b"/],
      [{ healthCheck: { ...hc, path: 'health' } }, /must start with \//],
      [{ healthCheck: { ...hc, intervalMs: 0 } }, /interval 0/],
      [{ healthCheck: { ...hc, timeoutMs: 1.5 } }, /timeout 1\.5/],
      [{ healthCheck: { ...hc, fall: 0 } }, /fall 0/],
      [{ healthCheck: { ...hc, rise: 101 } }, /rise 101/],
      [{ retry: { attempts: 0 } }, /0 attempts/],
    ];
    for (const [lb, message] of bad) expect(() => renderHaproxyConfig(labConfig([service('web_dynamic', [['a', 1]], lb)]), OPTS)).toThrow(message);
  });

  it('is deterministic, and the skeleton differs from the text only by server lines', () => {
    const a = buildHaproxyModel(STICKY_WEIGHTED, OPTS);
    const b = buildHaproxyModel(structuredClone(STICKY_WEIGHTED), OPTS);
    expect(b.text).toBe(a.text);
    expect(a.text.split('\n').filter((l) => !l.startsWith('  server ')).join('\n')).toBe(a.skeleton);
    expect(a.skeleton).not.toBe(a.text);
  });

  it('renders the lab topology as built by buildProxyConfig', () => {
    const topology = Topology.parse({
      services: { web_dynamic: { replicas: 2 }, web_static: { replicas: 1 } },
      routes: [
        { service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true },
        { service: 'web_static', pathPrefix: '/' },
      ],
      proxy: { sticky: true, stickyCookie: 'lab_sticky' },
    });
    const pools = new Map<ServiceName, PoolMember[]>([
      ['web_dynamic', [{ hostname: 'web_dynamic-1-aaaa', host: '127.0.0.1', port: 4001 }, { hostname: 'web_dynamic-2-bbbb', host: '127.0.0.1', port: 4002, weight: 2 }]],
      ['web_static', [{ hostname: 'web_static-1-cccc', host: '127.0.0.1', port: 5001 }]],
    ]);
    const text = renderHaproxyConfig(buildProxyConfig(topology, pools, { name: 'web', host: '127.0.0.1', port: 8080 }), OPTS);
    expect(text).toContain('cookie lab_sticky insert indirect nocache\n');
    expect(text).toMatch(/server web_dynamic-2-bbbb 127\.0\.0\.1:4002 id \d+ weight 2 cookie web_dynamic-2-bbbb/);
  });
});

describe('haproxyNames', () => {
  it('keeps HAProxy-safe names and replaces other characters, keeping a mapping back', () => {
    expect(sanitizeName('web_dynamic-1-a1b2')).toBe('web_dynamic-1-a1b2');
    expect(sanitizeName('a.b:c')).toBe('a.b:c');
    expect(sanitizeName('web dynamic/1!')).toBe('web_dynamic_1_');
    expect(sanitizeName('')).toBe('_');
    const config = labConfig([service('web dynamic', [['r 1', 1], ['r_1', 2], ['r#1', 3]]), service('stats', [])], [
      { name: 'my router', pathPrefix: '/', stripPrefix: false, service: 'web dynamic', priority: 1 },
    ]);
    const n = haproxyNames(config);
    expect(n.backendOf.get('web dynamic')).toBe('web_dynamic');
    expect(n.backendOf.get('stats')).toBe('stats-2'); // `stats` is the stats page's own name
    expect(n.serversOf.get('web dynamic')!.map((s) => s.name)).toEqual(['r_1', 'r_1-2', 'r_1-3']);
    expect(n.hostnameOf.get('web_dynamic/r_1-3')).toBe('r#1');
    expect(n.routerOf.get(n.routerVarOf.get('my router')!)).toBe('my router');
    expect(n.serviceOf.get('web_dynamic')).toBe('web dynamic');
  });

  it('gives each server an id from its name: unique in its backend, the same whatever the other servers', () => {
    const ids = (names: string[]) =>
      new Map(haproxyNames(labConfig([service('s', names.map((x, i) => [x, 4000 + i] as [string, number]))])).serversOf.get('s')!.map((x) => [x.name, x.id]));
    const four = ids(['web_dynamic-1-aaaa', 'web_dynamic-2-bbbb', 'web_dynamic-3-cccc', 'web_dynamic-4-dddd']);
    const other = ids(['web_dynamic-4-dddd', 'web_dynamic-9-ffff', 'web_dynamic-2-bbbb']);
    expect(other.get('web_dynamic-4-dddd')).toBe(four.get('web_dynamic-4-dddd'));
    expect(other.get('web_dynamic-2-bbbb')).toBe(four.get('web_dynamic-2-bbbb'));
    expect(new Set(four.values()).size).toBe(4);
    for (const id of four.values()) expect(id).toBeGreaterThanOrEqual(1);
    for (const id of four.values()) expect(id).toBeLessThanOrEqual(1_000_000);
  });
});

describe('values that cannot be written safely are refused with a sentence', () => {
  const one = (lb: Partial<ProxyService['loadBalancer']>, server: [string, number, number?] = ['a', 1]) =>
    labConfig([service('web_dynamic', [server], lb), service('web_static', [])]);
  it.each([
    ['a cookie name with a space', one({ sticky: { cookie: { name: 'bad name', httpOnly: false, secure: false, sameSite: '' } } }), /cookie name "bad name"/],
    ['a cookie name with a newline', one({ sticky: { cookie: { name: 'x\n  lua-load /tmp/x', httpOnly: false, secure: false, sameSite: '' } } }), /cookie name/],
    ['a header name with ;', one({ algorithm: 'hash', hash: { header: 'X;Y', type: 'consistent' } }), /header "X;Y"/],
    ['hash without a header', one({ algorithm: 'hash' }), /names no header/],
    ['a fractional weight', one({}, ['a', 1, 1.5]), /weight 1\.5; a weight must be a whole number/],
  ])('%s', (_label, config, message) => {
    expect(() => renderHaproxyConfig(config, OPTS)).toThrow(message);
  });

  it('a host or path prefix that could break out of its rule', () => {
    const svc = [service('web_dynamic', [['a', 1]]), service('web_static', [])];
    const router = { name: 'r', pathPrefix: '/', stripPrefix: false, service: 'web_dynamic', priority: 1 };
    expect(() => renderHaproxyConfig(labConfig(svc, [{ ...router, host: 'a b } || { always_true' }]), OPTS)).toThrow(/not a DNS name/);
    expect(() => renderHaproxyConfig(labConfig(svc, [{ ...router, pathPrefix: '/a b' }]), OPTS)).toThrow(/path prefix "\/a b"/);
    expect(() => renderHaproxyConfig(labConfig(svc, [{ ...router, pathPrefix: 'api' }]), OPTS)).toThrow(/must start with \//);
  });

  it('a server URL that is not http://host:port', () => {
    for (const url of ['https://127.0.0.1:1', 'http://127.0.0.1:1/x', 'not a url']) {
      const c = labConfig([{ name: 'web_dynamic', loadBalancer: { algorithm: 'round-robin', servers: [{ name: 'a', url, weight: 1 }] } }]);
      expect(() => renderHaproxyConfig(c, OPTS)).toThrow(/Server a has the URL/);
    }
  });
});

// ---------------------------------------------------------------- the real haproxy -c

const haproxy = await HaproxyDriver.available();
if (!haproxy.ok) console.warn(`render.test.ts: haproxy -c checks skipped: ${haproxy.reason}`);

/**
 * `haproxy -c` on the configuration for `config`, with the files the driver writes beside it (the
 * server-state file and the drain ACL files of sticky backends), in a directory of its own.
 */
function haproxyCheckConfig(config: ProxyConfig): Promise<{ code: number; output: string }> {
  const dir = mkdtempSync(path.join(workDir, 'c-'));
  const model = buildHaproxyModel(config, { statsSocket: path.join(dir, 'h.sock'), statsPort: 8404 });
  writeFileSync(model.stateFile, serverStateText(model));
  for (const b of model.backends) if (b.drainAcl) writeFileSync(b.drainAcl, drainAclText(b));
  return haproxyCheck(model.text);
}

function haproxyCheck(text: string): Promise<{ code: number; output: string }> {
  const file = path.join(workDir, `check-${Math.random().toString(16).slice(2)}.cfg`);
  writeFileSync(file, text);
  return new Promise((resolve) => {
    execFile('haproxy', ['-c', '-f', file], (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

const workDir = mkdtempSync(path.join(tmpdir(), 'lab-haproxy-render-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

describe.skipIf(!haproxy.ok)('haproxy -c accepts every kind of rendered configuration', () => {
  const srv: [string, number, number?][] = [['web_dynamic-1-a1b2', 4001], ['web_dynamic-2-c3d4', 4002], ['web_dynamic-3-e5f6', 4003]];
  const cases: [string, ProxyConfig][] = [
    ['sticky + weights', STICKY_WEIGHTED],
    ['hash consistent', labConfig([service('web_dynamic', srv, { algorithm: 'hash', hash: { header: 'X-Session-ID', type: 'consistent' } }), service('web_static', [])])],
    ['hash map-based', labConfig([service('web_dynamic', srv, { algorithm: 'hash', hash: { header: 'X-Session-ID', type: 'map-based' } }), service('web_static', [])])],
    ['least-connections', labConfig([service('web_dynamic', srv, { algorithm: 'least-connections' }), service('web_static', [])])],
    ['weights 3:1:0', labConfig([service('web_dynamic', [['a', 1, 3], ['b', 2, 1], ['c', 3, 0]]), service('web_static', [])])],
    [
      'host rules and a prefix with a dot',
      labConfig(
        [service('web_dynamic', srv), service('web_static', srv)],
        [
          { name: 'web_dynamic', host: 'demo.localhost', pathPrefix: '/v1.0/', stripPrefix: true, service: 'web_dynamic', priority: 50 },
          { name: 'web_static', host: 'static.localhost', pathPrefix: '/', stripPrefix: false, service: 'web_static', priority: 40 },
        ],
      ),
    ],
    ['empty pools', labConfig([service('web_dynamic', []), service('web_static', [])])],
    ['no routers at all', labConfig([service('web_dynamic', srv)], [])],
    ['an IPv6 entrypoint', { ...labConfig([service('web_dynamic', srv), service('web_static', [])]), entrypoint: { name: 'web', host: '::1', port: 8080 } }],
    [
      'health check + retry',
      labConfig([
        service('web_dynamic', srv, { healthCheck: { path: '/health', intervalMs: 200, timeoutMs: 1000, fall: 2, rise: 1 }, retry: { attempts: 3 } }),
        service('web_static', srv, { healthCheck: { path: '/app/health', intervalMs: 3000, timeoutMs: 50, fall: 3, rise: 2 } }),
      ]),
    ],
    [
      'sticky + health check + a drained server (server-state file and drain ACL file)',
      (() => {
        const c = labConfig([
          service('web_dynamic', srv, {
            sticky: { cookie: { name: 'LAB_STICKY', httpOnly: true, secure: false, sameSite: 'lax' } },
            healthCheck: { path: '/health', intervalMs: 500, timeoutMs: 300, fall: 3, rise: 2 },
            retry: { attempts: 2 },
          }),
          service('web_static', []),
        ]);
        c.services[0].loadBalancer.servers[1].state = 'drain';
        return c;
      })(),
    ],
    [
      'idle timeout, no reuse, http-reuse always, a VIP server',
      (() => {
        const c = labConfig([
          service('web_dynamic', [['web_dynamic-vip', 4010]], { reuse: false }),
          service('web_static', srv, { httpReuse: 'always' }),
        ]);
        c.entrypoint.idleTimeoutMs = 1500;
        c.services[0].loadBalancer.servers[0].vip = true;
        return c;
      })(),
    ],
  ];
  it('renders the idle timeout into the frontend, reuse off as http-server-close, http-reuse other than safe', () => {
    const c = labConfig([service('web_dynamic', srv, { reuse: false }), service('web_static', srv, { httpReuse: 'never' })]);
    c.entrypoint.idleTimeoutMs = 1500;
    const text = buildHaproxyModel(c, { statsSocket: '/tmp/h.sock', statsPort: 8404 }).text;
    const frontend = text.slice(text.indexOf('\nfrontend '), text.indexOf('\nbackend '));
    expect(frontend).toContain('  timeout http-keep-alive 1500ms\n');
    expect(frontend).toContain('  timeout client 1500ms\n');
    const backends = text.slice(text.indexOf('\nbackend '));
    expect(backends).toContain('  option http-server-close\n');
    expect(backends).toContain('  http-reuse never\n');
    const safe = buildHaproxyModel(labConfig([service('web_dynamic', srv, { httpReuse: 'safe' })]), { statsSocket: '/tmp/h.sock', statsPort: 8404 }).text;
    expect(safe).not.toMatch(/http-reuse|http-server-close|timeout http-keep-alive \d+ms/);
  });
  it.each(cases)('%s', async (_label, config) => {
    const r = await haproxyCheckConfig(config);
    expect(r.output).toContain('Configuration file is valid');
    // A drained server is loaded from the server-state file, and HAProxy says so (a WARNING).
    const drained = config.services.flatMap((svc) => svc.loadBalancer.servers.filter((x) => x.state === 'drain').map((x) => `${svc.name}/${x.name}`));
    for (const d of drained) expect(r.output).toContain(`Server ${d} remains in forced drain mode.`);
    expect(r.output.split('\n').filter((l) => /\[(WARNING|ALERT)\]/.test(l) && !/remains in forced drain mode/.test(l))).toEqual([]);
    expect(r.code).toBe(0);
  });

  it('refuses, in its own words, what the renderer leaves to it: a weight above 256, a router to a missing service', async () => {
    const heavy = await haproxyCheckConfig(labConfig([service('web_dynamic', [['a', 1, 300]]), service('web_static', [])]));
    expect(heavy.code).not.toBe(0);
    expect(heavy.output).toMatch(/weight of server a is not within 0 and 256 \(300\)/);
    const missing = await haproxyCheckConfig(
      labConfig([service('web_static', [])], [{ name: 'r', pathPrefix: '/', stripPrefix: false, service: 'nowhere', priority: 1 }]),
    );
    expect(missing.code).not.toBe(0);
    expect(missing.output).toMatch(/unable to find required use_backend: 'nowhere'/);
  });
});
