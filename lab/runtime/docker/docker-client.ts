/**
 * The one way the lab reaches a Docker engine: `connectDocker()` (honours DOCKER_HOST, pings,
 * and fails with one sentence when Docker is absent), the labels every lab object carries,
 * and `followLogs()` for a container's multiplexed stdout/stderr.
 *
 * Only files under lab/runtime/docker/ import dockerode (docs/ARCHITECTURE.md).
 */
import fs from 'node:fs';
import os from 'node:os';
import { Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as delay } from 'node:timers/promises';
import Docker from 'dockerode';

export type { default as Docker } from 'dockerode';

/** Label naming the lab session that created a container, network or image (value: the session id). */
export const LABEL_SESSION = 'balancer-lab.session';
/** Label naming what the object is to the lab: `replica`, `proxy` or `network`. */
export const LABEL_ROLE = 'balancer-lab.role';
/** Label naming the demo service of a replica container, e.g. `web_dynamic`. */
export const LABEL_SERVICE = 'balancer-lab.service';
/** Label carrying the replica's hostname as the lab knows it, e.g. `web_dynamic-2-a1b2`. */
export const LABEL_HOSTNAME = 'balancer-lab.hostname';
/**
 * Label naming the lab process that created a container or network: `<host name>/<pid>/<start>`
 * (start: /proc/<pid>/stat field 22, so a recycled pid is not taken for the lab; `-` without
 * /proc). A sweep leaves objects whose owner still runs (ownerAlive()).
 */
export const LABEL_OWNER = 'balancer-lab.owner';
/** Prefix of every container, network and image name the lab creates. */
export const NAME_PREFIX = 'balancer-lab';

/** What a lab object is, in the LABEL_ROLE label. */
export type LabRole = 'replica' | 'proxy' | 'network';

/**
 * Docker cannot be reached (no socket, refused, permission denied, no answer to a ping).
 * `message` is one sentence naming the endpoint and offering process mode, without a stack.
 */
export class DockerUnavailableError extends Error {
  override readonly name = 'DockerUnavailableError';
  /** e.g. `/var/run/docker.sock` or `tcp://10.0.0.2:2375`. */
  readonly endpoint: string;
  /** Short cause, e.g. `connect ENOENT` or `no answer within 5000 ms`. */
  readonly reason: string;

  constructor(endpoint: string, reason: string) {
    super(
      `Docker is not reachable at ${endpoint} (${reason}): start Docker, or run the lab in process mode with \`npm start\` (no --runtime docker).`,
    );
    this.endpoint = endpoint;
    this.reason = reason;
  }
}

/** Options of connectDocker(). */
export interface ConnectDockerOptions {
  /** Unix socket of the engine; default: DOCKER_HOST (unix:// or tcp://), else /var/run/docker.sock. */
  socketPath?: string;
  /** How long the ping may take, ms (default 5000). */
  pingTimeoutMs?: number;
}

/**
 * Connects to the Docker engine and pings it.
 *
 * Endpoint: `opts.socketPath`, else `DOCKER_HOST` (`unix:///path`, or `tcp://host:port`, with
 * DOCKER_TLS_VERIFY / DOCKER_CERT_PATH as the docker CLI reads them), else /var/run/docker.sock.
 *
 * @returns a dockerode client whose engine answered the ping.
 * @throws DockerUnavailableError (one sentence) when the engine is absent, refuses, or does not
 *   answer within `pingTimeoutMs`; Error when DOCKER_HOST is malformed.
 */
export async function connectDocker(opts: ConnectDockerOptions = {}): Promise<Docker> {
  const { docker, endpoint } = clientFor(opts.socketPath);
  const timeoutMs = opts.pingTimeoutMs ?? 5000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      docker.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new PingTimeout(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } catch (err) {
    throw new DockerUnavailableError(endpoint, reasonOf(err));
  } finally {
    clearTimeout(timer);
  }
  return docker;
}

class PingTimeout extends Error {}

function clientFor(socketPath: string | undefined): { docker: Docker; endpoint: string } {
  if (socketPath) return { docker: new Docker({ socketPath }), endpoint: socketPath };
  const host = process.env.DOCKER_HOST?.trim();
  if (!host) return { docker: new Docker({ socketPath: '/var/run/docker.sock' }), endpoint: '/var/run/docker.sock' };
  if (host.startsWith('unix://')) {
    const path = host.slice('unix://'.length) || '/var/run/docker.sock';
    return { docker: new Docker({ socketPath: path }), endpoint: path };
  }
  if (/^(tcp|http|https):\/\//.test(host)) {
    // docker-modem reads DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH itself for tcp.
    return { docker: new Docker(), endpoint: host };
  }
  throw new Error(`DOCKER_HOST must look like unix:///var/run/docker.sock or tcp://host:2375, not ${JSON.stringify(host)}.`);
}

/** A short cause for the sentence: `connect ENOENT`, `connect ECONNREFUSED`, an HTTP status, or the message's first line. */
function reasonOf(err: unknown): string {
  if (err instanceof PingTimeout) return err.message;
  const e = err as { code?: unknown; syscall?: unknown; statusCode?: unknown; message?: unknown };
  if (typeof e?.code === 'string') return typeof e.syscall === 'string' ? `${e.syscall} ${e.code}` : e.code;
  if (typeof e?.statusCode === 'number') return `HTTP ${e.statusCode} on ping`;
  const first = String(e?.message ?? err).split('\n')[0].trim();
  return first.replace(/[.:]+$/, '') || 'no answer';
}

/** A handle on a followed log stream. */
export interface LogFollower {
  /** Stops following (destroys the stream); idempotent. */
  stop(): void;
  /** Resolves when the stream ends (the container exited, or stop() was called). Never rejects. */
  readonly ended: Promise<void>;
}

/** Options of followLogs(). */
export interface FollowLogsOptions {
  /** Only lines logged at or after this time, epoch seconds (Docker's `since`); default: all. */
  since?: number;
  /** The container was created with a TTY (its output is not multiplexed); default false. */
  tty?: boolean;
}

/**
 * Follows a container's stdout and stderr and calls `onLine` once per line, without the newline
 * (a trailing partial line is delivered when the stream ends). Call it on a started container:
 * Docker ends the stream of a created one at once. Without `since` it replays the whole log first,
 * so nothing logged between start and this call is lost. Non-TTY containers send both
 * streams multiplexed in frames; dockerode's `modem.demuxStream` splits them
 * (https://docs.docker.com/engine/api/v1.41/#tag/Container/operation/ContainerAttach).
 *
 * @throws the engine's error when the container does not exist.
 */
export async function followLogs(
  container: Docker.Container,
  onLine: (stream: 'stdout' | 'stderr', text: string) => void,
  opts: FollowLogsOptions = {},
): Promise<LogFollower> {
  const raw = (await container.logs({
    follow: true,
    stdout: true,
    stderr: true,
    ...(opts.since !== undefined ? { since: opts.since } : {}),
  })) as NodeJS.ReadableStream & { destroy?: () => void };
  const out = lineSplitter('stdout', onLine);
  const err = lineSplitter('stderr', onLine);
  const modem = (container as unknown as { modem: { demuxStream(s: NodeJS.ReadableStream, o: Writable, e: Writable): void } }).modem;
  if (opts.tty) raw.on('data', (chunk: Buffer) => out.write(chunk));
  else modem.demuxStream(raw, out, err);
  const ended = new Promise<void>((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      // Resolve only once both splitters flushed their last partial line.
      let open = 2;
      const one = () => {
        if (--open === 0) resolve();
      };
      out.end(one);
      err.end(one);
    };
    raw.on('end', finish);
    raw.on('close', finish);
    raw.on('error', finish);
  });
  return {
    stop: () => raw.destroy?.(),
    ended,
  };
}

/** A Writable that decodes UTF-8 and calls onLine per complete line (a `\r` before `\n` dropped). */
function lineSplitter(stream: 'stdout' | 'stderr', onLine: (stream: 'stdout' | 'stderr', text: string) => void): Writable {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  const emit = (text: string) => {
    const lines = (pending + text).split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) onLine(stream, line.endsWith('\r') ? line.slice(0, -1) : line);
  };
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      emit(decoder.write(chunk));
      cb();
    },
    final(cb) {
      emit(decoder.end());
      if (pending) onLine(stream, pending);
      pending = '';
      cb();
    },
  });
}

/**
 * Label filter for listContainers/listNetworks: `{ label: ['balancer-lab.session=<id>', ...] }`.
 * Without a session id it matches every lab object (any session).
 */
export function labelFilter(sessionId?: string, role?: LabRole): { label: string[] } {
  const label = [sessionId ? `${LABEL_SESSION}=${sessionId}` : LABEL_SESSION];
  if (role) label.push(`${LABEL_ROLE}=${role}`);
  return { label };
}

/** Start time of a process, /proc/<pid>/stat field 22 (clock ticks since boot); null without /proc, when gone, or a zombie. */
function processStart(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (in parentheses, which may itself hold spaces); state first.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return null; // a zombie runs nothing: its lab is gone
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

/** The LABEL_OWNER value of this process: `<host name>/<pid>/<start>`. */
export function ownerLabel(): string {
  return `${os.hostname()}/${process.pid}/${processStart(process.pid) ?? '-'}`;
}

/**
 * Whether the lab named by a LABEL_OWNER value may still run: true when it ran on another host
 * (a lab in a container: cannot be told from here), or on this one with its pid alive and the
 * same start time. No label (or a malformed one): false, the object is a leftover.
 */
export function ownerAlive(owner: string | undefined): boolean {
  const parts = owner?.split('/') ?? [];
  if (parts.length !== 3) return false;
  const [host, pidText, start] = parts;
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (host !== os.hostname()) return true;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  if (start === '-') return true; // no /proc where it ran: trust the pid
  return processStart(pid) === start;
}

/**
 * Runs `cmd` (an argument array, no shell) in a running container as `user` (`uid:gid`, default the
 * image's) and resolves with its exit code once Docker recorded it, or null when it could not be
 * told within 2 s of the command's end. Its output is discarded.
 * @throws the engine's error when the container is gone or not running.
 */
export async function execExitCode(container: Docker.Container, cmd: string[], user?: string): Promise<number | null> {
  const exec = await container.exec({ Cmd: cmd, ...(user ? { User: user } : {}), AttachStdout: false, AttachStderr: false });
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
    if (!r.Running && r.ExitCode !== null) return r.ExitCode;
    await delay(20);
  }
  return null;
}
