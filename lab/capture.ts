/**
 * Packet capture of the lesson's traffic with tcpdump, for Wireshark: the proxy's port and the
 * replicas' ports on the loopback interface, written to one .pcap under the state dir. Bounded
 * in bytes and seconds. Where tcpdump cannot run (not installed, no root or CAP_NET_RAW),
 * `available()` says why in a sentence.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { LabError } from './lab.ts';

export type CaptureAvailability = { ok: true } | { ok: false; reason: string };

export interface CaptureOptions {
  /** Folder the .pcap is kept in (created when needed). */
  dir: string;
  /** tcpdump to run: a name looked up on PATH (default `tcpdump`) or a path. */
  tcpdumpPath?: string;
  /** Interface (default `lo`: the lab runs on 127.0.0.1). */
  iface?: string;
  /** Largest file kept (bytes); the capture stops there. Default 20 MB. */
  maxBytes?: number;
}

export interface CaptureState {
  available: boolean;
  reason?: string;
  running: boolean;
  /** Ports filtered on by the running (or last) capture. */
  ports: number[];
  startedAt: number | null;
  /** Seconds the running capture stops after. */
  seconds: number | null;
  /** The last capture's file: size in bytes (null when none was recorded yet). */
  fileBytes: number | null;
  /** Why the last capture ended: stopped, the time limit, the size limit, or tcpdump's own error. */
  endedBy: 'stopped' | 'time' | 'size' | 'error' | null;
  /** tcpdump's last error line, when it failed. */
  error?: string;
}

export const CAPTURE_MAX_SECONDS = 300;
export const CAPTURE_DEFAULT_SECONDS = 60;
const DEFAULT_MAX_BYTES = 20 * 1024 * 1024;
/** CAP_NET_RAW is capability bit 13. */
const CAP_NET_RAW = 13n;

function findOnPath(name: string): string | null {
  if (name.includes('/')) return existsSync(name) ? name : null;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** True when this process may open raw sockets: root, or CAP_NET_RAW in its effective set. */
function mayCapture(): boolean {
  if (process.getuid?.() === 0) return true;
  try {
    const line = readFileSync('/proc/self/status', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('CapEff:'));
    if (!line) return false;
    return ((BigInt(`0x${line.slice(7).trim()}`) >> CAP_NET_RAW) & 1n) === 1n;
  } catch {
    return false;
  }
}

export class Capture {
  readonly file: string;
  private readonly dir: string;
  private readonly tcpdump: string;
  private readonly iface: string;
  private readonly maxBytes: number;
  private child: ChildProcess | null = null;
  private exited: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private sizeTimer: NodeJS.Timeout | null = null;
  private ports: number[] = [];
  private startedAt: number | null = null;
  private seconds: number | null = null;
  private endedBy: CaptureState['endedBy'] = null;
  private error: string | undefined;

  constructor(o: CaptureOptions) {
    this.dir = o.dir;
    this.file = path.join(o.dir, 'lab-capture.pcap');
    this.tcpdump = o.tcpdumpPath ?? 'tcpdump';
    this.iface = o.iface ?? 'lo';
    this.maxBytes = o.maxBytes ?? DEFAULT_MAX_BYTES;
  }

  available(): CaptureAvailability {
    if (!findOnPath(this.tcpdump)) {
      return {
        ok: false,
        reason: `Packet capture needs tcpdump, which is not installed here (${this.tcpdump} not found): install it (apt-get install -y tcpdump) and restart the lab.`,
      };
    }
    if (!mayCapture()) {
      return {
        ok: false,
        reason: 'Packet capture needs root or the CAP_NET_RAW capability, and the lab runs without either: start the lab as root to record a .pcap.',
      };
    }
    return { ok: true };
  }

  get running(): boolean {
    return this.child !== null;
  }

  fileBytes(): number | null {
    try {
      return statSync(this.file).size;
    } catch {
      return null;
    }
  }

  state(): CaptureState {
    const a = this.available();
    return {
      available: a.ok,
      ...(a.ok ? {} : { reason: a.reason }),
      running: this.running,
      ports: this.ports,
      startedAt: this.startedAt,
      seconds: this.seconds,
      fileBytes: this.fileBytes(),
      endedBy: this.endedBy,
      ...(this.error ? { error: this.error } : {}),
    };
  }

  /** Starts tcpdump on the given ports; resolves once it listens. */
  async start(ports: number[], seconds = CAPTURE_DEFAULT_SECONDS): Promise<CaptureState> {
    const a = this.available();
    if (!a.ok) throw new LabError(a.reason, 'conflict');
    if (this.child) throw new LabError('A capture is already recording; stop it first (POST /api/capture/stop).', 'conflict');
    const unique = [...new Set(ports.filter((p) => Number.isInteger(p) && p > 0 && p < 65536))].sort((x, y) => x - y);
    if (unique.length === 0) throw new LabError('Nothing to capture: the lab has no proxy or replica port yet.', 'conflict');
    mkdirSync(this.dir, { recursive: true });
    const filter = `tcp and (${unique.map((p) => `port ${p}`).join(' or ')})`;
    // -U and --immediate-mode: every packet delivered and written at once (a Stop right after a request keeps it); -Z root: keep writing to the state dir (no privilege drop).
    const args = ['-i', this.iface, '-U', '--immediate-mode', '-n', '-Z', 'root', '-w', this.file, filter];
    const child = spawn(this.tcpdump, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    this.ports = unique;
    this.startedAt = Date.now();
    this.seconds = seconds;
    this.endedBy = null;
    this.error = undefined;
    let stderr = '';
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    });
    const listening = new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        stderr += chunk.toString();
        if (/listening on/.test(stderr)) resolve();
      };
      child.stderr?.on('data', onData);
      child.once('error', (err) => reject(new LabError(`tcpdump could not start: ${err.message}`, 'failed')));
      child.once('exit', (code) => {
        const last = stderr.trim().split('\n').filter(Boolean).at(-1) ?? `exit code ${code}`;
        reject(new LabError(`tcpdump stopped at once: ${last}`, 'failed'));
      });
    });
    void this.exited.then(() => {
      if (this.child === child) {
        if (this.endedBy === null) {
          this.endedBy = 'error';
          this.error = stderr.trim().split('\n').filter((l) => !/listening on|packets/.test(l)).at(-1);
        }
        this.clearTimers();
        this.child = null;
      }
    });
    try {
      await Promise.race([
        listening,
        new Promise<void>((_, reject) => setTimeout(() => reject(new LabError('tcpdump did not start listening within 5 s.', 'failed')), 5000).unref()),
      ]);
    } catch (err) {
      await this.end('error');
      this.error = (err as Error).message;
      throw err;
    }
    this.timer = setTimeout(() => void this.end('time'), seconds * 1000);
    this.timer.unref();
    this.sizeTimer = setInterval(() => {
      if ((this.fileBytes() ?? 0) >= this.maxBytes) void this.end('size');
    }, 250);
    this.sizeTimer.unref();
    return this.state();
  }

  /** Stops the running capture (tcpdump flushes and closes the file). */
  async stop(): Promise<CaptureState> {
    if (!this.child) throw new LabError('No capture is recording: press Record first (POST /api/capture/start).', 'conflict');
    await this.end('stopped');
    return this.state();
  }

  /** Stops a running capture, if any (lab shutdown). */
  async close(): Promise<void> {
    if (this.child) await this.end('stopped');
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.sizeTimer) clearInterval(this.sizeTimer);
    this.timer = null;
    this.sizeTimer = null;
  }

  private async end(by: NonNullable<CaptureState['endedBy']>): Promise<void> {
    const child = this.child;
    if (!child) return;
    if (this.endedBy === null) this.endedBy = by;
    this.clearTimers();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(killer);
    if (this.child === child) this.child = null;
  }
}
