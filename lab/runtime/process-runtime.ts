/**
 * ProcessRuntime: runs each demo-backend replica as a child `node` process on 127.0.0.1.
 *
 * - Spawned with an argument array (never a shell), in its own process group (`detached`),
 *   with a minimal environment plus PORT=0, HOST=127.0.0.1, LAB_HOSTNAME and LAB_SESSION.
 * - Ready = the replica printed `listening on http://<host>:<port>` on stdout AND
 *   `GET /health` on that port answered 200. Both are awaited; nothing is slept for.
 * - Stopped by signalling the whole process group: SIGTERM, then SIGKILL after a grace period.
 * - Live replicas are listed in `<stateDir>/process-runtime-<sessionId>.json` so that the next
 *   run's sweep() can remove what a crashed lab left behind. A leftover is only killed if its
 *   /proc/<pid>/environ still carries `LAB_SESSION=<its session>` (a recycled pid is never hit).
 *
 * Linux-oriented: sweep() needs /proc; without it sweep() kills nothing and says so by returning 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { z } from 'zod';
import type { BackendRuntime, ReplicaHandle, ReplicaHooks, ReplicaSpec } from '../seams.ts';
import type { ServiceName } from '../topology.ts';
import { PROCESS_BACKENDS, type ProcessBackend } from './backends.ts';

export interface ProcessRuntimeOptions {
  /** Id of this lab run, `[A-Za-z0-9_-]{1,64}`. Put in every replica's env as LAB_SESSION and in the state file name. */
  sessionId: string;
  /** Directory for the state file (created if missing). Use the same one across runs so sweep() finds leftovers. */
  stateDir: string;
  /** How long start() waits for the `listening on` line plus a 200 from /health, in ms. Default 15000. */
  readyTimeoutMs?: number;
  /** Override the entry script of some services (tests point one at a backend that never gets ready). */
  entries?: Partial<Record<ServiceName, ProcessBackend>>;
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
 * Resolves with the status code; rejects on connection errors, per-attempt timeout or abort.
 */
function probeHealth(port: number, timeoutMs: number, signal: AbortSignal): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/health', agent: false, timeout: timeoutMs, signal }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

export class ProcessRuntime implements BackendRuntime {
  readonly name = 'process' as const;
  /** Absolute path of this runtime's state file. */
  readonly stateFile: string;

  readonly #sessionId: string;
  readonly #stateDir: string;
  readonly #readyTimeoutMs: number;
  readonly #entries: Record<ServiceName, ProcessBackend>;
  /** Every replica whose process has not finished exiting, by hostname (including ones still starting). */
  readonly #live = new Map<string, LiveReplica>();

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
    this.stateFile = path.join(this.#stateDir, `process-runtime-${this.#sessionId}.json`);
  }

  /**
   * Spawns `node <entry>` for spec.service and resolves once it printed its `listening on` line and
   * `GET /health` answered 200. hooks.onLog gets every stdout/stderr line from the start;
   * hooks.onExit is called once, when a replica that became ready exits (a start that fails
   * is reported only by the rejection). Lines longer than 8192 characters are cut.
   * The handle's host is always 127.0.0.1; port is the one the replica printed.
   * @throws Error (rejection) if the service has no entry, the hostname is already running,
   *   stateDir is not writable, the process exits or is stopped before it is ready, or readiness
   *   takes longer than readyTimeoutMs (the process group is then killed, and has exited, before
   *   the promise settles).
   */
  async start(spec: ReplicaSpec, hooks: ReplicaHooks): Promise<ReplicaHandle> {
    const label = `${spec.service} replica "${spec.hostname}"`;
    const backend = this.#entries[spec.service];
    if (!backend) throw new Error(`There is no process-mode backend for service "${spec.service}".`);
    if (this.#live.has(spec.hostname)) {
      throw new Error(`A replica named "${spec.hostname}" is already running; replica hostnames must be unique.`);
    }

    // The state file is what lets a later sweep() clean up after a crash: no state, no start.
    try {
      fs.mkdirSync(this.#stateDir, { recursive: true });
      fs.accessSync(this.#stateDir, fs.constants.W_OK);
    } catch (err) {
      throw new Error(`Cannot start ${label}: the runtime state directory ${this.#stateDir} is not writable (${errorText(err)}).`);
    }

    const env: NodeJS.ProcessEnv = {};
    for (const key of PASS_ENV) if (process.env[key] !== undefined) env[key] = process.env[key];
    Object.assign(env, { PORT: '0', HOST: '127.0.0.1', LAB_HOSTNAME: spec.hostname, LAB_SESSION: this.#sessionId });

    const child = spawn(process.execPath, [backend.entry], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
      cwd: path.dirname(backend.entry),
    });
    if (child.pid === undefined) {
      const err = await new Promise<Error>((resolve) => child.once('error', resolve));
      throw new Error(`Could not start ${label} (${process.execPath} ${backend.entry}): ${err.message}.`);
    }
    const pid = child.pid;

    // Readiness fails through this controller: timeout, early exit, or stop() while starting.
    const failure = new AbortController();
    let resolvePort!: (port: number) => void;
    const portLine = new Promise<number>((resolve) => (resolvePort = resolve));
    let portSeen = false;
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
      const text = line.length > MAX_LOG_LINE ? `${line.slice(0, MAX_LOG_LINE)} [... cut]` : line;
      if (stream === 'stdout' && !portSeen) {
        const m = LISTENING.exec(line);
        if (m) {
          portSeen = true;
          resolvePort(Number(m[2]));
        }
      }
      if (stream === 'stderr') {
        replica.stderrTail.push(text);
        if (replica.stderrTail.length > STDERR_TAIL) replica.stderrTail.shift();
      }
      try {
        hooks.onLog(stream, text);
      } catch (err) {
        console.error(`ProcessRuntime: onLog of ${spec.hostname} threw: ${errorText(err)}`);
      }
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
      if (!replica.ready && !failure.signal.aborted) {
        const how = info.signal ? `was killed by ${info.signal}` : `exited with code ${info.code}`;
        const why = replica.stopRequested ? 'was stopped' : how;
        const tail = replica.stderrTail.length ? ` Last stderr: ${replica.stderrTail.join(' | ')}` : '';
        failure.abort(new Error(`${label} ${why} before it was ready.${tail}`));
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

    const timeout = setTimeout(() => {
      const stage = portSeen
        ? `GET /health did not answer 200 (${lastProbe})`
        : 'it never printed "listening on http://<host>:<port>" on stdout';
      failure.abort(new Error(`${label} did not become ready within ${this.#readyTimeoutMs} ms: ${stage}. It was stopped.`));
    }, this.#readyTimeoutMs);

    const failed = new Promise<never>((_, reject) => {
      failure.signal.addEventListener('abort', () => reject(failure.signal.reason), { once: true });
    });
    failed.catch(() => {}); // observed below; avoid an unhandled rejection when start succeeds first

    try {
      const port = await Promise.race([portLine, failed]);
      // The server printed the line after binding, so the first probe normally succeeds;
      // retry (short, growing back-off) only while the probe itself fails.
      let backoffMs = 20;
      for (;;) {
        failure.signal.throwIfAborted();
        try {
          const status = await probeHealth(port, 2000, failure.signal);
          if (status === 200) break;
          lastProbe = `last answer: HTTP ${status}`;
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
      return { service: spec.service, hostname: spec.hostname, host: '127.0.0.1', port, pid, readyAt: Date.now() };
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
   * has then been called with expected=true). Unknown or already-gone hostname: resolves.
   * @throws Error (rejection) if graceMs is not a number between 0 and 600000.
   */
  async stop(hostname: string, opts: { signal?: 'SIGTERM' | 'SIGKILL'; graceMs?: number } = {}): Promise<void> {
    const graceMs = opts.graceMs ?? 2000;
    if (!Number.isFinite(graceMs) || graceMs < 0 || graceMs > 600_000) {
      throw new Error(`graceMs must be between 0 and 600000 milliseconds, got ${graceMs}.`);
    }
    const replica = this.#live.get(hostname);
    if (!replica) return;
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
  }

  /** Stops every replica of this runtime (SIGTERM, SIGKILL after 2000 ms); resolves when all have exited. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.#live.keys()].map((hostname) => this.stop(hostname)));
  }

  /**
   * Removes what earlier runs left behind: reads every `process-runtime-*.json` in stateDir except
   * this session's and those whose writer (another lab process) is still running, SIGKILLs the process group of every listed pid that is still running AND whose
   * /proc/<pid>/environ carries `LAB_SESSION=<that session>`, waits until each is gone, then deletes
   * the stale state file. Resolves with the number of processes killed.
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
    for (const name of names) {
      const m = STATE_FILE.exec(name);
      if (!m || m[1] === this.#sessionId) continue;
      const file = path.join(this.#stateDir, name);
      let state: StateFile;
      try {
        state = StateFile.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
      } catch {
        staleFiles.push(file); // unreadable or not this shape: nothing in it can be identified; remove it
        continue;
      }
      if (ownerIsAnotherLiveLab(state)) continue; // a lab that is still running owns these: not leftovers
      staleFiles.push(file);
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
