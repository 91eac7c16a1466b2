/**
 * The seams of the lab core: how the Lab talks to a backend runtime (processes, later Docker)
 * and to a proxy driver (embedded, later HAProxy and Traefik). Implementations are named by
 * technology (ProcessRuntime, EmbeddedProxy); the Lab only sees these interfaces.
 */
import type { ServiceName } from './topology.ts';

// ---------------------------------------------------------------- runtime

/** What to start: one replica of one service. */
export interface ReplicaSpec {
  service: ServiceName;
  /** The replica's hostname, unique in the lab (e.g. `web_dynamic-2-a1b2`); the backend reports it. */
  hostname: string;
  /**
   * Listen on this port instead of a free one: a replica restarted behind a static server list
   * (Traefik's file provider) must come back at the same address. Rejects if the port is taken.
   */
  port?: number;
  /** Extra environment for the backend, e.g. `{ KEEPALIVE_TIMEOUT_MS: '30000' }`. Names match /^[A-Z][A-Z0-9_]*$/. */
  env?: Record<string, string>;
}

/**
 * A fault a replica can be put in, through a side channel the proxy does not route:
 * - healthy: normal answers (clears any fault);
 * - unhealthy: only GET /health fails (503), everything else answers normally;
 * - slow: every answer (health included) is delayed by `ms` (1..60000);
 * - errors: every answer but /health is a 500;
 * - hang: connections are accepted, requests never answered (health included).
 * A crash (the process dies) is BackendRuntime.crash().
 */
export type Fault = { mode: 'healthy' | 'unhealthy' | 'errors' | 'hang' } | { mode: 'slow'; ms: number };

/** A replica the runtime started and found ready (its HTTP /health answered 200). */
export interface ReplicaHandle {
  service: ServiceName;
  hostname: string;
  /** Address the proxy connects to. */
  host: string;
  port: number;
  /** OS process id in process mode; null where there is none (containers). */
  pid: number | null;
  /** Docker mode: the replica's container id, 12 hex (`docker ps` shows it); absent in process mode. */
  containerId?: string;
  /** Epoch ms when it became ready. */
  readyAt: number;
  /**
   * What actually runs when a service has more than one implementation, e.g. `php 8.2.36`, or
   * `express (php not found)` when session_php runs on its stand-in. Absent when there is one.
   */
  implementation?: string;
}

/** Callbacks a runtime calls for one replica over its life. */
export interface ReplicaHooks {
  /** One line of the replica's stdout/stderr, without the newline. */
  onLog(stream: 'stdout' | 'stderr', text: string): void;
  /**
   * The replica exited. `expected` is true when the runtime stopped it on request (stop()),
   * false when it died on its own or was killed from outside (a crash).
   */
  onExit(info: { code: number | null; signal: string | null; expected: boolean }): void;
}

/**
 * Runs demo backends. `process`: child processes on 127.0.0.1; `docker` (later): containers.
 * All methods reject with an Error whose message is a sentence a user can act on.
 */
export interface BackendRuntime {
  readonly name: 'process' | 'docker';
  /**
   * Removes what an earlier run of the lab left behind (its state file names the processes).
   * Resolves with how many leftovers it removed.
   */
  sweep(): Promise<number>;
  /** Starts a replica and resolves once it is ready (port open and /health 200), or rejects within `readyTimeoutMs`. */
  start(spec: ReplicaSpec, hooks: ReplicaHooks): Promise<ReplicaHandle>;
  /**
   * Stops a replica: SIGTERM then SIGKILL after `graceMs` (default 2000), or SIGKILL at once
   * when `signal` is 'SIGKILL'. Resolves when the process group is gone. Unknown hostname: resolves.
   */
  stop(hostname: string, opts?: { signal?: 'SIGTERM' | 'SIGKILL'; graceMs?: number }): Promise<void>;
  /** Stops every replica this runtime started; resolves when all are gone. */
  stopAll(): Promise<void>;
  /**
   * Kills a replica with SIGKILL as a crash: its hooks.onExit gets `expected: false`, as if it
   * had died on its own. Resolves when it is gone. Unknown hostname: rejects with a sentence.
   */
  crash(hostname: string): Promise<void>;
  /** Puts a running replica into a fault mode (see Fault); resolves once the replica applies it. */
  setFault(hostname: string, fault: Fault): Promise<void>;
  /**
   * Optional: reports replicas of this lab that something else started — Docker Compose's containers
   * of the lab's project (`docker compose up --scale web_dynamic=5`) — those running now and those
   * that appear later, once ready. For each, `onFound(handle)` returns the hooks the runtime then
   * calls (its logs, its exit), or null to leave it alone. stop/crash/setFault then work on it by
   * hostname (in Docker, its container id, as Compose names it). Returns a function that stops watching.
   */
  discover?(onFound: (handle: ReplicaHandle) => ReplicaHooks | null): () => void;
}

// ---------------------------------------------------------------- proxy

/**
 * A neutral proxy configuration, shaped like Traefik's dynamic configuration:
 * entrypoints -> routers -> services -> servers. Each driver renders it to its own format.
 * https://doc.traefik.io/traefik/routing/overview/
 */
export interface ProxyConfig {
  /**
   * Where the proxy listens. `idleTimeoutMs`: how long an idle keep-alive client connection stays
   * open (Traefik `entryPoints.<name>.transport.respondingTimeouts.idleTimeout`, default 180 s;
   * HAProxy `timeout http-keep-alive` and `timeout client`); absent = the driver's default (180 s).
   */
  entrypoint: { name: string; host: string; port: number; idleTimeoutMs?: number };
  /** Ordered by priority, highest first (the order the proxy tries them). */
  routers: ProxyRouter[];
  services: ProxyService[];
}

export interface ProxyRouter {
  /** e.g. `web_dynamic` or `web_dynamic-1` when a service has several routes. */
  name: string;
  /** Match the Host header (without port), case-insensitive; absent = any host. */
  host?: string;
  /** Match paths starting with this prefix. */
  pathPrefix: string;
  /** Strip pathPrefix before forwarding (keeps a leading `/`). */
  stripPrefix: boolean;
  service: string;
  /** Traefik's default: the length of the rule text; higher wins. */
  priority: number;
}

/**
 * How a service picks a server for a request.
 * - `round-robin`: weighted round-robin, per request (Traefik's default `wrr`; HAProxy `balance roundrobin`).
 * - `least-connections`: the server with the fewest requests in flight, ties by round-robin
 *   (Traefik v3 has none built in; HAProxy `balance leastconn`).
 * - `hash`: a hash of one request header picks the server (HAProxy `balance hdr(<name>)`); see HashSettings.
 */
export type BalanceAlgorithm = 'round-robin' | 'least-connections' | 'hash';

/**
 * A sticky-session cookie set by the proxy (Traefik `loadBalancer.sticky.cookie`,
 * https://doc.traefik.io/traefik/routing/services/#sticky-sessions ; HAProxy
 * `cookie <name> insert indirect nocache`). A request carrying a valid cookie goes to its server;
 * a missing, unknown or dead server's cookie is re-pinned by the algorithm and the cookie rewritten.
 */
export interface StickyCookie {
  /** Cookie name. Drivers give a default when the topology names none (Traefik: `_` + 5 hex of sha1 of the service). */
  name: string;
  httpOnly: boolean;
  secure: boolean;
  /** `''` = attribute not sent (the browser then treats it as Lax). */
  sameSite: '' | 'lax' | 'strict' | 'none';
}

/**
 * Hashing on a request header (HAProxy `balance hdr(<header>)` + `hash-type`,
 * https://docs.haproxy.org/2.6/configuration.html#4.2-hash-type). `consistent` = a hash ring,
 * so adding a server moves about 1/N of the keys; `map-based` = hash modulo the server count,
 * so adding a server moves most keys. A request without the header falls back to round-robin.
 */
export interface HashSettings {
  header: string;
  type: 'consistent' | 'map-based';
}

export interface ProxyService {
  name: string;
  loadBalancer: {
    algorithm: BalanceAlgorithm;
    /** Servers in the order round-robin visits them. */
    servers: ProxyServer[];
    /** Present when sticky sessions are on for this service. */
    sticky?: { cookie: StickyCookie };
    /** Present when algorithm is `hash`. */
    hash?: HashSettings;
    /** Present when active health checks are on. */
    healthCheck?: HealthCheck;
    /** Present when retry on connection failure is on. */
    retry?: Retry;
    /**
     * Reuse of keep-alive connections to the servers; absent = on. `false`: a new server connection
     * per request, closed after the answer (Traefik `serversTransport.maxIdleConnsPerHost: -1`, Go
     * then sends `Connection: close`; HAProxy `option http-server-close`).
     */
    reuse?: boolean;
    /**
     * HAProxy's `http-reuse` (https://docs.haproxy.org/2.6/configuration.html#4.2-http-reuse), when
     * reuse is on: `safe` (HAProxy's default: a client's first request never takes another
     * client's idle server connection; later ones may), `aggressive`, `always` (any idle server
     * connection, as a shared pool does), `never` (server connections stay private to their client
     * connection). Absent = `safe`. The embedded proxy (like Traefik, a shared pool) ignores it.
     */
    httpReuse?: 'safe' | 'aggressive' | 'always' | 'never';
  };
}

/**
 * An active health check: the proxy sends `GET <path>` to every server each `intervalMs` and
 * counts a probe failed when it gets no 2xx/3xx answer within `timeoutMs`.
 * Traefik (https://doc.traefik.io/traefik/routing/services/#health-check): one failure takes the
 * server out, one success puts it back (it has no fall/rise). HAProxy (`option httpchk`,
 * `check inter <interval> fall <n> rise <n>`, `timeout check`): out after `fall` consecutive
 * failures, back after `rise` consecutive successes.
 */
export interface HealthCheck {
  path: string;
  intervalMs: number;
  timeoutMs: number;
  fall: number;
  rise: number;
}

/**
 * Retry when the server cannot be reached (connection refused/reset before any answer), on
 * another server: Traefik's retry middleware (https://doc.traefik.io/traefik/middlewares/http/retry/),
 * HAProxy `retries <n>` + `option redispatch`. A server that answers 500 is not retried.
 */
export interface Retry {
  /** Total tries per request, including the first (Traefik `attempts`). */
  attempts: number;
}

export interface ProxyServer {
  /** The replica hostname; shows up in events and access logs. */
  name: string;
  /**
   * `ready` (default) takes requests; `drain` takes no new ones (sticky clients are re-pinned)
   * while requests in flight finish (HAProxy `set server ... state drain`).
   */
  state?: 'ready' | 'drain';
  /** e.g. `http://127.0.0.1:41234` */
  url: string;
  /** Relative share for weighted round-robin, 0..256 (HAProxy's range; 0 = takes no new requests). Default 1. */
  weight: number;
  /**
   * The server is an L4 VIP in front of the service's replicas (lab/vip.ts), not a replica: the
   * replica that answered is named by the response's `X-Served-By`, and drivers report it as
   * `request:completed.replica`; a driver's own socket to it is hop `proxy-vip`.
   */
  vip?: boolean;
}

/** What a proxy driver can do; the UI greys out what is missing instead of failing. */
export interface ProxyCapabilities {
  roundRobin: boolean;
  weights: boolean;
  leastConnections: boolean;
  stickyCookie: boolean;
  headerHash: boolean;
  activeHealthCheck: boolean;
  retry: boolean;
  perRequestEvents: boolean;
  /** Emits connection:opened/closed for both hops. */
  connectionEvents: boolean;
  /** Has a management console (HAProxy's Runtime API). */
  runtimeApi: boolean;
}

/**
 * A reverse proxy the lab drives. `render` is pure; `apply` makes the running proxy use a
 * configuration without dropping requests in flight.
 */
export interface ProxyDriver {
  readonly name: 'embedded' | 'haproxy' | 'traefik';
  readonly capabilities: ProxyCapabilities;
  /** The configuration as this proxy would read it (for display and the `proxy:applied` event). */
  render(config: ProxyConfig): string;
  /** Starts listening on config.entrypoint; rejects (e.g. EADDRINUSE) with a sentence. Resolves with the bound port. */
  start(config: ProxyConfig): Promise<number>;
  /** Replaces the routing and pools live. */
  apply(config: ProxyConfig): Promise<void>;
  /** Closes the listener, every client and backend connection; resolves when done. */
  stop(): Promise<void>;
  /**
   * The proxy's own management console, where it has one (HAProxy's Runtime API): runs one
   * allow-listed command and resolves with the proxy's answer; rejects with a sentence otherwise.
   */
  runtimeCommand?(command: string): Promise<string>;
  /** URL of the proxy's own status page (HAProxy stats, Traefik's dashboard), or null. */
  readonly statsUrl?: string | null;
  /** The status page's basic-auth login where it has one (Traefik's dashboard), or null. */
  readonly statsCredentials?: { user: string; password: string } | null;
  /** URL of the proxy's own health endpoint (Traefik's `/ping`), or null. */
  readonly pingUrl?: string | null;
  /**
   * Resolves true once no request is in flight to `server` (a server set to `drain` by apply()),
   * or false after `timeoutMs`.
   */
  drained(server: string, timeoutMs: number): Promise<boolean>;
}
