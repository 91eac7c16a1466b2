/**
 * The one client of the lab server in the browser. It owns the socket.io connection and the
 * REST calls; widgets read its reactive fields and call its methods, never a raw socket.
 *
 * The token: the lab prints `http://localhost:<port>/?token=<token>`. We take it from the URL
 * once, keep it in sessionStorage (per origin, so per port: the demo apps behind the proxy on
 * the same host never see it; a cookie would be sent to them, since cookies ignore ports) and
 * remove it from the visible URL. It travels only as `Authorization: Bearer` and socket auth.
 */
import { getContext, setContext } from 'svelte';
import { io, type Socket } from 'socket.io-client';
import type { CaptureState, EventBatch, LabStatus, ProxyConfigsView, ProxyInfo, RouteTestResult } from '../../../server/protocol.ts';
import { WATCH_ONLY_REFUSAL, type NavigateMessage, type ResetMessage, type Role, type SessionInfo } from '../../../server/protocol.ts';
import type { ImageBuildProgressed, LoadFinished, LoadTicked, LogLine, RequestCompleted } from '../../../lab/events.ts';
import type { BurstRequest, BurstResult, HashMovementRequest, HashMovementResult } from '../../../lab/experiments.ts';
import type { LoadRequest } from '../../../lab/load.ts';

/** Newest requests kept in memory (widgets draw fewer). */
export const MAX_REQUESTS = 300;
/** Log lines kept for terminals that mount later or get cleared. */
export const MAX_LOG_LINES = 1000;
/** Health probes kept (the newest); ups and downs are kept apart, see MAX_HEALTH_CHANGES. */
export const MAX_PROBES = 2000;
/** The proxy's DOWN/UP decisions kept (the newest). */
export const MAX_HEALTH_CHANGES = 200;
/** Failed requests kept (the newest), for timelines longer than the `requests` window. */
export const MAX_FAILURES = 1000;
/** Load ticks kept, over every run (a 120 s run has 120). */
export const MAX_LOAD_TICKS = 1000;
/** Finished load runs kept. */
export const MAX_LOAD_RESULTS = 20;
/** TCP connection events (opened/closed, every hop) kept (the newest). */
export const MAX_CONNECTION_EVENTS = 2000;

const TOKEN_KEY = 'balancer-lab.token';

export type Counts = EventBatch['counts'];
export type CommandResult = { ok: true; status: LabStatus } | { ok: false; error: string };
/** Any call's answer: its data, or the server's sentence. */
export type Result<T> = ({ ok: true } & T) | { ok: false; error: string };
export type DriverName = ProxyInfo['name'];
/** A probe burst as the page asks for it (the server fills in defaults). */
export type Burst = Partial<BurstRequest>;
export type { BurstResult, CaptureState, HashMovementResult, ProxyInfo };
export type { ProxyConfigsView, RouteTestResult };
/** A route as the routes editor sends it (lab/topology.ts Route; host absent = any host). */
export interface RouteInput {
  service: string;
  host?: string;
  pathPrefix: string;
  stripPrefix: boolean;
}
/** The hash-movement experiment: `type` is required, the rest defaults on the server. */
export type HashMovementAsk = Pick<HashMovementRequest, 'type'> & Partial<Omit<HashMovementRequest, 'type'>>;
/**
 * A replica fault as POST /api/replicas/:hostname/fault takes it (lab/lab.ts FaultRequest):
 * `crash` kills the process (with static discovery it stays in the proxy's server list).
 */
export type FaultMode = 'healthy' | 'unhealthy' | 'errors' | 'hang' | 'crash' | 'slow';
export type Fault = { mode: Exclude<FaultMode, 'slow'> } | { mode: 'slow'; ms: number };
export type RedeployStrategy = 'naive' | 'drain';
/** A load run as the page asks for it (the server fills in defaults: 20/s, 15 s, /api/, 2000 ms). */
export type LoadAsk = Partial<LoadRequest>;
/** A load run this page knows: started here (with its request) or seen in the event stream. */
export interface LoadRunInfo {
  runId: string;
  /** What was asked (rate, seconds, path, timeoutMs), when started from this page. */
  request: LoadRequest | null;
  /** Epoch ms (this page's clock) when it was started or first seen. */
  startedAt: number;
}
/** A lesson check's answer (POST /api/checks/:id, lab/checks.ts). */
export interface CheckAnswer {
  id: string;
  title: string;
  ok: boolean;
  /** One sentence: what passed, or what is still missing. */
  message: string;
}
/** A TCP connection opened or closed on one hop (client-proxy, proxy-backend, proxy-vip, vip-backend). */
export type ConnectionEvent = EventBatch['connections'][number];
export type HealthProbe = Extract<EventBatch['health'][number], { type: 'probed' }>;
export type HealthChange = Extract<EventBatch['health'][number], { type: 'changed' }>;
export type { LoadFinished, LoadTicked };
/** A request the proxy failed: 5xx, or no answer from a replica. Same rule as the server's `counts.failed`. */
export const isFailedRequest = (r: RequestCompleted): boolean => r.status >= 500 || r.error !== undefined;

/** `missing`: no token in the URL or this tab; `invalid`: the server refused it (e.g. the lab restarted with a new one). */
export type AuthProblem = 'missing' | 'invalid' | null;

/**
 * Receives log lines. `replay: true` means "start over with these lines" (first subscription,
 * or a reconnect that sent the recent history again); otherwise they follow the previous ones.
 * `dropped` counts lines the server did not send because of its per-batch bound.
 */
export type LogListener = (lines: readonly LogLine[], info: { replay: boolean; dropped: number }) => void;
export type BatchListener = (batch: EventBatch, kind: 'history' | 'batch') => void;
/**
 * Told when the page should show another lesson: `initial` when a watch-only page connects while
 * the class is on a lesson (it follows the instructor), otherwise the instructor just moved the class.
 */
export type NavigateListener = (message: NavigateMessage, info: { initial: boolean }) => void;
export type { NavigateMessage, ResetMessage, Role, SessionInfo };

const emptyCounts = (): Counts => ({ total: 0, byReplica: {}, failed: 0 });

export interface LabClientOptions {
  /** Origin of the lab server; default: the page's own. */
  baseUrl?: string;
}

export class LabClient {
  /** Socket connected and authenticated. */
  connected = $state(false);
  /** True until the first connection attempt has settled. */
  connecting = $state(true);
  /** Why we cannot talk to the lab at all (not a command error), as a sentence. */
  connectionError = $state<string | null>(null);
  authProblem = $state<AuthProblem>(null);
  status = $state.raw<LabStatus | null>(null);
  /** The newest requests (at most MAX_REQUESTS), oldest first. */
  requests = $state.raw<RequestCompleted[]>([]);
  /** Exact totals since the last reset, as the server counts them. */
  counts = $state.raw<Counts>(emptyCounts());
  /** Log lines the server could not send (flood bound), since this page loaded. */
  logsDropped = $state(0);
  /** The last command's error sentence (from the server), or null. */
  error = $state<string | null>(null);
  /**
   * What this page's token may do, from the server on connect: `control` (the instructor's token)
   * or `watch` (the watch-only link: it sees everything live; commands are refused). Null until known.
   */
  role = $state<Role | null>(null);
  /** The class's current lesson (the instructor's last `lesson <slug>` or reset to a lesson), or null. */
  classLesson = $state.raw<NavigateMessage | null>(null);
  /** The last reset of the lab (from any page or the CLI) since this page loaded, or null. */
  lastReset = $state.raw<ResetMessage | null>(null);
  /** The proxy engines and whether each can run here (GET /api/proxies); null until asked. */
  proxyList = $state.raw<ProxyInfo[] | null>(null);
  /** Health probes since this page loaded (or the last reset), oldest first, the newest MAX_PROBES. */
  probes = $state.raw<HealthProbe[]>([]);
  /** The proxy's DOWN/UP decisions, oldest first, the newest MAX_HEALTH_CHANGES. */
  healthChanges = $state.raw<HealthChange[]>([]);
  /** Failed requests (5xx or no answer), oldest first, the newest MAX_FAILURES. */
  failures = $state.raw<RequestCompleted[]>([]);
  /** Load ticks (one a second per run), oldest first, the newest MAX_LOAD_TICKS over every run. */
  loadTicks = $state.raw<LoadTicked[]>([]);
  /** Finished load runs, oldest first, the newest MAX_LOAD_RESULTS. */
  loadResults = $state.raw<LoadFinished[]>([]);
  /** The newest load run this page knows (started here or seen in the stream), or null. */
  loadRun = $state.raw<LoadRunInfo | null>(null);
  /** TCP connections opened/closed since this page loaded (or the last reset), oldest first, the newest MAX_CONNECTION_EVENTS. */
  connections = $state.raw<ConnectionEvent[]>([]);
  /**
   * Docker image builds (Docker mode), one entry per image: its latest step and line, whether it is
   * done, and why it failed. Empty in process mode.
   */
  imageBuilds = $state.raw<ImageBuild[]>([]);
  /**
   * Commands in flight: target replica count per service, hostnames being killed, reset, settings,
   * weights per hostname, the engine being switched to, console commands, probe bursts, the
   * hash-movement type being measured, faults being set (mode per hostname), restarts, the
   * redeploy in progress, a load being started or stopped, and checks running (per id).
   */
  busy = $state<{
    scale: Record<string, number>;
    kill: Record<string, boolean>;
    reset: boolean;
    settings: boolean;
    weight: Record<string, number>;
    proxy: DriverName | null;
    runtime: boolean;
    probe: boolean;
    hashMovement: HashMovementAsk['type'] | null;
    fault: Record<string, FaultMode>;
    restart: Record<string, boolean>;
    redeploy: { service: string; strategy: RedeployStrategy } | null;
    load: 'starting' | 'stopping' | null;
    check: Record<string, boolean>;
  }>({
    scale: {},
    kill: {},
    reset: false,
    settings: false,
    weight: {},
    proxy: null,
    runtime: false,
    probe: false,
    hashMovement: null,
    fault: {},
    restart: {},
    redeploy: null,
    load: null,
    check: {},
  });

  readonly #baseUrl: string;
  #token: string | null;
  #socket: Socket | null = null;
  #logs: LogLine[] = [];
  readonly #logListeners = new Set<LogListener>();
  readonly #batchListeners = new Set<BatchListener>();
  readonly #navigateListeners = new Set<NavigateListener>();

  constructor(options: LabClientOptions = {}) {
    this.#baseUrl = options.baseUrl ?? '';
    this.#token = LabClient.takeToken();
    if (!this.#token) this.authProblem = 'missing';
  }

  /**
   * Reads `?token=` from the URL into sessionStorage and removes it from the address bar (and so
   * from history, bookmarks and Referer headers). Returns the token of this tab, if any.
   */
  static takeToken(): string | null {
    if (typeof window === 'undefined') return null;
    const url = new URL(window.location.href);
    const fromUrl = url.searchParams.get('token');
    if (fromUrl !== null) {
      url.searchParams.delete('token');
      window.history.replaceState(window.history.state, '', url.pathname + url.search + url.hash);
      if (fromUrl.trim()) {
        window.sessionStorage.setItem(TOKEN_KEY, fromUrl.trim());
        return fromUrl.trim();
      }
    }
    return window.sessionStorage.getItem(TOKEN_KEY);
  }

  get hasToken(): boolean {
    return this.#token !== null;
  }

  /** True for the watch-only link: the page shows the lab live and disables its commands. */
  get readonly(): boolean {
    return this.role === 'watch';
  }

  /** Connects (idempotent). Call once the page is mounted. */
  start(): void {
    if (this.#socket || !this.#token) {
      this.connecting = false;
      return;
    }
    // An explicit REST check gives a definite 401 for a stale token (socket errors are less precise).
    void this.refresh();
    const socket = io(this.#baseUrl || undefined, { auth: { token: this.#token } });
    this.#socket = socket;
    socket.on('connect', () => {
      this.connected = true;
      this.connecting = false;
      this.connectionError = null;
    });
    socket.on('disconnect', (reason) => {
      this.connected = false;
      if (reason === 'io server disconnect') this.connectionError = 'The lab server closed the connection.';
      else this.connectionError = 'Lost the connection to the lab server; reconnecting…';
    });
    socket.on('connect_error', (err: Error) => {
      this.connected = false;
      this.connecting = false;
      if (/token|auth|unauthori[sz]ed|401/i.test(err.message)) {
        this.#rejectToken();
      } else {
        this.connectionError = 'Cannot reach the lab server (is `npm start` still running?). Retrying…';
      }
    });
    socket.on('status', (status: LabStatus) => this.#applyStatus(status));
    socket.on('history', (batch: EventBatch) => this.#applyHistory(batch));
    socket.on('batch', (batch: EventBatch) => this.#applyBatch(batch));
    socket.on('session', (info: SessionInfo) => {
      this.role = info.role;
      this.classLesson = info.lesson;
      // A student opening the watch-only link lands where the class is.
      if (info.role === 'watch' && info.lesson) for (const l of this.#navigateListeners) l(info.lesson, { initial: true });
    });
    socket.on('navigate', (message: NavigateMessage) => {
      this.classLesson = message;
      for (const l of this.#navigateListeners) l(message, { initial: false });
    });
    socket.on('reset', (message: ResetMessage) => {
      // The CLI or another page reset the lab: what this page kept belongs to the old run.
      this.lastReset = message;
      this.#clearRequests();
    });
  }

  /** Disconnects and forgets listeners' socket (the page is going away). */
  stop(): void {
    this.#socket?.removeAllListeners();
    this.#socket?.disconnect();
    this.#socket = null;
    this.connected = false;
  }

  // ------------------------------------------------------------------ commands

  /** GET /api/status. */
  async refresh(): Promise<CommandResult> {
    return this.#call('GET', '/api/status');
  }

  /** Marks `key` busy in one of the per-key `busy` maps (with `value`) while `run` runs, then clears it. */
  async #whileBusy<V, T>(map: Record<string, V>, key: string, value: V, run: () => Promise<T>): Promise<T> {
    map[key] = value;
    try {
      return await run();
    } finally {
      delete map[key];
    }
  }

  /** Scales a service to `replicas` (0..10); resolves once the server says all are ready. */
  async scale(service: string, replicas: number): Promise<CommandResult> {
    return this.#whileBusy(this.busy.scale, service, replicas, () => this.#call('POST', `/api/services/${encodeURIComponent(service)}/scale`, { replicas }));
  }

  /** Kills one replica (as a crash would; the proxy drops it from the pool). */
  async kill(hostname: string): Promise<CommandResult> {
    return this.#whileBusy(this.busy.kill, hostname, true, () => this.#call('POST', `/api/replicas/${encodeURIComponent(hostname)}/kill`));
  }

  /**
   * Kills every replica and restores a starting topology (a lesson's, by slug, else the default);
   * clears the request history and counts.
   */
  async reset(lesson?: string): Promise<CommandResult> {
    this.busy.reset = true;
    try {
      const result = await this.#call('POST', '/api/reset', lesson === undefined ? undefined : { lesson });
      if (result.ok) this.#clearRequests();
      return result;
    } finally {
      this.busy.reset = false;
    }
  }

  /**
   * Applies proxy settings live (`sticky=on`, `session_php.sticky=off`, `sticky.cookie=lab_pin`,
   * `sticky.cookie=default`, `web_dynamic.algorithm=least-connections`, `hash.type=map-based`...).
   * All or none; the error names the field (e.g. a bad cookie name).
   */
  async configure(settings: string[]): Promise<CommandResult> {
    this.busy.settings = true;
    try {
      return await this.#call('POST', '/api/settings', { settings });
    } finally {
      this.busy.settings = false;
    }
  }

  /** Sets one replica's weighted round-robin weight (0..256). */
  async setWeight(hostname: string, weight: number): Promise<CommandResult> {
    return this.#whileBusy(this.busy.weight, hostname, weight, () => this.#call('POST', `/api/replicas/${encodeURIComponent(hostname)}/weight`, { weight }));
  }

  /** Swaps the proxy engine on the same port; the replicas keep running. Refreshes the engine list. */
  async switchProxy(driver: DriverName): Promise<CommandResult> {
    this.busy.proxy = driver;
    try {
      return await this.#call('POST', '/api/proxy', { driver });
    } finally {
      this.busy.proxy = null;
    }
  }

  /** GET /api/proxies: every engine, available or not (with the reason). Kept in `proxyList`. */
  async proxies(): Promise<Result<{ proxies: ProxyInfo[] }>> {
    const r = await this.#request<ProxyInfo[]>('GET', '/api/proxies');
    if (!r.ok) return r;
    this.proxyList = r.data;
    return { ok: true, proxies: r.data };
  }

  /** The configuration text the running proxy uses: haproxy.cfg, or the embedded proxy's Traefik-style configuration. */
  async proxyConfig(): Promise<Result<{ driver: DriverName; text: string }>> {
    const r = await this.#request<{ driver: DriverName; text: string }>('GET', '/api/proxy/config');
    return r.ok ? { ok: true, driver: r.data.driver, text: r.data.text } : r;
  }

  /** One command on HAProxy's Runtime API (allow-listed by the server); resolves with HAProxy's own answer. */
  async runtime(command: string): Promise<Result<{ output: string }>> {
    this.busy.runtime = true;
    try {
      const r = await this.#request<{ output: string }>('POST', '/api/proxy/runtime', { command });
      return r.ok ? { ok: true, output: r.data.output } : r;
    } finally {
      this.busy.runtime = false;
    }
  }

  /**
   * A burst of requests from the lab's probe client to the proxy (1..100, one after the other),
   * with the cookie jar on or off and one reused connection or a new one per request.
   */
  async probe(burst: Burst): Promise<Result<{ results: BurstResult[] }>> {
    this.busy.probe = true;
    try {
      const r = await this.#request<{ results: BurstResult[] }>('POST', '/api/probe', burst);
      return r.ok ? { ok: true, results: r.data.results } : r;
    } finally {
      this.busy.probe = false;
    }
  }

  /**
   * The hash-movement experiment (takes seconds: it scales the service twice): hashing on a
   * header, how many of the session ids moved when one replica was added. Measured by the server.
   */
  async hashMovement(ask: HashMovementAsk): Promise<Result<{ result: HashMovementResult }>> {
    this.busy.hashMovement = ask.type;
    try {
      const r = await this.#request<HashMovementResult>('POST', '/api/experiments/hash-movement', ask);
      if (r.ok) void this.refresh();
      return r.ok ? { ok: true, result: r.data } : r;
    } finally {
      this.busy.hashMovement = null;
    }
  }

  /**
   * Puts a replica into a fault through the lab's side channel (not the proxy): `healthy`,
   * `unhealthy` (its health path answers 503), `errors` (500 on everything else), `hang` (never
   * answers), `slow` (`ms` before each answer), or `crash` (its process dies).
   */
  async fault(hostname: string, fault: Fault): Promise<CommandResult> {
    return this.#whileBusy(this.busy.fault, hostname, fault.mode, () => this.#call('POST', `/api/replicas/${encodeURIComponent(hostname)}/fault`, fault));
  }

  /** Starts a crashed replica again at the same address; resolves when it is ready. */
  async restart(hostname: string): Promise<CommandResult> {
    return this.#whileBusy(this.busy.restart, hostname, true, () => this.#call('POST', `/api/replicas/${encodeURIComponent(hostname)}/restart`));
  }

  /**
   * Replaces every replica of a service one at a time (`naive`: kill then start; `drain`: out of
   * rotation, wait for requests in flight, stop, start, health-checked back in). Resolves when done;
   * progress is in `status.redeploy`, the result in `status.lastRedeploy`.
   */
  async redeploy(service: string, strategy: RedeployStrategy): Promise<CommandResult> {
    this.busy.redeploy = { service, strategy };
    try {
      return await this.#call('POST', `/api/services/${encodeURIComponent(service)}/redeploy`, { strategy });
    } finally {
      this.busy.redeploy = null;
    }
  }

  /**
   * Starts a steady load through the proxy (`rate` requests a second for `seconds`, a new connection
   * each). Ticks and the result arrive in `loadTicks` / `loadResults`; the run is `loadRun`.
   */
  async startLoad(ask: LoadAsk): Promise<Result<{ runId: string; request: LoadRequest }>> {
    this.busy.load = 'starting';
    try {
      const r = await this.#request<{ runId: string } & LoadRequest>('POST', '/api/load', ask);
      if (!r.ok) return r;
      const { runId, ...request } = r.data;
      this.loadRun = { runId, request, startedAt: Date.now() };
      return { ok: true, runId, request };
    } finally {
      this.busy.load = null;
    }
  }

  /** Stops the lab's load run (requests in flight still finish and are counted). */
  async stopLoad(): Promise<Result<{ stopped: boolean }>> {
    this.busy.load = 'stopping';
    try {
      const r = await this.#request<{ stopped: boolean }>('POST', '/api/load/stop', {});
      return r.ok ? { ok: true, stopped: r.data.stopped } : r;
    } finally {
      this.busy.load = null;
    }
  }

  /** True while the newest known load run has not finished. */
  get loadRunning(): boolean {
    const run = this.loadRun;
    return run !== null && !this.loadResults.some((f) => f.runId === run.runId);
  }

  /**
   * Replaces the proxy's routes live (POST /api/routes; replicas keep running). All or none; the
   * error names the route and field, e.g. `routes.1.host: host must be a DNS name such as demo.localhost`.
   */
  async setRoutes(routes: RouteInput[]): Promise<CommandResult> {
    return this.#call('POST', '/api/routes', { routes });
  }

  /** One GET through the proxy with a chosen Host header, sent by the lab server (a page cannot set Host). */
  async testRoute(host: string, path: string): Promise<Result<{ result: RouteTestResult }>> {
    const r = await this.#request<RouteTestResult>('POST', '/api/route-test', { host, path });
    return r.ok ? { ok: true, result: r.data } : r;
  }

  /** The lab's routes rendered for every engine (HAProxy's frontend, Traefik's dynamic configuration and labels). */
  async proxyConfigs(): Promise<Result<{ view: ProxyConfigsView }>> {
    const r = await this.#request<ProxyConfigsView>('GET', '/api/proxy/configs');
    return r.ok ? { ok: true, view: r.data } : r;
  }

  /** Runs one of the lesson checks (lab/checks.ts) against the running lab. */
  async runCheck(id: string): Promise<Result<{ result: CheckAnswer }>> {
    const r = await this.#whileBusy(this.busy.check, id, true, () => this.#request<CheckAnswer>('POST', `/api/checks/${encodeURIComponent(id)}`, {}));
    return r.ok ? { ok: true, result: r.data } : r;
  }

  /** GET /api/capture: whether tcpdump can run here (else the reason), whether it records, the last file's size. */
  async captureState(): Promise<Result<{ capture: CaptureState }>> {
    const r = await this.#request<CaptureState>('GET', '/api/capture');
    return r.ok ? { ok: true, capture: r.data } : r;
  }

  /** POST /api/capture/start: records the proxy's and replicas' ports for at most `seconds`. */
  async startCapture(seconds?: number): Promise<Result<{ capture: CaptureState }>> {
    const r = await this.#request<CaptureState>('POST', '/api/capture/start', seconds === undefined ? {} : { seconds });
    return r.ok ? { ok: true, capture: r.data } : r;
  }

  /** POST /api/capture/stop. */
  async stopCapture(): Promise<Result<{ capture: CaptureState }>> {
    const r = await this.#request<CaptureState>('POST', '/api/capture/stop', {});
    return r.ok ? { ok: true, capture: r.data } : r;
  }

  /**
   * GET /api/capture/file with the token (a plain link could not send it): the .pcap as a Blob and
   * the file name from Content-Disposition; the caller saves it through a Blob URL.
   */
  async downloadCapture(): Promise<Result<{ blob: Blob; filename: string }>> {
    if (!this.#token) return this.#fail('This page has no lab token. Open the URL the lab printed when it started.');
    let res: Response;
    try {
      res = await fetch(this.#baseUrl + '/api/capture/file', {
        headers: { Authorization: `Bearer ${this.#token}` },
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch {
      return this.#fail('Cannot reach the lab server (is `npm start` still running?).');
    }
    if (!res.ok) {
      let data: unknown = null;
      try {
        data = await res.json();
      } catch {
        // not JSON
      }
      if (res.status === 401) this.#rejectToken();
      return this.#fail(errorSentence(data) ?? `The lab answered ${res.status} ${res.statusText}.`);
    }
    const disposition = res.headers.get('content-disposition') ?? '';
    const filename = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? 'balancer-lab.pcap';
    return { ok: true, blob: await res.blob(), filename };
  }

  clearError(): void {
    this.error = null;
  }

  // ------------------------------------------------------------------ subscriptions

  /**
   * Streams log lines to `listener` (a terminal writes them directly, without reactivity).
   * It first receives the recent lines (`replay: true`). Returns the unsubscribe function.
   */
  subscribeLogs(listener: LogListener): () => void {
    this.#logListeners.add(listener);
    listener(this.#logs, { replay: true, dropped: 0 });
    return () => this.#logListeners.delete(listener);
  }

  /** Every raw batch (connections, replica events...), for widgets that need more than the fields above. */
  /** Calls `listener` whenever the instructor moves the class to a lesson; returns the unsubscribe function. */
  onNavigate(listener: NavigateListener): () => void {
    this.#navigateListeners.add(listener);
    return () => this.#navigateListeners.delete(listener);
  }

  /**
   * GET /api/export (`json`: the run's data) or /api/export.html (`html`: the self-contained
   * report) with the token: the file as a Blob and its name, for a download link. Works with the
   * watch-only link too.
   */
  async downloadExport(kind: 'json' | 'html'): Promise<Result<{ blob: Blob; filename: string }>> {
    if (!this.#token) return this.#fail('This page has no lab token. Open the URL the lab printed when it started.');
    let res: Response;
    try {
      res = await fetch(this.#baseUrl + (kind === 'html' ? '/api/export.html' : '/api/export?download'), {
        headers: { Authorization: `Bearer ${this.#token}` },
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch {
      return this.#fail('Cannot reach the lab server (is `npm start` still running?).');
    }
    if (!res.ok) {
      let data: unknown = null;
      try {
        data = await res.json();
      } catch {
        // not JSON
      }
      return this.#fail(errorSentence(data) ?? `The lab answered ${res.status} ${res.statusText}.`);
    }
    const disposition = res.headers.get('content-disposition') ?? '';
    const filename = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? `balancer-lab-run.${kind}`;
    return { ok: true, blob: await res.blob(), filename };
  }

  subscribeBatches(listener: BatchListener): () => void {
    this.#batchListeners.add(listener);
    return () => this.#batchListeners.delete(listener);
  }

  // ------------------------------------------------------------------ internals

  /** A command whose answer is the lab's status (applied to `status`). */
  async #call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<CommandResult> {
    const r = await this.#request<LabStatus>(method, path, body);
    if (!r.ok) return r;
    this.#applyStatus(r.data);
    return { ok: true, status: r.data };
  }

  /** One REST call with the token. Failures become the server's sentence (also kept in `error`). */
  async #request<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ ok: true; data: T } | { ok: false; error: string }> {
    if (!this.#token) {
      this.authProblem = 'missing';
      return this.#fail('This page has no lab token. Open the URL the lab printed when it started.');
    }
    // The server refuses it too (403); saying so here spares the round trip.
    if (this.readonly && method !== 'GET') return this.#fail(WATCH_ONLY_REFUSAL);
    let res: Response;
    try {
      res = await fetch(this.#baseUrl + path, {
        method,
        headers: {
          Authorization: `Bearer ${this.#token}`,
          ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch {
      return this.#fail('Cannot reach the lab server (is `npm start` still running?).');
    }
    let data: unknown = null;
    try {
      data = await res.json();
    } catch {
      // not JSON: handled below
    }
    if (res.status === 401) {
      this.#rejectToken();
      return this.#fail(errorSentence(data) ?? 'The lab refused this page’s token.');
    }
    if (!res.ok) {
      return this.#fail(errorSentence(data) ?? `The lab answered ${res.status} ${res.statusText}.`);
    }
    if (method === 'POST') this.error = null;
    return { ok: true, data: data as T };
  }

  #fail(error: string): { ok: false; error: string } {
    this.error = error;
    return { ok: false, error };
  }

  #rejectToken(): void {
    this.authProblem = 'invalid';
    this.connectionError = null;
    this.#token = null;
    window.sessionStorage.removeItem(TOKEN_KEY);
    // Stop reconnecting with a token the server will never accept.
    this.#socket?.disconnect();
  }

  #applyStatus(status: LabStatus): void {
    // (A reset by another tab or the CLI shows up in the next batch, whose totals drop.)
    this.status = status;
  }

  #clearRequests(): void {
    this.requests = [];
    this.counts = emptyCounts();
    // Probes, ups/downs and failures name the old replicas.
    this.probes = [];
    this.healthChanges = [];
    this.failures = [];
    this.connections = [];
  }

  /** Keeps the health, load, failure and image-build events of a batch (bounded). */
  #keepEvents(batch: EventBatch): void {
    const images = batch.images ?? [];
    if (images.length > 0) this.imageBuilds = mergeImageBuilds(this.imageBuilds, images);
    const conns = batch.connections ?? [];
    if (conns.length > 0) this.connections = bounded(this.connections, conns, MAX_CONNECTION_EVENTS);
    const failed = batch.requests.filter(isFailedRequest);
    if (failed.length > 0) this.failures = bounded(this.failures, failed, MAX_FAILURES);
    const health = batch.health ?? [];
    if (health.length > 0) {
      const probes: HealthProbe[] = [];
      const changes: HealthChange[] = [];
      for (const e of health) {
        if (e.type === 'probed') probes.push(e);
        else changes.push(e);
      }
      if (probes.length > 0) this.probes = bounded(this.probes, probes, MAX_PROBES);
      if (changes.length > 0) this.healthChanges = bounded(this.healthChanges, changes, MAX_HEALTH_CHANGES);
    }
    const load = batch.load ?? [];
    if (load.length > 0) {
      const ticks: LoadTicked[] = [];
      const done: LoadFinished[] = [];
      for (const e of load) {
        const { type, ...rest } = e;
        if (type === 'ticked') ticks.push(rest as LoadTicked);
        else done.push(rest as LoadFinished);
        // A run started elsewhere (another tab, the CLI): adopt it as the newest.
        if (this.loadRun?.runId !== e.runId && !this.loadResults.some((f) => f.runId === e.runId) && type === 'ticked') {
          this.loadRun = { runId: e.runId, request: null, startedAt: Date.now() - (e as LoadTicked).second * 1000 };
        }
      }
      if (ticks.length > 0) this.loadTicks = bounded(this.loadTicks, ticks, MAX_LOAD_TICKS);
      if (done.length > 0) this.loadResults = bounded(this.loadResults, done, MAX_LOAD_RESULTS);
    }
  }

  #applyHistory(batch: EventBatch): void {
    this.requests = batch.requests.slice(-MAX_REQUESTS);
    this.counts = batch.counts;
    this.#logs = batch.logs.slice(-MAX_LOG_LINES);
    for (const l of this.#logListeners) l(this.#logs, { replay: true, dropped: batch.logsDropped });
    this.failures = batch.requests.filter(isFailedRequest).slice(-MAX_FAILURES);
    // The history replaces what a previous connection kept (a reconnect sends it again).
    this.probes = [];
    this.healthChanges = [];
    this.loadTicks = [];
    this.loadResults = [];
    this.#keepEvents({ ...batch, requests: [] });
    for (const l of this.#batchListeners) l(batch, 'history');
  }

  #applyBatch(batch: EventBatch): void {
    // Totals only drop after a reset (here, in another tab or from the CLI): drop the old run's requests.
    if (batch.counts.total < this.counts.total) {
      this.requests = [];
      this.probes = [];
      this.healthChanges = [];
      this.failures = [];
      this.connections = [];
    }
    this.#keepEvents(batch);
    if (batch.requests.length > 0) {
      const next = this.requests.concat(batch.requests);
      this.requests = next.length > MAX_REQUESTS ? next.slice(-MAX_REQUESTS) : next;
    }
    this.counts = batch.counts;
    if (batch.logs.length > 0 || batch.logsDropped > 0) {
      this.#logs.push(...batch.logs);
      if (this.#logs.length > MAX_LOG_LINES) this.#logs.splice(0, this.#logs.length - MAX_LOG_LINES);
      this.logsDropped += batch.logsDropped;
      for (const l of this.#logListeners) l(batch.logs, { replay: false, dropped: batch.logsDropped });
    }
    for (const l of this.#batchListeners) l(batch, 'batch');
  }
}

/** One Docker image build as the page shows it (see EventBatch.images). */
export interface ImageBuild {
  image: string;
  /** Docker's step counter, e.g. `3/7`, or null before the first step. */
  step: string | null;
  /** The latest non-empty line the build printed. */
  lastLine: string;
  done: boolean;
  error: string | null;
  /** Epoch ms of the latest event. */
  at: number;
}

/** Docker's own bookkeeping lines (`---> 1a2b3c`, `Removing intermediate container ...`) say nothing to a learner. */
function telling(line: string): boolean {
  const t = line.trim();
  return t !== '' && !t.startsWith('--->') && !t.startsWith('Removing intermediate container') && !t.startsWith('Successfully built');
}

/** Folds build events into one entry per image, in first-seen order; the last line kept is one that tells something. Pure. */
export function mergeImageBuilds(list: readonly ImageBuild[], events: readonly ImageBuildProgressed[]): ImageBuild[] {
  const byImage = new Map(list.map((b) => [b.image, b] as const));
  for (const e of events) {
    const prev = byImage.get(e.image);
    byImage.set(e.image, {
      image: e.image,
      step: e.step ?? prev?.step ?? null,
      lastLine: telling(e.text) ? e.text : (prev?.lastLine ?? ''),
      done: e.done,
      error: e.error ?? null,
      at: e.at,
    });
  }
  return [...byImage.values()];
}

/** `list` + `more`, keeping the newest `max`. */
function bounded<T>(list: readonly T[], more: readonly T[], max: number): T[] {
  const next = list.concat(more);
  return next.length > max ? next.slice(-max) : next;
}

function errorSentence(data: unknown): string | null {
  if (data && typeof data === 'object' && 'error' in data && typeof (data as { error: unknown }).error === 'string') {
    return (data as { error: string }).error;
  }
  return null;
}

const KEY = Symbol('balancer-lab.client');

/** Makes `client` available to every widget below the calling component. */
export function setLabClient(client: LabClient): LabClient {
  return setContext(KEY, client);
}

/** The lab client of the lesson shell (call during component initialisation). */
export function getLabClient(): LabClient {
  const client = getContext<LabClient | undefined>(KEY);
  if (!client) throw new Error('No LabClient: widgets must be rendered inside the lesson shell (App.svelte).');
  return client;
}
