/**
 * What HAProxy and Traefik in a Docker container have in common (haproxy-container.ts,
 * traefik-container.ts): the proxy runs as a long-lived container that behaves like the local
 * binary would, so the drivers stay unchanged.
 *
 * A proxy container:
 * - `NetworkMode: 'host'`: the proxy binds the lab's ports on this machine and reaches replicas on
 *   127.0.0.1 (process mode) and on Docker bridge IPs (containers) alike. Linux behaviour: Docker
 *   Desktop (macOS, Windows) runs containers in a VM whose "host" network is the VM's.
 * - the driver's work directory bind-mounted at the SAME absolute path, and set as working directory:
 *   configuration files, state files and unix sockets are shared files.
 * - `User: <this process's uid>:<gid>`: what the proxy creates in the work directory (HAProxy's
 *   Runtime API socket) belongs to the lab; lab ports are above 1024, so no root is needed.
 * - labels `balancer-lab.session=<id>`, `balancer-lab.role=proxy`, `balancer-lab.engine=<engine>`,
 *   `balancer-lab.workdir=<dir>` and `balancer-lab.owner=<host>/<pid>/<start>` (docker-client.ts
 *   ownerLabel(): sweeps leave a running lab's containers alone); name
 *   `balancer-lab-<engine>-<session>-<8 hex of the work dir>`.
 * - logs followed line by line (stdout and stderr demultiplexed), an `exited` promise that resolves
 *   once the container stopped, its last lines were delivered and it was removed (a proxy that dies
 *   leaves no container), `stop(graceMs)` = SIGTERM, SIGKILL after the grace period, then removal.
 * - short-lived "run to its end" containers (`haproxy -c`, `haproxy -v`, `traefik version`) of the
 *   same image, user and mount, removed afterwards, named `balancer-lab-<engine>-run-<session>-<8 hex>`.
 *
 * Only files under lab/runtime/docker/ import dockerode.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { execExitCode, followLogs, LABEL_OWNER, LABEL_ROLE, LABEL_SESSION, labelFilter, NAME_PREFIX, ownerAlive, ownerLabel, type Docker } from './docker-client.ts';
import type { ImageTarget } from './images.ts';

/** Label with the absolute work directory a proxy container serves (its bind mount). */
export const LABEL_WORKDIR = 'balancer-lab.workdir';
/** Label naming the proxy a container runs: `haproxy` or `traefik` (ProxyEngine). */
export const LABEL_ENGINE = 'balancer-lab.engine';

/** The proxies that run in containers. */
export type ProxyEngine = 'haproxy' | 'traefik';

/** How each engine is named in sentences. */
const TITLE: Readonly<Record<ProxyEngine, string>> = { haproxy: 'HAProxy', traefik: 'Traefik' };

/** How a container's main process ended: its exit code, or the signal that killed it (e.g. `SIGKILL`). */
export interface ContainerExit {
  code: number | null;
  signal: string | null;
}

/** What a short-lived container printed and how it ended. */
export interface RunResult {
  /** Its exit code (128 + n after signal n), or null when Docker did not say. */
  code: number | null;
  /** Its stdout and stderr lines, in arrival order, without newlines. */
  lines: string[];
}

/** Options of ProxyContainers. */
export interface ProxyContainersOptions {
  /** A connected client (docker-client.ts connectDocker()). */
  docker: Docker;
  /** The lab session: label `balancer-lab.session`. 1..40 of [a-zA-Z0-9_.-]. */
  sessionId: string;
  /** Which proxy: label `balancer-lab.engine`, names, and sentences. */
  engine: ProxyEngine;
  /** The image to run, e.g. `balancer-lab/haproxy:3f9c0a1b2c4d`. */
  image: string;
  /** Overrides the image's ENTRYPOINT, e.g. `['traefik']` for an image whose own entrypoint is a script. Default: the image's. */
  entrypoint?: string[];
  /** How long a short-lived container (runOnce) may take, ms. Default 60000. */
  runTimeoutMs?: number;
}

/** One running proxy container, as ProxyContainers.start() made it. */
export interface ProxyContainer {
  /** Its name, `balancer-lab-<engine>-<session>-<8 hex>`. */
  readonly name: string;
  /** Its full container id (64 hex). */
  readonly id: string;
  /** The host pid of its PID 1 when the engine runs on this kernel, else null (a remote engine). */
  readonly hostPid: number | null;
  /**
   * Resolves once the container has stopped, its last log lines were delivered and it was removed
   * (whether stop() ended it or it crashed or was killed from outside). Never rejects.
   */
  readonly exited: Promise<ContainerExit>;
  /** Sends `signal` (a name such as `SIGUSR2`) to its PID 1; a container that is gone or stopped is not an error. */
  signal(signal: string): Promise<void>;
  /**
   * Runs `cmd` (an argument array, no shell) inside it as the lab's uid:gid and resolves with its
   * exit code once Docker recorded it, or null when it could not be told within 2 s.
   * @throws the engine's error when the container is gone.
   */
  exec(cmd: string[]): Promise<number | null>;
  /**
   * SIGTERM, SIGKILL after `graceMs` (0 = SIGKILL at once), then removes the container. Resolves
   * when it is removed; idempotent (later calls return the same promise).
   * @throws Error if it still runs 10 s after SIGKILL.
   */
  stop(graceMs: number): Promise<void>;
}

interface DockerError {
  statusCode?: number;
  message?: string;
}

/** 404 (gone) and 304/409 (not running / already stopping or being removed) are what was asked for. */
export function ignoreGone(err: unknown): void {
  const code = (err as DockerError).statusCode;
  if (code === 404 || code === 409 || code === 304) return;
  throw err;
}

/** The first line of a Docker error, without dockerode's `(HTTP code 500) server error -` prefix, for a sentence. */
export function shortDockerError(err: unknown): string {
  const e = err as DockerError;
  return String(e?.message ?? err).split('\n')[0].replace(/^\(HTTP code \d+\)\s*[^-]*-\s*/, '').trim().replace(/[.:]+$/, '');
}

/** A container's exit status as a process exit: 128 + n is the signal n (as the docker CLI shows it). */
export function exitOf(statusCode: number | null): ContainerExit {
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
 * The image target (images.ts) of a proxy: context `sandbox-images/<engine>/` holding only its
 * Dockerfile, repository `balancer-lab/<engine>`, FROM the build arg `baseArg` (default `defaultBase`).
 */
export function proxyImageTarget(engine: ProxyEngine, baseArg: string, defaultBase: string): ImageTarget {
  return {
    repository: `${NAME_PREFIX}/${engine}`,
    context: fileURLToPath(new URL(`../../../sandbox-images/${engine}/`, import.meta.url)),
    dockerfile: 'Dockerfile',
    include: ['Dockerfile'],
    baseArg,
    defaultBase,
  };
}

/** This process's `uid:gid` for a container's User. */
function labUser(): string {
  return `${process.getuid?.() ?? 0}:${process.getgid?.() ?? 0}`;
}

/** Checks a session id as every lab label needs it. @throws Error (a sentence) when not 1..40 of [a-zA-Z0-9_.-]. */
export function checkSessionId(sessionId: string): void {
  if (!/^[a-zA-Z0-9_.-]{1,40}$/.test(sessionId)) throw new Error(`The session id ${JSON.stringify(sessionId)} must be 1 to 40 letters, digits, _ . or -.`);
}

/** Whether a listed container runs `engine` (its label; containers made before the label by their name). */
function runsEngine(c: Docker.ContainerInfo, engine: ProxyEngine): boolean {
  const label = c.Labels?.[LABEL_ENGINE];
  if (label) return label === engine;
  return c.Names.some((n) => n.replace(/^\//, '').startsWith(`${NAME_PREFIX}-${engine}-`));
}

/**
 * Removes the `engine` proxy containers (running or not) that earlier lab runs left: labelled
 * `balancer-lab.role=proxy`, of another session than `sessionId`, whose owner (LABEL_OWNER) no longer
 * runs. With `parentDir`, only those whose work directory is inside it. A lab that still runs
 * keeps its proxy. Resolves with how many were removed.
 */
export async function sweepProxyContainers(docker: Docker, opts: { sessionId: string; engine: ProxyEngine; parentDir?: string }): Promise<number> {
  const under = opts.parentDir ? path.resolve(opts.parentDir) + path.sep : null;
  const list = await docker.listContainers({ all: true, filters: labelFilter(undefined, 'proxy') });
  let n = 0;
  for (const c of list) {
    if (!runsEngine(c, opts.engine) || c.Labels[LABEL_SESSION] === opts.sessionId || ownerAlive(c.Labels[LABEL_OWNER])) continue;
    const dir = c.Labels[LABEL_WORKDIR];
    if (under && !(dir && dir.startsWith(under))) continue;
    await docker.getContainer(c.Id).remove({ force: true }).catch(ignoreGone);
    n++;
  }
  return n;
}

/**
 * Removes the `engine` proxy container serving `workDir`, if one is left (running or not), unless
 * another lab that still runs owns it. Resolves true if one was removed.
 */
export async function sweepProxyWorkDir(docker: Docker, engine: ProxyEngine, workDir: string): Promise<boolean> {
  const list = await docker.listContainers({ all: true, filters: { label: [`${LABEL_ROLE}=proxy`, `${LABEL_WORKDIR}=${workDir}`] } });
  const mine = ownerLabel();
  let removed = false;
  for (const c of list) {
    if (!runsEngine(c, engine)) continue;
    const owner = c.Labels[LABEL_OWNER];
    if (owner !== mine && ownerAlive(owner)) continue;
    await docker.getContainer(c.Id).remove({ force: true }).catch(ignoreGone);
    removed = true;
  }
  return removed;
}

/**
 * Runs one proxy image as containers for one lab session (see the module comment): the
 * long-lived proxy (start()) and short-lived commands (runOnce()).
 */
export class ProxyContainers {
  readonly #docker: Docker;
  readonly #session: string;
  readonly #engine: ProxyEngine;
  readonly #image: string;
  readonly #entrypoint: string[] | undefined;
  readonly #runTimeoutMs: number;

  /** @throws Error when sessionId is not 1..40 of [a-zA-Z0-9_.-]. */
  constructor(opts: ProxyContainersOptions) {
    checkSessionId(opts.sessionId);
    this.#docker = opts.docker;
    this.#session = opts.sessionId;
    this.#engine = opts.engine;
    this.#image = opts.image;
    this.#entrypoint = opts.entrypoint;
    this.#runTimeoutMs = opts.runTimeoutMs ?? 60_000;
  }

  /** The image this runs. */
  get image(): string {
    return this.#image;
  }

  /** Whether the image is on this engine (never rejects: an unreachable engine counts as no). */
  async hasImage(): Promise<boolean> {
    return this.#docker
      .getImage(this.#image)
      .inspect()
      .then(
        () => true,
        () => false,
      );
  }

  #labels(workDir: string | null): Record<string, string> {
    return {
      [LABEL_SESSION]: this.#session,
      [LABEL_ROLE]: 'proxy',
      [LABEL_ENGINE]: this.#engine,
      [LABEL_OWNER]: ownerLabel(),
      ...(workDir ? { [LABEL_WORKDIR]: workDir } : {}),
    };
  }

  #create(name: string, args: string[], workDir: string | null): Promise<Docker.Container> {
    return this.#docker.createContainer({
      name,
      Image: this.#image,
      ...(this.#entrypoint ? { Entrypoint: this.#entrypoint } : {}),
      Cmd: args,
      User: labUser(),
      ...(workDir ? { WorkingDir: workDir } : {}),
      Labels: this.#labels(workDir),
      HostConfig: { NetworkMode: 'host', ...(workDir ? { Binds: [`${workDir}:${workDir}`] } : {}) },
    });
  }

  /**
   * Runs the image with `args` to its end in a throw-away container (host network, `dir` mounted at
   * its own path when given, the lab's uid:gid) and resolves with its exit code and output lines.
   * The container is removed in every case.
   * @throws Error (a sentence) when it did not end within runTimeoutMs; the engine's error when it
   *   could not be created or started (e.g. the image has no such program).
   */
  async runOnce(args: string[], dir: string | null): Promise<RunResult> {
    const c = await this.#create(`${NAME_PREFIX}-${this.#engine}-run-${this.#session}-${randomBytes(4).toString('hex')}`, args, dir);
    try {
      await c.start();
      const lines: string[] = [];
      const follower = await followLogs(c, (_s, text) => lines.push(text));
      let timer: NodeJS.Timeout | undefined;
      const waited = (await Promise.race([
        c.wait(),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${[this.#entrypoint?.join(' ') ?? this.#engine, ...args].join(' ')} did not finish within ${this.#runTimeoutMs} ms in its container.`)),
            this.#runTimeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer))) as { StatusCode?: number };
      await Promise.race([follower.ended, delay(5000)]);
      follower.stop();
      return { code: typeof waited.StatusCode === 'number' ? waited.StatusCode : null, lines };
    } finally {
      await c.remove({ force: true }).catch(ignoreGone);
    }
  }

  /**
   * Starts the proxy for `workDir` with `args` and resolves once its container runs (not once the
   * proxy is ready: the driver awaits that). A container left for the same work directory by this
   * session is removed first. Every line it writes goes to `onLine`.
   * @throws Error (a sentence naming the engine and image) when it could not be created or started;
   *   nothing is left behind then.
   */
  async start(opts: { workDir: string; args: string[]; onLine(line: string, stream: 'stdout' | 'stderr'): void }): Promise<ProxyContainer> {
    const name = `${NAME_PREFIX}-${this.#engine}-${this.#session}-${createHash('sha256').update(opts.workDir).digest('hex').slice(0, 8)}`;
    // A container of that name is a leftover of this same session and work directory.
    await this.#docker.getContainer(name).remove({ force: true }).catch(ignoreGone);
    let container: Docker.Container;
    try {
      container = await this.#create(name, opts.args, opts.workDir);
      await container.start();
    } catch (err) {
      await this.#docker.getContainer(name).remove({ force: true }).catch(() => undefined);
      throw new Error(`Could not start ${TITLE[this.#engine]} in a container of ${this.#image}: ${shortDockerError(err)}.`);
    }
    const follower = await followLogs(container, (stream, text) => opts.onLine(text, stream)).catch(() => null);
    const info = await container.inspect().catch(() => null);
    const c = container;
    const exited: Promise<ContainerExit> = c
      .wait()
      .then((w: { StatusCode?: number }) => (typeof w.StatusCode === 'number' ? w.StatusCode : null))
      .catch(async () => {
        // The wait was cut (engine restarted?): ask how it ended, if it did.
        for (;;) {
          const i = await c.inspect().catch(() => null);
          if (!i || !i.State.Running) return i ? i.State.ExitCode : null;
          await delay(200);
        }
      })
      .then(async (code: number | null) => {
        // Its last lines explain a failed start: deliver them before saying it exited.
        if (follower) await Promise.race([follower.ended, delay(2000)]);
        follower?.stop();
        // A proxy that ended, asked to or not (crashed, killed from outside), leaves no container:
        // a driver that only notes the unexpected exit must not leave one behind.
        await c.remove({ force: true }).catch(() => undefined);
        return exitOf(code);
      });
    const kill = (signal: string) => c.kill({ signal }).catch(ignoreGone);
    let removed: Promise<void> | null = null;
    return {
      name,
      id: info?.Id ?? name,
      hostPid: info ? localPid(info.State?.Pid, info.Id) : null,
      exited,
      signal: async (signal) => {
        await kill(signal);
      },
      exec: (cmd) => execExitCode(c, cmd, labUser()),
      stop: (graceMs) => {
        removed ??= (async () => {
          await kill(graceMs <= 0 ? 'SIGKILL' : 'SIGTERM');
          let timer: NodeJS.Timeout | undefined;
          const escalate = new Promise<'late'>((resolve) => {
            timer = setTimeout(() => resolve('late'), Math.max(0, graceMs));
          });
          try {
            if ((await Promise.race([exited, escalate])) === 'late') {
              await kill('SIGKILL');
              const gone = await Promise.race([exited, delay(10_000).then(() => 'late' as const)]);
              if (gone === 'late') throw new Error(`The ${TITLE[this.#engine]} container ${name} is still running 10 s after SIGKILL.`);
            }
          } finally {
            clearTimeout(timer);
          }
          await c.remove({ force: true }).catch(ignoreGone);
        })();
        return removed;
      },
    };
  }

  /** Removes this engine's container serving `workDir` if one is left (see sweepProxyWorkDir()). */
  sweepWorkDir(workDir: string): Promise<boolean> {
    return sweepProxyWorkDir(this.#docker, this.#engine, workDir);
  }

  /** Removes this engine's containers of earlier, ended labs (see sweepProxyContainers()). */
  sweepLeftovers(parentDir?: string): Promise<number> {
    return sweepProxyContainers(this.#docker, { sessionId: this.#session, engine: this.#engine, parentDir });
  }
}
