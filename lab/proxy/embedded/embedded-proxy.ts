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
 *   (https://doc.traefik.io/traefik/observability/access-logs/).
 *
 * It emits `request:completed`, `connection:opened` / `connection:closed` (hops client-proxy and
 * proxy-backend) and `log:line` (stream `access`, source `proxy`) on the bus. With sticky sessions
 * on, `request:completed.stickyCookie` is the whole `Set-Cookie` value the proxy wrote
 * (`_1d52e=3f9a0c1b2d4e5f60; Path=/`), or, when the request's cookie was honoured and nothing was
 * written, that cookie as `name=value` (`_1d52e=3f9a0c1b2d4e5f60`: no `;`).
 */
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { createProxyServer, type ProxyServer as HttpProxy } from 'http-proxy-3';
import type { EventBus, Hop } from '../../events.ts';
import type { ProxyCapabilities, ProxyConfig, ProxyDriver, ProxyRouter } from '../../seams.ts';
import { MAX_WEIGHT, matchRouter, ruleText, stripPath } from '../config.ts';
import { ServiceBalancer } from './balancer.ts';

/** Traefik v3 default `entryPoints.<name>.transport.respondingTimeouts.idleTimeout`: 180 s. */
export const DEFAULT_ENTRYPOINT_IDLE_TIMEOUT_MS = 180_000;
/** Traefik v3 default `serversTransport.idleConnTimeout` (idle pooled backend connections): 90 s. */
export const DEFAULT_SERVER_IDLE_CONN_TIMEOUT_MS = 90_000;

export interface EmbeddedProxyOptions {
  /** Where every event goes. */
  bus: EventBus;
  /**
   * Idle time (ms) after which the proxy closes a keep-alive client connection that carries no
   * request. Default {@link DEFAULT_ENTRYPOINT_IDLE_TIMEOUT_MS}.
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
  hop: Extract<Hop, 'client-proxy' | 'proxy-backend'>;
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
}

interface ServiceState {
  name: string;
  balancer: ServiceBalancer<ServerState>;
  /** Lower-cased name of the hashed header (`hash` algorithm), else null. */
  hashHeader: string | null;
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

  constructor(serverName: string, idleMs: number, hooks: AgentHooks) {
    // LIFO reuse of idle connections, like Go's transport; no cap on connections per server.
    super({ keepAlive: true, keepAliveMsecs: TCP_KEEPALIVE_MS, scheduling: 'lifo', maxFreeSockets: 200 });
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
    activeHealthCheck: false,
    retry: false,
    perRequestEvents: true,
    connectionEvents: true,
    runtimeApi: false,
  };

  readonly #bus: EventBus;
  readonly #entrypointIdleMs: number;
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
  #routing: Routing | null = null;
  #server: http.Server | null = null;
  #stopping = false;
  #starting = false;
  #stopped: Promise<void> | null = null;
  #port: number | null = null;
  #requestSeq = 0;
  #clientSeq = 0;
  #upstreamSeq = 0;

  /**
   * @param opts.bus the lab's event bus.
   * @param opts.entrypointIdleTimeoutMs client connection idle timeout, ms (default 180000).
   * @param opts.serverIdleConnTimeoutMs pooled backend connection idle timeout, ms (default 90000).
   */
  constructor(opts: EmbeddedProxyOptions) {
    this.#bus = opts.bus;
    this.#entrypointIdleMs = opts.entrypointIdleTimeoutMs ?? DEFAULT_ENTRYPOINT_IDLE_TIMEOUT_MS;
    this.#serverIdleMs = opts.serverIdleConnTimeoutMs ?? DEFAULT_SERVER_IDLE_CONN_TIMEOUT_MS;
    // xfwd: X-Forwarded-For/-Port/-Proto/-Host from the client connection (after we drop the
    // client's own). No proxyTimeout: Traefik's responseHeaderTimeout defaults to none.
    this.#proxy = createProxyServer({ xfwd: true });
    this.#proxy.on('proxyReq', (proxyReq, req) => {
      const st = this.#requests.get(req);
      if (st) st.proxyReq = proxyReq;
    });
    this.#proxy.on('proxyRes', (proxyRes, req, res) => this.#onProxyRes(proxyRes, req, res));
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
   * middlewares, entryPoints), `http.middlewares` (stripPrefix), `http.services`
   * (loadBalancer.servers[].url/weight). Returned as YAML text; the document is JSON, which is YAML,
   * under two comment lines naming the static entrypoint it assumes. Pure.
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
      if (r.stripPrefix) {
        const mw = `${r.name}-stripprefix`;
        middlewares[mw] = { stripPrefix: { prefixes: [r.pathPrefix] } };
        router.middlewares = [mw];
      }
      routers[r.name] = router;
    }
    const services: Record<string, unknown> = {};
    const notes: string[] = [];
    for (const s of config.services) {
      const lb = s.loadBalancer;
      const loadBalancer: Record<string, unknown> = {
        servers: lb.servers.map((srv) => ({ url: srv.url, weight: srv.weight })),
        passHostHeader: true,
      };
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
    });
    this.#server = server;
    this.#port = (server.address() as net.AddressInfo).port;
    return this.#port;
  }

  /**
   * Replaces routers, pools and balancing settings (algorithm, weights, sticky cookie, hashing) live.
   * Requests in flight finish on the server they were sent to. The weighted round-robin schedule
   * carries over: servers still present keep their place, new ones join at the current deadline.
   * A sticky cookie naming a server that left the pool is re-pinned (and rewritten) on its next
   * request. Servers no longer in any pool are retired: their idle pooled connections close now
   * (`connection:closed`, reason `pool removed`), busy ones when their request completes.
   * The entrypoint is not changed by apply(): restart the proxy for that. Works before start() too.
   * @throws RangeError (rejects, nothing changed) when a server weight is not a whole number 0..256.
   */
  async apply(config: ProxyConfig): Promise<void> {
    this.#install(config);
  }

  /**
   * Closes the listener, every client connection (requests in flight are cut: logged 499) and
   * every backend connection; resolves once all of them have closed and their events were emitted.
   * Idempotent.
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
    for (const svc of config.services) {
      const servers = svc.loadBalancer.servers.map((s) => {
        const key = `${s.name} ${s.url}`;
        keep.add(key);
        let agent = this.#agents.get(key);
        if (!agent) {
          agent = new ServerAgent(s.name, this.#serverIdleMs, {
            socketCreated: (socket, a) => this.#onUpstreamSocket(socket, a),
            info: (socket) => this.#conns.get(socket),
          });
          this.#agents.set(key, agent);
        }
        const data: ServerState = { name: s.name, url: s.url, agent };
        return { name: s.name, url: s.url, weight: s.weight, data };
      });
      const prev = old?.services.get(svc.name);
      const balancer = new ServiceBalancer(svc.loadBalancer, servers, prev?.balancer);
      const hashHeader = svc.loadBalancer.algorithm === 'hash' && svc.loadBalancer.hash ? svc.loadBalancer.hash.header.toLowerCase() : null;
      services.set(svc.name, { name: svc.name, balancer, hashHeader });
    }
    for (const [key, agent] of this.#agents) {
      if (keep.has(key)) continue;
      this.#agents.delete(key);
      agent.retire();
      if (agent.busyCount() > 0) this.#retired.add(agent);
      else agent.destroy();
    }
    this.#routing = { config: structuredClone(config), services };
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
        hop: 'proxy-backend',
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
    const st: RequestState = {
      id: ++this.#requestSeq,
      at: Date.now(),
      t0: performance.now(),
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      clientIp: req.socket.remoteAddress ?? '-',
      clientConnId: clientInfo?.id ?? '?',
      router: null,
      service: null,
      server: null,
      inflightOn: null,
      proxyReq: null,
      upstreamConnId: null,
      servedBy: null,
      bytes: 0,
      replayed: false,
      done: false,
    };
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
    const picked = service.balancer.pick({
      cookie: req.headers.cookie,
      hashKey: hashKey?.trim() ? hashKey : undefined,
      inflight: (s) => s.data.agent.inflight,
    });
    if (!picked) return this.#answer(res, st, 503, 'no available server\n');
    const server = picked.server.data;
    st.server = server;
    if (picked.sticky) {
      st.stickyCookie = picked.sticky.set ?? picked.sticky.pair;
      if (picked.sticky.set) st.setCookie = picked.sticky.set;
    }
    server.agent.inflight++;
    st.inflightOn = server.agent;

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

  #forward(req: http.IncomingMessage, res: http.ServerResponse, st: RequestState, server: ServerState): void {
    // http-proxy-3's XHeaders pass appends to these; reset them so a replay does not add twice.
    for (const h of ['x-forwarded-for', 'x-forwarded-port', 'x-forwarded-proto', 'x-forwarded-host']) delete req.headers[h];
    st.proxyReq = null;
    this.#proxy.web(
      req,
      res,
      { target: server.url, agent: server.agent, headers: { connection: 'keep-alive' } },
      (err) => this.#onProxyError(err, req, res, st, server),
    );
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

  #complete(req: http.IncomingMessage, res: http.ServerResponse, st: RequestState): void {
    if (st.done) return;
    st.done = true;
    if (st.inflightOn) st.inflightOn.inflight--;
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
    const server = st.server;
    this.#bus.emit('request:completed', {
      id: st.id,
      at: st.at,
      method: st.method,
      path: st.path,
      router: st.router?.name ?? null,
      service: st.service,
      replica: server?.name ?? null,
      hostname: st.servedBy ?? (st.upstreamConnId && server ? server.name : null),
      status,
      ms,
      clientConnId: st.clientConnId,
      upstreamConnId: st.upstreamConnId,
      ...(st.stickyCookie !== undefined ? { stickyCookie: st.stickyCookie } : {}),
      ...(st.error !== undefined ? { error: st.error } : {}),
    });
    // Traefik CLF: <ip> - <user> [<time>] "<method> <path> <proto>" <status> <size> "<referer>"
    // "<user agent>" <request count> "<router>" "<server url>" <duration>ms
    const referer = req.headers.referer;
    const ua = req.headers['user-agent'];
    const text =
      `${st.clientIp} - - [${clfTimestamp(st.at)}] "${st.method} ${st.path} HTTP/${req.httpVersion}" ` +
      `${status} ${st.bytes} ${quoted(referer)} ${quoted(ua)} ${st.id} ` +
      `${quoted(st.router?.name)} ${quoted(server?.url)} ${Math.round(ms)}ms`;
    this.#bus.emit('log:line', { source: 'proxy', stream: 'access', text, at: Date.now() });
  }
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
