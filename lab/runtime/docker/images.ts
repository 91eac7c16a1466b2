/**
 * Builds the lab's images (the sandbox backends; the proxies later) only when needed: the tag
 * carries a hash of everything that goes into the image (context files, Dockerfile, base, build
 * args), so an edited backend gets a new tag and is rebuilt, and an unchanged one is reused.
 *
 * The build context is packed here (files of the context folder, filtered by its .dockerignore,
 * https://docs.docker.com/engine/reference/builder/#dockerignore-file) and sent to the engine's
 * classic builder (POST /build, https://docs.docker.com/engine/api/v1.41/#tag/Image/operation/ImageBuild).
 * Node images get their npm dependencies from the host: containers may not reach the npm
 * registry (as here), so `npm ci --omit=dev` runs on the host once per lockfile and its
 * node_modules goes into the context as deps/node_modules, which the Dockerfiles COPY.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import dockerignore from '@balena/dockerignore';
import tar from 'tar-stream';
import type Docker from 'dockerode';
import type { ImageBuildProgressed } from '../../events.ts';
import type { ServiceName } from '../../topology.ts';
import { NAME_PREFIX } from './docker-client.ts';

/** Label on every image the builder makes: the hash its tag carries. */
export const LABEL_IMAGE_HASH = 'balancer-lab.image-hash';
/** The offline base image that sandbox-images/base/build-offline-base.sh makes. */
export const OFFLINE_BASE = 'balancer-lab/base:bookworm';

/** What to build: generic over the sandbox backends and the proxies. */
export interface ImageTarget {
  /** Repository of the image, e.g. `balancer-lab/web_dynamic`; the tag is a 12-hex content hash. */
  repository: string;
  /** Absolute path of the build context folder. */
  context: string;
  /** Dockerfile path relative to the context, e.g. `web_dynamic/Dockerfile`. */
  dockerfile: string;
  /**
   * Paths relative to the context (files or folders) that go into the context; absent = all.
   * Keeping it to what the Dockerfile COPYs means an edit elsewhere does not rebuild this image.
   */
  include?: string[];
  /** The build arg naming the base image the Dockerfile is FROM, e.g. `NODE_BASE`. */
  baseArg: string;
  /** That arg's default in the Dockerfile (an official image), used when no base is given. */
  defaultBase: string;
  /** Further build args, e.g. `{ NODE_MAJOR: '20' }`. Names match /^[A-Z][A-Z0-9_]*$/. */
  buildArgs?: Record<string, string>;
  /**
   * The context has a package.json + package-lock.json at `npmDir` (relative, default `.`):
   * the builder runs `npm ci --omit=dev` for it on the host and adds the result as `deps/node_modules`.
   */
  npm?: { dir?: string };
}

/** Options of ensureImage() / ImageBuilder. */
export interface EnsureImageOptions {
  /**
   * Base image (the target's baseArg); default: env LAB_DOCKER_BASE, else the target's defaultBase
   * (e.g. `node:20-bookworm-slim`). The offline one is `balancer-lab/base:bookworm`.
   */
  base?: string;
  /** Folder for the host-side npm installs, one per lockfile hash (kept between runs). */
  cacheDir: string;
  /** Called for every line of the build (and of the npm install before it), then once with done: true. */
  onProgress?: (event: ImageBuildProgressed) => void;
}

/** What ensureImage() resolves with. */
export interface EnsuredImage {
  /** `balancer-lab/web_dynamic:3f9c0a1b2c4d` */
  tag: string;
  /** false when the tag already existed. */
  built: boolean;
  /** The base image it was built FROM. */
  base: string;
}

const SANDBOX_DIR = fileURLToPath(new URL('../../../sandbox-images/', import.meta.url));
const BUILD_ARG_NAME = /^[A-Z][A-Z0-9_]*$/;

/** The official base image of each sandbox service (its Dockerfile's ARG NODE_BASE / PHP_BASE default). */
const SANDBOX_BASES: Readonly<Record<ServiceName, string>> = {
  web_static: 'node:20-bookworm-slim',
  web_dynamic: 'node:20-bookworm-slim',
  spring_app: 'node:20-bookworm-slim',
  session_php: 'php:8.2-cli',
};

/** The Dockerfile of the Node services (web_static, web_dynamic, spring_app), which names the service in the build arg SERVICE. */
export const NODE_DOCKERFILE = 'node.Dockerfile';

/**
 * The image target of a sandbox backend: context `sandbox-images/`, repository
 * `balancer-lab/<service>`. Node services: Dockerfile `node.Dockerfile` with the build arg
 * `SERVICE=<service>` (so each gets its own content hash), plus `shared/` and the npm dependencies
 * of sandbox-images/package.json; session_php: `session_php/Dockerfile`.
 */
export function sandboxImageTarget(service: ServiceName): ImageTarget {
  const node = service !== 'session_php';
  return {
    repository: `${NAME_PREFIX}/${service}`,
    context: SANDBOX_DIR,
    dockerfile: node ? NODE_DOCKERFILE : `${service}/Dockerfile`,
    baseArg: node ? 'NODE_BASE' : 'PHP_BASE',
    include: node ? ['package.json', 'package-lock.json', 'shared', service] : [service],
    defaultBase: SANDBOX_BASES[service],
    ...(node ? { buildArgs: { SERVICE: service }, npm: {} } : {}),
  };
}

/** env LAB_DOCKER_BASE when set (trimmed), else undefined. */
export function baseFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env.LAB_DOCKER_BASE?.trim();
  return v ? v : undefined;
}

/**
 * Builds the image of `target` unless its content-hash tag already exists.
 * @returns the tag, whether it was built, and the base used.
 * @throws Error (a sentence) when the base image is missing and cannot be pulled (naming the image
 *   and the offline script), when `npm ci` fails on the host, or when a build step fails
 *   (naming the step and Docker's error).
 */
export function ensureImage(docker: Docker, target: ImageTarget, opts: EnsureImageOptions): Promise<EnsuredImage> {
  return new ImageBuilder(docker, opts).ensure(target);
}

/** One list of context files: relative path (POSIX) -> absolute path. */
type FileList = Map<string, string>;

/**
 * Builds images one at a time (two builds at once only slow each other on a small machine) and
 * shares a build in progress between callers asking for the same tag (three replicas starting
 * at once build once).
 */
export class ImageBuilder {
  readonly #docker: Docker;
  readonly #opts: EnsureImageOptions;
  readonly #inFlight = new Map<string, Promise<EnsuredImage>>();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(docker: Docker, opts: EnsureImageOptions) {
    this.#docker = docker;
    this.#opts = opts;
  }

  /** See ensureImage(). */
  async ensure(target: ImageTarget): Promise<EnsuredImage> {
    const base = this.#opts.base ?? baseFromEnv() ?? target.defaultBase;
    for (const name of Object.keys(target.buildArgs ?? {})) {
      if (!BUILD_ARG_NAME.test(name) || name === target.baseArg) {
        throw new Error(`Build arg ${JSON.stringify(name)} is not allowed (names are upper case; ${target.baseArg} is set by the builder).`);
      }
    }
    const files = listContext(target);
    const hash = contextHash(target, base, files);
    const tag = `${target.repository}:${hash}`;
    const running = this.#inFlight.get(tag);
    if (running) return running;
    const job = (async () => {
      if (await imageExists(this.#docker, tag)) return { tag, built: false, base };
      // Queued: builds run one at a time.
      const turn = this.#queue.then(() => this.#build(target, base, files, tag, hash));
      this.#queue = turn.catch(() => {});
      return turn;
    })();
    this.#inFlight.set(tag, job);
    try {
      return await job;
    } finally {
      this.#inFlight.delete(tag);
    }
  }

  async #build(target: ImageTarget, base: string, files: FileList, tag: string, hash: string): Promise<EnsuredImage> {
    let step: string | null = null;
    const progress = (text: string, done = false, error?: string) => {
      this.#opts.onProgress?.({ image: tag, step, text, done, ...(error !== undefined ? { error } : {}), at: Date.now() });
    };
    try {
      if (await imageExists(this.#docker, tag)) {
        progress('', true);
        return { tag, built: false, base };
      }
      await ensureBase(this.#docker, base, progress);
      const deps = target.npm ? await npmDeps(target, this.#opts.cacheDir, progress) : null;
      const context = packContext(files, deps);
      const stream = await this.#docker.buildImage(context, {
        t: tag,
        dockerfile: target.dockerfile,
        buildargs: { ...target.buildArgs, [target.baseArg]: base },
        labels: { [LABEL_IMAGE_HASH]: hash },
        rm: true,
        forcerm: true,
      } as Docker.ImageBuildOptions);
      let failure: string | null = null;
      await new Promise<void>((resolve, reject) => {
        this.#docker.modem.followProgress(
          stream,
          (err: Error | null) => (err ? reject(err) : resolve()),
          (event: { stream?: string; status?: string; error?: string; errorDetail?: { message?: string } }) => {
            if (event.error) {
              failure = event.errorDetail?.message ?? event.error;
              progress(failure);
              return;
            }
            const text = event.stream ?? event.status;
            if (!text) return;
            for (const line of text.split('\n')) {
              const m = /^Step (\d+\/\d+) :/.exec(line);
              if (m) step = m[1];
              if (line.trim() !== '') progress(line.replace(/\r$/, ''));
            }
          },
        );
      });
      if (failure !== null) {
        throw new Error(`Building ${tag} failed${step ? ` at step ${step}` : ''}: ${oneLine(failure)}.`);
      }
      if (!(await imageExists(this.#docker, tag))) throw new Error(`Building ${tag} ended without the image (the build stream closed early).`);
      // The content tag is what the lab runs; `latest` is for people typing docker commands.
      await this.#docker.getImage(tag).tag({ repo: target.repository, tag: 'latest' });
      progress('', true);
      return { tag, built: true, base };
    } catch (err) {
      const message = (err as Error).message;
      const sentence = /[.!?]$/.test(message) ? message : `Building ${tag} failed: ${oneLine(message)}.`;
      progress('', true, sentence);
      throw err instanceof Error && err.message === sentence ? err : new Error(sentence);
    }
  }
}

/** One line, without dockerode's `(HTTP code 500) server error - ` prefix or a final period. */
function oneLine(text: string): string {
  return text
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/^\(HTTP code \d+\) [^-]*- /, '')
    .replace(/[.:]+$/, '');
}

async function imageExists(docker: Docker, name: string): Promise<boolean> {
  try {
    await docker.getImage(name).inspect();
    return true;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false;
    throw err;
  }
}

/**
 * The base image must be here before the build (the classic builder would try to pull it and
 * fail with a registry error that says nothing about the offline base).
 * @throws Error naming the image and how to provide it.
 */
async function ensureBase(docker: Docker, base: string, progress: (text: string) => void): Promise<void> {
  if (await imageExists(docker, base)) return;
  progress(`Pulling base image ${base}`);
  try {
    const stream = await docker.pull(base);
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(
        stream,
        (err: Error | null) => (err ? reject(err) : resolve()),
        (event: { status?: string; id?: string; error?: string }) => {
          if (event.error) reject(new Error(event.error));
          else if (event.status && !event.status.startsWith('Downloading') && !event.status.startsWith('Extracting')) {
            progress(event.id ? `${event.id}: ${event.status}` : event.status);
          }
        },
      );
    });
  } catch (err) {
    const why = oneLine((err as { json?: { message?: string } }).json?.message ?? (err as Error).message);
    throw new Error(
      `The base image ${base} is not here and cannot be pulled (${why}): build the offline one with sandbox-images/base/build-offline-base.sh and set LAB_DOCKER_BASE=${OFFLINE_BASE}.`,
    );
  }
  if (!(await imageExists(docker, base))) {
    throw new Error(`The base image ${base} could not be pulled: build the offline one with sandbox-images/base/build-offline-base.sh and set LAB_DOCKER_BASE=${OFFLINE_BASE}.`);
  }
}

/**
 * The files of the build context: `target.include` (or everything) under the context folder,
 * without what its .dockerignore excludes, sorted. Symlinks are kept as links.
 */
function listContext(target: ImageTarget): FileList {
  const root = target.context;
  let ignore: ((p: string) => boolean) | null = null;
  const ignoreFile = path.join(root, '.dockerignore');
  if (fs.existsSync(ignoreFile)) {
    const ig = dockerignore({ ignorecase: false }).add(fs.readFileSync(ignoreFile, 'utf8'));
    ignore = (p) => ig.ignores(p);
  }
  const files: FileList = new Map();
  const visit = (rel: string) => {
    if (rel !== '' && ignore?.(rel)) return; // '' is the context itself
    const abs = path.join(root, rel);
    const st = fs.lstatSync(abs);
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(abs).sort()) visit(rel ? `${rel}/${name}` : name);
    } else if (st.isFile() || st.isSymbolicLink()) {
      files.set(rel, abs);
    }
  };
  const roots = target.include ?? [''];
  for (const r of roots) {
    if (r !== '' && !fs.existsSync(path.join(root, r))) throw new Error(`The image ${target.repository} needs ${r} in ${root}, which is missing.`);
    visit(r.replace(/\/+$/, ''));
  }
  // The Dockerfile is always part of the context, even when .dockerignore or include leave it out.
  files.set(target.dockerfile, path.join(root, target.dockerfile));
  return new Map([...files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** 12 hex of sha256 over the Dockerfile name, base, build args and every context file (path, mode, bytes). */
function contextHash(target: ImageTarget, base: string, files: FileList): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ dockerfile: target.dockerfile, base, baseArg: target.baseArg, args: Object.entries(target.buildArgs ?? {}).sort() }));
  for (const [rel, abs] of files) {
    const st = fs.lstatSync(abs);
    h.update(`\0${rel}\0${st.mode & 0o111 ? 'x' : '-'}\0`);
    h.update(st.isSymbolicLink() ? `->${fs.readlinkSync(abs)}` : fs.readFileSync(abs));
  }
  return h.digest('hex').slice(0, 12);
}

/** A tar stream of the context files, plus `deps/node_modules/...` from the host-side npm install. */
function packContext(files: FileList, depsDir: string | null): NodeJS.ReadableStream {
  const pack = tar.pack();
  const mtime = new Date(0); // the hash, not the mtime, says whether the image is current
  const add = (name: string, abs: string) => {
    const st = fs.lstatSync(abs);
    if (st.isSymbolicLink()) pack.entry({ name, type: 'symlink', linkname: fs.readlinkSync(abs), mtime, mode: 0o777 });
    else pack.entry({ name, type: 'file', mode: st.mode & 0o777, mtime }, fs.readFileSync(abs));
  };
  for (const [rel, abs] of files) add(rel, abs);
  if (depsDir) {
    const walk = (abs: string, rel: string) => {
      for (const entry of fs.readdirSync(abs, { withFileTypes: true })) {
        const a = path.join(abs, entry.name);
        const r = `${rel}/${entry.name}`;
        if (entry.isDirectory()) walk(a, r);
        else add(r, a);
      }
    };
    walk(path.join(depsDir, 'node_modules'), 'deps/node_modules');
  }
  pack.finalize();
  return pack;
}

/**
 * `npm ci --omit=dev` on the host for the target's package-lock.json, cached by the lock's hash
 * under `<cacheDir>/npm-<hash>/` (made in a temp folder, then renamed: a killed install never
 * looks complete).
 * @returns the folder holding node_modules.
 * @throws Error with npm's last lines when the install fails.
 */
async function npmDeps(target: ImageTarget, cacheDir: string, progress: (text: string) => void): Promise<string> {
  const dir = path.join(target.context, target.npm?.dir ?? '.');
  const lock = fs.readFileSync(path.join(dir, 'package-lock.json'));
  const pkg = fs.readFileSync(path.join(dir, 'package.json'));
  const key = createHash('sha256').update(pkg).update('\0').update(lock).digest('hex').slice(0, 16);
  const done = path.join(cacheDir, `npm-${key}`);
  if (fs.existsSync(path.join(done, 'node_modules'))) return done;
  fs.mkdirSync(cacheDir, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(cacheDir, `.npm-${key}-`));
  try {
    fs.writeFileSync(path.join(tmp, 'package.json'), pkg);
    fs.writeFileSync(path.join(tmp, 'package-lock.json'), lock);
    progress(`npm ci --omit=dev (on the host: the containers may not reach the npm registry)`);
    const tail: string[] = [];
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund', '--ignore-scripts', '--prefix', tmp], {
        cwd: tmp,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const onData = (chunk: Buffer) => {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (!line.trim() || /Unknown user config/.test(line)) continue;
          progress(line);
          tail.push(line);
          if (tail.length > 5) tail.shift();
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('error', (err) => reject(new Error(`npm could not be started for the image dependencies (${err.message}): install Node.js with npm.`)));
      child.once('close', resolve);
    });
    if (code !== 0) throw new Error(`npm ci for the image dependencies failed (exit ${code}): ${oneLine(tail.join(' ')) || 'no output'}.`);
    try {
      fs.renameSync(tmp, done);
    } catch (err) {
      // Another lab made it meanwhile: theirs is as good as ours.
      if (!fs.existsSync(path.join(done, 'node_modules'))) throw err;
    }
    return done;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
