/**
 * The Lab orchestrator: holds the desired topology, starts and stops replicas through a
 * BackendRuntime, keeps the proxy's pools in step through a ProxyDriver, and reports every
 * change on the EventBus. One operation runs at a time (scale, kill, reset are queued).
 *
 * Discovery is "dynamic", like Traefik's Docker provider: a replica joins the pool when it is
 * ready and leaves it as soon as it stops, is killed or crashes. There is no restart policy
 * (as with `docker compose` without `restart:`): a killed or crashed replica is gone and the
 * service's replica count goes down by one.
 */
import { randomBytes } from 'node:crypto';
import type { EventBus } from './events.ts';
import type { BackendRuntime, ProxyDriver, ReplicaHandle } from './seams.ts';
import type { LabStatus, ReplicaState, ReplicaStatus } from './status.ts';
import { Topology, ServiceName, ReplicaCount, defaultTopology, SERVICE_NAMES } from './topology.ts';
import { buildProxyConfig } from './proxy/config.ts';

/** Thrown for a request the lab cannot carry out; `code` maps to an HTTP status in the server. */
export class LabError extends Error {
  constructor(
    message: string,
    readonly code: 'bad-request' | 'not-found' | 'conflict' | 'failed',
  ) {
    super(message);
    this.name = 'LabError';
  }
}

export interface LabOptions {
  runtime: BackendRuntime;
  proxy: ProxyDriver;
  bus: EventBus;
  /** Random id of this run; the runtime labels what it starts with it. */
  sessionId: string;
  /** Where the proxy listens: host (127.0.0.1) and port (0 = any free port). */
  proxyListen: { host: string; port: number };
  /** Host name used in URLs shown to people (default `localhost`). */
  publicHost?: string;
  /** Starting topology (default: defaultTopology()). */
  topology?: Topology;
}

interface Replica {
  service: ServiceName;
  hostname: string;
  /** 1-based slot; the lowest free one is reused so names stay short (`web_dynamic-2-ab12`). */
  slot: number;
  state: ReplicaState;
  handle: ReplicaHandle | null;
  requests: number;
  startedAt: number;
}

export class Lab {
  readonly #o: LabOptions;
  #topology: Topology;
  /** Every replica the lab knows, in start order (which is the proxy's round-robin order). */
  readonly #replicas = new Map<string, Replica>();
  #proxyPort = 0;
  #requestsTotal = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #started = false;
  #stopping = false;
  readonly #unsubscribe: Array<() => void> = [];

  constructor(options: LabOptions) {
    this.#o = options;
    this.#topology = options.topology ?? defaultTopology();
  }

  /**
   * Sweeps leftovers of an earlier run, starts the proxy, then every replica of the topology.
   * Resolves with how many leftovers were removed. Rejects with the runtime's or proxy's sentence
   * (e.g. the proxy port is taken).
   */
  async start(): Promise<{ swept: number }> {
    if (this.#started) throw new LabError('The lab is already started.', 'conflict');
    this.#started = true;
    const swept = await this.#o.runtime.sweep();
    if (swept > 0) this.#log(`removed ${swept} leftover replica process(es) of an earlier run`);
    this.#unsubscribe.push(
      this.#o.bus.on('request:completed', (r) => {
        this.#requestsTotal++;
        const replica = r.replica ? this.#replicas.get(r.replica) : undefined;
        if (replica) replica.requests++;
      }),
    );
    this.#proxyPort = await this.#o.proxy.start(this.#config());
    this.#emitApplied();
    await this.#enqueue(() => this.#converge('start'));
    return { swept };
  }

  /** Stops every replica and the proxy. Safe to call twice; resolves when nothing is left running. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    await this.#queue.catch(() => undefined);
    for (const off of this.#unsubscribe.splice(0)) off();
    await this.#o.proxy.stop();
    await this.#o.runtime.stopAll();
    this.#replicas.clear();
  }

  /**
   * Sets a service's replica count (0..10) and resolves when the new replicas are ready and in
   * the pool (or the surplus ones are out of the pool and stopped).
   * @throws LabError not-found for an unknown service, bad-request for a count out of range.
   */
  scale(service: string, replicas: number): Promise<LabStatus> {
    const name = this.#serviceName(service);
    const count = ReplicaCount.safeParse(replicas);
    if (!count.success) throw new LabError(count.error.issues[0]?.message ?? 'invalid replica count', 'bad-request');
    return this.#enqueue(async () => {
      const before = this.#topology.services[name]?.replicas ?? 0;
      this.#topology = { ...this.#topology, services: { ...this.#topology.services, [name]: { replicas: count.data } } };
      this.#log(`scale ${name} ${before} -> ${count.data}`);
      await this.#converge(`scale ${name}=${count.data}`);
      return this.status();
    });
  }

  /**
   * Kills a replica at once (SIGKILL), as `docker kill` would. It leaves the pool first, so no
   * request is sent to it afterwards. `name` is a hostname or its unique slot prefix
   * (`web_dynamic-2`).
   * @throws LabError not-found when no replica has that name.
   */
  kill(name: string): Promise<LabStatus> {
    return this.#enqueue(async () => {
      const replica = this.#find(name);
      const spec = this.#topology.services[replica.service];
      this.#topology = {
        ...this.#topology,
        services: { ...this.#topology.services, [replica.service]: { replicas: Math.max(0, (spec?.replicas ?? 1) - 1) } },
      };
      this.#log(`kill ${replica.hostname}`);
      await this.#remove(replica, 'killed', 'SIGKILL');
      this.#changed(`kill ${replica.hostname}`);
      return this.status();
    });
  }

  /**
   * Kills every replica, clears the request counts and restores `topology` (default: the
   * default topology). Resolves when the new replicas are ready.
   */
  reset(topology?: Topology): Promise<LabStatus> {
    const next = topology ? Topology.parse(topology) : defaultTopology();
    return this.#enqueue(async () => {
      this.#log('reset');
      const all = [...this.#replicas.values()];
      for (const r of all) r.state = 'stopping';
      await this.#applyProxy();
      await Promise.all(all.map((r) => this.#remove(r, 'reset', 'SIGKILL')));
      this.#topology = next;
      this.#requestsTotal = 0;
      await this.#converge('reset');
      return this.status();
    });
  }

  /** A snapshot of the lab's state. */
  status(): LabStatus {
    const host = this.#o.publicHost ?? 'localhost';
    return {
      sessionId: this.#o.sessionId,
      runtime: this.#o.runtime.name,
      proxy: { driver: this.#o.proxy.name, port: this.#proxyPort, url: `http://${host}:${this.#proxyPort}/` },
      services: SERVICE_NAMES.filter((s) => this.#topology.services[s] !== undefined).map((name) => ({
        name,
        replicas: this.#topology.services[name]?.replicas ?? 0,
        instances: this.#ofService(name).map(
          (r): ReplicaStatus => ({
            hostname: r.hostname,
            service: r.service,
            state: r.state,
            port: r.handle?.port ?? null,
            pid: r.handle?.pid ?? null,
            requests: r.requests,
            startedAt: r.startedAt,
          }),
        ),
      })),
      topology: structuredClone(this.#topology),
      requestsTotal: this.#requestsTotal,
    };
  }

  // ------------------------------------------------------------ internals

  #serviceName(service: string): ServiceName {
    const parsed = ServiceName.safeParse(service);
    if (!parsed.success || this.#topology.services[parsed.data] === undefined) {
      const known = Object.keys(this.#topology.services).join(', ');
      throw new LabError(`Unknown service "${String(service).slice(0, 60)}". This lab runs: ${known}.`, 'not-found');
    }
    return parsed.data;
  }

  #find(name: string): Replica {
    const exact = this.#replicas.get(name);
    if (exact && exact.state !== 'stopping') return exact;
    const bySlot = [...this.#replicas.values()].filter((r) => r.state !== 'stopping' && r.hostname.startsWith(`${name}-`));
    if (bySlot.length === 1) return bySlot[0];
    const live = [...this.#replicas.values()].filter((r) => r.state !== 'stopping').map((r) => r.hostname);
    throw new LabError(
      `No replica named "${String(name).slice(0, 80)}". Running: ${live.length ? live.join(', ') : 'none'}.`,
      'not-found',
    );
  }

  #ofService(service: ServiceName): Replica[] {
    return [...this.#replicas.values()].filter((r) => r.service === service);
  }

  /** Runs operations one at a time, in call order; a failed one does not block the next. */
  #enqueue<T>(op: () => Promise<T>): Promise<T> {
    if (this.#stopping) return Promise.reject(new LabError('The lab is stopping.', 'conflict'));
    const run = this.#queue.then(op, op);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Starts or stops replicas until each service has its desired count. */
  async #converge(cause: string): Promise<void> {
    const starts: Promise<void>[] = [];
    const stops: Replica[] = [];
    for (const name of SERVICE_NAMES) {
      const desired = this.#topology.services[name]?.replicas ?? 0;
      const live = this.#ofService(name).filter((r) => r.state !== 'stopping');
      for (let i = live.length; i < desired; i++) starts.push(this.#startReplica(name));
      // Scale down removes the newest replicas first, as `docker compose --scale` does.
      stops.push(...live.slice(desired).reverse());
    }
    if (stops.length) {
      for (const r of stops) r.state = 'stopping';
      await this.#applyProxy();
      await Promise.all(stops.map((r) => this.#remove(r, 'scaled down', 'SIGTERM')));
    }
    const results = await Promise.allSettled(starts);
    this.#changed(cause);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length) {
      throw new LabError(`${failed.length} replica(s) failed to start: ${String(failed[0].reason?.message ?? failed[0].reason)}`, 'failed');
    }
  }

  #nextSlot(service: ServiceName): number {
    const used = new Set(this.#ofService(service).map((r) => r.slot));
    let slot = 1;
    while (used.has(slot)) slot++;
    return slot;
  }

  async #startReplica(service: ServiceName): Promise<void> {
    const slot = this.#nextSlot(service);
    const hostname = `${service}-${slot}-${randomBytes(2).toString('hex')}`;
    const replica: Replica = { service, hostname, slot, state: 'starting', handle: null, requests: 0, startedAt: Date.now() };
    this.#replicas.set(hostname, replica);
    this.#changed(`starting ${hostname}`);
    try {
      replica.handle = await this.#o.runtime.start(
        { service, hostname },
        {
          onLog: (stream, text) => this.#o.bus.emit('log:line', { source: hostname, stream, text, at: Date.now() }),
          onExit: (info) => {
            if (!info.expected) void this.#crashed(replica, info);
          },
        },
      );
    } catch (err) {
      this.#replicas.delete(hostname);
      throw err;
    }
    if (replica.state !== 'starting') return; // removed while starting
    replica.state = 'running';
    await this.#applyProxy();
    this.#o.bus.emit('replica:started', this.#event(replica));
  }

  async #crashed(replica: Replica, info: { code: number | null; signal: string | null }): Promise<void> {
    if (!this.#replicas.has(replica.hostname) || replica.state === 'stopping' || this.#stopping) return;
    const reason = info.signal ? `killed by ${info.signal}` : `exit code ${info.code}`;
    this.#replicas.delete(replica.hostname);
    const spec = this.#topology.services[replica.service];
    this.#topology = {
      ...this.#topology,
      services: { ...this.#topology.services, [replica.service]: { replicas: Math.max(0, (spec?.replicas ?? 1) - 1) } },
    };
    this.#log(`${replica.hostname} crashed (${reason})`);
    this.#o.bus.emit('replica:crashed', { ...this.#event(replica), reason });
    await this.#applyProxy().catch(() => undefined);
    this.#changed(`crash ${replica.hostname}`);
  }

  /** Takes a replica out of the pool, then stops it. */
  async #remove(replica: Replica, reason: string, signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    replica.state = 'stopping';
    await this.#applyProxy();
    await this.#o.runtime.stop(replica.hostname, { signal });
    this.#replicas.delete(replica.hostname);
    this.#o.bus.emit('replica:stopped', { ...this.#event(replica), reason });
  }

  #config() {
    const pools = new Map<ServiceName, Array<{ hostname: string; host: string; port: number }>>();
    for (const r of this.#replicas.values()) {
      if (r.state !== 'running' || !r.handle) continue;
      const pool = pools.get(r.service) ?? [];
      pool.push({ hostname: r.hostname, host: r.handle.host, port: r.handle.port });
      pools.set(r.service, pool);
    }
    return buildProxyConfig(this.#topology, pools, {
      name: 'web',
      host: this.#o.proxyListen.host,
      port: this.#proxyPort || this.#o.proxyListen.port,
    });
  }

  async #applyProxy(): Promise<void> {
    if (this.#stopping) return;
    await this.#o.proxy.apply(this.#config());
    this.#emitApplied();
  }

  #emitApplied(): void {
    this.#o.bus.emit('proxy:applied', { driver: this.#o.proxy.name, config: this.#o.proxy.render(this.#config()), at: Date.now() });
  }

  #event(r: Replica) {
    return { service: r.service, hostname: r.hostname, port: r.handle?.port ?? null, pid: r.handle?.pid ?? null, at: Date.now() };
  }

  #changed(cause: string): void {
    this.#o.bus.emit('lab:changed', { at: Date.now(), cause });
  }

  #log(text: string): void {
    this.#o.bus.emit('log:line', { source: 'lab', stream: 'stdout', text, at: Date.now() });
  }
}
