/**
 * HaproxyDriver with HAProxy in a Docker container (lab/runtime/docker/haproxy-container.ts), in
 * front of small in-process backends on 127.0.0.1 (reached through the host network): what differs
 * from the local binary. Reloads are SIGUSR2 through Docker (a new worker, the old one gone inside
 * the container), HAProxy killed from outside is reported, a killed lab's container is swept while
 * a running lab's is not, and a missing image is a sentence. The ProxyDriver contract runs on this
 * engine too (test/contract/proxy-driver.contract.test.ts, `haproxy-container`).
 *
 * Skipped, saying why, when Docker is not reachable or the image cannot be built.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EventBus } from '../../events.ts';
import { ProbeClient } from '../../probe-client.ts';
import { labelFilter } from '../../runtime/docker/docker-client.ts';
import { HaproxyContainerHost } from '../../runtime/docker/haproxy-container.ts';
import type { ProxyConfig } from '../../seams.ts';
import { CONTAINER_SESSION, containerEngine, containerHaproxy, containerHost } from '../../../test/contract/engines.ts';
import { deadPort } from '../../../test/support/events.ts';
import { HaproxyDriver } from './haproxy-driver.ts';

const haproxyContainer = await containerEngine();
if (!haproxyContainer.ok) console.warn(`haproxy container tests skipped: ${haproxyContainer.reason}`);

function config(ports: number[]): ProxyConfig {
  return {
    entrypoint: { name: 'web', host: '127.0.0.1', port: 0 },
    routers: [{ name: 'r', pathPrefix: '/', stripPrefix: false, service: 's', priority: 1 }],
    services: [{ name: 's', loadBalancer: { algorithm: 'round-robin', servers: ports.map((p, i) => ({ name: `b${i + 1}`, url: `http://127.0.0.1:${p}`, weight: 1 })) } }],
  };
}

describe.skipIf(!haproxyContainer.ok)('HaproxyDriver with HAProxy in a container', () => {
  let root: string;
  const backends: Array<{ port: number; server: http.Server }> = [];
  const clients: ProbeClient[] = [];
  const children: ChildProcess[] = [];
  let driver: HaproxyDriver | null = null;
  let bus: EventBus;
  let n = 0;

  beforeAll(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'lab-hxc-'));
    for (const name of ['b1', 'b2']) {
      const server = http.createServer((_req, res) => {
        res.setHeader('X-Served-By', name);
        res.end(name);
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      backends.push({ port: (server.address() as net.AddressInfo).port, server });
    }
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await driver?.stop();
    driver = null;
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  afterAll(async () => {
    for (const b of backends) b.server.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  function start(): Promise<number> {
    bus = new EventBus();
    driver = containerHaproxy(bus, path.join(root, `w${++n}`));
    return driver.start(config(backends.map((b) => b.port)));
  }

  function probe(port: number): ProbeClient {
    const c = new ProbeClient({ baseUrl: `http://127.0.0.1:${port}`, connection: 'new' });
    clients.push(c);
    return c;
  }

  async function proxyContainers(): Promise<string[]> {
    if (!haproxyContainer.ok) return [];
    return (await haproxyContainer.docker.listContainers({ all: true, filters: labelFilter(CONTAINER_SESSION, 'proxy') })).map((c) => c.Id);
  }

  it('reaches backends on 127.0.0.1 from its container; a reload (SIGUSR2 via Docker) starts a new worker and the old one leaves the container', async () => {
    const port = await start();
    const d = driver!;
    expect(d.hostKind).toBe('container');
    expect((await proxyContainers()).length).toBe(1);
    const c = probe(port);
    expect([(await c.get('/')).servedBy, (await c.get('/')).servedBy].sort()).toEqual(['b1', 'b2']);
    const worker = d.workerPid;
    // A sticky cookie cannot be added through the Runtime API: the driver reloads.
    const reloaded = bus.once('log:line', (l) => /\[lab\] reload/.test(l.text));
    const sticky = config(backends.map((b) => b.port));
    sticky.services[0].loadBalancer.sticky = { cookie: { name: 'srv', httpOnly: true, secure: false, sameSite: '' } };
    await d.apply(sticky);
    await reloaded;
    expect(d.workerPid).not.toBe(worker);
    const res = await c.get('/');
    expect(res.headers['set-cookie']?.[0]).toMatch(/^srv=b[12]/);
    await d.stop();
    expect(await proxyContainers()).toEqual([]);
  });

  it('HAProxy killed from outside (docker kill) is reported, its container removed, and it can start again', async () => {
    await start();
    const d = driver!;
    const [id] = await proxyContainers();
    const said = bus.once('log:line', (l) => l.stream === 'stderr' && /HAProxy exited unexpectedly/.test(l.text));
    if (!haproxyContainer.ok) throw new Error(haproxyContainer.reason);
    await haproxyContainer.docker.getContainer(id).kill({ signal: 'SIGKILL' });
    expect((await said).text).toMatch(/signal SIGKILL/);
    expect(d.port).toBeNull();
    await expect(d.apply(config([backends[0].port]))).rejects.toThrow(/HAProxy is not running/);
    // The dead container goes too (stop(0) after an unexpected exit), then a new one starts.
    const port = await d.start(config([backends[1].port]));
    expect((await probe(port).get('/')).servedBy).toBe('b2');
    expect((await proxyContainers()).length).toBe(1);
  });

  it("a lab killed before stop() leaves its container serving; sweep() with the container host removes it, and leaves a running lab's", async () => {
    if (!haproxyContainer.ok) throw new Error(haproxyContainer.reason);
    const session = `${CONTAINER_SESSION}-old`;
    const workDir = path.join(root, `w${++n}`);
    const fixture = fileURLToPath(new URL('./test-fixtures/container-lab-that-dies.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', fixture, workDir, String(backends[0].port), session, haproxyContainer.image], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const line = await new Promise<string>((resolve, reject) => {
      readline.createInterface({ input: child.stdout! }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`the fixture exited with ${code}`)));
    });
    const port = Number(/^port (\d+)$/.exec(line)![1]);
    const theirs = () => haproxyContainer.ok ? haproxyContainer.docker.listContainers({ all: true, filters: labelFilter(session, 'proxy') }) : Promise.resolve([]);
    expect((await theirs()).length).toBe(1);

    const host = new HaproxyContainerHost({ docker: haproxyContainer.docker, sessionId: CONTAINER_SESSION, image: haproxyContainer.image });
    // Its lab still runs: not a leftover.
    expect(await HaproxyDriver.sweep(root, { hosts: [host] })).toBe(0);
    expect((await probe(port).get('/')).servedBy).toBe('b1');

    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    expect((await probe(port).get('/')).servedBy).toBe('b1'); // the orphan still serves
    expect(await HaproxyDriver.sweep(root, { hosts: [host] })).toBe(1);
    expect(await theirs()).toEqual([]);
    expect(await HaproxyDriver.sweep(root, { hosts: [host] })).toBe(0);
  });

  it('the host alone: the master is PID 1 in its container, alive() sees pids there, SIGUSR2 reloads, stop() removes the container', async () => {
    const workDir = path.join(root, `w${++n}`);
    mkdirSync(workDir, { recursive: true, mode: 0o700 });
    const cfgPath = path.join(workDir, 'haproxy.cfg');
    const text = (port: number) => ['global', 'defaults', '  mode http', '  timeout connect 1s', '  timeout client 5s', '  timeout server 5s', 'frontend fe', `  bind 127.0.0.1:${port}`, ''].join('\n');
    const host = containerHost();
    // HAProxy's own refusal comes back as its lines.
    writeFileSync(cfgPath, text(0));
    const refused = await host.check(cfgPath);
    expect(refused.ok).toBe(false);
    expect(!refused.ok && refused.lines.some((l) => /\[ALERT\].*invalid port '0'/.test(l))).toBe(true);
    writeFileSync(cfgPath, text(await deadPort()));
    expect(await host.check(cfgPath)).toEqual({ ok: true });
    const lines: string[] = [];
    const waiters: Array<{ re: RegExp; resolve: () => void }> = [];
    const seen = (re: RegExp) => (lines.some((l) => re.test(l)) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ re, resolve })));
    const proc = await host.start({
      workDir,
      cfgPath,
      onLine: (l) => {
        lines.push(l);
        for (const w of waiters.filter((x) => x.re.test(l))) w.resolve();
      },
    });
    try {
      await seen(/New worker \(\d+\) forked/);
      expect(proc.masterPid).toBe(1);
      expect(lines.some((l) => /\(1\) : New worker/.test(l))).toBe(true);
      expect(await proc.alive(1)).toBe(true);
      expect(await proc.alive(999_999)).toBe(false);
      const worker = Number(/New worker \((\d+)\) forked/.exec(lines.find((l) => /New worker/.test(l))!)![1]);
      expect(await proc.alive(worker)).toBe(true);
      await proc.signal('SIGUSR2');
      await seen(/Reloading HAProxy/);
      await seen(new RegExp(`Former worker \\(${worker}\\) exited`));
      expect(await proc.alive(worker)).toBe(false);
      await proc.stop(3000);
      expect(await proc.exited).toEqual({ code: 0, signal: null });
      expect(await proxyContainers()).toEqual([]);
      expect(await proc.alive(1)).toBe(false);
    } finally {
      await proc.stop(0); // a no-op once stopped; a failed assertion leaves no container
    }
  });

  it('a missing image is a sentence naming it and how to build it, not a Docker error', async () => {
    if (!haproxyContainer.ok) throw new Error(haproxyContainer.reason);
    const host = new HaproxyContainerHost({ docker: haproxyContainer.docker, sessionId: CONTAINER_SESSION, image: 'balancer-lab/haproxy:missing000000' });
    const v = await host.version();
    expect(v).toEqual({ ok: false, reason: expect.stringMatching(/^The HAProxy image balancer-lab\/haproxy:missing000000 is not built; .*LAB_DOCKER_BASE/) });
    const d = new HaproxyDriver({ bus: new EventBus(), workDir: path.join(root, `w${++n}`), host });
    await expect(d.start(config([backends[0].port]))).rejects.toThrow(/^The HAProxy image balancer-lab\/haproxy:missing000000 is not built/);
  });
});
