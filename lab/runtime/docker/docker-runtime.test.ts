// DockerRuntime on a real engine, beyond the shared contract (test/contract/runtime.contract.test.ts):
// names, labels and Compose labels, the lab network, readiness failures, a stop during a start,
// image progress, and input checks.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { ImageBuildProgressed } from '../../events.ts';
import type { ReplicaHooks } from '../../seams.ts';
import { connectDocker, LABEL_ROLE, LABEL_SERVICE, LABEL_SESSION, labelFilter, type Docker } from './docker-client.ts';
import { COMPOSE_PROJECT, DockerRuntime, type DockerRuntimeOptions } from './docker-runtime.ts';
import type { ImageTarget } from './images.ts';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const CACHE_DIR = path.join(ROOT, 'node_modules', '.cache', 'balancer-lab');
const BASE = process.env.LAB_DOCKER_BASE || 'balancer-lab/base:bookworm';

const docker = await connectDocker().catch((e: Error) => {
  console.warn(`docker-runtime: skipped: ${e.message}`);
  return null;
});
const hasBase = docker ? await docker.getImage(BASE).inspect().then(() => true, () => false) : false;
if (docker && !hasBase) console.warn(`docker-runtime: skipped: the base image ${BASE} is missing (sandbox-images/base/build-offline-base.sh makes it).`);
if ((!docker || !hasBase) && process.env.LAB_REQUIRE_DOCKER === '1') throw new Error('LAB_REQUIRE_DOCKER=1 but Docker or its base image is missing.');

function hooks() {
  const lines: string[] = [];
  const exits: Parameters<ReplicaHooks['onExit']>[0][] = [];
  return { lines, exits, hooks: { onLog: (_s: string, t: string) => void lines.push(t), onExit: (i: Parameters<ReplicaHooks['onExit']>[0]) => void exits.push(i) } as ReplicaHooks };
}

describe.skipIf(!docker || !hasBase)('DockerRuntime on a real engine', () => {
  const d = docker as Docker;
  const sessions: string[] = [];
  const runtimes: DockerRuntime[] = [];
  const testRepo = `balancer-lab/test-runtime-${randomBytes(4).toString('hex')}`;
  let context: string;
  let stateDir: string;

  /** An image of a backend that misbehaves: `cmd` runs under sh. */
  const badTarget = (name: string, script: string): ImageTarget => {
    fs.writeFileSync(
      path.join(context, `Dockerfile.${name}`),
      ['ARG TEST_BASE', 'FROM ${TEST_BASE}', `CMD ["sh", "-c", ${JSON.stringify(script)}]`, ''].join('\n'),
    );
    return { repository: `${testRepo}-${name}`, context, dockerfile: `Dockerfile.${name}`, baseArg: 'TEST_BASE', defaultBase: BASE };
  };

  const make = (extra: Partial<DockerRuntimeOptions> = {}) => {
    const sessionId = `dr${randomBytes(4).toString('hex')}`;
    sessions.push(sessionId);
    const rt = new DockerRuntime({ docker: d, sessionId, stateDir, cacheDir: CACHE_DIR, base: BASE, ...extra });
    runtimes.push(rt);
    return { rt, sessionId };
  };

  beforeAll(() => {
    context = fs.mkdtempSync(path.join(os.tmpdir(), 'docker-runtime-test-'));
    stateDir = path.join(context, 'state');
  });

  afterEach(async () => {
    await Promise.all(runtimes.splice(0).map((rt) => rt.stopAll()));
  });

  afterAll(async () => {
    const left: string[] = [];
    for (const id of sessions) {
      left.push(...(await d.listContainers({ all: true, filters: labelFilter(id) })).map((c) => c.Names[0]));
      left.push(...(await d.listNetworks({ filters: labelFilter(id) })).map((n) => n.Name));
    }
    for (const image of await d.listImages({ filters: { reference: [`${testRepo}-*`] } })) {
      await d.getImage(image.Id).remove({ force: true }).catch(() => {});
    }
    fs.rmSync(context, { recursive: true, force: true });
    expect(left).toEqual([]);
  });

  test('names, labels (lab and Compose), hostname and the lab network', async () => {
    const { rt, sessionId } = make();
    const h = await rt.start({ service: 'web_static', hostname: 'web_static-1-beef', env: { KEEPALIVE_TIMEOUT_MS: '7000' } }, hooks().hooks);
    const info = await d.getContainer(h.containerId!).inspect();
    expect(info.Name).toBe(`/balancer-lab-${sessionId}-web_static-1-beef`);
    expect(info.Config.Hostname).toBe('web_static-1-beef');
    expect(info.Config.Labels).toMatchObject({
      [LABEL_SESSION]: sessionId,
      [LABEL_ROLE]: 'replica',
      [LABEL_SERVICE]: 'web_static',
      'com.docker.compose.project': COMPOSE_PROJECT,
      'com.docker.compose.service': 'web_static',
    });
    expect(info.Config.Env).toEqual(expect.arrayContaining(['PORT=8080', 'LAB_HOSTNAME=web_static-1-beef', 'KEEPALIVE_TIMEOUT_MS=7000', 'LAB_FAULT_FILE=/run/lab/fault.json']));
    expect(info.HostConfig.Init).toBe(true);
    const nets = info.NetworkSettings.Networks;
    expect(Object.keys(nets)).toEqual([`balancer-lab-${sessionId}`]);
    expect(nets[`balancer-lab-${sessionId}`].IPAddress).toBe(h.host);
    const network = await d.getNetwork(`balancer-lab-${sessionId}`).inspect();
    expect(network.Labels).toMatchObject({ [LABEL_SESSION]: sessionId, [LABEL_ROLE]: 'network' });
    expect(network.IPAM?.Config?.[0].Subnet).toMatch(/\.0\/24$/);

    // docker-compose (1.x, with the repository's compose file) lists the replica under the lab's project.
    const ps = spawnSync('docker-compose', ['-p', COMPOSE_PROJECT, '-f', path.join(ROOT, 'docker-compose.yml'), 'ps', '-q', 'web_static'], { encoding: 'utf8' });
    if (ps.error) console.warn(`docker-compose not found: its listing is not checked (${ps.error.message})`);
    else expect(ps.stdout.split('\n').map((id) => id.slice(0, 12))).toContain(h.containerId);

    await rt.stopAll();
    await expect(d.getNetwork(`balancer-lab-${sessionId}`).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });

  test('spring_app runs in its image: Spring-style log and /app/helloParams', async () => {
    const { rt } = make();
    const rec = hooks();
    const h = await rt.start({ service: 'spring_app', hostname: 'spring_app-1-5b00', env: { KEEPALIVE_TIMEOUT_MS: '20000' } }, rec.hooks);
    const res = await fetch(`http://${h.host}:${h.port}/app/helloParams?name=lab`);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-served-by')).toBe('spring_app-1-5b00');
    expect(await res.json()).toMatchObject({ message: 'Hello lab', hostname: 'spring_app-1-5b00' });
    expect(rec.lines.some((l) => /Started DemoApplication in/.test(l))).toBe(true);
  });

  test('joining an existing network (Compose\'s): Docker picks addresses, stopAll leaves the network', async () => {
    const name = `balancer-lab-test-join-${randomBytes(4).toString('hex')}`;
    const net = await d.createNetwork({ Name: name, Driver: 'bridge', Labels: { 'balancer-lab.test': 'join' } });
    try {
      const { rt, sessionId } = make({ network: name });
      const [a, b] = await Promise.all([
        rt.start({ service: 'web_static', hostname: 'web_static-1-j01n' }, hooks().hooks),
        rt.start({ service: 'web_static', hostname: 'web_static-2-j01n' }, hooks().hooks),
      ]);
      expect(a.host).not.toBe(b.host);
      const info = await net.inspect();
      const subnetStart = (info.IPAM?.Config?.[0].Subnet ?? '').split('.').slice(0, 2).join('.');
      expect(a.host.startsWith(`${subnetStart}.`)).toBe(true);
      for (const h of [a, b]) expect((await fetch(`http://${h.host}:${h.port}/health`)).headers.get('x-served-by')).toBe(h.hostname);
      await rt.crash('web_static-1-j01n');
      await expect(rt.start({ service: 'web_static', hostname: 'web_static-1-j01n', port: 8080 }, hooks().hooks)).rejects.toThrow(
        `Replica web_static-1-j01n (web_static) cannot come back at its old address: the network ${name} was created without a subnet, so Docker picks every address (give it one, e.g. ipam.config.subnet in docker-compose.yml).`,
      );
      await rt.stopAll();
      expect(await d.listContainers({ all: true, filters: labelFilter(sessionId) })).toEqual([]);
      expect((await net.inspect()).Name).toBe(name); // not the runtime's to remove
    } finally {
      await net.remove();
    }
  });

  test('image build progress goes to onImageProgress (image:build events)', async () => {
    const events: ImageBuildProgressed[] = [];
    const target = badTarget('progress', `echo listening nowhere; sleep 1`);
    const { rt } = make({ images: { web_static: target }, onImageProgress: (e) => events.push(e) });
    const tag = await rt.prepareImage('web_static');
    expect(tag.startsWith(`${testRepo}-progress:`)).toBe(true);
    expect(events.length).toBeGreaterThan(2);
    expect(events.at(-1)).toMatchObject({ image: tag, done: true });
  });

  test('a backend that exits before it is ready: the start rejects with its exit code and last log lines', async () => {
    const { rt, sessionId } = make({ images: { web_static: badTarget('exits', 'echo booting; echo "config missing" >&2; exit 3') } });
    const rec = hooks();
    const err = (await rt.start({ service: 'web_static', hostname: 'web_static-1-0bad' }, rec.hooks).catch((e: unknown) => e)) as Error;
    // stdout and stderr reach the log separately: either order.
    expect(err.message).toMatch(
      /^Replica web_static-1-0bad \(web_static\) exited with code 3 before it was ready\. Last log lines: (booting \| config missing|config missing \| booting)$/,
    );
    expect(rec.exits).toEqual([]); // a failed start is reported by the rejection only
    expect(await d.listContainers({ all: true, filters: labelFilter(sessionId, 'replica') })).toEqual([]);
  });

  test('a backend that never gets ready: rejected within readyTimeoutMs, container removed', async () => {
    const { rt, sessionId } = make({ readyTimeoutMs: 2500, images: { web_static: badTarget('never', 'echo warming up; exec sleep 600') } });
    await rt.prepareImage('web_static');
    const t0 = Date.now();
    const err = (await rt.start({ service: 'web_static', hostname: 'web_static-1-51ow' }, hooks().hooks).catch((e: unknown) => e)) as Error;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2400);
    expect(err.message).toBe(
      'Replica web_static-1-51ow (web_static) was not ready within 2500 ms (no startup line in its log). Last log lines: warming up',
    );
    expect(await d.listContainers({ all: true, filters: labelFilter(sessionId, 'replica') })).toEqual([]);
  });

  test('stop() during a start: the start rejects, nothing is left', async () => {
    const { rt, sessionId } = make({ images: { web_static: badTarget('slowstart', 'echo warming up; exec sleep 600') } });
    await rt.prepareImage('web_static');
    const rec = hooks();
    const starting = rt.start({ service: 'web_static', hostname: 'web_static-1-ca11' }, rec.hooks);
    starting.catch(() => {});
    // Wait until the container runs (its first log line), then stop it.
    for (let i = 0; i < 300 && !rec.lines.includes('warming up'); i += 1) await new Promise((r) => setTimeout(r, 50));
    expect(rec.lines).toContain('warming up');
    await rt.stop('web_static-1-ca11');
    await expect(starting).rejects.toThrow('Replica web_static-1-ca11 (web_static) was stopped before it was ready.');
    expect(await d.listContainers({ all: true, filters: labelFilter(sessionId, 'replica') })).toEqual([]);
  });

  test('inputs are checked with one sentence', async () => {
    const { rt } = make();
    await expect(rt.start({ service: 'nope' as never, hostname: 'x' }, hooks().hooks)).rejects.toThrow(/^Invalid replica spec \(service\): /);
    await expect(rt.start({ service: 'web_static', hostname: 'bad name!' }, hooks().hooks)).rejects.toThrow(/^Invalid replica spec \(hostname\): a hostname is/);
    await expect(rt.start({ service: 'web_static', hostname: 'web_static-1-a', env: { LAB_HOSTNAME: 'x' } }, hooks().hooks)).rejects.toThrow(
      'Replica web_static-1-a (web_static) cannot set LAB_HOSTNAME: the runtime sets it.',
    );
    await expect(rt.start({ service: 'web_static', hostname: 'web_static-1-a', port: 9000 }, hooks().hooks)).rejects.toThrow(
      'Replica web_static-1-a (web_static) cannot listen on port 9000: in Docker mode every replica listens on 8080 at its own address.',
    );
    expect(() => new DockerRuntime({ docker: d, sessionId: 'bad id', stateDir })).toThrow(/session id/);
  });
});
