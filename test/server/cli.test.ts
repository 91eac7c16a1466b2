/**
 * The instructor CLI as a user runs it (a real child process) against a real running lab.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { REPO_ROOT } from '../../server/state-file.ts';
import type { LabStatus } from '../../lab/status.ts';

let lab: RunningLab;
let stateDir: string;

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(REPO_ROOT, 'server/cli.ts'), ...args],
      { cwd: REPO_ROOT, env: { ...process.env, LAB_STATE_DIR: stateDir, LAB_URL: '', LAB_TOKEN: '', ...env } },
      (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-cli-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir });
});

afterAll(async () => {
  await lab.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

describe('npm run lab --', () => {
  it('status finds the lab through the state file and prints replicas', async () => {
    const r = await cli(['status']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Proxy: embedded at http:\/\/localhost:\d+\//);
    expect(r.stdout).toMatch(/web_dynamic\s+\(3\/3 replicas\)/);
    expect(r.stdout.match(/web_static-\d-[0-9a-f]{4}\s+running/g)).toHaveLength(3);
  });

  it('status --json prints the LabStatus', async () => {
    const r = await cli(['status', '--json']);
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout) as LabStatus;
    expect(s.proxy.port).toBe(lab.proxyPort);
    expect(s.services.find((x) => x.name === 'web_dynamic')?.instances).toHaveLength(3);
  });

  it('scale and kill act on the running lab', async () => {
    const up = await cli(['scale', 'web_dynamic=4']);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/Scaled web_dynamic to 4 replica\(s\)/);
    const victim = lab.lab.status().services.find((s) => s.name === 'web_dynamic')!.instances[3];
    const slot = victim.hostname.replace(/-[0-9a-f]{4}$/, '');
    const k = await cli(['kill', slot]);
    expect(k.code, k.stderr).toBe(0);
    expect(k.stdout).toContain(`Killed ${victim.hostname}`);
    expect(lab.lab.status().services.find((s) => s.name === 'web_dynamic')!.instances.map((r) => r.hostname)).not.toContain(victim.hostname);
  });

  it('refuses bad input with a sentence and a non-zero exit', async () => {
    const tooMany = await cli(['scale', 'web_dynamic=11']);
    expect(tooMany.code).toBe(1);
    expect(tooMany.stderr).toMatch(/refused \(400\): replicas must be at most 10/);
    const unknown = await cli(['scale', 'nope=2']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/Unknown service "nope"/);
    const usage = await cli(['scale', 'web_dynamic']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/Expected <service>=<count>/);
    const noSuch = await cli(['kill', 'web_dynamic-9']);
    expect(noSuch.code).toBe(1);
    expect(noSuch.stderr).toMatch(/No replica named "web_dynamic-9"/);
  });

  it('set, weight, fault and proxy act on the lab; bad values are refused with a sentence', async () => {
    const set = await cli(['set', 'sticky=on', 'web_dynamic.algorithm=least-connections']);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain('Applied: sticky=on web_dynamic.algorithm=least-connections.');
    expect(lab.lab.status().topology.proxy.sticky).toBe(true);
    const status = await cli(['status']);
    expect(status.stdout).toMatch(/sticky on/);
    expect(status.stdout).toMatch(/\[algorithm=least-connections\]/);
    const bad = await cli(['set', 'sticky=maybe']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/refused \(400\): sticky: sticky must be on or off/);

    const host = lab.lab.status().services.find((s) => s.name === 'web_dynamic')!.instances[0].hostname;
    const w = await cli(['weight', `${host}=3`]);
    expect(w.code, w.stderr).toBe(0);
    expect(w.stdout).toContain(`Weight of ${host} is now 3.`);
    expect((await cli(['weight', `${host}=300`])).stderr).toMatch(/weight must be at most 256/);

    const f = await cli(['fault', host, 'slow=150']);
    expect(f.code, f.stderr).toBe(0);
    expect(f.stdout).toContain(`${host} is now slow 150 ms.`);
    expect((await cli(['fault', host, 'explode'])).code).toBe(2);
    expect((await cli(['fault', host, 'healthy'])).code).toBe(0);

    const engine = await cli(['proxy', 'nginx']);
    expect(engine.code).toBe(1);
    expect(engine.stderr).toMatch(/proxy must be one of: embedded, haproxy, traefik/);
    const console_ = await cli(['runtime', 'show', 'stat']);
    expect(console_.code).toBe(1);
    expect(console_.stderr).toMatch(/no Runtime API; switch to haproxy/);
  });

  it('reset restores the default topology', async () => {
    const r = await cli(['reset']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Reset in \d+ ms: web_static x3, web_dynamic x3\./);
  });

  it('says so and exits 3 when no lab is running', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'lab-none-'));
    const r = await cli(['status'], { LAB_STATE_DIR: empty });
    rmSync(empty, { recursive: true, force: true });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/No running lab found .*npm start/);
  });

  it('says so when the state file points at a lab that is gone', async () => {
    const r = await cli(['status', '--url', 'http://127.0.0.1:9', '--token', 't']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/No running lab answers at http:\/\/127\.0\.0\.1:9/);
  });
});
