/**
 * TraefikDriver without a running Traefik: what available() says (no binary, a v2 binary), that
 * start() refuses with that sentence and leaves nothing behind, the driver's capabilities, and
 * render() = the file it writes. Real Traefik is exercised by test/contract/traefik.contract.test.ts.
 */
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { EventBus } from '../../events.ts';
import type { ProxyConfig } from '../../seams.ts';
import { TraefikDriver } from './traefik-driver.ts';
import { ProcessTraefikHost, TRAEFIK_MISSING, traefikVersionOf } from './traefik-host.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'traefik-driver-'));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  expect(existsSync(dir)).toBe(false);
});

/** An executable that prints `traefik version` output of the given version. */
function fakeVersionBinary(version: string): string {
  const file = path.join(dir, `traefik-${version}`);
  writeFileSync(file, `#!/bin/sh\nprintf 'Version:      ${version}\\nCodename:     test\\nGo version:   go1.22.5\\n'\n`);
  chmodSync(file, 0o755);
  return file;
}

const CONFIG: ProxyConfig = {
  entrypoint: { name: 'web', host: '127.0.0.1', port: 0 },
  routers: [{ name: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true, service: 'web_dynamic', priority: 17 }],
  services: [{ name: 'web_dynamic', loadBalancer: { algorithm: 'round-robin', servers: [{ name: 'web_dynamic-1-a1b2', url: 'http://127.0.0.1:41001', weight: 1 }] } }],
};

describe('traefikVersionOf', () => {
  it('reads `traefik version` output and wants v3', () => {
    expect(traefikVersionOf('Version:      3.1.2\nCodename:     comte\n', 'traefik')).toEqual({ ok: true, version: '3.1.2' });
    expect(traefikVersionOf('Version:      v3.0.0-rc3\n', 'traefik')).toEqual({ ok: true, version: '3.0.0-rc3' });
    expect(traefikVersionOf('Version:      2.11.0\n', 'traefik')).toEqual({
      ok: false,
      reason: 'Traefik 2.11.0 is too old; the lab writes Traefik v3 configuration, so put a `traefik` v3 binary on PATH.',
    });
    expect(traefikVersionOf('hello', 'traefik')).toMatchObject({ ok: false, reason: expect.stringMatching(/did not print a Traefik version/) });
  });
});

describe('TraefikDriver.available', () => {
  it('a missing binary: a sentence that says what to do', async () => {
    expect(await TraefikDriver.available(new ProcessTraefikHost(path.join(dir, 'no-such-traefik')))).toEqual({
      ok: false,
      reason: `Traefik was not found at ${path.join(dir, 'no-such-traefik')}; fix the path, or put a \`traefik\` v3 binary on PATH.`,
    });
    // The default host's sentence, as the contract suite prints it when it skips.
    expect(TRAEFIK_MISSING).toBe('Traefik is not installed: put a `traefik` v3 binary on PATH or run the lab with --runtime docker where the traefik image can be pulled.');
  });

  it('runs the binary: v3 is ok, v2 is too old', async () => {
    expect(await TraefikDriver.available(new ProcessTraefikHost(fakeVersionBinary('3.1.2')))).toEqual({ ok: true, version: '3.1.2' });
    expect(await TraefikDriver.available(new ProcessTraefikHost(fakeVersionBinary('2.11.0')))).toMatchObject({ ok: false, reason: expect.stringMatching(/^Traefik 2\.11\.0 is too old/) });
  });
});

describe('TraefikDriver', () => {
  it('start() without Traefik rejects with the reason and creates nothing', async () => {
    const workDir = path.join(dir, 'work-missing');
    const driver = new TraefikDriver({ bus: new EventBus(), workDir, host: new ProcessTraefikHost(path.join(dir, 'no-such-traefik')) });
    await expect(driver.start(CONFIG)).rejects.toThrow(/^Traefik was not found at /);
    expect(existsSync(workDir)).toBe(false);
    expect(driver.port).toBeNull();
    expect(driver.statsUrl).toBeNull();
    await expect(driver.apply(CONFIG)).rejects.toThrow('Traefik is not running; start it first.');
    await driver.stop();
    expect(await driver.drained('web_dynamic-1-a1b2', 100)).toBe(true);
  });

  it('declares what Traefik v3 cannot do, so the UI greys it out', () => {
    const driver = new TraefikDriver({ bus: new EventBus(), workDir: path.join(dir, 'caps') });
    expect(driver.name).toBe('traefik');
    expect(driver.capabilities).toMatchObject({ roundRobin: true, weights: true, stickyCookie: true, activeHealthCheck: true, retry: true, leastConnections: false, headerHash: false, runtimeApi: false, connectionEvents: false });
  });

  it('render(): the dynamic file it writes, with the dashboard behind basic auth and the drain marker', () => {
    const driver = new TraefikDriver({ bus: new EventBus(), workDir: path.join(dir, 'render') });
    const d = parse(driver.render(CONFIG));
    expect(d.http.routers.web_dynamic.rule).toBe('PathPrefix(`/api/`)');
    expect(d.http.routers['lab-dashboard'].service).toBe('api@internal');
    expect(d.http.routers['lab-drain-marker'].service).toBe('noop@internal');
    const { user, password } = driver.dashboardCredentials;
    expect(user).toBe('lab');
    expect(password.length).toBeGreaterThanOrEqual(16);
    expect(d.http.middlewares['lab-dashboard-auth'].basicAuth.users).toEqual([expect.stringMatching(/^lab:\{SHA\}/)]);
    expect(driver.render(CONFIG)).not.toContain(password);
  });
});
