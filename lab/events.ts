/**
 * The lab's typed events (names `entity:past-verb`), and the in-memory bus that carries them.
 * Every producer (runtimes, proxy drivers, the Lab) emits here; the server batches them to
 * browsers. Timestamps (`at`) are epoch milliseconds.
 */
import { EventEmitter } from 'node:events';

/** One proxied HTTP request, emitted by the proxy when the response has ended (or failed). */
export interface RequestCompleted {
  /** Sequence number, unique per proxy run, increasing. */
  id: number;
  /** When the request arrived at the proxy (epoch ms). */
  at: number;
  method: string;
  /** Path as the client sent it (before any prefix strip). */
  path: string;
  /** Router that matched, or null when none did (404 from the proxy). */
  router: string | null;
  /** Service the router forwarded to, or null. */
  service: string | null;
  /** Hostname of the replica that answered (the lab's replica id), or null if none was reached. */
  replica: string | null;
  /** Same as replica for now; kept separate because in Docker mode a container hostname is its id. */
  hostname: string | null;
  /** HTTP status sent to the client (502/503/504 when the proxy answered itself). */
  status: number;
  /** Time from request arrival to response end, in ms. */
  ms: number;
  /** Id of the client->proxy TCP connection (see ConnectionOpened.id). */
  clientConnId: string;
  /** Id of the proxy->backend TCP connection used, or null if no backend was reached. */
  upstreamConnId: string | null;
  stickyCookie?: string;
  retried?: boolean;
  /** Proxy-side error code when the backend could not be reached (e.g. ECONNREFUSED). */
  error?: string;
}

/** The TCP hop a connection belongs to. */
export type Hop = 'client-proxy' | 'proxy-backend' | 'proxy-vip' | 'vip-backend';

export interface ConnectionOpened {
  /** Connection id, unique per lab run, e.g. `c12` (client side) or `u7` (upstream side). */
  id: string;
  hop: Hop;
  /** `ip:port` of the end owned by the proxy (or the client for client-proxy). */
  local: string;
  /** `ip:port` of the other end. */
  remote: string;
  /** Replica hostname on the far end, for proxy-backend connections. */
  replica?: string;
  at: number;
}

export interface ConnectionClosed {
  id: string;
  hop: Hop;
  local: string;
  remote: string;
  replica?: string;
  at: number;
  /** Which side closed first (sent the FIN or reset). */
  closedBy: 'client' | 'proxy' | 'backend' | 'vip';
  /** Short reason, e.g. `idle timeout`, `keep-alive timeout`, `error: ECONNRESET`, `pool removed`. */
  reason: string;
}

/** A replica's lifecycle. `hostname` is the replica id, unique in the lab, new on every start. */
export interface ReplicaEvent {
  service: string;
  hostname: string;
  /** Port the replica listens on (127.0.0.1 in process mode). */
  port: number | null;
  pid: number | null;
  at: number;
  /** Why it stopped or crashed: `killed`, `scaled down`, `reset`, `exit code 1`, ... */
  reason?: string;
}

/** The proxy took a server out of its pool (healthy false) or put it back (true). */
export interface ReplicaHealthChanged extends ReplicaEvent {
  healthy: boolean;
}

/** One second of a steady load run (lab/load.ts). */
export interface LoadTicked {
  runId: string;
  /** Seconds since the run started (0-based). */
  second: number;
  ok: number;
  failed: number;
  /** Answers per replica hostname (`none` when no replica answered). */
  byReplica: Record<string, number>;
  /** Answers per status (`0` = no answer: connection error or timeout). */
  byStatus: Record<string, number>;
  at: number;
}

export interface LoadFinished {
  runId: string;
  sent: number;
  ok: number;
  failed: number;
  /** ms from the first failed request to the last one, or null without failures. */
  failureWindowMs: number | null;
  firstFailureAt: number | null;
  lastFailureAt: number | null;
  at: number;
}

export interface HealthcheckProbed {
  service: string;
  replica: string;
  ok: boolean;
  /** Probe duration in ms (up to the timeout). */
  ms: number;
  /** HTTP status, or null when there was no answer (refused, timeout). */
  status: number | null;
  /** e.g. `timeout`, `ECONNREFUSED`, `status 503`. */
  error?: string;
  at: number;
}

export interface ProxyApplied {
  driver: string;
  /** The configuration as the driver renders it (YAML/JSON/haproxy.cfg text). */
  config: string;
  at: number;
}

export interface LogLine {
  /** `proxy` for the access log, `lab` for the orchestrator, or a replica hostname. */
  source: string;
  stream: 'stdout' | 'stderr' | 'access';
  text: string;
  at: number;
}

/**
 * A proxy process the lab did not ask to stop has exited (HAProxy or Traefik killed from outside,
 * or crashed): the proxy is down until the lab starts it again (`reset`). Emitted by the driver.
 */
export interface ProxyExited {
  driver: string;
  /** e.g. `signal SIGKILL`, `exit code 1`. */
  reason: string;
  at: number;
}

/** Emitted after any change of desired or actual state (scale, kill, reset, crash). */
export interface TopologyChanged {
  at: number;
  cause: string;
}

/** The one map of every event the lab emits, by name. */
/**
 * Progress of a Docker image build (Docker mode): one event per line the build prints
 * (`Step 3/7 : RUN ...`, apt output), then one with `done: true` (and `error` when it failed).
 * Emitted by the image builder in lab/runtime/docker/.
 */
export interface ImageBuildProgressed {
  /** Image tag being built, e.g. `balancer-lab/web_dynamic:dev`. */
  image: string;
  /** Current step as Docker reports it (`3/7`), or null before the first step. */
  step: string | null;
  /** One line of build output, without the newline ('' on the final event). */
  text: string;
  done: boolean;
  /** Why the build failed, as a sentence (only with done: true). */
  error?: string;
  at: number;
}

export interface LabEvents {
  'request:completed': RequestCompleted;
  'connection:opened': ConnectionOpened;
  'connection:closed': ConnectionClosed;
  'replica:started': ReplicaEvent;
  'replica:stopped': ReplicaEvent;
  'replica:crashed': ReplicaEvent;
  'replica:health-changed': ReplicaHealthChanged;
  'healthcheck:probed': HealthcheckProbed;
  'proxy:applied': ProxyApplied;
  'proxy:exited': ProxyExited;
  'log:line': LogLine;
  'lab:changed': TopologyChanged;
  'load:ticked': LoadTicked;
  'load:finished': LoadFinished;
  'image:build': ImageBuildProgressed;
}

export type LabEventName = keyof LabEvents;

/**
 * A typed, synchronous, in-memory event bus. Listeners run in the emitter's call stack,
 * so they must be cheap (the server only appends to a batch).
 */
export class EventBus {
  readonly #emitter = new EventEmitter();

  constructor() {
    // Many widgets and tests subscribe; this is not a leak.
    this.#emitter.setMaxListeners(100);
  }

  emit<K extends LabEventName>(name: K, payload: LabEvents[K]): void {
    this.#emitter.emit(name, payload);
  }

  /** Subscribes; returns the function that unsubscribes. */
  on<K extends LabEventName>(name: K, listener: (payload: LabEvents[K]) => void): () => void {
    this.#emitter.on(name, listener);
    return () => this.#emitter.off(name, listener);
  }

  /** Resolves with the first event of `name` for which `match` returns true. */
  once<K extends LabEventName>(name: K, match: (payload: LabEvents[K]) => boolean = () => true): Promise<LabEvents[K]> {
    return new Promise((resolve) => {
      const off = this.on(name, (p) => {
        if (match(p)) {
          off();
          resolve(p);
        }
      });
    });
  }
}
