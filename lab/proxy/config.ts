/**
 * Builds the neutral ProxyConfig (lab/seams.ts) from a topology and the live replica pools, and
 * the routing semantics every driver shares, modelled on Traefik v3:
 * - routers and their default priority (the length of the rule text, longest first):
 *   https://doc.traefik.io/traefik/routing/routers/#priority
 * - the `Host` and `PathPrefix` matchers: https://doc.traefik.io/traefik/routing/routers/#rule
 * - the StripPrefix middleware: https://doc.traefik.io/traefik/middlewares/http/stripprefix/
 * - each service's load balancer from the topology's balancer settings (`balancerOf`): the algorithm,
 *   Traefik's sticky cookie (https://doc.traefik.io/traefik/routing/services/#sticky-sessions) and
 *   HAProxy's header hashing (https://docs.haproxy.org/2.6/configuration.html#4.2-hash-type),
 *   the active health check (https://doc.traefik.io/traefik/routing/services/#health-check) and
 *   retry on connection failure (https://doc.traefik.io/traefik/middlewares/http/retry/).
 *
 * Everything here is pure: no I/O, no clock, no state.
 */
import { createHash } from 'node:crypto';
import type { ProxyConfig, ProxyRouter, ProxyServer, ProxyService } from '../seams.ts';
import { balancerOf, type ServiceName, type Topology } from '../topology.ts';

/** One ready replica of a service, as the runtime reports it (a subset of ReplicaHandle). */
export interface PoolMember {
  /** The replica's hostname (its id in the lab); becomes the server name. */
  hostname: string;
  /** Address the proxy connects to, e.g. `127.0.0.1`. */
  host: string;
  /** TCP port the replica listens on. */
  port: number;
  /**
   * Relative share of new requests, a whole number 0..256 (HAProxy's range); 0 = takes no new
   * requests (see ProxyServer.weight; the embedded proxy, like Traefik, then leaves the server out
   * entirely, sticky cookies included). Default 1.
   */
  weight?: number;
  /**
   * `drain`: the server takes no new requests (sticky clients are re-pinned) while requests in
   * flight finish (see ProxyServer.state); `ready` (default) takes requests. Passed to the server
   * only when given.
   */
  state?: 'ready' | 'drain';
  /** The member is the service's VIP (lab/vip.ts), not a replica: see ProxyServer.vip. */
  vip?: boolean;
}

/** Highest server weight (HAProxy's maximum; Traefik has none). */
export const MAX_WEIGHT = 256;

/**
 * The sticky cookie name Traefik v3 derives for a service when none is configured: `_` followed by
 * the first 5 hex digits of SHA-1 of `_TRAEFIK_BACKEND_<name>` (traefik/traefik
 * pkg/server/cookie/cookie.go `GenerateName`; the docs: "The default cookie name is an abbreviation
 * of a sha1 (ex: `_1d52e`)"). Traefik passes the service's qualified name, so this is the raw
 * derivation: `traefikCookieName('backend')` = `_76eb3` as in Traefik's own test.
 */
export function traefikCookieName(backendName: string): string {
  return `_${createHash('sha1').update(`_TRAEFIK_BACKEND_${backendName}`).digest('hex')}`.slice(0, 6);
}

/**
 * The default sticky cookie name of a lab service: what Traefik v3 names the cookie of that service
 * when it reads the lab's configuration through its file provider, i.e. {@link traefikCookieName}
 * of the qualified name `<service>@file` (a name that already carries `@provider` is used as is).
 * Every driver uses it, so all engines show the same cookie. Pure.
 */
export function defaultStickyCookieName(serviceName: string): string {
  return traefikCookieName(serviceName.includes('@') ? serviceName : `${serviceName}@file`);
}

/** Where the proxy listens: Traefik's entrypoint (name, e.g. `web`; host; port, 0 = any free port). */
export interface Entrypoint {
  name: string;
  host: string;
  port: number;
}

/**
 * The Traefik rule text of a router, e.g. ``Host(`demo.localhost`) && PathPrefix(`/api/`)`` or
 * ``PathPrefix(`/`)``. Its length is the router's default priority.
 */
export function ruleText(route: { host?: string; pathPrefix: string }): string {
  const path = `PathPrefix(\`${route.pathPrefix}\`)`;
  return route.host ? `Host(\`${route.host}\`) && ${path}` : path;
}

/** `http://host:port`, with IPv6 literals bracketed. */
export function serverUrl(host: string, port: number): string {
  return host.includes(':') ? `http://[${host}]:${port}` : `http://${host}:${port}`;
}

/**
 * Builds the proxy configuration for a topology.
 *
 * - One router per route. Its name is the service name, or `<service>-<i>` (i = 1, 2, ... in route
 *   order) when the service has several routes.
 * - Priority = length of the rule text (Traefik's default); routers are sorted by priority,
 *   highest first. Equal priorities keep the topology's route order (Traefik leaves ties unordered).
 * - One service per service named in `topology.services` or in a route, with the pool's members
 *   as servers, in pool order, with their weight (default 1), url `http://host:port`. A service
 *   with no pool (or an empty one) has no servers: the proxy answers 503 for it.
 * - Its load balancer follows `balancerOf(topology, service)`: `algorithm`; `sticky.cookie` when
 *   sticky is on, named `stickyCookie` or {@link defaultStickyCookieName}, with Traefik's default
 *   attributes (no HttpOnly, no Secure, no SameSite: "By default, the affinity cookie is created
 *   without those flags"); `hash: {header, type}` when the algorithm is `hash`; `healthCheck:
 *   {path, intervalMs, timeoutMs, fall, rise}` (from healthCheckPath/Interval/Timeout/Fall/Rise)
 *   when `healthCheck` is on; `retry: {attempts}` (from retryAttempts) when `retry` is on.
 * - A pool member's `state` (`ready` | `drain`) is copied to its server when given, and `vip: true`
 *   when the member is the service's VIP.
 * - `reuse: false` when the service's `reuse` setting is off (absent = on).
 * - The entrypoint's `idleTimeoutMs` is the topology's `proxy.clientIdle`.
 *
 * @param topology a validated Topology (lab/topology.ts).
 * @param pools the ready replicas of each service, in the order round-robin should visit them.
 * @param entrypoint where the proxy listens.
 * @throws RangeError when a pool member's weight is not a whole number from 0 to 256.
 */
export function buildProxyConfig(
  topology: Topology,
  pools: ReadonlyMap<ServiceName, ReadonlyArray<PoolMember>>,
  entrypoint: Entrypoint,
): ProxyConfig {
  const routeCount = new Map<string, number>();
  for (const r of topology.routes) routeCount.set(r.service, (routeCount.get(r.service) ?? 0) + 1);

  const seen = new Map<string, number>();
  const routers: ProxyRouter[] = topology.routes.map((r) => {
    const i = (seen.get(r.service) ?? 0) + 1;
    seen.set(r.service, i);
    const router: ProxyRouter = {
      name: (routeCount.get(r.service) ?? 0) > 1 ? `${r.service}-${i}` : r.service,
      pathPrefix: r.pathPrefix,
      stripPrefix: r.stripPrefix,
      service: r.service,
      priority: ruleText(r).length,
    };
    if (r.host !== undefined) router.host = r.host;
    return router;
  });
  // Array.prototype.sort is stable: ties keep route order.
  routers.sort((a, b) => b.priority - a.priority);

  const serviceNames: string[] = [];
  for (const name of Object.keys(topology.services)) serviceNames.push(name);
  for (const r of topology.routes) if (!serviceNames.includes(r.service)) serviceNames.push(r.service);

  const services: ProxyService[] = serviceNames.map((name) => {
    const pool = pools.get(name as ServiceName) ?? [];
    const servers: ProxyServer[] = pool.map((m) => {
      const weight = m.weight ?? 1;
      if (!Number.isInteger(weight) || weight < 0 || weight > MAX_WEIGHT) {
        throw new RangeError(`Replica ${m.hostname} has weight ${weight}; a weight must be a whole number from 0 to ${MAX_WEIGHT}.`);
      }
      const server: ProxyServer = { name: m.hostname, url: serverUrl(m.host, m.port), weight };
      if (m.state !== undefined) server.state = m.state;
      if (m.vip) server.vip = true;
      return server;
    });
    const b = balancerOf(topology, name as ServiceName);
    const loadBalancer: ProxyService['loadBalancer'] = { algorithm: b.algorithm, servers };
    if (b.sticky) {
      loadBalancer.sticky = {
        cookie: { name: b.stickyCookie ?? defaultStickyCookieName(name), httpOnly: false, secure: false, sameSite: '' },
      };
    }
    if (b.algorithm === 'hash') loadBalancer.hash = { header: b.hashHeader, type: b.hashType };
    if (b.healthCheck) {
      loadBalancer.healthCheck = {
        path: b.healthCheckPath,
        intervalMs: b.healthCheckInterval,
        timeoutMs: b.healthCheckTimeout,
        fall: b.healthCheckFall,
        rise: b.healthCheckRise,
      };
    }
    if (b.retry) loadBalancer.retry = { attempts: b.retryAttempts };
    if (!b.reuse) loadBalancer.reuse = false;
    return { name, loadBalancer };
  });

  return { entrypoint: { ...entrypoint, idleTimeoutMs: topology.proxy.clientIdle }, routers, services };
}

/**
 * The host a request names, as Traefik's Host matcher compares it: the Host header without its
 * port (and without IPv6 brackets), lower-cased. Undefined or empty header: ''.
 */
export function requestHost(hostHeader: string | undefined | null): string {
  if (!hostHeader) return '';
  let h = hostHeader.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end === -1 ? h : h.slice(1, end);
  }
  const colon = h.lastIndexOf(':');
  if (colon !== -1 && /^\d*$/.test(h.slice(colon + 1))) h = h.slice(0, colon);
  return h;
}

/** The path part of a request target (`/a/b?x=1` -> `/a/b`). */
function pathOnly(target: string): string {
  const q = target.indexOf('?');
  return q === -1 ? target : target.slice(0, q);
}

/**
 * Whether a router's rule matches a request, as Traefik's matchers do: Host is compared
 * case-insensitively without the port (a trailing dot on either side is ignored; a router without
 * host matches any host); PathPrefix is a plain string prefix of the path (so `/api` matches
 * `/apix`), the query string not included.
 */
export function routerMatches(router: ProxyRouter, hostHeader: string | undefined | null, target: string): boolean {
  if (router.host !== undefined) {
    const want = router.host.toLowerCase().replace(/\.$/, '');
    const got = requestHost(hostHeader).replace(/\.$/, '');
    if (got === '' || got !== want) return false;
  }
  return pathOnly(target).startsWith(router.pathPrefix);
}

/**
 * The router that serves a request: the first of `config.routers` (ordered by priority, highest
 * first) whose rule matches, or null (the proxy then answers 404 `404 page not found`).
 *
 * @param hostHeader the request's Host header, e.g. `demo.localhost:8080`.
 * @param target the request target as sent, e.g. `/api/jokes?n=1`.
 */
export function matchRouter(config: ProxyConfig, hostHeader: string | undefined | null, target: string): ProxyRouter | null {
  for (const r of config.routers) if (routerMatches(r, hostHeader, target)) return r;
  return null;
}

/**
 * The request target forwarded to the backend after the router's StripPrefix middleware, as Traefik
 * v3 computes it: the prefix is removed from the path once, the result always begins with `/`, the
 * query string is kept. `/api/x?y` -> `/x?y`, `/api/` -> `/`, and with prefix `/api`:
 * `/api` -> `/`, `/api/x` -> `/x`, `/apix` -> `/x`. Returns `target` unchanged when the router does
 * not strip or the path does not start with the prefix.
 */
export function stripPath(router: Pick<ProxyRouter, 'pathPrefix' | 'stripPrefix'>, target: string): string {
  if (!router.stripPrefix) return target;
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? '' : target.slice(q);
  if (!path.startsWith(router.pathPrefix)) return target;
  const rest = path.slice(router.pathPrefix.length);
  const stripped = rest === '' ? '/' : rest.startsWith('/') ? rest : `/${rest}`;
  return stripped + query;
}
