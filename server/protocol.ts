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
 *   GET  /api/capture                         -> CaptureState (available or the reason, running, last file size)
 *   POST /api/capture/start {seconds?: 1..300} -> CaptureState (tcpdump on the proxy's and replicas' ports; 409 when unavailable or already recording)
 *   POST /api/capture/stop                    -> CaptureState (409 when not recording)
 *   GET  /api/capture/file                    -> the .pcap (Content-Disposition: attachment; 404 none yet, 409 still recording)
 *
 * socket.io (connect with `auth: { token }`): the server sends
 *   `status`  LabStatus        on connect and whenever it changes
 *   `history` EventBatch       once on connect: the recent past, so a reload shows it
 *   `batch`   EventBatch       every BATCH_INTERVAL_MS while there is something new
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
