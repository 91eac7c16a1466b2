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
import type { BackendRuntime, Fault, ProxyCapabilities, ProxyConfig, ProxyDriver, ReplicaHandle, ReplicaHooks } from './seams.ts';
import type { LabStatus, ReplicaState, ReplicaStatus } from './status.ts';
import { Topology, ServiceName, ReplicaCount, Route, defaultTopology, SERVICE_NAMES, MAX_REPLICAS, balancerOf, type DriverName } from './topology.ts';
import { buildProxyConfig, ruleText, type PoolMember } from './proxy/config.ts';
import { applySettings, parseSetting, SettingError, type SettingChange } from './settings.ts';
import { z } from 'zod';
import { Vip } from './vip.ts';

/** Server weight bounds: HAProxy's 0..256 (https://docs.haproxy.org/2.6/configuration.html#5.2-weight). */
export const Weight = z
  .number({ error: 'weight must be a number' })
  .int('weight must be a whole number')
  .min(0, 'weight must be at least 0')
  .max(256, 'weight must be at most 256');

/**
 * Makes a proxy driver by name. Rejects with a LabError ('conflict') whose message says why the
 * driver is not available here (e.g. haproxy not installed) and what to do.
 */
export type ProxyFactory = (name: DriverName) => Promise<ProxyDriver>;

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
  /** The proxy to start with. */
  proxy: ProxyDriver;
  /** Makes other drivers for switchProxy(); without it the proxy cannot be switched. */
  proxyFactory?: ProxyFactory;
  bus: EventBus;
  /** Random id of this run; the runtime labels what it starts with it. */
  sessionId: string;
  /** Where the proxy listens: host (127.0.0.1) and port (0 = any free port). */
  proxyListen: { host: string; port: number };
  /** Host name used in URLs shown to people (default `localhost`). */
  publicHost?: string;
  /** Starting topology (default: defaultTopology()). */
  topology?: Topology;
  /** Idle timeout of the services' VIPs (ms; default 900 s, IPVS's: see lab/vip.ts). */
  vipIdleTimeoutMs?: number;
}

interface Replica {
  service: ServiceName;
  hostname: string;
  /** 1-based slot; the lowest free one is reused so names stay short (`web_dynamic-2-ab12`). */
  slot: number;
  state: ReplicaState;
  handle: ReplicaHandle | null;
  requests: number;
  weight: number;
  fault: string;
  healthy: boolean | null;
  startedAt: number;
  /** Set when its process died unexpectedly: settles once the lab has handled it. */
  crash?: Promise<void>;
  /** Started outside the lab and adopted (BackendRuntime.discover): its exit is a departure, not a crash. */
  adopted?: boolean;
}

/** A fault as the API and CLI take it: a Fault, or `crash` (the process dies). */
export const FaultRequest = z.discriminatedUnion(
  'mode',
  [
    z.strictObject({ mode: z.literal('healthy') }),
    z.strictObject({ mode: z.literal('unhealthy') }),
    z.strictObject({ mode: z.literal('errors') }),
    z.strictObject({ mode: z.literal('hang') }),
    z.strictObject({ mode: z.literal('crash') }),
    z.strictObject({
      mode: z.literal('slow'),
      ms: z.number({ error: 'slow needs ms, a number' }).int('ms must be whole').min(1, 'ms must be at least 1').max(60_000, 'ms must be at most 60000'),
    }),
  ],
  { error: 'mode must be one of: healthy, unhealthy, slow, errors, hang, crash' },
);
export type FaultRequest = z.infer<typeof FaultRequest>;

/** How long a drain may wait for requests in flight before stopping anyway (ms). */
const DRAIN_TIMEOUT_MS = 30_000;

export class Lab {
  readonly #o: LabOptions;
  #proxy: ProxyDriver;
  #lesson: string | null = null;
  #redeploy: LabStatus['redeploy'] = null;
  #lastRedeploy: LabStatus['lastRedeploy'] = null;
  #topology: Topology;
  /** Every replica the lab knows, in start order (which is the proxy's round-robin order). */
  readonly #replicas = new Map<string, Replica>();
  #proxyPort = 0;
  #requestsTotal = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #started = false;
  #stopping = false;
  readonly #unsubscribe: Array<() => void> = [];
  /** The running VIP of each service with `vip` on (and `dnsrr` off). */
  readonly #vips = new Map<ServiceName, Vip>();
  /** Connections a backend reported (`<hostname> <peer>` -> event id), for hops no one else reports. */
  readonly #backendConns = new Map<string, { id: string; remote: string }>();
  #backendConnSeq = 0;
  /** Why the proxy's process died on its own (`proxy:exited`), until reset or switchProxy starts one again; null while it runs. */
  #proxyDown: string | null = null;

  constructor(options: LabOptions) {
    this.#o = options;
    this.#proxy = options.proxy;
    this.#topology = options.topology ?? defaultTopology();
    this.#topology.proxy.driver = options.proxy.name;
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
        if (replica && r.status > 0 && !r.error) replica.requests++;
      }),
      this.#o.bus.on('proxy:exited', (e) => {
        if (this.#stopping || e.driver !== this.#proxy.name) return;
        this.#proxyDown = e.reason;
        this.#log(`the ${e.driver} proxy died (${e.reason}): nothing answers on port ${this.#proxyPort}; reset starts it again`);
        this.#changed(`proxy down ${e.driver}`);
      }),
      this.#o.bus.on('replica:health-changed', (e) => {
        const replica = this.#replicas.get(e.hostname);
        if (replica && replica.healthy !== e.healthy) {
          replica.healthy = e.healthy;
          this.#log(`the proxy marked ${e.hostname} ${e.healthy ? 'UP: back in the rotation' : 'DOWN: out of the rotation'}`);
          this.#changed(`health ${e.hostname}`);
        }
      }),
    );
    await this.#syncVips();
    this.#proxyPort = await this.#proxy.start(this.#config());
    this.#emitApplied();
    await this.#enqueue(() => this.#converge('start'));
    if (this.#o.runtime.discover) this.#unsubscribe.push(this.#o.runtime.discover((handle) => this.#adopt(handle)));
    return { swept };
  }

  /**
   * A replica something else started (Docker Compose's `--scale`), found by the runtime: it joins its
   * service's pool like one the lab started, and the desired count grows by one, so `status` shows it
   * and a later crash or scale treats it like the others. Returns its hooks, or null when it is known.
   */
  #adopt(handle: ReplicaHandle): ReplicaHooks | null {
    if (this.#stopping || this.#replicas.has(handle.hostname)) return null;
    const replica: Replica = {
      service: handle.service,
      hostname: handle.hostname,
      slot: this.#nextSlot(handle.service),
      state: 'starting',
      handle,
      requests: 0,
      weight: 1,
      fault: 'healthy',
      healthy: null,
      startedAt: handle.readyAt,
      adopted: true,
    };
    this.#replicas.set(handle.hostname, replica);
    void this.#enqueue(async () => {
      if (replica.state !== 'starting') return; // gone before its turn
      const spec = this.#topology.services[handle.service];
      this.#topology = {
        ...this.#topology,
        services: { ...this.#topology.services, [handle.service]: { ...spec, replicas: Math.min(MAX_REPLICAS, (spec?.replicas ?? 0) + 1) } },
      };
      this.#joinPool(replica);
      await this.#applyProxy();
      this.#log(`found ${handle.hostname} (${handle.service}), started outside the lab: it joins the pool`);
      this.#o.bus.emit('replica:started', this.#event(replica));
      this.#changed(`found ${handle.hostname}`);
    }).catch((err) => this.#log(`could not add ${handle.hostname} to the pool: ${(err as Error).message}`));
    return this.#hooks(replica);
  }

  /** Stops every replica and the proxy. Safe to call twice; resolves when nothing is left running. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    await this.#queue.catch(() => undefined);
    for (const off of this.#unsubscribe.splice(0)) off();
    // Both, even if one fails: a proxy that cannot stop cleanly must not leave replicas behind.
    const results = await Promise.allSettled([this.#proxy.stop(), this.#o.runtime.stopAll(), this.#stopVips()]);
    this.#replicas.clear();
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
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
      this.#topology = { ...this.#topology, services: { ...this.#topology.services, [name]: { ...this.#topology.services[name], replicas: count.data } } };
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
        services: { ...this.#topology.services, [replica.service]: { ...spec, replicas: Math.max(0, (spec?.replicas ?? 1) - 1) } },
      };
      this.#log(`kill ${replica.hostname}`);
      await this.#remove(replica, 'killed', 'SIGKILL');
      this.#changed(`kill ${replica.hostname}`);
      return this.status();
    });
  }

  /**
   * Kills every replica (SIGKILL, all at once), clears the request counts and restores `topology`
   * (default: the default topology): settings, routes, replica counts. Faults, weights, sessions
   * (each session backend replica keeps its sessions in its own store) and the proxy's per-server
   * state (health, connections, sticky targets) go with the old replicas: the new ones are fresh
   * processes with new hostnames. VIPs are restarted. The proxy engine in use is kept. Resolves
   * when the new replicas are ready and in the pool (about half a second in process mode).
   * @param lesson slug of the lesson whose starting topology this is (shown in status), or null.
   * @throws ZodError when `topology` is invalid (before anything is stopped).
   */
  reset(topology?: Topology, lesson: string | null = null): Promise<LabStatus> {
    const next = topology ? Topology.parse(topology) : defaultTopology();
    return this.#enqueueWhileProxyDown(async () => {
      this.#log(lesson ? `reset to the start of lesson ${lesson}` : 'reset');
      const old = [...this.#replicas.values()];
      // Out of the books at once: their slots are free for the new replicas, and the next pool
      // update leaves them out.
      for (const r of old) {
        r.state = 'stopping';
        this.#replicas.delete(r.hostname);
      }
      next.proxy.driver = this.#proxy.name;
      this.#lesson = lesson;
      this.#lastRedeploy = null;
      this.#requestsTotal = 0;
      // Starting processes is most of a reset's time: the new replicas start while the proxy
      // empties its pools, the old processes are killed and the proxy takes the new settings
      // (fresh VIPs: no connection pinned from before). They join the pool together, once all
      // are ready. Emptying the pools first, under the old settings, then applying the new ones
      // is what makes HAProxy reload with a VIP written in haproxy.cfg rather than `add server`
      // it (a server added live gets no keep-alive reuse in HAProxy 2.6: docs/ARCHITECTURE.md).
      const spawning = this.#spawnAll(next);
      const clearing = (async () => {
        if (this.#proxyDown) await this.#restartProxy();
        else await this.#applyProxy();
        await Promise.all(
          old.map(async (r) => {
            await this.#o.runtime.stop(r.hostname, { signal: 'SIGKILL' });
            this.#o.bus.emit('replica:stopped', { ...this.#event(r), reason: 'reset' });
          }),
        );
        await this.#stopVips();
        this.#topology = next;
        await this.#applyProxy();
      })();
      const [spawned, cleared] = await Promise.allSettled([spawning, clearing]);
      await this.#joinAll(spawned.status === 'fulfilled' ? spawned.value : [], 'reset');
      if (cleared.status === 'rejected') throw cleared.reason;
      return this.status();
    });
  }

  /**
   * Applies proxy settings typed as text (`sticky=on`, `web_dynamic.algorithm=hash`, ...; see
   * lab/settings.ts), all or none, live. The replicas keep running.
   * @throws LabError bad-request naming the field for a bad setting or one the current engine
   *   cannot do, or with the proxy's own error when it refuses the configuration (the running
   *   configuration then stays in force).
   */
  configure(settings: readonly string[]): Promise<LabStatus> {
    let changes: SettingChange[];
    try {
      changes = settings.map(parseSetting);
    } catch (err) {
      if (err instanceof SettingError) throw new LabError(err.message, 'bad-request');
      throw err;
    }
    for (const c of changes) if (c.service) this.#serviceName(c.service);
    return this.#enqueue(async () => {
      const before = this.#topology;
      const next = applySettings(before, changes);
      this.#requireCapabilities(next, this.#proxy);
      this.#topology = next;
      try {
        await this.#applyProxy();
      } catch (err) {
        this.#topology = before;
        throw new LabError(`The ${this.#proxy.name} proxy refused the new configuration: ${(err as Error).message}`, 'bad-request');
      }
      // A replica's health means nothing without a check: forget it, so turning one on starts fresh.
      for (const r of this.#replicas.values()) if (!balancerOf(this.#topology, r.service).healthCheck) r.healthy = null;
      this.#log(`set ${changes.map((c) => c.text).join(' ')}`);
      this.#changed(`set ${changes.map((c) => c.text).join(' ')}`);
      // A backend reads its keep-alive timeout at start (as Kestrel does): replace the running
      // replicas whose timeout changed, one at a time, drained, so no request fails.
      for (const name of SERVICE_NAMES) {
        if (!next.services[name] || balancerOf(before, name).backendKeepAlive === balancerOf(next, name).backendKeepAlive) continue;
        const olds = this.#ofService(name).filter((r) => r.state === 'running');
        if (olds.length === 0) continue;
        this.#log(`${name}: keep-alive timeout changed; replacing its ${olds.length} replica(s) (drain) so they use it`);
        for (const old of olds) {
          if (this.#topology.discovery === 'static') await this.#redeployStatic(old, 'drain');
          else await this.#redeployDynamic(old, 'drain');
        }
        this.#changed(`keep-alive ${name}`);
      }
      return this.status();
    });
  }

  /**
   * Replaces the proxy's routes (Host, PathPrefix, StripPrefix; see Route in lab/topology.ts), live:
   * the replicas keep running. A route to a service with no replica makes the proxy answer 503.
   * @param routes 0..20 routes; order only breaks priority ties (Traefik: longer rule first).
   * @throws LabError bad-request naming the route and field for an invalid route, or with the
   *   proxy's own error when it refuses the configuration (the running routes then stay in force).
   */
  setRoutes(routes: unknown): Promise<LabStatus> {
    const parsed = z
      .array(Route, { error: 'routes must be a list of {service, host?, pathPrefix, stripPrefix}' })
      .max(20, 'at most 20 routes')
      .safeParse(routes);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = ['routes', ...(issue?.path ?? [])].join('.') + ': ';
      throw new LabError(`${where}${issue?.message ?? 'invalid routes'}`, 'bad-request');
    }
    return this.#enqueue(async () => {
      const before = this.#topology;
      this.#topology = { ...before, routes: parsed.data };
      try {
        await this.#applyProxy();
      } catch (err) {
        this.#topology = before;
        throw new LabError(`The ${this.#proxy.name} proxy refused the new routes: ${(err as Error).message}`, 'bad-request');
      }
      this.#log(`routes: ${parsed.data.map((r) => `${ruleText(r)} -> ${r.service}${r.stripPrefix ? ' (strip prefix)' : ''}`).join('; ') || 'none'}`);
      this.#changed('routes');
      return this.status();
    });
  }

  /**
   * Sets a replica's weighted round-robin weight (0..256; 0 = no new requests).
   * @throws LabError not-found for an unknown replica, bad-request for a bad weight or an engine without weights.
   */
  setWeight(name: string, weight: number): Promise<LabStatus> {
    const w = Weight.safeParse(weight);
    if (!w.success) throw new LabError(w.error.issues[0]?.message ?? 'invalid weight', 'bad-request');
    return this.#enqueue(async () => {
      const replica = this.#find(name);
      if (!this.#proxy.capabilities.weights) throw new LabError(`The ${this.#proxy.name} proxy has no server weights.`, 'bad-request');
      const before = replica.weight;
      replica.weight = w.data;
      try {
        await this.#applyProxy();
      } catch (err) {
        replica.weight = before;
        throw new LabError(`The ${this.#proxy.name} proxy refused the weight: ${(err as Error).message}`, 'bad-request');
      }
      this.#log(`weight ${replica.hostname} ${before} -> ${w.data}`);
      this.#changed(`weight ${replica.hostname}=${w.data}`);
      return this.status();
    });
  }

  /**
   * Swaps the proxy engine on the same port without restarting the replicas. If the new engine
   * cannot start, the old one is started again and the error says why.
   * @throws LabError conflict when the engine is not available here or lacks a feature the
   *   current settings use (the message says which).
   */
  switchProxy(name: DriverName): Promise<LabStatus> {
    return this.#enqueueWhileProxyDown(async () => {
      if (name === this.#proxy.name) return this.status();
      if (!this.#o.proxyFactory) throw new LabError('This lab was started without other proxy engines.', 'conflict');
      const next = await this.#o.proxyFactory(name);
      this.#requireCapabilities(this.#topology, next);
      const old = this.#proxy;
      await old.stop();
      this.#proxy = next;
      this.#topology = { ...this.#topology, proxy: { ...this.#topology.proxy, driver: name } };
      await this.#syncVips();
      try {
        this.#proxyPort = await next.start(this.#config());
      } catch (err) {
        this.#proxy = old;
        this.#topology = { ...this.#topology, proxy: { ...this.#topology.proxy, driver: old.name } };
        this.#proxyPort = await old.start(this.#config());
        throw new LabError(`The ${name} proxy could not start, so ${old.name} is back: ${(err as Error).message}`, 'failed');
      }
      this.#proxyDown = null;
      this.#emitApplied();
      this.#log(`proxy ${old.name} -> ${name} on port ${this.#proxyPort}`);
      this.#changed(`proxy ${name}`);
      return this.status();
    });
  }

  /**
   * Runs one command on the proxy's management console (HAProxy's Runtime API).
   * @throws LabError bad-request when the engine has none or refuses the command (its sentence).
   */
  async runtimeCommand(command: string): Promise<string> {
    const proxy = this.#proxy;
    if (!proxy.runtimeCommand) {
      throw new LabError(`The ${proxy.name} proxy has no Runtime API; switch to haproxy to use this console.`, 'bad-request');
    }
    try {
      return await proxy.runtimeCommand(command);
    } catch (err) {
      throw new LabError((err as Error).message, 'bad-request');
    }
  }

  /**
   * Puts a replica into a fault (through the runtime's side channel, not the proxy), or crashes
   * it (`crash`: SIGKILL, seen as a crash). With dynamic discovery a crashed replica leaves the
   * pool as an orchestrator would notice; with static discovery it stays in the server list.
   * @throws LabError not-found for an unknown replica, bad-request for a bad fault or a replica that is not running.
   */
  fault(name: string, fault: unknown): Promise<LabStatus> {
    const parsed = FaultRequest.safeParse(fault);
    if (!parsed.success) throw new LabError(parsed.error.issues[0]?.message ?? 'invalid fault', 'bad-request');
    const f = parsed.data;
    return this.#enqueue(async () => {
      const replica = this.#find(name);
      if (replica.state !== 'running' && replica.state !== 'draining') {
        throw new LabError(`${replica.hostname} is ${replica.state}; faults apply to running replicas.`, 'bad-request');
      }
      if (f.mode === 'crash') {
        this.#log(`fault ${replica.hostname}: crash`);
        await this.#o.runtime.crash(replica.hostname);
        await this.#crashHandled(replica);
        return this.status();
      }
      await this.#o.runtime.setFault(replica.hostname, f as Fault);
      replica.fault = f.mode === 'slow' ? `slow ${f.ms} ms` : f.mode;
      this.#log(`fault ${replica.hostname}: ${replica.fault}`);
      this.#changed(`fault ${replica.hostname}`);
      return this.status();
    });
  }

  /**
   * Starts a crashed replica again at the same address (static discovery keeps it in the server
   * list), as an operator restarting a node would. Resolves when it is ready.
   * @throws LabError not-found / bad-request when the replica is not crashed.
   */
  restart(name: string): Promise<LabStatus> {
    return this.#enqueue(async () => {
      const replica = this.#find(name, true);
      if (replica.state !== 'crashed') throw new LabError(`${replica.hostname} is ${replica.state}, not crashed: nothing to restart.`, 'bad-request');
      this.#log(`restart ${replica.hostname} on port ${replica.handle?.port}`);
      await this.#restartProcess(replica);
      this.#changed(`restart ${replica.hostname}`);
      return this.status();
    });
  }

  /**
   * Replaces every replica of a service, one at a time, while traffic flows.
   * - `naive`: kill the process, start the new one (same address with static discovery; a new
   *   replica with dynamic discovery). Requests sent meanwhile fail.
   * - `drain`: start the new one first (dynamic) or take the old one out of rotation first
   *   (static: `drain`, wait for requests in flight, stop, start, wait until ready, back in).
   * Resolves when done; progress shows in status().redeploy and the lab log.
   */
  redeploy(service: string, strategy: 'naive' | 'drain'): Promise<LabStatus> {
    const name = this.#serviceName(service);
    return this.#enqueue(async () => {
      const olds = this.#ofService(name).filter((r) => r.state === 'running' || r.state === 'crashed');
      this.#redeploy = { service: name, strategy, done: 0, total: olds.length };
      this.#log(`rolling redeploy of ${name} (${strategy}): ${olds.length} replica(s)`);
      this.#changed(`redeploy ${name}`);
      const started = Date.now();
      let requests = 0;
      let failed = 0;
      const off = this.#o.bus.on('request:completed', (r) => {
        if (r.service !== name) return;
        requests++;
        if (r.status >= 500 || r.status === 0 || r.error) failed++;
      });
      try {
        for (const old of olds) {
          if (this.#topology.discovery === 'static') await this.#redeployStatic(old, strategy);
          else await this.#redeployDynamic(old, strategy);
          this.#redeploy.done++;
          this.#changed(`redeploy ${name} ${this.#redeploy.done}/${this.#redeploy.total}`);
        }
      } finally {
        off();
        this.#redeploy = null;
        this.#lastRedeploy = { service: name, strategy, requests, failed, ms: Date.now() - started, at: Date.now() };
        this.#log(`rolling redeploy of ${name} done: ${failed} of ${requests} requests failed meanwhile`);
        this.#changed(`redeploy ${name} done`);
      }
      return this.status();
    });
  }

  async #redeployStatic(old: Replica, strategy: 'naive' | 'drain'): Promise<void> {
    if (strategy === 'drain' && old.state === 'running') {
      await this.#drain(old);
      await this.#o.runtime.stop(old.hostname, { signal: 'SIGTERM' });
    } else if (old.state !== 'crashed') {
      old.state = 'crashed'; // stays in the static server list while it is down
      await this.#o.runtime.stop(old.hostname, { signal: 'SIGKILL' });
      this.#o.bus.emit('replica:stopped', { ...this.#event(old), reason: 'redeploy (killed)' });
    }
    await this.#restartProcess(old);
  }

  async #redeployDynamic(old: Replica, strategy: 'naive' | 'drain'): Promise<void> {
    if (strategy === 'drain') {
      await this.#startReplica(old.service);
      await this.#drain(old);
      await this.#remove(old, 'redeployed', 'SIGTERM');
    } else {
      // The process dies first; the pool update follows the exit, as an orchestrator's would.
      await this.#o.runtime.stop(old.hostname, { signal: 'SIGKILL' });
      await this.#remove(old, 'redeploy (killed)', 'SIGKILL');
      await this.#startReplica(old.service);
    }
  }

  /** Takes a replica out of rotation (server state drain) and waits for its requests in flight. */
  async #drain(replica: Replica): Promise<void> {
    replica.state = 'draining';
    await this.#applyProxy();
    this.#changed(`drain ${replica.hostname}`);
    const drained = await this.#proxy.drained(replica.hostname, DRAIN_TIMEOUT_MS);
    this.#log(drained ? `${replica.hostname} drained` : `${replica.hostname} still had requests after ${DRAIN_TIMEOUT_MS} ms; stopping anyway`);
  }

  /** Starts a replica's process again at its old port, keeping its hostname; back in the pool when ready. */
  async #restartProcess(replica: Replica): Promise<void> {
    const port = replica.handle?.port;
    replica.state = 'starting';
    replica.fault = 'healthy';
    this.#changed(`starting ${replica.hostname}`);
    replica.handle = await this.#o.runtime.start(
      { service: replica.service, hostname: replica.hostname, ...(port ? { port } : {}), ...this.#envOf(replica.service) },
      this.#hooks(replica),
    );
    this.#joinPool(replica);
    replica.startedAt = Date.now();
    await this.#applyProxy();
    this.#o.bus.emit('replica:started', this.#event(replica));
  }

  /** The neutral configuration (lab/seams.ts ProxyConfig) the running proxy was last given. */
  proxyConfig(): ProxyConfig {
    return this.#config();
  }

  /** The configuration text the running proxy uses (haproxy.cfg, or Traefik-style YAML). */
  proxyConfigText(): { driver: DriverName; text: string } {
    return { driver: this.#proxy.name, text: this.#proxy.render(this.#config()) };
  }

  /** A snapshot of the lab's state. */
  status(): LabStatus {
    const host = this.#o.publicHost ?? 'localhost';
    return {
      sessionId: this.#o.sessionId,
      runtime: this.#o.runtime.name,
      lesson: this.#lesson,
      redeploy: this.#redeploy ? { ...this.#redeploy } : null,
      lastRedeploy: this.#lastRedeploy ? { ...this.#lastRedeploy } : null,
      proxy: {
        driver: this.#proxy.name,
        capabilities: { ...this.#proxy.capabilities },
        statsUrl: this.#proxy.statsUrl ?? null,
        statsCredentials: this.#proxy.statsCredentials ?? null,
        pingUrl: this.#proxy.pingUrl ?? null,
        port: this.#proxyPort,
        url: `http://${host}:${this.#proxyPort}/`,
        down: this.#proxyDown,
      },
      services: SERVICE_NAMES.filter((s) => this.#topology.services[s] !== undefined).map((name) => ({
        name,
        replicas: this.#topology.services[name]?.replicas ?? 0,
        ...(this.#vips.get(name)?.port ? { vip: `${this.#vips.get(name)!.host}:${this.#vips.get(name)!.port}` } : {}),
        instances: this.#ofService(name).map(
          (r): ReplicaStatus => ({
            hostname: r.hostname,
            service: r.service,
            state: r.state,
            port: r.handle?.port ?? null,
            pid: r.handle?.pid ?? null,
            host: r.handle?.host ?? null,
            containerId: r.handle?.containerId ?? null,
            requests: r.requests,
            weight: r.weight,
            implementation: r.handle?.implementation ?? null,
            fault: r.fault,
            // Both engines start a server UP: with a check on, a replica not yet reported DOWN is UP.
            healthy: balancerOf(this.#topology, name).healthCheck ? (r.healthy ?? true) : null,
            startedAt: r.startedAt,
          }),
        ),
      })),
      topology: structuredClone(this.#topology),
      requestsTotal: this.#requestsTotal,
    };
  }

  // ------------------------------------------------------------ internals

  /** Refuses settings the engine cannot do, with a sentence naming the feature and the engine. */
  #requireCapabilities(topology: Topology, proxy: ProxyDriver): void {
    const caps: ProxyCapabilities = proxy.capabilities;
    for (const name of SERVICE_NAMES) {
      if (!topology.services[name]) continue;
      const b = balancerOf(topology, name);
      const missing =
        (b.sticky && !caps.stickyCookie && 'sticky sessions') ||
        (b.algorithm === 'hash' && !caps.headerHash && 'header hashing') ||
        (b.algorithm === 'least-connections' && !caps.leastConnections && 'least-connections') ||
        null;
      if (missing) throw new LabError(`The ${proxy.name} proxy cannot do ${missing} (used by ${name}).`, 'conflict');
    }
  }

  #serviceName(service: string): ServiceName {
    const parsed = ServiceName.safeParse(service);
    if (!parsed.success || this.#topology.services[parsed.data] === undefined) {
      const known = Object.keys(this.#topology.services).join(', ');
      throw new LabError(`Unknown service "${String(service).slice(0, 60)}". This lab runs: ${known}.`, 'not-found');
    }
    return parsed.data;
  }

  #find(name: string, includeCrashed = false): Replica {
    const usable = (r: Replica) => r.state !== 'stopping' && (includeCrashed || r.state !== 'crashed');
    const exact = this.#replicas.get(name);
    if (exact && usable(exact)) return exact;
    const bySlot = [...this.#replicas.values()].filter((r) => usable(r) && r.hostname.startsWith(`${name}-`));
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

  /**
   * Runs operations one at a time, in call order; a failed one does not block the next. While the
   * proxy is down, only operations that start it again (`whileProxyDown`: reset, switchProxy) run;
   * the others are refused with a sentence before they change anything.
   */
  #enqueue<T>(op: () => Promise<T>, whileProxyDown = false): Promise<T> {
    if (this.#stopping) return Promise.reject(new LabError('The lab is stopping.', 'conflict'));
    const guarded = whileProxyDown
      ? op
      : () => {
          if (this.#proxyDown) throw this.#downError();
          return op();
        };
    const run = this.#queue.then(guarded, guarded);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Starts or stops replicas until each service has its desired count. */
  async #converge(cause: string): Promise<void> {
    const starts: Promise<unknown>[] = [];
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

  /** Starts every replica `topology` wants beyond those the lab has, all at once, without putting them in the pool (see #joinAll). */
  #spawnAll(topology: Topology): Promise<Array<PromiseSettledResult<Replica | null>>> {
    const starts: Promise<Replica | null>[] = [];
    for (const name of SERVICE_NAMES) {
      const desired = topology.services[name]?.replicas ?? 0;
      for (let i = this.#ofService(name).length; i < desired; i++) starts.push(this.#startReplica(name, false, topology));
    }
    return Promise.allSettled(starts);
  }

  /**
   * Puts the replicas #spawnAll started in the pool with ONE proxy update (each may be an HAProxy
   * reload) and announces them. Throws a LabError when some failed to start.
   */
  async #joinAll(results: Array<PromiseSettledResult<Replica | null>>, cause: string): Promise<void> {
    const ready = results.flatMap((r) => (r.status === 'fulfilled' && r.value ? [r.value] : []));
    for (const r of ready) this.#joinPool(r);
    if (ready.length) await this.#applyProxy();
    for (const r of ready) this.#o.bus.emit('replica:started', this.#event(r));
    this.#changed(cause);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length) {
      throw new LabError(`${failed.length} replica(s) failed to start: ${String(failed[0].reason?.message ?? failed[0].reason)}`, 'failed');
    }
  }

  /**
   * Starts one replica; resolves when it is ready. With `join` (the default) it then joins the
   * pool (one proxy update) and is announced; without, the caller does both (see #spawnAll, #joinAll).
   * Resolves with the replica, or null when it was removed while starting. `topology` gives its
   * environment (default: the lab's current one; a reset starts replicas of the next one).
   */
  async #startReplica(service: ServiceName, join = true, topology: Topology = this.#topology): Promise<Replica | null> {
    const slot = this.#nextSlot(service);
    const hostname = `${service}-${slot}-${randomBytes(2).toString('hex')}`;
    const replica: Replica = {
      service,
      hostname,
      slot,
      state: 'starting',
      handle: null,
      requests: 0,
      weight: 1,
      fault: 'healthy',
      healthy: null,
      startedAt: Date.now(),
    };
    this.#replicas.set(hostname, replica);
    this.#changed(`starting ${hostname}`);
    try {
      replica.handle = await this.#o.runtime.start({ service, hostname, ...this.#envOf(service, topology) }, this.#hooks(replica));
    } catch (err) {
      this.#replicas.delete(hostname);
      throw err;
    }
    if (replica.state !== 'starting') return null; // removed while starting
    if (!join) return replica;
    this.#joinPool(replica);
    await this.#applyProxy();
    this.#o.bus.emit('replica:started', this.#event(replica));
    return replica;
  }

  #hooks(replica: Replica) {
    return {
      onLog: (stream: 'stdout' | 'stderr', text: string) => {
        if (stream === 'stdout' && text.startsWith('conn ') && this.#connectionReport(replica, text)) return;
        this.#o.bus.emit('log:line', { source: replica.hostname, stream, text, at: Date.now() });
      },
      onExit: (info: { code: number | null; signal: string | null; expected: boolean }) => {
        if (!info.expected) replica.crash = this.#crashed(replica, info);
      },
    };
  }

  /**
   * A backend's connection report (sandbox-images/shared/conn-events.js, on with the runtime's
   * `connectionReports`): `conn opened <peer>` / `conn closed <peer> by client|server (<reason>)`.
   * Becomes a proxy-backend connection event when nobody else reports that hop: the proxy does not
   * report its own sockets (HAProxy) and no VIP sits in front of the service (the VIP reports
   * vip-backend). `local` is the peer (the proxy's source address:port, as the proxy would name
   * it), `remote` the replica. Connections opened before the replica was ready (the runtime's own
   * readiness probe) are left out. Returns true when the line was a report (it is not logged).
   */
  #connectionReport(replica: Replica, text: string): boolean {
    const m = /^conn (opened|closed) (\S+)(?: by (client|server) \((.*)\))?$/.exec(text);
    if (!m) return false;
    const [, what, peer, by, reason] = m;
    const key = `${replica.hostname} ${peer}`;
    if (what === 'opened') {
      const handle = replica.handle;
      if (!handle || this.#proxy.capabilities.connectionEvents || this.#vips.has(replica.service)) return true;
      if (this.#backendConns.size > 10_000) this.#backendConns.clear();
      const id = `b${++this.#backendConnSeq}`;
      const remote = `${handle.host}:${handle.port}`;
      this.#backendConns.set(key, { id, remote });
      this.#o.bus.emit('connection:opened', { id, hop: 'proxy-backend', local: peer, remote, replica: replica.hostname, at: Date.now() });
      return true;
    }
    const open = this.#backendConns.get(key);
    if (!open) return true;
    this.#backendConns.delete(key);
    this.#o.bus.emit('connection:closed', {
      id: open.id,
      hop: 'proxy-backend',
      local: peer,
      remote: open.remote,
      replica: replica.hostname,
      at: Date.now(),
      closedBy: by === 'client' ? 'proxy' : 'backend',
      reason: reason ?? 'closed',
    });
    return true;
  }

  /** Marks a replica running: in the pool from the next apply, in start order (the order status lists). */
  #joinPool(replica: Replica): void {
    replica.state = 'running';
  }

  /** Waits until the exit of a replica crashed on purpose has been handled. */
  async #crashHandled(replica: Replica): Promise<void> {
    await replica.crash;
  }

  async #crashed(replica: Replica, info: { code: number | null; signal: string | null }): Promise<void> {
    if (!this.#replicas.has(replica.hostname) || replica.state === 'stopping' || replica.state === 'crashed' || this.#stopping) return;
    const reason = info.signal ? `killed by ${info.signal}` : `exit code ${info.code}`;
    if (this.#topology.discovery === 'static') {
      // A fixed server list (Traefik's file provider) does not notice: the dead address stays in the pool.
      replica.state = 'crashed';
      this.#log(`${replica.hostname} crashed (${reason}); static discovery keeps it in the proxy's server list`);
      this.#o.bus.emit('replica:crashed', { ...this.#event(replica), reason });
      this.#changed(`crash ${replica.hostname}`);
      return;
    }
    this.#replicas.delete(replica.hostname);
    const spec = this.#topology.services[replica.service];
    this.#topology = {
      ...this.#topology,
      services: { ...this.#topology.services, [replica.service]: { ...spec, replicas: Math.max(0, (spec?.replicas ?? 1) - 1) } },
    };
    if (replica.adopted) {
      // Compose scaled it down or someone ran `docker stop`: it was never the lab's to keep.
      this.#log(`${replica.hostname} stopped outside the lab (${reason}); it leaves the pool`);
      this.#o.bus.emit('replica:stopped', { ...this.#event(replica), reason: `stopped outside the lab (${reason})` });
    } else {
      this.#log(`${replica.hostname} crashed (${reason})`);
      this.#o.bus.emit('replica:crashed', { ...this.#event(replica), reason });
    }
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
    const pools = new Map<ServiceName, PoolMember[]>();
    for (const r of this.#replicas.values()) {
      const inPool = r.state === 'running' || r.state === 'draining' || (r.state === 'crashed' && this.#topology.discovery === 'static');
      if (!inPool || !r.handle) continue;
      const pool = pools.get(r.service) ?? [];
      pool.push({ hostname: r.hostname, host: r.handle.host, port: r.handle.port, weight: r.weight, state: r.state === 'draining' ? 'drain' : 'ready' });
      pools.set(r.service, pool);
    }
    // A service behind a VIP: the proxy knows one address, the VIP's (Traefik with lbswarm=true).
    for (const [service, vip] of this.#vips) {
      if (vip.port === null) continue;
      pools.set(service, [{ hostname: `${service}-vip`, host: vip.host, port: vip.port, weight: 1, vip: true }]);
    }
    return buildProxyConfig(this.#topology, pools, {
      name: 'web',
      host: this.#o.proxyListen.host,
      port: this.#proxyPort || this.#o.proxyListen.port,
    });
  }

  async #applyProxy(): Promise<void> {
    if (this.#stopping) return;
    if (this.#proxyDown) throw this.#downError();
    await this.#syncVips();
    await this.#proxy.apply(this.#config());
    this.#emitApplied();
  }

  /** #enqueue for the operations that start the proxy again (reset, switchProxy). */
  #enqueueWhileProxyDown<T>(op: () => Promise<T>): Promise<T> {
    return this.#enqueue(op, true);
  }

  #downError(): LabError {
    return new LabError(`The ${this.#proxy.name} proxy is down (${this.#proxyDown}); \`reset\` starts it again.`, 'conflict');
  }

  /** Starts the proxy that died on its own again, on the same port, with the current configuration. */
  async #restartProxy(): Promise<void> {
    const reason = this.#proxyDown;
    await this.#syncVips();
    this.#proxyPort = await this.#proxy.start(this.#config());
    this.#proxyDown = null;
    this.#emitApplied();
    this.#log(`the ${this.#proxy.name} proxy is back on port ${this.#proxyPort} (it had died: ${reason})`);
  }

  /** Extra environment of a service's new replicas: its keep-alive timeout when the topology sets one. */
  #envOf(service: ServiceName, topology: Topology = this.#topology): { env?: Record<string, string> } {
    const ms = topology.services[service] ? balancerOf(topology, service).backendKeepAlive : undefined;
    return ms === undefined ? {} : { env: { KEEPALIVE_TIMEOUT_MS: String(ms) } };
  }

  /**
   * Keeps one VIP per service with `vip` on and `dnsrr` off, in front of its running replicas (in
   * pool order; a draining replica is left out, as Swarm removes a stopping task from IPVS). With
   * `dnsrr` on there is no VIP (Swarm's endpoint_mode dnsrr): the service name resolves to every
   * task address. In process mode all replicas share 127.0.0.1 on different ports, so "resolving"
   * is the lab handing the proxy the task address list, as it does without a VIP. The VIP reports
   * the proxy-vip hop only when the proxy does not report its own sockets.
   */
  async #syncVips(): Promise<void> {
    for (const name of SERVICE_NAMES) {
      const spec = this.#topology.services[name];
      const b = spec ? balancerOf(this.#topology, name) : null;
      const wanted = b !== null && b.vip && !b.dnsrr;
      let vip = this.#vips.get(name);
      if (!wanted) {
        if (vip) {
          this.#vips.delete(name);
          await vip.stop();
          this.#log(`${name}: VIP stopped`);
        }
        continue;
      }
      if (!vip) {
        vip = new Vip({
          bus: this.#o.bus,
          name: `${name}-vip`,
          host: this.#o.proxyListen.host,
          ...(this.#o.vipIdleTimeoutMs !== undefined ? { idleTimeoutMs: this.#o.vipIdleTimeoutMs } : {}),
        });
        await vip.start();
        this.#vips.set(name, vip);
        this.#log(`${name}: VIP on ${vip.host}:${vip.port} (one replica per TCP connection, as Swarm's IPVS)`);
      }
      vip.setProxySideEvents(!this.#proxy.capabilities.connectionEvents);
      vip.setBackends(
        this.#ofService(name)
          .filter((r) => r.state === 'running' && r.handle)
          .map((r) => ({ name: r.hostname, host: r.handle!.host, port: r.handle!.port })),
      );
    }
  }

  async #stopVips(): Promise<void> {
    const vips = [...this.#vips.values()];
    this.#vips.clear();
    await Promise.all(vips.map((v) => v.stop()));
  }

  #emitApplied(): void {
    this.#o.bus.emit('proxy:applied', { driver: this.#proxy.name, config: this.#proxy.render(this.#config()), at: Date.now() });
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
