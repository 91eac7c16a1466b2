/**
 * Records the lab's recent run (since the lab started or was last reset) from the event bus, so
 * it can be exported: `GET /api/export` (JSON, `RunExport`) and `GET /api/export.html` (a report,
 * server/export-html.ts). Bounded: the newest MAX_EXPORT_REQUESTS requests are kept one by one;
 * the totals (per replica, per status) stay exact however many arrive.
 */
import type {
  EventBus,
  HealthcheckProbed,
  LoadFinished,
  LoadTicked,
  ReplicaEvent,
  ReplicaHealthChanged,
  RequestCompleted,
  Hop,
} from '../lab/events.ts';
import type { LabStatus } from '../lab/status.ts';
import type { Topology } from '../lab/topology.ts';

/** Requests kept one by one (the newest); older ones are only counted. */
export const MAX_EXPORT_REQUESTS = 10_000;
/** Health probes kept (the newest); every up/down decision is kept up to MAX_EXPORT_HEALTH_CHANGES. */
export const MAX_EXPORT_PROBES = 5_000;
export const MAX_EXPORT_HEALTH_CHANGES = 1_000;
/** Replica lifecycle events kept (the newest). */
export const MAX_EXPORT_REPLICA_EVENTS = 1_000;
/** The orchestrator's own log lines kept (the newest): what was done, in words. */
export const MAX_EXPORT_LAB_LOG = 500;
/** Load ticks kept (the newest), over every run. */
export const MAX_EXPORT_LOAD_TICKS = 2_000;

/** One request as the export keeps it (a subset of RequestCompleted). Times are epoch ms. */
export interface ExportedRequest {
  id: number;
  at: number;
  method: string;
  path: string;
  service: string | null;
  /** The replica that answered, or null when the proxy answered itself. */
  replica: string | null;
  status: number;
  /** Duration at the proxy, ms. */
  ms: number;
  router: string | null;
  clientConnId: string;
  upstreamConnId: string | null;
  retried?: boolean;
  error?: string;
}

/** `GET /api/export`: the recent run, self-describing. Every `at` is epoch ms. */
export interface RunExport {
  format: 'balancer-lab-run';
  version: 1;
  /** When this export was made, and when the run began (lab start or last reset). */
  exportedAt: number;
  startedAt: number;
  /** The lesson whose starting topology was last applied (folder slug), or null. */
  lesson: string | null;
  proxy: {
    driver: string;
    /** The configuration text the proxy was last given (haproxy.cfg, or Traefik-style YAML for the embedded proxy). */
    config: string;
    /** Every engine used during the run, in order. */
    driversUsed: string[];
  };
  /** The topology (services, replica counts, routes, balancer settings) at export time. */
  topology: Topology;
  /** The replicas at export time: hostname, service, state, port, requests answered. */
  replicas: Array<{ hostname: string; service: string; state: string; port: number | null; requests: number; weight: number; fault: string }>;
  /** Exact totals over the run. */
  counts: {
    total: number;
    failed: number;
    byReplica: Record<string, number>;
    /** Requests per HTTP status (`0`: no answer). */
    byStatus: Record<string, number>;
    byService: Record<string, number>;
  };
  /** The newest requests, oldest first (at most MAX_EXPORT_REQUESTS); `requestsOmitted` older ones were only counted. */
  requests: ExportedRequest[];
  requestsOmitted: number;
  health: {
    probes: HealthcheckProbed[];
    probesOmitted: number;
    changes: ReplicaHealthChanged[];
  };
  load: { ticks: LoadTicked[]; runs: LoadFinished[] };
  /** TCP connections over the run: how many opened and closed per hop, who closed and why. */
  connections: {
    opened: Partial<Record<Hop, number>>;
    closed: Partial<Record<Hop, number>>;
    closedBy: Record<string, number>;
    reasons: Record<string, number>;
  };
  /** Replicas started, stopped and crashed during the run, oldest first. */
  replicaEvents: Array<{ type: 'started' | 'stopped' | 'crashed' } & ReplicaEvent>;
  /** The lab's own log (what was done: scale, kill, settings...), oldest first. */
  labLog: Array<{ at: number; text: string }>;
}

/** Appends and keeps the newest `max`; returns how many were dropped. */
function pushBounded<T>(list: T[], item: T, max: number): number {
  list.push(item);
  if (list.length > max * 1.25) {
    const drop = list.length - max;
    list.splice(0, drop);
    return drop;
  }
  return 0;
}

const newest = <T>(list: readonly T[], max: number): T[] => (list.length > max ? list.slice(-max) : [...list]);

/**
 * Listens to the bus from construction until close(). `reset()` starts a new run (the lab's reset
 * calls it). Listeners only append to arrays, so a flood of requests costs little.
 */
export class RunRecorder {
  readonly #off: Array<() => void> = [];
  #startedAt = Date.now();
  #requests: ExportedRequest[] = [];
  #total = 0;
  #failed = 0;
  #byReplica: Record<string, number> = {};
  #byStatus: Record<string, number> = {};
  #byService: Record<string, number> = {};
  #probes: HealthcheckProbed[] = [];
  #probesDropped = 0;
  #changes: ReplicaHealthChanged[] = [];
  #ticks: LoadTicked[] = [];
  #runs: LoadFinished[] = [];
  #opened: Partial<Record<Hop, number>> = {};
  #closed: Partial<Record<Hop, number>> = {};
  #closedBy: Record<string, number> = {};
  #reasons: Record<string, number> = {};
  #replicaEvents: RunExport['replicaEvents'] = [];
  #labLog: RunExport['labLog'] = [];
  #config = '';
  #driversUsed: string[] = [];

  constructor(bus: EventBus) {
    this.#off.push(
      bus.on('request:completed', (r: RequestCompleted) => {
        this.#total++;
        if (r.status >= 500 || r.error) this.#failed++;
        if (r.replica) this.#byReplica[r.replica] = (this.#byReplica[r.replica] ?? 0) + 1;
        this.#byStatus[String(r.status)] = (this.#byStatus[String(r.status)] ?? 0) + 1;
        const svc = r.service ?? '(no route)';
        this.#byService[svc] = (this.#byService[svc] ?? 0) + 1;
        const kept: ExportedRequest = {
          id: r.id,
          at: r.at,
          method: r.method,
          path: r.path,
          service: r.service,
          replica: r.replica,
          status: r.status,
          ms: r.ms,
          router: r.router,
          clientConnId: r.clientConnId,
          upstreamConnId: r.upstreamConnId,
          ...(r.retried ? { retried: true } : {}),
          ...(r.error ? { error: r.error } : {}),
        };
        pushBounded(this.#requests, kept, MAX_EXPORT_REQUESTS);
      }),
      bus.on('healthcheck:probed', (p) => {
        this.#probesDropped += pushBounded(this.#probes, p, MAX_EXPORT_PROBES);
      }),
      bus.on('replica:health-changed', (c) => void pushBounded(this.#changes, c, MAX_EXPORT_HEALTH_CHANGES)),
      bus.on('load:ticked', (t) => void pushBounded(this.#ticks, t, MAX_EXPORT_LOAD_TICKS)),
      bus.on('load:finished', (f) => void pushBounded(this.#runs, f, 100)),
      bus.on('connection:opened', (c) => {
        this.#opened[c.hop] = (this.#opened[c.hop] ?? 0) + 1;
      }),
      bus.on('connection:closed', (c) => {
        this.#closed[c.hop] = (this.#closed[c.hop] ?? 0) + 1;
        this.#closedBy[c.closedBy] = (this.#closedBy[c.closedBy] ?? 0) + 1;
        // Reasons are a small fixed vocabulary, but errors carry codes: bound the map anyway.
        const reason = c.reason.slice(0, 80);
        if (reason in this.#reasons || Object.keys(this.#reasons).length < 50) this.#reasons[reason] = (this.#reasons[reason] ?? 0) + 1;
      }),
      bus.on('replica:started', (e) => void pushBounded(this.#replicaEvents, { type: 'started', ...e }, MAX_EXPORT_REPLICA_EVENTS)),
      bus.on('replica:stopped', (e) => void pushBounded(this.#replicaEvents, { type: 'stopped', ...e }, MAX_EXPORT_REPLICA_EVENTS)),
      bus.on('replica:crashed', (e) => void pushBounded(this.#replicaEvents, { type: 'crashed', ...e }, MAX_EXPORT_REPLICA_EVENTS)),
      bus.on('log:line', (l) => {
        if (l.source === 'lab') pushBounded(this.#labLog, { at: l.at, text: l.text }, MAX_EXPORT_LAB_LOG);
      }),
      bus.on('proxy:applied', (a) => {
        this.#config = a.config;
        if (this.#driversUsed.at(-1) !== a.driver) this.#driversUsed.push(a.driver);
      }),
    );
  }

  /** Epoch ms when the current run began. */
  get startedAt(): number {
    return this.#startedAt;
  }

  /**
   * Forgets everything recorded and starts a new run now (keeps the last proxy configuration).
   * @param note the first line of the new run's lab log, e.g. `reset to the start of lesson 02-sticky-sessions`
   */
  reset(note?: string): void {
    this.#startedAt = Date.now();
    this.#requests = [];
    this.#total = 0;
    this.#failed = 0;
    this.#byReplica = {};
    this.#byStatus = {};
    this.#byService = {};
    this.#probes = [];
    this.#probesDropped = 0;
    this.#changes = [];
    this.#ticks = [];
    this.#runs = [];
    this.#opened = {};
    this.#closed = {};
    this.#closedBy = {};
    this.#reasons = {};
    this.#replicaEvents = [];
    this.#labLog = note ? [{ at: this.#startedAt, text: note }] : [];
    this.#driversUsed = this.#driversUsed.slice(-1);
  }

  /** The run so far, with the lab's current status (topology, replicas, proxy). */
  export(status: LabStatus): RunExport {
    const requests = newest(this.#requests, MAX_EXPORT_REQUESTS);
    const probes = newest(this.#probes, MAX_EXPORT_PROBES);
    return {
      format: 'balancer-lab-run',
      version: 1,
      exportedAt: Date.now(),
      startedAt: this.#startedAt,
      lesson: status.lesson,
      proxy: {
        driver: status.proxy.driver,
        config: this.#config,
        driversUsed: this.#driversUsed.length ? [...this.#driversUsed] : [status.proxy.driver],
      },
      topology: structuredClone(status.topology),
      replicas: status.services.flatMap((s) =>
        s.instances.map((r) => ({ hostname: r.hostname, service: r.service, state: r.state, port: r.port, requests: r.requests, weight: r.weight, fault: r.fault })),
      ),
      counts: {
        total: this.#total,
        failed: this.#failed,
        byReplica: { ...this.#byReplica },
        byStatus: { ...this.#byStatus },
        byService: { ...this.#byService },
      },
      requests,
      requestsOmitted: this.#total - requests.length,
      health: { probes, probesOmitted: this.#probesDropped + (this.#probes.length - probes.length), changes: newest(this.#changes, MAX_EXPORT_HEALTH_CHANGES) },
      load: { ticks: newest(this.#ticks, MAX_EXPORT_LOAD_TICKS), runs: newest(this.#runs, 100) },
      connections: { opened: { ...this.#opened }, closed: { ...this.#closed }, closedBy: { ...this.#closedBy }, reasons: { ...this.#reasons } },
      replicaEvents: newest(this.#replicaEvents, MAX_EXPORT_REPLICA_EVENTS),
      labLog: newest(this.#labLog, MAX_EXPORT_LAB_LOG),
    };
  }

  /** Stops listening. */
  close(): void {
    for (const off of this.#off.splice(0)) off();
  }
}
