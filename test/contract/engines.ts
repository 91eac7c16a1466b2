/**
 * The proxy engines the contract suites run against: the embedded proxy always, HAProxy when its
 * binary is found, HAProxy in a Docker container when Docker answers and its image builds (else the
 * suites skip them and print why), and the small topology they share.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect } from 'vitest';
import type { EventBus } from '../../lab/events.ts';
import { EmbeddedProxy } from '../../lab/proxy/embedded/embedded-proxy.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import type { HaproxyAvailability } from '../../lab/proxy/haproxy/haproxy-host.ts';
import { connectDocker, labelFilter, type Docker } from '../../lab/runtime/docker/docker-client.ts';
import { ensureHaproxyImage, HaproxyContainerHost } from '../../lab/runtime/docker/haproxy-container.ts';
import type { ProxyDriver } from '../../lab/seams.ts';
import { Topology } from '../../lab/topology.ts';

export const haproxy = await HaproxyDriver.available();

export const ENGINES: Array<{ name: 'embedded' | 'haproxy'; ok: boolean; create(bus: EventBus, dir: string): ProxyDriver }> = [
  { name: 'embedded', ok: true, create: (bus) => new EmbeddedProxy({ bus }) },
  { name: 'haproxy', ok: haproxy.ok, create: (bus, dir) => new HaproxyDriver({ bus, workDir: path.join(dir, 'haproxy') }) },
];

/** web_dynamic x3 behind `/api/` (prefix stripped), with proxy-wide settings `extra`. */
export function topology(extra: Record<string, unknown> = {}): Topology {
  return Topology.parse({
    services: { web_dynamic: { replicas: 3 } },
    routes: [{ service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true }],
    proxy: extra,
  });
}

// ---------------------------------------------------------------- HAProxy in a container

/** The Docker session of this test file's proxy containers (label `balancer-lab.session`). */
export const CONTAINER_SESSION = `ct${process.pid}-${randomBytes(3).toString('hex')}`;

/** Host-side npm installs of image builds, shared by the test files (kept between runs). */
export const IMAGE_CACHE_DIR = path.join(os.tmpdir(), 'balancer-lab-image-cache');

/** What containerEngine() finds. */
export type ContainerEngine = { ok: true; docker: Docker; image: string; version: string } | { ok: false; reason: string };

let engine: Promise<ContainerEngine> | null = null;

/**
 * HAProxy in a container, when it can run here: Docker reachable and the image built (FROM
 * LAB_DOCKER_BASE when set, e.g. `balancer-lab/base:bookworm` where no registry is reachable; else
 * the official `haproxy:2.6`). `{ ok: false, reason }` otherwise, with the sentence to print.
 * Looked up (and the image built) once per test file, on first call: suites that do not run the
 * container engine do not pay for it.
 */
export function containerEngine(): Promise<ContainerEngine> {
  engine ??= (async (): Promise<ContainerEngine> => {
    let docker: Docker;
    try {
      docker = await connectDocker({ pingTimeoutMs: 5000 });
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
    let image: string;
    try {
      image = await ensureHaproxyImage(docker, { cacheDir: IMAGE_CACHE_DIR });
    } catch (err) {
      return { ok: false, reason: `the HAProxy image could not be built: ${(err as Error).message}` };
    }
    const v = await new HaproxyContainerHost({ docker, sessionId: CONTAINER_SESSION, image }).version();
    return v.ok ? { ok: true, docker, image, version: v.version } : { ok: false, reason: v.reason };
  })().then((e) => (found = e));
  return engine;
}

/**
 * A HaproxyDriver whose HAProxy runs in a container of this file's session.
 * @throws Error when containerEngine() has not resolved ok before.
 */
export function containerHaproxy(bus: EventBus, workDir: string): HaproxyDriver {
  return new HaproxyDriver({ bus, workDir, host: containerHost() });
}

let found: ContainerEngine | null = null;

/** The container host of this file's session. @throws Error when containerEngine() has not resolved ok before. */
export function containerHost(): HaproxyContainerHost {
  if (!found?.ok) throw new Error(`HAProxy in a container cannot run here: ${found ? found.reason : 'containerEngine() was not awaited'}`);
  return new HaproxyContainerHost({ docker: found.docker, sessionId: CONTAINER_SESSION, image: found.image });
}

/** The containers of this file's session that still exist (name and state). */
export async function containersLeft(): Promise<string[]> {
  if (!found?.ok) return [];
  const list = await found.docker.listContainers({ all: true, filters: labelFilter(CONTAINER_SESSION) });
  return list.map((c) => `${c.Names.join(',')} (${c.State})`);
}

// Every suite stops its drivers itself: nothing of this file's session may be left.
afterAll(async () => {
  expect(await containersLeft()).toEqual([]);
});

// ---------------------------------------------------------------- the ProxyDriver contract's cases

/** One engine of test/contract/proxy-driver.contract.test.ts. */
export interface DriverCase {
  /** Suite title and work-directory name (no spaces: it is part of a unix socket path). */
  name: string;
  /** The ProxyDriver it creates (what its semantics follow, e.g. fall/rise on `haproxy`). */
  engine: ProxyDriver['name'];
  available(): Promise<HaproxyAvailability>;
  create(bus: EventBus, workDir: string): ProxyDriver;
  /** Process ids on this machine that must be gone once the driver stopped (none for the in-process proxy). */
  pids(driver: ProxyDriver): number[];
}

const haproxyPids = (d: ProxyDriver) => [(d as HaproxyDriver).pid, (d as HaproxyDriver).workerPid].filter((p): p is number => p !== null);

export const DRIVERS: DriverCase[] = [
  {
    name: 'embedded',
    engine: 'embedded',
    available: async () => ({ ok: true, version: `Node ${process.version}` }),
    create: (bus) => new EmbeddedProxy({ bus }),
    pids: () => [],
  },
  {
    name: 'haproxy',
    engine: 'haproxy',
    available: () => HaproxyDriver.available(),
    create: (bus, workDir) => new HaproxyDriver({ bus, workDir }),
    pids: haproxyPids,
  },
  {
    name: 'haproxy-container',
    engine: 'haproxy',
    available: async () => {
      const e = await containerEngine();
      return e.ok ? { ok: true, version: `${e.version} in ${e.image}` } : { ok: false, reason: e.reason };
    },
    create: (bus, workDir) => containerHaproxy(bus, workDir),
    // The worker's pid is inside the container's pid namespace: only the master's host pid is checked here.
    pids: (d) => [(d as HaproxyDriver).pid].filter((p): p is number => p !== null),
  },
];
