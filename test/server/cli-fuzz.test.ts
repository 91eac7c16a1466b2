/**
 * Property-based fuzzing (fast-check) of the instructor CLI (`server/cli.ts` as a child process,
 * as `npm run lab -- ...` runs it) against a real lab (process runtime, embedded proxy, real
 * replicas): generated argument lists — unknown commands, wrong types, huge and negative numbers,
 * unicode, path-like names, shell metacharacters, unknown options — each must end with a non-zero
 * exit code and one sentence on stderr (never a stack trace), or 0 with output for the few valid
 * read-only commands mixed in. 150 runs (each spawn costs about 0.4 s). Afterwards the lab still
 * serves with the replicas it had, no CLI process is left, and none of the lab's after stop.
 *
 * The generators never make a valid command that changes the lab (no valid scale, reset, load),
 * and never give `export --out` a path (a path-like name could overwrite a file): only `-`.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Topology } from '../../lab/topology.ts';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { REPO_ROOT } from '../../server/state-file.ts';
import { isGone } from '../support/processes.ts';

let lab: RunningLab;
let stateDir: string;
let cwd: string;
let pids: number[] = [];
const cliPids: number[] = [];

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-cli-fuzz-'));
  cwd = mkdtempSync(path.join(tmpdir(), 'lab-cli-fuzz-cwd-'));
  lab = await startLab({
    host: '127.0.0.1',
    port: 0,
    proxyPort: 0,
    stateDir,
    topology: Topology.parse({ services: { web_dynamic: { replicas: 2 } }, routes: [{ service: 'web_dynamic', pathPrefix: '/' }] }),
  });
  pids = lab.lab.status().services.flatMap((s) => s.instances).map((r) => r.pid!);
}, 120_000);

afterAll(async () => {
  await lab?.stop();
  for (const pid of pids) expect(isGone(pid), `replica pid ${pid}`).toBe(true);
  rmSync(stateDir, { recursive: true, force: true });
  rmSync(cwd, { recursive: true, force: true });
});

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'server/cli.ts'), ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, LAB_URL: lab.apiUrl, LAB_TOKEN: lab.token, LAB_STATE_DIR: stateDir, INIT_CWD: cwd, ...env },
    });
    if (child.pid) cliPids.push(child.pid);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

// ---------------------------------------------------------------- generators

/** Text no replica, service, lesson or engine is named: unicode, path-like, shell, huge. */
const badWord = fc.oneof(
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }).map((s) => `ü${s}`),
  fc.constantFrom('../../etc/passwd', '/etc/shadow', '..', '%2e%2e%2f', 'C:\\Windows', '$(id)', '`id`', '; rm -rf /', '| cat /etc/passwd', '&& reboot', "'", '"', '\\', '\u202eevil', 'nul\u0001byte', '😀', 'a'.repeat(5000)),
  fc.stringMatching(/^[A-Za-z0-9_.-]{1,30}$/).map((s) => `no-such-${s}`),
);

/** Not a count in 0..max: negative, too big, fractional, exponent, hex, words. */
const badNumberOver = (max: number) => fc.oneof(
  fc.integer({ min: max + 1, max: Number.MAX_SAFE_INTEGER }).map(String),
  fc.integer({ min: Number.MIN_SAFE_INTEGER, max: -1 }).map(String),
  fc.constantFrom('1e308', '1e999', 'NaN', 'Infinity', '-0.5', '2.5', '0x10', '99999999999999999999999', '', ' ', 'three', '٣', '３'),
);
/** Not a replica count (0..10). */
const badNumber = badNumberOver(10);

const anyArg = fc.oneof(badWord, badNumber, fc.constantFrom('--json', '--html', '--default', '--drain', '--reset', '--nope', '-x', '--', '--url', '--token'));

/** [args, valid]: a command line and whether it is a valid read-only one (exit 0). */
const commandLine: fc.Arbitrary<[string[], boolean]> = fc.oneof(
  // Valid, read-only.
  { weight: 1, arbitrary: fc.constantFrom<[string[], boolean]>([['status'], true], [['status', '--json'], true], [['lessons'], true], [['export', '--out', '-'], true], [['export', '--html', '--out', '-'], true]) },
  // Unknown commands and options.
  { weight: 2, arbitrary: fc.tuple(badWord, fc.array(anyArg, { maxLength: 3 })).map(([c, rest]): [string[], boolean] => [[c, ...rest], false]) },
  { weight: 1, arbitrary: fc.constantFrom('status', 'lessons', 'reset', 'kill').chain((c) => fc.constantFrom('--nope', '--url=http://127.0.0.1:9', '-z', '--json=maybe').map((o): [string[], boolean] => [[c, o], false])) },
  // scale: bad service names, bad counts, bad shapes.
  { weight: 2, arbitrary: fc.oneof(
    fc.tuple(badWord, fc.integer({ min: 0, max: 10 })).map(([s, n]) => `${s}=${n}`),
    badNumber.map((n) => `web_dynamic=${n}`),
    fc.constantFrom('web_dynamic', '=3', 'web_dynamic=', 'web_dynamic==3', 'web_dynamic=3=4', 'web_dynamic = 3'),
  ).map((a): [string[], boolean] => [['scale', a], false]) },
  // Commands on a replica name that does not exist.
  { weight: 3, arbitrary: fc.tuple(fc.constantFrom('kill', 'restart'), badWord).map(([c, n]): [string[], boolean] => [[c, n], false]) },
  { weight: 2, arbitrary: fc.tuple(badWord, fc.oneof(fc.constantFrom('crash', 'hang', 'errors', 'unhealthy', 'healthy', 'slow=10'), badWord, badNumber.map((n) => `slow=${n}`))).map(([n, m]): [string[], boolean] => [['fault', n, m], false]) },
  { weight: 1, arbitrary: fc.tuple(badWord, fc.oneof(fc.integer({ min: 0, max: 256 }).map(String), badNumberOver(256))).map(([n, w]): [string[], boolean] => [['weight', `${n}=${w}`], false]) },
  { weight: 1, arbitrary: badNumberOver(256).map((w): [string[], boolean] => [['weight', `web_dynamic-1=${w}`], false]) },
  // Lessons, engines, settings, routes of the console, redeploys that do not exist.
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom('reset', 'lesson'), badWord).map(([c, l]): [string[], boolean] => [[c, l], false]) },
  { weight: 1, arbitrary: badWord.map((e): [string[], boolean] => [['proxy', e], false]) },
  { weight: 2, arbitrary: fc.array(fc.oneof(badWord, badWord.map((w) => `${w}=on`), fc.constantFrom('sticky=maybe', 'algorithm=random', 'web_dynamic.weight=-1', '=', 'sticky', 'healthcheck.interval=1')), { minLength: 1, maxLength: 4 }).map((s): [string[], boolean] => [['set', ...s], false]) },
  { weight: 1, arbitrary: fc.array(fc.oneof(badWord, fc.constantFrom('show', 'stat', 'info', 'shutdown', ';')), { minLength: 1, maxLength: 4 }).map((w): [string[], boolean] => [['runtime', ...w], false]) },
  { weight: 1, arbitrary: fc.tuple(badWord, fc.boolean()).map(([s, d]): [string[], boolean] => [['redeploy', s, ...(d ? ['--drain'] : [])], false]) },
  { weight: 1, arbitrary: fc.oneof(
    badNumberOver(200).map((n) => ['--rate', n]),
    badNumberOver(120).map((n) => ['--seconds', n]),
    // (A path such as /etc/shadow is a valid path THROUGH THE PROXY: only ones the lab refuses.)
    badWord.filter((p) => !/^\/[A-Za-z0-9._~\-/]{0,199}$/.test(p)).map((p) => ['--path', p]),
  ).map((o): [string[], boolean] => [['load', ...o], false]) },
  // Missing arguments, and a lesson together with --default.
  { weight: 1, arbitrary: fc.constantFrom<[string[], boolean]>([['scale'], false], [['kill'], false], [['fault', 'x'], false], [['weight'], false], [['proxy'], false], [['set'], false], [['runtime'], false], [['reset', '01-round-robin', '--default'], false], [[], false]) },
  // A wrong lab: a token that is not the lab's, a URL that is not a URL or where no lab runs.
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('--token', '--url'), fc.oneof(badWord, fc.constantFrom('http://127.0.0.1:9', 'ftp://x', 'http://[::1', 'javascript:alert(1)'))).map(([o, v]): [string[], boolean] => [['status', `${o}=${v}`], false]) },
);

/** One sentence: one line (commander may add a "(Did you mean ...?)" line), no stack trace. */
function checkStderr(stderr: string): string | null {
  const text = stderr.replace(/^npm warn .*\n/gm, '').trim();
  if (text === '') return 'nothing on stderr';
  if (/\n\s+at |node:internal|^\s*at .*:\d+:\d+\)?$|TypeError|ReferenceError|SyntaxError: (?!Unexpected token)|Unhandled|\[object /m.test(text)) return 'a stack trace or an internal error';
  const lines = text.split('\n');
  if (lines.length > 2 || (lines.length === 2 && !/^\(Did you mean .*\?\)$/.test(lines[1]))) return `${lines.length} lines`;
  if (!/^(Error|error): \S/.test(lines[0])) return 'not an "Error: ..." sentence';
  if (lines[0].length < 15) return 'too short to say anything';
  return null;
}

describe('CLI fuzz: 150 generated command lines', () => {
  it('each exits non-zero with one sentence on stderr (or 0 with output when valid), never a crash or a stack trace', async () => {
    const seen = { valid: 0, refused: 0, codes: new Map<number, number>() };
    await fc.assert(
      fc.asyncProperty(commandLine, async ([args, valid]) => {
        const r = await cli(args);
        const show = `${JSON.stringify(args).slice(0, 200)} -> code ${r.code} signal ${r.signal}\nstdout: ${r.stdout.slice(0, 300)}\nstderr: ${r.stderr.slice(0, 600)}`;
        if (r.signal !== null || r.code === null) throw new Error(`the CLI was killed: ${show}`);
        seen.codes.set(r.code, (seen.codes.get(r.code) ?? 0) + 1);
        if (valid) {
          if (r.code !== 0 || r.stdout.trim() === '') throw new Error(`a valid command failed: ${show}`);
          seen.valid++;
          return;
        }
        if (r.code === 0) throw new Error(`an invalid command succeeded: ${show}`);
        if (args.length === 0) {
          // No command at all: commander prints the usage (the list of commands), exit 2.
          if (r.code !== 2 || !r.stderr.startsWith('Usage: npm run lab --')) throw new Error(`no command: ${show}`);
          seen.refused++;
          return;
        }
        const problem = checkStderr(r.stderr);
        if (problem) throw new Error(`${problem}: ${show}`);
        seen.refused++;
      }),
      { numRuns: 150 },
    );
    expect(seen.valid + seen.refused).toBe(150);
    expect(seen.refused).toBeGreaterThan(100);
    // The codes the README documents: 1 refused by the lab, 2 bad usage, 3 no lab (4 watch-only is not generated).
    for (const code of seen.codes.keys()) expect([0, 1, 2, 3]).toContain(code);
  }, 600_000);

  it('afterwards the lab still serves with its replicas, no CLI process is left, and no file was written', async () => {
    const status = await cli(['status', '--json']);
    expect(status.code).toBe(0);
    const s = JSON.parse(status.stdout) as { services: Array<{ instances: Array<{ pid: number; state: string }> }> };
    expect(s.services.flatMap((x) => x.instances.map((r) => r.pid)).sort()).toEqual([...pids].sort());
    expect(s.services.flatMap((x) => x.instances).every((r) => r.state === 'running')).toBe(true);
    expect((await fetch(`http://127.0.0.1:${lab.proxyPort}/`)).status).toBe(200);
    for (const pid of cliPids) expect(isGone(pid), `CLI pid ${pid}`).toBe(true);
    expect(readdirSync(cwd)).toEqual([]);
  });
});
