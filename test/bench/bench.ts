/**
 * `npm run bench`: the lab's speed and memory figures, printed as JSON. Targets live here, not
 * in timed tests. Starts a real lab (`server/main.ts` as a child process, the way `npm start`
 * does), drives it over its REST API, loads it with autocannon, and stops it.
 *
 * Flags: --seconds <n> per load run (default 5), --connections <n> (default 50).
 *
 * `pageFlood`: the lesson page open in Chromium (launched as playwright.config.ts launches it)
 * while 2,000 requests arrive over 10 s from Node: the frame gaps the page saw (p99, max) beside
 * their goal, and whether its counts ended equal to the server's.
 *
 * `classroomFanOut`: 30 socket.io clients on the watch-only token (a class) while 500 req/s go
 * through the proxy for 10 s: the delivery lag of every request event to every client (from the
 * proxy finishing the request to the client receiving its batch; p50/p99/max, ms), whether every
 * client's totals ended equal to the server's, and the lab server's resident memory (before, peak).
 * The load comes from autocannon in its own process (-R 500, 50 keep-alive connections), so only
 * the 30 clients share this process; their own CPU use is in the lag.
 *
 * `resetMs`: `POST /api/reset` (default topology, process mode) five times per engine: kill every
 * replica, start the new ones, wait until they are ready and in the pool.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { buildWebIfNeeded } from '../../server/build-web.ts';
import { REPO_ROOT, readStateFile } from '../../server/state-file.ts';
import type { LabStatus } from '../../lab/status.ts';
import { chromium } from 'playwright-core';
import playwrightConfig from '../../playwright.config.ts';
import { pacedFlood, stopFrames, watchFrames } from '../e2e/page-flood.ts';
import { io as ioClient, type Socket } from 'socket.io-client';
import type { EventBatch } from '../../server/protocol.ts';

/** The page's budget under the flood: p99 gap between two frames (ms). */
const PAGE_FRAME_GAP_P99_GOAL_MS = 50;
/** A reset (process mode) back to web_static x3, web_dynamic x3, ready (ms, median of 5). */
const RESET_GOAL_MS = 500;
/** 30 watching clients at 500 req/s: p99 from a request's end to its event at a client (ms). */
const FANOUT_LAG_P99_GOAL_MS = 400;
/** ...and how much the lab server's resident memory may grow meanwhile (MB). */
const FANOUT_RSS_GROWTH_GOAL_MB = 150;
const FANOUT_CLIENTS = 30;
const FANOUT_RATE = 500;
const FANOUT_SECONDS = 10;

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '5' }, connections: { type: 'string', default: '50' } },
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);

/** Runs autocannon against `url` and returns req/s and latency percentiles (ms). */
async function load(url: string) {
  const r = await autocannon({ url, connections, duration: seconds, pipelining: 1 });
  return {
    requestsPerSecond: Math.round(r.requests.average),
    latencyP50Ms: r.latency.p50,
    latencyP99Ms: r.latency.p99,
    errors: r.errors + r.non2xx,
  };
}

/** `total` GETs at `rate` a second from autocannon in a child process (its own CPU); resolves with what it measured. */
function rateLoadInChild(url: string, rate: number, total: number): Promise<{ sent: number; failed: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const gen = spawn(process.execPath, [path.join(REPO_ROOT, 'node_modules/autocannon/autocannon.js'), '-R', String(rate), '-a', String(total), '-c', '50', '-j', url], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let out = '';
    gen.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    gen.once('error', reject);
    gen.once('exit', (code) => {
      try {
        const r = JSON.parse(out) as { requests: { total: number }; errors: number; non2xx: number; duration: number };
        resolve({ sent: r.requests.total, failed: r.errors + r.non2xx, ms: Math.round(r.duration * 1000) });
      } catch {
        reject(new Error(`autocannon exited with code ${code} and no JSON result`));
      }
    });
  });
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round((Number(m[1]) / 1024) * 10) / 10 : NaN;
}

await buildWebIfNeeded((line) => process.stderr.write(`${line}\n`));
const stateDir = mkdtempSync(path.join(tmpdir(), 'lab-bench-'));
const started = performance.now();
const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'server/main.ts')], {
  cwd: REPO_ROOT,
  env: { ...process.env, LAB_PORT: '0', LAB_PROXY_PORT: '0', LAB_STATE_DIR: stateDir },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

let labUrl = '';
let watchUrl = '';
try {
  await new Promise<void>((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      if (line.startsWith('Watch-only URL:')) watchUrl = line.slice('Watch-only URL:'.length).trim().split(/\s+/)[0];
      if (line.startsWith('Lab ready:')) {
        labUrl = line.slice('Lab ready:'.length).trim();
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`the lab exited with code ${code} before it was ready`)));
  });
  const coldStartMs = Math.round(performance.now() - started);
  const state = readStateFile(stateDir);
  if (!state) throw new Error('the lab wrote no state file');
  const call = async (method: string, p: string, body?: unknown): Promise<LabStatus> => {
    const res = await fetch(`${state.url}${p}`, {
      method,
      headers: { authorization: `Bearer ${state.token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
    return (await res.json()) as LabStatus;
  };

  /** Lesson 01 open in Chromium while 2,000 requests arrive over 10 s. */
  const pageFlood = async () => {
    const FLOOD = 2000;
    const browser = await chromium.launch({ headless: true, ...playwrightConfig.use?.launchOptions });
    try {
      const page = await browser.newPage({ viewport: playwrightConfig.use?.viewport ?? { width: 1280, height: 900 } });
      await page.goto(labUrl);
      await page.getByTestId('lesson-list').getByRole('link', { name: 'Round-robin' }).click();
      await page.locator('[data-testid=replica-list][data-service=web_dynamic] [data-state=running]').nth(2).waitFor();
      const sum = () =>
        page.locator('[data-testid=request-timeline][data-service=web_dynamic] [data-testid=count-bar]').evaluateAll((bars) => bars.reduce((n, b) => n + Number((b as HTMLElement).dataset.count), 0));
      const serverSum = async () => (await call('GET', '/api/status')).services.find((s) => s.name === 'web_dynamic')!.instances.reduce((n, r) => n + r.requests, 0);
      await watchFrames(page);
      const flood = await pacedFlood(`http://127.0.0.1:${state.proxyPort}/api/`, FLOOD, 10);
      let countsExact = false;
      const deadline = Date.now() + 30_000;
      while (!countsExact && Date.now() < deadline) {
        countsExact = (await sum()) === (await serverSum());
        if (!countsExact) await new Promise((r) => setTimeout(r, 200));
      }
      const gaps = await stopFrames(page);
      return {
        requests: flood.sent,
        failed: flood.failed,
        seconds: Math.round(flood.ms / 100) / 10,
        countsExact,
        frames: gaps.frames,
        pageFrameGapP99Ms: gaps.p99Ms,
        pageFrameGapMaxMs: gaps.maxMs,
        goal: { pageFrameGapP99Ms: PAGE_FRAME_GAP_P99_GOAL_MS },
        withinGoal: gaps.p99Ms <= PAGE_FRAME_GAP_P99_GOAL_MS,
      };
    } finally {
      await browser.close();
    }
  };
  const flood = await pageFlood();

  const percentile = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * p) - 1)] : 0);

  /** 30 socket.io clients (watch-only) while 500 req/s go through the proxy for 10 s. */
  const classroomFanOut = async () => {
    const token = new URL(watchUrl).searchParams.get('token');
    if (!token) throw new Error('the lab printed no Watch-only URL');
    await call('POST', '/api/reset', { lesson: null });
    const lags: number[] = [];
    const totals = new Array<number>(FANOUT_CLIENTS).fill(0);
    const sockets: Socket[] = [];
    try {
      for (let i = 0; i < FANOUT_CLIENTS; i++) {
        const socket = ioClient(state.url, { auth: { token }, transports: ['websocket'], reconnection: false, forceNew: true });
        sockets.push(socket);
        socket.on('batch', (batch: EventBatch) => {
          const now = Date.now();
          for (const r of batch.requests) lags.push(Math.round(now - (r.at + r.ms)));
          totals[i] = batch.counts.total;
        });
        await new Promise<void>((resolve, reject) => {
          socket.once('connect', () => resolve());
          socket.once('connect_error', reject);
        });
      }
      const rssBeforeMb = rssMb(child.pid!);
      let rssPeakMb = rssBeforeMb;
      const sampler = setInterval(() => (rssPeakMb = Math.max(rssPeakMb, rssMb(child.pid!))), 250);
      const sent = await rateLoadInChild(`http://127.0.0.1:${state.proxyPort}/api/`, FANOUT_RATE, FANOUT_RATE * FANOUT_SECONDS);
      const serverTotal = (await call('GET', '/api/status')).requestsTotal;
      // Every client's last batch carries the exact total: wait for it (bounded), never sleep a fixed time.
      const deadline = Date.now() + 30_000;
      while (totals.some((t) => t < serverTotal) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      clearInterval(sampler);
      const sorted = lags.sort((a, b) => a - b);
      const p99 = percentile(sorted, 0.99);
      const growth = Math.round((rssPeakMb - rssBeforeMb) * 10) / 10;
      return {
        clients: FANOUT_CLIENTS,
        requestsPerSecond: Math.round(sent.sent / (sent.ms / 1000)),
        requests: sent.sent,
        failed: sent.failed,
        // A batch carries at most BATCH_MAX_REQUESTS (200) requests per 150 ms window: in a burst the
        // older ones are counted, not sent, so deliveries can be fewer than requests x clients.
        deliveries: sorted.length,
        deliveriesIfNoneBounded: sent.sent * FANOUT_CLIENTS,
        everyClientCountsExact: totals.every((t) => t === serverTotal),
        deliveryLagP50Ms: percentile(sorted, 0.5),
        deliveryLagP99Ms: p99,
        deliveryLagMaxMs: sorted.at(-1) ?? 0,
        serverRssBeforeMb: rssBeforeMb,
        serverRssPeakMb: rssPeakMb,
        goal: { deliveryLagP99Ms: FANOUT_LAG_P99_GOAL_MS, serverRssGrowthMb: FANOUT_RSS_GROWTH_GOAL_MB },
        withinGoal: p99 <= FANOUT_LAG_P99_GOAL_MS && growth <= FANOUT_RSS_GROWTH_GOAL_MB,
      };
    } finally {
      for (const s of sockets) s.disconnect();
    }
  };
  const fanOut = await classroomFanOut();

  const t0 = performance.now();
  const scaled = await call('POST', '/api/services/web_dynamic/scale', { replicas: 10 });
  const scale3to10Ms = Math.round(performance.now() - t0);
  await call('POST', '/api/services/web_dynamic/scale', { replicas: 3 });

  const status = await call('GET', '/api/status');
  const one = status.services.find((s) => s.name === 'web_dynamic')!.instances[0];
  const proxyUrl = `http://127.0.0.1:${state.proxyPort}/api/`;
  const haproxyAvailable = (await call('GET', '/api/proxies') as unknown as Array<{ name: string; available: boolean }>).find((p) => p.name === 'haproxy')?.available ?? false;

  /** Switches the engine and returns how long it took (ms). */
  const switchTo = async (driver: string): Promise<number> => {
    const t = performance.now();
    await call('POST', '/api/proxy', { driver });
    return Math.round(performance.now() - t);
  };

  // Alternate direct, embedded and HAProxy runs so machine noise hits them alike.
  const runs: Record<'direct' | 'embedded' | 'haproxy', Awaited<ReturnType<typeof load>>[]> = { direct: [], embedded: [], haproxy: [] };
  const switchMs: number[] = [];
  for (let round = 0; round < 2; round++) {
    runs.direct.push(await load(`http://127.0.0.1:${one.port}/`));
    runs.embedded.push(await load(proxyUrl));
    if (haproxyAvailable) {
      switchMs.push(await switchTo('haproxy'));
      runs.haproxy.push(await load(proxyUrl));
      switchMs.push(await switchTo('embedded'));
    }
  }
  const best = (xs: Awaited<ReturnType<typeof load>>[]) => xs.reduce((a, b) => (a.requestsPerSecond >= b.requestsPerSecond ? a : b));
  const direct = best(runs.direct);
  const proxied = best(runs.embedded);
  const haproxy = haproxyAvailable ? best(runs.haproxy) : null;
  const replicaRss = rssMb(one.pid!);

  /**
   * The failure window a learner sees in lesson 03: spring_app x2, static discovery, a health
   * check at `intervalMs`, one replica crashed under a steady 50 req/s load: ms from the first
   * to the last failed request.
   */
  const failureWindow = async (driver: string, intervalMs: number): Promise<number | null> => {
    await call('POST', '/api/proxy', { driver });
    await call('POST', '/api/reset', { lesson: '03-health-checks' });
    await call('POST', '/api/settings', { settings: ['healthcheck=on', `healthcheck.interval=${intervalMs}`] });
    const spring = (await call('GET', '/api/status')).services.find((s) => s.name === 'spring_app')!.instances;
    const port = state.proxyPort;
    const { LoadRun, LoadRequest } = await import('../../lab/load.ts');
    const { EventBus } = await import('../../lab/events.ts');
    const run = new LoadRun(LoadRequest.parse({ rate: 50, seconds: Math.ceil((intervalMs * 4) / 1000) + 2, path: '/app/helloParams?name=bench' }), `http://127.0.0.1:${port}`, new EventBus());
    // Let the load settle for half a second of requests before the crash.
    await new Promise((r) => setTimeout(r, 500));
    await call('POST', `/api/replicas/${spring[0].hostname}/fault`, { mode: 'crash' });
    const done = await run.done;
    return done.failureWindowMs;
  };
  const windows: Record<string, number | null> = {};
  for (const driver of haproxyAvailable ? ['embedded', 'haproxy'] : ['embedded']) {
    for (const interval of [1000, 3000]) windows[`${driver}Interval${interval}ms`] = await failureWindow(driver, interval);
  }

  /** Five resets to the default topology on `driver`, each timed from the request to the answer (all ready). */
  const resetTimes = async (driver: string) => {
    await call('POST', '/api/proxy', { driver });
    await call('POST', '/api/reset', { lesson: null });
    const ms: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const s = await call('POST', '/api/reset', { lesson: null });
      ms.push(Math.round(performance.now() - t));
      if (s.services.flatMap((x) => x.instances).filter((r) => r.state === 'running').length !== 6) throw new Error('reset did not bring back 6 running replicas');
    }
    const sorted = [...ms].sort((a, b) => a - b);
    return { medianMs: sorted[2], maxMs: sorted[4], all: ms, goal: { medianMs: RESET_GOAL_MS }, withinGoal: sorted[2] <= RESET_GOAL_MS };
  };
  const resets: Record<string, Awaited<ReturnType<typeof resetTimes>>> = {};
  for (const driver of haproxyAvailable ? ['embedded', 'haproxy'] : ['embedded']) resets[driver] = await resetTimes(driver);

  console.log(
    JSON.stringify(
      {
        // The load average at the end: these figures come from a shared machine, read them beside it.
        machine: { cpus: (await import('node:os')).cpus().length, node: process.version, loadAverage1m: Math.round((await import('node:os')).loadavg()[0] * 10) / 10 },
        load: { tool: 'autocannon', seconds, connections, runsEach: 2 },
        coldStartToReadyMs: coldStartMs,
        scaleWebDynamic3to10Ms: scale3to10Ms,
        replicasAfterScale: scaled.services.find((s) => s.name === 'web_dynamic')!.instances.length,
        directToOneReplica: direct,
        throughEmbeddedProxy: { ...proxied, replicas: 3 },
        throughHaproxy: haproxy ? { ...haproxy, replicas: 3 } : 'haproxy not installed',
        proxyToDirectRatio: Math.round((proxied.requestsPerSecond / direct.requestsPerSecond) * 100) / 100,
        embeddedToHaproxyRatio: haproxy ? Math.round((proxied.requestsPerSecond / haproxy.requestsPerSecond) * 100) / 100 : null,
        engineSwitchMs: switchMs.length ? { max: Math.max(...switchMs), all: switchMs } : null,
        failureWindowAfterCrashMs: windows,
        replicaResidentMemoryMb: replicaRss,
        pageFlood: flood,
        classroomFanOut: fanOut,
        resetMs: { runtime: 'process', replicas: 'web_static x3 + web_dynamic x3', ...resets },
      },
      null,
      2,
    ),
  );
} finally {
  child.kill('SIGTERM');
  await exited;
  rmSync(stateDir, { recursive: true, force: true });
}
