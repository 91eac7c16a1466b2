/**
 * Traefik's JSON access log (`accessLog.format: json`,
 * https://doc.traefik.io/traefik/observability/access-logs/): one JSON object per request, written
 * when the request has ended. The fields this module reads (Traefik's own names):
 *
 * | field | meaning |
 * |---|---|
 * | `ClientAddr` | `ip:port` of the client connection |
 * | `RequestMethod`, `RequestPath` | method, and the path as the client sent it (query included, before any StripPrefix) |
 * | `RouterName`, `ServiceName` | `<name>@<provider>` (`web_dynamic@file`); absent when no router matched (404) |
 * | `ServiceURL` | the server the request went to (`http://127.0.0.1:41001`); a string in v3 (v2 logged a URL object) |
 * | `DownstreamStatus` | status sent to the client |
 * | `OriginStatus` | status the server answered; 0 when no server answered (Traefik then sent 502/503/504 itself) |
 * | `Duration` | whole request time, in **nanoseconds** |
 * | `StartUTC` | when the request arrived (RFC 3339 with ns) |
 * | `RequestCount` | sequence number, given when the request arrived (1, 2, ...) |
 * | `RetryAttempts` | retries done by the retry middleware |
 * | `entryPointName` | the entrypoint (`web`, or `traefik` for the API/dashboard/ping) |
 * | `origin_<Header>`, `downstream_<Header>` | response headers kept by `accessLog.fields.headers` (`X-Served-By`, `Set-Cookie`) |
 *
 * Everything here is pure.
 */
import { z } from 'zod';
import type { RequestCompleted } from '../../events.ts';

/** The fields of one access-log line the lab uses; unknown fields are ignored. */
const Line = z.object({
  ClientAddr: z.string().optional(),
  RequestMethod: z.string(),
  RequestPath: z.string(),
  RouterName: z.string().optional(),
  ServiceName: z.string().optional(),
  ServiceURL: z.union([z.string(), z.object({ Scheme: z.string().optional(), Host: z.string().optional() }).loose(), z.null()]).optional(),
  DownstreamStatus: z.number().int(),
  OriginStatus: z.number().int().optional(),
  Duration: z.number().nonnegative(),
  StartUTC: z.string(),
  RequestCount: z.number().int().nonnegative().optional(),
  RetryAttempts: z.number().int().nonnegative().optional(),
  entryPointName: z.string().optional(),
});

/** One parsed access-log line. */
export interface TraefikAccessLog {
  /** `ip:port` of the client connection ('' if absent). */
  client: string;
  method: string;
  /** Path as the client sent it, query included. */
  path: string;
  /** Router name without `@provider`, or null when no router matched. */
  router: string | null;
  /** Service name without `@provider`, or null. */
  service: string | null;
  /** The server's URL as configured (`http://127.0.0.1:41001`), or null when no server was picked. */
  serviceUrl: string | null;
  /** Status sent to the client. */
  status: number;
  /** Status the server answered; 0 when none answered. */
  originStatus: number;
  /** Whole request time, in ms (Traefik logs ns). */
  ms: number;
  /** When the request arrived, epoch ms. */
  startMs: number;
  /** Traefik's request sequence number, or null when the line has none. */
  requestCount: number | null;
  retryAttempts: number;
  /** Entrypoint name, or null. */
  entryPoint: string | null;
  /** The `X-Served-By` response header (the replica behind a VIP), when kept and present. */
  servedBy: string | null;
  /** The `Set-Cookie` response header(s) sent to the client, joined with `, `, when kept and present. */
  setCookie: string | null;
}

/** `web_dynamic@file` -> `web_dynamic`; '' or absent -> null. */
export function withoutProvider(name: string | undefined | null): string | null {
  if (!name) return null;
  const at = name.lastIndexOf('@');
  return at > 0 ? name.slice(0, at) : name;
}

/**
 * RFC 3339 time with up to 9 fractional digits (`2026-11-22T02:21:09.503803974Z`) to epoch ms
 * (fraction truncated to ms). NaN when unreadable.
 */
export function rfc3339Ms(text: string): number {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  if (!m) return NaN;
  const ms = (m[2] ?? '').padEnd(3, '0').slice(0, 3);
  return Date.parse(`${m[1]}.${ms}${m[3]}`);
}

/** A header field kept by `accessLog.fields.headers`, as a string (Traefik may log a list). */
function header(obj: Record<string, unknown>, key: string): string | null {
  const v = obj[key];
  if (typeof v === 'string' && v !== '') return v;
  if (Array.isArray(v) && v.length > 0) return v.map(String).join(', ');
  return null;
}

/**
 * Parses one line of Traefik's output as a JSON access-log entry.
 * @returns the entry, or null when the line is not one (Traefik's own log lines, other JSON).
 */
export function parseTraefikAccessLog(line: string): TraefikAccessLog | null {
  const text = line.trim();
  if (!text.startsWith('{')) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return null;
  }
  const r = Line.safeParse(raw);
  if (!r.success) return null;
  const d = r.data;
  const startMs = rfc3339Ms(d.StartUTC);
  if (Number.isNaN(startMs)) return null;
  const obj = raw as Record<string, unknown>;
  let serviceUrl: string | null = null;
  if (typeof d.ServiceURL === 'string') serviceUrl = d.ServiceURL === '' ? null : d.ServiceURL;
  else if (d.ServiceURL && d.ServiceURL.Host) serviceUrl = `${d.ServiceURL.Scheme || 'http'}://${d.ServiceURL.Host}`;
  return {
    client: d.ClientAddr ?? '',
    method: d.RequestMethod,
    path: d.RequestPath,
    router: withoutProvider(d.RouterName),
    service: withoutProvider(d.ServiceName),
    serviceUrl,
    status: d.DownstreamStatus,
    originStatus: d.OriginStatus ?? 0,
    ms: Math.round(d.Duration / 1e5) / 10,
    startMs,
    requestCount: d.RequestCount ?? null,
    retryAttempts: d.RetryAttempts ?? 0,
    entryPoint: d.entryPointName ?? null,
    servedBy: header(obj, 'downstream_X-Served-By') ?? header(obj, 'origin_X-Served-By'),
    setCookie: header(obj, 'downstream_Set-Cookie'),
  };
}

/** `http://127.0.0.1:41001/` and `http://127.0.0.1:41001` name the same server. */
export function normalizeUrl(url: string): string {
  return url.replace(/\/+$/, '').toLowerCase();
}

/** What the driver knows of the running configuration, to name replicas in events. */
export interface AccessLogContext {
  /** Sequence number of the event (unique per proxy run). */
  id: number;
  /**
   * The server a request went to: its replica hostname, and whether it is a VIP (then the replica is
   * the one named by X-Served-By). Null when the URL is unknown.
   */
  serverOf(service: string, url: string): { name: string; vip: boolean } | null;
  /** The sticky cookie name of a service, when sticky sessions are on. */
  cookieOf(service: string): string | undefined;
}

/**
 * The lab's `request:completed` for one access-log entry:
 * - `router`/`service` without `@file`; `replica` = the server the request went to (by ServiceURL),
 *   or X-Served-By when that server is a VIP; `hostname` = X-Served-By, else the replica when a
 *   server answered (OriginStatus > 0);
 * - `status` = DownstreamStatus (0, nothing sent: 499 as Traefik logs a client that went away);
 * - `ms` from Duration (ns); `at` = StartUTC;
 * - `clientConnId` = ClientAddr; `upstreamConnId` = null (Traefik does not log its own source port);
 * - `stickyCookie` = the Set-Cookie the proxy wrote for the service's cookie (no request cookie is
 *   logged, so a cookie honoured without a rewrite is not shown);
 * - `retried` when RetryAttempts > 0; `error` when Traefik answered itself: `no server available`
 *   (503 without a server), `bad gateway` (502), `gateway timeout` (504), `client closed request` (499).
 */
export function requestEventOf(log: TraefikAccessLog, ctx: AccessLogContext): RequestCompleted {
  const server = log.service && log.serviceUrl ? ctx.serverOf(log.service, log.serviceUrl) : null;
  const replica = server ? (server.vip ? log.servedBy : server.name) : null;
  const answered = log.originStatus > 0;
  const status = log.status > 0 ? log.status : 499;
  let error: string | undefined;
  if (status === 499) error = 'client closed request';
  else if (!answered && log.router !== null) {
    if (status === 503 && !log.serviceUrl) error = 'no server available';
    else if (status === 502) error = 'bad gateway';
    else if (status === 504) error = 'gateway timeout';
  }
  const cookieName = log.service ? ctx.cookieOf(log.service) : undefined;
  let stickyCookie: string | undefined;
  if (cookieName && log.setCookie) {
    stickyCookie = log.setCookie.split(/,\s*(?=[^;=,\s]+=)/).find((c) => c.startsWith(`${cookieName}=`));
  }
  return {
    id: ctx.id,
    at: log.startMs,
    method: log.method,
    path: log.path,
    router: log.router,
    service: log.router === null ? null : log.service,
    replica,
    hostname: log.servedBy ?? (answered ? replica : null),
    status,
    ms: log.ms,
    clientConnId: log.client,
    upstreamConnId: null,
    ...(stickyCookie !== undefined ? { stickyCookie } : {}),
    ...(log.retryAttempts > 0 ? { retried: true } : {}),
    ...(error !== undefined ? { error } : {}),
  };
}

/**
 * Which requests Traefik has started but not yet logged, from the access log's RequestCount (given
 * when a request arrives, logged when it ends): every count below the highest one seen that has
 * no line yet is a request still in flight (or one Traefik never logs). Counts start at 1 with a
 * fresh Traefik; call reset() when a new one starts.
 */
export class InFlightTracker {
  /** Every count up to this one has been logged. */
  #contiguous = 0;
  /** Counts logged above #contiguous. */
  readonly #above = new Set<number>();

  /** Records one logged request's count. */
  logged(count: number): void {
    if (count <= this.#contiguous) return;
    this.#above.add(count);
    while (this.#above.delete(this.#contiguous + 1)) this.#contiguous++;
  }

  /** True once every request numbered below `count` has been logged. */
  allLoggedBelow(count: number): boolean {
    return this.#contiguous >= count - 1;
  }

  /** Counts below `count` not logged yet (for messages). */
  missingBelow(count: number): number {
    let n = 0;
    for (let c = this.#contiguous + 1; c < count; c++) if (!this.#above.has(c)) n++;
    return n;
  }

  reset(): void {
    this.#contiguous = 0;
    this.#above.clear();
  }
}
