/**
 * What the local-process proxy hosts share (ProcessHaproxyHost in haproxy/haproxy-host.ts,
 * ProcessTraefikHost in traefik/traefik-host.ts): a proxy binary run as a child process in its own
 * process group, its lines read from stdout/stderr, a state file in the work directory naming it
 * (pid, start time, and the argument that marks its command line), so that a later run can stop
 * one that a killed lab left behind. Linux: liveness and start times come from /proc.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { writeFileAtomic } from './driver-support.ts';

/** What run() says: the exit code and output, or the spawn error (`code` null) when it could not run. */
export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  error?: NodeJS.ErrnoException;
}

/** Runs a program with an argument array (never a shell); resolves with its exit code and output. */
export function run(file: string, args: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: unknown }) | null;
      if (e && typeof e.code === 'string') resolve({ code: null, stdout: String(stdout), stderr: String(stderr), error: e });
      else resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** Signals a process group; one that is gone is not an error. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** True while any process of the group exists, a zombie too. */
function groupExists(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True while any process of the group exists (a zombie leader counts as gone: this machine's init may not reap). */
function groupAlive(pgid: number): boolean {
  if (!groupExists(pgid)) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pgid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

/** Start time of a process (clock ticks since boot, /proc/<pid>/stat field 22), or null if unreadable. */
export function procStart(pid: number): number | null {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return null;
  }
}

/**
 * Waits (bounded) until no process of the group is left, SIGKILLing it after `graceMs` (at once if
 * 0). An orphan's zombie leader is waited for until init reaps it (its pid is free then), but only
 * up to the same bound: this machine's init may reap late or never, and a zombie runs nothing.
 * @param name how to name the program in the error (e.g. `HAProxy`).
 * @throws Error if the group still runs 10 s after SIGKILL.
 */
export async function awaitGroupGone(pgid: number, graceMs: number, name: string): Promise<void> {
  const t0 = Date.now();
  let killed = graceMs <= 0;
  while (groupExists(pgid)) {
    const alive = groupAlive(pgid);
    if (alive && !killed && Date.now() - t0 > graceMs) {
      signalGroup(pgid, 'SIGKILL');
      killed = true;
    }
    if (Date.now() - t0 > Math.max(0, graceMs) + 10_000) {
      if (alive) throw new Error(`${name} (process group ${pgid}) is still running 10 s after SIGKILL.`);
      return;
    }
    await delay(10);
  }
}

/** How a group leader ended: its exit code, or the signal that killed it (a name such as `SIGKILL`). */
export interface GroupExit {
  code: number | null;
  signal: string | null;
}

/** A program started by startGroup(). */
export interface GroupProcess {
  /** Its pid, which is also its process group's id. */
  readonly pid: number;
  /** Resolves once it has exited (never rejects); the state file is gone by then. */
  readonly exited: Promise<GroupExit>;
  /**
   * Stops the whole group: SIGTERM, then SIGKILL after `graceMs` (0 = SIGKILL at once); resolves
   * when no process of the group is left.
   * @throws Error if something of it still runs 10 s after SIGKILL.
   */
  stop(graceMs: number): Promise<void>;
}

/**
 * Starts `file args` in its own process group (cwd `cwd`), every line it writes going to `onLine`
 * without the newline, and writes `stateFile` (atomically, mode 600) as `{pid, start, mark}`, where
 * `mark` is the argument that sweepGroup() looks for in its command line. The file is removed when
 * the program exits.
 * @param name how to name the program in messages (e.g. `HAProxy`; lower case before a line it did not write).
 * @throws Error (a sentence) when it could not be started at all.
 */
export async function startGroup(opts: {
  file: string;
  args: string[];
  cwd: string;
  stateFile: string;
  mark: string;
  name: string;
  onLine(line: string, stream: 'stdout' | 'stderr'): void;
}): Promise<GroupProcess> {
  const child = spawn(opts.file, opts.args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd });
  if (child.pid === undefined) {
    const err = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw new Error(`Could not start ${opts.file}: ${err.message}.`);
  }
  const pid = child.pid;
  const exited = new Promise<GroupExit>((resolve) => {
    child.once('exit', (code, signal) => {
      fs.rmSync(opts.stateFile, { force: true });
      resolve({ code, signal });
    });
  });
  child.on('error', (err) => opts.onLine(`${opts.name.toLowerCase()}: ${err.message}`, 'stderr'));
  readline.createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (l) => opts.onLine(l, 'stdout'));
  readline.createInterface({ input: child.stderr!, crlfDelay: Infinity }).on('line', (l) => opts.onLine(l, 'stderr'));
  writeFileAtomic(opts.stateFile, `${JSON.stringify({ pid, start: procStart(pid), mark: opts.mark } satisfies StateFile)}\n`);
  return {
    pid,
    exited,
    stop: async (graceMs) => {
      signalGroup(pid, graceMs <= 0 ? 'SIGKILL' : 'SIGTERM');
      const killer = graceMs > 0 ? setTimeout(() => signalGroup(pid, 'SIGKILL'), graceMs) : null;
      await exited;
      if (killer) clearTimeout(killer);
      await awaitGroupGone(pid, graceMs, opts.name);
    },
  };
}

/** What a state file written by startGroup() records. */
interface StateFile {
  pid: number;
  /** procStart(pid) when written: a recycled pid has another start time. */
  start: number | null;
  /** An argument of its command line (e.g. its configuration file), so another program on that pid is never stopped. */
  mark: string;
}

/**
 * Stops the process group that `stateFile` names if it still runs (same pid, same start time,
 * command line holding the state's `mark`): SIGTERM, SIGKILL after 3 s; then removes the file.
 * Resolves true if one was stopped; false also when there is no (readable) state file.
 * @throws Error if it still runs 10 s after SIGKILL.
 */
export async function sweepGroup(stateFile: string, name: string): Promise<boolean> {
  let state: StateFile;
  try {
    state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as StateFile;
  } catch {
    return false;
  }
  let stopped = false;
  if (Number.isInteger(state.pid) && state.pid > 1 && state.pid !== process.pid && procStart(state.pid) === state.start) {
    let cmdline: string[] = [];
    try {
      cmdline = fs.readFileSync(`/proc/${state.pid}/cmdline`, 'utf8').split('\0');
    } catch {
      // gone
    }
    if (typeof state.mark === 'string' && cmdline.includes(state.mark)) {
      signalGroup(state.pid, 'SIGTERM');
      await awaitGroupGone(state.pid, 3000, `A leftover ${name}`);
      stopped = true;
    }
  }
  fs.rmSync(stateFile, { force: true });
  return stopped;
}
