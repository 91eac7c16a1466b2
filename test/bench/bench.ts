/**
 * `npm run bench`: the lab's speed and memory figures, printed as JSON. Targets live here, not
 * in timed tests. Starts a real lab (`server/main.ts` as a child process, the way `npm start`
 * does), drives it over its REST API, loads it with autocannon, and stops it.
 *
 * Flags: --seconds <n> per load run (default 5), --connections <n> (default 50).
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

try {
  await new Promise<void>((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      if (line.startsWith('Lab ready:')) resolve();
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

  const t0 = performance.now();
  const scaled = await call('POST', '/api/services/web_dynamic/scale', { replicas: 10 });
  const scale3to10Ms = Math.round(performance.now() - t0);
  await call('POST', '/api/services/web_dynamic/scale', { replicas: 3 });

  const status = await call('GET', '/api/status');
  const one = status.services.find((s) => s.name === 'web_dynamic')!.instances[0];
  // Alternate direct and proxied runs so machine noise hits both alike.
  const direct1 = await load(`http://127.0.0.1:${one.port}/`);
  const proxied1 = await load(`http://127.0.0.1:${state.proxyPort}/api/`);
  const direct2 = await load(`http://127.0.0.1:${one.port}/`);
  const proxied2 = await load(`http://127.0.0.1:${state.proxyPort}/api/`);
  const best = (a: typeof direct1, b: typeof direct1) => (a.requestsPerSecond >= b.requestsPerSecond ? a : b);
  const direct = best(direct1, direct2);
  const proxied = best(proxied1, proxied2);

  console.log(
    JSON.stringify(
      {
        machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
        load: { tool: 'autocannon', seconds, connections, runsEach: 2 },
        coldStartToReadyMs: coldStartMs,
        scaleWebDynamic3to10Ms: scale3to10Ms,
        replicasAfterScale: scaled.services.find((s) => s.name === 'web_dynamic')!.instances.length,
        directToOneReplica: direct,
        throughEmbeddedProxy: { ...proxied, replicas: 3 },
        proxyToDirectRatio: Math.round((proxied.requestsPerSecond / direct.requestsPerSecond) * 100) / 100,
        replicaResidentMemoryMb: rssMb(one.pid!),
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
