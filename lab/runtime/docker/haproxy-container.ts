/**
 * HAProxy in a Docker container: a HaproxyHost (lab/proxy/haproxy/haproxy-host.ts) for the
 * HaproxyDriver. The driver is unchanged; only where the `haproxy` binary runs differs.
 *
 * The container (image `balancer-lab/haproxy:<hash>` from sandbox-images/haproxy/Dockerfile, built
 * by ensureHaproxyImage()) is a proxy container as proxy-container.ts runs them: host network, the
 * driver's work directory bind-mounted at the SAME absolute path (haproxy.cfg, the server-state
 * file, the drain ACLs and the Runtime API unix socket are shared files), the lab's uid:gid (the
 * socket HAProxy creates, mode 600, belongs to the lab, which can then connect to it), the lab's
 * labels with `balancer-lab.engine=haproxy`, name `balancer-lab-haproxy-<session>-<8 hex>`.
 * HAProxy specifics:
 * - Entrypoint `haproxy`, Cmd `-W -db -f <cfg>`: the master is PID 1 of the container (its log
 *   messages say `(1)`); reload = `kill` with SIGUSR2 (https://docs.docker.com/engine/api/v1.41/#tag/Container/operation/ContainerKill);
 *   stop = SIGTERM, SIGKILL after the grace period, then the container is removed.
 * - checks (`haproxy -c -f <file>`) and `haproxy -v` run in short-lived containers of the same
 *   image, mount and user, removed afterwards.
 * - alive(pid): `test -d /proc/<pid>` exec'd in the container (its pid namespace).
 *
 * Only files under lab/runtime/docker/ import dockerode.
 */
import path from 'node:path';
import { versionOf, type HaproxyAvailability, type HaproxyCheckResult, type HaproxyHost, type HaproxyInstance } from '../../proxy/haproxy/haproxy-host.ts';
import type { Docker } from './docker-client.ts';
import { ensureImage, type EnsureImageOptions, type ImageTarget } from './images.ts';
import { ProxyContainers, proxyImageTarget, shortDockerError } from './proxy-container.ts';

/** The official image the Dockerfile builds FROM by default (its ARG HAPROXY_BASE). */
export const DEFAULT_HAPROXY_BASE = 'haproxy:2.6';

/** The HAProxy image for images.ts: context sandbox-images/haproxy/, repository `balancer-lab/haproxy`. */
export function haproxyImageTarget(): ImageTarget {
  return proxyImageTarget('haproxy', 'HAPROXY_BASE', DEFAULT_HAPROXY_BASE);
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

/**
 * HAProxy in a Docker container (see the module comment). One host may start several instances
 * (one per work directory); each is its own container.
 */
export class HaproxyContainerHost implements HaproxyHost {
  readonly kind = 'container' as const;
  readonly #containers: ProxyContainers;

  /** @throws Error when sessionId is not 1..40 of [a-zA-Z0-9_.-]. */
  constructor(opts: HaproxyContainerHostOptions) {
    this.#containers = new ProxyContainers({ docker: opts.docker, sessionId: opts.sessionId, engine: 'haproxy', image: opts.image, runTimeoutMs: opts.runTimeoutMs });
  }

  /** The image this host runs. */
  get image(): string {
    return this.#containers.image;
  }

  /** Runs `haproxy -v` in the image; `{ok: false}` says which image is missing and how to get it. */
  async version(): Promise<HaproxyAvailability> {
    const image = this.#containers.image;
    if (!(await this.#containers.hasImage())) {
      return { ok: false, reason: `The HAProxy image ${image} is not built; build it with ensureHaproxyImage() (sandbox-images/haproxy), or set LAB_DOCKER_BASE to a local base image where no registry is reachable.` };
    }
    try {
      const r = await this.#containers.runOnce(['-v'], null);
      return versionOf(r.lines.join('\n'), `haproxy in ${image}`);
    } catch (err) {
      return { ok: false, reason: `haproxy -v could not run in a container of ${image} (${shortDockerError(err)}).` };
    }
  }

  async check(cfgPath: string): Promise<HaproxyCheckResult> {
    let r: { code: number | null; lines: string[] };
    try {
      r = await this.#containers.runOnce(['-c', '-f', cfgPath], path.dirname(cfgPath));
    } catch (err) {
      throw new Error(`haproxy -c could not run in a container (${shortDockerError(err)}).`);
    }
    return r.code === 0 ? { ok: true } : { ok: false, code: r.code, lines: r.lines };
  }

  async start(opts: { workDir: string; cfgPath: string; onLine(line: string): void }): Promise<HaproxyInstance> {
    const c = await this.#containers.start({ workDir: opts.workDir, args: ['-W', '-db', '-f', opts.cfgPath], onLine: (line) => opts.onLine(line) });
    return {
      masterPid: 1,
      hostPid: c.hostPid,
      exited: c.exited,
      signal: (signal) => c.signal(signal),
      alive: async (pid) => {
        // /proc of the container's pid namespace (coreutils' `test` is in every Debian image).
        try {
          return (await c.exec(['test', '-d', `/proc/${Math.trunc(pid)}`])) === 0;
        } catch {
          return false; // the container is gone, and its processes with it
        }
      },
      stop: (graceMs) => c.stop(graceMs),
    };
  }

  /** Removes the HAProxy container serving `workDir` if one is left (running or not), unless a lab that still runs owns it. */
  sweepWorkDir(workDir: string): Promise<boolean> {
    return this.#containers.sweepWorkDir(workDir);
  }

  /**
   * Removes the HAProxy containers (and check containers) of EARLIER sessions: those of another
   * session whose owner (LABEL_OWNER) no longer runs. With `parentDir`, only those whose work
   * directory is inside it. A lab that still runs keeps its proxy. Resolves with how many were removed.
   */
  sweepLeftovers(parentDir?: string): Promise<number> {
    return this.#containers.sweepLeftovers(parentDir);
  }
}
