/**
 * Renders the neutral ProxyConfig (lab/seams.ts) as an HAProxy 2.6 configuration file, with the
 * same routing semantics as lab/proxy/config.ts (Traefik's):
 *
 * - one `frontend` on the entrypoint; each router (by priority, highest first) becomes one
 *   `http-request set-var(txn.router)` rule that fires only if no earlier router matched: Host is
 *   compared case-insensitively without the port (`req.hdr(host),host_only`, a trailing dot
 *   ignored), PathPrefix is `path -m beg`; then StripPrefix (`http-request set-path`, the query is
 *   kept, the result starts with `/`, as stripPath()), then `use_backend` by router;
 * - no router matched: `404 page not found` (Traefik's and the embedded proxy's answer); a service
 *   with no server: HAProxy's own `503 Service Unavailable` page;
 * - one `backend` per service: `balance roundrobin | leastconn | hdr(<header>)` with `hash-type
 *   consistent | map-based`, `weight` per server, and the sticky cookie as `cookie <name> insert
 *   indirect nocache` with `cookie <server name>` on each server: a cookie naming an unknown,
 *   disabled or DOWN server is ignored, the request is balanced and the cookie rewritten;
 * - the active health check (`loadBalancer.healthCheck`): `option httpchk` + `http-check send meth
 *   GET uri <path>` (HTTP/1.0, no Host header: HAProxy's default probe), `http-check expect status
 *   200-399`, `timeout check <timeout>`, `check inter <interval> fall <n> rise <n>` on each server,
 *   and `option log-health-checks` so that every probe that moves a server's health is logged;
 * - retry (`loadBalancer.retry`): `retries <attempts - 1>`, `option redispatch 1` (every retry goes
 *   to another server, with no turn-around delay) and `retry-on conn-failure empty-response` (the
 *   server could not be reached, or closed the connection without answering; a 500 is an answer and
 *   is not retried). Without retry: `retries 0`, so a server that cannot be reached gives a 503 at
 *   once (HAProxy's default, `retries 3`, would try the SAME server 3 more times, 1 s apart);
 * - drain (`server.state: 'drain'`) is not a server keyword in HAProxy 2.6: it is an administrative
 *   state, set with the Runtime API (`set server <b>/<s> state drain`) and carried across reloads by
 *   the server-state file (`server-state-file` + `load-server-state-from-file global`, written by
 *   the driver from `show servers state` before each reload; it also keeps a server that health
 *   checks took out DOWN across a reload). HAProxy's drain still takes clients whose sticky cookie
 *   names the server; to re-pin them as the neutral config asks, a sticky backend strips its cookie
 *   from a request when the value is listed in the backend's drain ACL file (`-f <stateDir>/drain.<backend>.acl`,
 *   changed live with `add acl` / `del acl`), so HAProxy balances it and writes a new cookie;
 * - a `log-format` line carrying everything a `request:completed` event needs (see log-line.ts);
 * - a `listen stats` page on 127.0.0.1 and an admin-level stats socket (the Runtime API).
 *
 * HAProxy references: https://docs.haproxy.org/2.6/configuration.html and
 * https://docs.haproxy.org/2.6/management.html (Runtime API).
 *
 * Names: HAProxy allows letters, digits, `-`, `_`, `.` and `:` in proxy and server names; any
 * other character becomes `_` (and a clash gets `-2`, `-3`, ...). {@link haproxyNames} gives the
 * mapping both ways. Values that cannot be sanitised without changing their meaning (hosts, path
 * prefixes, cookie and header names, server URLs) are checked, and a value that could break out of
 * its place in the file is refused with an Error whose message is a sentence.
 *
 * Everything here is pure: no I/O, no clock, no state.
 */
import type { HealthCheck, ProxyConfig, ProxyRouter, ProxyService, Retry, StickyCookie } from '../../seams.ts';
import { ruleText } from '../config.ts';

/** Where the stats socket and page go; chosen by the driver. */
export interface HaproxyRenderOptions {
  /** Absolute path of the Runtime API socket (`stats socket <path> mode 600 level admin`). */
  statsSocket: string;
  /** TCP port of the `listen stats` page on 127.0.0.1. */
  statsPort: number;
  /** Old workers left after a reload are stopped after this long, in seconds. Default {@link DEFAULT_HARD_STOP_AFTER_S}. */
  hardStopAfterS?: number;
  /**
   * Directory of the server-state file (`servers.state`) and the drain ACL files
   * (`drain.<backend>.acl`), which the driver writes. Default: the stats socket's directory.
   */
  stateDir?: string;
}

/** The server-state file's name in the state directory. */
export const SERVER_STATE_FILE = 'servers.state';
/** Bounds checked before writing health check and retry settings (the topology's are narrower). */
const MAX_CHECK_MS = 3_600_000;
const MAX_FALL_RISE = 100;
const MAX_ATTEMPTS = 10;

/** `hard-stop-after`: a worker replaced by a reload keeps serving its open connections at most this long (s). */
export const DEFAULT_HARD_STOP_AFTER_S = 15;

/**
 * Timeouts of the `defaults` section, chosen to match the embedded proxy (Traefik's defaults):
 * idle client connections closed after 180 s (Traefik's entrypoint idleTimeout), no practical
 * limit on a slow backend answer (Traefik has none; HAProxy needs one), 5 s to connect.
 * `tunnel`: once a WebSocket is upgraded (HAProxy tunnels it in http mode out of the box) this
 * replaces `timeout client`/`server` for it: an idle WebSocket lives 1 h, not the entrypoint's idle
 * timeout (Traefik's hijacked connections have no deadline; lesson 05 sets clientIdle to 1 s).
 */
export const HAPROXY_TIMEOUTS = {
  connect: '5s',
  client: '180s',
  server: '180s',
  'http-keep-alive': '180s',
  'http-request': '60s',
  tunnel: '3600s',
} as const;

/** The response header captured into every log line: the replica that answered. */
export const SERVED_BY_HEADER = 'X-Served-By';

/**
 * The access-log line: HAProxy's `option httplog` layout (client, date, frontend, backend/server,
 * timers TR/Tw/Tc/Tr/Ta, status, bytes, termination state with cookie flags, connection counts,
 * queues, captured X-Served-By, request line) followed by three `key=value` fields the lab needs:
 * the router that matched, the backend connection's source address (`%bi:%bp`, it identifies the
 * proxy->backend connection: same port = connection reused) and the request's start
 * (`%Ts.%ms` accept date, then %Th and %Ti in ms, so start = accept + Th + Ti).
 * Parsed by log-line.ts; keep both in step.
 */
export const LOG_FORMAT =
  '%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %hs %{+Q}r ' +
  'router=%[var(txn.router)] upstream=%bi:%bp start=%Ts.%ms+%Th+%Ti';

/** Proxy names the renderer uses itself; a service sanitised to one of these gets a suffix. */
const STATS_PROXY = 'stats';
const NAME_CHARS = /[^A-Za-z0-9_.:-]/g;
/** A hostname or IPv4 address (what `req.hdr(host),host_only` can yield for a name). */
const HOST = /^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?$/;
const PATH_PREFIX = /^\/[A-Za-z0-9._~\-/]*$/;
const COOKIE_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const HEADER_NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** Server ids are below 2^20 so that HAProxy's ring keys (`id * 4096 + node`) never wrap. */
const MAX_SERVER_ID = 1_000_000;

/** An HAProxy-safe name: letters, digits, `-`, `_`, `.`, `:`; anything else becomes `_`. */
export function sanitizeName(name: string): string {
  const s = name.replace(NAME_CHARS, '_');
  return s === '' ? '_' : s;
}

/** An idle timeout in whole ms, 1 ms .. 1 h. */
function checkIdle(ms: number): number {
  if (!Number.isInteger(ms) || ms < 1 || ms > MAX_CHECK_MS) throw new Error(`The entrypoint idle timeout ${ms} must be a whole number of ms from 1 to ${MAX_CHECK_MS}.`);
  return ms;
}

/** `base`, or `base-2`, `base-3`, ... : the first not in `taken`; the result is added to `taken`. */
function unique(base: string, taken: Set<string>): string {
  let name = base;
  for (let i = 2; taken.has(name); i++) name = `${base}-${i}`;
  taken.add(name);
  return name;
}

/** FNV-1a, 32 bits, of a string's UTF-16 code units. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** One server as HAProxy knows it. */
export interface HaproxyServerName {
  /** The server name in haproxy.cfg (the sanitised replica hostname). */
  name: string;
  /** The replica hostname it stands for. */
  hostname: string;
  /**
   * The server's `id`, derived from its name (1..1000000). With `hash-type consistent` a server's
   * places on the hash ring come from its id, so a replica keeps its keys whatever the order or
   * number of the other servers (HAProxy would otherwise number servers 1, 2, 3, ... in file order,
   * and removing the first one would move every key).
   */
  id: number;
}

/** How the neutral names map to haproxy.cfg names, both ways. */
export interface HaproxyNames {
  /** The frontend (the sanitised entrypoint name). */
  frontend: string;
  /** Service name -> backend name. */
  backendOf: Map<string, string>;
  /** Backend name -> service name. */
  serviceOf: Map<string, string>;
  /** Router name -> the value the frontend stores in `txn.router`. */
  routerVarOf: Map<string, string>;
  /** `txn.router` value -> router name. */
  routerOf: Map<string, string>;
  /** Service name -> its servers, in config order. */
  serversOf: Map<string, HaproxyServerName[]>;
  /** `<backend>/<server>` -> replica hostname. */
  hostnameOf: Map<string, string>;
}

/**
 * The haproxy.cfg names of every frontend, backend, router and server of `config`. Deterministic:
 * the same config always gives the same names and server ids.
 */
export function haproxyNames(config: ProxyConfig): HaproxyNames {
  const frontend = sanitizeName(config.entrypoint.name);
  const proxies = new Set<string>([frontend, STATS_PROXY]);
  const backendOf = new Map<string, string>();
  const serviceOf = new Map<string, string>();
  const serversOf = new Map<string, HaproxyServerName[]>();
  const hostnameOf = new Map<string, string>();
  for (const svc of config.services) {
    if (backendOf.has(svc.name)) continue; // a duplicate service: the first one wins
    const backend = unique(sanitizeName(svc.name), proxies);
    backendOf.set(svc.name, backend);
    serviceOf.set(backend, svc.name);
    const names = new Set<string>();
    const ids = new Set<number>();
    const servers: HaproxyServerName[] = [];
    for (const s of svc.loadBalancer.servers) {
      const name = unique(sanitizeName(s.name), names);
      let id = (fnv1a(name) % MAX_SERVER_ID) + 1;
      while (ids.has(id)) id = (id % MAX_SERVER_ID) + 1;
      ids.add(id);
      servers.push({ name, hostname: s.name, id });
      hostnameOf.set(`${backend}/${name}`, s.name);
    }
    serversOf.set(svc.name, servers);
  }
  const routerVarOf = new Map<string, string>();
  const routerOf = new Map<string, string>();
  const vars = new Set<string>();
  for (const r of config.routers) {
    if (routerVarOf.has(r.name)) continue;
    const v = unique(sanitizeName(r.name), vars);
    routerVarOf.set(r.name, v);
    routerOf.set(v, r.name);
  }
  return { frontend, backendOf, serviceOf, routerVarOf, routerOf, serversOf, hostnameOf };
}

/** A server line's content, as the Runtime API would need it too. */
export interface HaproxyServerModel extends HaproxyServerName {
  /** IPv4 address or host name (as in the server URL), or an IPv6 address without brackets. */
  host: string;
  port: number;
  weight: number;
  /** The sticky cookie value (`cookie <value>`), or null when the backend is not sticky. */
  cookie: string | null;
  /** The health check keywords of the server line (`check inter <ms> fall <n> rise <n>`), or null without a check. */
  check: { interMs: number; fall: number; rise: number } | null;
  /** Administrative state: `drain` is set through the Runtime API and the server-state file, not in the server line. */
  state: 'ready' | 'drain';
  /** The server is the service's VIP (lab/vip.ts): the replica that answered is its X-Served-By. */
  vip?: boolean;
}

/** One backend as rendered. */
export interface HaproxyBackendModel {
  name: string;
  service: string;
  /** `roundrobin`, `leastconn` or `hdr(<header>)`. */
  balance: string;
  /** Set with `hdr(...)`. */
  hashType: 'consistent' | 'map-based' | null;
  cookie: StickyCookie | null;
  /** The active health check, or null. */
  healthCheck: HealthCheck | null;
  /** Retry on connection failure, or null (`retries 0`). */
  retry: Retry | null;
  /** The drain ACL file of a sticky backend (cookie values of its drained servers, one a line), or null. */
  drainAcl: string | null;
  servers: HaproxyServerModel[];
}

/**
 * The structured form of the configuration: the backends (for the driver's Runtime API plans) and
 * the text with and without the server lines (two texts whose `skeleton` is equal differ only in
 * servers).
 */
export interface HaproxyModel {
  names: HaproxyNames;
  backends: HaproxyBackendModel[];
  text: string;
  /** The text with every `server` line left out. */
  skeleton: string;
  /** Absolute path of the server-state file HAProxy loads at start and on every reload. */
  stateFile: string;
}

/** `host:port` for a server line or bind (IPv6 in brackets). */
export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The address part of a server URL (`http://127.0.0.1:41234` -> 127.0.0.1, 41234). */
export function parseServerUrl(url: string, label: string): { host: string; port: number } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`Server ${label} has the URL ${JSON.stringify(url)}, which is not a URL; use http://<host>:<port>.`);
  }
  if (u.protocol !== 'http:') throw new Error(`Server ${label} has the URL ${url}; HAProxy here only forwards to http:// servers.`);
  if (u.pathname !== '/' || u.search || u.hash || u.username || u.password) {
    throw new Error(`Server ${label} has the URL ${url}; a server URL is http://<host>:<port> with nothing after the port.`);
  }
  const port = u.port === '' ? 80 : Number(u.port);
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  if (!(HOST.test(host) || /^[0-9A-Fa-f:.]+$/.test(host))) {
    throw new Error(`Server ${label} has the host ${JSON.stringify(host)}, which HAProxy cannot take as an address.`);
  }
  return { host, port };
}

function checkWeight(weight: number, label: string): number {
  // Out-of-range whole numbers are left for `haproxy -c` to refuse, in its own words.
  if (!Number.isInteger(weight)) throw new Error(`Server ${label} has the weight ${weight}; a weight must be a whole number from 0 to 256.`);
  return weight;
}

function checkHost(host: string, router: string): string {
  if (!HOST.test(host) || host.length > 253) {
    throw new Error(`Router ${router} matches the host ${JSON.stringify(host)}, which is not a DNS name such as demo.localhost.`);
  }
  return host.toLowerCase().replace(/\.$/, '');
}

function checkPathPrefix(prefix: string, router: string): string {
  if (!PATH_PREFIX.test(prefix) || prefix.length > 200) {
    throw new Error(`Router ${router} has the path prefix ${JSON.stringify(prefix)}; it must start with / and use only letters, digits and . _ ~ - /.`);
  }
  return prefix;
}

/** A regex matching `prefix` literally at the start (the only special character allowed in a prefix is `.`). */
function prefixRegex(prefix: string): string {
  return `^${prefix.replace(/\./g, '[.]')}`;
}

function algorithmLines(svc: ProxyService): { balance: string; hashType: 'consistent' | 'map-based' | null } {
  const lb = svc.loadBalancer;
  switch (lb.algorithm) {
    case 'round-robin':
      return { balance: 'roundrobin', hashType: null };
    case 'least-connections':
      return { balance: 'leastconn', hashType: null };
    case 'hash': {
      const hash = lb.hash;
      if (!hash) throw new Error(`Service ${svc.name} balances by hash but names no header to hash (loadBalancer.hash is missing).`);
      if (!HEADER_NAME.test(hash.header)) {
        throw new Error(`Service ${svc.name} hashes the header ${JSON.stringify(hash.header)}; a header name may only contain letters, digits, _ and -.`);
      }
      if (hash.type !== 'consistent' && hash.type !== 'map-based') {
        throw new Error(`Service ${svc.name} has the hash type ${JSON.stringify(hash.type)}; use consistent or map-based.`);
      }
      return { balance: `hdr(${hash.header})`, hashType: hash.type };
    }
    default:
      throw new Error(`Service ${svc.name} uses the algorithm ${JSON.stringify(lb.algorithm)}; HAProxy here does round-robin, least-connections or hash.`);
  }
}

function cookieLine(cookie: StickyCookie, service: string): string {
  if (!COOKIE_NAME.test(cookie.name)) {
    throw new Error(`Service ${service} has the sticky cookie name ${JSON.stringify(cookie.name)}; a cookie name may only contain letters, digits, _ and - (1 to 64).`);
  }
  const parts = [`cookie ${cookie.name} insert indirect nocache`];
  if (cookie.httpOnly) parts.push('httponly');
  if (cookie.secure) parts.push('secure');
  const sameSite = { lax: 'Lax', strict: 'Strict', none: 'None', '': '' }[cookie.sameSite];
  if (sameSite === undefined) throw new Error(`Service ${service} has the SameSite value ${JSON.stringify(cookie.sameSite)}; use lax, strict, none or nothing.`);
  if (sameSite) parts.push(`attr "SameSite=${sameSite}"`);
  return parts.join(' ');
}

function wholeIn(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max;
}

function checkHealthCheck(hc: HealthCheck, service: string): HealthCheck {
  if (typeof hc.path !== 'string' || !PATH_PREFIX.test(hc.path) || hc.path.length > 200) {
    throw new Error(`Service ${service} has the health check path ${JSON.stringify(hc.path)}; it must start with / and use only letters, digits and . _ ~ - /.`);
  }
  if (!wholeIn(hc.intervalMs, 1, MAX_CHECK_MS)) throw new Error(`Service ${service} has the health check interval ${hc.intervalMs}; it must be a whole number of ms from 1 to ${MAX_CHECK_MS}.`);
  if (!wholeIn(hc.timeoutMs, 1, MAX_CHECK_MS)) throw new Error(`Service ${service} has the health check timeout ${hc.timeoutMs}; it must be a whole number of ms from 1 to ${MAX_CHECK_MS}.`);
  if (!wholeIn(hc.fall, 1, MAX_FALL_RISE)) throw new Error(`Service ${service} has the health check fall ${hc.fall}; it must be a whole number from 1 to ${MAX_FALL_RISE}.`);
  if (!wholeIn(hc.rise, 1, MAX_FALL_RISE)) throw new Error(`Service ${service} has the health check rise ${hc.rise}; it must be a whole number from 1 to ${MAX_FALL_RISE}.`);
  return { path: hc.path, intervalMs: hc.intervalMs, timeoutMs: hc.timeoutMs, fall: hc.fall, rise: hc.rise };
}

function checkRetry(retry: Retry, service: string): Retry {
  if (!wholeIn(retry.attempts, 1, MAX_ATTEMPTS)) {
    throw new Error(`Service ${service} retries with ${retry.attempts} attempts; attempts is a whole number from 1 to ${MAX_ATTEMPTS} (the first try included).`);
  }
  return { attempts: retry.attempts };
}

/** The directory part of an absolute path (pure; no node:path, as the rest of this module). */
function dirname(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

/**
 * Builds the configuration model: names, backends and the haproxy.cfg text.
 * @throws Error (a sentence) for a value that cannot be written safely into haproxy.cfg.
 */
export function buildHaproxyModel(config: ProxyConfig, opts: HaproxyRenderOptions): HaproxyModel {
  const names = haproxyNames(config);
  const ep = config.entrypoint;
  // Port 0 only shows up in a text rendered before start(); the driver binds a chosen free port.
  if (!Number.isInteger(ep.port) || ep.port < 0 || ep.port > 65535) {
    throw new Error(`The entrypoint port must be a whole number from 0 to 65535, got ${ep.port}.`);
  }
  if (!(HOST.test(ep.host) || /^[0-9A-Fa-f:.]+$/.test(ep.host))) {
    throw new Error(`The entrypoint host ${JSON.stringify(ep.host)} is not an address HAProxy can bind, such as 127.0.0.1.`);
  }
  if (!Number.isInteger(opts.statsPort) || opts.statsPort < 0 || opts.statsPort > 65535) {
    throw new Error(`The stats port must be a whole number from 0 to 65535, got ${opts.statsPort}.`);
  }
  if (/[\s"'#\\]/.test(opts.statsSocket) || !opts.statsSocket.startsWith('/')) {
    throw new Error(`The stats socket path ${JSON.stringify(opts.statsSocket)} must be absolute and free of spaces, quotes, # and \\.`);
  }
  const stateDir = opts.stateDir ?? dirname(opts.statsSocket);
  if (/[\s"'#\\]/.test(stateDir) || !stateDir.startsWith('/')) {
    throw new Error(`The state directory ${JSON.stringify(stateDir)} must be absolute and free of spaces, quotes, # and \\.`);
  }
  const stateFile = `${stateDir === '/' ? '' : stateDir}/${SERVER_STATE_FILE}`;

  const L: string[] = [];
  const S: string[] = []; // skeleton: the same minus server lines
  const line = (text: string, isServer = false) => {
    L.push(text);
    if (!isServer) S.push(text);
  };

  line('# haproxy.cfg written by Balancer Lab from its neutral proxy configuration.');
  line('# HAProxy 2.6 manual: https://docs.haproxy.org/2.6/configuration.html');
  line('global');
  line('  # One access-log line per request on stdout; the lab turns each into a request event.');
  line('  log stdout format raw local0');
  line('  # The Runtime API (level admin). expose-fd listeners: a reload hands the listening sockets over (no refused connection).');
  line(`  stats socket ${opts.statsSocket} mode 600 level admin expose-fd listeners`);
  line('  # A worker replaced by a reload finishes its open connections, for at most this long.');
  line(`  hard-stop-after ${opts.hardStopAfterS ?? DEFAULT_HARD_STOP_AFTER_S}s`);
  line('  # Server states (drain, DOWN after failed health checks) saved by the lab before a reload, loaded by the new worker.');
  line(`  server-state-file ${stateFile}`);
  line('');
  line('defaults');
  line('  mode http');
  line('  log global');
  line('  load-server-state-from-file global');
  for (const [k, v] of Object.entries(HAPROXY_TIMEOUTS)) line(`  timeout ${k} ${v}`);
  line('  # On reload, an idle keep-alive client connection is closed after its next response, not while the client may be sending.');
  line('  option idle-close-on-response');
  line('  # X-Forwarded-For from the client connection (the client-sent one is removed in the frontend).');
  line('  option forwardfor');
  line('  # A connection that sends nothing (a port probe) is not logged.');
  line('  option dontlognull');
  line(`  log-format "${LOG_FORMAT}"`);
  line('');

  // ---------------------------------------------------------------- frontend
  line(`frontend ${names.frontend}`);
  line(`  bind ${hostPort(ep.host, ep.port)}`);
  line(`  capture response header ${SERVED_BY_HEADER} len 128`);
  if (ep.idleTimeoutMs !== undefined) {
    const idle = checkIdle(ep.idleTimeoutMs);
    line(`  # Idle client keep-alive connections are closed after ${idle} ms (Traefik: respondingTimeouts.idleTimeout). HAProxy waits`);
    line('  # for the next request min(timeout http-keep-alive, timeout client) (haproxy/haproxy#2334), so both are set.');
    line(`  timeout http-keep-alive ${idle}ms`);
    line(`  timeout client ${idle}ms`);
  }
  line('  # Forwarding headers are set from the connection, never trusted from the client (as Traefik).');
  for (const h of ['X-Forwarded-For', 'X-Forwarded-Host', 'X-Forwarded-Port', 'X-Forwarded-Proto', 'X-Forwarded-Prefix', 'X-Real-Ip']) {
    line(`  http-request del-header ${h}`);
  }
  line('  http-request set-header X-Forwarded-Proto http');
  line('  http-request set-header X-Forwarded-Host %[req.hdr(host)]');
  line('  http-request set-header X-Forwarded-Port %[dst_port]');
  line('  http-request set-header X-Real-Ip %[src]');
  line("  # A backend's Keep-Alive hint (e.g. timeout=5) describes the proxy-backend hop: never passed on (RFC 9110 7.6.1).");
  line('  http-response del-header Keep-Alive');
  line('  # Routers, highest priority first; the first match is kept in txn.router.');
  const routed: { router: ProxyRouter; v: string }[] = [];
  for (const r of config.routers) {
    const v = names.routerVarOf.get(r.name)!;
    if (routed.some((x) => x.v === v)) continue; // a duplicate router name: the first one wins
    const prefix = checkPathPrefix(r.pathPrefix, r.name);
    const conds = ['!{ var(txn.router) -m found }'];
    if (r.host !== undefined) {
      const host = checkHost(r.host, r.name);
      conds.push(`{ req.hdr(host),host_only -m str ${host} ${host}. }`);
    }
    conds.push(`{ path -m beg ${prefix} }`);
    line(`  # router ${r.name}: ${ruleText(r)} (priority ${r.priority}) -> ${r.service}${r.stripPrefix ? ', StripPrefix' : ''}`);
    line(`  http-request set-var(txn.router) str(${v}) if ${conds.join(' ')}`);
    routed.push({ router: r, v });
  }
  line('  # No router matched: the same answer as Traefik.');
  line('  http-request return status 404 content-type "text/plain; charset=utf-8" string "404 page not found\\n" unless { var(txn.router) -m found }');
  for (const { router: r, v } of routed) {
    if (!r.stripPrefix) continue;
    line(`  # StripPrefix ${r.pathPrefix} for router ${r.name}: the query string is kept, the path keeps a leading /.`);
    line(`  http-request set-header X-Forwarded-Prefix ${r.pathPrefix} if { var(txn.router) -m str ${v} }`);
    line(`  http-request set-path /%[path,regsub(${prefixRegex(r.pathPrefix)}/?,)] if { var(txn.router) -m str ${v} }`);
  }
  for (const { router: r, v } of routed) {
    // A router naming a service that does not exist keeps its use_backend: `haproxy -c` refuses it.
    const backend = names.backendOf.get(r.service) ?? sanitizeName(r.service);
    line(`  use_backend ${backend} if { var(txn.router) -m str ${v} }`);
  }
  line('');

  // ---------------------------------------------------------------- backends
  const backends: HaproxyBackendModel[] = [];
  const done = new Set<string>();
  for (const svc of config.services) {
    if (done.has(svc.name)) continue;
    done.add(svc.name);
    const backend = names.backendOf.get(svc.name)!;
    const { balance, hashType } = algorithmLines(svc);
    const cookie = svc.loadBalancer.sticky?.cookie ?? null;
    const hc = svc.loadBalancer.healthCheck ? checkHealthCheck(svc.loadBalancer.healthCheck, svc.name) : null;
    const retry = svc.loadBalancer.retry ? checkRetry(svc.loadBalancer.retry, svc.name) : null;
    const drainAcl = cookie ? `${stateDir === '/' ? '' : stateDir}/drain.${backend}.acl` : null;
    line(`backend ${backend}`);
    line(`  # service ${svc.name}: ${svc.loadBalancer.algorithm}${cookie ? `, sticky cookie ${cookie.name}` : ''}`);
    line(`  balance ${balance}`);
    if (hashType) line(`  hash-type ${hashType}`);
    if (cookie) line(`  ${cookieLine(cookie, svc.name)}`);
    if (hc) {
      line(`  # Active health check: GET ${hc.path} every ${hc.intervalMs} ms, failed without a 2xx/3xx answer within ${hc.timeoutMs} ms;`);
      line(`  # a server leaves the rotation after ${hc.fall} failed probe(s) in a row and comes back after ${hc.rise} good one(s).`);
      line('  option httpchk');
      line(`  http-check send meth GET uri ${hc.path}`);
      line('  http-check expect status 200-399');
      line(`  timeout check ${hc.timeoutMs}ms`);
      line('  # Log every probe that changes a server\'s health (the lab turns them into probe events).');
      line('  option log-health-checks');
    }
    if (retry) {
      line(`  # Retry: up to ${retry.attempts} tries in all, each retry on another server, only when the server could not`);
      line('  # be reached or closed the connection without answering (a 500 is an answer: not retried).');
      line(`  retries ${retry.attempts - 1}`);
      line('  option redispatch 1');
      line('  retry-on conn-failure empty-response');
    } else {
      line('  # No retry: a server that cannot be reached gives a 503 at once (the default, retries 3, would');
      line('  # try the same server 3 more times, 1 s apart).');
      line('  retries 0');
    }
    if (svc.loadBalancer.reuse === false) {
      line('  # No reuse of server connections: a new one per request, closed after the answer (Traefik: maxIdleConnsPerHost -1).');
      line('  option http-server-close');
    } else if (svc.loadBalancer.httpReuse !== undefined && svc.loadBalancer.httpReuse !== 'safe') {
      const mode = svc.loadBalancer.httpReuse;
      if (!['aggressive', 'always', 'never'].includes(mode)) throw new Error(`Service ${svc.name} has http-reuse ${JSON.stringify(mode)}; use safe, aggressive, always or never.`);
      line(`  # Idle server connections: http-reuse ${mode} (HAProxy's default is safe).`);
      line(`  http-reuse ${mode}`);
    }
    if (cookie && drainAcl) {
      line('  # A server in drain state keeps no sticky client: its cookie is dropped from the request, the');
      line('  # request is balanced and a new cookie written. The file lists the drained servers (add acl / del acl live).');
      line(
        `  http-request replace-header Cookie (^|;\\s*)${cookie.name}=[^;]*;?\\s* \\1 if { req.cook(${cookie.name}) -m str -f ${drainAcl} }`,
      );
    }
    if (svc.loadBalancer.servers.length === 0) line('  # no server: HAProxy answers 503 Service Unavailable');
    const servers: HaproxyServerModel[] = [];
    const serverNames = names.serversOf.get(svc.name)!;
    svc.loadBalancer.servers.forEach((s, i) => {
      const n = serverNames[i];
      const { host, port } = parseServerUrl(s.url, s.name);
      const weight = checkWeight(s.weight, s.name);
      const state = s.state ?? 'ready';
      if (state !== 'ready' && state !== 'drain') throw new Error(`Server ${s.name} has the state ${JSON.stringify(state)}; use ready or drain.`);
      const model: HaproxyServerModel = {
        ...n,
        host,
        port,
        weight,
        cookie: cookie ? n.name : null,
        check: hc ? { interMs: hc.intervalMs, fall: hc.fall, rise: hc.rise } : null,
        state,
        ...(s.vip ? { vip: true } : {}),
      };
      servers.push(model);
      if (state === 'drain') line(`  # ${n.name}: state drain (set server ${backend}/${n.name} state drain; kept across reloads in ${SERVER_STATE_FILE})`, true);
      line(`  ${serverLine(model)}`, true);
    });
    backends.push({ name: backend, service: svc.name, balance, hashType, cookie, healthCheck: hc, retry, drainAcl, servers });
    line('');
  }

  // ---------------------------------------------------------------- stats page
  line(`listen ${STATS_PROXY}`);
  line(`  bind 127.0.0.1:${opts.statsPort}`);
  line('  stats enable');
  line('  stats uri /');
  line('  stats refresh 2s');
  line('  # The stats page is not part of the lesson traffic: no access-log line for it.');
  line('  http-request set-log-level silent');

  return { names, backends, text: `${L.join('\n')}\n`, skeleton: `${S.join('\n')}\n`, stateFile };
}

/** The health check keywords of a server line or of `add server` (empty without a check). */
export function checkKeywords(s: Pick<HaproxyServerModel, 'check'>): string {
  return s.check ? ` check inter ${s.check.interMs}ms fall ${s.check.fall} rise ${s.check.rise}` : '';
}

/** `server <name> <addr:port> id <id> weight <w> [cookie <value>] [check inter <ms> fall <n> rise <n>]`, as in haproxy.cfg. */
export function serverLine(s: HaproxyServerModel): string {
  return `server ${s.name} ${hostPort(s.host, s.port)} id ${s.id} weight ${s.weight}${s.cookie !== null ? ` cookie ${s.cookie}` : ''}${checkKeywords(s)}`;
}

/**
 * The haproxy.cfg text for `config`. Pure.
 * @throws Error (a sentence) for a value that cannot be written safely into haproxy.cfg
 *   (e.g. a cookie name with a space); values HAProxy itself refuses (e.g. a weight of 300, a
 *   router to a service that does not exist) are rendered and left for `haproxy -c` to reject.
 */
export function renderHaproxyConfig(config: ProxyConfig, opts: HaproxyRenderOptions): string {
  return buildHaproxyModel(config, opts).text;
}
