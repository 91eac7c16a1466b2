/**
 * The embedded proxy: a reverse proxy inside the lab process, built on http-proxy-3 over node:http,
 * whose semantics follow Traefik v3's documented ones, so what a lesson shows here is what Traefik
 * would do:
 *
 * - routing: routers tried by priority (rule length), `Host` + `PathPrefix` rules, StripPrefix
 *   (https://doc.traefik.io/traefik/routing/routers/, .../middlewares/http/stripprefix/);
 * - load balancing per REQUEST over the service's servers: a keep-alive client connection does not
 *   pin a server (https://doc.traefik.io/traefik/routing/services/). Weighted round-robin (Traefik's
 *   `wrr`), least-connections (HAProxy's `leastconn`: Traefik v3 has none), header hashing
 *   (HAProxy's `balance hdr()` + `hash-type consistent|map-based`) and Traefik's sticky cookie; the
 *   details and their sources are in ./balancer.ts;
 * - backend connections: a pool of keep-alive connections per server (one node:http Agent per
 *   server, so each socket is visible), closed by the proxy after its idle timeout (Traefik's
 *   serversTransport `idleConnTimeout`, 90 s) and NOT before a backend's advertised `Keep-Alive:
 *   timeout` (Go ignores that header, so the backend closes first, as with Traefik);
 * - the entrypoint's idle timeout for client connections (Traefik's
 *   `transport.respondingTimeouts.idleTimeout`, 180 s);
 * - X-Forwarded-For/-Host/-Port/-Proto and X-Real-Ip set from the client connection (client-sent
 *   values are not trusted, Traefik's default), X-Forwarded-Prefix when a prefix was stripped;
 * - Traefik's own answers: 404 `404 page not found` (no router), 503 `no available server` (no
 *   server in the service), 502 `Bad Gateway` (backend unreachable or reset); 499 is logged when
 *   the client went away first;
 * - one access-log line per request in Traefik's Common Log Format
 *   (https://doc.traefik.io/traefik/observability/access-logs/);
 * - the active health check (`loadBalancer.healthCheck`), Traefik's
 *   (https://doc.traefik.io/traefik/routing/services/#health-check and traefik/traefik
 *   pkg/healthcheck/healthcheck.go): every `intervalMs` each server of the service gets
 *   `GET <path>`; no answer within `timeoutMs`, a refused or reset connection, or a status outside
 *   200..399 is a failed probe. ONE failed probe takes the server out of the rotation, ONE good probe
 *   puts it back: Traefik has no fall/rise, so `fall` and `rise` are ignored here (HAProxy honours
 *   them). A server starts healthy when it is added (Traefik's balancer marks a new server up; its
 *   first probe comes one interval later). When every server of a service is out, the proxy answers
 *   503 `no available server`, as Traefik's wrr does. A sticky cookie naming a server that is out is
 *   re-pinned. Probes go over a fresh connection each (`Connection: close`), never through the
 *   request pools, so they neither show up as proxy-backend connections nor trip over a pooled
 *   connection the backend is closing; Traefik probes through the service's transport and follows
 *   redirects, here a 3xx answer itself counts as healthy. Unlike Traefik, which rebuilds its
 *   checkers (all servers up again) on every configuration change, apply() keeps the health of the
 *   servers that stay: the lab applies a new configuration on every scale or kill. Events:
 *   `healthcheck:probed` for every probe (`at` = when its outcome was known) and
 *   `replica:health-changed` on every transition;
 * - retry on connection failure (`loadBalancer.retry`), Traefik's retry middleware
 *   (https://doc.traefik.io/traefik/middlewares/http/retry/ and pkg/middlewares/retry/retry.go): the
 *   request is sent again, up to `attempts` tries in all, only while the backend has received
 *   nothing of it, i.e. the connection could not be made (refused, unreachable); Traefik disables
 *   retries as soon as the request headers were written. So a server that answers (500 included),
 *   that resets a connection after the request went out, or that accepts and never answers (hang) is
 *   not retried. The method does not matter (Traefik retries a POST as well): the body, up to
 *   {@link RETRY_BODY_LIMIT} bytes, is kept to be sent again (Go sends it only once connected; Node
 *   buffers it in the failed request, so the proxy keeps a copy). Each retry goes to another server
 *   picked by the service's algorithm among those not tried yet (Traefik re-enters its balancer,
 *   which for round-robin is the next server too); no backoff (Traefik's default without
 *   `initialInterval`). `request:completed.retried` is true when a retry happened and `replica` is
 *   the server that finally answered;
 * - drain (`server.state: 'drain'`, HAProxy's `set server ... state drain`; Traefik has none): the
 *   server takes no new request, sticky clients included (re-pinned), while the requests in flight
 *   on it finish; {@link EmbeddedProxy.drained} says when none is left.
 *
 * It emits `request:completed`, `connection:opened` / `connection:closed` (hops client-proxy and
 * proxy-backend) and `log:line` (stream `access`, source `proxy`) on the bus. With sticky sessions
 * on, `request:completed.stickyCookie` is the whole `Set-Cookie` value the proxy wrote
 * (`_1d52e=3f9a0c1b2d4e5f60; Path=/`), or, when the request's cookie was honoured and nothing was
 * written, that cookie as `name=value` (`_1d52e=3f9a0c1b2d4e5f60`: no `;`).
 *
 * WebSockets (an `Upgrade: websocket` request, as Traefik proxies them): the same routing,
 * StripPrefix and balancing as a request (sticky cookie written on the 101, header hash), 404 /
 * 503 / 502 answered the same way before the upgrade. The upgrade is one `request:completed`
 * (status 101, emitted when the backend switches protocols); the tunnel's life is its two
 * connections (`connection:opened` / `connection:closed`). A WebSocket stays on the replica it was
 * upgraded on until it closes; stop() closes it.
 */
import http from 'node:http';
import net from 'node:net';
import { PassThrough, type Duplex } from 'node:stream';
import { createProxyServer, type ProxyServer as HttpProxy } from 'http-proxy-3';
import type { EventBus, Hop } from '../../events.ts';
import type { HealthCheck, ProxyCapabilities, ProxyConfig, ProxyDriver, ProxyRouter, Retry } from '../../seams.ts';
import { MAX_WEIGHT, matchRouter, ruleText, stripPath } from '../config.ts';
import { ServiceBalancer, type BalancedServer, type BalancerPick } from './balancer.ts';

/** Traefik v3 default `entryPoints.<name>.transport.respondingTimeouts.idleTimeout`: 180 s. */
export const DEFAULT_ENTRYPOINT_IDLE_TIMEOUT_MS = 180_000;
/** Traefik v3 default `serversTransport.idleConnTimeout` (idle pooled backend connections): 90 s. */
export const DEFAULT_SERVER_IDLE_CONN_TIMEOUT_MS = 90_000;
/** Largest request body kept so that a retry can send it again; a bigger body is not retried. */
export const RETRY_BODY_LIMIT = 1024 * 1024;
/** User-Agent of health-check probes: what Traefik's Go HTTP client sends. */
const PROBE_USER_AGENT = 'Go-http-client/1.1';

export interface EmbeddedProxyOptions {
  /** Where every event goes. */
  bus: EventBus;
  /**
   * Idle time (ms) after which the proxy closes a keep-alive client connection that carries no
   * request, when the configuration's `entrypoint.idleTimeoutMs` is absent (that one wins, and
   * apply() changes it live). Default {@link DEFAULT_ENTRYPOINT_IDLE_TIMEOUT_MS}.
   */
  entrypointIdleTimeoutMs?: number;
  /**
   * Idle time (ms) after which the proxy closes a pooled backend connection. Default
   * {@link DEFAULT_SERVER_IDLE_CONN_TIMEOUT_MS}.
   */
  serverIdleConnTimeoutMs?: number;
}

/** What we know about one TCP connection we emitted `connection:opened` for. */
interface ConnInfo {
  id: string;
  hop: Extract<Hop, 'client-proxy' | 'proxy-backend' | 'proxy-vip'>;
  local: string;
  remote: string;
  replica?: string;
  /** The peer's FIN arrived while our side was still open. */
  peerClosedFirst: boolean;
  /** Why the proxy closed it, when the proxy decided (pool removed, proxy stopped, ...). */
  proxyReason?: string;
  /** Last socket error code (e.g. ECONNRESET). */
  errorCode?: string;
  /** The socket sat idle (between requests) when its timeout fired. */
  timedOut: boolean;
  /** True while the connection carries no request (a pooled socket in the free list). */
  idle: boolean;
  /** The peer (client request or backend response) asked for `Connection: close`. */
  askedClose: boolean;
  /** Requests in progress on this (client) connection. */
  active: number;
}

/** One upstream server as the balancer holds it. */
interface ServerState {
  name: string;
  url: string;
  agent: ServerAgent;
  /** `state: 'drain'`: takes no new request. */
  draining: boolean;
  /** Its health as the service's active check sees it; null when the service has no check. */
  health: HealthRecord | null;
  /** The server is a VIP (ProxyServer.vip): the replica is the response's X-Served-By. */
  vip: boolean;
}

/** The health of one server of one service with an active health check; kept across apply(). */
interface HealthRecord {
  service: string;
  name: string;
  url: string;
  port: number | null;
  healthy: boolean;
  /** The probe in flight (until its socket closed), or null; set to null to cancel it. */
  probe: http.ClientRequest | null;
  /** Set when the server left the service or the check stopped: no more probes, outcomes dropped. */
  cancelled: boolean;
}

/** The active health check of one service. */
interface HealthChecker {
  service: string;
  check: HealthCheck;
  /** The interval timer; null while the proxy is not started. */
  timer: NodeJS.Timeout | null;
  records: HealthRecord[];
}

interface ServiceState {
  name: string;
  balancer: ServiceBalancer<ServerState>;
  /** Lower-cased name of the hashed header (`hash` algorithm), else null. */
  hashHeader: string | null;
  retry: Retry | null;
}

interface Routing {
  config: ProxyConfig;
  services: Map<string, ServiceState>;
}

/** Per-request bookkeeping, from arrival to `request:completed`. */
interface RequestState {
  id: number;
  at: number;
  t0: number;
  method: string;
  path: string;
  clientIp: string;
  clientConnId: string;
  router: ProxyRouter | null;
  service: string | null;
  server: ServerState | null;
  /** The sticky cookie for request:completed (see the module comment), when sticky sessions are on. */
  stickyCookie?: string;
  /** Set-Cookie value the response must carry (a new or rewritten sticky cookie). */
  setCookie?: string;
  /** The agent whose in-flight count this request holds (released on completion). */
  inflightOn: ServerAgent | null;
  proxyReq: http.ClientRequest | null;
  upstreamConnId: string | null;
  servedBy: string | null;
  bytes: number;
  error?: string;
  /** The request was replayed once on a fresh connection after a reused one failed (Go's transport does this). */
  replayed: boolean;
  /** What the balancer needs to pick again for a retry. */
  cookie: string | undefined;
  hashKey: string | undefined;
  /** Tries so far (1 = the first); each #forward of a new try bumps `attempt`. */
  tries: number;
  /** Identifies the current forward; error callbacks of an earlier one are ignored. */
  attempt: number;
  /** Servers (`name url`) a connection could not be made to, left out of a retry's pick. */
  failed: Set<string>;
  retried: boolean;
  /** A copy of the request body for retries (retry on and a body present), else null. */
  body: BodyReplay | null;
  done: boolean;
}

/** Request headers that describe one hop only; never forwarded (RFC 9110 7.6.1, as Go's ReverseProxy). */
const HOP_BY_HOP_REQUEST = ['keep-alive', 'proxy-connection', 'te', 'upgrade', 'proxy-authorization'];
/** Forwarding headers a client may not set: Traefik (forwardedHeaders.insecure=false) drops them. */
const UNTRUSTED_FORWARDED = [
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-forwarded-proto',
  'x-forwarded-server',
  'x-forwarded-prefix',
  'x-real-ip',
];
/** Initial delay of TCP keep-alive probes on pooled backend sockets (node:http's default). */
const TCP_KEEPALIVE_MS = 1000;
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Callbacks a ServerAgent uses to report its sockets to the proxy. */
interface AgentHooks {
  socketCreated(socket: net.Socket, agent: ServerAgent): void;
  info(socket: Duplex): ConnInfo | undefined;
}

/**
 * A keep-alive http.Agent for ONE upstream server: every socket it creates is reported to the
 * proxy; idle sockets close after `idleMs` (the backend's `Keep-Alive: timeout` hint is ignored, as
 * Go's transport does); once `retired` (server removed from its pool) no socket returns to the pool.
 */
class ServerAgent extends http.Agent {
  retired = false;
  /** Requests sent to this server and not completed yet (least-connections). */
  inflight = 0;
  readonly serverName: string;
  readonly #hooks: AgentHooks;
  readonly #idleMs: number;

  /** False: every connection carries one request and is closed (Traefik maxIdleConnsPerHost -1). */
  readonly reuse: boolean;
  /** The server is a VIP: its sockets are hop proxy-vip. */
  readonly vip: boolean;

  constructor(serverName: string, idleMs: number, hooks: AgentHooks, opts: { reuse?: boolean; vip?: boolean } = {}) {
    // LIFO reuse of idle connections, like Go's transport; no cap on connections per server.
    super({ keepAlive: opts.reuse !== false, keepAliveMsecs: TCP_KEEPALIVE_MS, scheduling: 'lifo', maxFreeSockets: 200 });
    this.reuse = opts.reuse !== false;
    this.vip = opts.vip === true;
    this.serverName = serverName;
    this.#idleMs = idleMs;
    this.#hooks = hooks;
  }

  override createConnection(
    options: http.ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const socket = super.createConnection(options, callback);
    if (socket instanceof net.Socket) this.#hooks.socketCreated(socket, this);
    return socket;
  }

  override keepSocketAlive(socket: Duplex): boolean {
    const info = this.#hooks.info(socket);
    if (this.retired) {
      if (info) info.proxyReason ??= 'pool removed';
      return false; // the agent destroys it
    }
    if (!this.reuse) return false; // one request per connection: the agent destroys it
    if (socket instanceof net.Socket) {
      socket.setKeepAlive(true, TCP_KEEPALIVE_MS);
      socket.unref();
      socket.setTimeout(this.#idleMs);
    }
    if (info) info.idle = true;
    return true;
  }

  override reuseSocket(socket: Duplex, request: http.ClientRequest): void {
    super.reuseSocket(socket, request);
    if (socket instanceof net.Socket) socket.setTimeout(0);
    const info = this.#hooks.info(socket);
    if (info) info.idle = false;
  }

  /** Closes the pooled (idle) sockets now; sockets carrying a request close when it completes. */
  retire(): void {
    this.retired = true;
    for (const list of Object.values(this.freeSockets)) {
      for (const s of list ?? []) {
        const info = this.#hooks.info(s);
        if (info) info.proxyReason ??= 'pool removed';
        s.destroy();
      }
    }
  }

  /** Sockets carrying a request right now. */
  busyCount(): number {
    let n = 0;
    for (const list of Object.values(this.sockets)) n += list?.length ?? 0;
    return n;
  }
}

/**
 * Keeps a request body so that a retry can send it again: each attempt gets a stream of what was
 * read so far followed by the rest as it arrives. Past {@link RETRY_BODY_LIMIT} bytes nothing is
 * kept any more and `replayable` turns false.
 */
class BodyReplay {
  replayable = true;
  readonly #req: http.IncomingMessage;
  readonly #chunks: Buffer[] = [];
  #size = 0;
  #ended = false;
  #current: PassThrough | null = null;

  constructor(req: http.IncomingMessage) {
    this.#req = req;
    req.on('data', (chunk: Buffer) => {
      if (this.replayable) {
        this.#size += chunk.length;
        if (this.#size > RETRY_BODY_LIMIT) {
          this.replayable = false;
          this.#chunks.length = 0;
        } else this.#chunks.push(chunk);
      }
      const cur = this.#current;
      if (cur && !cur.destroyed && !cur.write(chunk)) {
        req.pause();
        cur.once('drain', () => {
          if (this.#current === cur) req.resume();
        });
      }
    });
    req.on('end', () => {
      this.#ended = true;
      this.#current?.end();
    });
  }

  /** The body for a new attempt (the previous attempt's stream is dropped). */
  stream(): PassThrough {
    this.#current?.destroy();
    const s = new PassThrough();
    for (const c of this.#chunks) s.write(c);
    if (this.#ended) s.end();
    this.#current = s;
    if (this.#req.isPaused()) this.#req.resume();
    return s;
  }
}

function newHealthRecord(service: string, name: string, url: string): HealthRecord {
  let port: number | null = null;
  try {
    const u = new URL(url);
    port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
  } catch {
    // An unparsable URL: the probe fails and says why.
  }
  return { service, name, url, port, healthy: true, probe: null, cancelled: false };
}

function addr(ip: string | undefined, port: number | undefined): string {
  if (!ip) return '?';
  return ip.includes(':') ? `[${ip}]:${port ?? '?'}` : `${ip}:${port ?? '?'}`;
}

function errCode(err: unknown): string {
  // Happy-eyeballs connects (a name with several addresses) fail with an AggregateError.
  if (err instanceof AggregateError && err.errors.length > 0 && !(err as { code?: unknown }).code) return errCode(err.errors[0]);
  const e = err as { code?: unknown; message?: unknown } | null;
  if (e && typeof e.code === 'string') return e.code;
  if (e && typeof e.message === 'string') return e.message;
  return String(err);
}

/** `dd/Mon/yyyy:HH:MM:SS +0000` (UTC), the CLF timestamp. */
export function clfTimestamp(epochMs: number): string {
  const d = new Date(epochMs);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

function quoted(v: string | undefined | null): string {
  return `"${v ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"') : '-'}"`;
}

/**
 * The embedded proxy driver (`name: 'embedded'`). One instance serves one entrypoint; start() it,
 * apply() new configurations while it runs, stop() it. See the module comment for the semantics.
 */
export class EmbeddedProxy implements ProxyDriver {
  readonly name = 'embedded' as const;
  readonly capabilities: ProxyCapabilities = {
    roundRobin: true,
    weights: true,
    leastConnections: true,
    stickyCookie: true,
    headerHash: true,
    activeHealthCheck: true,
    retry: true,
    perRequestEvents: true,
    connectionEvents: true,
    runtimeApi: false,
  };

  readonly #bus: EventBus;
  #entrypointIdleMs: number;
  readonly #defaultEntrypointIdleMs: number;
  readonly #serverIdleMs: number;
  readonly #proxy: HttpProxy;
  readonly #conns = new WeakMap<Duplex, ConnInfo>();
  readonly #requests = new WeakMap<http.IncomingMessage, RequestState>();
  /** Sockets not yet closed (client and backend), with a promise that settles on 'close'. */
  readonly #live = new Map<net.Socket, Promise<void>>();
  /** Agents by server identity (`name url`). */
  readonly #agents = new Map<string, ServerAgent>();
  /** Agents of removed servers whose in-flight requests have not finished. */
  readonly #retired = new Set<ServerAgent>();
  /** Requests in flight per server name (drained()). */
  readonly #inflightByServer = new Map<string, number>();
  readonly #drainWaiters = new Set<{ server: string; resolve: (drained: boolean) => void; timer: NodeJS.Timeout }>();
  /** Health of each server of a service with an active check, by `service\nname url`. */
  #health = new Map<string, HealthRecord>();
  /** Active health checks by service name. */
  readonly #checkers = new Map<string, HealthChecker>();
  #routing: Routing | null = null;
  #server: http.Server | null = null;
  #stopping = false;
  #starting = false;
  #stopped: Promise<void> | null = null;
  #port: number | null = null;
  #requestSeq = 0;
  /** WebSocket upgrades on their way to the backend (until their request:completed). */
  #wsStates = new Map<
    http.IncomingMessage,
    {
      st: RequestState;
      onUpgraded: (proxyRes: http.IncomingMessage, proxySocket: Duplex) => void;
      onResponse: (proxyRes: http.IncomingMessage) => void;
    }
  >();
  #clientSeq = 0;
  #upstreamSeq = 0;

  /**
   * @param opts.bus the lab's event bus.
   * @param opts.entrypointIdleTimeoutMs client connection idle timeout, ms (default 180000).
   * @param opts.serverIdleConnTimeoutMs pooled backend connection idle timeout, ms (default 90000).
   */
  constructor(opts: EmbeddedProxyOptions) {
    this.#bus = opts.bus;
    this.#defaultEntrypointIdleMs = opts.entrypointIdleTimeoutMs ?? DEFAULT_ENTRYPOINT_IDLE_TIMEOUT_MS;
    this.#entrypointIdleMs = this.#defaultEntrypointIdleMs;
    this.#serverIdleMs = opts.serverIdleConnTimeoutMs ?? DEFAULT_SERVER_IDLE_CONN_TIMEOUT_MS;
    // xfwd: X-Forwarded-For/-Port/-Proto/-Host from the client connection (after we drop the
    // client's own). No proxyTimeout: Traefik's responseHeaderTimeout defaults to none.
    this.#proxy = createProxyServer({ xfwd: true });
    this.#proxy.on('proxyReq', (proxyReq, req) => {
      const st = this.#requests.get(req);
      if (st) st.proxyReq = proxyReq;
    });
    this.#proxy.on('proxyRes', (proxyRes, req, res) => this.#onProxyRes(proxyRes, req, res));
    // WebSocket upgrades: listeners on the backend request before http-proxy-3's own (they run first).
    this.#proxy.on('proxyReqWs', (proxyReq: http.ClientRequest, req: http.IncomingMessage) => {
      const ws = this.#wsStates.get(req);
      if (!ws) return;
      ws.st.proxyReq = proxyReq;
      proxyReq.on('upgrade', (proxyRes: http.IncomingMessage, proxySocket: Duplex) => ws.onUpgraded(proxyRes, proxySocket));
      proxyReq.on('response', (proxyRes: http.IncomingMessage) => ws.onResponse(proxyRes));
    });
    // Errors go to the per-call callback; this only keeps a stray one from crashing the lab.
    this.#proxy.on('error', () => {});
  }

  /** The port the proxy listens on, or null when stopped. */
  get port(): number | null {
    return this.#port;
  }

  /**
   * The configuration as a Traefik file-provider dynamic configuration
   * (https://doc.traefik.io/traefik/providers/file/): `http.routers` (rule, priority, service,
   * middlewares, entryPoints), `http.middlewares` (stripPrefix; retry, attached to every router of
   * a service with retry on), `http.services` (loadBalancer.servers[].url/weight, sticky,
   * healthCheck {path, interval, timeout}). Traefik has no drain state: a draining server is left out
   * of the list (what a Traefik user would do; requests in flight finish) and a comment says so, as
   * for fall/rise, which Traefik has none of. Returned as YAML text; the document is JSON, which is
   * YAML, under comment lines naming the static entrypoint it assumes. Pure.
   */
  render(config: ProxyConfig): string {
    const ep = config.entrypoint;
    const routers: Record<string, unknown> = {};
    const middlewares: Record<string, unknown> = {};
    for (const r of config.routers) {
      const router: Record<string, unknown> = {
        entryPoints: [ep.name],
        rule: ruleText(r),
        priority: r.priority,
        service: r.service,
      };
      const chain: string[] = [];
      const retry = config.services.find((svc) => svc.name === r.service)?.loadBalancer.retry;
      if (retry) {
        const mw = `${r.service}-retry`;
        middlewares[mw] = { retry: { attempts: retry.attempts } };
        chain.push(mw);
      }
      if (r.stripPrefix) {
        const mw = `${r.name}-stripprefix`;
        middlewares[mw] = { stripPrefix: { prefixes: [r.pathPrefix] } };
        chain.push(mw);
      }
      if (chain.length > 0) router.middlewares = chain;
      routers[r.name] = router;
    }
    const services: Record<string, unknown> = {};
    const notes: string[] = [];
    for (const s of config.services) {
      const lb = s.loadBalancer;
      const draining = lb.servers.filter((srv) => srv.state === 'drain');
      const loadBalancer: Record<string, unknown> = {
        servers: lb.servers.filter((srv) => srv.state !== 'drain').map((srv) => ({ url: srv.url, weight: srv.weight })),
        passHostHeader: true,
      };
      if (draining.length > 0) {
        notes.push(
          `# ${s.name}: draining ${draining.map((d) => `${d.name} (${d.url})`).join(', ')}: Traefik has no drain state; ` +
            `the server is left out of the list and its requests in flight finish.`,
        );
      }
      if (lb.healthCheck) {
        const hc = lb.healthCheck;
        loadBalancer.healthCheck = { path: hc.path, interval: goDuration(hc.intervalMs), timeout: goDuration(hc.timeoutMs) };
        notes.push(
          `# ${s.name}: health check fall=${hc.fall} rise=${hc.rise} not rendered: Traefik has no fall/rise ` +
            `(one failed probe takes a server out, one good probe puts it back).`,
        );
      }
      if (lb.sticky) {
        const c = lb.sticky.cookie;
        loadBalancer.sticky = { cookie: { name: c.name, httpOnly: c.httpOnly, secure: c.secure, ...(c.sameSite ? { sameSite: c.sameSite } : {}) } };
      }
      if (lb.algorithm === 'least-connections') {
        notes.push(`# ${s.name}: least-connections has no Traefik v3 equivalent; the embedded proxy follows HAProxy's balance leastconn.`);
      } else if (lb.algorithm === 'hash' && lb.hash) {
        notes.push(
          `# ${s.name}: hashing header ${lb.hash.header} (${lb.hash.type}) has no Traefik v3 equivalent; ` +
            `the embedded proxy follows HAProxy's balance hdr(${lb.hash.header}) with hash-type ${lb.hash.type}.`,
        );
      }
      services[s.name] = { loadBalancer };
    }
    const doc = { http: { routers, middlewares, services } };
    return (
      `# Traefik dynamic configuration (file provider), from Balancer Lab's embedded proxy.\n` +
      `# Static configuration assumed: entryPoints.${ep.name}.address = "${ep.host}:${ep.port}"\n` +
      notes.map((n) => `${n}\n`).join('') +
      `${JSON.stringify(doc, null, 2)}\n`
    );
  }

  /**
   * Starts listening on `config.entrypoint` (port 0 = any free port) with `config` as the routing.
   * Resolves with the bound port.
   * @throws Error (rejects) when already started, or when the port cannot be bound: EADDRINUSE gives
   *   a sentence naming the port and the LAB_PROXY_PORT environment variable.
   */
  async start(config: ProxyConfig): Promise<number> {
    if (this.#server || this.#starting) throw new Error(`The embedded proxy is already started (port ${this.#port ?? 'pending'}); stop it first.`);
    this.#starting = true;
    try {
      return await this.#start(config);
    } finally {
      this.#starting = false;
    }
  }

  async #start(config: ProxyConfig): Promise<number> {
    this.#install(config);
    const server = http.createServer();
    // node:http would close idle connections 1 s after keepAliveTimeout and advertise
    // `Keep-Alive: timeout=`; Go (Traefik) does neither. We time idle connections ourselves.
    server.keepAliveTimeout = 0;
    server.on('connection', (socket: net.Socket) => this.#onClientConnection(socket));
    server.on('request', (req, res) => this.#onRequest(req, res));
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(req, socket as net.Socket, head));
    const { host, port } = config.entrypoint;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        server.off('listening', onListening);
        reject(new Error(listenErrorSentence(err, host, port), { cause: err }));
      };
      const onListening = () => {
        server.off('error', onError);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen(port, host);
    }).catch((err: unknown) => {
      this.#stopHealthChecks();
      throw err;
    });
    this.#server = server;
    this.#port = (server.address() as net.AddressInfo).port;
    return this.#port;
  }

  /**
   * Replaces routers, pools and balancing settings (algorithm, weights, sticky cookie, hashing) live.
   * Requests in flight finish on the server they were sent to. A change of a service's servers or
   * weights restarts its round-robin at the first server in pool order (Traefik builds the service
   * anew); an unchanged server list keeps its place.
   * A sticky cookie naming a server that left the pool is re-pinned (and rewritten) on its next
   * request. Servers no longer in any pool are retired: their idle pooled connections close now
   * (`connection:closed`, reason `pool removed`), busy ones when their request completes.
   * Health checks start, stop or change with the configuration (a changed interval restarts the
   * timer); a server that stays keeps its health, a new one starts healthy, a probe in flight to a
   * server that left is dropped without an event. Turning a service's check off puts its servers
   * that were out back into the rotation (`replica:health-changed` healthy, reason `health check off`).
   * A server whose state turns to `drain` takes no new requests from now on.
   * The entrypoint's address is not changed by apply() (restart the proxy for that); its
   * `idleTimeoutMs` is, live: idle client connections wait the new timeout from now on.
   * A service's `reuse: false` gives its servers new agents without keep-alive (one request per
   * connection, `Connection: close` to the server); a server with `vip` reports its sockets as hop
   * `proxy-vip` and its requests' replica from X-Served-By. Works before start() too
   * (probing begins with start()).
   * @throws RangeError (rejects, nothing changed) when a server weight is not a whole number 0..256.
   */
  async apply(config: ProxyConfig): Promise<void> {
    this.#install(config);
  }

  /**
   * Resolves true once no request is in flight to `server` (a replica hostname; typically one
   * apply() set to `drain`), at once when none is; false when some still are after `timeoutMs`.
   * Requests a retry moved to another server count for the server that answers.
   */
  drained(server: string, timeoutMs: number): Promise<boolean> {
    if ((this.#inflightByServer.get(server) ?? 0) === 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const waiter = {
        server,
        resolve,
        timer: setTimeout(() => {
          this.#drainWaiters.delete(waiter);
          resolve(false);
        }, Math.max(0, timeoutMs)),
      };
      this.#drainWaiters.add(waiter);
    });
  }

  /**
   * The active health checks as they stand: per service with a check, its settings and each
   * server's health and whether a probe is in flight. Empty when stopped. For status displays and tests.
   */
  healthChecks(): Array<{ service: string; check: HealthCheck; running: boolean; servers: Array<{ name: string; url: string; healthy: boolean; probing: boolean }> }> {
    return [...this.#checkers.values()].map((c) => ({
      service: c.service,
      check: { ...c.check },
      running: c.timer !== null,
      servers: c.records.map((r) => ({ name: r.name, url: r.url, healthy: r.healthy, probing: r.probe !== null })),
    }));
  }

  /**
   * Closes the listener, every client connection (requests in flight are cut: logged 499) and
   * every backend connection, stops the health checks (no timer and no probe left); resolves once
   * all of them have closed and their events were emitted. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop().finally(() => {
      this.#stopped = null;
    });
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#stopping = true;
    this.#stopHealthChecks();
    this.#checkers.clear();
    this.#health = new Map();
    for (const socket of this.#live.keys()) {
      const info = this.#conns.get(socket);
      if (info) info.proxyReason ??= 'proxy stopped';
    }
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    for (const agent of [...this.#agents.values(), ...this.#retired]) agent.destroy();
    this.#agents.clear();
    this.#retired.clear();
    // Sockets still connecting are not in any agent list yet: destroy them too.
    for (const socket of this.#live.keys()) socket.destroy();
    await closed;
    await Promise.all(this.#live.values());
    this.#server = null;
    this.#port = null;
    this.#stopping = false;
    // The agents are gone: drop the routing too; start(config) installs a fresh one.
    this.#routing = null;
    this.#notifyDrainWaiters();
  }

  // ------------------------------------------------------------------ configuration

  #install(config: ProxyConfig): void {
    for (const svc of config.services) {
      for (const s of svc.loadBalancer.servers) {
        if (!Number.isInteger(s.weight) || s.weight < 0 || s.weight > MAX_WEIGHT) {
          throw new RangeError(`Server ${s.name} of ${svc.name} has weight ${s.weight}; a weight must be a whole number from 0 to ${MAX_WEIGHT}.`);
        }
      }
    }
    const old = this.#routing;
    const keep = new Set<string>();
    const services = new Map<string, ServiceState>();
    const health = new Map<string, HealthRecord>();
    for (const svc of config.services) {
      const hc = svc.loadBalancer.healthCheck;
      const servers = svc.loadBalancer.servers.map((s) => {
        const reuse = svc.loadBalancer.reuse !== false;
        // A change of reuse or VIP makes a new agent (the old one retires like a removed server).
        const key = `${s.name} ${s.url}${reuse ? '' : ' no-reuse'}${s.vip ? ' vip' : ''}`;
        keep.add(key);
        let agent = this.#agents.get(key);
        if (!agent) {
          agent = new ServerAgent(
            s.name,
            this.#serverIdleMs,
            {
              socketCreated: (socket, a) => this.#onUpstreamSocket(socket, a),
              info: (socket) => this.#conns.get(socket),
            },
            { reuse, vip: s.vip === true },
          );
          this.#agents.set(key, agent);
        }
        let record: HealthRecord | null = null;
        if (hc) {
          const hkey = `${svc.name}\n${key}`;
          // A server listed twice in one service shares one record.
          record = health.get(hkey) ?? this.#health.get(hkey) ?? newHealthRecord(svc.name, s.name, s.url);
          health.set(hkey, record);
        }
        const data: ServerState = { name: s.name, url: s.url, agent, draining: s.state === 'drain', health: record, vip: s.vip === true };
        return { name: s.name, url: s.url, weight: s.weight, data };
      });
      const prev = old?.services.get(svc.name);
      const balancer = new ServiceBalancer(svc.loadBalancer, servers, prev?.balancer);
      const hashHeader = svc.loadBalancer.algorithm === 'hash' && svc.loadBalancer.hash ? svc.loadBalancer.hash.header.toLowerCase() : null;
      const retry = svc.loadBalancer.retry && svc.loadBalancer.retry.attempts > 1 ? { ...svc.loadBalancer.retry } : null;
      services.set(svc.name, { name: svc.name, balancer, hashHeader, retry });
    }
    for (const [key, agent] of this.#agents) {
      if (keep.has(key)) continue;
      this.#agents.delete(key);
      agent.retire();
      if (agent.busyCount() > 0) this.#retired.add(agent);
      else agent.destroy();
    }
    this.#routing = { config: structuredClone(config), services };
    this.#syncHealthChecks(config, health);
    const idle = config.entrypoint.idleTimeoutMs ?? this.#defaultEntrypointIdleMs;
    if (idle !== this.#entrypointIdleMs) {
      this.#entrypointIdleMs = idle;
      // Live: idle client connections wait the new timeout from now on.
      for (const socket of this.#live.keys()) {
        const info = this.#conns.get(socket);
        if (info?.hop === 'client-proxy' && info.idle && info.active === 0 && !socket.destroyed) socket.setTimeout(idle);
      }
    }
  }

  // ------------------------------------------------------------------ health checks

  /** Whether a server may take a new request: not draining, and not out of the rotation. */
  #usable(s: BalancedServer<ServerState>): boolean {
    return !s.data.draining && (s.data.health?.healthy ?? true);
  }

  /** Probing runs while the proxy is started (or starting). */
  #probing(): boolean {
    return !this.#stopping && (this.#server !== null || this.#starting);
  }

  /** Makes the health records and checker timers match `config` (called by #install). */
  #syncHealthChecks(config: ProxyConfig, health: Map<string, HealthRecord>): void {
    const stillServed = new Set<string>();
    for (const svc of config.services) for (const s of svc.loadBalancer.servers) stillServed.add(`${svc.name}\n${s.name} ${s.url}`);
    for (const [key, record] of this.#health) {
      if (health.get(key) === record) continue;
      record.cancelled = true;
      this.#cancelProbe(record);
      // The check was turned off while the server was out: it is back in the rotation.
      if (!record.healthy && stillServed.has(key)) {
        record.healthy = true;
        this.#emitHealthChanged(record, 'health check off');
      }
    }
    this.#health = health;

    const running = this.#probing();
    const wanted = new Set<string>();
    for (const svc of config.services) {
      const hc = svc.loadBalancer.healthCheck;
      if (!hc) continue;
      wanted.add(svc.name);
      const records = [...new Set(svc.loadBalancer.servers.map((s) => health.get(`${svc.name}\n${s.name} ${s.url}`)!))];
      let checker = this.#checkers.get(svc.name);
      if (checker && checker.check.intervalMs !== hc.intervalMs && checker.timer) {
        clearInterval(checker.timer);
        checker.timer = null;
      }
      if (!checker) {
        checker = { service: svc.name, check: { ...hc }, timer: null, records };
        this.#checkers.set(svc.name, checker);
      }
      checker.check = { ...hc };
      checker.records = records;
      if (running && !checker.timer) {
        const name = svc.name;
        // Like Go's time.Ticker in Traefik: the first probes one interval from now.
        checker.timer = setInterval(() => this.#tick(name), hc.intervalMs);
      }
    }
    for (const [name, checker] of this.#checkers) {
      if (wanted.has(name)) continue;
      if (checker.timer) clearInterval(checker.timer);
      this.#checkers.delete(name);
    }
  }

  /** Stops every timer and drops every probe in flight (stop(), a failed start()). */
  #stopHealthChecks(): void {
    for (const checker of this.#checkers.values()) {
      if (checker.timer) clearInterval(checker.timer);
      checker.timer = null;
    }
    for (const record of this.#health.values()) this.#cancelProbe(record);
  }

  /** Drops a record's probe in flight: its outcome is never reported. */
  #cancelProbe(record: HealthRecord): void {
    const probe = record.probe;
    record.probe = null;
    probe?.destroy();
  }

  /** One interval of a service's check: probes each of its servers that has no probe in flight. */
  #tick(service: string): void {
    const checker = this.#checkers.get(service);
    if (!checker || !this.#probing()) return;
    for (const record of checker.records) if (!record.probe && !record.cancelled) this.#probe(checker, record);
  }

  /**
   * `GET <path>` to one server over a fresh connection. Healthy: a 2xx or 3xx status within
   * `timeoutMs`. Emits `healthcheck:probed`, then `replica:health-changed` when the state flips.
   */
  #probe(checker: HealthChecker, record: HealthRecord): void {
    const { path, timeoutMs } = checker.check;
    const t0 = performance.now();
    let settled = false;
    let req: http.ClientRequest;
    try {
      req = http.request(new URL(path, record.url), {
        method: 'GET',
        agent: false,
        headers: { Connection: 'close', 'User-Agent': PROBE_USER_AGENT, 'Accept-Encoding': 'gzip' },
      });
    } catch (err) {
      this.#probed(record, false, null, errCode(err), performance.now() - t0);
      return;
    }
    record.probe = req;
    const settle = (ok: boolean, status: number | null, error?: string) => {
      if (settled) return;
      settled = true;
      // Cancelled (server left, check stopped, proxy stopped): no event, no state change.
      if (record.cancelled || record.probe !== req) return;
      this.#probed(record, ok, status, error, performance.now() - t0);
    };
    const timer = setTimeout(() => {
      settle(false, null, 'timeout');
      req.destroy();
    }, timeoutMs);
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const ok = status >= 200 && status < 400;
      settle(ok, status, ok ? undefined : `status ${status}`);
      // Read the body away; the connection closes after it (Connection: close), or at the timeout.
      res.resume();
      res.on('end', () => {
        clearTimeout(timer);
        req.destroy();
      });
    });
    req.on('error', (err) => settle(false, null, errCode(err)));
    req.on('close', () => {
      clearTimeout(timer);
      if (record.probe === req) record.probe = null;
    });
    req.end();
  }

  #probed(record: HealthRecord, ok: boolean, status: number | null, error: string | undefined, ms: number): void {
    const at = Date.now();
    this.#bus.emit('healthcheck:probed', {
      service: record.service,
      replica: record.name,
      ok,
      ms: Math.round(ms * 10) / 10,
      status,
      ...(error !== undefined ? { error } : {}),
      at,
    });
    if (record.healthy === ok) return;
    record.healthy = ok;
    // The same `at` as the probe that decided it.
    this.#emitHealthChanged(record, ok ? 'health check passed' : `health check failed: ${error ?? 'error'}`, at);
  }

  #emitHealthChanged(record: HealthRecord, reason: string, at = Date.now()): void {
    this.#bus.emit('replica:health-changed', {
      service: record.service,
      hostname: record.name,
      port: record.port,
      pid: null,
      at,
      reason,
      healthy: record.healthy,
    });
  }

  // ------------------------------------------------------------------ drain

  #notifyDrainWaiters(): void {
    for (const w of [...this.#drainWaiters]) {
      if ((this.#inflightByServer.get(w.server) ?? 0) > 0) continue;
      this.#drainWaiters.delete(w);
      clearTimeout(w.timer);
      w.resolve(true);
    }
  }

  // ------------------------------------------------------------------ connections

  #track(socket: net.Socket, info: ConnInfo | null): void {
    if (info) {
      this.#conns.set(socket, info);
      // Prepended so we look before node:http reacts to the FIN by ending our side.
      socket.prependListener('end', () => {
        if (!socket.writableEnded) info.peerClosedFirst = true;
      });
      socket.on('timeout', () => {
        if (info.idle) info.timedOut = true;
      });
    }
    socket.on('error', (err) => {
      const i = this.#conns.get(socket);
      if (i) i.errorCode ??= errCode(err);
    });
    this.#live.set(
      socket,
      new Promise<void>((resolve) => {
        socket.once('close', () => {
          this.#live.delete(socket);
          const i = this.#conns.get(socket);
          if (i) this.#emitClosed(i);
          resolve();
        });
      }),
    );
  }

  #onClientConnection(socket: net.Socket): void {
    const info: ConnInfo = {
      id: `c${++this.#clientSeq}`,
      hop: 'client-proxy',
      // For the client-proxy hop, `local` is the client's end (its port is what ProbeClient reports).
      local: addr(socket.remoteAddress, socket.remotePort),
      remote: addr(socket.localAddress, socket.localPort),
      peerClosedFirst: false,
      timedOut: false,
      idle: true,
      askedClose: false,
      active: 0,
    };
    if (this.#stopping) info.proxyReason = 'proxy stopped';
    this.#track(socket, info);
    this.#bus.emit('connection:opened', { id: info.id, hop: info.hop, local: info.local, remote: info.remote, at: Date.now() });
  }

  #onUpstreamSocket(socket: net.Socket, agent: ServerAgent): void {
    // Tracked from creation (so stop() can wait for it); an id and events only once connected.
    this.#track(socket, null);
    socket.once('close', () => {
      // A retired agent's last socket is gone: destroy the agent (next tick: the agent itself
      // removes the socket from its lists in a 'close' listener added after this one).
      process.nextTick(() => {
        if (agent.retired && this.#retired.has(agent) && agent.busyCount() === 0) {
          this.#retired.delete(agent);
          agent.destroy();
        }
      });
    });
    socket.once('connect', () => {
      const info: ConnInfo = {
        id: `u${++this.#upstreamSeq}`,
        hop: agent.vip ? 'proxy-vip' : 'proxy-backend',
        local: addr(socket.localAddress, socket.localPort),
        remote: addr(socket.remoteAddress, socket.remotePort),
        replica: agent.serverName,
        peerClosedFirst: false,
        timedOut: false,
        idle: false,
        askedClose: false,
        active: 0,
      };
      if (agent.retired) info.proxyReason = 'pool removed';
      if (this.#stopping) info.proxyReason = 'proxy stopped';
      this.#conns.set(socket, info);
      socket.prependListener('end', () => {
        if (!socket.writableEnded) info.peerClosedFirst = true;
      });
      socket.on('timeout', () => {
        if (info.idle) info.timedOut = true;
      });
      this.#bus.emit('connection:opened', {
        id: info.id,
        hop: info.hop,
        local: info.local,
        remote: info.remote,
        replica: info.replica,
        at: Date.now(),
      });
    });
  }

  #emitClosed(info: ConnInfo): void {
    const peer = info.hop === 'client-proxy' ? 'client' : 'backend';
    let closedBy: 'client' | 'backend' | 'proxy';
    let reason: string;
    if (info.peerClosedFirst) {
      closedBy = peer;
      if (peer === 'client') reason = 'client closed';
      else if (info.idle) reason = 'keep-alive timeout';
      else if (info.askedClose) reason = 'Connection: close';
      else reason = 'backend closed';
    } else if (info.proxyReason) {
      closedBy = 'proxy';
      reason = info.proxyReason;
    } else if (info.errorCode) {
      closedBy = peer;
      reason = `error: ${info.errorCode}`;
    } else if (info.timedOut) {
      closedBy = 'proxy';
      reason = 'idle timeout';
    } else {
      closedBy = 'proxy';
      reason = info.askedClose ? 'Connection: close' : 'closed by proxy';
    }
    this.#bus.emit('connection:closed', {
      id: info.id,
      hop: info.hop,
      local: info.local,
      remote: info.remote,
      ...(info.replica !== undefined ? { replica: info.replica } : {}),
      at: Date.now(),
      closedBy,
      reason,
    });
  }

  // ------------------------------------------------------------------ requests

  #onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const clientInfo = this.#conns.get(req.socket);
    const st = this.#newRequestState(req, req.socket, clientInfo?.id ?? '?', 0);
    this.#requests.set(req, st);
    if (clientInfo) {
      clientInfo.idle = false;
      clientInfo.active++;
      req.socket.setTimeout(0);
      clientInfo.askedClose = /(^|,)\s*close\s*(,|$)/i.test(req.headers.connection ?? '');
    }
    res.once('finish', () => this.#complete(req, res, st));
    res.once('close', () => this.#complete(req, res, st));

    const routing = this.#routing;
    const router = routing ? matchRouter(routing.config, req.headers.host, st.path) : null;
    if (!routing || !router) return this.#answer(res, st, 404, '404 page not found\n');
    st.router = router;
    st.service = router.service;
    const service = routing.services.get(router.service);
    // A router whose service does not exist is disabled in Traefik: nothing serves the request.
    if (!service) return this.#answer(res, st, 404, '404 page not found\n');
    const hashed = service.hashHeader ? req.headers[service.hashHeader] : undefined;
    const hashKey = Array.isArray(hashed) ? hashed.join(', ') : hashed;
    st.hashKey = hashKey?.trim() ? hashKey : undefined;
    // Servers out of the rotation (health check) or draining take no new request: none left = 503.
    const picked = this.#pick(service, st);
    if (!picked) return this.#answer(res, st, 503, 'no available server\n');
    this.#assign(st, picked);
    const server = picked.server.data;
    // Retry needs the body again if the first try cannot connect: keep a copy (see BodyReplay).
    if (service.retry && (req.headers['transfer-encoding'] || (req.headers['content-length'] && req.headers['content-length'] !== '0'))) {
      st.body = new BodyReplay(req);
    }

    // Headers: drop hop-by-hop and untrusted forwarding headers; the Connection header stays on
    // `req` for http-proxy-3's response pass (keep-alive vs close towards the client) but the
    // backend always gets `Connection: keep-alive` (options.headers below).
    for (const h of [...HOP_BY_HOP_REQUEST, ...UNTRUSTED_FORWARDED]) delete req.headers[h];
    // Headers the client named in Connection are hop-by-hop too (never Host, though).
    for (const token of (req.headers.connection ?? '').split(',')) {
      const h = token.trim().toLowerCase();
      if (h && h !== 'close' && h !== 'keep-alive' && h !== 'host' && h !== 'connection') delete req.headers[h];
    }
    req.headers['x-real-ip'] = st.clientIp;
    if (router.stripPrefix) {
      const stripped = stripPath(router, st.path);
      if (stripped !== st.path) {
        req.url = stripped;
        req.headers['x-forwarded-prefix'] = router.pathPrefix;
      }
    }
    this.#forward(req, res, st, server);
  }

  /**
   * The bookkeeping of one request (or WebSocket upgrade) as it arrives: a new id, its clock, the
   * client connection, nothing routed or picked yet.
   * @param attempt 0 for a request (its first try increments it), 1 for an upgrade (tried once).
   */
  #newRequestState(req: http.IncomingMessage, socket: net.Socket, clientConnId: string, attempt: number): RequestState {
    return {
      id: ++this.#requestSeq,
      at: Date.now(),
      t0: performance.now(),
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      clientIp: socket.remoteAddress ?? '-',
      clientConnId,
      router: null,
      service: null,
      server: null,
      inflightOn: null,
      proxyReq: null,
      upstreamConnId: null,
      servedBy: null,
      bytes: 0,
      replayed: false,
      cookie: req.headers.cookie,
      hashKey: undefined,
      tries: 1,
      attempt,
      failed: new Set(),
      retried: false,
      body: null,
      done: false,
    };
  }

  /**
   * A WebSocket upgrade: routed and balanced like a request (see the module comment), then tunnelled
   * by http-proxy-3's ws(). Its `request:completed` comes with the 101 (or the error / non-101 answer).
   */
  #onUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const clientInfo = this.#conns.get(socket);
    const st = this.#newRequestState(req, socket, clientInfo?.id ?? '?', 1);
    if (clientInfo) {
      // The connection now carries the tunnel: never idle, no idle timeout.
      clientInfo.idle = false;
      clientInfo.active++;
    }
    socket.setTimeout(0);
    socket.on('error', () => {});
    let status = 0;
    const finish = (code: number, error?: string) => {
      if (st.done) return;
      status = code;
      if (error !== undefined) st.error = error;
      this.#completeUpgrade(req, st, status);
    };
    const answer = (code: number, text: string, body: string) => {
      const buf = Buffer.from(body, 'utf8');
      st.bytes = buf.length;
      if (!socket.destroyed) {
        socket.end(
          `HTTP/1.1 ${code} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n` +
            (st.setCookie ? `Set-Cookie: ${st.setCookie}\r\n` : '') +
            `Content-Length: ${buf.length}\r\nConnection: close\r\n\r\n${body}`,
        );
      }
      finish(code);
    };
    const routing = this.#routing;
    const router = routing && !this.#stopping ? matchRouter(routing.config, req.headers.host, st.path) : null;
    if (!routing || !router) return answer(404, 'Not Found', '404 page not found\n');
    st.router = router;
    st.service = router.service;
    const service = routing.services.get(router.service);
    if (!service) return answer(404, 'Not Found', '404 page not found\n');
    const hashed = service.hashHeader ? req.headers[service.hashHeader] : undefined;
    const hashKey = Array.isArray(hashed) ? hashed.join(', ') : hashed;
    st.hashKey = hashKey?.trim() ? hashKey : undefined;
    const picked = this.#pick(service, st);
    if (!picked) return answer(503, 'Service Unavailable', 'no available server\n');
    this.#assign(st, picked);
    const server = picked.server.data;
    // Connection and Upgrade stay: they are the upgrade. The other hop-by-hop headers go.
    for (const h of [...HOP_BY_HOP_REQUEST.filter((h) => h !== 'upgrade'), ...UNTRUSTED_FORWARDED]) delete req.headers[h];
    req.headers['x-real-ip'] = st.clientIp;
    if (router.stripPrefix) {
      const stripped = stripPath(router, st.path);
      if (stripped !== st.path) {
        req.url = stripped;
        req.headers['x-forwarded-prefix'] = router.pathPrefix;
      }
    }
    this.#wsStates.set(req, { st, onUpgraded: (proxyRes, proxySocket) => {
      if (st.setCookie) proxyRes.headers['set-cookie'] = [st.setCookie, ...(proxyRes.headers['set-cookie'] ?? [])];
      const upstream = this.#conns.get(proxySocket as net.Socket);
      st.upstreamConnId = upstream?.id ?? null;
      if (upstream) upstream.idle = false;
      (proxySocket as net.Socket).setTimeout(0);
      const servedBy = proxyRes.headers['x-served-by'];
      st.servedBy = typeof servedBy === 'string' ? servedBy : null;
      finish(101);
    }, onResponse: (proxyRes) => {
      st.upstreamConnId = this.#conns.get(proxyRes.socket)?.id ?? null;
      const servedBy = proxyRes.headers['x-served-by'];
      st.servedBy = typeof servedBy === 'string' ? servedBy : null;
      proxyRes.on('data', (chunk: Buffer) => (st.bytes += chunk.length));
      proxyRes.on('end', () => finish(proxyRes.statusCode ?? 502));
      proxyRes.on('close', () => finish(proxyRes.statusCode ?? 502));
    } });
    socket.once('close', () => finish(499, this.#stopping ? 'proxy stopped' : 'client closed request'));
    this.#proxy.ws(req, socket, head, { target: server.url, agent: server.agent }, (err) => {
      if (st.done) return; // the tunnel ended with an error after the upgrade: its connections say so
      const code = errCode(err);
      const upstream = st.proxyReq?.socket ? this.#conns.get(st.proxyReq.socket) : undefined;
      st.upstreamConnId = upstream?.id ?? null;
      st.error = code;
      const gw = code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT' ? 504 : 502;
      answer(gw, gw === 504 ? 'Gateway Timeout' : 'Bad Gateway', gw === 504 ? 'Gateway Timeout' : 'Bad Gateway');
    });
  }

  /** request:completed and the access log line for a WebSocket upgrade (status 101 when it succeeded). */
  #completeUpgrade(req: http.IncomingMessage, st: RequestState, status: number): void {
    if (st.done) return;
    st.done = true;
    this.#wsStates.delete(req);
    this.#report(req, st, status);
    this.#release(st);
  }

  /** The balancer's pick for a request, among the usable servers not failed by an earlier try. */
  #pick(service: ServiceState, st: RequestState): BalancerPick<ServerState> | null {
    return service.balancer.pick({
      cookie: st.cookie,
      hashKey: st.hashKey,
      inflight: (s) => s.data.agent.inflight,
      usable: (s) => this.#usable(s) && !st.failed.has(`${s.data.name} ${s.data.url}`),
    });
  }

  /** Makes `picked` the request's server: sticky cookie to write, in-flight counts. */
  #assign(st: RequestState, picked: BalancerPick<ServerState>): void {
    const server = picked.server.data;
    st.server = server;
    delete st.stickyCookie;
    delete st.setCookie;
    if (picked.sticky) {
      st.stickyCookie = picked.sticky.set ?? picked.sticky.pair;
      if (picked.sticky.set) st.setCookie = picked.sticky.set;
    }
    server.agent.inflight++;
    st.inflightOn = server.agent;
    this.#inflightByServer.set(server.name, (this.#inflightByServer.get(server.name) ?? 0) + 1);
  }

  /** Gives back the in-flight counts #assign took (request completed, or moved by a retry). */
  #release(st: RequestState): void {
    const agent = st.inflightOn;
    if (!agent) return;
    st.inflightOn = null;
    agent.inflight--;
    const n = (this.#inflightByServer.get(agent.serverName) ?? 1) - 1;
    if (n > 0) this.#inflightByServer.set(agent.serverName, n);
    else this.#inflightByServer.delete(agent.serverName);
    if (n <= 0 && this.#drainWaiters.size > 0) this.#notifyDrainWaiters();
  }

  #forward(req: http.IncomingMessage, res: http.ServerResponse, st: RequestState, server: ServerState): void {
    // http-proxy-3's XHeaders pass appends to these; reset them so a replay does not add twice.
    for (const h of ['x-forwarded-for', 'x-forwarded-port', 'x-forwarded-proto', 'x-forwarded-host']) delete req.headers[h];
    st.proxyReq = null;
    const attempt = ++st.attempt;
    this.#proxy.web(
      req,
      res,
      {
        target: server.url,
        agent: server.agent,
        // No reuse: Go's transport with keep-alives disabled asks the server to close.
        headers: { connection: server.agent.reuse ? 'keep-alive' : 'close' },
        ...(st.body ? { buffer: st.body.stream() } : {}),
      },
      (err) => {
        // An earlier try's handlers fire too when the client request errors later: only the current one counts.
        if (attempt === st.attempt) this.#onProxyError(err, req, res, st, server);
      },
    );
  }

  /**
   * Traefik's retry middleware: another try, on another server, when the backend received nothing
   * (no connection could be made), up to `attempts` tries. False when no retry is possible.
   */
  #retry(req: http.IncomingMessage, res: http.ServerResponse, st: RequestState, server: ServerState): boolean {
    const service = st.service ? this.#routing?.services.get(st.service) : undefined;
    if (!service?.retry || st.tries >= service.retry.attempts) return false;
    if (res.headersSent || res.destroyed || this.#stopping || req.socket.destroyed) return false;
    if (st.body && !st.body.replayable) return false;
    st.failed.add(`${server.name} ${server.url}`);
    const picked = this.#pick(service, st);
    if (!picked) return false;
    this.#release(st);
    this.#assign(st, picked);
    st.tries++;
    st.retried = true;
    delete st.error;
    st.upstreamConnId = null;
    this.#forward(req, res, st, picked.server.data);
    return true;
  }

  #onProxyRes(proxyRes: http.IncomingMessage, req: http.IncomingMessage, res: http.ServerResponse): void {
    const st = this.#requests.get(req);
    const upstream = this.#conns.get(proxyRes.socket);
    if (upstream && /(^|,)\s*close\s*(,|$)/i.test(proxyRes.headers.connection ?? '')) upstream.askedClose = true;
    // Hop-by-hop response headers describe the proxy-backend hop, not ours: never pass them on.
    delete proxyRes.headers['connection'];
    delete proxyRes.headers['keep-alive'];
    delete proxyRes.headers['proxy-connection'];
    if (!st) return;
    // The proxy's sticky cookie goes first, then the backend's own cookies (Go's ReverseProxy adds
    // the backend's headers to the ones Traefik already set).
    if (st.setCookie) proxyRes.headers['set-cookie'] = [st.setCookie, ...(proxyRes.headers['set-cookie'] ?? [])];
    st.upstreamConnId = upstream?.id ?? null;
    const servedBy = proxyRes.headers['x-served-by'];
    st.servedBy = typeof servedBy === 'string' ? servedBy : null;
    proxyRes.on('data', (chunk: Buffer) => {
      st.bytes += chunk.length;
    });
    // The backend died mid-response: http-proxy-3 would leave the client waiting; cut it, as Go does.
    proxyRes.on('error', (err) => {
      st.error ??= errCode(err);
    });
    proxyRes.on('close', () => {
      if (!proxyRes.complete) {
        st.error ??= 'ECONNRESET';
        res.destroy();
      }
    });
  }

  #onProxyError(err: Error, req: http.IncomingMessage, res: http.ServerResponse, st: RequestState, server: ServerState): void {
    const code = errCode(err);
    const proxyReq = st.proxyReq;
    const upstream = proxyReq?.socket ? this.#conns.get(proxyReq.socket) : undefined;
    // Go's transport replays an idempotent request once on a new connection when a reused idle
    // connection turns out to be closed by the backend before answering (the keep-alive race).
    if (
      !st.replayed &&
      !res.headersSent &&
      !this.#stopping &&
      proxyReq?.reusedSocket &&
      code === 'ECONNRESET' &&
      IDEMPOTENT.has(st.method) &&
      !req.headers['content-length'] &&
      !req.headers['transfer-encoding']
    ) {
      st.replayed = true;
      this.#forward(req, res, st, server);
      return;
    }
    // The backend got nothing of the request (the connection was never made): Traefik's retry.
    const connected = upstream !== undefined;
    if (!connected && this.#retry(req, res, st, server)) return;
    st.error = code;
    st.upstreamConnId = upstream?.id ?? st.upstreamConnId;
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    const status = code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT' ? 504 : 502;
    this.#answer(res, st, status, status === 504 ? 'Gateway Timeout' : 'Bad Gateway');
  }

  /** Writes a response the proxy generates itself (Go's http.Error headers). */
  #answer(res: http.ServerResponse, st: RequestState, status: number, body: string): void {
    const buf = Buffer.from(body, 'utf8');
    st.bytes = st.method === 'HEAD' ? 0 : buf.length;
    res.writeHead(status, {
      'Content-Type': 'text/plain; charset=utf-8',
      'X-Content-Type-Options': 'nosniff',
      'Content-Length': buf.length,
      // Traefik sets the sticky cookie before forwarding: a 502 for that server carries it too.
      ...(st.setCookie ? { 'Set-Cookie': st.setCookie } : {}),
    });
    res.end(st.method === 'HEAD' ? undefined : buf);
  }

  /**
   * Emits `request:completed` and the access-log line (Traefik's CLF: <ip> - <user> [<time>]
   * "<method> <path> <proto>" <status> <size> "<referer>" "<user agent>" <request count> "<router>"
   * "<server url>" <duration>ms) for a request or a WebSocket upgrade.
   * @param ms duration in ms (default: since the request arrived)
   */
  #report(req: http.IncomingMessage, st: RequestState, status: number, ms = Math.round((performance.now() - st.t0) * 10) / 10): void {
    const server = st.server;
    this.#bus.emit('request:completed', {
      id: st.id,
      at: st.at,
      method: st.method,
      path: st.path,
      router: st.router?.name ?? null,
      service: st.service,
      // Through a VIP the server is the VIP; the replica is the one that answered (X-Served-By).
      replica: server?.vip ? st.servedBy : (server?.name ?? null),
      hostname: st.servedBy ?? (st.upstreamConnId && server ? server.name : null),
      status,
      ms,
      clientConnId: st.clientConnId,
      upstreamConnId: st.upstreamConnId,
      ...(st.stickyCookie !== undefined ? { stickyCookie: st.stickyCookie } : {}),
      ...(st.retried ? { retried: true } : {}),
      ...(st.error !== undefined ? { error: st.error } : {}),
    });
    const text =
      `${st.clientIp} - - [${clfTimestamp(st.at)}] "${st.method} ${st.path} HTTP/${req.httpVersion}" ` +
      `${status} ${st.bytes} ${quoted(req.headers.referer)} ${quoted(req.headers['user-agent'])} ${st.id} ` +
      `${quoted(st.router?.name)} ${quoted(server?.url)} ${Math.round(ms)}ms`;
    this.#bus.emit('log:line', { source: 'proxy', stream: 'access', text, at: Date.now() });
  }

  #complete(req: http.IncomingMessage, res: http.ServerResponse, st: RequestState): void {
    if (st.done) return;
    st.done = true;
    const ms = Math.round((performance.now() - st.t0) * 10) / 10;
    let status = res.statusCode;
    if (!res.writableFinished) {
      if (st.error) {
        if (!res.headersSent) status = 502;
      } else {
        // Traefik logs 499 when the client (or here: a proxy stop) ends the exchange first.
        status = 499;
        st.error = this.#stopping ? 'proxy stopped' : 'client closed request';
        const upstream = st.proxyReq?.socket ? this.#conns.get(st.proxyReq.socket) : undefined;
        if (upstream) upstream.proxyReason ??= st.error;
      }
    }
    if (st.upstreamConnId === null && st.proxyReq?.socket) st.upstreamConnId = this.#conns.get(st.proxyReq.socket)?.id ?? null;
    const clientInfo = this.#conns.get(req.socket);
    if (clientInfo && --clientInfo.active === 0) {
      clientInfo.idle = true;
      // The entrypoint idle timeout starts now; on 'timeout' node:http destroys the idle socket.
      if (!req.socket.destroyed) req.socket.setTimeout(this.#entrypointIdleMs);
    }
    this.#report(req, st, status, ms);
    // Last: a drained() waiter learns of it after the request's event.
    this.#release(st);
  }
}

/** A duration in Go's time.ParseDuration syntax, as Traefik reads it: `3s`, `200ms`. */
function goDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

function listenErrorSentence(err: NodeJS.ErrnoException, host: string, port: number): string {
  switch (err.code) {
    case 'EADDRINUSE':
      return (
        `The proxy cannot listen on ${host}:${port}: port ${port} is already in use by another program. ` +
        `Choose another port with the environment variable LAB_PROXY_PORT (for example LAB_PROXY_PORT=${port + 1}), ` +
        `or stop the program that uses port ${port}.`
      );
    case 'EACCES':
      return (
        `The proxy is not allowed to listen on ${host}:${port} (ports below 1024 need extra privileges). ` +
        `Choose a port above 1024 with the environment variable LAB_PROXY_PORT, for example LAB_PROXY_PORT=8080.`
      );
    case 'EADDRNOTAVAIL':
      return `The proxy cannot listen on ${host}:${port}: ${host} is not an address of this machine. Use 127.0.0.1.`;
    default:
      return `The proxy cannot listen on ${host}:${port}: ${err.message}.`;
  }
}
