/**
 * Renders the neutral ProxyConfig (lab/seams.ts, shaped like Traefik's dynamic configuration on
 * purpose) for real Traefik v3:
 *
 * - {@link renderTraefikDynamic}: the file provider's dynamic configuration (YAML), written by the
 *   driver into the watched directory:
 *   - one router per ProxyRouter: `rule` (``Host(`h`) && PathPrefix(`/p`)``, lab/proxy/config.ts
 *     ruleText), `priority`, `service`, `entryPoints: [<entrypoint name>]`, `middlewares`
 *     (https://doc.traefik.io/traefik/routing/routers/);
 *   - one service per ProxyService with `loadBalancer.servers[] {url, weight}` (weighted
 *     round-robin, Traefik's only algorithm for a servers load balancer here), `passHostHeader`,
 *     `sticky.cookie {name, httpOnly, secure, sameSite}`, `healthCheck {path, interval, timeout}`,
 *     `serversTransport` (https://doc.traefik.io/traefik/routing/services/);
 *   - middlewares `<router>-stripprefix` (`stripPrefix.prefixes`,
 *     https://doc.traefik.io/traefik/middlewares/http/stripprefix/) and `<service>-retry`
 *     (`retry.attempts`, https://doc.traefik.io/traefik/middlewares/http/retry/);
 *   - `reuse: false` -> a serversTransport `<service>-transport` with `maxIdleConnsPerHost: -1`
 *     (no idle connection kept: a new server connection per request,
 *     https://doc.traefik.io/traefik/routing/services/#serverstransport_1);
 *   - optionally the dashboard router (`api@internal` on the `traefik` entrypoint behind a
 *     basicAuth middleware, https://doc.traefik.io/traefik/operations/dashboard/) and the drain
 *     marker router ({@link DRAIN_MARKER}, service `noop@internal`).
 * - {@link renderTraefikStatic}: the static configuration (entryPoints with the idle timeout, the
 *   API/dashboard entrypoint, ping, JSON access log, the file provider's directory + watch).
 * - {@link renderTraefikLabels}: the Docker provider's labels for the same routers and services
 *   (https://doc.traefik.io/traefik/routing/providers/docker/).
 *
 * What Traefik v3 does not have, and how it is rendered (the driver's capabilities say false, so
 * the UI greys these out):
 * - `least-connections` and `hash`: no such algorithm for a servers load balancer; rendered as
 *   weighted round-robin, with a comment at the top of the YAML saying so.
 * - health check fall/rise: Traefik takes a server out on one failed probe and puts it back on one
 *   good probe; fall and rise are not rendered (the YAML comment says so).
 * - drain (`server.state: 'drain'`) and weight 0: a Traefik server has no administrative state, so
 *   such a server is left out of the list: it takes no new request (sticky clients are re-pinned),
 *   and requests in flight on it finish (Traefik swaps the handler, it does not cut requests).
 * - `httpReuse` (HAProxy's) is not rendered: Traefik's server connections are one shared pool.
 *
 * Names: Traefik forbids `@` in router, service and middleware names (it separates the provider);
 * the lab's names are checked against `[A-Za-z0-9_-]` (dots would split a Docker label key), and a
 * host, path prefix or cookie/header name that could break out of a rule or a label is refused with
 * an Error whose message is a sentence.
 *
 * Everything here is pure: no I/O, no clock, no state (the password hash is deterministic).
 */
import { createHash } from 'node:crypto';
import { Document } from 'yaml';
import type { ProxyConfig, ProxyRouter, ProxyService } from '../../seams.ts';
import { ruleText } from '../config.ts';

/** Traefik's default entrypoint idle timeout (`transport.respondingTimeouts.idleTimeout`), in ms. */
export const TRAEFIK_DEFAULT_IDLE_TIMEOUT_MS = 180_000;
/** The response header that names the replica that answered; kept in the access log. */
export const SERVED_BY_HEADER = 'X-Served-By';
/** Name of the API/dashboard entrypoint in the static configuration (Traefik's own default name). */
export const API_ENTRYPOINT = 'traefik';
/** Names of the dashboard's router and basicAuth middleware in the dynamic configuration. */
export const DASHBOARD_ROUTER = 'lab-dashboard';
export const DASHBOARD_AUTH_MIDDLEWARE = 'lab-dashboard-auth';

const NAME = /^[A-Za-z0-9_-]{1,100}$/;
/** A hostname or IPv4 address, optionally with a trailing dot; no backtick can get in. */
const HOST = /^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?$/;
const PATH_PREFIX = /^\/[A-Za-z0-9._~\-/]*$/;
const COOKIE_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_MS = 3_600_000;
const MAX_ATTEMPTS = 10;

/** A Traefik (Go) duration for whole ms: `2s` when a whole number of seconds, else `1500ms`. */
export function goDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

function checkName(kind: string, name: string): string {
  if (!NAME.test(name)) {
    throw new Error(`The ${kind} name "${name}" cannot be used in Traefik's configuration: use 1 to 100 letters, digits, "_" or "-".`);
  }
  return name;
}

function checkMs(what: string, ms: number): number {
  if (!Number.isInteger(ms) || ms < 1 || ms > MAX_MS) throw new Error(`The ${what} ${ms} must be a whole number of ms from 1 to ${MAX_MS}.`);
  return ms;
}

function checkRoute(r: ProxyRouter): void {
  checkName('router', r.name);
  checkName('service', r.service);
  if (r.host !== undefined && !HOST.test(r.host)) throw new Error(`Router ${r.name} has the host "${r.host}", which is not a host name.`);
  if (!PATH_PREFIX.test(r.pathPrefix)) {
    throw new Error(`Router ${r.name} has the path prefix "${r.pathPrefix}"; a prefix starts with "/" and holds only letters, digits and . _ ~ - /.`);
  }
  if (!Number.isInteger(r.priority) || r.priority < 0) throw new Error(`Router ${r.name} has priority ${r.priority}; a priority is a whole number, 0 or more.`);
}

function checkUrl(service: string, url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`A server of service ${service} has the URL "${url}", which is not a URL.`);
  }
  if (u.protocol !== 'http:' || u.port === '' || (u.pathname !== '/' && u.pathname !== '') || u.search || u.hash || u.username) {
    throw new Error(`A server of service ${service} has the URL "${url}"; the lab's servers are http://host:port.`);
  }
  return u;
}

/** The stripPrefix middleware of a router, when it strips. */
export function stripMiddlewareName(router: string): string {
  return `${router}-stripprefix`;
}

/** The retry middleware of a service, when retry is on. */
export function retryMiddlewareName(service: string): string {
  return `${service}-retry`;
}

/** The serversTransport of a service that does not reuse server connections. */
export function transportName(service: string): string {
  return `${service}-transport`;
}

/** Notes for the top of the YAML: what Traefik cannot do as the configuration asks. */
function notesOf(config: ProxyConfig): string[] {
  const notes: string[] = [];
  for (const s of config.services) {
    const lb = s.loadBalancer;
    if (lb.algorithm !== 'round-robin') {
      notes.push(` ${s.name}: ${lb.algorithm} is not a Traefik v3 load-balancing algorithm; rendered as weighted round-robin.`);
    }
    if (lb.healthCheck) {
      notes.push(
        ` ${s.name}: Traefik has no fall/rise (asked: fall ${lb.healthCheck.fall}, rise ${lb.healthCheck.rise}): one failed probe takes a server out, one good probe puts it back.`,
      );
    }
    const left = lb.servers.filter((x) => x.state === 'drain' || x.weight === 0).map((x) => x.name);
    if (left.length > 0) notes.push(` ${s.name}: left out (drain or weight 0, Traefik has no server state): ${left.join(', ')}.`);
  }
  return notes;
}

/** The dashboard, as the driver publishes it: basicAuth users in htpasswd form (`user:{SHA}...`). */
export interface TraefikDashboardOptions {
  /** htpasswd lines, e.g. from {@link htpasswdSha1}. At least one. */
  users: string[];
}

/**
 * The drain marker: a router of the highest priority on the lab's entrypoint that only a request
 * for this host and path matches, answered by Traefik itself (`noop@internal`, no replica sees it).
 * The driver sends one to learn where Traefik's request numbering stands (see TraefikDriver.drained).
 */
export const DRAIN_MARKER = {
  router: 'lab-drain-marker',
  host: 'drain-marker.balancer-lab.invalid',
  path: '/.well-known/balancer-lab/drain',
  priority: 1_000_000,
} as const;

/** Options of {@link renderTraefikDynamic} and {@link traefikDynamicModel}. */
export interface TraefikDynamicOptions {
  /** Add the dashboard router (`api@internal` on the `traefik` entrypoint, behind basic auth). */
  dashboard?: TraefikDashboardOptions;
  /** Add the {@link DRAIN_MARKER} router on the lab's entrypoint. */
  drainMarker?: boolean;
}

/**
 * The dynamic configuration as a plain object (the YAML's content), keyed as Traefik's file
 * provider reads it: `{ http: { routers, services, middlewares?, serversTransports? } }`. Routers
 * keep config.routers' order; services keep config.services' order.
 * @throws Error (a sentence) for a name, host, path prefix, cookie name, URL, weight, interval or
 *   attempt count that cannot be written.
 */
export function traefikDynamicModel(config: ProxyConfig, opts: TraefikDynamicOptions = {}): { http: Record<string, Record<string, unknown>> } {
  const entryPoint = checkName('entrypoint', config.entrypoint.name);
  const routers: Record<string, unknown> = {};
  const services: Record<string, unknown> = {};
  const middlewares: Record<string, unknown> = {};
  const transports: Record<string, unknown> = {};
  const byName = new Map(config.services.map((s) => [s.name, s]));

  for (const r of config.routers) {
    checkRoute(r);
    if (routers[r.name]) throw new Error(`Two routers are named ${r.name}; router names must be unique.`);
    const mws: string[] = [];
    if (r.stripPrefix) {
      const m = stripMiddlewareName(r.name);
      middlewares[m] = { stripPrefix: { prefixes: [r.pathPrefix] } };
      mws.push(m);
    }
    if (byName.get(r.service)?.loadBalancer.retry) mws.push(retryMiddlewareName(r.service));
    routers[r.name] = {
      rule: ruleText(r),
      priority: r.priority,
      entryPoints: [entryPoint],
      service: r.service,
      ...(mws.length > 0 ? { middlewares: mws } : {}),
    };
  }

  for (const s of config.services) {
    checkName('service', s.name);
    if (services[s.name]) throw new Error(`Two services are named ${s.name}; service names must be unique.`);
    services[s.name] = { loadBalancer: loadBalancerOf(s) };
    const lb = s.loadBalancer;
    if (lb.retry) {
      const n = lb.retry.attempts;
      if (!Number.isInteger(n) || n < 1 || n > MAX_ATTEMPTS) throw new Error(`Service ${s.name} has ${n} retry attempts; use a whole number from 1 to ${MAX_ATTEMPTS}.`);
      middlewares[retryMiddlewareName(s.name)] = { retry: { attempts: n } };
    }
    if (lb.reuse === false) transports[transportName(s.name)] = { maxIdleConnsPerHost: -1 };
  }
  // A router may name a service the configuration does not list: Traefik would log an error and
  // serve 404 for it; the lab's other engines answer 503. An empty service gives 503 on Traefik.
  for (const r of config.routers) if (!services[r.service]) services[r.service] = { loadBalancer: { servers: [], passHostHeader: true } };

  if (opts.dashboard) {
    if (opts.dashboard.users.length === 0) throw new Error('The dashboard needs at least one basic-auth user.');
    for (const u of opts.dashboard.users) if (!/^[^:\s]+:\S+$/.test(u)) throw new Error('A dashboard user must be an htpasswd line, user:hash.');
    routers[DASHBOARD_ROUTER] = {
      rule: 'PathPrefix(`/api`) || PathPrefix(`/dashboard`)',
      entryPoints: [API_ENTRYPOINT],
      service: 'api@internal',
      middlewares: [DASHBOARD_AUTH_MIDDLEWARE],
    };
    middlewares[DASHBOARD_AUTH_MIDDLEWARE] = { basicAuth: { users: [...opts.dashboard.users] } };
  }

  if (opts.drainMarker) {
    routers[DRAIN_MARKER.router] = {
      rule: `Host(\`${DRAIN_MARKER.host}\`) && Path(\`${DRAIN_MARKER.path}\`)`,
      priority: DRAIN_MARKER.priority,
      entryPoints: [entryPoint],
      service: 'noop@internal',
    };
  }

  const http: Record<string, Record<string, unknown>> = { routers, services };
  if (Object.keys(middlewares).length > 0) http.middlewares = middlewares;
  if (Object.keys(transports).length > 0) http.serversTransports = transports;
  return { http };
}

function loadBalancerOf(s: ProxyService): Record<string, unknown> {
  const lb = s.loadBalancer;
  const servers = lb.servers
    .filter((x) => x.state !== 'drain' && x.weight !== 0)
    .map((x) => {
      checkUrl(s.name, x.url);
      if (!Number.isInteger(x.weight) || x.weight < 0) throw new Error(`Server ${x.name} has weight ${x.weight}; a weight is a whole number, 0 or more.`);
      return { url: x.url, weight: x.weight };
    });
  const out: Record<string, unknown> = { servers, passHostHeader: true };
  if (lb.sticky) {
    const c = lb.sticky.cookie;
    if (!COOKIE_NAME.test(c.name)) throw new Error(`Service ${s.name} has the sticky cookie name "${c.name}"; use 1 to 64 letters, digits, "_" or "-".`);
    out.sticky = { cookie: { name: c.name, httpOnly: c.httpOnly, secure: c.secure, ...(c.sameSite !== '' ? { sameSite: c.sameSite } : {}) } };
  }
  if (lb.healthCheck) {
    const h = lb.healthCheck;
    if (!PATH_PREFIX.test(h.path)) throw new Error(`Service ${s.name} has the health check path "${h.path}"; a path starts with "/" and holds only letters, digits and . _ ~ - /.`);
    out.healthCheck = {
      path: h.path,
      interval: goDuration(checkMs('health check interval', h.intervalMs)),
      timeout: goDuration(checkMs('health check timeout', h.timeoutMs)),
    };
  }
  if (lb.reuse === false) out.serversTransport = transportName(s.name);
  return out;
}

/**
 * The file provider's dynamic configuration for `config`, as YAML: `http.routers`, `http.services`,
 * `http.middlewares`, `http.serversTransports` (see the module comment). A comment at the top says
 * what Traefik cannot do as asked (least-connections, hash, fall/rise, drain).
 * https://doc.traefik.io/traefik/providers/file/
 * @throws Error (a sentence) as {@link traefikDynamicModel}.
 */
export function renderTraefikDynamic(config: ProxyConfig, opts: TraefikDynamicOptions = {}): string {
  const doc = new Document(traefikDynamicModel(config, opts));
  const notes = notesOf(config);
  doc.commentBefore = [' Traefik v3 dynamic configuration (file provider), written by Balancer Lab.', ...notes].join('\n');
  return doc.toString({ lineWidth: 0 });
}

/** What {@link renderTraefikStatic} needs. */
export interface TraefikStaticOptions {
  /** The entrypoint of the lab's traffic (name, host, port; idleTimeoutMs absent = 180 s). */
  entrypoint: ProxyConfig['entrypoint'];
  /** The API/dashboard and ping entrypoint (`traefik`), e.g. `{ host: '127.0.0.1', port: 8081 }`. */
  api: { host: string; port: number };
  /** Directory the file provider watches (absolute path as Traefik sees it). */
  dynamicDir: string;
  /** Access log file; absent = standard output (Traefik's default). */
  accessLogFile?: string;
  /** Traefik's own log level. Default `INFO`. */
  logLevel?: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
}

/** `host:port`, with an IPv6 literal bracketed; empty host = every address (`:port`). */
function address(host: string, port: number): string {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`The port ${port} is not a TCP port (0 to 65535).`);
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * The static configuration (YAML), read once at start (`traefik --configFile=<file>`):
 * - `entryPoints.<name>.address` and `transport.respondingTimeouts.idleTimeout` (how long an idle
 *   keep-alive client connection stays open; https://doc.traefik.io/traefik/routing/entrypoints/#respondingtimeouts);
 * - `entryPoints.traefik` for the API, the dashboard (`api.dashboard: true`, not `insecure`: its
 *   router with basic auth is in the dynamic configuration) and `ping` (`GET /ping` -> `OK`,
 *   https://doc.traefik.io/traefik/operations/ping/);
 * - `accessLog` in JSON (https://doc.traefik.io/traefik/observability/access-logs/) with every
 *   field kept and the headers dropped but `X-Served-By` and `Set-Cookie` (the replica behind a VIP,
 *   the sticky cookie set), internal requests included (`addInternals`, Traefik v3.0+);
 * - `providers.file` with `directory` and `watch: true` (https://doc.traefik.io/traefik/providers/file/);
 * - `global` checkNewVersion and sendAnonymousUsage off (the lab may run offline).
 * @throws Error (a sentence) for a port out of range, an idle timeout out of 1 ms .. 1 h, or an
 *   entrypoint name that is not `[A-Za-z0-9_-]` or clashes with `traefik`.
 */
export function renderTraefikStatic(opts: TraefikStaticOptions): string {
  const ep = opts.entrypoint;
  checkName('entrypoint', ep.name);
  if (ep.name === API_ENTRYPOINT) throw new Error(`The entrypoint cannot be named "${API_ENTRYPOINT}": that is the dashboard's entrypoint.`);
  const idle = checkMs('entrypoint idle timeout', ep.idleTimeoutMs ?? TRAEFIK_DEFAULT_IDLE_TIMEOUT_MS);
  const model = {
    global: { checkNewVersion: false, sendAnonymousUsage: false },
    entryPoints: {
      [ep.name]: { address: address(ep.host, ep.port), transport: { respondingTimeouts: { idleTimeout: goDuration(idle) } } },
      [API_ENTRYPOINT]: { address: address(opts.api.host, opts.api.port) },
    },
    api: { dashboard: true },
    ping: { entryPoint: API_ENTRYPOINT },
    log: { level: opts.logLevel ?? 'INFO' },
    accessLog: {
      format: 'json',
      // Requests to the API, dashboard and ping are logged too: no RequestCount is left without a
      // line, which drained() relies on (access-log.ts InFlightTracker).
      addInternals: true,
      ...(opts.accessLogFile ? { filePath: opts.accessLogFile } : {}),
      fields: {
        defaultMode: 'keep',
        headers: { defaultMode: 'drop', names: { [SERVED_BY_HEADER]: 'keep', 'Set-Cookie': 'keep' } },
      },
    },
    providers: { file: { directory: opts.dynamicDir, watch: true } },
  };
  const doc = new Document(model);
  doc.commentBefore = ' Traefik v3 static configuration, written by Balancer Lab.';
  return doc.toString({ lineWidth: 0 });
}

/** Options of {@link renderTraefikLabels}. */
export interface TraefikLabelOptions {
  /**
   * The port the service's containers listen on (`loadbalancer.server.port`). Default: the port of
   * the service's first server URL; absent when it has none (Traefik then uses the container's one
   * exposed port).
   */
  port?: number;
}

/**
 * The Docker provider's labels that give a service's containers the same routers, middlewares and
 * load balancer as {@link renderTraefikDynamic} (v3 label names, lower case as in Traefik's label
 * reference; labels are case-insensitive): `traefik.enable`, `traefik.http.routers.<r>.rule |
 * priority | entrypoints | service | middlewares`, `traefik.http.middlewares.<m>.stripprefix.prefixes`,
 * `...retry.attempts`, `traefik.http.services.<s>.loadbalancer.server.port | passhostheader |
 * sticky.cookie.name | httponly | secure | samesite | healthcheck.path | interval | timeout |
 * serverstransport`. Only the routers whose service is `service` are included.
 * https://doc.traefik.io/traefik/routing/providers/docker/
 *
 * Differences from the file provider: each container is one server of weight 1 (weights are not
 * rendered); a serversTransport cannot be declared in labels, so `reuse: false` names
 * `<service>-transport@file`, which the file provider must declare.
 * @throws Error (a sentence) for an unknown service or a value that cannot be written.
 */
export function renderTraefikLabels(config: ProxyConfig, service: string, opts: TraefikLabelOptions = {}): Record<string, string> {
  const svc = config.services.find((s) => s.name === service);
  const routers = config.routers.filter((r) => r.service === service);
  if (!svc && routers.length === 0) throw new Error(`The configuration has no service named ${service}.`);
  const model = traefikDynamicModel({ ...config, routers, services: svc ? [svc] : [] });
  const labels: Record<string, string> = { 'traefik.enable': 'true' };
  const rs = model.http.routers as Record<string, { rule: string; priority: number; entryPoints: string[]; service: string; middlewares?: string[] }>;
  for (const [name, r] of Object.entries(rs)) {
    const p = `traefik.http.routers.${name}`;
    labels[`${p}.rule`] = r.rule;
    labels[`${p}.priority`] = String(r.priority);
    labels[`${p}.entrypoints`] = r.entryPoints.join(',');
    labels[`${p}.service`] = r.service;
    if (r.middlewares) labels[`${p}.middlewares`] = r.middlewares.join(',');
  }
  const mws = (model.http.middlewares ?? {}) as Record<string, { stripPrefix?: { prefixes: string[] }; retry?: { attempts: number } }>;
  for (const [name, m] of Object.entries(mws)) {
    if (m.stripPrefix) labels[`traefik.http.middlewares.${name}.stripprefix.prefixes`] = m.stripPrefix.prefixes.join(',');
    if (m.retry) labels[`traefik.http.middlewares.${name}.retry.attempts`] = String(m.retry.attempts);
  }
  const p = `traefik.http.services.${service}.loadbalancer`;
  const firstUrl = svc?.loadBalancer.servers[0]?.url;
  const port = opts.port ?? (firstUrl ? Number(checkUrl(service, firstUrl).port) : undefined);
  if (port !== undefined) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`The container port ${port} is not a TCP port (1 to 65535).`);
    labels[`${p}.server.port`] = String(port);
  }
  labels[`${p}.passhostheader`] = 'true';
  const lb = (model.http.services as Record<string, { loadBalancer: Record<string, unknown> }>)[service]?.loadBalancer ?? {};
  const sticky = lb.sticky as { cookie: { name: string; httpOnly: boolean; secure: boolean; sameSite?: string } } | undefined;
  if (sticky) {
    labels[`${p}.sticky.cookie.name`] = sticky.cookie.name;
    labels[`${p}.sticky.cookie.httponly`] = String(sticky.cookie.httpOnly);
    labels[`${p}.sticky.cookie.secure`] = String(sticky.cookie.secure);
    if (sticky.cookie.sameSite) labels[`${p}.sticky.cookie.samesite`] = sticky.cookie.sameSite;
  }
  const hc = lb.healthCheck as { path: string; interval: string; timeout: string } | undefined;
  if (hc) {
    labels[`${p}.healthcheck.path`] = hc.path;
    labels[`${p}.healthcheck.interval`] = hc.interval;
    labels[`${p}.healthcheck.timeout`] = hc.timeout;
  }
  if (typeof lb.serversTransport === 'string') labels[`${p}.serverstransport`] = `${lb.serversTransport}@file`;
  return labels;
}

/**
 * One htpasswd line with a SHA-1 password hash, `user:{SHA}<base64 of sha1(password)>`, one of
 * the forms Traefik's basicAuth middleware accepts (MD5, SHA1, BCrypt:
 * https://doc.traefik.io/traefik/middlewares/http/basicauth/). Deterministic.
 * @throws Error when the user name is empty or holds `:` or white space.
 */
export function htpasswdSha1(user: string, password: string): string {
  if (!/^[^:\s]{1,64}$/.test(user)) throw new Error('A basic-auth user name must be 1 to 64 characters without ":" or spaces.');
  return `${user}:{SHA}${createHash('sha1').update(password, 'utf8').digest('base64')}`;
}
