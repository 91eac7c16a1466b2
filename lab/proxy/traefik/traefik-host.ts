/**
 * WHERE the TraefikDriver's Traefik runs: the seam between the driver (what to configure, when the
 * configuration is in force, what the log lines mean) and the thing that runs the `traefik` binary.
 * Same shape as lab/proxy/haproxy/haproxy-host.ts (HaproxyHost).
 *
 * - `ProcessTraefikHost` (this file, the default): a local `traefik` binary (v3) as a child process
 *   in its own process group, `traefik --configFile=<workDir>/traefik.yml`, a state file in the work
 *   directory so a later run can stop a Traefik that a killed lab left behind.
 * - `TraefikContainerHost` (lab/runtime/docker/traefik-container.ts, the only place that may import
 *   dockerode): the image of sandbox-images/traefik/ with `NetworkMode: host` and the work directory
 *   bind-mounted at the SAME absolute path, run as the lab's uid:gid, logs followed from the
 *   container's stdout/stderr.
 *
 * Everything the driver says to Traefik goes through files in the work directory (the static
 * configuration, the dynamic configuration in `<workDir>/dynamic/` that the file provider watches)
 * and Traefik's HTTP API on 127.0.0.1; everything Traefik says comes back as lines (its log and the
 * JSON access log on stdout). A host must make the work directory visible at the same path.
 */
import path from 'node:path';
import { run, startGroup, sweepGroup } from '../local-process.ts';

/** The oldest Traefik the driver's configuration needs: v3 (rule syntax, `addInternals`). */
export const MIN_TRAEFIK_MAJOR = 3;

/** The sentence given when no Traefik can run here. */
export const TRAEFIK_MISSING =
  'Traefik is not installed: put a `traefik` v3 binary on PATH or run the lab with --runtime docker where the traefik image can be pulled.';

/** What version() says: the version text (e.g. `3.1.2`), or why Traefik cannot run here. */
export type TraefikAvailability = { ok: true; version: string } | { ok: false; reason: string };

/** How Traefik ended: its exit code, or the signal that killed it (a name such as `SIGKILL`). */
export interface TraefikExit {
  code: number | null;
  signal: string | null;
}

/** One running Traefik, as a host started it. */
export interface TraefikInstance {
  /** Its pid on this machine, or null where there is none to see (a container on a remote engine). */
  readonly hostPid: number | null;
  /** Resolves once Traefik has exited (never rejects). */
  readonly exited: Promise<TraefikExit>;
  /**
   * Stops it: SIGTERM (Traefik lets requests in flight finish), then SIGKILL after `graceMs`
   * (0 = SIGKILL at once). Resolves when nothing of it is left.
   * @throws Error if it still runs 10 s after SIGKILL.
   */
  stop(graceMs: number): Promise<void>;
}

/** Runs the `traefik` binary for the TraefikDriver. */
export interface TraefikHost {
  /** `process` or `container`, for messages and the lab's status. */
  readonly kind: 'process' | 'container';
  /** Whether Traefik v3 can run through this host (never rejects). */
  version(): Promise<TraefikAvailability>;
  /**
   * Starts `traefik --configFile=<configFile>` and resolves once the process runs (not once it is
   * ready: the driver awaits `/ping` and its API). Every line Traefik writes goes to `onLine`,
   * without the newline.
   * @throws Error (a sentence) when it could not be started at all.
   */
  start(opts: { workDir: string; configFile: string; onLine(line: string, stream: 'stdout' | 'stderr'): void }): Promise<TraefikInstance>;
  /** Stops a Traefik that an earlier run left in `workDir` (the lab was killed before stop()); resolves true if one was stopped. */
  sweepWorkDir(workDir: string): Promise<boolean>;
  /** Removes every Traefik this kind of host left behind anywhere (e.g. proxy containers of earlier sessions); resolves with how many. */
  sweepLeftovers?(): Promise<number>;
}

/**
 * The version in `traefik version` output (`Version:      3.1.2`), checked against v3.
 * @param where how to name the binary in a sentence (e.g. `traefik` or `the Traefik image`).
 */
export function traefikVersionOf(output: string, where: string): TraefikAvailability {
  const m = /^\s*Version:\s+v?(\d+)\.(\d+)(\S*)/m.exec(output);
  if (!m) return { ok: false, reason: `${where} version did not print a Traefik version; is it really Traefik?` };
  const version = `${m[1]}.${m[2]}${m[3]}`;
  if (Number(m[1]) < MIN_TRAEFIK_MAJOR) {
    return { ok: false, reason: `Traefik ${version} is too old; the lab writes Traefik v3 configuration, so put a \`traefik\` v3 binary on PATH.` };
  }
  return { ok: true, version };
}

/** The file in workDir naming the running Traefik (for sweepWorkDir()). */
const STATE_FILE = 'traefik.state.json';

/** A local `traefik` binary as a child process (the default host). Linux: sweepWorkDir() reads /proc. */
export class ProcessTraefikHost implements TraefikHost {
  readonly kind = 'process' as const;
  readonly #traefikPath: string;

  /** @param traefikPath the binary: a path, or a name looked up on PATH (default `traefik`). */
  constructor(traefikPath = 'traefik') {
    this.#traefikPath = traefikPath;
  }

  /** Runs `<traefikPath> version`; `{ok: false, reason}` says how to get Traefik v3. */
  async version(): Promise<TraefikAvailability> {
    const p = this.#traefikPath;
    const r = await run(p, ['version'], 10_000);
    if (r.error) {
      if (r.error.code === 'ENOENT') {
        return p === 'traefik' ? { ok: false, reason: TRAEFIK_MISSING } : { ok: false, reason: `Traefik was not found at ${p}; fix the path, or put a \`traefik\` v3 binary on PATH.` };
      }
      return { ok: false, reason: `${p} version could not run (${r.error.code ?? r.error.message}); check the Traefik installation.` };
    }
    return traefikVersionOf(r.stdout + r.stderr, p);
  }

  async start(opts: { workDir: string; configFile: string; onLine(line: string, stream: 'stdout' | 'stderr'): void }): Promise<TraefikInstance> {
    const arg = `--configFile=${opts.configFile}`;
    const proc = await startGroup({
      file: this.#traefikPath,
      args: [arg],
      cwd: opts.workDir,
      stateFile: path.join(opts.workDir, STATE_FILE),
      mark: arg,
      name: 'Traefik',
      onLine: opts.onLine,
    });
    return { hostPid: proc.pid, exited: proc.exited, stop: (graceMs) => proc.stop(graceMs) };
  }

  /**
   * Stops the Traefik that `<workDir>/traefik.state.json` names if it still runs (same pid, same
   * start time, command line holding the same `--configFile=` argument), and removes the file.
   */
  sweepWorkDir(workDir: string): Promise<boolean> {
    return sweepGroup(path.join(workDir, STATE_FILE), 'Traefik');
  }
}
