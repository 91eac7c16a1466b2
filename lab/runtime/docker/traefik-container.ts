/**
 * Traefik in a Docker container: a TraefikHost (lab/proxy/traefik/traefik-host.ts) for the
 * TraefikDriver in Docker mode. The driver is unchanged; only where the `traefik` binary runs differs.
 *
 * The container is a proxy container as proxy-container.ts runs them: host network (Traefik binds
 * the lab's proxy port and its API port on this machine and reaches replicas on 127.0.0.1 and on
 * bridge IPs), the driver's work directory bind-mounted at the SAME absolute path (traefik.yml and
 * the watched `dynamic/` directory are shared files: the driver's atomic renames reach Traefik's
 * file watch), the lab's uid:gid, the lab's labels with `balancer-lab.engine=traefik`, name
 * `balancer-lab-traefik-<session>-<8 hex>`. Entrypoint `traefik` (set explicitly: the official
 * image's own entrypoint is a shell script), Cmd `--configFile=<workDir>/traefik.yml`; `traefik
 * version` runs in a short-lived container of the same image.
 *
 * Where the image comes from (traefikImageSource()):
 * - env LAB_TRAEFIK_IMAGE: that local image, run as it is (any image with a `traefik` v3 on PATH);
 * - else `balancer-lab/traefik:<hash>`, built by images.ts from sandbox-images/traefik/Dockerfile
 *   FROM env LAB_TRAEFIK_BASE, default `traefik:v3.1` (the official image). LAB_DOCKER_BASE (the
 *   offline Debian base of the other images) is NOT used: Debian has no Traefik package.
 * Without registry access and without that image, every way in ends in ONE sentence naming the
 * image and how to provide it (traefikImageMissing()).
 *
 * Only files under lab/runtime/docker/ import dockerode.
 */
import os from 'node:os';
import path from 'node:path';
import type { ImageBuildProgressed } from '../../events.ts';
import { traefikVersionOf, type TraefikAvailability, type TraefikHost, type TraefikInstance } from '../../proxy/traefik/traefik-host.ts';
import type { Docker } from './docker-client.ts';
import { ensureImage, type ImageTarget } from './images.ts';
import { checkSessionId, ProxyContainers, proxyImageTarget, shortDockerError, sweepProxyContainers, sweepProxyWorkDir } from './proxy-container.ts';

/** The official image the Dockerfile builds FROM by default (its ARG TRAEFIK_BASE). */
export const DEFAULT_TRAEFIK_BASE = 'traefik:v3.1';

/** images.ts's host-side cache folder when no cacheDir is given (the Traefik image needs none, images.ts wants one). */
const DEFAULT_CACHE_DIR = path.join(os.tmpdir(), 'balancer-lab-image-cache');

/** The line the Dockerfile prints when its base has no traefik binary (traefikImageSource's build then fails with a sentence). */
const NO_BINARY_MARKER = 'The base image has no traefik binary';

/** The Traefik image for images.ts: context sandbox-images/traefik/, repository `balancer-lab/traefik`. */
export function traefikImageTarget(): ImageTarget {
  return proxyImageTarget('traefik', 'TRAEFIK_BASE', DEFAULT_TRAEFIK_BASE);
}

/**
 * Where the Traefik image comes from, read from `env`: `{ image }` = LAB_TRAEFIK_IMAGE, run as it
 * is; else `{ base }` = LAB_TRAEFIK_BASE or `traefik:v3.1`, the base the image is built FROM.
 * Values are trimmed; an empty one counts as unset.
 */
export function traefikImageSource(env: NodeJS.ProcessEnv = process.env): { image: string } | { base: string } {
  const image = env.LAB_TRAEFIK_IMAGE?.trim();
  if (image) return { image };
  return { base: env.LAB_TRAEFIK_BASE?.trim() || DEFAULT_TRAEFIK_BASE };
}

/**
 * The one sentence for a Traefik image that is not on this machine, e.g. "The Traefik image
 * traefik:v3.1 is not on this machine and cannot be pulled: run `docker pull traefik:v3.1` where a
 * registry is reachable, or `docker load` it (or set LAB_TRAEFIK_IMAGE to a local Traefik v3
 * image), then start again."
 */
export function traefikImageMissing(image: string): string {
  return (
    `The Traefik image ${image} is not on this machine and cannot be pulled: run \`docker pull ${image}\` where a registry is reachable, ` +
    `or \`docker load\` it (or set LAB_TRAEFIK_IMAGE to a local Traefik v3 image), then start again.`
  );
}

function imagePresent(docker: Docker, name: string): Promise<boolean> {
  return docker
    .getImage(name)
    .inspect()
    .then(
      () => true,
      () => false,
    );
}

/**
 * Whether the Traefik image can be had here WITHOUT building or pulling (cheap: image inspects
 * only): the LAB_TRAEFIK_IMAGE image is present, or the base the image is built FROM is.
 * @returns `{ok: true, version}` (a description such as `in a container (sandbox-images/traefik FROM traefik:v3.1)`)
 *   or `{ok: false, reason}` (traefikImageMissing()). Never rejects.
 */
export async function traefikImageAvailability(docker: Docker, env: NodeJS.ProcessEnv = process.env): Promise<TraefikAvailability> {
  const source = traefikImageSource(env);
  const name = 'image' in source ? source.image : source.base;
  if (!(await imagePresent(docker, name))) return { ok: false, reason: traefikImageMissing(name) };
  return { ok: true, version: 'image' in source ? `in a container of ${name}` : `in a container (sandbox-images/traefik FROM ${name})` };
}

/** Options of ensureTraefikImage(). */
export interface EnsureTraefikImageOptions {
  /** Folder images.ts keeps host-side installs in (unused by this image, required by images.ts). */
  cacheDir: string;
  /** Every build line, then once `done: true` (with `error`, the same sentence that is thrown, on failure). */
  onProgress?: (event: ImageBuildProgressed) => void;
  /** Where LAB_TRAEFIK_IMAGE / LAB_TRAEFIK_BASE are read. Default process.env. */
  env?: NodeJS.ProcessEnv;
}

/**
 * The Traefik image to run: LAB_TRAEFIK_IMAGE when set (it must be present), else
 * `balancer-lab/traefik:<hash>` built from sandbox-images/traefik FROM LAB_TRAEFIK_BASE or
 * `traefik:v3.1` unless that tag exists (images.ts ensureImage(): the base is pulled when missing).
 * @returns the image name or tag, e.g. `balancer-lab/traefik:3f9c0a1b2c4d`.
 * @throws Error, one sentence: traefikImageMissing() when the image or base is not here and cannot
 *   be pulled; a base without a traefik binary; or images.ts's sentence for another build failure.
 */
export async function ensureTraefikImage(docker: Docker, opts: EnsureTraefikImageOptions): Promise<string> {
  const source = traefikImageSource(opts.env);
  if ('image' in source) {
    if (await imagePresent(docker, source.image)) return source.image;
    throw new Error(traefikImageMissing(source.image));
  }
  // images.ts ends a failed build with its own sentence (about the offline Debian base, which
  // cannot hold Traefik): hold that final event and send ours instead.
  let failed: ImageBuildProgressed | null = null;
  let noBinary = false;
  const onProgress = (e: ImageBuildProgressed) => {
    if (e.text.includes(NO_BINARY_MARKER)) noBinary = true;
    if (e.done && e.error !== undefined) failed = e;
    else opts.onProgress?.(e);
  };
  try {
    return (await ensureImage(docker, traefikImageTarget(), { base: source.base, cacheDir: opts.cacheDir, onProgress })).tag;
  } catch (err) {
    let sentence = (err as Error).message;
    if (!(await imagePresent(docker, source.base))) sentence = traefikImageMissing(source.base);
    else if (noBinary) {
      sentence = `The base image ${source.base} has no traefik binary, so the Traefik image cannot be built FROM it: set LAB_TRAEFIK_BASE to a Traefik v3 image (default ${DEFAULT_TRAEFIK_BASE}), or LAB_TRAEFIK_IMAGE to a local one.`;
    }
    const last = failed as ImageBuildProgressed | null;
    opts.onProgress?.({ image: last?.image ?? traefikImageTarget().repository, step: last?.step ?? null, text: '', done: true, error: sentence, at: Date.now() });
    throw new Error(sentence);
  }
}

/** Options of TraefikContainerHost. */
export interface TraefikContainerHostOptions {
  /** A connected client (docker-client.ts connectDocker()). */
  docker: Docker;
  /** The lab session: label `balancer-lab.session` of every container made here. 1..40 of [a-zA-Z0-9_.-]. */
  sessionId: string;
  /** The image to run. Default: ensureTraefikImage() on first use (version() or start()), with the options below. */
  image?: string;
  /** For ensureTraefikImage(); default: `<os tmpdir>/balancer-lab-image-cache`. */
  cacheDir?: string;
  /** Build progress of ensureTraefikImage() (the lab sends it as `image:build` events). */
  onProgress?: (event: ImageBuildProgressed) => void;
  /** Where LAB_TRAEFIK_IMAGE / LAB_TRAEFIK_BASE are read. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** How long `traefik version` may take in its container, ms. Default 60000. */
  runTimeoutMs?: number;
}

/**
 * Traefik v3 in a Docker container (see the module comment). One host may start several
 * instances (one per work directory); each is its own container. Sweeps need no image.
 */
export class TraefikContainerHost implements TraefikHost {
  readonly kind = 'container' as const;
  readonly #opts: TraefikContainerHostOptions;
  #containers: Promise<ProxyContainers> | null = null;
  #version: TraefikAvailability | null = null;

  /** @throws Error when sessionId is not 1..40 of [a-zA-Z0-9_.-]. */
  constructor(opts: TraefikContainerHostOptions) {
    checkSessionId(opts.sessionId);
    this.#opts = opts;
    if (opts.image) this.#containers = Promise.resolve(this.#make(opts.image));
  }

  #make(image: string): ProxyContainers {
    const o = this.#opts;
    return new ProxyContainers({ docker: o.docker, sessionId: o.sessionId, engine: 'traefik', image, entrypoint: ['traefik'], runTimeoutMs: o.runTimeoutMs });
  }

  /** The image (built if needed, once; a failure is retried on the next call). @throws Error (a sentence) as ensureTraefikImage(). */
  #resolve(): Promise<ProxyContainers> {
    this.#containers ??= ensureTraefikImage(this.#opts.docker, {
      cacheDir: this.#opts.cacheDir ?? DEFAULT_CACHE_DIR,
      onProgress: this.#opts.onProgress,
      env: this.#opts.env,
    }).then(
      (image) => this.#make(image),
      (err: unknown) => {
        this.#containers = null;
        throw err;
      },
    );
    return this.#containers;
  }

  /**
   * Builds or finds the image (once), then runs `traefik version` in it (once it said ok).
   * @returns `{ok: true, version}` (e.g. `3.1.2`) or `{ok: false, reason}`, one sentence: the
   *   image is missing and cannot be pulled (traefikImageMissing()), cannot be built, has no
   *   traefik, or holds one older than v3. Never rejects.
   */
  async version(): Promise<TraefikAvailability> {
    if (this.#version) return this.#version;
    let c: ProxyContainers;
    try {
      c = await this.#resolve();
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
    if (!(await c.hasImage())) return { ok: false, reason: traefikImageMissing(c.image) };
    let found: TraefikAvailability;
    try {
      const r = await c.runOnce(['version'], null);
      found = traefikVersionOf(r.lines.join('\n'), `traefik in ${c.image}`);
    } catch (err) {
      return { ok: false, reason: `traefik version could not run in a container of ${c.image} (${shortDockerError(err)}); use an image with a traefik v3 binary on PATH.` };
    }
    if (found.ok) this.#version = found;
    return found;
  }

  /**
   * Starts `traefik --configFile=<configFile>` in its container and resolves once it runs (the
   * driver awaits readiness).
   * @throws Error (a sentence) when the image cannot be had or the container cannot start.
   */
  async start(opts: { workDir: string; configFile: string; onLine(line: string, stream: 'stdout' | 'stderr'): void }): Promise<TraefikInstance> {
    const containers = await this.#resolve();
    const c = await containers.start({ workDir: opts.workDir, args: [`--configFile=${opts.configFile}`], onLine: opts.onLine });
    return { hostPid: c.hostPid, exited: c.exited, stop: (graceMs) => c.stop(graceMs) };
  }

  /** Removes the Traefik container serving `workDir` if one is left (running or not), unless a lab that still runs owns it. */
  sweepWorkDir(workDir: string): Promise<boolean> {
    return sweepProxyWorkDir(this.#opts.docker, 'traefik', workDir);
  }

  /** Removes the Traefik containers of earlier labs that no longer run (another session, owner gone), wherever their work directory was. */
  sweepLeftovers(): Promise<number> {
    return sweepProxyContainers(this.#opts.docker, { sessionId: this.#opts.sessionId, engine: 'traefik' });
  }
}
