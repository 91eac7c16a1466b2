/**
 * The claims of lesson 01 (round-robin), checked against the real embedded proxy in front of
 * real web_static / web_dynamic replica processes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EventBus, type RequestCompleted } from '../../lab/events.ts';
import { Lab } from '../../lab/lab.ts';
import { ProcessRuntime } from '../../lab/runtime/process-runtime.ts';
import { EmbeddedProxy } from '../../lab/proxy/embedded/embedded-proxy.ts';
import { ProbeClient } from '../../lab/probe-client.ts';

let lab: Lab;
let bus: EventBus;
let stateDir: string;
let base: string;
const requests: RequestCompleted[] = [];

function dynamicHosts(): string[] {
  return lab.status().services.find((s) => s.name === 'web_dynamic')!.instances.map((r) => r.hostname);
}

async function fetchHosts(n: number, connection: 'reuse' | 'new' = 'reuse'): Promise<{ hosts: string[]; ports: number[] }> {
  const probe = new ProbeClient({ baseUrl: base, connection });
  const hosts: string[] = [];
  const ports: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const res = await probe.get('/api/');
      expect(res.status).toBe(200);
      const body = JSON.parse(res.body) as { hostname: string; instanceId: string };
      expect(res.servedBy).toBe(body.hostname);
      hosts.push(body.hostname);
      ports.push(res.localPort);
    }
  } finally {
    probe.close();
  }
  return { hosts, ports };
}

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-rr-'));
  bus = new EventBus();
  bus.on('request:completed', (r) => requests.push(r));
  const sessionId = `rr${process.pid}`;
  lab = new Lab({
    runtime: new ProcessRuntime({ sessionId, stateDir }),
    proxy: new EmbeddedProxy({ bus }),
    bus,
    sessionId,
    proxyListen: { host: '127.0.0.1', port: 0 },
  });
  await lab.start();
  base = `http://127.0.0.1:${lab.status().proxy.port}`;
});

afterAll(async () => {
  const pids = lab.status().services.flatMap((s) => s.instances.map((r) => r.pid!));
  await lab.stop();
  for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  rmSync(stateDir, { recursive: true, force: true });
});

describe('round-robin through the embedded proxy', () => {
  it('9 requests over ONE keep-alive connection hit each of 3 replicas exactly 3 times, in a repeating order', async () => {
    const { hosts, ports } = await fetchHosts(9);
    expect(new Set(ports).size).toBe(1); // one client connection
    const cycle = hosts.slice(0, 3);
    expect(new Set(cycle).size).toBe(3);
    expect(hosts).toEqual([...cycle, ...cycle, ...cycle]);
    expect(new Set(cycle)).toEqual(new Set(dynamicHosts()));
    // ...and in the order the lab lists them (its pool order), starting wherever the rotation stood.
    const listed = dynamicHosts();
    const start = listed.indexOf(cycle[0]);
    expect(cycle).toEqual([...listed.slice(start), ...listed.slice(0, start)]);
  });

  it('the proxy reuses its pooled backend connections: one per replica across those requests', async () => {
    const before = requests.length;
    await fetchHosts(6);
    const mine = requests.slice(before).filter((r) => r.service === 'web_dynamic');
    expect(mine).toHaveLength(6);
    expect(new Set(mine.map((r) => r.clientConnId)).size).toBe(1);
    const upstreamPerReplica = new Map<string, Set<string>>();
    for (const r of mine) {
      const set = upstreamPerReplica.get(r.replica!) ?? new Set();
      set.add(r.upstreamConnId!);
      upstreamPerReplica.set(r.replica!, set);
    }
    expect(upstreamPerReplica.size).toBe(3);
    for (const set of upstreamPerReplica.values()) expect(set.size).toBe(1);
  });

  it('balances each request, not each connection: new connections rotate the same way', async () => {
    const { hosts, ports } = await fetchHosts(6, 'new');
    expect(new Set(ports).size).toBe(6);
    expect(new Set(hosts).size).toBe(3);
    expect(hosts.slice(3)).toEqual(hosts.slice(0, 3));
  });

  it('routes /api/ to web_dynamic with the prefix stripped and / to web_static', async () => {
    const probe = new ProbeClient({ baseUrl: base, connection: 'reuse' });
    const page = await probe.get('/');
    probe.close();
    expect(page.status).toBe(200);
    expect(page.servedBy).toMatch(/^web_static-\d-[0-9a-f]{4}$/);
    expect(page.body).toContain(page.servedBy);
    const before = requests.length;
    await fetchHosts(1);
    expect(requests.slice(before).find((r) => r.path === '/api/')?.service).toBe('web_dynamic');
  });

  it('scaling 3 -> 5 grows the rotation to 5 replicas on the next requests', async () => {
    await lab.scale('web_dynamic', 5);
    expect(dynamicHosts()).toHaveLength(5);
    const { hosts } = await fetchHosts(10);
    expect(new Set(hosts)).toEqual(new Set(dynamicHosts()));
    expect(hosts.slice(5)).toEqual(hosts.slice(0, 5));
    const listed = dynamicHosts();
    const start = listed.indexOf(hosts[0]);
    expect(hosts.slice(0, 5)).toEqual([...listed.slice(start), ...listed.slice(0, start)]);
  });

  it('a killed replica leaves the pool: no request reaches it, none fails', async () => {
    const victim = dynamicHosts()[2];
    await lab.kill(victim);
    expect(dynamicHosts()).not.toContain(victim);
    const before = requests.length;
    const { hosts } = await fetchHosts(8);
    expect(hosts).not.toContain(victim);
    expect(new Set(hosts).size).toBe(4);
    expect(requests.slice(before).every((r) => r.status === 200)).toBe(true);
  });

  it('scaling down to 1 leaves one replica answering everything', async () => {
    await lab.scale('web_dynamic', 1);
    const { hosts } = await fetchHosts(4);
    expect(new Set(hosts)).toEqual(new Set(dynamicHosts()));
    expect(dynamicHosts()).toHaveLength(1);
  });

  it('scaling to 0 answers 503 from the proxy (no available server)', async () => {
    await lab.scale('web_dynamic', 0);
    const probe = new ProbeClient({ baseUrl: base, connection: 'new' });
    const res = await probe.get('/api/');
    probe.close();
    expect(res.status).toBe(503);
  });
});
