/**
 * Docker mode, all parts real: three web_dynamic replicas as Docker containers (DockerRuntime, on
 * the lab's bridge network) behind HAProxy in a container (HaproxyDriver with HaproxyContainerHost:
 * host network, so it reaches the replicas at their container IPs). Round-robin, the sticky
 * cookie, and a health check that ejects a replica whose /health fails and takes it back once it
 * passes. Afterwards no container or network of the session is left.
 *
 * Skipped, saying why, when Docker is not reachable or an image cannot be built (no registry:
 * set LAB_DOCKER_BASE=balancer-lab/base:bookworm, the offline base).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventBus, type RequestCompleted } from '../../lab/events.ts';
import { ProbeClient, type ProbeResponse } from '../../lab/probe-client.ts';
import { buildProxyConfig } from '../../lab/proxy/config.ts';
import type { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import { labelFilter } from '../../lab/runtime/docker/docker-client.ts';
import { DockerRuntime } from '../../lab/runtime/docker/docker-runtime.ts';
import type { ProxyConfig, ReplicaHandle } from '../../lab/seams.ts';
import { Topology, type Balancer } from '../../lab/topology.ts';
import { collect } from '../support/events.ts';
import { CONTAINER_SESSION, containerEngine, containerHaproxy, containersLeft, IMAGE_CACHE_DIR } from './engines.ts';

const haproxyContainer = await containerEngine();

if (!haproxyContainer.ok) console.warn(`docker-mode contract skipped: ${haproxyContainer.reason}`);

/** Fixed hostnames (container hostnames): the assertions name them. */
const HOSTNAMES = ['web_dynamic-1-d0c1', 'web_dynamic-2-d0c2', 'web_dynamic-3-d0c3'];

describe.skipIf(!haproxyContainer.ok)('Docker mode: replicas in containers behind HAProxy in a container', () => {
  let root: string;
  let runtime: DockerRuntime;
  let replicas: ReplicaHandle[] = [];
  let bus: EventBus;
  let driver: HaproxyDriver;
  let base: string;
  const clients: ProbeClient[] = [];

  /** web_dynamic behind `/api/` (stripped) with these balancer settings, over the three containers. */
  function config(balancer: Partial<Balancer> = {}): ProxyConfig {
    const topology = Topology.parse({
      services: { web_dynamic: { replicas: replicas.length } },
      routes: [{ service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true }],
      proxy: balancer,
    });
    const members = replicas.map((r) => ({ hostname: r.hostname, host: r.host, port: r.port, weight: 1 }));
    return buildProxyConfig(topology, new Map([['web_dynamic', members]]), { name: 'web', host: '127.0.0.1', port: 0 });
  }

  function client(cookies = false): ProbeClient {
    const c = new ProbeClient({ baseUrl: base, connection: 'reuse', cookies });
    clients.push(c);
    return c;
  }

  /** `n` GETs of /api/ in a row; each must be a 200 naming the replica that answered. */
  async function fetchN(c: ProbeClient, n: number): Promise<ProbeResponse[]> {
    const out: ProbeResponse[] = [];
    for (let k = 0; k < n; k++) {
      const res = await c.get('/api/');
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body).hostname).toBe(res.servedBy);
      out.push(res);
    }
    return out;
  }

  function counts(rs: ProbeResponse[]): Record<string, number> {
    const m: Record<string, number> = {};
    for (const r of rs) m[r.servedBy ?? 'none'] = (m[r.servedBy ?? 'none'] ?? 0) + 1;
    return m;
  }

  beforeAll(async () => {
    if (!haproxyContainer.ok) return;
    root = mkdtempSync(path.join(tmpdir(), 'lab-dm-'));
    runtime = new DockerRuntime({ docker: haproxyContainer.docker, sessionId: CONTAINER_SESSION, stateDir: path.join(root, 'state'), cacheDir: IMAGE_CACHE_DIR });
    // One at a time: the first builds the web_dynamic image (when missing), the others reuse it.
    for (const hostname of HOSTNAMES) {
      replicas.push(await runtime.start({ service: 'web_dynamic', hostname }, { onLog: () => {}, onExit: () => {} }));
    }
    bus = new EventBus();
    driver = containerHaproxy(bus, path.join(root, 'haproxy'));
    base = `http://127.0.0.1:${await driver.start(config())}`;
  }, 900_000);

  afterAll(async () => {
    for (const c of clients.splice(0)) c.close();
    const hostPid = driver?.pid ?? null;
    await driver?.stop();
    await runtime?.stopAll();
    if (hostPid !== null) expect(() => process.kill(hostPid, 0)).toThrow();
    if (haproxyContainer.ok) {
      expect(await containersLeft()).toEqual([]);
      expect(await haproxyContainer.docker.listNetworks({ filters: labelFilter(CONTAINER_SESSION) })).toEqual([]);
    }
    if (root) rmSync(root, { recursive: true, force: true });
  }, 120_000);

  it('the replicas are containers on their own addresses, and HAProxy runs in a container of the session', async () => {
    expect(replicas.map((r) => r.hostname)).toEqual(HOSTNAMES);
    for (const r of replicas) {
      expect(r.pid).toBeNull();
      expect(r.host).not.toBe('127.0.0.1');
    }
    expect(driver.hostKind).toBe('container');
    if (!haproxyContainer.ok) throw new Error(haproxyContainer.reason);
    const proxies = await haproxyContainer.docker.listContainers({ filters: labelFilter(CONTAINER_SESSION, 'proxy') });
    expect(proxies.map((c) => c.HostConfig.NetworkMode)).toEqual(['host']);
  });

  it('round-robin: 9 requests on one keep-alive connection, each of the 3 replica containers answers 3, each one request event', async () => {
    await driver.apply(config());
    const events = collect(bus, 'request:completed');
    const rs = await fetchN(client(), 9);
    expect(counts(rs)).toEqual(Object.fromEntries(HOSTNAMES.map((h) => [h, 3])));
    // A repeating order: request k and k+3 hit the same replica.
    for (let k = 3; k < 9; k++) expect(rs[k].servedBy).toBe(rs[k - 3].servedBy);
    await events.until((items) => items.length >= 9);
    expect(events.items.slice(0, 9).map((e: RequestCompleted) => e.replica)).toEqual(rs.map((r) => r.servedBy));
  });

  it('sticky cookie: a client with a cookie jar stays on one replica; without one it rotates', async () => {
    await driver.apply(config({ sticky: true }));
    const pinned = await fetchN(client(true), 6);
    expect(new Set(pinned.map((r) => r.servedBy)).size).toBe(1);
    expect(pinned[0].headers['set-cookie']).toBeDefined();
    const rotating = await fetchN(client(false), 6);
    expect(new Set(rotating.map((r) => r.servedBy)).size).toBe(3);
  });

  it('health check: a replica whose /health fails is ejected (no request reaches it), and comes back once healthy', async () => {
    const health = collect(bus, 'replica:health-changed');
    const probes = collect(bus, 'healthcheck:probed');
    await driver.apply(config({ healthCheck: true, healthCheckInterval: 300, healthCheckTimeout: 1000, healthCheckFall: 2, healthCheckRise: 1 }));
    const victim = HOSTNAMES[1];
    await runtime.setFault(victim, { mode: 'unhealthy' });
    await health.until((items) => items.some((e) => e.hostname === victim && !e.healthy));
    expect(probes.items.some((p) => p.replica === victim && !p.ok && p.status === 503)).toBe(true);
    const without = await fetchN(client(), 9);
    expect(counts(without)[victim]).toBeUndefined();
    expect(Object.keys(counts(without)).sort()).toEqual([HOSTNAMES[0], HOSTNAMES[2]]);

    await runtime.setFault(victim, { mode: 'healthy' });
    await health.until((items) => items.some((e) => e.hostname === victim && e.healthy));
    const back = await fetchN(client(), 9);
    expect(counts(back)).toEqual(Object.fromEntries(HOSTNAMES.map((h) => [h, 3])));
  });
});
