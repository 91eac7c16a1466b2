/**
 * HAProxy in a Docker container: a HaproxyHost (lab/proxy/haproxy/haproxy-host.ts) for the
 * HaproxyDriver. The driver is unchanged; only where the `haproxy` binary runs differs.
 *
 * The container (image `balancer-lab/haproxy:<hash>` from sandbox-images/haproxy/Dockerfile, built
 * by ensureHaproxyImage()):
 * - `NetworkMode: 'host'`: HAProxy binds the lab's proxy port and stats port on this machine, and
 *   reaches replicas on 127.0.0.1 (process mode) and on Docker bridge IPs (containers) alike. This
 *   is Linux behaviour: Docker Desktop (macOS, Windows) runs containers in a VM whose "host" network
 *   is the VM's, so neither the port nor 127.0.0.1 would be this machine's there.
 * - the driver's work directory bind-mounted at the SAME absolute path: haproxy.cfg, the
 *   server-state file, the drain ACLs and the Runtime API unix socket are shared files.
 * - `User: <this process's uid>:<gid>`: the socket HAProxy creates (mode 600) belongs to the lab,
 *   which can then connect to it; lab ports are above 1024, so no root is needed.
 * - Entrypoint `haproxy`, Cmd `-W -db -f <cfg>`: the master is PID 1 of the container (its log
 *   messages say `(1)`); reload = `kill` with SIGUSR2 (https://docs.docker.com/engine/api/v1.41/#tag/Container/operation/ContainerKill);
 *   stop = SIGTERM, SIGKILL after the grace period, then the container is removed.
 * - checks (`haproxy -c -f <file>`) and `haproxy -v` run in short-lived containers of the same
 *   image, mount and user, removed afterwards.
 * - labels `balancer-lab.session=<id>`, `balancer-lab.role=proxy`, `balancer-lab.workdir=<dir>` and
 *   `balancer-lab.owner=<host>/<pid>/<start>` (sweeps leave a running lab's containers alone);
 *   names `balancer-lab-haproxy-<session>-<8 hex of the work dir>`.
 *
 * Only files under lab/runtime/docker/ import dockerode.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { versionOf, type HaproxyAvailability, type HaproxyCheckResult, type HaproxyExit, type HaproxyHost, type HaproxyInstance, type HaproxySignal } from '../../proxy/haproxy/haproxy-host.ts';
import { followLogs, LABEL_ROLE, LABEL_SESSION, labelFilter, NAME_PREFIX, type Docker } from './docker-client.ts';
import { ensureImage, type EnsureImageOptions, type ImageTarget } from './images.ts';

/** Label with the absolute work directory a proxy container serves (its bind mount). */
export const LABEL_WORKDIR = 'balancer-lab.workdir';
/**
 * Label naming the lab process that owns a container, `<hostname>/<pid>/<start>` (start: clock
 * ticks since boot, /proc/<pid>/stat field 22): the same label and format as DockerRuntime's, so
 * neither sweep removes the containers of a lab that still runs.
 */
export const LABEL_OWNER = 'balancer-lab.owner';

/** Start time of a process (/proc/<pid>/stat field 22), or null without /proc. */
function processStart(pid: number): string | null {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** This lab process, as LABEL_OWNER names it. */
const OWNER = `${os.hostname()}/${process.pid}/${processStart(process.pid) ?? '-'}`;

/** Whether the lab a LABEL_OWNER value names may still run: on another host (cannot tell) or alive here with the same start time. */
function ownerAlive(owner: string | undefined): boolean {
  if (!owner) return false;
  const [host, pidText, start] = owner.split('/');
  if (host !== os.hostname()) return true;
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  return start === '-' || processStart(pid) === start;
}

/** The official image the Dockerfile builds FROM by default (its ARG HAPROXY_BASE). */
export const DEFAULT_HAPROXY_BASE = 'haproxy:2.6';

/** The HAProxy image for images.ts: context sandbox-images/haproxy/, repository `balancer-lab/haproxy`. */
export function haproxyImageTarget(): ImageTarget {
  return {
    repository: `${NAME_PREFIX}/haproxy`,
    context: fileURLToPath(new URL('../../../sandbox-images/haproxy/', import.meta.url)),
    dockerfile: 'Dockerfile',
    include: ['Dockerfile'],
    baseArg: 'HAPROXY_BASE',
    defaultBase: DEFAULT_HAPROXY_BASE,
  };
}

/**
 * Builds the HAProxy image unless its content-hash tag exists (images.ts ensureImage(): base from
 * `opts.base`, else env LAB_DOCKER_BASE, else `haproxy:2.6`; progress through `opts.onProgress`).
 * @returns the tag to run, e.g. `balancer-lab/haproxy:3f9c0a1b2c4d`.
 * @throws Error (a sentence) when the base image is missing and cannot be pulled, or a build step fails.
 */
export async function ensureHaproxyImage(docker: Docker, opts: EnsureImageOptions): Promise<string> {
  return (await ensureImage(docker, haproxyImageTarget(), opts)).tag;
}

/** Options of HaproxyContainerHost. */
export interface HaproxyContainerHostOptions {
  /** A connected client (docker-client.ts connectDocker()). */
  docker: Docker;
  /** The lab session: label `balancer-lab.session` of every container made here. 1..40 of [a-zA-Z0-9_.-]. */
  sessionId: string;
  /** The image to run: the tag ensureHaproxyImage() resolved with. */
  image: string;
  /** How long a short-lived check or version container may take, ms. Default 60000. */
  runTimeoutMs?: number;
}

interface DockerError {
  statusCode?: number;
  message?: string;
}

/** 404 (gone) and 304/409 (not running / already stopping) are what was asked for. */
function ignoreGone(err: unknown): void {
  const code = (err as DockerError).statusCode;
  if (code === 404 || code === 409 || code === 304) return;
  throw err;
}

function short(err: unknown): string {
  const e = err as DockerError;
  return String(e?.message ?? err).split('\n')[0].replace(/^\(HTTP code \d+\)\s*[^-]*-\s*/, '').trim();
}

/** A container's exit status as a process exit: 128 + n is the signal n (as the docker CLI shows it). */
function exitOf(statusCode: number | null): HaproxyExit {
  if (statusCode !== null && statusCode > 128) {
    const name = Object.entries(os.constants.signals).find(([, n]) => n === statusCode - 128)?.[0];
    if (name) return { code: null, signal: name };
  }
  return { code: statusCode, signal: null };
}

/** The host pid of a container's PID 1 when it runs on this kernel (its cgroup names the container), else null. */
function localPid(pid: unknown, containerId: string): number | null {
  if (typeof pid !== 'number' || pid <= 0) return null;
  try {
    return fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes(containerId) ? pid : null;
  } catch {
    return null;
  }
}

/**
 * HAProxy in a Docker container (see the module comment). One host may start several instances
 * (one per work directory); each is its own container.
 */
export class HaproxyContainerHost implements HaproxyHost {
  readonly kind = 'container' as const;
  readonly #docker: Docker;
  readonly #session: string;
  readonly #image: string;
  readonly #runTimeoutMs: number;

  /** @throws Error when sessionId is not 1..40 of [a-zA-Z0-9_.-]. */
  constructor(opts: HaproxyContainerHostOptions) {
    if (!/^[a-zA-Z0-9_.-]{1,40}$/.test(opts.sessionId)) throw new Error(`The session id ${JSON.stringify(opts.sessionId)} must be 1 to 40 letters, digits, _ . or -.`);
    this.#docker = opts.docker;
    this.#session = opts.sessionId;
    this.#image = opts.image;
    this.#runTimeoutMs = opts.runTimeoutMs ?? 60_000;
  }

  /** The image this host runs. */
  get image(): string {
    return this.#image;
  }

  #user(): string {
    return `${process.getuid?.() ?? 0}:${process.getgid?.() ?? 0}`;
  }

  #labels(workDir: string): Record<string, string> {
    return { [LABEL_SESSION]: this.#session, [LABEL_ROLE]: 'proxy', [LABEL_WORKDIR]: workDir, [LABEL_OWNER]: OWNER };
  }

  #name(workDir: string): string {
    return `${NAME_PREFIX}-haproxy-${this.#session}-${createHash('sha256').update(workDir).digest('hex').slice(0, 8)}`;
  }

  /**
   * Runs `haproxy <args>` to its end in a throw-away container (host network, `dir` mounted at
   * its own path, this process's uid) and resolves with its exit code and output lines.
   * @throws Error (a sentence) when the container could not be created or did not end in time.
   */
  async #runOnce(args: string[], dir: string | null): Promise<{ code: number | null; lines: string[] }> {
    const c = await this.#docker.createContainer({
      name: `${NAME_PREFIX}-haproxy-run-${this.#session}-${randomBytes(4).toString('hex')}`,
      Image: this.#image,
      Cmd: args,
      User: this.#user(),
      Labels: { [LABEL_SESSION]: this.#session, [LABEL_ROLE]: 'proxy', [LABEL_OWNER]: OWNER, ...(dir ? { [LABEL_WORKDIR]: dir } : {}) },
      HostConfig: { NetworkMode: 'host', ...(dir ? { Binds: [`${dir}:${dir}`] } : {}) },
    });
    try {
      await c.start();
      const lines: string[] = [];
      const follower = await followLogs(c, (_s, text) => lines.push(text));
      let timer: NodeJS.Timeout | undefined;
      const waited = (await Promise.race([
        c.wait(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`haproxy ${args.join(' ')} did not finish within ${this.#runTimeoutMs} ms in its container.`)), this.#runTimeoutMs);
        }),
      ]).finally(() => clearTimeout(timer))) as { StatusCode?: number };
      await Promise.race([follower.ended, delay(5000)]);
      follower.stop();
      return { code: typeof waited.StatusCode === 'number' ? waited.StatusCode : null, lines };
    } finally {
      await c.remove({ force: true }).catch(ignoreGone);
    }
  }

  /** Runs `haproxy -v` in the image; `{ok: false}` says which image is missing and how to get it. */
  async version(): Promise<HaproxyAvailability> {
    try {
      await this.#docker.getImage(this.#image).inspect();
    } catch {
      return { ok: false, reason: `The HAProxy image ${this.#image} is not built; build it with ensureHaproxyImage() (sandbox-images/haproxy), or set LAB_DOCKER_BASE to a local base image where no registry is reachable.` };
    }
    try {
      const r = await this.#runOnce(['-v'], null);
      return versionOf(r.lines.join('\n'), `haproxy in ${this.#image}`);
    } catch (err) {
      return { ok: false, reason: `haproxy -v could not run in a container of ${this.#image} (${short(err)}).` };
    }
  }

  async check(cfgPath: string): Promise<HaproxyCheckResult> {
    let r: { code: number | null; lines: string[] };
    try {
      r = await this.#runOnce(['-c', '-f', cfgPath], path.dirname(cfgPath));
    } catch (err) {
      throw new Error(`haproxy -c could not run in a container (${short(err)}).`);
    }
    return r.code === 0 ? { ok: true } : { ok: false, code: r.code, lines: r.lines };
  }

  async start(opts: { workDir: string; cfgPath: string; onLine(line: string): void }): Promise<HaproxyInstance> {
    const name = this.#name(opts.workDir);
    // A container of that name is a leftover of this same session and work directory.
    await this.#docker.getContainer(name).remove({ force: true }).catch(ignoreGone);
    let container: Docker.Container;
    try {
      container = await this.#docker.createContainer({
        name,
        Image: this.#image,
        Cmd: ['-W', '-db', '-f', opts.cfgPath],
        User: this.#user(),
        WorkingDir: opts.workDir,
        Labels: this.#labels(opts.workDir),
        HostConfig: { NetworkMode: 'host', Binds: [`${opts.workDir}:${opts.workDir}`] },
      });
      await container.start();
    } catch (err) {
      await this.#docker.getContainer(name).remove({ force: true }).catch(() => undefined);
      throw new Error(`Could not start HAProxy in a container of ${this.#image}: ${short(err)}.`);
    }
    const follower = await followLogs(container, (_s, text) => opts.onLine(text)).catch(() => null);
    const info = await container.inspect().catch(() => null);
    const hostPid = info ? localPid(info.State?.Pid, info.Id) : null;
    // Exited = the container stopped and its last log lines were delivered (they explain a failed start).
    const exited: Promise<HaproxyExit> = container
      .wait()
      .then((w: { StatusCode?: number }) => (typeof w.StatusCode === 'number' ? w.StatusCode : null))
      .catch(async () => {
        // The wait was cut (engine restarted?): ask how it ended, if it did.
        for (;;) {
          const i = await container.inspect().catch(() => null);
          if (!i || !i.State.Running) return i ? i.State.ExitCode : null;
          await delay(200);
        }
      })
      .then(async (code: number | null) => {
        if (follower) await Promise.race([follower.ended, delay(2000)]);
        follower?.stop();
        return exitOf(code);
      });
    const kill = (signal: HaproxySignal) => container.kill({ signal }).catch(ignoreGone);
    let removed: Promise<void> | null = null;
    return {
      masterPid: 1,
      hostPid,
      exited,
      signal: async (signal) => {
        await kill(signal);
      },
      alive: async (pid) => {
        // /proc of the container's pid namespace (coreutils' `test` is in every Debian image).
        try {
          const exec = await container.exec({ Cmd: ['test', '-d', `/proc/${Math.trunc(pid)}`], User: this.#user(), AttachStdout: false, AttachStderr: false });
          const stream = await exec.start({ Detach: false, Tty: false });
          await new Promise<void>((resolve) => {
            stream.on('end', resolve);
            stream.on('close', resolve);
            stream.on('error', () => resolve());
            stream.resume();
          });
          // The stream can end before Docker records the exit code: ask until it has (bounded).
          for (let i = 0; i < 100; i++) {
            const r = await exec.inspect();
            if (!r.Running && r.ExitCode !== null) return r.ExitCode === 0;
            await delay(20);
          }
          return false;
        } catch {
          return false; // the container is gone, and its processes with it
        }
      },
      stop: (graceMs) => {
        removed ??= (async () => {
          await kill(graceMs <= 0 ? 'SIGKILL' : 'SIGTERM');
          let timer: NodeJS.Timeout | undefined;
          const escalate = new Promise<'late'>((resolve) => {
            timer = setTimeout(() => resolve('late'), Math.max(0, graceMs));
          });
          if ((await Promise.race([exited, escalate])) === 'late') {
            await kill('SIGKILL');
            const gone = await Promise.race([exited, delay(10_000).then(() => 'late' as const)]);
            if (gone === 'late') throw new Error(`The HAProxy container ${name} is still running 10 s after SIGKILL.`);
          }
          clearTimeout(timer);
          await container.remove({ force: true }).catch(ignoreGone);
        })();
        return removed;
      },
    };
  }

  /** Removes this session's proxy container of `workDir` if one is left (running or not). */
  async sweepWorkDir(workDir: string): Promise<boolean> {
    const list = await this.#docker.listContainers({ all: true, filters: { label: [`${LABEL_ROLE}=proxy`, `${LABEL_WORKDIR}=${workDir}`] } });
    for (const c of list) await this.#docker.getContainer(c.Id).remove({ force: true }).catch(ignoreGone);
    return list.length > 0;
  }

  /**
   * Removes the proxy containers (and check containers) of EARLIER sessions: those labelled
   * `balancer-lab.role=proxy` whose session is not this host's and whose owner (LABEL_OWNER) no
   * longer runs. With `parentDir`, only those whose work directory is inside it. A lab that still
   * runs keeps its proxy. Resolves with how many were removed.
   */
  async sweepLeftovers(parentDir?: string): Promise<number> {
    const under = parentDir ? path.resolve(parentDir) + path.sep : null;
    const list = await this.#docker.listContainers({ all: true, filters: labelFilter(undefined, 'proxy') });
    let n = 0;
    for (const c of list) {
      if (c.Labels[LABEL_SESSION] === this.#session || ownerAlive(c.Labels[LABEL_OWNER])) continue;
      const dir = c.Labels[LABEL_WORKDIR];
      if (under && !(dir && dir.startsWith(under))) continue;
      await this.#docker.getContainer(c.Id).remove({ force: true }).catch(ignoreGone);
      n++;
    }
    return n;
  }
}
