/**
 * WHERE the HaproxyDriver's HAProxy runs: the seam between the driver (what to configure, when to
 * reload, what the log lines mean) and the thing that runs the `haproxy` binary.
 *
 * - `ProcessHaproxyHost` (this file, the default): the local binary as a child process in its own
 *   process group (`haproxy -W -db -f <cfg>`), checks with `haproxy -c -f <cfg>`, a state file in
 *   the work directory so a later run can stop a master that a killed lab left behind.
 * - `HaproxyContainerHost` (lab/runtime/docker/haproxy-container.ts): the same binary in a Docker
 *   container sharing the host's network and the work directory.
 *
 * A host only runs the binary; both share the contract below. Everything the driver says to
 * HAProxy goes through files in the work directory (haproxy.cfg, server-state file, drain ACLs)
 * and the Runtime API unix socket there, so a host must make that directory visible to HAProxy at
 * the SAME absolute path, and HAProxy must be able to create its socket there.
 */
import fs from 'node:fs';
import path from 'node:path';
import { run, startGroup, sweepGroup } from '../local-process.ts';

/** The oldest HAProxy the driver's configuration needs (`host_only`, `idle-close-on-response`). */
export const MIN_HAPROXY_VERSION = [2, 6] as const;

/** What version() says: the version text (e.g. `2.6.12-1+deb12u4`), or why HAProxy cannot run here. */
export type HaproxyAvailability = { ok: true; version: string } | { ok: false; reason: string };

/** What `haproxy -c -f <cfg>` said: accepted, or refused with its output lines (stdout then stderr). */
export type HaproxyCheckResult = { ok: true } | { ok: false; code: number | null; lines: string[] };

/** How a HAProxy master ended: its exit code, or the signal that killed it (a name such as `SIGKILL`). */
export interface HaproxyExit {
  code: number | null;
  signal: string | null;
}

/**
 * A signal the driver sends to the master: SIGUSR2 = reload (the master re-reads haproxy.cfg and
 * starts new workers, https://docs.haproxy.org/2.6/configuration.html#3.1-master-worker),
 * SIGTERM/SIGKILL = stop.
 */
export type HaproxySignal = 'SIGUSR2' | 'SIGTERM' | 'SIGKILL';

/** One running HAProxy master (and its workers), as a host started it. */
export interface HaproxyInstance {
  /**
   * The master's pid as HAProxy itself names it: in its `[NOTICE] (pid) :` messages. A local
   * process: its OS pid; in a container: its pid inside the container (1).
   */
  readonly masterPid: number;
  /** The master's pid on this machine (for `kill -0` checks), or null where there is none to see (a remote Docker engine). */
  readonly hostPid: number | null;
  /** Resolves once the master has exited (never rejects). */
  readonly exited: Promise<HaproxyExit>;
  /** Sends `signal` to the master; resolves once sent. A master that is gone is not an error. */
  signal(signal: HaproxySignal): Promise<void>;
  /** Whether the process `pid` (as HAProxy names it, e.g. an old worker from `show info`) still runs. */
  alive(pid: number): Promise<boolean>;
  /**
   * Stops the master and every worker: SIGTERM, then SIGKILL after `graceMs` (0 = SIGKILL at once).
   * Resolves when nothing of it is left (process group gone / container removed).
   * @throws Error if something is still running 10 s after SIGKILL.
   */
  stop(graceMs: number): Promise<void>;
}

/**
 * Runs the `haproxy` binary for the HaproxyDriver. Implementations: ProcessHaproxyHost (here),
 * HaproxyContainerHost (lab/runtime/docker/haproxy-container.ts).
 */
export interface HaproxyHost {
  /** `process` or `container`, for messages and the lab's status. */
  readonly kind: 'process' | 'container';
  /** Whether HAProxy 2.6+ can run through this host (never rejects). */
  version(): Promise<HaproxyAvailability>;
  /**
   * Checks a configuration file (`haproxy -c -f <cfgPath>`; the path is absolute, inside the work directory).
   * @throws Error (a sentence) when the check itself could not run.
   */
  check(cfgPath: string): Promise<HaproxyCheckResult>;
  /**
   * Starts `haproxy -W -db -f <cfgPath>` (master-worker, foreground) and resolves once the master
   * runs (not once it is ready: the driver awaits its Runtime API). Every line HAProxy writes on
   * stdout or stderr goes to `onLine`, without the newline.
   * @throws Error (a sentence) when it could not be started at all.
   */
  start(opts: { workDir: string; cfgPath: string; onLine(line: string): void }): Promise<HaproxyInstance>;
  /**
   * Stops a HAProxy that an earlier run left in `workDir` (the lab was killed before stop()).
   * Resolves true if one was stopped.
   */
  sweepWorkDir(workDir: string): Promise<boolean>;
  /**
   * Removes what this kind of host left behind for work directories inside `parentDir` (e.g.
   * proxy containers of earlier sessions); resolves with how many. Optional: the process host's
   * leftovers are found through sweepWorkDir().
   */
  sweepLeftovers?(parentDir: string): Promise<number>;
}

// ---------------------------------------------------------------- the local process

/** The file in workDir naming the running master (for sweepWorkDir()). */
const STATE_FILE = 'haproxy.state.json';

/**
 * The version in `haproxy -v` output, checked against MIN_HAPROXY_VERSION.
 * @param where how to name the binary in a sentence (e.g. `haproxy` or `the HAProxy image`).
 */
export function versionOf(output: string, where: string): HaproxyAvailability {
  const m = /HA-?Proxy version (\S+)/i.exec(output);
  if (!m) return { ok: false, reason: `${where} -v did not print an HAProxy version; is it really HAProxy?` };
  const [major, minor] = m[1].split('.').map((n) => parseInt(n, 10));
  const [needMajor, needMinor] = MIN_HAPROXY_VERSION;
  if (!(major > needMajor || (major === needMajor && minor >= needMinor))) {
    return { ok: false, reason: `HAProxy ${m[1]} is too old; the lab needs ${needMajor}.${needMinor} or newer (apt-get install haproxy on Debian 12).` };
  }
  return { ok: true, version: m[1] };
}

/**
 * The local `haproxy` binary as a child process (the default host). Linux: sweepWorkDir() reads /proc.
 */
export class ProcessHaproxyHost implements HaproxyHost {
  readonly kind = 'process' as const;
  readonly #haproxyPath: string;

  /** @param haproxyPath the binary: a path, or a name looked up on PATH (default `haproxy`). */
  constructor(haproxyPath = 'haproxy') {
    this.#haproxyPath = haproxyPath;
  }

  /** Runs `<haproxyPath> -v`; `{ok: false, reason}` says how to install HAProxy. */
  async version(): Promise<HaproxyAvailability> {
    const p = this.#haproxyPath;
    const r = await run(p, ['-v'], 10_000);
    if (r.error) {
      if (r.error.code === 'ENOENT') {
        return p === 'haproxy'
          ? { ok: false, reason: 'haproxy was not found on PATH; install it with `apt-get install haproxy`.' }
          : { ok: false, reason: `haproxy was not found at ${p}; install it with \`apt-get install haproxy\` or fix the path.` };
      }
      return { ok: false, reason: `${p} -v could not run (${r.error.code ?? r.error.message}); check the haproxy installation.` };
    }
    return versionOf(r.stdout + r.stderr, p);
  }

  async check(cfgPath: string): Promise<HaproxyCheckResult> {
    const r = await run(this.#haproxyPath, ['-c', '-f', cfgPath], 30_000);
    if (r.error) throw new Error(`haproxy -c could not run (${r.error.code ?? r.error.message}).`);
    return r.code === 0 ? { ok: true } : { ok: false, code: r.code, lines: `${r.stdout}\n${r.stderr}`.split('\n') };
  }

  async start(opts: { workDir: string; cfgPath: string; onLine(line: string): void }): Promise<HaproxyInstance> {
    const proc = await startGroup({
      file: this.#haproxyPath,
      args: ['-W', '-db', '-f', opts.cfgPath],
      cwd: opts.workDir,
      stateFile: path.join(opts.workDir, STATE_FILE),
      mark: opts.cfgPath,
      name: 'HAProxy',
      onLine: (line) => opts.onLine(line),
    });
    const pid = proc.pid;
    return {
      masterPid: pid,
      hostPid: pid,
      exited: proc.exited,
      signal: async (signal) => {
        try {
          process.kill(pid, signal);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
        }
      },
      alive: async (p) => {
        try {
          process.kill(p, 0);
          return true;
        } catch {
          return false;
        }
      },
      // The whole group: old workers that a reload replaced too.
      stop: (graceMs) => proc.stop(graceMs),
    };
  }

  /**
   * Stops the HAProxy that `<workDir>/haproxy.state.json` names if it is still running (same pid,
   * same start time, command line naming its haproxy.cfg), and removes the file and the socket.
   */
  async sweepWorkDir(dir: string): Promise<boolean> {
    const stopped = await sweepGroup(path.join(dir, STATE_FILE), 'HAProxy');
    fs.rmSync(path.join(dir, 'haproxy.sock'), { force: true });
    return stopped;
  }
}
