/**
 * HAProxy's Runtime API (https://docs.haproxy.org/2.6/management.html#9.3) over its stats socket:
 * a client (node:net, one command per connection, no shell, no socat) and the allow-list of
 * commands the lesson's console may forward.
 */
import net from 'node:net';

/** Longest console command accepted, in characters. */
export const MAX_COMMAND_LENGTH = 200;

const NAME = '[A-Za-z0-9_.:-]{1,64}';
const IPV4 = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)(?:\\.(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)){3}';

/** One allowed command shape. */
interface Allowed {
  /** How the command is written, for the help sentence. */
  usage: string;
  re: RegExp;
  /** Changes the running state (the lab's next apply then reloads to restore haproxy.cfg). */
  mutates: boolean;
  /** Extra check on the match; returns a sentence when the values are out of range. */
  check?: (m: RegExpExecArray) => string | null;
}

const weightCheck = (w: string | undefined): string | null =>
  w !== undefined && Number(w) > 256 ? `A weight is a whole number from 0 to 256, not ${w}.` : null;

/** The commands the console forwards, each matched as a whole by a strict pattern. */
export const ALLOWED_COMMANDS: readonly Allowed[] = [
  { usage: 'show info', re: /^show info$/, mutates: false },
  { usage: 'show stat', re: /^show stat$/, mutates: false },
  { usage: 'show servers state [<backend>]', re: new RegExp(`^show servers state(?: ${NAME})?$`), mutates: false },
  { usage: 'show servers conn [<backend>]', re: new RegExp(`^show servers conn(?: ${NAME})?$`), mutates: false },
  { usage: 'show backend', re: /^show backend$/, mutates: false },
  { usage: 'show sess', re: /^show sess$/, mutates: false },
  { usage: 'enable server <backend>/<server>', re: new RegExp(`^enable server ${NAME}/${NAME}$`), mutates: true },
  { usage: 'disable server <backend>/<server>', re: new RegExp(`^disable server ${NAME}/${NAME}$`), mutates: true },
  {
    usage: 'set server <backend>/<server> weight <0-256>',
    re: new RegExp(`^set server ${NAME}/${NAME} weight (\\d{1,3})$`),
    mutates: true,
    check: (m) => weightCheck(m[1]),
  },
  { usage: 'set server <backend>/<server> state ready|drain|maint', re: new RegExp(`^set server ${NAME}/${NAME} state (?:ready|drain|maint)$`), mutates: true },
  { usage: 'enable health <backend>/<server>', re: new RegExp(`^enable health ${NAME}/${NAME}$`), mutates: true },
  { usage: 'disable health <backend>/<server>', re: new RegExp(`^disable health ${NAME}/${NAME}$`), mutates: true },
  {
    usage: 'add server <backend>/<server> <ipv4>:<port> [weight <0-256>]',
    re: new RegExp(`^add server ${NAME}/${NAME} ${IPV4}:(\\d{1,5})(?: weight (\\d{1,3}))?$`),
    mutates: true,
    check: (m) => {
      const port = Number(m[1]);
      if (port < 1 || port > 65535) return `A port is a whole number from 1 to 65535, not ${m[1]}.`;
      return weightCheck(m[2]);
    },
  },
  { usage: 'del server <backend>/<server>', re: new RegExp(`^del server ${NAME}/${NAME}$`), mutates: true },
];

/** A console command that passed the allow-list. */
export interface CheckedCommand {
  /** The command as it will be sent (trimmed, runs of spaces made single). */
  command: string;
  /** It changes the running state. */
  mutates: boolean;
}

function allowedSentence(): string {
  return `Allowed commands: ${ALLOWED_COMMANDS.map((a) => a.usage).join('; ')}.`;
}

/**
 * Checks one console command against the allow-list.
 * @throws Error with a sentence naming what is allowed, for an empty, too long, multi-command
 *   (`;`, newline) or unknown command, or for values out of range.
 */
export function checkRuntimeCommand(input: string): CheckedCommand {
  if (typeof input !== 'string') throw new Error(`A Runtime API command is one line of text. ${allowedSentence()}`);
  if (input.length > MAX_COMMAND_LENGTH) {
    throw new Error(`That command is ${input.length} characters long; the console takes at most ${MAX_COMMAND_LENGTH}. ${allowedSentence()}`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[;\r\n\x00-\x08\x0b-\x1f\x7f]/.test(input)) {
    throw new Error(`The console runs one command at a time: no ";", no line breaks, no control characters. ${allowedSentence()}`);
  }
  const command = input.trim().replace(/[ \t]+/g, ' ');
  if (command === '') throw new Error(`Type a command. ${allowedSentence()}`);
  for (const a of ALLOWED_COMMANDS) {
    const m = a.re.exec(command);
    if (!m) continue;
    const problem = a.check?.(m) ?? null;
    if (problem) throw new Error(`${problem} ${allowedSentence()}`);
    return { command, mutates: a.mutates };
  }
  throw new Error(`"${command.slice(0, 60)}" is not a command this console forwards. ${allowedSentence()}`);
}

/**
 * Sends one command to the Runtime API socket and resolves with HAProxy's whole answer (HAProxy
 * closes the connection after answering a single non-interactive command).
 * @throws Error (a sentence) when the socket does not answer within `timeoutMs` or refuses the connection.
 */
export function runtimeApiRequest(socketPath: string, command: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(socketPath);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`HAProxy's Runtime API (${socketPath}) did not answer "${command}" within ${timeoutMs} ms.`));
    }, timeoutMs);
    socket.on('connect', () => socket.end(`${command}\n`));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(`HAProxy's Runtime API (${socketPath}) is not reachable: ${err.code ?? err.message}.`, { cause: err }));
    });
    socket.on('close', (hadError) => {
      clearTimeout(timer);
      if (!hadError) resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
}

/** `show info` as key/value pairs (`Pid`, `Version`, `Stopping`, ...). */
export function parseShowInfo(text: string): Map<string, string> {
  const info = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) info.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return info;
}

/** One row of `show servers conn <backend>`. */
export interface ServerConnRow {
  backend: string;
  server: string;
  /** Connections carrying a request now. */
  usedCur: number;
  /** Idle connections kept for reuse. */
  idleCur: number;
}

/**
 * Parses `show servers conn` (header `# bkname/svname bkid/svid addr port - purge_delay used_cur
 * used_max need_est unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[...]`).
 */
export function parseServersConn(text: string): ServerConnRow[] {
  const lines = text.split('\n');
  const header = lines.find((l) => l.startsWith('#'));
  if (!header) return [];
  const cols = header.slice(1).trim().split(/\s+/);
  const used = cols.indexOf('used_cur');
  const idle = cols.indexOf('idle_cur');
  const rows: ServerConnRow[] = [];
  for (const l of lines) {
    if (l.startsWith('#') || l.trim() === '') continue;
    const f = l.trim().split(/\s+/);
    const [backend, server] = f[0].split('/');
    if (!server) continue;
    rows.push({ backend, server, usedCur: Number(f[used] ?? 0), idleCur: Number(f[idle] ?? 0) });
  }
  return rows;
}

/** One server row of `show stat`, the fields the driver reads (https://docs.haproxy.org/2.6/management.html#9.1). */
export interface StatServerRow {
  backend: string;
  server: string;
  /** `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (going up), `DRAIN`, `NOLB`, `MAINT`, `no check`, ... */
  status: string;
  /** Requests in flight on the server (current sessions) and waiting in its queue. */
  scur: number;
  qcur: number;
  /** Last check's status (`L7OK`, `L4CON`, `L7STS`, `L7TOUT`, `INI`, ...), without the `* ` of a check in progress; '' without checks. */
  checkStatus: string;
  /** A check is running now (`* ` prefix). */
  checkRunning: boolean;
  /** The last check's HTTP status, or null. */
  checkCode: number | null;
  /** The last check's duration in ms, or null. */
  checkDuration: number | null;
  /** `check_desc`, e.g. `Layer4 connection problem`. */
  checkDesc: string;
  /** `last_chk`, e.g. `Connection refused`. */
  lastCheck: string;
  /** The health counter (0 .. rise+fall-1), rise and fall; null without checks. */
  checkHealth: number | null;
  checkRise: number | null;
  checkFall: number | null;
}

/** Splits one CSV line of `show stat` (HAProxy quotes fields holding a comma or a quote). */
function csvFields(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** The server rows (type 2) of `show stat`, by the names of its `# pxname,svname,...` header. */
export function parseShowStat(text: string): StatServerRow[] {
  const lines = text.split('\n');
  const header = lines.find((l) => l.startsWith('# '));
  if (!header) return [];
  const cols = csvFields(header.slice(2));
  const at = (f: string[], name: string) => {
    const i = cols.indexOf(name);
    return i === -1 ? '' : (f[i] ?? '');
  };
  const num = (v: string) => (v === '' || !/^-?\d+$/.test(v) ? null : Number(v));
  const rows: StatServerRow[] = [];
  for (const l of lines) {
    if (l.startsWith('#') || l.trim() === '') continue;
    const f = csvFields(l);
    if (at(f, 'type') !== '2') continue;
    const raw = at(f, 'check_status');
    rows.push({
      backend: at(f, 'pxname'),
      server: at(f, 'svname'),
      status: at(f, 'status'),
      scur: num(at(f, 'scur')) ?? 0,
      qcur: num(at(f, 'qcur')) ?? 0,
      checkStatus: raw.replace(/^\* /, ''),
      checkRunning: raw.startsWith('* '),
      checkCode: num(at(f, 'check_code')),
      checkDuration: num(at(f, 'check_duration')),
      checkDesc: at(f, 'check_desc'),
      lastCheck: at(f, 'last_chk'),
      checkHealth: num(at(f, 'check_health')),
      checkRise: num(at(f, 'check_rise')),
      checkFall: num(at(f, 'check_fall')),
    });
  }
  return rows;
}
