/**
 * What bench.ts measures with: goals beside figures, an HTTP load from a separate process (wrk
 * when installed, else autocannon in a child process), CPU and memory read from /proc, and a
 * V8 CPU profile (`node --cpu-prof`) summarised over a time window.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../../server/state-file.ts';

// ------------------------------------------------------------------------------------ goals

export interface Figure {
  value: number;
  unit: string;
  goal: string;
  met: boolean;
  /** When missed: how far from the goal, e.g. "+0.31 s" or "-0.08x". */
  missedBy?: string;
}

const fmt = (x: number) => String(Math.round(x * 100) / 100);

/** A figure that must be at most `limit`. */
export function atMost(value: number, limit: number, unit: string): Figure {
  const met = value <= limit;
  return { value, unit, goal: `<= ${limit} ${unit}`, met, ...(met ? {} : { missedBy: `+${fmt(value - limit)} ${unit}` }) };
}

/** A figure that must be at least `limit`. */
export function atLeast(value: number, limit: number, unit: string): Figure {
  const met = value >= limit;
  return { value, unit, goal: `>= ${limit} ${unit}`, met, ...(met ? {} : { missedBy: `-${fmt(limit - value)} ${unit}` }) };
}

/** A figure that must be exactly true. */
export function isTrue(value: boolean, what: string): { value: boolean; goal: string; met: boolean; missedBy?: string } {
  return { value, goal: what, met: value, ...(value ? {} : { missedBy: 'not exact' }) };
}

export const percentile = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(sorted.length * p) - 1))] : 0);
export const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 0.5);

// ------------------------------------------------------------------------------------- load

export interface LoadResult {
  tool: 'wrk' | 'autocannon';
  requestsPerSecond: number;
  requests: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  errors: number;
}

export const wrkInstalled = () => !spawnSync('wrk', ['-v'], { stdio: 'ignore' }).error;

/** "1.23ms" / "456.00us" / "1.02s" / "1.5m" -> ms. */
function wrkMs(s: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(s.trim());
  if (!m) return NaN;
  const x = Number(m[1]);
  return Math.round({ us: x / 1000, ms: x, s: x * 1000, m: x * 60_000 }[m[2] as 'us' | 'ms' | 's' | 'm'] * 100) / 100;
}

function run(cmd: string, args: string[], onSpawn?: (pid: number) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid) onSpawn?.(child.pid);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with code ${code}: ${err.slice(0, 300)}`))));
  });
}

/**
 * A closed-loop load of `seconds` with `connections` keep-alive connections from its own process:
 * wrk (one thread) when installed, else autocannon in a child process.
 */
export async function loadFromChild(url: string, seconds: number, connections: number, useWrk: boolean): Promise<LoadResult> {
  if (useWrk) {
    const out = await run('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', url]);
    const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
    const lat = (p: string) => wrkMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out)?.[1] ?? '');
    const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    return {
      tool: 'wrk',
      requestsPerSecond: Math.round(num(/Requests\/sec:\s+([\d.]+)/)),
      requests: num(/(\d+) requests in/),
      latencyP50Ms: lat('50'),
      latencyP99Ms: lat('99'),
      errors: (socketErrors ? socketErrors.slice(1).reduce((n, x) => n + Number(x), 0) : 0) + (Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0)),
    };
  }
  const out = await run(process.execPath, [path.join(REPO_ROOT, 'node_modules/autocannon/autocannon.js'), '-c', String(connections), '-d', String(seconds), '-j', url]);
  const r = JSON.parse(out) as { requests: { average: number; total: number }; latency: { p50: number; p99: number }; errors: number; non2xx: number };
  return { tool: 'autocannon', requestsPerSecond: Math.round(r.requests.average), requests: r.requests.total, latencyP50Ms: r.latency.p50, latencyP99Ms: r.latency.p99, errors: r.errors + r.non2xx };
}

/** `total` GETs at `rate` a second from autocannon in a child process (its own CPU). */
export async function rateLoadInChild(url: string, rate: number, total: number): Promise<{ sent: number; failed: number; ms: number }> {
  const out = await run(process.execPath, [path.join(REPO_ROOT, 'node_modules/autocannon/autocannon.js'), '-R', String(rate), '-a', String(total), '-c', '50', '-j', url]);
  const r = JSON.parse(out) as { requests: { total: number }; errors: number; non2xx: number; duration: number };
  return { sent: r.requests.total, failed: r.errors + r.non2xx, ms: Math.round(r.duration * 1000) };
}

// -------------------------------------------------------------------------------------- /proc

const round1 = (x: number) => Math.round(x * 10) / 10;

function statusField(pid: number, field: string): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Resident memory (MB) from /proc/<pid>/status. */
export const rssMb = (pid: number) => round1(statusField(pid, 'VmRSS'));

/** RSS split into anonymous (heap, stacks) and file-backed (the node binary, shared libraries) pages, plus PSS (shared pages divided among their sharers). */
export function memoryOf(pid: number): { rssMb: number; anonMb: number; fileMb: number; pssMb: number } {
  let pss = NaN;
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    if (m) pss = Number(m[1]) / 1024;
  } catch {
    /* gone */
  }
  return { rssMb: rssMb(pid), anonMb: round1(statusField(pid, 'RssAnon')), fileMb: round1(statusField(pid, 'RssFile')), pssMb: round1(pss) };
}

/** Every live process below `pid` (children, grandchildren...), with its command name. */
export function descendants(pid: number): Array<{ pid: number; comm: string }> {
  const parentOf = new Map<number, { ppid: number; comm: string }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const rest = stat.slice(close + 2).split(' ');
      if (rest[0] === 'Z') continue;
      parentOf.set(Number(d), { ppid: Number(rest[1]), comm });
    } catch {
      /* exited meanwhile */
    }
  }
  const out: Array<{ pid: number; comm: string }> = [];
  for (const [p, { comm }] of parentOf) {
    let q = parentOf.get(p)?.ppid;
    while (q !== undefined && q > 1) {
      if (q === pid) {
        out.push({ pid: p, comm });
        break;
      }
      q = parentOf.get(q)?.ppid;
    }
  }
  return out;
}

/** CPU time (user + system, ms) a process used so far. */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) * 10; // clock ticks of 10 ms (USER_HZ 100)
  } catch {
    return NaN;
  }
}

/** Busy and total CPU time of the whole machine (ms, all cores). */
export function machineCpuMs(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0) * 10;
  const idle = (f[3] + f[4]) * 10;
  return { busy: total - idle, total };
}

/**
 * CPU use during `work`, in % of one core: each named group of pids, and the rest of the machine
 * (the load generator, this bench, anything else running).
 */
export async function cpuDuring<T>(
  groups: Record<string, number[]>,
  work: () => Promise<T>,
): Promise<{ result: T; cpuPercentOfOneCore: Record<string, number>; cpuMsUsed: Record<string, number> }> {
  const sum = (pids: number[]) => pids.reduce((n, p) => n + (cpuMs(p) || 0), 0);
  const before = Object.fromEntries(Object.entries(groups).map(([k, pids]) => [k, sum(pids)]));
  const m0 = machineCpuMs();
  const t0 = performance.now();
  const result = await work();
  const wall = performance.now() - t0;
  const m1 = machineCpuMs();
  const pct: Record<string, number> = {};
  const cpuMsUsed: Record<string, number> = {};
  let named = 0;
  for (const [k, pids] of Object.entries(groups)) {
    const used = sum(pids) - before[k];
    cpuMsUsed[k] = used;
    named += used;
    pct[k] = Math.round((used / wall) * 100);
  }
  pct.restOfMachine = Math.max(0, Math.round(((m1.busy - m0.busy - named) / wall) * 100));
  pct.machineIdle = Math.max(0, Math.round((((m1.total - m0.total) - (m1.busy - m0.busy)) / wall) * 100));
  return { result, cpuPercentOfOneCore: pct, cpuMsUsed };
}

// ------------------------------------------------------------------------------------ profile

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Where a frame's code lives: a package, a node: module, a repo file, or V8's own buckets. */
function areaOf(f: ProfileNode['callFrame']): string {
  if (!f.url) return f.functionName.startsWith('(') ? f.functionName : '(native / V8 builtins)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f.url);
  if (pkg) return pkg[1];
  if (f.url.startsWith('node:')) return f.url.replace(/^node:(internal\/)?/, 'node:').replace(/^(node:[^/]+(?:\/[^/]+)?).*$/, '$1');
  const rel = f.url.replace(/^file:\/\//, '').replace(`${REPO_ROOT}/`, '');
  return rel;
}

function frameName(f: ProfileNode['callFrame']): string {
  const where = f.url ? ` ${f.url.replace(/^file:\/\//, '').replace(`${REPO_ROOT}/`, '').replace(/^.*node_modules\//, '')}:${f.lineNumber + 1}` : '';
  return `${f.functionName || '(anonymous)'}${where}`;
}

/**
 * Self time by function and by area (package / module / repo file), and inclusive time by area,
 * over the samples taken between `fromUs` and `toUs` (CLOCK_MONOTONIC µs, as process.hrtime).
 */
export function summariseProfile(file: string, fromUs: number, toUs: number, top = 15) {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const selfArea = new Map<string, number>();
  const inclusiveArea = new Map<string, number>();
  // Where the time goes, in a few named shares (self: the sampled frame; inclusive: anywhere on its stack).
  const SOCKET_WRITES = new Set(['writev', 'writeLatin1String', 'writeUtf8String', 'writeBuffer', 'writeAsciiString', 'writeUcs2String']);
  const EVENT_PATH = /^(lab\/events\.ts|lab\/lab\.ts|server\/event-stream\.ts|server\/export\.ts|server\/app\.ts|socket\.io|socket\.io-parser|engine\.io|ws)$/;
  const shares = { socketWriteSyscallsSelf: 0, garbageCollectorSelf: 0, nodeHttpNetStreamsEventsSelf: 0, httpProxy3Self: 0, embeddedProxyTsSelf: 0, perRequestEventsAndTheirSubscribersInclusive: 0 };
  let t = p.startTime;
  let sampled = 0;
  let idle = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i];
    if (t < fromUs || t > toUs) continue;
    const next = p.timeDeltas[i + 1] ?? 1000;
    const us = Math.min(next, 5000); // the time until the next sample is this sample's weight
    sampled += us;
    const node = byId.get(p.samples[i])!;
    if (node.callFrame.functionName === '(idle)') {
      idle += us;
      continue;
    }
    const leafArea = areaOf(node.callFrame);
    if (!node.callFrame.url && SOCKET_WRITES.has(node.callFrame.functionName)) shares.socketWriteSyscallsSelf += us;
    else if (node.callFrame.functionName === '(garbage collector)') shares.garbageCollectorSelf += us;
    else if (/^node:(_http|net|streams|events|stream_base|http|timers|process)/.test(leafArea)) shares.nodeHttpNetStreamsEventsSelf += us;
    else if (leafArea === 'http-proxy-3') shares.httpProxy3Self += us;
    else if (leafArea === 'lab/proxy/embedded/embedded-proxy.ts') shares.embeddedProxyTsSelf += us;
    let onEventPath = false;
    for (let id: number | undefined = node.id; id !== undefined && !onEventPath; id = parent.get(id)) onEventPath = EVENT_PATH.test(areaOf(byId.get(id)!.callFrame));
    if (onEventPath) shares.perRequestEventsAndTheirSubscribersInclusive += us;
    self.set(frameName(node.callFrame), (self.get(frameName(node.callFrame)) ?? 0) + us);
    selfArea.set(areaOf(node.callFrame), (selfArea.get(areaOf(node.callFrame)) ?? 0) + us);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const a = areaOf(byId.get(id)!.callFrame);
      if (a === '(root)' || seen.has(a)) continue;
      seen.add(a);
      inclusiveArea.set(a, (inclusiveArea.get(a) ?? 0) + us);
    }
  }
  const busy = sampled - idle;
  const rows = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, us]) => ({ name, ms: Math.round(us / 1000), percentOfBusy: round1((us / busy) * 100) }));
  return {
    windowMs: Math.round((toUs - fromUs) / 1000),
    sampledMs: Math.round(sampled / 1000),
    busyPercent: Math.round((busy / sampled) * 100),
    percentOfBusy: Object.fromEntries(Object.entries(shares).map(([k, us]) => [k, round1((us / busy) * 100)])),
    topSelfTime: rows(self, top),
    selfTimeByArea: rows(selfArea, 12),
    inclusiveTimeByArea: rows(inclusiveArea, 16),
    // The lab's own code and the event path, whatever their rank: the cost of per-request events.
    inclusiveTimeOfLabCodeAndEventPath: rows(
      new Map([...inclusiveArea].filter(([a]) => /^(lab|server)\//.test(a) || /^(socket\.io|engine\.io|socket\.io-parser|ws)$/.test(a))),
      20,
    ),
  };
}
