/**
 * Traefik in a Docker container (traefik-container.ts) and Docker mode's Traefik in server/proxies.ts.
 *
 * What runs for real here: where the image comes from (env), the one sentence for an image that is
 * not on this machine and cannot be pulled (through ensureTraefikImage(), the host's version(),
 * TraefikDriver.start(), the engine list and the factory), an image without traefik, a build FROM
 * the offline Debian base refused with its own sentence, and the sweeps of Traefik containers.
 *
 * What does not run here: Traefik itself. This machine has no registry and no Traefik image or
 * binary (Debian does not package Traefik), so the last suite, a TraefikDriver serving requests
 * through its container, runs only where `traefik:v3.1` (or LAB_TRAEFIK_IMAGE) is on the engine,
 * and prints why it skipped otherwise. Nothing imitates Traefik.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventBus } from '../../events.ts';
import { ProbeClient } from '../../probe-client.ts';
import { TraefikDriver } from '../../proxy/traefik/traefik-driver.ts';
import { TRAEFIK_MISSING } from '../../proxy/traefik/traefik-host.ts';
import type { ProxyConfig } from '../../seams.ts';
import { proxyAvailability, proxyFactory, sweepProxies } from '../../../server/proxies.ts';
import { connectDocker, LABEL_OWNER, LABEL_ROLE, LABEL_SESSION, labelFilter, type Docker } from './docker-client.ts';
import { OFFLINE_BASE } from './images.ts';
import { LABEL_ENGINE, LABEL_WORKDIR } from './proxy-container.ts';
import {
  DEFAULT_TRAEFIK_BASE,
  ensureTraefikImage,
  TraefikContainerHost,
  traefikImageAvailability,
  traefikImageMissing,
  traefikImageSource,
  traefikImageTarget,
} from './traefik-container.ts';
import type { ImageBuildProgressed } from '../../events.ts';

const BASE = process.env.LAB_DOCKER_BASE || OFFLINE_BASE;
/** A base image that exists on no machine: its pull fails with or without a registry. */
const NOWHERE = `balancer-lab/no-such-traefik-${randomBytes(3).toString('hex')}:v0`;
const SESSION = `tc${process.pid}-${randomBytes(3).toString('hex')}`;
const CACHE = path.join(os.tmpdir(), 'balancer-lab-image-cache');

const docker = await connectDocker().catch((e: Error) => {
  console.warn(`traefik-container: engine tests skipped: ${e.message}`);
  return null;
});
const present = (name: string) => (docker ? docker.getImage(name).inspect().then(() => true, () => false) : Promise.resolve(false));
const hasBase = await present(BASE);
if ((!docker || !hasBase) && process.env.LAB_REQUIRE_DOCKER === '1') throw new Error('LAB_REQUIRE_DOCKER=1 but Docker or its base image is missing.');
const hasOfficial = await present(DEFAULT_TRAEFIK_BASE);
/** The Traefik image a real run would use, if this machine has one. */
const realImage = process.env.LAB_TRAEFIK_IMAGE?.trim() || (hasOfficial ? DEFAULT_TRAEFIK_BASE : null);
if (docker && !realImage) {
  console.warn(`traefik-container: Traefik serving through its container skipped: ${traefikImageMissing(DEFAULT_TRAEFIK_BASE)}`);
}

function config(ports: number[]): ProxyConfig {
  return {
    entrypoint: { name: 'web', host: '127.0.0.1', port: 0 },
    routers: [{ name: 'r', pathPrefix: '/', stripPrefix: false, service: 's', priority: 1 }],
    services: [{ name: 's', loadBalancer: { algorithm: 'round-robin', servers: ports.map((p, i) => ({ name: `b${i + 1}`, url: `http://127.0.0.1:${p}`, weight: 1 })) } }],
  };
}

/** Runs `fn` with process.env's LAB_TRAEFIK_* set as given (unset when absent), restored afterwards. */
async function withTraefikEnv<T>(vars: { LAB_TRAEFIK_IMAGE?: string; LAB_TRAEFIK_BASE?: string }, fn: () => Promise<T>): Promise<T> {
  const saved = { LAB_TRAEFIK_IMAGE: process.env.LAB_TRAEFIK_IMAGE, LAB_TRAEFIK_BASE: process.env.LAB_TRAEFIK_BASE };
  const set = (k: keyof typeof saved, v: string | undefined) => (v === undefined ? delete process.env[k] : (process.env[k] = v));
  set('LAB_TRAEFIK_IMAGE', vars.LAB_TRAEFIK_IMAGE);
  set('LAB_TRAEFIK_BASE', vars.LAB_TRAEFIK_BASE);
  try {
    return await fn();
  } finally {
    set('LAB_TRAEFIK_IMAGE', saved.LAB_TRAEFIK_IMAGE);
    set('LAB_TRAEFIK_BASE', saved.LAB_TRAEFIK_BASE);
  }
}

describe('where the Traefik image comes from', () => {
  it('LAB_TRAEFIK_IMAGE is run as it is; else built FROM LAB_TRAEFIK_BASE or traefik:v3.1; LAB_DOCKER_BASE is not used', () => {
    expect(traefikImageSource({})).toEqual({ base: 'traefik:v3.1' });
    expect(traefikImageSource({ LAB_DOCKER_BASE: OFFLINE_BASE })).toEqual({ base: 'traefik:v3.1' });
    expect(traefikImageSource({ LAB_TRAEFIK_BASE: ' my/traefik:3.1 ' })).toEqual({ base: 'my/traefik:3.1' });
    expect(traefikImageSource({ LAB_TRAEFIK_BASE: 'my/traefik:3.1', LAB_TRAEFIK_IMAGE: 'local/traefik:3' })).toEqual({ image: 'local/traefik:3' });
    expect(traefikImageSource({ LAB_TRAEFIK_IMAGE: '  ' })).toEqual({ base: 'traefik:v3.1' });
  });

  it('the Dockerfile is FROM the build arg the builder sets, with the same default', () => {
    const t = traefikImageTarget();
    expect(t).toMatchObject({ repository: 'balancer-lab/traefik', dockerfile: 'Dockerfile', baseArg: 'TRAEFIK_BASE', defaultBase: DEFAULT_TRAEFIK_BASE });
    const text = fs.readFileSync(path.join(t.context, t.dockerfile), 'utf8');
    expect(text).toMatch(new RegExp(`^ARG ${t.baseArg}=${t.defaultBase.replace('.', '\\.')}$`, 'm'));
    expect(text).toMatch(new RegExp(`^FROM \\$\\{${t.baseArg}\\}$`, 'm'));
    expect(text).toMatch(/^ENTRYPOINT \["traefik"\]$/m);
  });

  it('a missing image is ONE sentence naming it and how to provide it', () => {
    expect(traefikImageMissing('traefik:v3.1')).toBe(
      'The Traefik image traefik:v3.1 is not on this machine and cannot be pulled: run `docker pull traefik:v3.1` where a registry is reachable, ' +
        'or `docker load` it (or set LAB_TRAEFIK_IMAGE to a local Traefik v3 image), then start again.',
    );
    expect(traefikImageMissing('traefik:v3.1').match(/[.!?](\s|$)/g)).toHaveLength(1);
  });
});

describe.skipIf(!docker)('Traefik in a container, without Traefik: what this machine can check', () => {
  const d = docker as Docker;
  let root: string;
  const ours = async () => (await d.listContainers({ all: true, filters: labelFilter(SESSION) })).map((c) => `${c.Names.join(',')} (${c.State})`);
  const host = (extra: Partial<ConstructorParameters<typeof TraefikContainerHost>[0]> = {}) => new TraefikContainerHost({ docker: d, sessionId: SESSION, cacheDir: CACHE, ...extra });

  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-tc-'));
  });

  afterAll(async () => {
    fs.rmSync(root, { recursive: true, force: true });
    expect(await ours()).toEqual([]);
  });

  it('a base that is not here and cannot be pulled: ensureTraefikImage, version() and TraefikDriver.start() all give the one sentence; the build progress ends with it', async () => {
    const events: ImageBuildProgressed[] = [];
    const env = { LAB_TRAEFIK_BASE: NOWHERE };
    const sentence = traefikImageMissing(NOWHERE);
    await expect(ensureTraefikImage(d, { cacheDir: CACHE, env, onProgress: (e) => events.push(e) })).rejects.toThrow(sentence);
    expect(events.at(-1)).toMatchObject({ done: true, error: sentence });
    expect(events.filter((e) => e.done)).toHaveLength(1);
    const h = host({ env });
    expect(await h.version()).toEqual({ ok: false, reason: sentence });
    const driver = new TraefikDriver({ bus: new EventBus(), workDir: path.join(root, 'missing'), host: h });
    await expect(driver.start(config([1]))).rejects.toThrow(sentence);
    expect(await ours()).toEqual([]);
  });

  it.skipIf(hasOfficial)('this machine: the official traefik:v3.1 is not here, and the engine list says so without pulling', async () => {
    expect(await traefikImageAvailability(d, {})).toEqual({ ok: false, reason: traefikImageMissing('traefik:v3.1') });
  });

  it('LAB_TRAEFIK_IMAGE that is not here: the sentence names it, nothing is pulled or built', async () => {
    const events: ImageBuildProgressed[] = [];
    const env = { LAB_TRAEFIK_IMAGE: NOWHERE };
    expect(await host({ env, onProgress: (e) => events.push(e) }).version()).toEqual({ ok: false, reason: traefikImageMissing(NOWHERE) });
    expect(await host({ image: NOWHERE }).version()).toEqual({ ok: false, reason: traefikImageMissing(NOWHERE) });
    expect(events).toEqual([]);
  });

  it.skipIf(!hasBase)('an image without traefik: version() says so in a sentence, and its short-lived container is gone', async () => {
    const v = await host({ env: { LAB_TRAEFIK_IMAGE: BASE } }).version();
    expect(v.ok).toBe(false);
    expect(!v.ok && v.reason).toMatch(new RegExp(`^traefik version could not run in a container of ${BASE} \\(.*traefik.*\\); use an image with a traefik v3 binary on PATH\\.$`));
    expect(await ours()).toEqual([]);
    // start() (which the driver reaches only after version() said ok) runs `traefik`, not the image's own command.
    const workDir = fs.mkdtempSync(path.join(root, 'w-'));
    await expect(host({ image: BASE }).start({ workDir, configFile: path.join(workDir, 'traefik.yml'), onLine: () => {} })).rejects.toThrow(
      new RegExp(`^Could not start Traefik in a container of ${BASE}: .*"traefik": executable file not found`),
    );
    expect(await ours()).toEqual([]);
    // The cheap check of the engine list only looks for the image: it is there.
    expect(await traefikImageAvailability(d, { LAB_TRAEFIK_IMAGE: BASE })).toEqual({ ok: true, version: `in a container of ${BASE}` });
  });

  it.skipIf(!hasBase)('building FROM the offline Debian base stops at the Dockerfile check, with a sentence saying what to use instead', async () => {
    const events: ImageBuildProgressed[] = [];
    const err = await ensureTraefikImage(d, { cacheDir: CACHE, env: { LAB_TRAEFIK_BASE: BASE }, onProgress: (e) => events.push(e) }).catch((e: Error) => e);
    const sentence = `The base image ${BASE} has no traefik binary, so the Traefik image cannot be built FROM it: set LAB_TRAEFIK_BASE to a Traefik v3 image (default traefik:v3.1), or LAB_TRAEFIK_IMAGE to a local one.`;
    expect(err).toEqual(new Error(sentence));
    expect(events.some((e) => /^Step \d+\/\d+ : RUN command -v traefik/.test(e.text))).toBe(true);
    expect(events.at(-1)).toMatchObject({ done: true, error: sentence });
    expect(await ours()).toEqual([]);
  });

  it.skipIf(!hasBase)("TraefikDriver.sweep with the container host removes ended labs' Traefik containers (in its state dir and elsewhere), not a running lab's, not HAProxy's", async () => {
    const other = `${SESSION}-old`;
    const made: string[] = [];
    const leftover = async (name: string, engine: string, owner: string, workDir: string) => {
      const c = await d.createContainer({
        name: `balancer-lab-${engine}-${other}-${name}`,
        Image: BASE,
        Cmd: ['sleep', '600'],
        Labels: { [LABEL_SESSION]: other, [LABEL_ROLE]: 'proxy', [LABEL_ENGINE]: engine, [LABEL_OWNER]: owner, [LABEL_WORKDIR]: workDir },
      });
      await c.start();
      made.push(c.id);
      return c.id;
    };
    const ended = `${os.hostname()}/999999999/1`;
    const stateDir = path.join(root, 'state');
    fs.mkdirSync(path.join(stateDir, 'traefik-old'), { recursive: true });
    try {
      await leftover('in-state', 'traefik', ended, path.join(stateDir, 'traefik-old'));
      await leftover('elsewhere', 'traefik', ended, path.join(os.tmpdir(), `gone-${other}`));
      const alive = await leftover('alive', 'traefik', `${os.hostname()}/${process.ppid}/-`, path.join(stateDir, 'traefik-running'));
      const haproxy = await leftover('haproxy', 'haproxy', ended, path.join(os.tmpdir(), `gone-h-${other}`));
      expect(await TraefikDriver.sweep(stateDir, host())).toBe(2);
      const left = (await d.listContainers({ all: true, filters: labelFilter(other) })).map((c) => c.Id).sort();
      expect(left).toEqual([alive, haproxy].sort());
    } finally {
      for (const id of made) await d.getContainer(id).remove({ force: true }).catch(() => undefined);
    }
    expect(await d.listContainers({ all: true, filters: labelFilter(other) })).toEqual([]);
  });

  it("server/proxies.ts in Docker mode: Traefik's availability is the image's sentence (not process mode's), the factory refuses with it, build progress reaches the bus", async () => {
    const bus = new EventBus();
    const builds: ImageBuildProgressed[] = [];
    bus.on('image:build', (e) => builds.push(e));
    const env = { runtime: 'docker' as const, docker: d, bus, stateDir: path.join(root, 'lab'), sessionId: SESSION };
    await withTraefikEnv({ LAB_TRAEFIK_BASE: NOWHERE }, async () => {
      const list = await proxyAvailability(env)();
      expect(list.find((p) => p.name === 'traefik')).toEqual({ name: 'traefik', available: false, reason: traefikImageMissing(NOWHERE) });
      expect(list.find((p) => p.name === 'traefik')?.reason).not.toBe(TRAEFIK_MISSING);
      const refused = await proxyFactory(env)('traefik').catch((e: Error) => e);
      expect(refused).toMatchObject({ name: 'LabError', code: 'conflict', message: traefikImageMissing(NOWHERE) });
      expect(builds.at(-1)).toMatchObject({ done: true, error: traefikImageMissing(NOWHERE) });
    });
    if (hasBase) {
      await withTraefikEnv({ LAB_TRAEFIK_BASE: BASE }, async () => {
        // The base is here: listed as available (cheap: nothing is built to tell).
        expect((await proxyAvailability(env)()).find((p) => p.name === 'traefik')).toEqual({
          name: 'traefik',
          available: true,
          version: `Traefik in a container (sandbox-images/traefik FROM ${BASE})`,
        });
      });
    }
    expect(await sweepProxies(env)).toBe(0);
    expect(await ours()).toEqual([]);
  });
});

describe.skipIf(!docker || !realImage)('TraefikDriver with Traefik in a container (real Traefik)', () => {
  const d = docker as Docker;
  const backends: http.Server[] = [];
  const ports: number[] = [];
  let root: string;

  beforeAll(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-tcr-'));
    for (const name of ['b1', 'b2']) {
      const server = http.createServer((_req, res) => {
        res.setHeader('X-Served-By', name);
        res.end(name);
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      backends.push(server);
      ports.push((server.address() as net.AddressInfo).port);
    }
  });

  afterAll(async () => {
    for (const s of backends) s.close();
    fs.rmSync(root, { recursive: true, force: true });
    expect(await d.listContainers({ all: true, filters: labelFilter(SESSION) })).toEqual([]);
  });

  it('serves round-robin through its container on the host network, logs requests, and leaves no container once stopped', async () => {
    const bus = new EventBus();
    const completed: string[] = [];
    bus.on('request:completed', (e) => completed.push(String(e.hostname)));
    const host = new TraefikContainerHost({ docker: d, sessionId: SESSION, cacheDir: CACHE });
    const v = await host.version();
    expect(v).toMatchObject({ ok: true, version: expect.stringMatching(/^3\./) });
    const driver = new TraefikDriver({ bus, workDir: path.join(root, 'traefik'), host });
    try {
      const port = await driver.start(config(ports));
      const client = new ProbeClient({ baseUrl: `http://127.0.0.1:${port}`, connection: 'reuse' });
      const served: Array<string | null> = [];
      for (let i = 0; i < 4; i++) served.push((await client.get('/')).servedBy);
      client.close();
      expect(served.slice().sort()).toEqual(['b1', 'b1', 'b2', 'b2']);
      // Its JSON access log, read from the container's stdout, names the replicas.
      await expect.poll(() => completed.length).toBe(4);
      expect(completed.slice().sort()).toEqual(['b1', 'b1', 'b2', 'b2']);
      expect((await d.listContainers({ filters: labelFilter(SESSION, 'proxy') })).length).toBe(1);
    } finally {
      await driver.stop();
    }
    expect(await d.listContainers({ all: true, filters: labelFilter(SESSION) })).toEqual([]);
  });
});
