/**
 * The Traefik driver: real Traefik v3 in front of the replicas, through its file provider.
 *
 * - start(): the static configuration (render.ts renderTraefikStatic) is written to
 *   `<workDir>/traefik.yml` and the dynamic one (renderTraefikDynamic) to `<workDir>/dynamic/lab.yml`;
 *   Traefik is started by a TraefikHost (traefik-host.ts: a local `traefik` binary by default,
 *   `traefik --configFile=<workDir>/traefik.yml`, spawned with an argument array). Ready = `GET /ping`
 *   answers 200 on the API entrypoint, the lab's entrypoint accepts a TCP connection AND the API
 *   shows the configuration; all awaited, nothing slept for.
 * - apply(): the dynamic YAML is written atomically (a temp file `lab.yml.<pid>.tmp`, which the file
 *   provider ignores for its extension, renamed over `lab.yml` in the watched directory), then the
 *   driver polls Traefik's API (`GET /api/rawdata`: the routers and services of `/api/http/routers`
 *   and `/api/http/services` in one consistent answer, https://doc.traefik.io/traefik/operations/api/#endpoints)
 *   until every router and service of the new configuration is there, enabled, with the same rule,
 *   priority, service and server URLs, and no other `@file` router or service is left. A router or
 *   service Traefik flags with an error rejects apply() with Traefik's words. A change of the
 *   entrypoint (its idle timeout is static configuration) restarts Traefik on the same port: open
 *   connections are cut.
 * - events: every JSON access-log line (access-log.ts) of the lab's entrypoint becomes one
 *   `request:completed` and one `log:line` (source `proxy`, stream `access`); Traefik's own log lines
 *   are `log:line` stream `stderr`. Requests to the API/dashboard/ping entrypoint are not events.
 *   No connection events (Traefik does not report single TCP connections) and no
 *   `healthcheck:probed` (Traefik does not report single probes).
 * - health checks (https://doc.traefik.io/traefik/routing/services/#health-check): Traefik takes a
 *   server out on one failed probe and back on one good probe (no fall/rise). The driver reads each
 *   checked service's `serverStatus` (`UP`/`DOWN` per server URL) from the API every poll interval
 *   and emits `replica:health-changed` on every change (reasons `health check failed`,
 *   `health check passed`, `health check off`; Traefik does not say why a probe failed).
 * - drain: Traefik has no server state, so a server set to `drain` (or weight 0) is left out of the
 *   list (render.ts): no new request goes to it, sticky clients are re-pinned, and requests in flight
 *   finish. drained() knows when they have: see its comment.
 * - statsUrl: the dashboard (`http://127.0.0.1:<apiPort>/dashboard/`), behind basic auth with a user
 *   and password generated per driver ({@link TraefikDriver.dashboardCredentials}).
 *
 * Capabilities: no least-connections and no header hash (Traefik v3's servers load balancer is
 * weighted round-robin only; render.ts renders round-robin and says so), no Runtime API console.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { z } from 'zod';
import type { EventBus } from '../../events.ts';
import type { ProxyCapabilities, ProxyConfig, ProxyDriver } from '../../seams.ts';
import { InFlightTracker, normalizeUrl, parseTraefikAccessLog, requestEventOf, withoutProvider, type TraefikAccessLog } from './access-log.ts';
import {
  API_ENTRYPOINT,
  DRAIN_MARKER,
  htpasswdSha1,
  renderTraefikDynamic,
  renderTraefikStatic,
  traefikDynamicModel,
} from './render.ts';
import { canConnect, errorText, freePort, healthChanged, pollUntil, writeFileAtomic } from '../driver-support.ts';
import { ProcessTraefikHost, type TraefikAvailability, type TraefikHost, type TraefikInstance } from './traefik-host.ts';

export interface TraefikDriverOptions {
  /** Where every event goes. */
  bus: EventBus;
  /** Directory for traefik.yml and the watched `dynamic/` directory (created, mode 0700). */
  workDir: string;
  /** Where Traefik runs. Default: `new ProcessTraefikHost()` (a `traefik` binary on PATH). */
  host?: TraefikHost;
  /** Port of the API/dashboard/ping entrypoint on 127.0.0.1. Default: a free port chosen at start. */
  apiPort?: number;
  /** How long start() and apply() wait for Traefik to show the configuration, in ms. Default 20000. */
  readyTimeoutMs?: number;
  /** How often the health of checked servers is read from the API, in ms. Default: half the shortest check interval, 250..2000. */
  healthPollMs?: number;
  /** The dashboard's basic-auth user. Default `lab`. */
  dashboardUser?: string;
}

/** The dynamic file's name in the watched directory. */
export const DYNAMIC_FILE = 'lab.yml';
/** The static configuration's name in the work directory. */
export const STATIC_FILE = 'traefik.yml';
/** Traefik's own log lines kept to explain a failed start or apply. */
const TAIL_LINES = 12;
/** Server names remembered for log lines of replaced configurations, at most. */
const MAX_REMEMBERED = 5000;

/** The parts of `GET /api/rawdata` the driver reads. */
const RawData = z.object({
  routers: z
    .record(
      z.string(),
      z.object({ rule: z.string().optional(), service: z.string().optional(), priority: z.number().optional(), status: z.string().optional(), error: z.array(z.string()).optional() }).loose(),
    )
    .optional(),
  services: z
    .record(
      z.string(),
      z
        .object({
          loadBalancer: z.object({ servers: z.array(z.object({ url: z.string() }).loose()).optional() }).loose().optional(),
          status: z.string().optional(),
          error: z.array(z.string()).optional(),
          serverStatus: z.record(z.string(), z.string()).optional(),
        })
        .loose(),
    )
    .optional(),
});
type RawData = z.infer<typeof RawData>;

/** One health-checked server of the running configuration. */
interface CheckedServer {
  service: string;
  hostname: string;
  url: string;
  port: number;
  healthy: boolean;
}

interface Running {
  instance: TraefikInstance;
  host: string;
  port: number;
  apiPort: number;
  /** The configuration in force, with the bound port. */
  config: ProxyConfig;
  /** The dynamic YAML in force (the file holds the same). */
  dynamicText: string;
  stopRequested: boolean;
}

/** The address to connect to for an entrypoint bound to `host` (any address -> loopback). */
function connectHost(host: string): string {
  if (host === '' || host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '::1';
  return host;
}

/** One GET with a timeout; resolves with status and body, rejects on a network error. */
function get(url: string, headers: Record<string, string>, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { ...headers, connection: 'close' }, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/**
 * The Traefik driver (`name: 'traefik'`). One instance runs one Traefik; start() it, apply() new
 * configurations while it runs, stop() it. See the module comment.
 */
export class TraefikDriver implements ProxyDriver {
  readonly name = 'traefik' as const;
  readonly capabilities: ProxyCapabilities = {
    roundRobin: true,
    weights: true,
    leastConnections: false,
    stickyCookie: true,
    headerHash: false,
    activeHealthCheck: true,
    retry: true,
    perRequestEvents: true,
    connectionEvents: false,
    runtimeApi: false,
  };

  readonly #bus: EventBus;
  readonly #workDir: string;
  readonly #dynamicDir: string;
  readonly #host: TraefikHost;
  readonly #apiPortOption: number | undefined;
  readonly #readyTimeoutMs: number;
  readonly #healthPollOption: number | undefined;
  readonly #user: string;
  readonly #password: string;
  readonly #users: string[];
  #running: Running | null = null;
  #starting = false;
  #stopping = false;
  #stopped: Promise<void> | null = null;
  /** apply() calls run one at a time, in order. */
  #queue: Promise<unknown> = Promise.resolve();
  #requestSeq = 0;
  #tail: string[] = [];
  /** `<service> <url>` -> the server (replica) it is, for log lines of this and earlier configurations. */
  readonly #servers = new Map<string, { name: string; vip: boolean }>();
  readonly #cookies = new Map<string, string>();
  #checked = new Map<string, CheckedServer>();
  #pollTimer: NodeJS.Timeout | null = null;
  readonly #tracker = new InFlightTracker();
  /** Drain markers sent and not yet logged: nonce -> resolve(RequestCount). */
  readonly #markers = new Map<string, (count: number | null) => void>();
  #markerSeq = 0;

  /**
   * @param opts.bus the lab's event bus.
   * @param opts.workDir directory for traefik.yml and `dynamic/` (created if missing).
   * @param opts.host where Traefik runs (default: the local `traefik` binary).
   */
  constructor(opts: TraefikDriverOptions) {
    this.#bus = opts.bus;
    this.#workDir = path.resolve(opts.workDir);
    this.#dynamicDir = path.join(this.#workDir, 'dynamic');
    this.#host = opts.host ?? new ProcessTraefikHost();
    this.#apiPortOption = opts.apiPort;
    this.#readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
    this.#healthPollOption = opts.healthPollMs;
    this.#user = opts.dashboardUser ?? 'lab';
    this.#password = randomBytes(12).toString('base64url');
    this.#users = [htpasswdSha1(this.#user, this.#password)];
  }

  /**
   * Whether Traefik v3 can run here through `host` (default: `traefik version` on PATH).
   * @returns `{ok: true, version}` (e.g. `3.1.2`) or `{ok: false, reason}`, a sentence such as
   *   "Traefik is not installed: put a `traefik` v3 binary on PATH or run the lab with --runtime
   *   docker where the traefik image can be pulled."
   */
  static available(host: TraefikHost = new ProcessTraefikHost()): Promise<TraefikAvailability> {
    return host.version();
  }

  /**
   * Stops Traefiks an earlier lab run left behind (it crashed or was killed before stop()): every
   * `<parentDir>/<dir>` whose Traefik still runs is swept by `host` (sweepWorkDir), then `host`
   * removes what its kind left anywhere when it can (sweepLeftovers: a container host's Traefik
   * containers of ended labs). Resolves with how many were stopped or removed.
   * @param parentDir the directory holding the drivers' work directories (e.g. the lab's state directory).
   * @param host where Traefik ran: the local binary (default), or lab/runtime/docker/traefik-container.ts's TraefikContainerHost.
   */
  static async sweep(parentDir: string, host: TraefikHost = new ProcessTraefikHost()): Promise<number> {
    let dirs: string[] = [];
    try {
      dirs = fs.readdirSync(parentDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => path.join(parentDir, d.name));
    } catch {
      // no state directory yet: nothing of ours in it
    }
    let n = 0;
    for (const dir of dirs) if (await host.sweepWorkDir(dir)) n++;
    return n + ((await host.sweepLeftovers?.()) ?? 0);
  }

  /** The port Traefik listens on for the lab's entrypoint, or null when stopped. */
  get port(): number | null {
    return this.#running?.port ?? null;
  }

  /** The dashboard, `http://127.0.0.1:<apiPort>/dashboard/` (basic auth), or null when stopped. */
  get statsUrl(): string | null {
    return this.#running ? `http://127.0.0.1:${this.#running.apiPort}/dashboard/` : null;
  }

  /** Traefik's health endpoint, `http://127.0.0.1:<apiPort>/ping` (`OK`, no auth), or null when stopped. */
  get pingUrl(): string | null {
    return this.#running ? `http://127.0.0.1:${this.#running.apiPort}/ping` : null;
  }

  /** The dashboard's basic-auth user and password (generated per driver, never written in clear). */
  get dashboardCredentials(): { user: string; password: string } {
    return { user: this.#user, password: this.#password };
  }

  /** The dashboard's login while Traefik runs (ProxyDriver.statsCredentials), else null. */
  get statsCredentials(): { user: string; password: string } | null {
    return this.#running ? this.dashboardCredentials : null;
  }

  /** Absolute path of the dynamic configuration file the file provider watches. */
  get dynamicPath(): string {
    return path.join(this.#dynamicDir, DYNAMIC_FILE);
  }

  /** Absolute path of the static configuration file. */
  get staticPath(): string {
    return path.join(this.#workDir, STATIC_FILE);
  }

  /**
   * The dynamic configuration YAML for `config`, as this driver writes it (with the bound port while
   * running, the dashboard router and the drain marker). Pure apart from reading the running port.
   * @throws Error (a sentence) for a value that cannot be written (render.ts).
   */
  render(config: ProxyConfig): string {
    return renderTraefikDynamic(this.#effective(config), { dashboard: { users: this.#users }, drainMarker: true });
  }

  #effective(config: ProxyConfig): ProxyConfig {
    const r = this.#running;
    return r ? { ...config, entrypoint: { ...config.entrypoint, host: r.host, port: r.port } } : config;
  }

  /**
   * Starts Traefik on `config.entrypoint` (port 0 = a free port) and resolves with the port once it
   * is ready (ping answers, the port accepts connections, the API shows the configuration).
   * @throws Error (rejects) with a sentence: already started, Traefik missing or too old (the
   *   available() reason), a configuration Traefik flags, the port in use, or not ready in time.
   *   Nothing is left running after a failed start.
   */
  async start(config: ProxyConfig): Promise<number> {
    if (this.#running || this.#starting) throw new Error(`Traefik is already started (port ${this.#running?.port ?? 'pending'}); stop it first.`);
    this.#starting = true;
    try {
      const found = await this.#host.version();
      if (!found.ok) throw new Error(found.reason);
      fs.mkdirSync(this.#dynamicDir, { recursive: true, mode: 0o700 });
      if (await this.#host.sweepWorkDir(this.#workDir)) this.#note('stderr', `[lab] stopped a leftover Traefik of an earlier run in ${this.#workDir}`);
      const autoPort = config.entrypoint.port === 0;
      const autoApi = this.#apiPortOption === undefined;
      for (let attempt = 1; ; attempt++) {
        const port = autoPort ? await freePort(config.entrypoint.host || '0.0.0.0') : config.entrypoint.port;
        const apiPort = autoApi ? await freePort('127.0.0.1') : this.#apiPortOption!;
        try {
          await this.#launch({ ...config, entrypoint: { ...config.entrypoint, port } }, apiPort);
          return port;
        } catch (err) {
          const inUse = (err as { addrInUse?: 'entrypoint' | 'api' }).addrInUse;
          // A free port picked a moment ago may have been taken since: pick again (a few times).
          if (inUse && attempt < 3 && ((inUse === 'entrypoint' && autoPort) || (inUse === 'api' && autoApi))) continue;
          throw err;
        }
      }
    } finally {
      this.#starting = false;
    }
  }

  /** Writes both files, starts Traefik, awaits readiness; on failure stops it and rejects. */
  async #launch(config: ProxyConfig, apiPort: number): Promise<void> {
    const dynamicText = renderTraefikDynamic(config, { dashboard: { users: this.#users }, drainMarker: true });
    const staticText = renderTraefikStatic({ entrypoint: config.entrypoint, api: { host: '127.0.0.1', port: apiPort }, dynamicDir: this.#dynamicDir });
    writeFileAtomic(this.dynamicPath, dynamicText);
    writeFileAtomic(this.staticPath, staticText);
    this.#tail = [];
    this.#tracker.reset();
    this.#remember(config);
    const instance = await this.#host.start({ workDir: this.#workDir, configFile: this.staticPath, onLine: (l) => this.#onLine(l) });
    let gone = false;
    void instance.exited.then(() => (gone = true));
    try {
      await this.#awaitReady(config, apiPort, () => gone);
    } catch (err) {
      await instance.stop(0);
      const bind = this.#tail.find((l) => /address already in use/i.test(l));
      if (bind) {
        const isApi = bind.includes(`:${apiPort}`) && !bind.includes(`:${config.entrypoint.port}`);
        const e = new Error(
          isApi
            ? `Traefik cannot listen on 127.0.0.1:${apiPort} for its API and dashboard: the port is already in use by another program.`
            : `Traefik cannot listen on ${config.entrypoint.host}:${config.entrypoint.port}: port ${config.entrypoint.port} is already in use by another program. ` +
                `Choose another port with the environment variable LAB_PROXY_PORT (for example LAB_PROXY_PORT=${config.entrypoint.port + 1}), or stop the program that uses port ${config.entrypoint.port}.`,
        );
        (e as { addrInUse?: string }).addrInUse = isApi ? 'api' : 'entrypoint';
        throw e;
      }
      throw new Error(`${errorText(err)}${this.#tailText()}`);
    }
    const running: Running = { instance, host: config.entrypoint.host, port: config.entrypoint.port, apiPort, config: structuredClone(config), dynamicText, stopRequested: false };
    this.#running = running;
    this.#trackHealth(config);
    void instance.exited.then((info) => {
      if (this.#running !== running || running.stopRequested) return;
      // Not asked to stop: Traefik died (killed from outside, or crashed).
      this.#running = null;
      this.#stopPolling();
      const reason = info.signal ? `signal ${info.signal}` : `exit code ${info.code}`;
      this.#note('stderr', `Traefik exited unexpectedly (${reason}); the proxy is down until it is started again.`);
      this.#bus.emit('proxy:exited', { driver: this.name, reason, at: Date.now() });
    });
  }

  /** ` Traefik said: ...` from its last error lines, or ''. */
  #tailText(): string {
    const errors = this.#tail.filter((l) => /\b(ERR|FTL|error|fatal)\b/i.test(l));
    const shown = (errors.length > 0 ? errors : this.#tail).slice(-3).join(' | ');
    return shown ? ` Traefik said: ${shown}` : '';
  }

  /** Awaits `/ping` 200, the entrypoint accepting a connection, and the API showing `config`. */
  async #awaitReady(config: ProxyConfig, apiPort: number, gone: () => boolean): Promise<void> {
    const deadline = Date.now() + this.#readyTimeoutMs;
    let backoff = 10;
    let last = 'ping did not answer yet';
    for (;;) {
      if (gone()) throw new Error('Traefik exited before it was ready.');
      if (Date.now() > deadline) throw new Error(`Traefik was not ready within ${this.#readyTimeoutMs} ms: ${last}.`);
      try {
        const ping = await get(`http://127.0.0.1:${apiPort}/ping`, {}, 2000);
        if (ping.status !== 200) last = `/ping answered ${ping.status}`;
        else if (!(await canConnect(connectHost(config.entrypoint.host), config.entrypoint.port, 2000))) last = `${config.entrypoint.host}:${config.entrypoint.port} did not accept a connection`;
        else {
          const mismatch = this.#mismatch(config, await this.#rawData(apiPort));
          if (mismatch === null) return;
          last = mismatch;
        }
      } catch (err) {
        if ((err as { traefikRefused?: boolean }).traefikRefused) throw err;
        last = errorText(err);
      }
      await delay(backoff);
      backoff = Math.min(backoff * 2, 100);
    }
  }

  /** `GET /api/rawdata` with the dashboard's credentials. */
  async #rawData(apiPort: number): Promise<RawData> {
    const auth = `Basic ${Buffer.from(`${this.#user}:${this.#password}`).toString('base64')}`;
    const r = await get(`http://127.0.0.1:${apiPort}/api/rawdata`, { authorization: auth }, 3000);
    if (r.status !== 200) throw new Error(`the API answered ${r.status}`);
    const parsed = RawData.safeParse(JSON.parse(r.body));
    if (!parsed.success) throw new Error('the API answered something that is not Traefik\'s raw data');
    return parsed.data;
  }

  /**
   * Null when Traefik's API shows exactly `config`'s routers and services from the file provider
   * (rule, priority, service, server URLs), else what differs. A router or service of the
   * configuration that Traefik disabled with an error throws (flagged `traefikRefused`).
   */
  #mismatch(config: ProxyConfig, raw: RawData): string | null {
    const model = traefikDynamicModel(config, { dashboard: { users: this.#users }, drainMarker: true });
    const wantRouters = model.http.routers as Record<string, { rule: string; priority: number; service: string }>;
    const wantServices = model.http.services as Record<string, { loadBalancer: { servers: { url: string }[] } }>;
    const routers = raw.routers ?? {};
    const services = raw.services ?? {};
    const refused = (what: string, errors: string[]) => {
      const e = new Error(`Traefik refused the configuration: ${what}: ${errors.join('; ')}`);
      (e as { traefikRefused?: boolean }).traefikRefused = true;
      return e;
    };
    for (const [name, want] of Object.entries(wantRouters)) {
      const got = routers[`${name}@file`];
      if (!got) return `router ${name} is not in Traefik's configuration yet`;
      if (got.rule !== want.rule || got.priority !== want.priority || withoutProvider(got.service) !== withoutProvider(want.service)) return `router ${name} still has its old settings`;
      if (got.status === 'disabled' && got.error?.length) throw refused(`router ${name}`, got.error);
    }
    for (const key of Object.keys(routers)) if (key.endsWith('@file') && !wantRouters[key.slice(0, -5)]) return `router ${key} is still in Traefik's configuration`;
    for (const [name, want] of Object.entries(wantServices)) {
      const got = services[`${name}@file`];
      if (!got) return `service ${name} is not in Traefik's configuration yet`;
      if (got.status === 'disabled' && got.error?.length) throw refused(`service ${name}`, got.error);
      const a = (got.loadBalancer?.servers ?? []).map((s) => normalizeUrl(s.url)).sort();
      const b = want.loadBalancer.servers.map((s) => normalizeUrl(s.url)).sort();
      if (a.length !== b.length || a.some((u, i) => u !== b[i])) return `service ${name} still has its old servers`;
    }
    for (const key of Object.keys(services)) if (key.endsWith('@file') && !wantServices[key.slice(0, -5)]) return `service ${key} is still in Traefik's configuration`;
    return null;
  }

  /**
   * Makes the running Traefik use `config`: writes the dynamic file atomically and resolves once the
   * API shows it (see the module comment); an entrypoint change (idle timeout) restarts Traefik on
   * the same port. Calls run one at a time, in order.
   * @throws Error (a sentence) when Traefik is not running, the configuration cannot be rendered,
   *   Traefik flags part of it with an error, or it is not in force within readyTimeoutMs (the
   *   file stays written: Traefik may still take it).
   */
  apply(config: ProxyConfig): Promise<void> {
    const next = this.#queue.then(() => this.#apply(config));
    this.#queue = next.catch(() => {});
    return next;
  }

  async #apply(config: ProxyConfig): Promise<void> {
    const r = this.#running;
    if (!r || this.#stopping) throw new Error('Traefik is not running; start it first.');
    const effective = this.#effective(config);
    const text = renderTraefikDynamic(effective, { dashboard: { users: this.#users }, drainMarker: true });
    const a = r.config.entrypoint;
    const b = effective.entrypoint;
    if (a.name !== b.name || (a.idleTimeoutMs ?? null) !== (b.idleTimeoutMs ?? null)) {
      // Static configuration: only a restart changes it.
      this.#note('stdout', `[lab] restarting Traefik: the entrypoint changed (idle timeout ${b.idleTimeoutMs ?? 'default'} ms)`);
      r.stopRequested = true;
      this.#running = null;
      this.#stopPolling();
      await r.instance.stop(3000);
      await this.#launch(effective, r.apiPort);
      return;
    }
    this.#remember(effective);
    writeFileAtomic(this.dynamicPath, text);
    const deadline = Date.now() + this.#readyTimeoutMs;
    let backoff = 10;
    let last = '';
    for (;;) {
      if (this.#running !== r) throw new Error('Traefik stopped while the configuration was being applied.');
      try {
        const mismatch = this.#mismatch(effective, await this.#rawData(r.apiPort));
        if (mismatch === null) break;
        last = mismatch;
      } catch (err) {
        if ((err as { traefikRefused?: boolean }).traefikRefused) throw err;
        last = errorText(err);
      }
      if (Date.now() > deadline) throw new Error(`Traefik did not take the new configuration within ${this.#readyTimeoutMs} ms: ${last}.${this.#tailText()}`);
      await delay(backoff);
      backoff = Math.min(backoff * 2, 100);
    }
    r.config = structuredClone(effective);
    r.dynamicText = text;
    this.#trackHealth(effective);
  }

  /**
   * Stops Traefik (SIGTERM, SIGKILL after 3 s) and resolves once it is gone. Requests in flight
   * may be cut. Idempotent.
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
      this.#running = null;
      this.#stopPolling();
      this.#checked.clear();
      for (const resolve of this.#markers.values()) resolve(null);
      this.#markers.clear();
      await r.instance.stop(3000);
    } finally {
      this.#stopping = false;
    }
  }

  // ------------------------------------------------------------------ drain

  /**
   * Resolves true once no request that Traefik received before this call is still in flight, or
   * false after `timeoutMs`. Traefik keeps no count of requests in flight per server, so the
   * driver reads it from the access log: Traefik numbers requests when they arrive (`RequestCount`)
   * and logs each when it ends. The driver sends one marker request (the {@link DRAIN_MARKER}
   * router, answered by Traefik itself) and waits until every request numbered below the marker has
   * its line: then every request that could have gone to `server` before it was drained has ended.
   * This is conservative: a long request to another server (a WebSocket) delays it too. At once
   * true when Traefik is stopped or `server` is in no configuration of this run.
   */
  async drained(server: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + Math.max(0, timeoutMs);
    const r = this.#running;
    if (!r) return true;
    if (![...this.#servers.values()].some((s) => s.name === server)) return true;
    const nonce = `${process.pid}-${++this.#markerSeq}`;
    const logged = new Promise<number | null>((resolve) => this.#markers.set(nonce, resolve));
    let count: number | null = null;
    try {
      const answer = get(
        `http://${connectHost(r.host).includes(':') ? `[${connectHost(r.host)}]` : connectHost(r.host)}:${r.port}${DRAIN_MARKER.path}?n=${nonce}`,
        { host: DRAIN_MARKER.host },
        Math.max(1, deadline - Date.now()),
      );
      answer.catch(() => {});
      const timer = delay(Math.max(0, deadline - Date.now()), null, { ref: false });
      count = await Promise.race([logged, timer]);
    } finally {
      this.#markers.delete(nonce);
    }
    if (count === null) return this.#running === null;
    const below = count;
    return pollUntil(deadline, () => !this.#running || this.#tracker.allLoggedBelow(below));
  }

  // ------------------------------------------------------------------ health checks

  /** The health-checked servers of `config`; servers that stay keep their state; starts or stops polling. */
  #trackHealth(config: ProxyConfig): void {
    const next = new Map<string, CheckedServer>();
    for (const s of config.services) {
      if (!s.loadBalancer.healthCheck) continue;
      for (const x of s.loadBalancer.servers) {
        if (x.state === 'drain' || x.weight === 0) continue;
        const key = `${s.name} ${normalizeUrl(x.url)}`;
        const known = this.#checked.get(key);
        next.set(key, { service: s.name, hostname: x.name, url: normalizeUrl(x.url), port: Number(new URL(x.url).port), healthy: known?.healthy ?? true });
      }
    }
    for (const [key, old] of this.#checked) {
      if (next.has(key) || old.healthy) continue;
      const stays = config.services.some((s) => s.name === old.service && s.loadBalancer.servers.some((x) => normalizeUrl(x.url) === old.url && x.state !== 'drain' && x.weight !== 0));
      if (stays) this.#healthChanged(old, true, 'health check off');
    }
    this.#checked = next;
    this.#stopPolling();
    if (next.size > 0) this.#schedulePoll(config);
  }

  #schedulePoll(config: ProxyConfig): void {
    let every = this.#healthPollOption;
    if (every === undefined) {
      let shortest = Infinity;
      for (const s of config.services) if (s.loadBalancer.healthCheck) shortest = Math.min(shortest, s.loadBalancer.healthCheck.intervalMs);
      every = Math.min(2000, Math.max(250, Math.floor(shortest / 2)));
    }
    this.#pollTimer = setTimeout(() => {
      this.#pollTimer = null;
      void this.#poll().finally(() => {
        if (!this.#pollTimer && this.#checked.size > 0 && this.#running && !this.#stopping) this.#schedulePoll(this.#running.config);
      });
    }, every);
    this.#pollTimer.unref();
  }

  #stopPolling(): void {
    if (this.#pollTimer) clearTimeout(this.#pollTimer);
    this.#pollTimer = null;
  }

  /** Reads `serverStatus` of every checked service once and emits the changes. */
  async #poll(): Promise<void> {
    const r = this.#running;
    if (!r || this.#checked.size === 0) return;
    let raw: RawData;
    try {
      raw = await this.#rawData(r.apiPort);
    } catch {
      return; // a restart or a stop in progress
    }
    for (const c of this.#checked.values()) {
      const status = raw.services?.[`${c.service}@file`]?.serverStatus;
      if (!status) continue;
      const entry = Object.entries(status).find(([u]) => normalizeUrl(u) === c.url);
      if (!entry) continue;
      const healthy = entry[1].toUpperCase() !== 'DOWN';
      this.#healthChanged(c, healthy, healthy ? 'health check passed' : 'health check failed');
    }
  }

  #healthChanged(c: CheckedServer, healthy: boolean, reason: string): void {
    healthChanged(this.#bus, c, healthy, reason);
  }

  // ------------------------------------------------------------------ output

  #note(stream: 'stdout' | 'stderr', text: string): void {
    this.#bus.emit('log:line', { source: 'proxy', stream, text, at: Date.now() });
  }

  /** Remembers the server names and cookies of a configuration, so log lines map back to replicas. */
  #remember(config: ProxyConfig): void {
    if (this.#servers.size > MAX_REMEMBERED) this.#servers.clear();
    for (const s of config.services) {
      for (const x of s.loadBalancer.servers) this.#servers.set(`${s.name} ${normalizeUrl(x.url)}`, { name: x.name, vip: x.vip === true });
      if (s.loadBalancer.sticky) this.#cookies.set(s.name, s.loadBalancer.sticky.cookie.name);
      else this.#cookies.delete(s.name);
    }
  }

  #onLine(line: string): void {
    // Traefik v3 colours its own (text) log lines even when they go to a pipe.
    const text = line.replace(/\x1b\[[0-9;]*m/g, '');
    const log = parseTraefikAccessLog(text);
    if (!log) {
      this.#tail.push(text);
      if (this.#tail.length > TAIL_LINES * 4) this.#tail.splice(0, this.#tail.length - TAIL_LINES);
      this.#note('stderr', text);
      return;
    }
    if (log.requestCount !== null) this.#tracker.logged(log.requestCount);
    if (this.#isMarker(log)) return;
    if (log.entryPoint === API_ENTRYPOINT) return; // the driver's own API polls, ping, the dashboard
    this.#bus.emit(
      'request:completed',
      requestEventOf(log, {
        id: ++this.#requestSeq,
        serverOf: (service, url) => this.#servers.get(`${service} ${normalizeUrl(url)}`) ?? null,
        cookieOf: (service) => this.#cookies.get(service),
      }),
    );
    this.#bus.emit('log:line', { source: 'proxy', stream: 'access', text, at: Date.now() });
  }

  /** A drain marker's line: resolves its waiter with its RequestCount. */
  #isMarker(log: TraefikAccessLog): boolean {
    if (log.router !== DRAIN_MARKER.router) return false;
    const nonce = /[?&]n=([^&]+)/.exec(log.path)?.[1];
    const resolve = nonce ? this.#markers.get(nonce) : undefined;
    if (resolve) resolve(log.requestCount);
    return true;
  }
}
