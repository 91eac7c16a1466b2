/**
 * `docker-compose up --scale web_dynamic=N` with the repository's own docker-compose.yml, next to a
 * lab in Docker mode on Compose's network (as the `lab` service runs it): the lab starts no replica of
 * its own, adopts Compose's containers (hostnames = their
 * container ids, as in the write-ups), its proxy sends requests to them, scaling up shows more,
 * scaling down removes them from the pool, and stopping the lab leaves Compose's containers alone
 * (`docker-compose down` removes them). Real Docker, real Compose, real replicas.
 *
 * Compose runs with `--no-build`: the image it names (balancer-lab/web_dynamic:compose) is the one
 * the lab builds, tagged for it (no registry here). Skipped, saying why, without Docker or Compose,
 * unless LAB_REQUIRE_DOCKER=1.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabStatus } from '../../lab/status.ts';
import { connectDocker, type Docker } from '../../lab/runtime/docker/docker-client.ts';
import { DockerRuntime } from '../../lab/runtime/docker/docker-runtime.ts';
import { startLab, type RunningLab } from '../../server/compose.ts';
import type { EventBus } from '../../lab/events.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CACHE_DIR = path.join(ROOT, 'node_modules', '.cache', 'balancer-lab');
const PROJECT = `bltest${process.pid}`;

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: ROOT, env: { ...process.env, COMPOSE_PROJECT_NAME: PROJECT }, timeout: 180_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code) || 1 : 0, out: `${stdout}${stderr}` });
    });
  });
}

async function composeCommand(): Promise<string[] | null> {
  if ((await run('docker', ['compose', 'version'])).code === 0) return ['docker', 'compose'];
  if ((await run('docker-compose', ['version'])).code === 0) return ['docker-compose'];
  return null;
}

async function setup(): Promise<{ docker: Docker; compose: string[] } | string> {
  let docker: Docker;
  try {
    docker = await connectDocker();
  } catch (err) {
    return (err as Error).message;
  }
  const compose = await composeCommand();
  if (!compose) return 'neither `docker compose` nor `docker-compose` is installed';
  try {
    const image = await new DockerRuntime({ docker, sessionId: `build${process.pid}`, stateDir: os.tmpdir(), cacheDir: CACHE_DIR }).prepareImage('web_dynamic');
    await docker.getImage(image).tag({ repo: 'balancer-lab/web_dynamic', tag: 'compose' });
  } catch (err) {
    return `the web_dynamic image could not be built: ${(err as Error).message}`;
  }
  return { docker, compose };
}

const env = await setup();
if (typeof env === 'string') {
  if (process.env.LAB_REQUIRE_DOCKER === '1') throw new Error(`LAB_REQUIRE_DOCKER=1 but ${env}`);
  console.warn(`compose --scale test skipped: ${env}`);
}

describe.skipIf(typeof env === 'string')('docker-compose up --scale web_dynamic=N, adopted by a lab in Docker mode', () => {
  const { docker, compose } = env as { docker: Docker; compose: string[] };
  const up = (n: number) => run(compose[0], [...compose.slice(1), 'up', '-d', '--no-build', '--scale', `web_dynamic=${n}`, 'web_dynamic']);
  let lab: RunningLab;
  let stateDir: string;

  async function composeIds(): Promise<string[]> {
    const list = await docker.listContainers({ filters: { label: [`com.docker.compose.project=${PROJECT}`, 'com.docker.compose.service=web_dynamic'], status: ['running'] } });
    return list.map((c) => c.Id.slice(0, 12)).sort();
  }

  function webDynamic(status: LabStatus) {
    return status.services.find((s) => s.name === 'web_dynamic')?.instances ?? [];
  }

  /** Resolves with the lab's status once `pred` holds for it (checked at each lab:changed). */
  function statusWhen(bus: EventBus, pred: (s: LabStatus) => boolean): Promise<LabStatus> {
    return new Promise((resolve) => {
      const check = () => {
        const s = lab.lab.status();
        if (!pred(s)) return false;
        off();
        resolve(s);
        return true;
      };
      const off = bus.on('lab:changed', () => void check());
      check();
    });
  }

  /** Who answered `n` requests through the lab's proxy. */
  async function servedBy(n: number): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const res = await fetch(`http://127.0.0.1:${lab.proxyPort}/api/`);
      expect(res.status).toBe(200);
      out.push(((await res.json()) as { hostname: string }).hostname);
    }
    return out;
  }

  beforeAll(async () => {
    const r = await up(2);
    expect(r.code, r.out).toBe(0);
    stateDir = mkdtempSync(path.join(os.tmpdir(), 'lab-compose-'));
    lab = await startLab({
      host: '127.0.0.1',
      port: 0,
      proxyPort: 0,
      stateDir,
      runtime: 'docker',
      dockerNetwork: `${PROJECT}_lab`,
      composeProject: PROJECT,
      // No topology: next to Compose the lab starts none of its own (composeTopology()).
    });
  }, 300_000);

  afterAll(async () => {
    await lab?.stop();
    // Stopping the lab removed what it created, and only that: Compose's containers still run.
    const left = await composeIds();
    await run(compose[0], [...compose.slice(1), 'down', '--remove-orphans']);
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
    expect(left.length).toBeGreaterThan(0);
    const after = await docker.listContainers({ all: true, filters: { label: [`com.docker.compose.project=${PROJECT}`] } });
    expect(after).toEqual([]);
  }, 300_000);

  it("starts no replica of its own and adopts Compose's two containers (hostname = container id), balancing over both", async () => {
    const ids = await composeIds();
    expect(ids).toHaveLength(2);
    const status = await statusWhen(lab.bus, (s) => webDynamic(s).filter((r) => r.state === 'running').length === 2);
    const names = webDynamic(status).map((r) => r.hostname);
    expect([...names].sort()).toEqual(ids);
    expect(status.services.find((s) => s.name === 'web_dynamic')?.replicas).toBe(2);
    const hosts = new Set(await servedBy(9));
    expect([...hosts].sort()).toEqual([...names].sort());
  });

  it('scaling up with Compose shows the new replicas in the lab and the proxy sends them requests', async () => {
    const r = await up(4);
    expect(r.code, r.out).toBe(0);
    const ids = await composeIds();
    expect(ids).toHaveLength(4);
    const status = await statusWhen(lab.bus, (s) => ids.every((id) => webDynamic(s).some((x) => x.hostname === id && x.state === 'running')));
    expect(webDynamic(status)).toHaveLength(4);
    const hosts = new Set(await servedBy(15));
    for (const id of ids) expect(hosts).toContain(id);
  });

  it("scaling down with Compose takes the stopped containers out of the lab's pool", async () => {
    const before = await composeIds();
    const stopped: Array<{ hostname: string; reason?: string }> = [];
    const off = lab.bus.on('replica:stopped', (e) => stopped.push(e));
    const crashed: string[] = [];
    const offCrash = lab.bus.on('replica:crashed', (e) => crashed.push(e.hostname));
    const r = await up(1);
    expect(r.code, r.out).toBe(0);
    const ids = await composeIds();
    expect(ids).toHaveLength(1);
    const gone = before.filter((id) => !ids.includes(id));
    const status = await statusWhen(lab.bus, (s) => gone.every((id) => !webDynamic(s).some((x) => x.hostname === id)));
    expect(webDynamic(status).map((x) => x.hostname)).toContain(ids[0]);
    const hosts = new Set(await servedBy(6));
    for (const id of gone) expect(hosts).not.toContain(id);
    off();
    offCrash();
    // A departure Compose asked for is reported as such, not as a crash.
    expect(stopped.map((e) => e.hostname).sort()).toEqual([...gone].sort());
    for (const e of stopped) expect(e.reason).toMatch(/^stopped outside the lab/);
    expect(crashed).toEqual([]);
  });
});
