/**
 * Parses the access-log lines HAProxy writes in the lab's LOG_FORMAT (render.ts), e.g.
 *
 * ```
 * 127.0.0.1:52316 [21/Nov/2026:23:45:09.670] web web_dynamic/web_dynamic-2-abcd 0/0/0/4/4 200 427 --NI 1/1/0/0/0 0/0 {web_dynamic-2-abcd} "GET /api/ HTTP/1.1" router=web_dynamic upstream=127.0.0.1:49400 start=1795304709.670+0+0
 * ```
 *
 * Field meanings: https://docs.haproxy.org/2.6/configuration.html#8.2.3 (HTTP log format) and
 * #8.5 (termination states). Pure.
 */

/** One access-log line, field by field (names as in HAProxy's manual). */
export interface HaproxyAccessLog {
  /** Client `ip:port` as HAProxy accepted it. */
  client: string;
  frontend: string;
  backend: string;
  /** Server name, or `<NOSRV>` when no server was chosen. */
  server: string;
  /** TR/Tw/Tc/Tr/Ta in ms; -1 where the phase was not reached. */
  timers: { TR: number; Tw: number; Tc: number; Tr: number; Ta: number };
  /** HTTP status sent to the client; -1 when none was sent. */
  status: number;
  bytes: number;
  /** Termination state with cookie flags, 4 characters, e.g. `--NI`, `SC--`, `LR--`. */
  terminationState: string;
  /** Retries (`%rc`), a leading `+` (redispatched) dropped. */
  retries: number;
  redispatched: boolean;
  /** The captured X-Served-By value, or null. */
  servedBy: string | null;
  method: string;
  /** Request target as the client sent it (before any rewrite). */
  path: string;
  /** `txn.router`, or null when no router matched. */
  router: string | null;
  /** The proxy->backend connection's source `ip:port`, or null when no backend connection was used. */
  upstream: string | null;
  /** When the request started (accept date + handshake + idle time), epoch ms. */
  startMs: number;
}

const LINE = new RegExp(
  '^(\\S+:\\d+) \\[[^\\]]*\\] (\\S+) (\\S+)/(\\S+) ' +
    '(-?\\d+)/(-?\\d+)/(-?\\d+)/(-?\\d+)/(-?\\d+) (-?\\d+) (\\d+) (\\S{4}) ' +
    '\\d+/\\d+/\\d+/\\d+/(\\+?)(\\d+) \\d+/\\d+ (?:\\{([^}]*)\\} )?"([^"]*)" ' +
    'router=(\\S+) upstream=(\\S+) start=(\\d+)\\.(\\d+)\\+(-?\\d+)\\+(-?\\d+)$',
);

/**
 * Parses one line of the lab's HAProxy access log; null for any other line (HAProxy's NOTICE,
 * WARNING and ALERT messages, or a line in another format).
 */
export function parseAccessLog(line: string): HaproxyAccessLog | null {
  const m = LINE.exec(line);
  if (!m) return null;
  const [, client, frontend, backend, server, TR, Tw, Tc, Tr, Ta, status, bytes, ts, plus, rc, servedBy, request, router, upstream, sec, ms, Th, Ti] = m;
  // `%{+Q}r` is `METHOD TARGET HTTP/x.y`, or `<BADREQ>` when the request could not be parsed.
  const sp1 = request.indexOf(' ');
  const sp2 = request.lastIndexOf(' ');
  const method = sp1 === -1 ? request : request.slice(0, sp1);
  const path = sp1 === -1 ? '' : sp2 > sp1 ? request.slice(sp1 + 1, sp2) : request.slice(sp1 + 1);
  const upstreamOk = !upstream.startsWith('-');
  return {
    client,
    frontend,
    backend,
    server,
    timers: { TR: Number(TR), Tw: Number(Tw), Tc: Number(Tc), Tr: Number(Tr), Ta: Number(Ta) },
    status: Number(status),
    bytes: Number(bytes),
    terminationState: ts,
    retries: Number(rc),
    redispatched: plus === '+',
    servedBy: servedBy === undefined || servedBy === '' ? null : servedBy,
    method,
    path,
    router: router === '-' ? null : router,
    upstream: upstreamOk ? upstream : null,
    startMs: Number(sec) * 1000 + Number(ms) + Math.max(0, Number(Th)) + Math.max(0, Number(Ti)),
  };
}

/**
 * What went wrong, from the termination state's first two characters (who ended the exchange and
 * in which phase), or undefined when the exchange ended normally or the proxy answered by rule
 * (e.g. `LR` for the 404 of no router). `<NOSRV>` in a routed request = no server to send it to.
 * https://docs.haproxy.org/2.6/configuration.html#8.5
 */
export function errorOf(log: Pick<HaproxyAccessLog, 'server' | 'router' | 'terminationState'>): string | undefined {
  const who = log.terminationState[0];
  const phase = log.terminationState[1];
  if (log.server === '<NOSRV>' && log.router !== null && who !== 'C' && who !== 'c') return 'no server available';
  if (who === 'S') {
    if (phase === 'C') return 'server connection failed';
    return 'server aborted';
  }
  if (who === 's') return phase === 'C' ? 'server connect timeout' : 'server timeout';
  if (who === 'C' || who === 'c') return 'client closed request';
  if (who === 'P' || who === 'I' || who === 'D' || who === 'K') return `proxy error (${log.terminationState.slice(0, 2)})`;
  return undefined;
}

// ---------------------------------------------------------------- HAProxy's own messages

/** One `[LEVEL]   (pid) : text` message line from HAProxy's stderr. */
export interface HaproxyMessage {
  level: 'NOTICE' | 'WARNING' | 'ALERT';
  /** The process that wrote it (master or a worker). */
  pid: number;
  /** The text, without the level, the pid and a context such as `CLI : ` or `config : `. */
  text: string;
}

const MESSAGE = /^\[(NOTICE|WARNING|ALERT)\]\s+\((\d+)\) : (?:(?:CLI|config|parsing \[[^\]]*\]) : )?(.*)$/;

/**
 * Parses one message line, e.g. `[WARNING]  (4711) : CLI : Server web_dynamic/b1 is DOWN. ...`. HAProxy 2.6
 * keeps the context of the last CLI command (`CLI : `) on the lines a worker writes after it; it is dropped.
 */
export function parseHaproxyMessage(line: string): HaproxyMessage | null {
  const m = MESSAGE.exec(line);
  if (!m) return null;
  return { level: m[1] as HaproxyMessage['level'], pid: Number(m[2]), text: m[3] };
}

/** What a health message says: one probe that moved a server's health, or a server going UP or DOWN. */
export type HealthMessage =
  | {
      kind: 'probe';
      backend: string;
      server: string;
      ok: boolean;
      /** HAProxy's reason, e.g. `Layer4 connection problem`, `Layer7 wrong status`, `Layer7 check passed`. */
      reason: string;
      /** The HTTP status of the answer, when there was one. */
      code: number | null;
      /** HAProxy's extra information, e.g. `Connection refused`, `Service Unavailable`. */
      info: string | null;
      durationMs: number;
      /** The health counter after this probe and the server's state: `1/2 UP` = health 1 of 2, still UP. */
      health: number;
      of: number;
      up: boolean;
    }
  | { kind: 'state'; backend: string; server: string; up: boolean; reason: string | null };

const PROBE =
  /^Health check for (?:backup )?server (\S+?)\/(\S+) (succeeded|failed|conditionally succeeded), reason: ([^,]+)(?:, code: (\d+))?(?:, info: "((?:[^"\\]|\\.)*)")?, check duration: (\d+)ms, status: (\d+)\/(\d+) (UP|DOWN)\.?$/;
/** `Server b/s is DOWN. 2 active ...`, `Server b/s is UP, reason: ... . 3 active ...`; not the maintenance or drain ones. */
const STATE = /^(?:Backup )?Server (\S+?)\/(\S+) is (UP|DOWN)(?:, reason: (.*?), check duration: \d+ms)?\. /;

/**
 * Parses the text of a health message (`option log-health-checks` probe lines and UP/DOWN
 * transitions, https://docs.haproxy.org/2.6/configuration.html#4.2-option%20log-health-checks), or null.
 */
export function parseHealthMessage(text: string): HealthMessage | null {
  const p = PROBE.exec(text);
  if (p) {
    const [, backend, server, outcome, reason, code, info, ms, health, of, state] = p;
    return {
      kind: 'probe',
      backend,
      server,
      ok: outcome !== 'failed',
      reason,
      code: code === undefined ? null : Number(code),
      info: info === undefined ? null : info.replace(/\\(.)/g, '$1'),
      durationMs: Number(ms),
      health: Number(health),
      of: Number(of),
      up: state === 'UP',
    };
  }
  const s = STATE.exec(text);
  if (s) return { kind: 'state', backend: s[1], server: s[2], up: s[3] === 'UP', reason: s[4] ?? null };
  return null;
}

/**
 * A failed probe's cause in the embedded proxy's words (`ECONNREFUSED`, `timeout`, `status 503`),
 * from HAProxy's reason and info; HAProxy's own wording otherwise.
 */
export function probeError(reason: string, code: number | null, info: string | null): string {
  if (/timeout/i.test(reason)) return 'timeout';
  if (info && /connection refused/i.test(info)) return 'ECONNREFUSED';
  if (/wrong status/i.test(reason) && code !== null) return `status ${code}`;
  return info ? `${reason}: ${info}` : reason;
}
