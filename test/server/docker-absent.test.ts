/**
 * `npm start -- --runtime docker` where no Docker engine answers (DOCKER_HOST names a missing
 * socket): one sentence that says so and offers process mode, exit code 1, no stack trace, nothing
 * started. The real server entry point runs as a child process, as a user would start it.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../server/state-file.ts';

const stateDir = mkdtempSync(path.join(tmpdir(), 'lab-nodocker-'));
afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

function start(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(REPO_ROOT, 'server/main.ts'), '--port', '0', '--proxy-port', '0', ...args],
      { cwd: REPO_ROOT, env: { ...process.env, LAB_STATE_DIR: stateDir, LAB_TOKEN: '', LAB_RUNTIME: '', ...env }, timeout: 120_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('Docker mode without Docker', () => {
  const missing = `unix://${path.join(stateDir, 'no-docker.sock')}`;

  for (const [how, args, env] of [
    ['--runtime docker', ['--runtime', 'docker'], { DOCKER_HOST: missing }],
    ['LAB_RUNTIME=docker', [], { DOCKER_HOST: missing, LAB_RUNTIME: 'docker' }],
  ] as const) {
    it(`${how}: one sentence naming the socket and offering process mode, exit 1, nothing started`, async () => {
      const r = await start([...args], { ...env });
      expect(r.code).toBe(1);
      const errLines = r.stderr.split('\n').filter((l) => l.trim() !== '' && !l.includes('ExperimentalWarning') && !l.includes('--trace-warnings'));
      expect(errLines).toHaveLength(1);
      expect(errLines[0]).toMatch(/^Error: Docker is not reachable at .*no-docker\.sock \(.+\): start Docker, or run the lab in process mode with `npm start`/);
      expect(r.stderr).not.toMatch(/^\s+at /m);
      expect(r.stdout).not.toContain('Lab ready');
      expect(r.stdout).not.toContain('Lab server up');
      // No state file: no lab is left for the CLI to find.
      expect(readdirSync(stateDir).filter((f) => f.endsWith('.json'))).toEqual([]);
    });
  }

  it('an unknown runtime is refused by the flag parser with the choices', async () => {
    const r = await start(['--runtime', 'podman'], {});
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--runtime.*podman.*process, docker/s);
  });

  it('an unknown LAB_RUNTIME is refused with exit 2 and a sentence', async () => {
    const r = await start([], { LAB_RUNTIME: 'podman' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('LAB_RUNTIME must be one of process, docker, not "podman".');
  });
});
