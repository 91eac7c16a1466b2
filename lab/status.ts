/**
 * The lab's observable state, as `GET /api/status`, `npm run lab -- status --json` and the
 * socket's `status` message show it.
 */
import type { ProxyCapabilities } from './seams.ts';
import type { DriverName, ServiceName, Topology } from './topology.ts';

/**
 * starting: spawned, not yet ready; running: ready and in the proxy's pool; draining: in the pool
 * but taking no new requests; stopping: being stopped; crashed: its process died and, with static
 * discovery, it is still in the proxy's server list (restart brings it back at the same address).
 */
export type ReplicaState = 'starting' | 'running' | 'draining' | 'stopping' | 'crashed';

/** The fault a replica is in (see Fault in lab/seams.ts), e.g. `healthy`, `slow 500 ms`. */
export type FaultLabel = string;

export interface ReplicaStatus {
  hostname: string;
  service: ServiceName;
  state: ReplicaState;
  /** 127.0.0.1 port in process mode; null while starting. */
  port: number | null;
  pid: number | null;
  /** Address the proxy connects to: 127.0.0.1 in process mode, the container's IP in Docker mode; null while starting. */
  host: string | null;
  /** The container's short id (12 hex) in Docker mode, as `docker ps` shows it; null for a process. */
  containerId: string | null;
  /** Requests this replica answered through the proxy since it started. */
  requests: number;
  /** Weighted round-robin weight, 0..256 (1 unless set). */
  weight: number;
  /** What runs it when a service has alternatives, e.g. `php 8.2.29` or `express (php not found)`. */
  implementation: string | null;
  /** The fault it was put in: `healthy` unless set. */
  fault: FaultLabel;
  /** The proxy's view from its active health check: true/false, or null without a health check. */
  healthy: boolean | null;
  /** Epoch ms. */
  startedAt: number;
}

export interface ServiceStatus {
  name: ServiceName;
  /** Desired replica count. */
  replicas: number;
  /** Live replicas, in the order the proxy's round-robin visits them. */
  instances: ReplicaStatus[];
  /** The service's VIP (`host:port`, lab/vip.ts) when `vip` is on and `dnsrr` off: the one address the proxy knows. */
  vip?: string;
}

export interface LabStatus {
  /** Random id of this lab run; labels every process/container it starts. */
  sessionId: string;
  runtime: 'process' | 'docker';
  /** Slug of the lesson whose starting topology was last applied (`reset <lesson>`), or null. */
  lesson: string | null;
  proxy: {
    driver: DriverName;
    capabilities: ProxyCapabilities;
    /** The proxy's own status page (HAProxy stats, Traefik's dashboard), or null. */
    statsUrl: string | null;
    /** Basic-auth login of that page where it needs one (Traefik's dashboard), or null. */
    statsCredentials: { user: string; password: string } | null;
    /** The proxy's own health endpoint (Traefik's `/ping`), or null. */
    pingUrl: string | null;
    /** Port the proxy listens on (127.0.0.1). The page builds its URL from its own hostname + this port. */
    port: number;
    /** e.g. http://localhost:8080/ */
    url: string;
    /**
     * null while the proxy runs; else why its process died on its own (HAProxy or Traefik killed
     * from outside, e.g. `signal SIGKILL`): nothing answers on the port until `reset` starts it again.
     */
    down: string | null;
  };
  services: ServiceStatus[];
  topology: Topology;
  /** A rolling redeploy in progress, or null. */
  redeploy: { service: ServiceName; strategy: 'naive' | 'drain'; done: number; total: number } | null;
  /** The last finished rolling redeploy: how many requests reached the service meanwhile and how many failed. */
  lastRedeploy: { service: ServiceName; strategy: 'naive' | 'drain'; requests: number; failed: number; ms: number; at: number } | null;
  /** Total requests the proxy completed since the last reset. */
  requestsTotal: number;
}
