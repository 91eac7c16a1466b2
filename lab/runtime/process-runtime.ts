/**
 * ProcessRuntime: runs each demo-backend replica as a child process on 127.0.0.1.
 *
 * - Spawned with an argument array (never a shell), in its own process group (`detached`),
 *   with a minimal environment plus HOST=127.0.0.1, LAB_HOSTNAME and LAB_SESSION.
 * - Two kinds of backend (lab/runtime/backends.ts):
 *   - `node <entry>` with PORT=0: ready = it printed `listening on http://<host>:<port>` on stdout
 *     AND `GET /health` on that port answered 200;
 *   - `php -q -S 127.0.0.1:<port> -d session.save_path=<dir> <router>` (session_php): the runtime
 *     picks the port (binds port 0 on 127.0.0.1, reads it, closes it) and the replica gets a
 *     session directory of its own under `<stateDir>/php-sessions-<sessionId>/`, removed when
 *     the process has exited. Ready = `GET /health` answered 200 with `X-Served-By: <hostname>`
 *     (so another server that got the port first never counts). When php could not bind the
 *     port (someone took it in between), it is started again on another one, up to 5 times.
 *     Whether php is usable is checked once per runtime (`php -r ...`, argument array); without
 *     it the backend's Node fallback runs, and ReplicaHandle.implementation says so.
 *   Both are awaited; nothing is slept for.
 * - Stopped by signalling the whole process group: SIGTERM, then SIGKILL after a grace period.
 *   crash() is a SIGKILL to the group reported to hooks.onExit as unexpected (`expected: false`).
 * - Faults (setFault), through a side channel the proxy never routes:
 *   - node backends are spawned with an IPC channel (stdio slot `ipc`): the runtime sends
 *     `{ type: 'lab:set-fault', id, fault }` and resolves when the replica answers
 *     `{ type: 'lab:fault-set', id }`, which it does once the fault is in force
 *     (sandbox-images/shared/faults.js); the replica logs `<hostname> fault: ...` itself;
 *   - php backends get LAB_FAULT_FILE=`<its session dir>.fault.json`: the runtime writes the fault
 *     there (temp file + rename) and router.php reads it at the start of every request, so the
 *     fault is in force once the file is in place; php runs no code between requests, so the
 *     runtime writes the `<hostname> fault: ...` line into the replica's log for it.
 *   In Docker mode the same file (on a volume) works for every backend: the Node ones watch
 *   LAB_FAULT_FILE too and log the `fault:` line when they apply it.
 * - ReplicaSpec.port: the replica listens on exactly that port (node: PORT=<port>; php: -S
 *   127.0.0.1:<port>, no retry elsewhere); a taken port is refused with a sentence naming it.
 *   ReplicaSpec.env: extra variables (checked names, no lab-reserved ones) for the backend.
 * - Live replicas are listed in `<stateDir>/process-runtime-<sessionId>.json` so that the next
 *   run's sweep() can remove what a crashed lab left behind. A leftover is only killed if its
 *   /proc/<pid>/environ still carries `LAB_SESSION=<its session>` (a recycled pid is never hit).
 *
 * Linux-oriented: sweep() needs /proc; without it sweep() kills nothing and says so by returning 0.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { z } from 'zod';
import type { BackendRuntime, Fault, ReplicaHandle, ReplicaHooks, ReplicaSpec } from '../seams.ts';
import type { ServiceName } from '../topology.ts';
import { PROCESS_BACKENDS, type NodeBackend, type ProcessBackend } from './backends.ts';

export interface ProcessRuntimeOptions {
  /** Id of this lab run, `[A-Za-z0-9_-]{1,64}`. Put in every replica's env as LAB_SESSION and in the state file name. */
  sessionId: string;
  /** Directory for the state file (created if missing). Use the same one across runs so sweep() finds leftovers. */
  stateDir: string;
  /** How long start() waits for the `listening on` line plus a 200 from /health, in ms. Default 15000. */
  readyTimeoutMs?: number;
  /** Override the backend of some services (tests point one at a backend that never gets ready). */
  entries?: Partial<Record<ServiceName, ProcessBackend>>;
  /**
   * The PHP CLI for `php` backends: a command looked up on PATH, or an absolute path. Default `php`.
   * `null` = act as if PHP were not installed (the backend's fallback runs).
   */
  php?: string | null;
  /**
   * Where php replicas' ports come from (a test can hand out a port it holds, to see the retry).
   * Default: bind port 0 on 127.0.0.1, read the port, close.
   */
  pickPort?: () => Promise<number>;
  /** How long setFault() waits for a node replica to acknowledge a fault, in ms. Default 5000. */
  faultTimeoutMs?: number;
  /**
   * Node backends report every accepted and closed connection on stdout (`LAB_CONN_EVENTS=1`,
   * sandbox-images/shared/conn-events.js: `conn opened <peer>`, `conn closed <peer> by server
   * (keep-alive timeout)`); the Lab turns them into connection events. Default false.
   */
  connectionReports?: boolean;
}

/** One replica as listed in the state file. */
const StateReplica = z.object({
  pid: z.number().int().positive(),
  hostname: z.string(),
  service: z.string(),
  /** Epoch ms when it was spawned. */
  startedAt: z.number(),
  sessionId: z.string(),
});
type StateReplica = z.infer<typeof StateReplica>;

/** `<stateDir>/process-runtime-<sessionId>.json`. */
const StateFile = z.object({
  sessionId: z.string(),
  /** pid of the lab process that wrote it. */
  ownerPid: z.number().int(),
  /** That process's start time (/proc/<pid>/stat field 22, clock ticks since boot), to tell it from a recycled pid; null without /proc. */
  ownerStart: z.number().nullable(),
  /** Epoch ms of the last write. */
  updatedAt: z.number(),
  replicas: z.array(StateReplica),
});
type StateFile = z.infer<typeof StateFile>;

const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/;
const STATE_FILE = /^process-runtime-([A-Za-z0-9_-]{1,64})\.json$/;
const LISTENING = /^listening on http:\/\/(\S+):(\d{1,5})\s*$/;
/** Longest log line forwarded to onLog, in characters; the rest is cut with a marker. */
const MAX_LOG_LINE = 8192;
/** stderr lines kept to explain a failed start. */
const STDERR_TAIL = 8;
/** Environment variables passed through from the lab's own environment. */
const PASS_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'] as const;
/** How many ports a php replica tries when the one picked turns out to be taken. */
const PHP_PORT_ATTEMPTS = 5;
/** What php -S (and a node backend, `EADDRINUSE`) prints on stderr before exiting when it cannot bind. */
const ADDRESS_IN_USE = /Address already in use|EADDRINUSE/i;
/** ReplicaSpec.env names (lab/seams.ts). */
const ENV_NAME = /^[A-Z][A-Z0-9_]*$/;
/** Names the runtime sets itself or that change how node/php/the loader run: never from ReplicaSpec.env. */
const RESERVED_ENV = new Set(['PORT', 'HOST', 'SESSION_BACKEND', 'PHPRC', ...PASS_ENV]);
const RESERVED_ENV_PREFIX = /^(LAB_|NODE_|NPM_|LD_|PHP_INI|UV_)/;
const MAX_ENV_ENTRIES = 32;
const MAX_ENV_VALUE = 4096;
const FAULT_MODES = ['healthy', 'unhealthy', 'slow', 'errors', 'hang'] as const;
const MAX_SLOW_MS = 60_000;
/** Prints the version and whether the session extension is there, one per line. */
const PHP_CHECK_CODE = 'echo PHP_VERSION, "\\n", extension_loaded("session") ? "session" : "no-session", "\\n";';

/** The outcome of checking the PHP CLI once. */
type PhpCheck =
  | { ok: true; command: string; version: string }
  /** `implementation`: what the fallback reports, e.g. `express (php not found)`; `reason`: a sentence for the log. */
  | { ok: false; implementation: string; reason: string };

/** What one spawn of a replica runs. */
interface LaunchPlan {
  command: string;
  args: string[];
  cwd: string;
  /** Added to the minimal environment (HOST, LAB_HOSTNAME, LAB_SESSION are always set). */
  env: Record<string, string>;
  /** Known in advance (php); null = read from the `listening on` line (node). */
  port: number | null;
  /** The port the process is told to bind (php's, or a node backend's ReplicaSpec.port); null = any. */
  bindPort: number | null;
  /** Spawn with a Node IPC channel: the fault side channel of node backends. */
  ipc: boolean;
  /** LAB_FAULT_FILE of a php replica (the fault side channel), removed once the process has exited; else null. */
  faultFile: string | null;
  /** Readiness also needs `X-Served-By: <hostname>` on the /health answer. */
  checkServedBy: boolean;
  /** The per-replica session directory, removed once the process has exited. */
  sessionDir: string | null;
  implementation: string | undefined;
  /** Called once when the process is gone (or never started): frees the reserved port. */
  release(): void;
}

/** Thrown by one php launch whose port was taken: the caller tries another port. */
class PortTakenError extends Error {}

/** What start() says when ReplicaSpec.port is not free. */
function portTakenSentence(port: number, label: string): string {
  return `Port ${port} on 127.0.0.1 is taken by another process: ${label} cannot listen there.`;
}

/** A start() in progress, across its php port attempts. */
interface StartTicket {
  stopRequested: boolean;
  /** Resolves when that start() has settled. */
  settled: Promise<void>;
}

interface ExitInfo {
  code: number | null;
  signal: string | null;
}

interface LiveReplica {
  spec: ReplicaSpec;
  child: ChildProcess;
  pid: number;
  startedAt: number;
  ready: boolean;
  /** Set by stop(): the coming exit is expected. */
  stopRequested: boolean;
  /** Set when the process has exited (before its stdio is closed). */
  exit: ExitInfo | null;
  /** Resolves once the process has exited and its output is drained. */
  closed: Promise<ExitInfo>;
  /** Pending stop(), shared by concurrent callers. */
  stopping: Promise<void> | null;
  stderrTail: string[];
  hooks: ReplicaHooks;
  /** How faults reach it: the IPC channel (node) or its fault file (php). */
  faultChannel: { kind: 'ipc' } | { kind: 'file'; path: string };
  /** setFault() calls waiting for the replica's acknowledgement, by message id. */
  pendingFaults: Map<number, { resolve(): void; reject(err: Error): void }>;
}

function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const key of PASS_ENV) if (process.env[key] !== undefined) env[key] = process.env[key];
  return env;
}

/**
 * Runs `<command> -r <code>` once (argument array, no shell) to learn the PHP version and whether
 * sessions are available. Never rejects: an unusable PHP is an outcome.
 */
function checkPhp(command: string | null): Promise<PhpCheck> {
  if (command === null) {
    return Promise.resolve({ ok: false, implementation: 'express (php not found)', reason: 'PHP is switched off for this lab' });
  }
  return new Promise((resolve) => {
    execFile(command, ['-r', PHP_CHECK_CODE], { env: baseEnv(), timeout: 10_000, windowsHide: true }, (err, stdout) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'EACCES') {
          resolve({ ok: false, implementation: 'express (php not found)', reason: `php not found (${command}: ${code})` });
        } else {
          resolve({ ok: false, implementation: 'express (php not usable)', reason: `${command} -r failed: ${err.message.split('\n')[0]}` });
        }
        return;
      }
      const [version, session] = String(stdout).trim().split('\n');
      if (!/^\d+\.\d+\.\d+/.test(version ?? '')) {
        resolve({ ok: false, implementation: 'express (php not usable)', reason: `${command} printed no PHP version` });
      } else if (session !== 'session') {
        resolve({
          ok: false,
          implementation: 'express (php has no session extension)',
          reason: `PHP ${version} at ${command} has no session extension`,
        });
      } else {
        resolve({ ok: true, command, version: version! });
      }
    });
  });
}

/** Binds port 0 on 127.0.0.1, reads the port the system gave, closes: free a moment ago, not promised for later. */
function pickFreePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Whether 127.0.0.1:<port> can be bound right now (bind, close). Resolves false on EADDRINUSE.
 * @throws Error (rejection) with a sentence for any other bind error (e.g. EACCES below 1024).
 */
function portIsFree(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(false);
      else reject(new Error(`Cannot listen on port ${port} of 127.0.0.1: ${err.message}.`));
    });
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** `slow 500 ms`, `hang`, ...: a fault as log lines show it (the same words as sandbox-images/shared/faults.js). */
export function describeFault(fault: Fault): string {
  return fault.mode === 'slow' ? `slow ${fault.ms} ms` : fault.mode;
}

/**
 * Checks a fault from a caller that may not be typed (the Lab validates too, this is the runtime's own guard).
 * @throws Error with a sentence when the mode is unknown or slow's ms is not 1..60000.
 */
function checkFault(fault: unknown): Fault {
  const f = fault as { mode?: unknown; ms?: unknown } | null;
  if (f === null || typeof f !== 'object' || typeof f.mode !== 'string' || !(FAULT_MODES as readonly string[]).includes(f.mode)) {
    throw new Error(`A fault's mode must be one of ${FAULT_MODES.join(', ')}.`);
  }
  if (f.mode === 'slow') {
    if (typeof f.ms !== 'number' || !Number.isInteger(f.ms) || f.ms < 1 || f.ms > MAX_SLOW_MS) {
      throw new Error(`A slow fault needs ms, a whole number from 1 to ${MAX_SLOW_MS}, got ${JSON.stringify(f.ms)}.`);
    }
    return { mode: 'slow', ms: f.ms };
  }
  return { mode: f.mode as Exclude<Fault['mode'], 'slow'> };
}

/**
 * Checks ReplicaSpec.port and ReplicaSpec.env.
 * @throws Error with a sentence naming what is wrong.
 */
function checkSpec(spec: ReplicaSpec, label: string): void {
  if (spec.port !== undefined && (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65_535)) {
    throw new Error(`Cannot start ${label}: port must be a whole number from 1 to 65535, got ${JSON.stringify(spec.port)}.`);
  }
  if (spec.env === undefined) return;
  if (spec.env === null || typeof spec.env !== 'object' || Array.isArray(spec.env)) {
    throw new Error(`Cannot start ${label}: env must be an object of NAME: value strings.`);
  }
  const entries = Object.entries(spec.env);
  if (entries.length > MAX_ENV_ENTRIES) throw new Error(`Cannot start ${label}: env may hold at most ${MAX_ENV_ENTRIES} variables, got ${entries.length}.`);
  for (const [name, value] of entries) {
    if (!ENV_NAME.test(name) || name.length > 64) {
      throw new Error(`Cannot start ${label}: environment variable names are 1-64 of A-Z, 0-9 and _, starting with a letter; got ${JSON.stringify(name)}.`);
    }
    if (RESERVED_ENV.has(name) || RESERVED_ENV_PREFIX.test(name)) {
      throw new Error(`Cannot start ${label}: ${name} is set by the lab or changes how the runtime itself runs; it cannot be passed in env.`);
    }
    if (typeof value !== 'string' || value.length > MAX_ENV_VALUE || /[\0-\x1f\x7f]/.test(value)) {
      throw new Error(`Cannot start ${label}: the value of ${name} must be a string of at most ${MAX_ENV_VALUE} printable characters.`);
    }
  }
}

/** A directory-name-safe form of a hostname (the directory also gets a random suffix). */
function safeName(hostname: string): string {
  return hostname.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^\.+/, '_').slice(0, 80) || 'replica';
}

/** Signals a process group; a group that is already gone is not an error. */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Signals one process; one that is already gone is not an error. */
function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Reads `/proc/<pid>/stat`: state letter, process group id and start time (clock ticks since boot), or null if unreadable. */
function procStat(pid: number): { state: string; pgrp: number; start: number } | null {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // `pid (comm) state ppid pgrp ... starttime(field 22) ...`; comm may contain spaces and parentheses.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0], pgrp: Number(fields[2]), start: Number(fields[19]) };
  } catch {
    return null;
  }
}

/** True while a process exists and is not a zombie (a zombie holds no resources and cannot be killed further). */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  const stat = procStat(pid);
  return !(stat && (stat.state === 'Z' || stat.state === 'X'));
}

/** True if the live process `pid` carries `LAB_SESSION=<sessionId>` in its environment (Linux /proc). */
function hasSession(pid: number, sessionId: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`LAB_SESSION=${sessionId}`);
  } catch {
    return false; // gone, not ours to read, or no /proc: never kill what we cannot identify
  }
}

/**
 * True if the state file's writer is another process that is still running (same pid AND same
 * start time, so a recycled pid does not count). A runtime of this very process that was
 * dropped without stopAll() is abandoned, so its file is swept.
 */
function ownerIsAnotherLiveLab(state: { ownerPid: number; ownerStart: number | null }): boolean {
  if (state.ownerPid === process.pid || state.ownerStart === null || !isRunning(state.ownerPid)) return false;
  return procStat(state.ownerPid)?.start === state.ownerStart;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * GET http://127.0.0.1:<port>/health once on a fresh connection.
 * Resolves with the status code and X-Served-By; rejects on connection errors, per-attempt timeout or abort.
 */
function probeHealth(port: number, timeoutMs: number, signal: AbortSignal): Promise<{ status: number; servedBy: string | null }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/health', agent: false, timeout: timeoutMs, signal }, (res) => {
      res.resume();
      const servedBy = res.headers['x-served-by'];
      res.on('end', () => resolve({ status: res.statusCode ?? 0, servedBy: typeof servedBy === 'string' ? servedBy : null }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** Hands one output line to hooks.onLog, cut to MAX_LOG_LINE; a throwing hook is reported, not fatal. */
function forwardLine(hooks: ReplicaHooks, hostname: string, stream: 'stdout' | 'stderr', line: string): void {
  const text = line.length > MAX_LOG_LINE ? `${line.slice(0, MAX_LOG_LINE)} [... cut]` : line;
  try {
    hooks.onLog(stream, text);
  } catch (err) {
    console.error(`ProcessRuntime: onLog of ${hostname} threw: ${errorText(err)}`);
  }
}

export class ProcessRuntime implements BackendRuntime {
  readonly name = 'process' as const;
  /** Absolute path of this runtime's state file. */
  readonly stateFile: string;

  readonly #sessionId: string;
  readonly #connectionReports: boolean;
  readonly #stateDir: string;
  readonly #readyTimeoutMs: number;
  readonly #entries: Record<ServiceName, ProcessBackend>;
  readonly #php: string | null;
  readonly #pickPort: () => Promise<number>;
  /** The PHP check, made once, on the first php backend started. */
  #phpCheck: Promise<PhpCheck> | null = null;
  /** Every replica whose process has not finished exiting, by hostname (including ones still starting). */
  readonly #live = new Map<string, LiveReplica>();
  /** Every start() that has not settled, by hostname (a php start may be between two processes). */
  readonly #starting = new Map<string, StartTicket>();
  /** Ports picked for php replicas whose process has not exited. */
  readonly #ports = new Set<number>();
  readonly #faultTimeoutMs: number;
  /** Id of the next fault message sent over an IPC channel. */
  #faultMessageId = 0;

  /** @throws Error if sessionId is not `[A-Za-z0-9_-]{1,64}` or readyTimeoutMs is not a positive number. */
  constructor(options: ProcessRuntimeOptions) {
    if (!SESSION_ID.test(options.sessionId)) {
      throw new Error(`sessionId must be 1-64 letters, digits, "-" or "_", got ${JSON.stringify(options.sessionId)}.`);
    }
    const readyTimeoutMs = options.readyTimeoutMs ?? 15_000;
    if (!Number.isFinite(readyTimeoutMs) || readyTimeoutMs <= 0) {
      throw new Error(`readyTimeoutMs must be a positive number of milliseconds, got ${readyTimeoutMs}.`);
    }
    this.#sessionId = options.sessionId;
    this.#connectionReports = options.connectionReports ?? false;
    this.#stateDir = path.resolve(options.stateDir);
    this.#readyTimeoutMs = readyTimeoutMs;
    this.#entries = { ...PROCESS_BACKENDS, ...options.entries };
    this.#php = options.php === undefined ? 'php' : options.php;
    this.#pickPort = options.pickPort ?? pickFreePort;
    const faultTimeoutMs = options.faultTimeoutMs ?? 5000;
    if (!Number.isFinite(faultTimeoutMs) || faultTimeoutMs <= 0) {
      throw new Error(`faultTimeoutMs must be a positive number of milliseconds, got ${faultTimeoutMs}.`);
    }
    this.#faultTimeoutMs = faultTimeoutMs;
    this.stateFile = path.join(this.#stateDir, `process-runtime-${this.#sessionId}.json`);
  }

  /**
   * Starts one replica of spec.service and resolves once it is ready (see the module comment).
   * hooks.onLog gets every stdout/stderr line from the start (and a `[runtime] ...` line on stderr
   * when a php backend runs on its fallback); hooks.onExit is called once, when a replica that
   * became ready exits (a start that fails is reported only by the rejection). Lines longer than
   * 8192 characters are cut. The handle's host is always 127.0.0.1; `implementation` is set for
   * php backends (`php 8.2.x`, or the fallback's `express (php not found)`). With spec.port the
   * replica listens on exactly that port (handle.port === spec.port); spec.env reaches the backend.
   * @throws Error (rejection) if the service has no backend, the hostname is already running,
   *   spec.port or spec.env is invalid (names: /^[A-Z][A-Z0-9_]*$/, not PORT, HOST, PATH, HOME,
   *   LANG, LC_ALL, TZ, TMPDIR, SESSION_BACKEND, PHPRC nor LAB_*, NODE_*, NPM_*, LD_*, PHP_INI*,
   *   UV_*; values printable, up to 4096 characters; at most 32), spec.port is taken (`Port <n> on
   *   127.0.0.1 is taken by another process: ...`), stateDir is not writable, the process exits or
   *   is stopped before it is ready, readiness takes longer than readyTimeoutMs, or a php replica
   *   found no free port in 5 tries (the process group is then killed, and has exited, before the
   *   promise settles).
   */
  async start(spec: ReplicaSpec, hooks: ReplicaHooks): Promise<ReplicaHandle> {
    const label = `${spec.service} replica "${spec.hostname}"`;
    const backend = this.#entries[spec.service];
    if (!backend) throw new Error(`There is no process-mode backend for service "${spec.service}".`);
    if (this.#live.has(spec.hostname) || this.#starting.has(spec.hostname)) {
      throw new Error(`A replica named "${spec.hostname}" is already running; replica hostnames must be unique.`);
    }
    checkSpec(spec, label);
    const fixedPort = spec.port ?? null;

    // The state file is what lets a later sweep() clean up after a crash: no state, no start.
    try {
      fs.mkdirSync(this.#stateDir, { recursive: true });
      fs.accessSync(this.#stateDir, fs.constants.W_OK);
    } catch (err) {
      throw new Error(`Cannot start ${label}: the runtime state directory ${this.#stateDir} is not writable (${errorText(err)}).`);
    }

    let settle!: () => void;
    const ticket: StartTicket = { stopRequested: false, settled: new Promise<void>((resolve) => (settle = resolve)) };
    this.#starting.set(spec.hostname, ticket);
    try {
      const deadline = Date.now() + this.#readyTimeoutMs;
      // A quick, clear refusal; the backend failing to bind later (a race) is reported the same way.
      if (fixedPort !== null && (this.#ports.has(fixedPort) || !(await portIsFree(fixedPort)))) {
        throw new Error(portTakenSentence(fixedPort, label));
      }
      if (ticket.stopRequested) throw new Error(`${label} was stopped before it was ready.`);
      if (backend.kind !== 'php') return await this.#launchNode(spec, hooks, label, this.#nodePlan(backend, spec), deadline);

      this.#phpCheck ??= checkPhp(this.#php);
      const php = await this.#phpCheck;
      if (!php.ok) {
        forwardLine(hooks, spec.hostname, 'stderr', `[runtime] ${php.reason}: ${spec.service} runs on its Node stand-in (${php.implementation})`);
        const fallback: NodeBackend = {
          ...backend.fallback,
          env: { ...backend.fallback.env, SESSION_BACKEND: php.implementation },
          implementation: php.implementation,
        };
        if (ticket.stopRequested) throw new Error(`${label} was stopped before it was ready.`);
        return await this.#launchNode(spec, hooks, label, this.#nodePlan(fallback, spec), deadline);
      }

      for (let attempt = 1; ; attempt++) {
        let port: number;
        if (fixedPort !== null) {
          this.#ports.add(fixedPort);
          port = fixedPort;
        } else {
          port = await this.#freePort();
        }
        if (ticket.stopRequested) {
          this.#ports.delete(port);
          throw new Error(`${label} was stopped before it was ready.`);
        }
        const plan = this.#phpPlan(spec, php, backend.router, port);
        try {
          return await this.#launch(spec, hooks, label, plan, deadline);
        } catch (err) {
          if (!(err instanceof PortTakenError)) throw err;
          if (fixedPort !== null) throw new Error(portTakenSentence(fixedPort, label));
          if (attempt >= PHP_PORT_ATTEMPTS) {
            throw new Error(`${label} found no free port in ${PHP_PORT_ATTEMPTS} tries (the last, ${port}, was taken before php could bind it).`);
          }
          forwardLine(hooks, spec.hostname, 'stderr', `[runtime] port ${port} was taken before php could bind it; trying another one`);
        }
      }
    } finally {
      this.#starting.delete(spec.hostname);
      settle();
    }
  }

  /**
   * `node <entry>` with PORT=0 (or ReplicaSpec.port) and an IPC channel for faults: the port comes
   * from its `listening on` line.
   */
  #nodePlan(backend: NodeBackend, spec: ReplicaSpec): LaunchPlan {
    return {
      command: process.execPath,
      args: [backend.entry],
      cwd: path.dirname(backend.entry),
      env: { ...backend.env, PORT: String(spec.port ?? 0) },
      port: null,
      bindPort: spec.port ?? null,
      ipc: true,
      faultFile: null,
      checkServedBy: false,
      sessionDir: null,
      implementation: backend.implementation,
      release() {},
    };
  }

  /** #launch for a node plan: a fixed port someone else took is refused with a sentence naming it. */
  async #launchNode(spec: ReplicaSpec, hooks: ReplicaHooks, label: string, plan: LaunchPlan, deadline: number): Promise<ReplicaHandle> {
    try {
      return await this.#launch(spec, hooks, label, plan, deadline);
    } catch (err) {
      if (err instanceof PortTakenError && plan.bindPort !== null) throw new Error(portTakenSentence(plan.bindPort, label));
      throw err;
    }
  }

  /**
   * `php -q -S 127.0.0.1:<port> -d session.save_path=<new dir> <router>`. `-q` keeps php -S from
   * logging two lines per connection; the router writes its own access log line.
   * @throws Error if the session directory cannot be created (the port is released).
   */
  #phpPlan(spec: ReplicaSpec, php: { command: string; version: string }, router: string, port: number): LaunchPlan {
    const release = () => this.#ports.delete(port);
    let sessionDir: string;
    try {
      if (this.#stateDir.includes(';')) throw new Error('PHP reads ";" in session.save_path as a separator');
      const base = path.join(this.#stateDir, `php-sessions-${this.#sessionId}`);
      fs.mkdirSync(base, { recursive: true, mode: 0o700 });
      sessionDir = fs.mkdtempSync(path.join(base, `${safeName(spec.hostname)}-`));
    } catch (err) {
      release();
      throw new Error(`Cannot create a session directory for ${spec.service} replica "${spec.hostname}" under ${this.#stateDir}: ${errorText(err)}.`);
    }
    const faultFile = `${sessionDir}.fault.json`;
    return {
      command: php.command,
      args: ['-q', '-S', `127.0.0.1:${port}`, '-d', `session.save_path=${sessionDir}`, router],
      cwd: path.dirname(router),
      env: { PORT: String(port), LAB_FAULT_FILE: faultFile },
      port,
      bindPort: port,
      ipc: false,
      faultFile,
      checkServedBy: true,
      sessionDir,
      implementation: `php ${php.version}`,
      release,
    };
  }

  /** A port that was free on 127.0.0.1 a moment ago and is not promised to another php replica of this runtime. */
  async #freePort(): Promise<number> {
    for (let i = 0; i < 20; i++) {
      const port = await this.#pickPort();
      if (!this.#ports.has(port)) {
        this.#ports.add(port);
        return port;
      }
    }
    throw new Error('Could not find a free port on 127.0.0.1 for a php replica.');
  }

  /**
   * Spawns one process for a replica and resolves once it is ready, or rejects (PortTakenError
   * when php could not bind its port) after the process has exited.
   */
  async #launch(spec: ReplicaSpec, hooks: ReplicaHooks, label: string, plan: LaunchPlan, deadline: number): Promise<ReplicaHandle> {
    const env = baseEnv();
    // ReplicaSpec.env cannot name what follows (checkSpec), so the lab's own variables always win.
    Object.assign(env, spec.env, plan.env, { HOST: '127.0.0.1', LAB_HOSTNAME: spec.hostname, LAB_SESSION: this.#sessionId });
    if (this.#connectionReports) env.LAB_CONN_EVENTS = '1';
    const removeSessionDir = () => {
      if (!plan.sessionDir) return;
      try {
        if (plan.faultFile) fs.rmSync(plan.faultFile, { force: true });
        fs.rmSync(plan.sessionDir, { recursive: true, force: true });
        fs.rmdirSync(path.dirname(plan.sessionDir)); // the run's php-sessions dir, once empty
      } catch {
        // not empty (other replicas) or already gone
      }
    };

    const child = spawn(plan.command, plan.args, {
      detached: true,
      stdio: plan.ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
      env,
      cwd: plan.cwd,
    });
    if (child.pid === undefined) {
      const err = await new Promise<Error>((resolve) => child.once('error', resolve));
      plan.release();
      removeSessionDir();
      throw new Error(`Could not start ${label} (${plan.command} ${plan.args.join(' ')}): ${err.message}.`);
    }
    const pid = child.pid;

    // Readiness fails through this controller: timeout, early exit, or stop() while starting.
    const failure = new AbortController();
    let resolvePort!: (port: number) => void;
    const portLine = new Promise<number>((resolve) => (resolvePort = resolve));
    let portSeen = plan.port !== null;
    if (plan.port !== null) resolvePort(plan.port);
    let lastProbe = 'no probe answered yet';

    let resolveClosed!: (info: ExitInfo) => void;
    const replica: LiveReplica = {
      spec,
      child,
      pid,
      startedAt: Date.now(),
      ready: false,
      stopRequested: false,
      exit: null,
      closed: new Promise<ExitInfo>((resolve) => (resolveClosed = resolve)),
      stopping: null,
      stderrTail: [],
      hooks,
      faultChannel: plan.faultFile ? { kind: 'file', path: plan.faultFile } : { kind: 'ipc' },
      pendingFaults: new Map(),
    };
    this.#live.set(spec.hostname, replica);
    if (plan.ipc) {
      child.on('message', (message: unknown) => {
        const m = message as { type?: unknown; id?: unknown; error?: unknown } | null;
        if (m === null || typeof m !== 'object' || typeof m.id !== 'number') return;
        const pending = replica.pendingFaults.get(m.id);
        if (!pending) return;
        if (m.type === 'lab:fault-set') pending.resolve();
        else if (m.type === 'lab:fault-refused') pending.reject(new Error(`${label} refused the fault: ${String(m.error)}.`));
      });
    }
    this.#writeStateReporting();

    const forward = (stream: 'stdout' | 'stderr', line: string) => {
      if (stream === 'stdout' && !portSeen) {
        const m = LISTENING.exec(line);
        if (m) {
          portSeen = true;
          resolvePort(Number(m[2]));
        }
      }
      if (stream === 'stderr') {
        replica.stderrTail.push(line.length > MAX_LOG_LINE ? line.slice(0, MAX_LOG_LINE) : line);
        if (replica.stderrTail.length > STDERR_TAIL) replica.stderrTail.shift();
      }
      forwardLine(hooks, spec.hostname, stream, line);
    };
    const outLines = readline.createInterface({ input: child.stdout!, crlfDelay: Infinity });
    const errLines = readline.createInterface({ input: child.stderr!, crlfDelay: Infinity });
    outLines.on('line', (line) => forward('stdout', line));
    errLines.on('line', (line) => forward('stderr', line));

    child.once('exit', (code, signal) => {
      replica.exit = { code, signal };
      // A grandchild holding the pipes open must not hold up 'close' for ever.
      setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }, 2000).unref();
    });
    // 'close' comes after 'exit' once stdout/stderr are drained, so every log line is in.
    child.once('close', () => {
      const info = replica.exit ?? { code: child.exitCode, signal: child.signalCode };
      plan.release();
      removeSessionDir();
      if (!replica.ready && !failure.signal.aborted) {
        const how = info.signal ? `was killed by ${info.signal}` : `exited with code ${info.code}`;
        const why = replica.stopRequested ? 'was stopped' : how;
        const tail = replica.stderrTail.length ? ` Last stderr: ${replica.stderrTail.join(' | ')}` : '';
        const portTaken = plan.bindPort !== null && !replica.stopRequested && replica.stderrTail.some((l) => ADDRESS_IN_USE.test(l));
        failure.abort(portTaken ? new PortTakenError(`${label} could not bind port ${plan.bindPort}.${tail}`) : new Error(`${label} ${why} before it was ready.${tail}`));
      }
      this.#live.delete(spec.hostname);
      this.#writeStateReporting();
      for (const pending of replica.pendingFaults.values()) pending.reject(new Error(`${label} exited before it acknowledged the fault.`));
      replica.pendingFaults.clear();
      resolveClosed(info);
      if (replica.ready) {
        try {
          hooks.onExit({ ...info, expected: replica.stopRequested });
        } catch (err) {
          console.error(`ProcessRuntime: onExit of ${spec.hostname} threw: ${errorText(err)}`);
        }
      }
    });
    child.on('error', (err) => {
      // Only signalling errors reach here once the process exists; the exit handlers do the rest.
      forward('stderr', `[runtime] ${err.message}`);
    });

    const timeout = setTimeout(
      () => {
        const stage = portSeen
          ? `GET /health did not answer 200 (${lastProbe})`
          : 'it never printed "listening on http://<host>:<port>" on stdout';
        failure.abort(new Error(`${label} did not become ready within ${this.#readyTimeoutMs} ms: ${stage}. It was stopped.`));
      },
      Math.max(0, deadline - Date.now()),
    );

    const failed = new Promise<never>((_, reject) => {
      failure.signal.addEventListener('abort', () => reject(failure.signal.reason), { once: true });
    });
    failed.catch(() => {}); // observed below; avoid an unhandled rejection when start succeeds first

    try {
      const port = await Promise.race([portLine, failed]);
      if (plan.bindPort !== null && port !== plan.bindPort) {
        throw new Error(`${label} listens on port ${port}, not on port ${plan.bindPort} it was given. It was stopped.`);
      }
      // A node server printed the line after binding, so the first probe normally succeeds; php
      // needs a moment to bind. Retry (short, growing back-off) only while the probe itself fails.
      let backoffMs = 20;
      for (;;) {
        failure.signal.throwIfAborted();
        try {
          const { status, servedBy } = await probeHealth(port, 2000, failure.signal);
          if (plan.checkServedBy && servedBy !== spec.hostname) {
            lastProbe = `port ${port} answered as ${servedBy === null ? 'another server' : JSON.stringify(servedBy)}`;
          } else if (status === 200) {
            break;
          } else {
            lastProbe = `last answer: HTTP ${status}`;
          }
        } catch (err) {
          if (failure.signal.aborted) throw failure.signal.reason;
          lastProbe = `last error: ${errorText(err)}`;
        }
        await delay(backoffMs, undefined, { signal: failure.signal }).catch(() => {});
        backoffMs = Math.min(backoffMs * 2, 250);
      }
      failure.signal.throwIfAborted();
      clearTimeout(timeout);
      replica.ready = true;
      const handle: ReplicaHandle = { service: spec.service, hostname: spec.hostname, host: '127.0.0.1', port, pid, readyAt: Date.now() };
      if (plan.implementation !== undefined) handle.implementation = plan.implementation;
      return handle;
    } catch (err) {
      clearTimeout(timeout);
      if (!replica.exit) signalGroup(pid, 'SIGKILL');
      await replica.closed;
      throw err instanceof Error ? err : new Error(String(err));
    }
  }

  /**
   * Stops one replica: SIGTERM to its process group, then SIGKILL after `graceMs` (default 2000 ms);
   * with `signal: 'SIGKILL'`, SIGKILL at once. Resolves when the process has exited (hooks.onExit
   * has then been called with expected=true). A replica still starting is stopped too (its start()
   * rejects; stop() resolves once that start() has settled). Unknown or already-gone hostname: resolves.
   * @throws Error (rejection) if graceMs is not a number between 0 and 600000.
   */
  async stop(hostname: string, opts: { signal?: 'SIGTERM' | 'SIGKILL'; graceMs?: number } = {}): Promise<void> {
    const graceMs = opts.graceMs ?? 2000;
    if (!Number.isFinite(graceMs) || graceMs < 0 || graceMs > 600_000) {
      throw new Error(`graceMs must be between 0 and 600000 milliseconds, got ${graceMs}.`);
    }
    const ticket = this.#starting.get(hostname);
    if (ticket) ticket.stopRequested = true; // no further php attempt is spawned
    const replica = this.#live.get(hostname);
    if (!replica) {
      await ticket?.settled;
      return;
    }
    replica.stopRequested = true;
    if (!replica.stopping) {
      replica.stopping = (async () => {
        if (replica.exit) {
          await replica.closed;
          return;
        }
        const signal = opts.signal ?? 'SIGTERM';
        signalGroup(replica.pid, signal);
        const killer =
          signal === 'SIGTERM'
            ? setTimeout(() => {
                if (!replica.exit) signalGroup(replica.pid, 'SIGKILL');
              }, graceMs)
            : null;
        await replica.closed;
        if (killer) clearTimeout(killer);
      })();
    } else if (opts.signal === 'SIGKILL' && !replica.exit) {
      // A SIGKILL asked while a gentle stop is pending wins.
      signalGroup(replica.pid, 'SIGKILL');
    }
    await replica.stopping;
    await ticket?.settled;
  }

  /** Stops every replica of this runtime, started or starting (SIGTERM, SIGKILL after 2000 ms); resolves when all have exited. */
  async stopAll(): Promise<void> {
    const hostnames = new Set([...this.#live.keys(), ...this.#starting.keys()]);
    await Promise.all([...hostnames].map((hostname) => this.stop(hostname)));
  }

  /**
   * Crashes a replica: SIGKILL to its process group, as if it had died on its own. Resolves once
   * it has exited (its port is then closed); hooks.onExit gets `expected: false` (unless a stop()
   * was already under way, which stays expected). A replica still starting is killed too: its
   * start() rejects and, never having been ready, it gets no onExit.
   * @throws Error (rejection) with a sentence when no process of that hostname is running.
   */
  async crash(hostname: string): Promise<void> {
    const replica = this.#live.get(hostname);
    if (!replica) throw new Error(`There is no running replica named "${hostname}" to crash.`);
    if (!replica.exit) signalGroup(replica.pid, 'SIGKILL');
    await replica.closed;
  }

  /**
   * Puts a running replica into a fault (see Fault in lab/seams.ts and the module comment) and
   * resolves once the replica has it in force: node backends acknowledge over their IPC channel;
   * php replicas read their fault file on every request, so once it is written it is in force.
   * The fault lasts until the next setFault() or the end of the process (a restart is healthy).
   * @throws Error (rejection) with a sentence for an invalid fault, an unknown hostname, a replica
   *   still starting or stopping, a node replica that does not acknowledge within faultTimeoutMs,
   *   or a fault file that cannot be written.
   */
  async setFault(hostname: string, fault: Fault): Promise<void> {
    const checked = checkFault(fault);
    const replica = this.#live.get(hostname);
    if (!replica) {
      if (this.#starting.has(hostname)) throw new Error(`Replica "${hostname}" is still starting; faults apply to running replicas.`);
      throw new Error(`There is no running replica named "${hostname}".`);
    }
    const label = `${replica.spec.service} replica "${hostname}"`;
    if (!replica.ready) throw new Error(`Replica "${hostname}" is still starting; faults apply to running replicas.`);
    if (replica.exit || replica.stopRequested) throw new Error(`Replica "${hostname}" is stopping; faults apply to running replicas.`);

    if (replica.faultChannel.kind === 'file') {
      const file = replica.faultChannel.path;
      const tmp = `${file}.${process.pid}.tmp`;
      try {
        fs.writeFileSync(tmp, `${JSON.stringify(checked)}\n`, { mode: 0o600 });
        fs.renameSync(tmp, file); // atomic: the router reads the old fault or the new one, never half
      } catch (err) {
        fs.rmSync(tmp, { force: true });
        throw new Error(`Cannot write the fault file of ${label} (${file}): ${errorText(err)}.`);
      }
      forwardLine(replica.hooks, hostname, 'stdout', `${hostname} fault: ${describeFault(checked)}`);
      return;
    }

    const id = ++this.#faultMessageId;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        replica.pendingFaults.delete(id);
        reject(new Error(`${label} did not acknowledge the fault "${describeFault(checked)}" within ${this.#faultTimeoutMs} ms.`));
      }, this.#faultTimeoutMs);
      const settle = (err?: Error) => {
        clearTimeout(timer);
        replica.pendingFaults.delete(id);
        if (err) reject(err);
        else resolve();
      };
      replica.pendingFaults.set(id, { resolve: () => settle(), reject: settle });
      try {
        replica.child.send({ type: 'lab:set-fault', id, fault: checked }, (err) => {
          if (err) settle(new Error(`Cannot send the fault to ${label}: ${err.message}.`));
        });
      } catch (err) {
        settle(new Error(`Cannot send the fault to ${label}: ${errorText(err)}.`));
      }
    });
  }

  /**
   * Removes what earlier runs left behind: reads every `process-runtime-*.json` in stateDir except
   * this session's and those whose writer (another lab process) is still running, SIGKILLs the process group of every listed pid that is still running AND whose
   * /proc/<pid>/environ carries `LAB_SESSION=<that session>`, waits until each is gone, then deletes
   * the stale state file and that session's php session directories (`php-sessions-<session>`).
   * Resolves with the number of processes killed.
   * @throws Error (rejection) if a killed process is still there after 10 s (its state file is kept
   *   so the next sweep retries), or if stateDir cannot be read for a reason other than not existing.
   */
  async sweep(): Promise<number> {
    let names: string[];
    try {
      names = fs.readdirSync(this.#stateDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw new Error(`Cannot read the runtime state directory ${this.#stateDir}: ${errorText(err)}.`);
    }

    const killed: number[] = [];
    const staleFiles: string[] = [];
    /** php-sessions-<id> directories of the stale sessions. */
    const staleDirs: string[] = [];
    for (const name of names) {
      const m = STATE_FILE.exec(name);
      if (!m || m[1] === this.#sessionId) continue;
      const file = path.join(this.#stateDir, name);
      let state: StateFile;
      try {
        state = StateFile.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
      } catch {
        staleFiles.push(file); // unreadable or not this shape: nothing in it can be identified; remove it
        staleDirs.push(path.join(this.#stateDir, `php-sessions-${m[1]}`));
        continue;
      }
      if (ownerIsAnotherLiveLab(state)) continue; // a lab that is still running owns these: not leftovers
      staleFiles.push(file);
      staleDirs.push(path.join(this.#stateDir, `php-sessions-${m[1]}`));
      for (const r of state.replicas) {
        if (r.pid <= 1 || r.pid === process.pid || !isRunning(r.pid) || !hasSession(r.pid, r.sessionId)) continue;
        // Spawned detached, so it leads its own group; if not (someone changed it), kill only the pid.
        const stat = procStat(r.pid);
        if (stat && stat.pgrp === r.pid) signalGroup(r.pid, 'SIGKILL');
        else signalPid(r.pid, 'SIGKILL');
        killed.push(r.pid);
      }
    }

    // These are not our children, so there is no exit event to await: watch /proc until each is gone.
    const deadline = Date.now() + 10_000;
    let remaining = killed.filter(isRunning);
    while (remaining.length > 0) {
      if (Date.now() > deadline) {
        throw new Error(`Leftover replica processes ${remaining.join(', ')} are still running 10 s after SIGKILL.`);
      }
      await delay(20);
      remaining = remaining.filter(isRunning);
    }
    for (const dir of staleDirs) fs.rmSync(dir, { recursive: true, force: true });
    for (const file of staleFiles) fs.rmSync(file, { force: true });
    return killed.length;
  }

  /** Writes the state file (temp file + rename), or deletes it when no replica is live. */
  #writeState(): void {
    if (this.#live.size === 0) {
      fs.rmSync(this.stateFile, { force: true });
      return;
    }
    const state: StateFile = {
      sessionId: this.#sessionId,
      ownerPid: process.pid,
      ownerStart: procStat(process.pid)?.start ?? null,
      updatedAt: Date.now(),
      replicas: [...this.#live.values()].map((r) => ({
        pid: r.pid,
        hostname: r.spec.hostname,
        service: r.spec.service,
        startedAt: r.startedAt,
        sessionId: this.#sessionId,
      })),
    };
    fs.mkdirSync(this.#stateDir, { recursive: true });
    const tmp = `${this.stateFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`);
    fs.renameSync(tmp, this.stateFile);
  }

  #writeStateReporting(): void {
    try {
      this.#writeState();
    } catch (err) {
      // Losing the state file only weakens the next sweep; the replicas themselves are fine.
      console.error(`ProcessRuntime: cannot write ${this.stateFile}: ${errorText(err)}`);
    }
  }
}
