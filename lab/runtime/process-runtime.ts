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
import type { BackendRuntime, ReplicaHandle, ReplicaHooks, ReplicaSpec } from '../seams.ts';
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
/** What php -S prints on stderr before exiting when it cannot bind. */
const ADDRESS_IN_USE = /Address already in use/i;
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
    this.#stateDir = path.resolve(options.stateDir);
    this.#readyTimeoutMs = readyTimeoutMs;
    this.#entries = { ...PROCESS_BACKENDS, ...options.entries };
    this.#php = options.php === undefined ? 'php' : options.php;
    this.#pickPort = options.pickPort ?? pickFreePort;
    this.stateFile = path.join(this.#stateDir, `process-runtime-${this.#sessionId}.json`);
  }

  /**
   * Starts one replica of spec.service and resolves once it is ready (see the module comment).
   * hooks.onLog gets every stdout/stderr line from the start (and a `[runtime] ...` line on stderr
   * when a php backend runs on its fallback); hooks.onExit is called once, when a replica that
   * became ready exits (a start that fails is reported only by the rejection). Lines longer than
   * 8192 characters are cut. The handle's host is always 127.0.0.1; `implementation` is set for
   * php backends (`php 8.2.x`, or the fallback's `express (php not found)`).
   * @throws Error (rejection) if the service has no backend, the hostname is already running,
   *   stateDir is not writable, the process exits or is stopped before it is ready, readiness
   *   takes longer than readyTimeoutMs, or a php replica found no free port in 5 tries (the
   *   process group is then killed, and has exited, before the promise settles).
   */
  async start(spec: ReplicaSpec, hooks: ReplicaHooks): Promise<ReplicaHandle> {
    const label = `${spec.service} replica "${spec.hostname}"`;
    const backend = this.#entries[spec.service];
    if (!backend) throw new Error(`There is no process-mode backend for service "${spec.service}".`);
    if (this.#live.has(spec.hostname) || this.#starting.has(spec.hostname)) {
      throw new Error(`A replica named "${spec.hostname}" is already running; replica hostnames must be unique.`);
    }

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
      if (backend.kind !== 'php') return await this.#launch(spec, hooks, label, this.#nodePlan(backend), deadline);

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
        return await this.#launch(spec, hooks, label, this.#nodePlan(fallback), deadline);
      }

      for (let attempt = 1; ; attempt++) {
        const port = await this.#freePort();
        if (ticket.stopRequested) {
          this.#ports.delete(port);
          throw new Error(`${label} was stopped before it was ready.`);
        }
        const plan = this.#phpPlan(spec, php, backend.router, port);
        try {
          return await this.#launch(spec, hooks, label, plan, deadline);
        } catch (err) {
          if (!(err instanceof PortTakenError)) throw err;
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

  /** `node <entry>` with PORT=0: the port comes from its `listening on` line. */
  #nodePlan(backend: NodeBackend): LaunchPlan {
    return {
      command: process.execPath,
      args: [backend.entry],
      cwd: path.dirname(backend.entry),
      env: { ...backend.env, PORT: '0' },
      port: null,
      checkServedBy: false,
      sessionDir: null,
      implementation: backend.implementation,
      release() {},
    };
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
    return {
      command: php.command,
      args: ['-q', '-S', `127.0.0.1:${port}`, '-d', `session.save_path=${sessionDir}`, router],
      cwd: path.dirname(router),
      env: { PORT: String(port) },
      port,
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
    Object.assign(env, plan.env, { HOST: '127.0.0.1', LAB_HOSTNAME: spec.hostname, LAB_SESSION: this.#sessionId });
    const removeSessionDir = () => {
      if (!plan.sessionDir) return;
      try {
        fs.rmSync(plan.sessionDir, { recursive: true, force: true });
        fs.rmdirSync(path.dirname(plan.sessionDir)); // the run's php-sessions dir, once empty
      } catch {
        // not empty (other replicas) or already gone
      }
    };

    const child = spawn(plan.command, plan.args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env, cwd: plan.cwd });
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
    };
    this.#live.set(spec.hostname, replica);
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
        const portTaken = plan.port !== null && !replica.stopRequested && replica.stderrTail.some((l) => ADDRESS_IN_USE.test(l));
        failure.abort(portTaken ? new PortTakenError(`${label} could not bind port ${plan.port}.${tail}`) : new Error(`${label} ${why} before it was ready.${tail}`));
      }
      this.#live.delete(spec.hostname);
      this.#writeStateReporting();
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
