/**
 * The HAProxy driver: the real `haproxy` binary (2.6 or newer) in front of the replicas.
 *
 * - where it runs (haproxy-host.ts, option `host`): `process` (default) = the local binary spawned
 *   with an argument array in its own process group; or a HaproxyHost such as
 *   lab/runtime/docker/haproxy-container.ts (HAProxy in a Docker container with host networking, so
 *   it listens on the lab's proxy port and reaches replicas on 127.0.0.1 and on container IPs alike,
 *   and workDir bind-mounted at the same path, so haproxy.cfg and the Runtime API socket are shared;
 *   Docker Desktop on macOS/Windows runs containers in a VM, where host networking means the VM's).
 *   The host checks (`haproxy -c -f`), starts, signals (SIGUSR2 = reload) and stops HAProxy and
 *   hands over its output lines; everything else (config files, Runtime API) is the same.
 * - start(): haproxy.cfg rendered from the neutral configuration (render.ts) into `workDir`,
 *   checked with `haproxy -c -f`, then `haproxy -W -db -f haproxy.cfg` (master-worker, foreground).
 *   Ready = the Runtime API socket answers
 *   `show info` AND the entrypoint accepts a TCP connection; both are awaited, nothing is slept for.
 * - apply(): the new text is checked with `haproxy -c` first; a refused configuration never replaces
 *   the running one. Then the Runtime API where HAProxy 2.6 can make the change live (weights, a
 *   server added to a non-sticky dynamic backend, a server removed after it drained), else a reload
 *   (SIGUSR2 to the master; awaited until `show info` names a new worker). runtime-plan.ts says
 *   which and why. haproxy.cfg on disk always holds the running configuration.
 * - events: HAProxy's access log (render.ts LOG_FORMAT, streamed on the master's stdout) becomes one
 *   `request:completed` per line, and every line a `log:line` (source `proxy`, stream `access`);
 *   HAProxy's NOTICE/WARNING/ALERT lines are `log:line` stream `stderr`; what the driver itself does
 *   (Runtime API commands it sent, reloads) is `log:line` stream `stdout`. There are no
 *   connection events: HAProxy does not report single TCP connections.
 * - runtimeCommand(): the lesson console, an allow-list of Runtime API commands (runtime-api.ts).
 * - health checks (render.ts: `option httpchk`, `check inter .. fall .. rise ..`, `option
 *   log-health-checks`): HAProxy logs a probe only when it moves a server's health counter (from the
 *   first failure to DOWN, from the first success to UP). Those lines become exact
 *   `healthcheck:probed` events; while a server's health is steady (fully UP, or DOWN) the driver
 *   reads `show stat` every interval and emits HAProxy's last result (check_status, check_code,
 *   check_duration) once per interval + probe duration: one event per probe on average, stamped
 *   when read (up to an interval late), never a probe HAProxy did not run. `replica:health-changed`
 *   comes from HAProxy's `Server <b>/<s> is DOWN|UP` lines (the same poll catches a missed one);
 *   reasons and errors use the embedded proxy's words (`health check failed: ECONNREFUSED`,
 *   `timeout`, `status 503`, `health check passed`, `health check off`).
 * - drain (`server.state`): `set server .. state drain|ready` through the Runtime API (plus the
 *   drain ACL of a sticky backend, so sticky clients are re-pinned); before every reload the
 *   driver writes the server-state file from `show servers state`, so drained servers stay drained
 *   and servers that checks took out stay DOWN in the new worker (server-state.ts). drained() reads
 *   `show stat` (scur + qcur).
 *
 * Differences from the embedded proxy worth knowing in a lesson: a dead server gives HAProxy's
 * `503 Service Unavailable` (termination state SC) where Traefik answers 502; a service with no
 * server is also 503, as an HTML page; round-robin restarts from the first server after a reload;
 * a check ejects after `fall` failed probes and re-adds after `rise` good ones (Traefik: one and
 * one), except that a server HAProxy has just started (a new server, or after a reload without an
 * earlier state) is "up, but will fall down at first failure" until its first good probe.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { EventBus, RequestCompleted } from '../../events.ts';
import type { HealthCheck, ProxyCapabilities, ProxyConfig, ProxyDriver, StickyCookie } from '../../seams.ts';
import { errorOf, parseAccessLog, parseHaproxyMessage, parseHealthMessage, probeError, type HaproxyAccessLog, type HealthMessage } from './log-line.ts';
import { ProcessHaproxyHost, type HaproxyAvailability, type HaproxyHost, type HaproxyInstance } from './haproxy-host.ts';
import { canConnect, errorText, freePort, healthChanged, pollUntil, writeFileAtomic } from '../driver-support.ts';
import { buildHaproxyModel, type HaproxyModel } from './render.ts';
import { checkRuntimeCommand, parseServersConn, parseShowInfo, parseShowStat, runtimeApiRequest, type StatServerRow } from './runtime-api.ts';
import { planRuntimeChanges, stepCommands, type RuntimeStep } from './runtime-plan.ts';
import { drainAclText, parseServersState, serverStateText } from './server-state.ts';

export interface HaproxyDriverOptions {
  /** Where every event goes. */
  bus: EventBus;
  /** Directory for haproxy.cfg and the Runtime API socket (created, mode 0700). Its path must be short (a unix socket path has at most 107 bytes). */
  workDir: string;
  /** The haproxy binary of the default `process` host: a path, or a name looked up on PATH. Default `haproxy`. */
  haproxyPath?: string;
  /**
   * Where HAProxy runs (haproxy-host.ts): `process` (default) = the local binary as a child
   * process; or a HaproxyHost, e.g. lab/runtime/docker/haproxy-container.ts's HaproxyContainerHost
   * (HAProxy in a Docker container on the host's network, with workDir bind-mounted at the same path).
   */
  host?: 'process' | HaproxyHost;
  /** Port of the stats page on 127.0.0.1. Default: a free port chosen at start. */
  statsPort?: number;
  /** How long start() and a reload wait for HAProxy to be ready, in ms. Default 15000. */
  readyTimeoutMs?: number;
  /** How long a removed server may take to finish its requests before they are cut, in ms. Default 10000. */
  drainTimeoutMs?: number;
}

export { MIN_HAPROXY_VERSION } from './haproxy-host.ts';
/** Messages of the stderr tail kept to explain a failed start or reload. */
const TAIL_LINES = 12;
/** Longest path a unix socket may have on Linux (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;
/** Names remembered for log lines of replaced configurations, at most (older ones are dropped). */
const MAX_REMEMBERED_NAMES = 5000;

/** What the driver knows of one health-checked server of the running configuration. */
interface CheckedServer {
  backend: string;
  server: string;
  service: string;
  hostname: string;
  port: number;
  check: HealthCheck;
  /** In the rotation as far as health checks go (HAProxy's operational state UP). */
  healthy: boolean;
  /** When the last `healthcheck:probed` for it was emitted, or when it was first tracked (epoch ms). */
  lastProbeAt: number;
  /** The last failed probe's cause, for the reason of a DOWN transition. */
  lastError: string | null;
}

/** What the running HAProxy is. */
interface Running {
  /** The master (and its workers) as the host runs it. */
  proc: HaproxyInstance;
  /** Current worker's pid (from `show info`: as HAProxy names it, inside its container if it has one). */
  workerPid: number;
  port: number;
  host: string;
  statsPort: number;
  /** The configuration in force (neutral, with the bound port) and its model. */
  config: ProxyConfig;
  model: HaproxyModel;
  /** stop() signalled it: its exit is expected. */
  stopRequested: boolean;
}

/**
 * HAProxy's ALERT/WARNING lines (or all lines when there are none) without their
 * `[ALERT]    (1234) : config : ` prefix, joined with ` | `, for error sentences. The summary lines
 * HAProxy adds after its real errors ("Error(s) found", "Fatal errors found") are left out.
 */
export function alertText(lines: string[]): string {
  const alerts = lines.filter((l) => /^\[(ALERT|WARNING)\]/.test(l));
  const shown = (alerts.length > 0 ? alerts : lines)
    .map((l) => l.replace(/^\[(\w+)\]\s+\(\d+\)\s*:\s*(config\s*:\s*)?/, '$1: ').trim())
    .filter((l) => l !== '' && !/(Error\(s\) found in configuration file|Fatal errors found in configuration)/.test(l));
  return shown.join(' | ');
}

/**
 * The HAProxy driver (`name: 'haproxy'`). One instance runs one HAProxy; start() it, apply() new
 * configurations while it runs, stop() it. See the module comment.
 */
export class HaproxyDriver implements ProxyDriver {
  readonly name = 'haproxy' as const;
  readonly capabilities: ProxyCapabilities = {
    roundRobin: true,
    weights: true,
    leastConnections: true,
    stickyCookie: true,
    headerHash: true,
    activeHealthCheck: true,
    retry: true,
    perRequestEvents: true,
    connectionEvents: false,
    runtimeApi: true,
  };

  readonly #bus: EventBus;
  readonly #workDir: string;
  readonly #host: HaproxyHost;
  readonly #statsPortOption: number | undefined;
  readonly #readyTimeoutMs: number;
  readonly #drainTimeoutMs: number;
  readonly #cfgPath: string;
  readonly #nextPath: string;
  readonly #socketPath: string;
  #running: Running | null = null;
  #starting = false;
  #stopping = false;
  #stopped: Promise<void> | null = null;
  /** The removal of what a HAProxy that died on its own left (workers, a container); start() awaits it. */
  #died: Promise<void> = Promise.resolve();
  /** apply() and mutating console commands run one at a time, in order. */
  #queue: Promise<unknown> = Promise.resolve();
  /** A console command changed the running state: the next apply() reloads to restore haproxy.cfg. */
  #dirty = false;
  #requestSeq = 0;
  /** Recent HAProxy messages (not access lines), to explain failures. */
  #tail: string[] = [];
  /** Called with every HAProxy message line (not access lines). */
  readonly #lineWatchers = new Set<(line: string) => void>();
  /** Names seen in any configuration of this run, for log lines of old workers too. */
  #serviceOf = new Map<string, string>();
  #routerOf = new Map<string, string>();
  #hostnameOf = new Map<string, string>();
  /** `backend/server` of servers that are a VIP: their requests name the replica from X-Served-By. */
  readonly #vipServers = new Set<string>();
  #cookieOf = new Map<string, StickyCookie>();
  #frontends = new Set<string>();
  /** Health-checked servers of the running configuration, by `<backend>/<server>`. */
  #checked = new Map<string, CheckedServer>();
  /** Workers replaced by a reload (their messages are not about the running configuration). */
  #retired = new Set<number>();
  #pollTimer: NodeJS.Timeout | null = null;
  #polling = false;

  /**
   * @param opts.bus the lab's event bus.
   * @param opts.workDir directory for haproxy.cfg and the stats socket (created if missing).
   * @param opts.haproxyPath the haproxy binary (default `haproxy` on PATH).
   * @throws Error if the socket path inside workDir would be too long for a unix socket.
   */
  constructor(opts: HaproxyDriverOptions) {
    this.#bus = opts.bus;
    this.#workDir = path.resolve(opts.workDir);
    this.#host = opts.host === undefined || opts.host === 'process' ? new ProcessHaproxyHost(opts.haproxyPath) : opts.host;
    this.#statsPortOption = opts.statsPort;
    this.#readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
    this.#drainTimeoutMs = opts.drainTimeoutMs ?? 10_000;
    this.#cfgPath = path.join(this.#workDir, 'haproxy.cfg');
    this.#nextPath = path.join(this.#workDir, 'haproxy.next.cfg');
    this.#socketPath = path.join(this.#workDir, 'haproxy.sock');
    if (Buffer.byteLength(this.#socketPath) > MAX_SOCKET_PATH) {
      throw new Error(
        `The HAProxy work directory ${this.#workDir} is too long for its Runtime API socket (a unix socket path has at most ${MAX_SOCKET_PATH} bytes); use a shorter directory.`,
      );
    }
  }

  /**
   * Whether HAProxy 2.6+ can run here: runs `<haproxyPath> -v`.
   * @returns `{ok: true, version}` (e.g. `2.6.12-1+deb12u4`) or `{ok: false, reason}`, a sentence
   *   saying how to install it.
   */
  static available(haproxyPath = 'haproxy'): Promise<HaproxyAvailability> {
    return new ProcessHaproxyHost(haproxyPath).version();
  }

  /** Whether HAProxy 2.6+ can run through this driver's host (the local binary, or its container image). */
  available(): Promise<HaproxyAvailability> {
    return this.#host.version();
  }

  /** Where this driver runs HAProxy: `process` or `container`. */
  get hostKind(): HaproxyHost['kind'] {
    return this.#host.kind;
  }

  /**
   * Stops HAProxy processes an earlier lab run left behind (it crashed or was killed before
   * stop()): every `<parentDir>/<dir>/haproxy.state.json` whose master is still running (same pid
   * and start time, command line naming its haproxy.cfg) has its process group stopped. start()
   * does the same for its own workDir. Then each of `opts.hosts` that can removes what its kind
   * left anywhere (HaproxyContainerHost: proxy containers of earlier sessions). Resolves with how
   * many were stopped. Linux (/proc).
   * @param parentDir the directory holding the drivers' work directories (e.g. the lab's state directory).
   * @param opts.hosts other hosts to sweep (e.g. a HaproxyContainerHost in Docker mode).
   */
  static async sweep(parentDir: string, opts: { hosts?: HaproxyHost[] } = {}): Promise<number> {
    const local = new ProcessHaproxyHost();
    let dirs: string[];
    try {
      dirs = fs.readdirSync(parentDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => path.join(parentDir, d.name));
    } catch {
      return 0;
    }
    let n = 0;
    for (const dir of dirs) if (await local.sweepWorkDir(dir)) n++;
    for (const h of opts.hosts ?? []) n += (await h.sweepLeftovers?.(parentDir)) ?? 0;
    return n;
  }

  /** The port HAProxy listens on for the entrypoint, or null when stopped. */
  get port(): number | null {
    return this.#running?.port ?? null;
  }

  /**
   * The master's process id on this machine (process host: also the process group id), or null
   * when stopped or not visible from here (a container on a remote Docker engine).
   */
  get pid(): number | null {
    return this.#running?.proc.hostPid ?? null;
  }

  /**
   * The current worker's process id as HAProxy reports it (`show info` Pid), or null when stopped.
   * In a container this pid is inside the container's pid namespace, not one of this machine's.
   */
  get workerPid(): number | null {
    return this.#running?.workerPid ?? null;
  }

  /** The stats page, `http://127.0.0.1:<statsPort>/`, or null when stopped. */
  get statsUrl(): string | null {
    return this.#running ? `http://127.0.0.1:${this.#running.statsPort}/` : null;
  }

  /** The haproxy.cfg text in force (the file on disk holds the same), or '' when stopped. */
  get configText(): string {
    return this.#running?.model.text ?? '';
  }

  /** Absolute path of haproxy.cfg. */
  get configPath(): string {
    return this.#cfgPath;
  }

  /** Absolute path of the Runtime API socket. */
  get socketPath(): string {
    return this.#socketPath;
  }

  /**
   * The haproxy.cfg text for `config`, as this driver would run it: while running, with the bound
   * entrypoint port and the stats port in force (the Lab shows this text). Pure apart from reading
   * those two ports.
   * @throws Error (a sentence) for a value that cannot be written into haproxy.cfg.
   */
  render(config: ProxyConfig): string {
    return this.#model(config).text;
  }

  #model(config: ProxyConfig): HaproxyModel {
    const r = this.#running;
    const effective: ProxyConfig = r ? { ...config, entrypoint: { ...config.entrypoint, host: r.host, port: r.port } } : config;
    return buildHaproxyModel(effective, { statsSocket: this.#socketPath, statsPort: r?.statsPort ?? this.#statsPortOption ?? 0 });
  }

  /**
   * Starts HAProxy on `config.entrypoint` (port 0 = a free port) and resolves with the port once it
   * is ready (Runtime API answers and the port accepts connections).
   * @throws Error (rejects) with a sentence: already started, haproxy missing, a configuration
   *   HAProxy refuses (with its own error lines), the port in use, or not ready in time. Nothing is
   *   left running after a failed start.
   */
  async start(config: ProxyConfig): Promise<number> {
    if (this.#running || this.#starting) throw new Error(`HAProxy is already started (port ${this.#running?.port ?? 'pending'}); stop it first.`);
    this.#starting = true;
    try {
      await this.#died;
      const found = await this.#host.version();
      if (!found.ok) throw new Error(found.reason);
      fs.mkdirSync(this.#workDir, { recursive: true, mode: 0o700 });
      if (await this.#host.sweepWorkDir(this.#workDir)) this.#note('stderr', `[lab] stopped a leftover HAProxy of an earlier run in ${this.#workDir}`);
      const { host } = config.entrypoint;
      const autoPort = config.entrypoint.port === 0;
      const autoStats = this.#statsPortOption === undefined;
      for (let attempt = 1; ; attempt++) {
        const port = autoPort ? await freePort(host) : config.entrypoint.port;
        const statsPort = autoStats ? await freePort('127.0.0.1') : this.#statsPortOption!;
        const effective: ProxyConfig = { ...config, entrypoint: { ...config.entrypoint, port } };
        const model = buildHaproxyModel(effective, { statsSocket: this.#socketPath, statsPort });
        writeFileAtomic(this.#nextPath, model.text);
        this.#writeDrainAcls(model);
        // A first start: no earlier state, only the servers to start drained.
        writeFileAtomic(model.stateFile, serverStateText(model));
        await this.#check(this.#nextPath);
        fs.renameSync(this.#nextPath, this.#cfgPath);
        fs.rmSync(this.#socketPath, { force: true });
        try {
          await this.#spawn({ host, port, statsPort, config: effective, model });
          return port;
        } catch (err) {
          const inUse = (err as { addrInUse?: 'entrypoint' | 'stats' }).addrInUse;
          // A free port picked a moment ago may have been taken since: pick again (a few times).
          if (inUse && attempt < 3 && ((inUse === 'entrypoint' && autoPort) || (inUse === 'stats' && autoStats))) continue;
          throw err;
        }
      }
    } finally {
      this.#starting = false;
    }
  }

  /** `haproxy -c -f <file>`; rejects with HAProxy's own error lines. */
  async #check(file: string): Promise<void> {
    const r = await this.#host.check(file);
    if (!r.ok) {
      const lines = r.lines
        .filter((l) => l.trim() !== '' && !/^\[NOTICE\]/.test(l))
        .map((l) => l.split(file).join(path.basename(file)));
      throw new Error(`HAProxy refused the configuration: ${alertText(lines) || `haproxy -c exited with code ${r.code}`}`);
    }
  }

  async #spawn(s: { host: string; port: number; statsPort: number; config: ProxyConfig; model: HaproxyModel }): Promise<void> {
    this.#tail = [];
    const proc = await this.#host.start({ workDir: this.#workDir, cfgPath: this.#cfgPath, onLine: (l) => this.#onLine(l) });
    const exited = proc.exited;
    this.#remember(s.model);

    let workerPid: number;
    try {
      workerPid = await this.#awaitReady(s.host, s.port, null, exited);
    } catch (err) {
      await proc.stop(0);
      fs.rmSync(this.#socketPath, { force: true });
      const tail = alertText(this.#tail);
      const bindFailed = this.#tail.find((l) => /cannot bind socket/.test(l) && /Address already in use/.test(l));
      if (bindFailed) {
        const isStats = bindFailed.includes(`:${s.statsPort}]`) && !bindFailed.includes(`:${s.port}]`);
        const e = new Error(
          isStats
            ? `HAProxy cannot listen on 127.0.0.1:${s.statsPort} for its stats page: the port is already in use by another program.`
            : `HAProxy cannot listen on ${s.host}:${s.port}: port ${s.port} is already in use by another program. ` +
                `Choose another port with the environment variable LAB_PROXY_PORT (for example LAB_PROXY_PORT=${s.port + 1}), or stop the program that uses port ${s.port}.`,
        );
        (e as { addrInUse?: string }).addrInUse = isStats ? 'stats' : 'entrypoint';
        throw e;
      }
      throw new Error(`${errorText(err)}${tail ? ` HAProxy said: ${tail}` : ''}`);
    }
    const running: Running = { proc, workerPid, port: s.port, host: s.host, statsPort: s.statsPort, config: structuredClone(s.config), model: s.model, stopRequested: false };
    this.#running = running;
    this.#retired.clear();
    this.#checked.clear();
    this.#trackHealth(s.model);
    void exited.then((info) => {
      if (this.#running !== running || running.stopRequested) return;
      // Not asked to stop: HAProxy died (killed from outside, or crashed).
      this.#running = null;
      this.#stopPolling();
      fs.rmSync(this.#socketPath, { force: true });
      // Workers that outlived their master (or the container left behind) go too.
      this.#died = proc.stop(0).catch((err: unknown) => this.#note('stderr', `[lab] ${errorText(err)}`));
      const reason = info.signal ? `signal ${info.signal}` : `exit code ${info.code}`;
      this.#note('stderr', `HAProxy exited unexpectedly (${reason}); the proxy is down until it is started again.`);
      // The Lab shows it in its status and starts HAProxy again on reset.
      this.#bus.emit('proxy:exited', { driver: this.name, reason, at: Date.now() });
    });
  }

  /**
   * Awaits a worker other than `oldWorker` answering `show info` on the socket, and the entrypoint
   * accepting a connection. Resolves with the worker's pid.
   */
  async #awaitReady(host: string, port: number, oldWorker: number | null, exited: Promise<unknown>): Promise<number> {
    const deadline = Date.now() + this.#readyTimeoutMs;
    let gone = false;
    void exited.then(() => (gone = true));
    let backoff = 10;
    let last = 'the Runtime API socket did not answer yet';
    for (;;) {
      if (gone) throw new Error('HAProxy exited before it was ready.');
      if (Date.now() > deadline) throw new Error(`HAProxy was not ready within ${this.#readyTimeoutMs} ms: ${last}.`);
      try {
        const info = parseShowInfo(await runtimeApiRequest(this.#socketPath, 'show info', 2000));
        const pid = Number(info.get('Pid'));
        if (!Number.isInteger(pid) || pid <= 0) last = '`show info` named no worker';
        else if (pid === oldWorker) last = `the old worker ${pid} still answers`;
        else if (!(await canConnect(host, port, 2000))) last = `${host}:${port} did not accept a connection`;
        else return pid;
      } catch (err) {
        last = errorText(err);
      }
      await Promise.race([delay(backoff), exited]);
      backoff = Math.min(backoff * 2, 100);
    }
  }

  /**
   * Makes the running HAProxy use `config` without failing requests in flight. The entrypoint is
   * not changed (restart the proxy for that). Unchanged text: nothing happens. Otherwise the text
   * is checked with `haproxy -c` first; then the Runtime API or a reload (runtime-plan.ts).
   * @throws Error (rejects) with HAProxy's error text for a configuration it refuses (the running
   *   configuration and haproxy.cfg stay as they were), or when HAProxy is not running.
   */
  apply(config: ProxyConfig): Promise<void> {
    return this.#enqueue(() => this.#apply(config));
  }

  #enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#queue.then(fn, fn);
    this.#queue = p.catch(() => undefined);
    return p;
  }

  async #apply(config: ProxyConfig): Promise<void> {
    const r = this.#running;
    if (!r || this.#stopping) throw new Error('HAProxy is not running; start the proxy before applying a configuration.');
    const model = this.#model(config);
    if (model.text === r.model.text && !this.#dirty) return;
    writeFileAtomic(this.#nextPath, model.text);
    // Read by the next worker only (the running one keeps its ACLs in memory; add/del acl change those).
    this.#writeDrainAcls(model);
    try {
      await this.#check(this.#nextPath);
    } catch (err) {
      fs.rmSync(this.#nextPath, { force: true });
      throw err;
    }
    const plan = this.#dirty ? { kind: 'reload' as const, reason: 'a console command changed the running state', disable: [] } : planRuntimeChanges(r.model, model);
    if (plan.kind === 'none') {
      fs.rmSync(this.#nextPath, { force: true });
      return;
    }
    this.#remember(model);
    if (plan.kind === 'runtime') {
      try {
        for (const step of plan.steps) await this.#runStep(step);
        fs.renameSync(this.#nextPath, this.#cfgPath);
        r.config = structuredClone({ ...config, entrypoint: r.config.entrypoint });
        r.model = model;
        this.#trackHealth(model);
        return;
      } catch (err) {
        this.#note('stdout', `[lab] the Runtime API could not finish (${errorText(err)}); reloading instead`);
      }
    } else {
      // Servers leaving: no new request for them from the worker being replaced either; servers
      // turning to drain: drained there too.
      for (const d of plan.disable) await this.#command(`disable server ${d.backend}/${d.server}`).catch(() => undefined);
      for (const step of plan.drain ?? []) for (const c of stepCommands(step)) await this.#command(c).catch(() => undefined);
      this.#note('stdout', `[lab] reload: ${plan.reason}`);
    }
    await this.#reload(r, config, model);
    this.#trackHealth(model);
  }

  /** Writes the drain ACL file of every sticky backend of `model` (render.ts). */
  #writeDrainAcls(model: HaproxyModel): void {
    for (const b of model.backends) if (b.drainAcl) writeFileAtomic(b.drainAcl, drainAclText(b));
  }

  /**
   * Writes the server-state file the next worker loads: the running worker's states (`show servers
   * state`: DOWN servers stay DOWN) with the administrative states and weights of `model`.
   */
  async #writeServerState(model: HaproxyModel): Promise<void> {
    let rows: ReturnType<typeof parseServersState> = [];
    try {
      rows = parseServersState(await runtimeApiRequest(this.#socketPath, 'show servers state', 3000));
    } catch (err) {
      this.#note('stderr', `[lab] could not read the server states before the reload (${errorText(err)}); servers start UP in the new worker`);
    }
    writeFileAtomic(model.stateFile, serverStateText(model, rows));
  }

  async #reload(r: Running, config: ProxyConfig, model: HaproxyModel): Promise<void> {
    const previous = r.model.text;
    const oldWorker = r.workerPid;
    // The replaced worker logs `Proxy <frontend> stopped` once it has stopped accepting connections.
    // (After a Runtime API command HAProxy 2.6 writes `CLI : ` before the text: parseHaproxyMessage drops it.)
    const stoppedText = `Proxy ${r.model.names.frontend} stopped`;
    const oldStopped = this.#watchFor((l) => {
      const m = parseHaproxyMessage(l);
      return m !== null && m.pid === oldWorker && m.text.startsWith(stoppedText);
    });
    await this.#writeServerState(model);
    fs.renameSync(this.#nextPath, this.#cfgPath);
    const tailBefore = this.#tail.length;
    this.#retired.add(oldWorker);
    try {
      await r.proc.signal('SIGUSR2');
      r.workerPid = await this.#awaitReady(r.host, r.port, oldWorker, r.proc.exited);
    } catch (err) {
      oldStopped.cancel();
      this.#retired.delete(oldWorker);
      // The master keeps the old worker when the new configuration fails to load: so does the file.
      writeFileAtomic(this.#cfgPath, previous);
      const said = alertText(this.#tail.slice(tailBefore));
      throw new Error(`HAProxy did not reload: ${errorText(err)}${said ? ` HAProxy said: ${said}` : ''}`);
    }
    r.config = structuredClone({ ...config, entrypoint: r.config.entrypoint });
    r.model = model;
    this.#dirty = false;
    // Until the old worker stops accepting, a new connection could still reach it (and its old
    // configuration): await that too, so that after apply() every new connection gets the new one.
    const deadline = Date.now() + this.#readyTimeoutMs;
    let backoff = 5;
    while (!oldStopped.seen && Date.now() < deadline) {
      if (!(await r.proc.alive(oldWorker))) break; // already gone
      await Promise.race([oldStopped.promise, delay(backoff)]);
      backoff = Math.min(backoff * 2, 100);
    }
    oldStopped.cancel();
  }

  /** Watches HAProxy's message lines for one that `match`es. */
  #watchFor(match: (line: string) => boolean): { promise: Promise<void>; seen: boolean; cancel(): void } {
    let resolve!: () => void;
    const w = {
      promise: new Promise<void>((r) => (resolve = r)),
      seen: false,
      cancel: () => this.#lineWatchers.delete(watcher),
    };
    const watcher = (line: string) => {
      if (!match(line)) return;
      w.seen = true;
      this.#lineWatchers.delete(watcher);
      resolve();
    };
    this.#lineWatchers.add(watcher);
    return w;
  }

  /** Sends one Runtime API command the driver needs; rejects unless HAProxy's answer means success. */
  async #command(command: string): Promise<string> {
    this.#note('stdout', `[lab] Runtime API: ${command}`);
    const answer = (await runtimeApiRequest(this.#socketPath, command)).trim();
    const ok = command.startsWith('add server')
      ? /New server registered/.test(answer)
      : command.startsWith('del server')
        ? /Server deleted/.test(answer)
        : command.startsWith('del acl')
          ? answer === '' || /not found/i.test(answer) // already gone: what was asked
          : answer === '';
    if (!ok) throw new Error(`"${command}" answered: ${answer || '(nothing)'}`);
    return answer;
  }

  async #runStep(step: RuntimeStep): Promise<void> {
    const commands = stepCommands(step);
    if (step.op !== 'remove') {
      for (const c of commands) await this.#command(c);
      return;
    }
    const [first, second] = commands;
    // Removal: maintenance first (no new request; those in flight finish), then delete once drained.
    await this.#command(first);
    const deadline = Date.now() + this.#drainTimeoutMs;
    let backoff = 10;
    let cut = false;
    for (;;) {
      const rows = parseServersConn(await runtimeApiRequest(this.#socketPath, `show servers conn ${step.backend}`));
      const row = rows.find((x) => x.server === step.server);
      if (!row || row.usedCur === 0) {
        const answer = (await runtimeApiRequest(this.#socketPath, second)).trim();
        if (/Server deleted/.test(answer) || !row) {
          this.#note('stdout', `[lab] Runtime API: ${second}`);
          return;
        }
      }
      if (Date.now() > deadline) {
        if (cut) throw new Error(`server ${step.backend}/${step.server} could not be deleted after draining`);
        await this.#command(`shutdown sessions server ${step.backend}/${step.server}`);
        cut = true;
      }
      await delay(backoff);
      backoff = Math.min(backoff * 2, 100);
    }
  }

  /**
   * Runs one Runtime API command from the lesson console and resolves with HAProxy's answer.
   * Only the allow-listed commands pass (runtime-api.ts ALLOWED_COMMANDS). A command that changes
   * the running state (enable/disable/set/add/del server) makes the next apply() reload, so the
   * running HAProxy matches haproxy.cfg again.
   * @throws Error with a sentence listing the allowed commands, or when HAProxy is not running.
   */
  async runtimeCommand(command: string): Promise<string> {
    const checked = checkRuntimeCommand(command);
    const send = async () => {
      if (!this.#running || this.#stopping) throw new Error('HAProxy is not running, so its Runtime API is not either; switch the lab to haproxy first.');
      const answer = await runtimeApiRequest(this.#socketPath, checked.command);
      if (checked.mutates) this.#dirty = true;
      return answer;
    };
    return checked.mutates ? this.#enqueue(send) : send();
  }

  /**
   * Stops HAProxy: SIGTERM to the master and its process group (old workers too), SIGKILL after
   * 3 s, and resolves once every process of the group is gone and the socket removed. Requests in
   * flight are cut. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop().finally(() => {
      this.#stopped = null;
    });
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#stopping = true;
    try {
      await this.#queue;
      const r = this.#running;
      if (!r) return;
      r.stopRequested = true;
      try {
        await r.proc.stop(3000);
      } finally {
        this.#running = null;
        this.#stopPolling();
        this.#checked.clear();
      }
      fs.rmSync(this.#socketPath, { force: true });
      fs.rmSync(this.#nextPath, { force: true });
      fs.rmSync(r.model.stateFile, { force: true });
      for (const b of r.model.backends) if (b.drainAcl) fs.rmSync(b.drainAcl, { force: true });
    } finally {
      this.#stopping = false;
    }
  }

  // ------------------------------------------------------------------ health checks and drain

  /**
   * Resolves true once HAProxy shows no request in flight (`scur`) or queued (`qcur`) on `server`
   * (a replica hostname; typically one apply() set to `drain`), read from `show stat` every 10 to
   * 100 ms; at once when it has none, is not in the running configuration, or HAProxy is stopped.
   * False when some are still there after `timeoutMs`. Only the current worker is asked: a worker
   * that a reload replaced a moment earlier is not (each of its keep-alive client connections
   * takes at most one more request, with the old configuration).
   */
  drained(server: string, timeoutMs: number): Promise<boolean> {
    return pollUntil(Date.now() + Math.max(0, timeoutMs), async () => {
      const r = this.#running;
      if (!r) return true;
      const where = [...r.model.names.serversOf].flatMap(([svc, list]) =>
        list.filter((x) => x.hostname === server).map((x) => ({ backend: r.model.names.backendOf.get(svc)!, server: x.name })),
      );
      if (where.length === 0) return true;
      try {
        const rows = parseShowStat(await runtimeApiRequest(this.#socketPath, 'show stat', 2000));
        let busy = 0;
        for (const w of where) {
          const row = rows.find((x) => x.backend === w.backend && x.server === w.server);
          if (row) busy += row.scur + row.qcur;
        }
        return busy === 0;
      } catch {
        return false; // a reload in progress: ask again
      }
    });
  }

  /**
   * The health-checked servers of `model` (after start and every apply): servers that stay keep
   * what is known of them, new ones start healthy (HAProxy puts a new server UP and lets its
   * checks take it out). A server whose backend no longer has a check and was out is back in the
   * rotation: `replica:health-changed` healthy, reason `health check off`. Starts or stops polling.
   */
  #trackHealth(model: HaproxyModel): void {
    const next = new Map<string, CheckedServer>();
    for (const b of model.backends) {
      if (!b.healthCheck) continue;
      for (const s of b.servers) {
        const key = `${b.name}/${s.name}`;
        const known = this.#checked.get(key);
        next.set(key, {
          backend: b.name,
          server: s.name,
          service: b.service,
          hostname: s.hostname,
          port: s.port,
          check: b.healthCheck,
          healthy: known?.healthy ?? true,
          lastProbeAt: known?.lastProbeAt ?? Date.now(),
          lastError: known?.lastError ?? null,
        });
      }
    }
    for (const [key, old] of this.#checked) {
      if (next.has(key) || old.healthy) continue;
      const stays = model.backends.some((b) => b.name === old.backend && b.servers.some((s) => s.name === old.server));
      if (stays) this.#healthChanged(old, true, 'health check off');
    }
    this.#checked = next;
    if (next.size > 0) this.#startPolling();
    else this.#stopPolling();
  }

  /** A probe or an UP/DOWN message of the current worker. */
  #onHealth(h: HealthMessage): void {
    const key = `${h.backend}/${h.server}`;
    const known = this.#checked.get(key);
    const service = known?.service ?? this.#serviceOf.get(h.backend) ?? h.backend;
    const hostname = known?.hostname ?? this.#hostnameOf.get(key) ?? h.server;
    if (h.kind === 'probe') {
      const error = h.ok ? undefined : probeError(h.reason, h.code, h.info);
      const at = Date.now();
      this.#bus.emit('healthcheck:probed', { service, replica: hostname, ok: h.ok, ms: h.durationMs, status: h.code, ...(error !== undefined ? { error } : {}), at });
      if (known) {
        known.lastProbeAt = at;
        if (error !== undefined) known.lastError = error;
      }
      return;
    }
    if (!known) return;
    this.#healthChanged(known, h.up, h.up ? 'health check passed' : `health check failed: ${known.lastError ?? h.reason ?? 'error'}`);
  }

  #healthChanged(c: CheckedServer, healthy: boolean, reason: string): void {
    healthChanged(this.#bus, c, healthy, reason);
  }

  #startPolling(): void {
    if (this.#pollTimer || this.#polling) return;
    this.#schedulePoll();
  }

  #stopPolling(): void {
    if (this.#pollTimer) clearTimeout(this.#pollTimer);
    this.#pollTimer = null;
  }

  #schedulePoll(): void {
    let every = Infinity;
    for (const c of this.#checked.values()) every = Math.min(every, c.check.intervalMs);
    if (!Number.isFinite(every) || !this.#running) return;
    this.#pollTimer = setTimeout(() => {
      this.#pollTimer = null;
      this.#polling = true;
      void this.#poll().finally(() => {
        this.#polling = false;
        if (!this.#pollTimer && this.#checked.size > 0 && this.#running && !this.#stopping) this.#schedulePoll();
      });
    }, every);
    this.#pollTimer.unref();
  }

  /**
   * Reads `show stat` once. HAProxy logs a probe only when it moves a server's health (from the first
   * failure to DOWN, from the first success to UP); a server that stays UP (or DOWN) is probed
   * without a trace. So, for a server whose health counter is at an end (fully up or fully down),
   * the last probe HAProxy ran (check_status, check_code, check_duration) is emitted as a
   * `healthcheck:probed` once per interval + duration since the previous probe event: one event per
   * probe on average, timed when read (up to one interval late), not when HAProxy ran it. The
   * state (UP/DOWN) seen here also corrects a missed transition.
   */
  async #poll(): Promise<void> {
    if (!this.#running || this.#checked.size === 0) return;
    let rows: StatServerRow[];
    try {
      rows = parseShowStat(await runtimeApiRequest(this.#socketPath, 'show stat', 2000));
    } catch {
      return; // a reload or a stop in progress
    }
    const now = Date.now();
    for (const row of rows) {
      const c = this.#checked.get(`${row.backend}/${row.server}`);
      if (!c || row.status.startsWith('MAINT') || row.status === 'no check') continue;
      if (row.checkStatus === '' || row.checkStatus === 'INI' || row.checkStatus === 'UNK') continue;
      const ok = /^L\dOK/.test(row.checkStatus);
      const error = ok ? undefined : statError(row);
      if (!ok && error) c.lastError = error;
      const healthy = !row.status.startsWith('DOWN');
      if (healthy !== c.healthy) this.#healthChanged(c, healthy, healthy ? 'health check passed' : `health check failed: ${c.lastError ?? row.checkDesc}`);
      const max = (row.checkRise ?? c.check.rise) + (row.checkFall ?? c.check.fall) - 1;
      const atEnd = row.checkHealth === 0 || row.checkHealth === max;
      const period = c.check.intervalMs + (row.checkDuration ?? 0);
      if (!atEnd || now - c.lastProbeAt < period * 0.9) continue;
      // While a check runs, HAProxy has begun resetting the last one's code: read it at the next
      // poll, unless checks are always running when read (a probe that hangs until its timeout).
      if (row.checkRunning && now - c.lastProbeAt < 2 * (c.check.intervalMs + c.check.timeoutMs)) continue;
      // A passing HTTP probe always has its status code; none means HAProxy was resetting it for
      // the next check when read (seen under load): read it at the next poll.
      if (ok && !row.checkCode) continue;
      c.lastProbeAt = now;
      this.#bus.emit('healthcheck:probed', {
        service: c.service,
        replica: c.hostname,
        ok,
        ms: row.checkDuration ?? 0,
        status: row.checkCode === 0 ? null : row.checkCode,
        ...(error !== undefined ? { error } : {}),
        at: now,
      });
    }
  }

  // ------------------------------------------------------------------ output

  #note(stream: 'stdout' | 'stderr', text: string): void {
    this.#bus.emit('log:line', { source: 'proxy', stream, text, at: Date.now() });
  }

  #onLine(text: string): void {
    const log = parseAccessLog(text);
    if (!log) {
      const message = parseHaproxyMessage(text);
      const health = parseHealthMessage(message ? message.text : text);
      if (health) {
        // The same message comes twice: on stderr with the writer's pid, and through `log stdout`
        // without it. Only the first is an event, and only from the current worker.
        if (message && message.pid !== this.#running?.proc.masterPid && !this.#retired.has(message.pid)) this.#onHealth(health);
        this.#note('stderr', text);
        return;
      }
      this.#tail.push(text);
      if (this.#tail.length > TAIL_LINES * 4) this.#tail.splice(0, this.#tail.length - TAIL_LINES);
      this.#note('stderr', text);
      for (const w of [...this.#lineWatchers]) w(text);
      return;
    }
    this.#bus.emit('request:completed', this.#requestEvent(log));
    this.#bus.emit('log:line', { source: 'proxy', stream: 'access', text, at: Date.now() });
  }

  /** Remembers the names of a configuration, so log lines map back to services and hostnames. */
  #remember(model: HaproxyModel): void {
    if (this.#hostnameOf.size > MAX_REMEMBERED_NAMES) {
      this.#serviceOf.clear();
      this.#routerOf.clear();
      this.#hostnameOf.clear();
      this.#cookieOf.clear();
    }
    const n = model.names;
    this.#frontends.add(n.frontend);
    for (const b of model.backends) for (const s of b.servers) if (s.vip) this.#vipServers.add(`${b.name}/${s.name}`);
    for (const [k, v] of n.serviceOf) this.#serviceOf.set(k, v);
    for (const [k, v] of n.routerOf) this.#routerOf.set(k, v);
    for (const [k, v] of n.hostnameOf) this.#hostnameOf.set(k, v);
    for (const b of model.backends) {
      if (b.cookie) this.#cookieOf.set(b.name, b.cookie);
      else this.#cookieOf.delete(b.name);
    }
  }

  #requestEvent(log: HaproxyAccessLog): RequestCompleted {
    const router = log.router === null ? null : (this.#routerOf.get(log.router) ?? log.router);
    const routed = router !== null || !this.#frontends.has(log.backend);
    const service = routed ? (this.#serviceOf.get(log.backend) ?? log.backend) : null;
    const serverKey = `${log.backend}/${log.server}`;
    // Through a VIP the server is the VIP: the replica is the one that said so (X-Served-By).
    const viaVip = this.#vipServers.has(serverKey);
    const replica = log.server === '<NOSRV>' ? null : viaVip ? (log.servedBy ?? null) : (this.#hostnameOf.get(serverKey) ?? log.server);
    const error = errorOf(log);
    const cookie = this.#cookieOf.get(log.backend);
    let stickyCookie: string | undefined;
    if (cookie && replica !== null && log.server !== '<NOSRV>') {
      // %tsc characters 3 and 4: the request's cookie (V = valid) and what HAProxy did (I = inserted).
      if (log.terminationState[3] === 'I') stickyCookie = `${cookie.name}=${log.server}; path=/`;
      else if (log.terminationState[2] === 'V') stickyCookie = `${cookie.name}=${log.server}`;
    }
    // %bi:%bp is the source address of the last connect attempt; Tc = -1: it never connected.
    const upstreamConnId = log.timers.Tc >= 0 ? log.upstream : null;
    return {
      id: ++this.#requestSeq,
      at: log.startMs,
      method: log.method,
      path: log.path,
      router,
      service,
      replica,
      hostname: log.servedBy ?? (upstreamConnId !== null && replica !== null ? replica : null),
      // -1: no response was sent (the client went away first); logged as 499 like Traefik.
      status: log.status < 0 ? 499 : log.status,
      ms: Math.max(0, log.timers.Ta),
      clientConnId: log.client,
      upstreamConnId,
      ...(stickyCookie !== undefined ? { stickyCookie } : {}),
      ...(log.retries > 0 || log.redispatched ? { retried: true } : {}),
      ...(error !== undefined ? { error } : {}),
    };
  }
}

/** A failed check's cause from `show stat`, in the embedded proxy's words where they exist. */
function statError(row: StatServerRow): string {
  if (/TOUT$/.test(row.checkStatus)) return 'timeout';
  if (row.checkStatus === 'L4CON' && /refused/i.test(row.lastCheck)) return 'ECONNREFUSED';
  if (row.checkStatus === 'L7STS' && row.checkCode !== null) return `status ${row.checkCode}`;
  return probeError(row.checkDesc || row.checkStatus, row.checkCode, row.lastCheck || null);
}
