/**
 * Proxy settings, weights, probe bursts, the hash experiment and engine switching, through the
 * real server in front of a real lab (process runtime, real replicas, real proxies).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningLab } from '../../server/compose.ts';
import { io } from 'socket.io-client';
import type { EventBatch, LabStatus, ProxyInfo } from '../../server/protocol.ts';
import type { BurstResult, HashMovementResult } from '../../lab/experiments.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import { TraefikDriver } from '../../lab/proxy/traefik/traefik-driver.ts';
import { TRAEFIK_MISSING } from '../../lab/proxy/traefik/traefik-host.ts';
import { api as apiOf, startTestLab } from '../support/lab-server.ts';

let lab: RunningLab;

const api = <T = LabStatus>(pathname: string, body?: unknown) => apiOf<T>(lab, pathname, body);

const burst = (body: object) => api<{ results: BurstResult[] }>('/api/probe', body);
const hosts = (rs: BurstResult[]) => rs.map((r) => r.servedBy);

beforeAll(async () => {
  lab = await startTestLab('lab-settings-');
});

afterAll(() => lab.stop());

describe('settings', () => {
  it('refuses bad settings with a 400 that names the field, and changes nothing', async () => {
    for (const [setting, message] of [
      ['sticky.cookie=bad;name', /^sticky.cookie: /],
      ['algorithm=random', /^algorithm: algorithm must be one of/],
      ['nope=1', /Unknown setting "nope"/],
    ] as const) {
      const r = await api('/api/settings', { settings: [setting] });
      expect(r.status).toBe(400);
      expect(r.json.error).toMatch(message);
    }
    // all or none: a valid setting next to a bad one is not applied either
    expect((await api('/api/settings', { settings: ['sticky=on', 'algorithm=random'] })).status).toBe(400);
    expect((await api('/api/status')).json.topology.proxy.sticky).toBe(false);
    expect((await api('/api/settings', { settings: 'sticky=on' })).status).toBe(400);
  });

  it('round-robin: a burst without cookies rotates over the 3 web_dynamic replicas', async () => {
    const r = await burst({ path: '/api/', count: 6 });
    expect(r.status).toBe(200);
    expect(new Set(hosts(r.json.results)).size).toBe(3);
  });

  it('sticky on: a client with a cookie jar stays on one replica; one without a jar does not', async () => {
    const set = await api('/api/settings', { settings: ['web_dynamic.sticky=on'] });
    expect(set.status).toBe(200);
    expect(set.json.topology.services.web_dynamic?.balancer?.sticky).toBe(true);
    const withJar = await burst({ path: '/api/', count: 6, cookies: true, connection: 'new' });
    expect(new Set(hosts(withJar.json.results)).size).toBe(1);
    expect(withJar.json.results[0].setCookie.join()).toMatch(/^_[0-9a-f]{5}=/);
    expect(withJar.json.results.slice(1).every((r) => r.setCookie.length === 0)).toBe(true);
    const noJar = await burst({ path: '/api/', count: 6, cookies: false });
    expect(new Set(hosts(noJar.json.results)).size).toBe(3);
    // scaling keeps the service's own settings
    const scaled = await api('/api/services/web_dynamic/scale', { replicas: 4 });
    expect(scaled.json.topology.services.web_dynamic?.balancer?.sticky).toBe(true);
    expect((await api('/api/services/web_dynamic/scale', { replicas: 3 })).status).toBe(200);
    expect((await api('/api/settings', { settings: ['sticky=off'] })).status).toBe(200);
  });

  it('weights 3:1:1 give a measured 3/5, 1/5, 1/5 share', async () => {
    const s = (await api('/api/status')).json;
    const [a] = s.services.find((x) => x.name === 'web_dynamic')!.instances;
    const w = await api(`/api/replicas/${a.hostname}/weight`, { weight: 3 });
    expect(w.status).toBe(200);
    expect(w.json.services.flatMap((x) => x.instances).find((r) => r.hostname === a.hostname)?.weight).toBe(3);
    const r = await burst({ path: '/api/', count: 50 });
    // 3/5 of 50 = 30; the rotation's phase when the burst starts may shift it by one or two.
    const share = hosts(r.json.results).filter((h) => h === a.hostname).length;
    expect(share).toBeGreaterThanOrEqual(28);
    expect(share).toBeLessThanOrEqual(32);
    expect((await api(`/api/replicas/${a.hostname}/weight`, { weight: 257 })).json.error).toMatch(/weight must be at most 256/);
    expect((await api(`/api/replicas/${a.hostname}/weight`, { weight: 1 })).status).toBe(200);
  });

  it("a replica's health reads UP with a check on (both engines start servers UP) and null without one", async () => {
    const healthOf = (st: LabStatus) => st.services.find((x) => x.name === 'web_dynamic')!.instances.map((r) => r.healthy);
    expect(healthOf((await api('/api/status')).json)).toEqual([null, null, null]);
    expect(healthOf((await api('/api/settings', { settings: ['web_dynamic.healthcheck=on'] })).json)).toEqual([true, true, true]);
    expect(healthOf((await api('/api/settings', { settings: ['web_dynamic.healthcheck=off'] })).json)).toEqual([null, null, null]);
  });

  it('a page that connects later gets the recent health probes in its history', async () => {
    await api('/api/settings', { settings: ['web_dynamic.healthcheck=on', 'web_dynamic.healthcheck.interval=200'] });
    await lab.bus.once('healthcheck:probed');
    const socket = io(lab.apiUrl, { auth: { token: lab.token }, transports: ['websocket'], reconnection: false, forceNew: true });
    const history = await new Promise<EventBatch>((resolve, reject) => {
      socket.on('history', resolve);
      socket.on('connect_error', reject);
    });
    socket.close();
    expect(history.health.some((e) => e.type === 'probed' && e.service === 'web_dynamic')).toBe(true);
    await api('/api/settings', { settings: ['web_dynamic.healthcheck=off'] });
  });

  it('keep: bursts share one client connection until the proxy closes it after the client idle timeout', async () => {
    expect((await api('/api/settings', { settings: ['timeouts.clientIdle=1000'] })).status).toBe(200);
    const a = await burst({ path: '/api/', count: 3, connection: 'reuse', keep: true });
    const b = await burst({ path: '/api/', count: 3, connection: 'reuse', keep: true });
    const ports = new Set([...a.json.results, ...b.json.results].map((r) => r.localPort));
    expect(ports.size).toBe(1);
    const port = a.json.results[0].localPort;
    const closed = await lab.bus.once('connection:closed', (c) => c.hop === 'client-proxy' && (c.local.endsWith(`:${port}`) || c.remote.endsWith(`:${port}`)));
    expect(closed.closedBy).toBe('proxy');
    expect(closed.reason).toMatch(/idle/);
    // the next keep burst opens a new connection
    const c = await burst({ path: '/api/', count: 1, connection: 'reuse', keep: true });
    expect(c.json.results[0].localPort).not.toBe(port);
    expect((await burst({ path: '/api/', count: 1, connection: 'new', keep: true })).json.error).toMatch(/keep goes with connection "reuse"/);
    expect((await api('/api/settings', { settings: ['timeouts.clientIdle=180000'] })).status).toBe(200);
  });

  it('refuses a probe path that is not a URL path, and more than 100 requests', async () => {
    expect((await burst({ path: 'http://evil.example/', count: 1 })).status).toBe(400);
    expect((await burst({ path: '/api/', count: 1000 })).json.error).toMatch(/count must be at most 100/);
  });

  it('hash movement, measured: consistent moves about 1/5 of 100 ids, map-based most of them', async () => {
    const consistent = await api<HashMovementResult>('/api/experiments/hash-movement', { type: 'consistent' });
    expect(consistent.status).toBe(200);
    expect(consistent.json.before).toHaveLength(4);
    expect(consistent.json.after).toHaveLength(5);
    expect(consistent.json.moved).toBeGreaterThan(5);
    expect(consistent.json.moved).toBeLessThan(40);
    await api('/api/services/web_dynamic/scale', { replicas: 3 });
    const mapBased = await api<HashMovementResult>('/api/experiments/hash-movement', { type: 'map-based' });
    expect(mapBased.json.moved).toBeGreaterThan(50);
    expect((await api('/api/settings', { settings: ['algorithm=round-robin'] })).status).toBe(200);
    expect((await api('/api/services/web_dynamic/scale', { replicas: 3 })).status).toBe(200);
  });
});

describe('proxy engines', () => {
  it('lists the engines with availability and reasons', async () => {
    const r = await api<ProxyInfo[]>('/api/proxies');
    expect(r.json.map((p) => p.name)).toEqual(['embedded', 'haproxy', 'traefik']);
    expect(r.json[0].available).toBe(true);
    const traefik = await TraefikDriver.available();
    expect(r.json[2]).toMatchObject(traefik.ok ? { available: true } : { available: false, reason: traefik.reason });
  });

  it('refuses an unknown engine with 400, and Traefik where none is installed with its sentence (409)', async () => {
    expect((await api('/api/proxy', { driver: 'nginx' })).json.error).toMatch(/proxy must be one of/);
    if ((await TraefikDriver.available()).ok) return; // a machine with Traefik switches to it instead
    const t = await api('/api/proxy', { driver: 'traefik' });
    expect(t.status).toBe(409);
    expect(t.json.error).toBe(TRAEFIK_MISSING);
    expect((await api('/api/status')).json.proxy.driver).toBe('embedded');
  });

  it('the embedded proxy has no Runtime API and says so', async () => {
    const r = await api('/api/proxy/runtime', { command: 'show stat' });
    expect(r.status).toBe(400);
    expect(r.json.error).toMatch(/no Runtime API; switch to haproxy/);
  });
});

const haproxy = await HaproxyDriver.available();
describe.runIf(haproxy.ok)('switching to HAProxy', () => {
  it('swaps the engine on the same port, keeps the replicas, and round-robins', async () => {
    const before = (await api('/api/status')).json;
    const pids = before.services.flatMap((s) => s.instances.map((r) => r.pid));
    const r = await api('/api/proxy', { driver: 'haproxy' });
    expect(r.status, r.json.error).toBe(200);
    expect(r.json.proxy.driver).toBe('haproxy');
    expect(r.json.proxy.port).toBe(before.proxy.port);
    expect(r.json.services.flatMap((s) => s.instances.map((x) => x.pid))).toEqual(pids);
    const b = await burst({ path: '/api/', count: 6 });
    expect(new Set(hosts(b.json.results)).size).toBe(3);
    const cfg = await api<{ driver: string; text: string }>('/api/proxy/config');
    expect(cfg.json.text).toMatch(/^backend /m);
  });

  it('sticky on HAProxy pins a client with a jar', async () => {
    expect((await api('/api/settings', { settings: ['sticky=on'] })).status).toBe(200);
    const withJar = await burst({ path: '/api/', count: 6, cookies: true, connection: 'new' });
    expect(new Set(hosts(withJar.json.results)).size).toBe(1);
    expect((await api('/api/settings', { settings: ['sticky=off'] })).status).toBe(200);
  });

  it('forwards allowed Runtime API commands and refuses others with a sentence', async () => {
    const ok = await api<{ output: string }>('/api/proxy/runtime', { command: 'show servers state' });
    expect(ok.status, ok.json.error).toBe(200);
    expect(ok.json.output).toMatch(/web_dynamic/);
    const bad = await api('/api/proxy/runtime', { command: 'shutdown frontend web' });
    expect(bad.status).toBe(400);
    expect(bad.json.error?.length ?? 0).toBeGreaterThan(10);
  });

  it('switches back to embedded', async () => {
    const r = await api('/api/proxy', { driver: 'embedded' });
    expect(r.json.proxy.driver).toBe('embedded');
    expect(new Set(hosts((await burst({ path: '/api/', count: 3 })).json.results)).size).toBe(3);
  });
});
if (!haproxy.ok) console.log(`switching to HAProxy: skipped because ${haproxy.reason}`);
