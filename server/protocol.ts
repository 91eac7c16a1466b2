/**
 * The wire protocol between the lab server and the browser (REST + socket.io). Types only, so
 * the web app can import them without pulling server code.
 *
 * REST (JSON; every call needs `Authorization: Bearer <token>`; errors are `{ error: string }`
 * with 400 bad input, 401 no/bad token, 403 foreign Origin/Host, 404 unknown service/replica):
 *   GET  /api/status                          -> LabStatus
 *   POST /api/services/:service/scale {replicas: 0..10}  -> LabStatus (after all replicas are ready)
 *   POST /api/replicas/:hostname/kill         -> LabStatus
 *   POST /api/reset {lesson?: slug}           -> LabStatus (that lesson's starting topology, else the default)
 *   POST /api/settings {settings: ["sticky=on", "web_dynamic.algorithm=hash", ...]} -> LabStatus
 *   POST /api/replicas/:hostname/weight {weight: 0..256} -> LabStatus
 *   GET  /api/proxies                         -> ProxyInfo[]
 *   POST /api/proxy {driver}                  -> LabStatus (engine swapped, replicas kept)
 *   GET  /api/proxy/config                    -> {driver, text} (haproxy.cfg or Traefik-style YAML)
 *   POST /api/proxy/runtime {command}         -> {output} (HAProxy Runtime API, allow-listed commands)
 *   POST /api/probe {path, count, cookies, connection, header?, keep?} -> {results} (lab/experiments.ts; keep: one connection shared by keep bursts until the proxy idles it out)
 *   POST /api/experiments/hash-movement {type, service?, ids?, from?} -> HashMovementResult
 *   POST /api/replicas/:hostname/fault {mode: healthy|unhealthy|errors|hang|crash} | {mode: 'slow', ms} -> LabStatus
 *   POST /api/replicas/:hostname/restart      -> LabStatus (a crashed replica, same address)
 *   POST /api/services/:service/redeploy {strategy: 'naive'|'drain'} -> LabStatus (when done)
 *   POST /api/load {rate, seconds, path, timeoutMs} -> {runId} (events load:ticked / load:finished)
 *   POST /api/load/stop                       -> {stopped: boolean}
 *   POST /api/checks/:id                      -> {id, title, ok, message} (a lesson check, lab/checks.ts)
 *   POST /api/routes {routes: Route[] (0..20)} -> LabStatus (routes replaced live, replicas kept; lab/topology.ts Route)
 *   POST /api/route-test {host, path}         -> RouteTestResult (one GET through the proxy with that Host header)
 *   GET  /api/proxy/configs                   -> ProxyConfigsView (the lab's routes rendered for every engine)
 *   GET  /api/capture                         -> CaptureState (available or the reason, running, last file size)
 *   POST /api/capture/start {seconds?: 1..300} -> CaptureState (tcpdump on the proxy's and replicas' ports; 409 when unavailable or already recording)
 *   POST /api/capture/stop                    -> CaptureState (409 when not recording)
 *   GET  /api/capture/file                    -> the .pcap (Content-Disposition: attachment; 404 none yet, 409 still recording)
 *   GET  /api/session                         -> SessionInfo (this token's role, the class's current lesson, the lessons)
 *   POST /api/navigate {lesson: slug}         -> NavigateResult (every connected page is sent `navigate`; 404 unknown lesson)
 *   GET  /api/export                          -> RunExport (server/export.ts: the recent run's events, topology and proxy config)
 *   GET  /api/export.html                     -> a self-contained HTML report of the same run (opens offline)
 *
 * Two tokens: the instructor's (`?token=` of "Lab ready") may do everything; the watch-only one
 * ("Watch-only URL") may use the socket and every GET, and any other method answers 403 with
 * WATCH_ONLY_REFUSAL. The reset body also takes {lesson: null}: the default topology; without
 * `lesson` it restores the class's current lesson (the last `navigate` or reset to a lesson).
 *
 * socket.io (connect with `auth: { token }`): the server sends
 *   `status`  LabStatus        on connect and whenever it changes
 *   `history` EventBatch       once on connect: the recent past, so a reload shows it
 *   `batch`   EventBatch       every BATCH_INTERVAL_MS while there is something new
 *   `session` SessionInfo      once on connect: this socket's role and the class's current lesson
 *   `navigate` NavigateMessage when the instructor moves the class to a lesson (`npm run lab -- lesson <slug>`)
 *   `reset`   ResetMessage     after the lab was reset (from any page or the CLI): drop what the old run showed
 */
import type { LabStatus } from '../lab/status.ts';
import type {
  RequestCompleted,
  LogLine,
  ConnectionOpened,
  ConnectionClosed,
  ReplicaEvent,
  HealthcheckProbed,
  ReplicaHealthChanged,
  LoadTicked,
  LoadFinished,
  ImageBuildProgressed,
} from '../lab/events.ts';

/** How often the server flushes a batch to browsers (ms). */
export const BATCH_INTERVAL_MS = 150;
/** Most requests one batch carries; older ones of the same window are counted, not sent. */
export const BATCH_MAX_REQUESTS = 200;
/** Most log lines one batch carries; dropped lines are counted in `logsDropped`. */
export const BATCH_MAX_LOGS = 300;

export interface EventBatch {
  /** Newest requests of the window, oldest first (at most BATCH_MAX_REQUESTS). */
  requests: RequestCompleted[];
  /** Exact totals since the last reset: every request counts even when not sent. */
  counts: { total: number; byReplica: Record<string, number>; failed: number };
  logs: LogLine[];
  /** Log lines of this window not sent because of the bound. */
  logsDropped: number;
  connections: Array<({ type: 'opened' } & ConnectionOpened) | ({ type: 'closed' } & ConnectionClosed)>;
  replicas: Array<{ type: 'started' | 'stopped' | 'crashed' } & ReplicaEvent>;
  /** Health probes and the proxy's up/down decisions, in order (bounded like requests). */
  health: Array<({ type: 'probed' } & HealthcheckProbed) | ({ type: 'changed' } & ReplicaHealthChanged)>;
  /** Load runs: one tick a second, and the summary at the end. */
  load: Array<({ type: 'ticked' } & LoadTicked) | ({ type: 'finished' } & LoadFinished)>;
  /**
   * Docker image builds (Docker mode): build lines in order, at most BATCH_MAX_LOGS a batch (the
   * `done` events are always kept). Absent from servers that never build images.
   */
  images?: ImageBuildProgressed[];
}

/** A proxy engine and whether it can run on this machine. */
export interface ProxyInfo {
  name: 'embedded' | 'haproxy' | 'traefik';
  available: boolean;
  /** When not available: why, and how to get it (a sentence). */
  reason?: string;
  /** e.g. `HAProxy 2.6.12`. */
  version?: string;
}

export type { LabStatus };
export type { CaptureState } from '../lab/capture.ts';

/**
 * One request the lab server sent through the proxy for the request tester (`POST /api/route-test`):
 * what the proxy reported (router, service, replica) and what the replica saw.
 */
export interface RouteTestResult {
  /** The Host name sent (the header also carries the proxy's port, as a browser's does). */
  host: string;
  /** The request target sent, e.g. `/api/jokes?n=1`. */
  path: string;
  /** The engine that routed it. */
  driver: 'embedded' | 'haproxy' | 'traefik';
  /** HTTP status the client got. */
  status: number;
  /** The router that matched, as the proxy reported it; null when none did (the proxy's 404) or no report came. */
  router: string | null;
  /** That router's rule, e.g. ``Host(`demo.localhost`) && PathPrefix(`/api/`)``, and its priority (rule length). */
  rule: string | null;
  priority: number | null;
  /** Whether that router strips its prefix. */
  stripPrefix: boolean | null;
  /** The service the router forwarded to, as the proxy reported it, or null. */
  service: string | null;
  /** The replica that answered (`X-Served-By`), or null when the proxy answered itself. */
  replica: string | null;
  /** The request target the replica received (after StripPrefix), or null when no replica answered. */
  receivedPath: string | null;
  /** The first 300 characters of the answer. */
  body: string;
  /** False when the proxy's request event did not arrive within 5 s (router and service are then null). */
  reported: boolean;
  /** Epoch ms when it was sent. */
  at: number;
}

/** The lab's current routes rendered for each engine (`GET /api/proxy/configs`). */
export interface ProxyConfigsView {
  /** The engine running now. */
  driver: 'embedded' | 'haproxy' | 'traefik';
  /** The routers in priority order (highest first), with their Traefik rule text. */
  routers: Array<{ name: string; rule: string; priority: number; service: string; stripPrefix: boolean }>;
  /**
   * One entry per rendering: HAProxy's haproxy.cfg (its frontend holds the routing rules; the
   * running file when HAProxy runs), Traefik's dynamic configuration (file provider YAML) and its
   * Docker labels (as a docker-compose `labels:` list per service), all from the same ProxyConfig.
   * `text` is the whole rendering; `excerpt` the part about routing. `error` when it could not be rendered.
   */
  configs: Array<{ engine: 'haproxy' | 'traefik'; kind: 'haproxy.cfg' | 'dynamic' | 'labels'; title: string; text: string; excerpt: string; error?: string }>;
}

/** What a token may do: `control` (the instructor's token) or `watch` (the watch-only token: GETs and the socket). */
export type Role = 'control' | 'watch';

/** The answer (403) to any command sent with the watch-only token. */
export const WATCH_ONLY_REFUSAL =
  'This is a watch-only link: it shows the lab live but cannot change it. Commands need the instructor’s token (the “Lab ready” URL).';

/** A lesson as the classroom messages name it. */
export interface LessonRef {
  /** Folder name, e.g. `02-sticky-sessions` (what `reset <lesson>` and LabStatus.lesson use). */
  folder: string;
  /** The page's slug, e.g. `sticky-sessions`. */
  slug: string;
  title: string;
  /** The page's path, e.g. `/lessons/sticky-sessions`. */
  path: string;
}

/** `navigate` (socket): every page should show this lesson. */
export interface NavigateMessage extends LessonRef {
  /** Epoch ms when the instructor sent it. */
  at: number;
}

/** `POST /api/navigate`'s answer: the lesson and how many pages were connected to receive it. */
export interface NavigateResult extends LessonRef {
  browsers: number;
}

/** `reset` (socket): the lab was reset; its new run starts empty. */
export interface ResetMessage {
  /** Folder of the lesson whose starting topology was restored, or null for the default. */
  lesson: string | null;
  at: number;
  /** How long the reset took on the server (ms). */
  ms: number;
}

/** `GET /api/session` and the socket's `session` message. */
export interface SessionInfo {
  role: Role;
  /** The class's current lesson (the last `navigate`, or the lesson last reset to), or null. */
  lesson: NavigateMessage | null;
  /** Every lesson, in order. */
  lessons: LessonRef[];
  /** Pages (sockets) connected now, by role; only in `GET /api/session`. */
  pages?: Record<Role, number>;
}

export type { RunExport, ExportedRequest } from './export.ts';
