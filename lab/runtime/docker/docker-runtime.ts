/**
 * DockerRuntime: the demo backends as containers (the BackendRuntime of `--runtime docker`).
 *
 * - Images: built from sandbox-images/ by ./images.ts when their content-hash tag is missing,
 *   FROM the official images or from LAB_DOCKER_BASE (the offline base); progress goes to
 *   onImageProgress as `image:build` events.
 * - Network: a bridge `balancer-lab-<sessionId>` with an explicit /24 subnet, created on the
 *   first start and removed by stopAll(). The runtime picks each replica's IPv4 address itself,
 *   so a replica restarted with ReplicaSpec.port gets its old address back (Docker assigns a
 *   fixed address only on a network whose subnet was given at creation). Option `network`
 *   joins an existing one instead (Compose's, when the lab runs in a container on it).
 * - Containers: `balancer-lab-<sessionId>-<hostname>`, Hostname = the replica's hostname (its
 *   answers name the replica the lab knows), the lab's labels plus Compose's
 *   (com.docker.compose.project=balancer-lab, com.docker.compose.service=<service>) so
 *   `docker-compose ps` lists them, Docker's init as PID 1 (SIGTERM reaches php -S, which as
 *   PID 1 would ignore it). The handle's host is the container's address on the lab network
 *   (the lab and a proxy on the host reach it directly), port 8080, pid null.
 * - Readiness: the backend's own startup line in its log (`listening on http://...`, or php's
 *   `Development Server (...) started`), then `GET /health` 200 with the right X-Served-By.
 * - Faults: a JSON file at /run/lab/fault.json in the container (LAB_FAULT_FILE), put with the
 *   archive API and renamed into place (an exec with an argument array). Node backends log
 *   `<hostname> fault: <mode>` when they apply it: that line is the acknowledgement. router.php
 *   reads the file at every request, so for session_php the write is enough and the runtime
 *   writes the `fault:` line into the replica's log itself, as ProcessRuntime does.
 * - Exit: container.wait(); onExit's `expected` is true only for stop()/stopAll(). Exited
 *   containers are removed (their log was streamed already).
 * - sweep(): removes containers and networks labelled `balancer-lab.session` of other sessions.
 *
 * Only files under lab/runtime/docker/ import dockerode.
 */
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import tar from 'tar-stream';
import type Docker from 'dockerode';
import type { ImageBuildProgressed } from '../../events.ts';
import type { BackendRuntime, Fault, ReplicaHandle, ReplicaHooks, ReplicaSpec } from '../../seams.ts';
import { SERVICE_NAMES, type ServiceName } from '../../topology.ts';
import {
  connectDocker,
  execExitCode,
  followLogs,
  LABEL_HOSTNAME,
  LABEL_OWNER,
  LABEL_ROLE,
  LABEL_SERVICE,
  LABEL_SESSION,
  labelFilter,
  NAME_PREFIX,
  ownerAlive,
  ownerLabel,
  type LogFollower,
} from './docker-client.ts';
import { ImageBuilder, sandboxImageTarget, type ImageTarget } from './images.ts';

/** The port every backend listens on inside its container. */
export const CONTAINER_PORT = 8080;
/** Where the fault file lives in a replica container (LAB_FAULT_FILE). */
export const FAULT_FILE = '/run/lab/fault.json';
/** Compose's project label value, so `docker-compose -p balancer-lab ps` lists the lab's containers. */
export const COMPOSE_PROJECT = 'balancer-lab';

/** Options of DockerRuntime. */
export interface DockerRuntimeOptions {
  /** A connected client; default: connectDocker() on first use (DOCKER_HOST or /var/run/docker.sock). */
  docker?: Docker;
  /** Id of this lab run, `[A-Za-z0-9_-]{1,64}`: in every name and the `balancer-lab.session` label. */
  sessionId: string;
  /** The lab's state folder; npm installs for the images are cached in `<stateDir>/docker-cache` unless cacheDir says otherwise. */
  stateDir: string;
  /** Node backends report their connections on stdout (LAB_CONN_EVENTS=1). Default false. */
  connectionReports?: boolean;
  /** Every line of an image build (and the final done event): `image:build` events. */
  onImageProgress?(event: ImageBuildProgressed): void;
  /** How long a started container may take to be ready, ms (default 60000; an image build before it is not counted). */
  readyTimeoutMs?: number;
  /** Base image of the builds; default env LAB_DOCKER_BASE, else the official images. */
  base?: string;
  /** Where host-side npm installs for the images are cached; default `<stateDir>/docker-cache`. */
  cacheDir?: string;
  /** Another image for some services (tests use backends that never get ready); default sandboxImageTarget(service). */
  images?: Partial<Record<ServiceName, ImageTarget>>;
  /**
   * Join this existing network instead of creating `balancer-lab-<sessionId>`: e.g. Compose's
   * `<project>_lab` when the lab itself runs in a container on it (it must reach the replicas).
   * stopAll() leaves it. Replicas get fixed addresses only if its subnet was given when it was
   * created (Compose: `ipam.config.subnet`); otherwise Docker assigns them, and a restart at
   * the same address (ReplicaSpec.port) is refused with a sentence saying so.
   */
  network?: string;
  /**
   * A Docker Compose project whose demo-service containers this lab adopts (discover()): those
   * labelled `com.docker.compose.project=<it>` and `com.docker.compose.service=<a lab service>`
   * that the lab did not start, e.g. after `docker compose up --scale web_dynamic=5`. Absent = none.
   */
  composeProject?: string;
}

/** Readiness line of each kind of backend, and what it says about the implementation. */
const NODE_READY = /^listening on http:\/\//;
const PHP_READY = /PHP (\d+\.\d+\.\d+)\S* Development Server \(http:\/\/[^)]+\) started/;
const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_LOG_LINE = 8192;
/** Log lines kept to explain a failed start. */
const LOG_TAIL = 10;
const DEFAULT_GRACE_MS = 2000;
/** How long setFault waits for the replica's `fault:` line, ms. */
const FAULT_ACK_MS = 15_000;
const RESERVED_ENV = new Set(['PORT', 'HOST', 'PATH', 'HOME', 'NODE_ENV']);
const RESERVED_ENV_PREFIX = /^(LAB_|NODE_|NPM_|LD_|PHP_INI|UV_)/;

const SpecSchema = z.object({
  service: z.enum(SERVICE_NAMES),
  hostname: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'a hostname is 1-63 letters, digits, "_", "." or "-"'),
  port: z.number().int().min(1).max(65_535).optional(),
  env: z
    .record(z.string().regex(/^[A-Z][A-Z0-9_]*$/, 'env names are upper case, e.g. KEEPALIVE_TIMEOUT_MS'), z.string().max(4096))
    .optional(),
});

const FaultSchema = z.union([
  z.object({ mode: z.enum(['healthy', 'unhealthy', 'errors', 'hang']) }),
  z.object({ mode: z.literal('slow'), ms: z.number().int().min(1).max(60_000) }),
]);

/** `slow 500 ms`, `hang`, ...: a fault as the backends' log lines show it (sandbox-images/shared/faults.js). */
function describeFault(fault: Fault): string {
  return fault.mode === 'slow' ? `slow ${fault.ms} ms` : fault.mode;
}

/** One replica container this runtime started. */
interface Replica {
  spec: ReplicaSpec;
  hooks: ReplicaHooks;
  name: string;
  container: Docker.Container;
  containerId: string;
  ip: string;
  /** stop() or stopAll() asked for it: its exit is expected. */
  stopRequested: boolean;
  /** Resolves once the container exited, onExit was called and the container was removed. */
  gone: Promise<void>;
  follower: LogFollower | null;
  /** Lines waited for (readiness, fault acknowledgements). */
  waiters: Set<(stream: 'stdout' | 'stderr', text: string) => void>;
  tail: string[];
  exited: boolean;
  /** start() resolved: only then is an exit reported through onExit (as ProcessRuntime does). */
  ready: boolean;
  faultSeq: number;
  /** Started by someone else (Compose) and adopted by discover(): stopAll() leaves its container alone. */
  adopted: boolean;
}

/**
 * A replica record as it starts: not ready, not exited, nothing followed or waited for; with the
 * function that resolves its `gone`.
 */
function newReplica(init: Pick<Replica, 'spec' | 'hooks' | 'name' | 'container' | 'containerId' | 'ip' | 'adopted'>): { replica: Replica; resolveGone: () => void } {
  let resolveGone!: () => void;
  const gone = new Promise<void>((r) => (resolveGone = r));
  const replica: Replica = { ...init, stopRequested: false, gone, follower: null, waiters: new Set(), tail: [], exited: false, ready: false, faultSeq: 0 };
  return { replica, resolveGone };
}

/** The network this runtime's replicas share. */
interface LabNetwork {
  id: string;
  name: string;
  /** The subnet's first address as a number, and how many addresses it has (a /24: 256). */
  first: number;
  size: number;
  gateway: string;
  /** Created by this runtime (removed by stopAll), not joined. */
  owned: boolean;
  /** Addresses can be chosen (false: the network's subnet was not given at its creation). */
  pin: boolean;
}

/**
 * Runs replicas as Docker containers; see the module comment for names, labels, network,
 * readiness, faults and exits. Methods reject with an Error whose message is one sentence.
 */
export class DockerRuntime implements BackendRuntime {
  readonly name = 'docker' as const;
  readonly #opts: DockerRuntimeOptions;
  readonly #sessionId: string;
  readonly #readyTimeoutMs: number;
  #docker: Promise<Docker> | null;
  #builder: ImageBuilder | null = null;
  #network: Promise<LabNetwork> | null = null;
  readonly #replicas = new Map<string, Replica>();
  /** Hostnames being started (not in #replicas yet), with their container once created. */
  readonly #starting = new Map<string, { container?: Docker.Container; cancelled: boolean }>();
  /** Addresses picked for starts that have no container in #replicas yet. */
  readonly #pendingIps = new Set<string>();
  /** The last address of each hostname that is not running: a restart (ReplicaSpec.port) gets it back; oldest first. */
  readonly #lastIp = new Map<string, string>();
  /** Stops discover()'s event stream, while it runs. */
  #stopDiscovery: (() => void) | null = null;

  /** @throws Error when sessionId is not `[A-Za-z0-9_-]{1,64}`. */
  constructor(opts: DockerRuntimeOptions) {
    if (!SESSION_ID.test(opts.sessionId)) throw new Error(`A session id is 1-64 letters, digits, "_" or "-", not ${JSON.stringify(opts.sessionId)}.`);
    this.#opts = opts;
    this.#sessionId = opts.sessionId;
    this.#readyTimeoutMs = opts.readyTimeoutMs ?? 60_000;
    this.#docker = opts.docker ? Promise.resolve(opts.docker) : null;
  }

  /** The lab network's name: `balancer-lab-<sessionId>`. */
  get networkName(): string {
    return `${NAME_PREFIX}-${this.#sessionId}`;
  }

  #client(): Promise<Docker> {
    this.#docker ??= connectDocker();
    return this.#docker;
  }

  #imageBuilder(docker: Docker): ImageBuilder {
    this.#builder ??= new ImageBuilder(docker, {
      ...(this.#opts.base !== undefined ? { base: this.#opts.base } : {}),
      cacheDir: this.#opts.cacheDir ?? path.join(this.#opts.stateDir, 'docker-cache'),
      onProgress: (e) => this.#opts.onImageProgress?.(e),
    });
    return this.#builder;
  }

  /**
   * Builds (if needed) the image of a service, without starting anything: lets the lab build
   * every image up front with progress, before the first replica's readiness clock starts.
   * @returns the image tag.
   */
  async prepareImage(service: ServiceName): Promise<string> {
    const docker = await this.#client();
    return (await this.#imageBuilder(docker).ensure(this.#target(service))).tag;
  }

  #target(service: ServiceName): ImageTarget {
    return this.#opts.images?.[service] ?? sandboxImageTarget(service);
  }

  /**
   * Removes replica containers and lab networks labelled `balancer-lab.session` whose session
   * is not this one and whose lab is gone: leftovers of earlier runs that were killed. Objects of a lab that
   * still runs on this machine (LABEL_OWNER: its pid is alive with the same start time) are
   * left alone, and so are those of a lab on another host (e.g. one in a container), whose
   * liveness cannot be told from here. Resolves with how many it removed.
   */
  async sweep(): Promise<number> {
    const docker = await this.#client();
    let removed = 0;
    // Replicas and lab networks only: proxy containers are their driver's to sweep.
    const containers = await docker.listContainers({ all: true, filters: labelFilter(undefined, 'replica') });
    for (const c of containers) {
      if (c.Labels?.[LABEL_SESSION] === this.#sessionId || ownerAlive(c.Labels?.[LABEL_OWNER])) continue;
      try {
        await docker.getContainer(c.Id).remove({ force: true });
        removed += 1;
      } catch (err) {
        if (!isNotFound(err)) throw sentence(err, `Could not remove the leftover container ${c.Names?.[0] ?? c.Id}`);
      }
    }
    const networks = await docker.listNetworks({ filters: labelFilter(undefined, 'network') });
    for (const n of networks) {
      if (n.Labels?.[LABEL_SESSION] === this.#sessionId || ownerAlive(n.Labels?.[LABEL_OWNER])) continue;
      try {
        await docker.getNetwork(n.Id).remove();
        removed += 1;
      } catch (err) {
        // 403: something of another lab is still attached; the next sweep tries again.
        const status = (err as { statusCode?: number }).statusCode;
        if (!isNotFound(err) && status !== 403 && status !== 409) throw sentence(err, `Could not remove the leftover network ${n.Name}`);
      }
    }
    return removed;
  }

  /**
   * Starts a replica container and resolves once it is ready (see the module comment).
   * `spec.port`: restart at the same address: must be 8080 (the port inside every container);
   * the container gets the address this hostname had before.
   * @throws Error (a sentence) on an invalid spec, a hostname already running, a failed image
   *   build, a container that exits or is stopped before it is ready, or readiness taking longer
   *   than readyTimeoutMs (with the container's last log lines).
   */
  async start(spec: ReplicaSpec, hooks: ReplicaHooks): Promise<ReplicaHandle> {
    const parsed = SpecSchema.safeParse(spec);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(`Invalid replica spec (${issue.path.join('.') || 'spec'}): ${issue.message}.`);
    }
    const label = `Replica ${spec.hostname} (${spec.service})`;
    for (const name of Object.keys(spec.env ?? {})) {
      if (RESERVED_ENV.has(name) || RESERVED_ENV_PREFIX.test(name)) throw new Error(`${label} cannot set ${name}: the runtime sets it.`);
    }
    if (spec.port !== undefined && spec.port !== CONTAINER_PORT) {
      throw new Error(`${label} cannot listen on port ${spec.port}: in Docker mode every replica listens on ${CONTAINER_PORT} at its own address.`);
    }
    if (this.#replicas.has(spec.hostname) || this.#starting.has(spec.hostname)) {
      throw new Error(`${label} is already running.`);
    }
    const ticket: { container?: Docker.Container; cancelled: boolean } = { cancelled: false };
    this.#starting.set(spec.hostname, ticket);
    try {
      const docker = await this.#client();
      const image = await this.#imageBuilder(docker).ensure(this.#target(spec.service));
      if (ticket.cancelled) throw new Error(`${label} was stopped before it was ready.`);
      const network = await this.#ensureNetwork(docker);
      if (spec.port !== undefined && !network.pin) {
        throw new Error(
          `${label} cannot come back at its old address: the network ${network.name} was created without a subnet, so Docker picks every address (give it one, e.g. ipam.config.subnet in docker-compose.yml).`,
        );
      }
      const ip = network.pin ? await this.#pickIp(docker, network, spec) : null; // reserved in #pendingIps
      try {
        return await this.#run(docker, network, image.tag, ip, spec, hooks, label, ticket);
      } finally {
        if (ip) this.#pendingIps.delete(ip);
      }
    } finally {
      this.#starting.delete(spec.hostname);
    }
  }

  async #run(
    docker: Docker,
    network: LabNetwork,
    image: string,
    pinned: string | null,
    spec: ReplicaSpec,
    hooks: ReplicaHooks,
    label: string,
    ticket: { container?: Docker.Container; cancelled: boolean },
  ): Promise<ReplicaHandle> {
    const name = `${NAME_PREFIX}-${this.#sessionId}-${spec.hostname}`;
    const env: Record<string, string> = {
      ...spec.env,
      PORT: String(CONTAINER_PORT),
      HOST: '0.0.0.0',
      LAB_HOSTNAME: spec.hostname,
      LAB_SESSION: this.#sessionId,
      LAB_FAULT_FILE: FAULT_FILE,
      ...(this.#opts.connectionReports ? { LAB_CONN_EVENTS: '1' } : {}),
    };
    // A container of this name left by a start that failed half-way (this session): replace it.
    await docker.getContainer(name).remove({ force: true }).catch(() => {});
    let container: Docker.Container;
    const create = (ip: string | null) =>
      docker.createContainer({
        name,
        Image: image,
        Hostname: spec.hostname,
        Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
        Labels: {
          [LABEL_SESSION]: this.#sessionId,
          [LABEL_ROLE]: 'replica',
          [LABEL_SERVICE]: spec.service,
          [LABEL_HOSTNAME]: spec.hostname,
          [LABEL_OWNER]: ownerLabel(),
          'com.docker.compose.project': COMPOSE_PROJECT,
          'com.docker.compose.service': spec.service,
          'com.docker.compose.oneoff': 'False',
        },
        ExposedPorts: { [`${CONTAINER_PORT}/tcp`]: {} },
        HostConfig: { Init: true, NetworkMode: network.name, RestartPolicy: { Name: 'no' } },
        NetworkingConfig: {
          EndpointsConfig: {
            [network.name]: { ...(ip ? { IPAMConfig: { IPv4Address: ip } } : {}), Aliases: [spec.hostname, spec.service] },
          },
        },
      });
    /** Creates and starts the container; a container that would not start is removed. */
    const launch = async (ip: string | null): Promise<Docker.Container> => {
      const c = await create(ip);
      ticket.container = c;
      try {
        await c.start();
      } catch (err) {
        await c.remove({ force: true }).catch(() => {});
        throw err;
      }
      return c;
    };
    let ip = pinned ?? '';
    try {
      try {
        container = await launch(pinned);
      } catch (err) {
        // A joined network whose subnet Docker picked takes no fixed address: let Docker pick.
        const text = `${(err as { json?: { message?: string } }).json?.message ?? ''} ${(err as Error).message}`;
        if (!pinned || network.owned || !/user (configured|specified)/i.test(text)) throw err;
        network.pin = false;
        if (spec.port !== undefined) {
          throw new Error(
            `${label} cannot come back at its old address: the network ${network.name} was created without a subnet, so Docker picks every address (give it one, e.g. ipam.config.subnet in docker-compose.yml).`,
          );
        }
        pinned = null;
        container = await launch(null);
      }
      if (!pinned) {
        // Docker picked the address: read it back.
        const info = await container.inspect();
        ip = info.NetworkSettings.Networks[network.name]?.IPAddress ?? '';
        if (!ip) throw new Error(`Docker gave it no address on ${network.name}`);
      }
    } catch (err) {
      if (ticket.cancelled) throw new Error(`${label} was stopped before it was ready.`);
      if ((err as Error).message?.startsWith(label)) throw err;
      throw sentence(err, `${label} could not be started`);
    }
    if (ticket.cancelled) {
      await container.remove({ force: true }).catch(() => {});
      throw new Error(`${label} was stopped before it was ready.`);
    }
    const containerId = container.id.slice(0, 12);
    const { replica, resolveGone } = newReplica({ spec, hooks, name, container, containerId, ip, adopted: false });
    this.#replicas.set(spec.hostname, replica);
    this.#lastIp.delete(spec.hostname);

    const php = spec.service === 'session_php';
    let implementation: string | undefined;
    let exitInfo: { code: number | null; signal: string | null } | null = null;
    const ready = new Promise<void>((resolve, reject) => {
      const onLine = (_stream: 'stdout' | 'stderr', text: string) => {
        const m = php ? PHP_READY.exec(text) : NODE_READY.exec(text);
        if (m) {
          if (php) implementation = `php ${m[1]}`;
          replica.waiters.delete(onLine);
          resolve();
        }
      };
      replica.waiters.add(onLine);
      replica.gone.then(() => reject(new Error('exited')));
    });
    ready.catch(() => {});

    replica.follower = await followLogs(container, (stream, text) => this.#onLine(replica, stream, text)).catch(() => null);
    // Exit watch: wait() resolves when the container stops (or at once if it already has).
    void container
      .wait()
      .then((r: { StatusCode?: number }) => r.StatusCode ?? null, () => null)
      .then(async (code) => {
        replica.exited = true;
        // Let the last log lines arrive before onExit (bounded: a stuck stream must not hold it).
        if (replica.follower) await Promise.race([replica.follower.ended, delay(2000)]);
        replica.follower?.stop();
        exitInfo = exitOf(code);
        await this.#forget(replica);
        try {
          if (replica.ready) hooks.onExit({ ...exitInfo, expected: replica.stopRequested });
        } finally {
          resolveGone();
        }
      });

    const deadline = Date.now() + this.#readyTimeoutMs;
    try {
      await withDeadline(ready, deadline);
      if (ticket.cancelled) throw new Error('stopped');
      await this.#probeHealth(replica, deadline, () => ticket.cancelled || replica.exited);
    } catch (err) {
      const why = (err as Error).message;
      const tail = replica.tail.length ? ` Last log lines: ${replica.tail.slice(-5).join(' | ')}` : ' It logged nothing.';
      const timedOut = !ticket.cancelled && !replica.exited && why !== 'exited';
      if (!replica.exited) {
        replica.stopRequested = true;
        await container.remove({ force: true }).catch(() => {});
      }
      await replica.gone;
      if (timedOut) throw new Error(`${label} was not ready within ${this.#readyTimeoutMs} ms (${why}).${tail}`);
      if (ticket.cancelled) throw new Error(`${label} was stopped before it was ready.`);
      const ex = exitInfo as { code: number | null; signal: string | null } | null;
      const how = ex?.signal ? `was killed by ${ex.signal}` : `exited with code ${ex?.code ?? 'unknown'}`;
      throw new Error(`${label} ${how} before it was ready.${tail}`);
    }
    replica.ready = true;
    const handle: ReplicaHandle = {
      service: spec.service,
      hostname: spec.hostname,
      host: ip,
      port: CONTAINER_PORT,
      pid: null,
      readyAt: Date.now(),
      containerId,
    };
    if (implementation !== undefined) handle.implementation = implementation;
    return handle;
  }

  /** GET /health until 200 with X-Served-By = hostname, the deadline, or `stop()` says so. */
  async #probeHealth(replica: Replica, deadline: number, stop: () => boolean): Promise<void> {
    let last = 'no answer yet';
    for (;;) {
      if (stop()) throw new Error('exited');
      const r = await getHealth(replica.ip, CONTAINER_PORT, Math.max(200, Math.min(2000, deadline - Date.now())));
      if (r.status === 200 && r.servedBy === replica.spec.hostname) return;
      last = r.status === 0 ? r.error : `GET /health answered ${r.status}${r.servedBy !== replica.spec.hostname ? ` from ${r.servedBy ?? 'no X-Served-By'}` : ''}`;
      if (Date.now() >= deadline) throw new Error(last);
      await delay(100); // between probes of a server that just printed its line: rarely needed
    }
  }

  #onLine(replica: Replica, stream: 'stdout' | 'stderr', raw: string): void {
    const text = raw.length > MAX_LOG_LINE ? `${raw.slice(0, MAX_LOG_LINE)} [cut]` : raw;
    replica.tail.push(text);
    if (replica.tail.length > LOG_TAIL) replica.tail.shift();
    for (const waiter of [...replica.waiters]) waiter(stream, text);
    replica.hooks.onLog(stream, text);
  }

  /** Drops a replica from the live map (remembering its address) and removes its container. */
  async #forget(replica: Replica): Promise<void> {
    if (this.#replicas.get(replica.spec.hostname) === replica) {
      this.#replicas.delete(replica.spec.hostname);
      this.#lastIp.set(replica.spec.hostname, replica.ip);
    }
    // An adopted container that stopped by itself (compose scale, docker stop) stays Compose's.
    if (!replica.adopted || replica.stopRequested) await replica.container.remove({ force: true }).catch(() => {});
  }

  /**
   * Stops a replica: SIGTERM, then SIGKILL after graceMs (default 2000), or SIGKILL at once.
   * Resolves once its container is gone (onExit was called with expected: true). Unknown hostname: resolves.
   */
  async stop(hostname: string, opts: { signal?: 'SIGTERM' | 'SIGKILL'; graceMs?: number } = {}): Promise<void> {
    const starting = this.#starting.get(hostname);
    if (starting && !this.#replicas.has(hostname)) {
      starting.cancelled = true;
      await starting.container?.remove({ force: true }).catch(() => {});
      return;
    }
    const replica = this.#replicas.get(hostname);
    if (!replica) return;
    const ticket = this.#starting.get(hostname);
    if (ticket) ticket.cancelled = true;
    replica.stopRequested = true;
    await this.#terminate(replica, opts.signal ?? 'SIGTERM', opts.graceMs ?? DEFAULT_GRACE_MS);
  }

  async #terminate(replica: Replica, signal: 'SIGTERM' | 'SIGKILL', graceMs: number): Promise<void> {
    if (!replica.exited) {
      await replica.container.kill({ signal }).catch(() => {});
      if (signal === 'SIGTERM') {
        const gone = await Promise.race([replica.gone.then(() => true), delay(graceMs).then(() => false)]);
        if (!gone) await replica.container.kill({ signal: 'SIGKILL' }).catch(() => {});
      }
    }
    await replica.gone;
  }

  /** Stops every replica (in parallel), then removes the lab network. Resolves when all are gone. */
  async stopAll(): Promise<void> {
    for (const ticket of this.#starting.values()) ticket.cancelled = true;
    const starting = [...this.#starting.values()].map((t) => t.container?.remove({ force: true }).catch(() => {}));
    this.#stopDiscovery?.();
    // What the lab created goes; what it adopted from Compose stays Compose's (only its log stream is closed).
    for (const r of [...this.#replicas.values()].filter((r) => r.adopted)) {
      r.follower?.stop();
      this.#replicas.delete(r.spec.hostname);
    }
    await Promise.all([...this.#replicas.keys()].map((h) => this.stop(h)));
    await Promise.all(starting);
    if (!this.#network || !this.#docker) return;
    const docker = await this.#docker;
    // Containers of this session that a start left behind (e.g. a start cancelled mid-way).
    for (const c of await docker.listContainers({ all: true, filters: labelFilter(this.#sessionId, 'replica') })) {
      await docker.getContainer(c.Id).remove({ force: true }).catch(() => {});
    }
    const network = await this.#network.catch(() => null);
    this.#network = null;
    if (network?.owned) {
      await docker
        .getNetwork(network.id)
        .remove()
        .catch((err: unknown) => {
          if (!isNotFound(err)) throw sentence(err, `Could not remove the lab network ${network.name}`);
        });
    }
  }

  /**
   * Kills a replica with SIGKILL as a crash: onExit gets expected: false. Resolves when its
   * container is gone. @throws Error when no replica has that hostname.
   */
  async crash(hostname: string): Promise<void> {
    const replica = this.#replicas.get(hostname);
    if (!replica) throw new Error(`No running replica is named ${hostname}.`);
    await this.#terminate(replica, 'SIGKILL', 0);
  }

  /**
   * Adopts the containers of `composeProject` (see DockerRuntimeOptions) that run a lab service and
   * that the lab did not start: those running now, and each one Docker reports started later
   * (its events API, filtered by the project label). A found container becomes a replica once its
   * `GET /health` answers 200 (within readyTimeoutMs): hostname = its Hostname (Compose leaves the
   * container's short id, as in the write-ups), host = its address (on `network` when it is on it),
   * port 8080. `onFound` returns its hooks (logs from then on, its exit), or null to skip it.
   * Without composeProject, nothing is ever found. Returns a function that stops watching.
   */
  discover(onFound: (handle: ReplicaHandle) => ReplicaHooks | null): () => void {
    const project = this.#opts.composeProject;
    if (!project) return () => {};
    let stopped = false;
    let events: NodeJS.ReadableStream | null = null;
    const seen = new Set<string>();
    const consider = (id: string) => {
      if (stopped || seen.has(id)) return;
      seen.add(id);
      void this.#adopt(id, onFound, () => stopped).catch(() => seen.delete(id));
    };
    void (async () => {
      const docker = await this.#client();
      const labels = [`com.docker.compose.project=${project}`];
      // Subscribe first, then list: a container started in between is seen by one or the other.
      const stream = (await docker.getEvents({ filters: { type: ['container'], event: ['start'], label: labels } })) as NodeJS.ReadableStream;
      if (stopped) return (stream as unknown as { destroy?: () => void }).destroy?.();
      events = stream;
      let buffered = '';
      stream.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          try {
            const e = JSON.parse(line) as { id?: string; Actor?: { ID?: string } };
            const id = e.Actor?.ID ?? e.id;
            if (id) consider(id);
          } catch {
            // not an event line: ignore
          }
        }
      });
      stream.on('error', () => {});
      for (const c of await docker.listContainers({ filters: { label: labels, status: ['running'] } })) consider(c.Id);
    })().catch(() => {});
    const stop = () => {
      stopped = true;
      (events as unknown as { destroy?: () => void } | null)?.destroy?.();
      if (this.#stopDiscovery === stop) this.#stopDiscovery = null;
    };
    this.#stopDiscovery = stop;
    return stop;
  }

  /** One container discover() found: checked, probed, registered, and handed to onFound. */
  async #adopt(id: string, onFound: (handle: ReplicaHandle) => ReplicaHooks | null, stopped: () => boolean): Promise<void> {
    const docker = await this.#client();
    const container = docker.getContainer(id);
    const info = await container.inspect();
    const labels = info.Config.Labels ?? {};
    const service = labels['com.docker.compose.service'] as ServiceName;
    // The lab's own containers carry Compose's labels too: they are not found, they are known.
    if (labels[LABEL_SESSION] || !(SERVICE_NAMES as readonly string[]).includes(service) || labels['com.docker.compose.oneoff'] === 'True') return;
    const networks = info.NetworkSettings.Networks ?? {};
    const ip = (this.#opts.network && networks[this.#opts.network]?.IPAddress) || Object.values(networks).find((n) => n.IPAddress)?.IPAddress;
    if (!ip) throw new Error(`Container ${id.slice(0, 12)} has no address the lab can reach.`);
    const hostname = info.Config.Hostname || id.slice(0, 12);
    if (this.#replicas.has(hostname)) return;
    const { replica, resolveGone } = newReplica({
      spec: { service, hostname },
      hooks: { onLog: () => {}, onExit: () => {} },
      name: info.Name.replace(/^\//, ''),
      container,
      containerId: id.slice(0, 12),
      ip,
      adopted: true,
    });
    let exited = false;
    const waited = container.wait().then((r: { StatusCode?: number }) => r.StatusCode ?? null, () => null);
    void waited.then(() => (exited = true));
    await this.#probeHealth(replica, Date.now() + this.#readyTimeoutMs, () => exited || stopped());
    if (stopped() || this.#replicas.has(hostname)) return;
    const hooks = onFound({ service, hostname, host: ip, port: CONTAINER_PORT, pid: null, readyAt: Date.now(), containerId: replica.containerId });
    if (!hooks) return;
    replica.hooks = hooks;
    replica.ready = true;
    this.#replicas.set(hostname, replica);
    replica.follower = await followLogs(container, (stream, text) => this.#onLine(replica, stream, text), { since: Math.floor(Date.now() / 1000) }).catch(() => null);
    void waited.then(async (code) => {
      replica.exited = true;
      if (replica.follower) await Promise.race([replica.follower.ended, delay(2000)]);
      replica.follower?.stop();
      await this.#forget(replica);
      try {
        if (!stopped()) hooks.onExit({ ...exitOf(code), expected: replica.stopRequested });
      } finally {
        resolveGone();
      }
    });
  }

  /**
   * Puts a replica into a fault mode: writes /run/lab/fault.json in its container and, for
   * the Node backends, waits for its `<hostname> fault: <mode>` log line (the acknowledgement).
   * @throws Error on an invalid fault, an unknown hostname, a failed write, or no acknowledgement within 15 s.
   */
  async setFault(hostname: string, fault: Fault): Promise<void> {
    const parsed = FaultSchema.safeParse(fault);
    if (!parsed.success) throw new Error('A fault is one of healthy, unhealthy, errors, hang, or slow with ms from 1 to 60000.');
    const f = parsed.data as Fault;
    const replica = this.#replicas.get(hostname);
    if (!replica) throw new Error(`No running replica is named ${hostname}.`);
    const expected = `${hostname} fault: ${describeFault(f)}`;
    // seq makes every write new content: the Node backends act on a changed file only.
    replica.faultSeq += 1;
    const body = `${JSON.stringify({ ...f, seq: replica.faultSeq })}\n`;
    const php = replica.spec.service === 'session_php';
    let ackWaiter: ((stream: 'stdout' | 'stderr', text: string) => void) | null = null;
    const ack = php
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => {
            replica.waiters.delete(ackWaiter!);
            reject(new Error(`Replica ${hostname} did not acknowledge the fault ${describeFault(f)} within ${FAULT_ACK_MS} ms.`));
          }, FAULT_ACK_MS);
          ackWaiter = (_s, text) => {
            if (text.endsWith(expected)) {
              clearTimeout(timer);
              replica.waiters.delete(ackWaiter!);
              resolve();
            }
          };
          replica.waiters.add(ackWaiter);
          replica.gone.then(() => {
            clearTimeout(timer);
            reject(new Error(`Replica ${hostname} exited before it applied the fault.`));
          });
        });
    ack.catch(() => {});
    try {
      await writeFileInContainer(replica.container, FAULT_FILE, body);
    } catch (err) {
      if (ackWaiter) replica.waiters.delete(ackWaiter);
      throw sentence(err, `Could not write the fault into replica ${hostname}`);
    }
    if (php) this.#onLine(replica, 'stdout', expected); // php runs no code between requests: the runtime says it
    await ack;
  }

  /** The lab network, created on first use with an explicit /24 (so addresses can be chosen), or the one to join. */
  #ensureNetwork(docker: Docker): Promise<LabNetwork> {
    this.#network ??= this.#opts.network ? joinNetwork(docker, this.#opts.network) : createNetwork(docker, this.networkName, this.#sessionId);
    const p = this.#network;
    p.catch(() => {
      if (this.#network === p) this.#network = null;
    });
    return p;
  }

  /**
   * An address for a replica: its old one on restart (spec.port), else the lowest one from the
   * subnet's 10th up that nothing on the network has and no stopped replica may come back to
   * (the oldest such reservation is given up when the subnet is full).
   */
  async #pickIp(docker: Docker, network: LabNetwork, spec: ReplicaSpec): Promise<string> {
    const used = new Set<string>();
    if (!network.owned) {
      // A joined network has other containers (Compose's services, the lab itself).
      const info = await docker.getNetwork(network.id).inspect();
      for (const c of Object.values((info.Containers ?? {}) as Record<string, { IPv4Address?: string }>)) {
        if (c.IPv4Address) used.add(c.IPv4Address.split('/')[0]);
      }
    }
    // After the await: what this runtime holds now.
    for (const r of this.#replicas.values()) used.add(r.ip);
    for (const ip of this.#pendingIps) used.add(ip);
    const old = this.#lastIp.get(spec.hostname);
    if (spec.port !== undefined && old && !used.has(old)) {
      this.#pendingIps.add(old);
      return old;
    }
    const reserved = new Set(this.#lastIp.values());
    const last = Math.min(network.size - 2, 10 + 4096);
    for (let pass = 0; pass < 2; pass += 1) {
      for (let host = 10; host <= last; host += 1) {
        const ip = intToIp(network.first + host);
        if (ip === network.gateway || used.has(ip) || (pass === 0 && reserved.has(ip))) continue;
        if (pass === 1) for (const [h, a] of this.#lastIp) if (a === ip) this.#lastIp.delete(h);
        this.#pendingIps.add(ip); // before any await: concurrent starts must not pick it too
        return ip;
      }
    }
    throw new Error(`The lab network ${network.name} has no free address left.`);
  }
}

/**
 * Creates `name` as a bridge network with a /24 subnet given explicitly. Docker picks a free
 * subnet for a network created without one; the runtime reads it back, and creates the real
 * network with it (a network whose subnet was not given at creation takes no fixed addresses).
 * A network of that name from this session (a crashed lab reusing its id) is reused.
 */
async function createNetwork(docker: Docker, name: string, sessionId: string): Promise<LabNetwork> {
  const labels = { [LABEL_SESSION]: sessionId, [LABEL_ROLE]: 'network', [LABEL_OWNER]: ownerLabel() };
  const existing = (await docker.listNetworks({ filters: { name: [name] } })).find((n) => n.Name === name);
  if (existing) {
    const info = await docker.getNetwork(existing.Id).inspect();
    const net = asLabNetwork(info, true, true);
    if (net && info.Labels?.[LABEL_SESSION] === sessionId) return net;
    throw new Error(`A Docker network named ${name} exists and is not this lab's: remove it (docker network rm ${name}) and start again.`);
  }
  let lastError: unknown = null;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const probeName = `${name}-subnet-probe`;
    await docker.getNetwork(probeName).remove().catch(() => {});
    const probe = await docker.createNetwork({ Name: probeName, Driver: 'bridge', Labels: labels, CheckDuplicate: true });
    const probeInfo = await probe.inspect();
    await probe.remove().catch(() => {});
    const cfg = probeInfo.IPAM?.Config?.[0] as { Subnet?: string; Gateway?: string } | undefined;
    const m = /^(\d+\.\d+\.\d+)\.\d+\/(\d+)$/.exec(cfg?.Subnet ?? '');
    if (!m) throw new Error(`Docker gave the lab network no IPv4 subnet (${cfg?.Subnet ?? 'none'}).`);
    // A /24 at the start of what Docker picked (its default pools hand out /16 or /20 blocks).
    const subnet = `${m[1]}.0/24`;
    const gateway = `${m[1]}.1`;
    try {
      const created = await docker.createNetwork({
        Name: name,
        Driver: 'bridge',
        CheckDuplicate: true,
        Labels: labels,
        IPAM: { Driver: 'default', Config: [{ Subnet: subnet, Gateway: gateway }] },
      });
      return { id: created.id, name, first: ipToInt(`${m[1]}.0`), size: 256, gateway, owned: true, pin: true };
    } catch (err) {
      lastError = err; // another network took the subnet meanwhile: ask again
    }
  }
  throw sentence(lastError, `Could not create the lab network ${name}`);
}

/**
 * Joins an existing network (see DockerRuntimeOptions.network). Docker does not say whether its
 * subnet was given at creation (only then does it take fixed addresses), so the runtime tries a
 * fixed address first and, when Docker refuses, lets Docker pick from then on (`pin` false).
 * @throws Error when the network does not exist or has no IPv4 subnet.
 */
async function joinNetwork(docker: Docker, name: string): Promise<LabNetwork> {
  let info: Docker.NetworkInspectInfo;
  try {
    info = await docker.getNetwork(name).inspect();
  } catch (err) {
    if (isNotFound(err)) throw new Error(`The Docker network ${name} does not exist: create it (docker network create ${name}) or start the lab without it.`);
    throw sentence(err, `Could not look at the Docker network ${name}`);
  }
  const net = asLabNetwork(info, false, true);
  if (!net) throw new Error(`The Docker network ${name} has no IPv4 subnet the lab can use.`);
  return net;
}

function asLabNetwork(
  info: { Id: string; Name: string; IPAM?: { Config?: Array<{ Subnet?: string; Gateway?: string }> } },
  owned: boolean,
  pin: boolean,
): LabNetwork | null {
  const cfg = info.IPAM?.Config?.find((c) => /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(c.Subnet ?? ''));
  if (!cfg?.Subnet) return null;
  const [addr, bits] = cfg.Subnet.split('/');
  const len = Number(bits);
  if (len < 8 || len > 29) return null;
  const size = 2 ** (32 - len);
  const first = ipToInt(addr) - (ipToInt(addr) % size);
  return { id: info.Id, name: info.Name, first, size, gateway: cfg.Gateway ?? intToIp(first + 1), owned, pin };
}

function ipToInt(ip: string): number {
  return ip.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

function intToIp(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/**
 * Writes one file into a running container: a tar with `<name>.new` put with the archive API
 * (https://docs.docker.com/engine/api/v1.41/#tag/Container/operation/PutContainerArchive),
 * then renamed into place by an exec (argument array), so a reader never sees half a file.
 */
async function writeFileInContainer(container: Docker.Container, file: string, content: string): Promise<void> {
  const dir = path.posix.dirname(file);
  const base = path.posix.basename(file);
  const pack = tar.pack();
  pack.entry({ name: `${base}.new`, mode: 0o644, mtime: new Date() }, content);
  pack.finalize();
  const buffer = await streamToBuffer(pack);
  await container.putArchive(buffer, { path: dir });
  const code = await execExitCode(container, ['mv', '-f', `${file}.new`, file]);
  if (code !== 0) throw new Error(`mv into ${file} exited with ${code ?? 'an unknown status'}`);
}

function streamToBuffer(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

/** One GET /health to ip:port; status 0 when there was no answer. */
function getHealth(host: string, port: number, timeoutMs: number): Promise<{ status: number; servedBy: string | null; error: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/health', agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      const servedBy = res.headers['x-served-by'];
      resolve({ status: res.statusCode ?? 0, servedBy: typeof servedBy === 'string' ? servedBy : null, error: '' });
    });
    req.on('timeout', () => req.destroy(new Error(`GET /health took over ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ status: 0, servedBy: null, error: err.code ? `GET /health: ${err.code}` : err.message }));
  });
}

/** Container exit status -> the process-like shape onExit reports (128+n is signal n, as tini and shells report it). */
function exitOf(code: number | null): { code: number | null; signal: string | null } {
  if (code !== null && code > 128 && code < 128 + 65) {
    const signal = Object.entries(os.constants.signals).find(([, n]) => n === code - 128)?.[0] ?? null;
    if (signal) return { code: null, signal };
  }
  return { code, signal: null };
}

function withDeadline<T>(p: Promise<T>, deadline: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error('no startup line in its log')), Math.max(0, deadline - Date.now()));
    }),
  ]).finally(() => clearTimeout(timer));
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function isNotFound(err: unknown): boolean {
  return (err as { statusCode?: number }).statusCode === 404;
}

/** An Error whose message is `<what>: <Docker's reason>.`, one line. */
function sentence(err: unknown, what: string): Error {
  const e = err as { json?: { message?: string }; message?: string };
  const why = (e?.json?.message ?? e?.message ?? String(err))
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/^\(HTTP code \d+\) [^-]*- /, '') // dockerode's prefix
    .replace(/[.:]+$/, '');
  return new Error(`${what}: ${why}.`);
}
