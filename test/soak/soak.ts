/**
 * `npm run soak -- --minutes N`: the lab under steady use for N minutes, watched for leaks.
 *
 * Starts the real lab (`server/main.ts`, process runtime, embedded proxy) as a child process, then:
 * - drives steady traffic through its proxy (`--rate`, default 200 req/s, GET /api/, keep-alive);
 * - every `--step-seconds` (default 5) does the next of: scale web_dynamic 3 -> 5, a slow fault on a
 *   replica, clearing it, a kill, sticky on, sticky off, scale back to 3;
 * - keeps two socket.io clients connected, as two browsers would be;
 * - every `--sample-seconds` (default 5) records the lab server's RSS and open file descriptors
 *   (/proc/<pid>/status VmRSS, /proc/<pid>/fd) and the replicas' (their pids from `status`).
 *
 * It fails (exit 1) when
 * - the server's RSS grows without bound: the median of the last three samples is more than
 *   max(64 MB, 50 %) above the median of the first three after the first minute's warm-up (or the
 *   first fifth of the run when shorter); or its open fds grow by more than 64;
 * - a replica's RSS or fds do the same (replicas that live through the run);
 * - an event count goes wrong: after the load stops, both socket clients' exact totals
 *   (`counts.total`) must equal the number of requests the load generator got an answer for;
 * - the lab does not stop cleanly or leaves a replica process behind.
 * Prints one JSON summary on stdout and, with LAB_TEST_REPORT_DIR, writes `soak.json` there
 * ({passed, failed, ...}) for test/summarize.mjs.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { io, type Socket } from 'socket.io-client';
import type { EventBatch, LabStatus } from '../../server/protocol.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function positive(name: string, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0 || n > max) throw new InvalidArgumentError(`${name} must be a number above 0 and at most ${max}.`);
    return n;
  };
}

const opts = new Command()
  .name('npm run soak --')
  .description('Run the lab under steady traffic, scaling, kills and faults, and fail on leaks or wrong counts.')
  .option('--minutes <n>', 'how long (0.5 .. 240)', positive('--minutes', 240), 2)
  .option('--rate <n>', 'requests a second through the proxy', positive('--rate', 2000), 200)
  .option('--step-seconds <n>', 'seconds between lab actions', positive('--step-seconds', 600), 5)
  .option('--sample-seconds <n>', 'seconds between memory/fd samples', positive('--sample-seconds', 600), 5)
  .showHelpAfterError()
  .parse()
  .opts<{ minutes: number; rate: number; stepSeconds: number; sampleSeconds: number }>();

interface Sample {
  /** Seconds since the start. */
  t: number;
  serverRssMb: number;
  serverFds: number;
  replicas: Record<string, { rssMb: number; fds: number }>;
}

function rssMb(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round((Number(m[1]) / 1024) * 10) / 10 : null;
  } catch {
    return null;
  }
}

function fds(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.floor(s.length / 2)];
}

/** Grew without bound: last-three median above max(absolute, 50 %) over the first-three median. */
function grew(series: number[], absolute: number): { from: number; to: number; bad: boolean } {
  const from = median(series.slice(0, 3));
  const to = median(series.slice(-3));
  return { from, to, bad: series.length >= 6 && to - from > Math.max(absolute, from * 0.5) };
}

const stateDir = mkdtempSync(path.join(tmpdir(), 'balancer-lab-soak-'));
const token = `soak-${process.pid}`;
const failures: string[] = [];

// ---------------------------------------------------------------- start the lab
const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', '--port', '0', '--proxy-port', '0', '--token', token, '--state-dir', stateDir], {
  cwd: ROOT,
  env: { ...process.env, LAB_RUNTIME: 'process' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
const { labUrl, proxyUrl } = await new Promise<{ labUrl: string; proxyUrl: string }>((resolve, reject) => {
  let proxy = '';
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const p = /^Proxy: (\S+)/.exec(line);
    if (p) proxy = p[1];
    const m = /^Lab ready: (\S+)/.exec(line);
    if (m) resolve({ labUrl: new URL(m[1]).origin.replace('localhost', '127.0.0.1'), proxyUrl: proxy.replace('localhost', '127.0.0.1') });
  });
  void exited.then((code) => reject(new Error(`the lab exited (code ${code}) before it was ready`)));
});

async function api<T>(method: 'GET' | 'POST', route: string, body?: unknown): Promise<T> {
  const res = await fetch(`${labUrl}/api${route}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const data = (await res.json()) as T & { error?: string };
  if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${data.error ?? ''}`);
  return data;
}

// ---------------------------------------------------------------- two watching browsers
const watchers: Array<{ socket: Socket; total: number; batches: number }> = [];
for (let i = 0; i < 2; i++) {
  const w = { socket: io(labUrl, { auth: { token }, transports: ['websocket'] }), total: 0, batches: 0 };
  w.socket.on('history', (b: EventBatch) => (w.total = b.counts.total));
  w.socket.on('batch', (b: EventBatch) => {
    w.total = b.counts.total;
    w.batches++;
  });
  watchers.push(w);
}

// ---------------------------------------------------------------- steady load
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
let answered = 0;
let networkErrors = 0;
let loadOn = true;
const proxy = new URL(proxyUrl);
function one(): Promise<void> {
  return new Promise((resolve) => {
    const req = http.get({ host: proxy.hostname, port: proxy.port, path: '/api/', agent, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => {
        answered++;
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => {
      networkErrors++;
      resolve();
    });
  });
}
const inflight = new Set<Promise<void>>();
const t0 = Date.now();
const loadTimer = setInterval(() => {
  if (!loadOn) return;
  // Per 50 ms tick, the share of the rate that is due (an on-schedule open loop).
  for (let k = 0; k < opts.rate / 20; k++) {
    const p = one().finally(() => inflight.delete(p));
    inflight.add(p);
  }
}, 50);

// ---------------------------------------------------------------- actions on a loop
const actions: Array<[string, () => Promise<unknown>]> = [
  ['scale web_dynamic=5', () => api('POST', '/services/web_dynamic/scale', { replicas: 5 })],
  ['fault slow 200 ms', () => api('POST', '/replicas/web_dynamic-2/fault', { mode: 'slow', ms: 200 })],
  ['fault healthy', () => api('POST', '/replicas/web_dynamic-2/fault', { mode: 'healthy' })],
  ['kill web_dynamic-4', () => api('POST', '/replicas/web_dynamic-4/kill')],
  ['sticky on', () => api('POST', '/settings', { settings: ['sticky=on'] })],
  ['sticky off', () => api('POST', '/settings', { settings: ['sticky=off'] })],
  ['scale web_dynamic=3', () => api('POST', '/services/web_dynamic/scale', { replicas: 3 })],
];
let actionsDone = 0;
let step = 0;
const actionTimer = setInterval(() => {
  const [name, run] = actions[step++ % actions.length];
  run().then(
    () => actionsDone++,
    (err: Error) => failures.push(`action ${name} failed: ${err.message}`),
  );
}, opts.stepSeconds * 1000);

// ---------------------------------------------------------------- samples
const samples: Sample[] = [];
async function sample(): Promise<void> {
  const status = await api<LabStatus>('GET', '/status').catch(() => null);
  const replicas: Sample['replicas'] = {};
  for (const r of status?.services.flatMap((s) => s.instances) ?? []) {
    if (r.pid === null) continue;
    const m = rssMb(r.pid);
    const f = fds(r.pid);
    if (m !== null && f !== null) replicas[r.hostname] = { rssMb: m, fds: f };
  }
  samples.push({ t: Math.round((Date.now() - t0) / 1000), serverRssMb: rssMb(child.pid!) ?? 0, serverFds: fds(child.pid!) ?? 0, replicas });
}
await sample();
const sampleTimer = setInterval(() => void sample(), opts.sampleSeconds * 1000);

await new Promise((r) => setTimeout(r, opts.minutes * 60_000));

// ---------------------------------------------------------------- stop the load, settle, check
loadOn = false;
clearInterval(loadTimer);
clearInterval(actionTimer);
clearInterval(sampleTimer);
await Promise.all(inflight);
await sample();
// The lab's totals are exact: both watchers must reach the number of answered requests.
const settleDeadline = Date.now() + 15_000;
while (Date.now() < settleDeadline && watchers.some((w) => w.total !== answered)) await new Promise((r) => setTimeout(r, 100));
for (const [i, w] of watchers.entries()) {
  if (w.total !== answered) failures.push(`watcher ${i + 1} counts ${w.total} requests; the load generator got ${answered} answers`);
}

const warmup = Math.min(60, (opts.minutes * 60) / 5);
const steady = samples.filter((s) => s.t >= warmup);
const serverRss = grew(steady.map((s) => s.serverRssMb), 64);
const serverFds = grew(steady.map((s) => s.serverFds), 0);
if (serverRss.bad) failures.push(`the lab server's RSS grew from ${serverRss.from} MB to ${serverRss.to} MB`);
if (serverFds.to - serverFds.from > 64) failures.push(`the lab server's open fds grew from ${serverFds.from} to ${serverFds.to}`);
const longLived = Object.keys(steady[0]?.replicas ?? {}).filter((h) => steady.every((s) => s.replicas[h]));
for (const h of longLived) {
  const rss = grew(steady.map((s) => s.replicas[h].rssMb), 32);
  const f = grew(steady.map((s) => s.replicas[h].fds), 0);
  if (rss.bad) failures.push(`replica ${h}'s RSS grew from ${rss.from} MB to ${rss.to} MB`);
  if (f.to - f.from > 64) failures.push(`replica ${h}'s open fds grew from ${f.from} to ${f.to}`);
}

// ---------------------------------------------------------------- stop the lab
const lastPids = Object.keys(samples.at(-1)?.replicas ?? {}).length;
const statusBefore = await api<LabStatus>('GET', '/status').catch(() => null);
const replicaPids = statusBefore?.services.flatMap((s) => s.instances.map((r) => r.pid)).filter((p): p is number => p !== null) ?? [];
for (const w of watchers) w.socket.close();
agent.destroy();
child.kill('SIGINT');
const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000))]);
if (code !== 0) failures.push(`the lab did not stop cleanly on SIGINT (${code})`);
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
};
const left = replicaPids.filter(alive);
if (left.length) failures.push(`replica processes left after stop: ${left.join(', ')}`);
rmSync(stateDir, { recursive: true, force: true });

const summary = {
  minutes: opts.minutes,
  rate: opts.rate,
  answered,
  networkErrors,
  actionsDone,
  watcherTotals: watchers.map((w) => w.total),
  watcherBatches: watchers.map((w) => w.batches),
  serverRssMb: serverRss,
  serverFds,
  replicasSampled: lastPids,
  samples: samples.length,
  passed: failures.length === 0 ? 1 : 0,
  failed: failures.length === 0 ? 0 : 1,
  failures,
};
console.log(JSON.stringify(summary, null, 2));
console.log(`soak: ${failures.length === 0 ? '1 passed, 0 failed' : '0 passed, 1 failed'}`);
const reportDir = process.env.LAB_TEST_REPORT_DIR;
if (reportDir) writeFileSync(path.join(reportDir, 'soak.json'), JSON.stringify(summary));
process.exit(failures.length === 0 ? 0 : 1);
