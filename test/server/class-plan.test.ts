/**
 * The README's class plan, run as written: every `npm run lab -- ...` line of its code block,
 * in order, as a child process against a real running lab, must exit 0 and say what it did.
 * (`proxy haproxy` is left out, with the reason, where HAProxy is not installed.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { REPO_ROOT } from '../../server/state-file.ts';
import type { ProxyInfo } from '../../server/protocol.ts';

let lab: RunningLab;
let stateDir: string;
let outDir: string;

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(REPO_ROOT, 'server/cli.ts'), ...args],
      { cwd: REPO_ROOT, env: { ...process.env, LAB_STATE_DIR: stateDir, LAB_URL: '', LAB_TOKEN: '', INIT_CWD: outDir }, timeout: 120_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The CLI lines of the README's class plan, as argument lists (comments dropped). */
function planLines(): string[][] {
  const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const m = /### A class plan[^\n]*\n+```sh\n([\s\S]*?)\n```/.exec(readme);
  if (!m) throw new Error('README.md has no "### A class plan" section with a sh code block.');
  return m[1]
    .split('\n')
    .map((line) => line.replace(/\s+#.*$/, '').trim())
    .filter((line) => line.startsWith('npm run lab -- '))
    .map((line) => line.slice('npm run lab -- '.length).split(/\s+/));
}

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-plan-'));
  outDir = mkdtempSync(path.join(tmpdir(), 'lab-plan-out-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir });
});

afterAll(async () => {
  await lab.stop();
  rmSync(stateDir, { recursive: true, force: true });
  rmSync(outDir, { recursive: true, force: true });
});

describe("the README's class plan", () => {
  it('runs line by line against a real lab', async () => {
    const lines = planLines();
    expect(lines.length).toBeGreaterThanOrEqual(8);
    const res = await fetch(`${lab.apiUrl}/api/proxies`, { headers: { authorization: `Bearer ${lab.token}` } });
    const haproxy = ((await res.json()) as ProxyInfo[]).find((p) => p.name === 'haproxy');
    for (const args of lines) {
      if (args[0] === 'proxy' && args[1] === 'haproxy' && !haproxy?.available) {
        console.warn(`class plan: "proxy haproxy" left out: ${haproxy?.reason ?? 'haproxy unknown'}`);
        continue;
      }
      const r = await cli(args);
      expect(r.code, `npm run lab -- ${args.join(' ')}\n${r.stderr}`).toBe(0);
      expect(r.stdout.trim().length, args.join(' ')).toBeGreaterThan(0);
    }
    // It ends where it says: lesson 03's start again, and the report it exported is there.
    const status = lab.lab.status();
    expect(status.lesson).toBe('03-health-checks');
    expect(status.services.find((s) => s.name === 'spring_app')!.instances.filter((r) => r.state === 'running')).toHaveLength(2);
    expect(existsSync(path.join(outDir, 'round-robin.html'))).toBe(true);
  }, 300_000);
});
