/**
 * The instructor CLI's classroom commands as a user runs them (a real child process) against a
 * real running lab: lesson, lessons, reset <lesson> / --default, export; and their failures with
 * exit codes and sentences (unknown lesson, bad usage, the watch-only token, no lab running).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { io, type Socket } from 'socket.io-client';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { REPO_ROOT } from '../../server/state-file.ts';
import type { NavigateMessage, RunExport } from '../../server/protocol.ts';
import { loadLessons } from '../../server/lessons.ts';
import { isAlive as alive } from '../support/processes.ts';

const READONLY = 'cli-watch-only-token';
let lab: RunningLab;
let stateDir: string;
let outDir: string;

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(REPO_ROOT, 'server/cli.ts'), ...args],
      { cwd: REPO_ROOT, env: { ...process.env, LAB_STATE_DIR: stateDir, LAB_URL: '', LAB_TOKEN: '', INIT_CWD: outDir, ...env }, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const lessonList = () => loadLessons().map((l) => l.slug);

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-cli-class-'));
  outDir = mkdtempSync(path.join(tmpdir(), 'lab-cli-out-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir, readonlyToken: READONLY });
});

afterAll(async () => {
  await lab.stop();
  rmSync(stateDir, { recursive: true, force: true });
  rmSync(outDir, { recursive: true, force: true });
});

describe('npm run lab -- (classroom)', () => {
  it('lesson <slug> tells every connected page, and says how many', async () => {
    const socket: Socket = io(lab.apiUrl, { auth: { token: READONLY }, transports: ['websocket'], reconnection: false, forceNew: true });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('connect_error', reject);
      });
      const got = new Promise<NavigateMessage>((resolve) => socket.once('navigate', resolve));
      const r = await cli(['lesson', 'health-checks']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe('Moved 1 connected page(s) to lesson 03-health-checks “Health checks” (/lessons/health-checks).');
      expect((await got).path).toBe('/lessons/health-checks');
      const status = await cli(['status']);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toContain("Class: on lesson 03-health-checks; 1 page(s) open (0 with the instructor's token, 1 watch-only).");
    } finally {
      socket.disconnect();
    }
    const list = await cli(['lessons']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^\* 03-health-checks\s+Health checks$/m);
    expect(list.stdout).toMatch(/^ {2}01-round-robin\s+Round-robin$/m);
    expect(list.stdout).toContain('The class is on 03-health-checks.');
    // The topology did not change: lesson only moves the pages.
    expect(lab.lab.status().lesson).toBeNull();
  });

  it('lesson: an unknown slug or no slug is refused with a sentence', async () => {
    const unknown = await cli(['lesson', '42-quantum']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim()).toBe(`Error: The lab refused (404): Unknown lesson "42-quantum". Lessons: ${lessonList().join(', ')}.`);
    const none = await cli(['lesson']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/missing required argument 'slug'/);
  });

  it("reset restores the current lesson's start, kills every old replica; reset --default and reset <lesson>", async () => {
    const old = lab.lab.status().services.flatMap((s) => s.instances);
    const r = await cli(['reset']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Reset in \d+ ms to the start of lesson 03-health-checks: spring_app x2\.$/m);
    for (const o of old) expect(alive(o.pid!), o.hostname).toBe(false);
    expect(lab.lab.status().topology.discovery).toBe('static');

    const both = await cli(['reset', '01-round-robin', '--default']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('Give a lesson or --default, not both.');

    const d = await cli(['reset', '--default']);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toMatch(/^Reset in \d+ ms: web_static x3, web_dynamic x3\.$/m);
    const l = await cli(['reset', 'idle-timeouts', '--url', lab.apiUrl, '--token', lab.token]);
    expect(l.code, l.stderr).toBe(0);
    expect(l.stdout).toMatch(/to the start of lesson 05-idle-timeouts: web_static x1, web_dynamic x3\./);
    const bad = await cli(['reset', 'nope']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('Unknown lesson "nope". Lessons: ');
  });

  it('lesson --reset moves the pages and restores that lesson', async () => {
    const r = await cli(['lesson', '01-round-robin', '--reset']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Moved 0 connected page\(s\) to lesson 01-round-robin “Round-robin” \(\/lessons\/round-robin\)\.\nReset to its start in \d+ ms: web_static x3, web_dynamic x3\.$/m);
    expect(lab.lab.status().lesson).toBe('01-round-robin');
  });

  it('export writes the run as JSON or HTML, relative to where it was typed, or to stdout', async () => {
    const proxy = `http://127.0.0.1:${lab.proxyPort}`;
    for (let i = 0; i < 6; i++) await (await fetch(`${proxy}/api/`)).arrayBuffer();
    // The proxy reports each request once it has ended: wait for the six in the run.
    const deadline = Date.now() + 20_000;
    while (lab.lab.status().requestsTotal < 6 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));

    const j = await cli(['export', '--out', 'run.json']);
    expect(j.code, j.stderr).toBe(0);
    const file = path.join(outDir, 'run.json');
    expect(j.stdout.trim()).toBe(`Wrote 6 request(s) (6 listed), 6 replica(s) and the embedded configuration to ${file}.`);
    const run = JSON.parse(readFileSync(file, 'utf8')) as RunExport;
    expect(run.lesson).toBe('01-round-robin');
    expect(Object.values(run.counts.byReplica)).toEqual([2, 2, 2]);

    const h = await cli(['export', '--html']);
    expect(h.code, h.stderr).toBe(0);
    const m = /to (\/\S+\.html)\.$/m.exec(h.stdout);
    expect(m, h.stdout).not.toBeNull();
    expect(path.dirname(m![1])).toBe(outDir);
    const html = readFileSync(m![1], 'utf8');
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).toContain('Round-robin');

    const out = await cli(['export', '--out', '-']);
    expect(out.code, out.stderr).toBe(0);
    expect((JSON.parse(out.stdout) as RunExport).counts.total).toBe(6);

    const nowhere = await cli(['export', '--out', path.join(outDir, 'no-such-dir', 'x.json')]);
    expect(nowhere.code).toBe(1);
    expect(nowhere.stderr).toMatch(/^Error: Could not write .*x\.json: ENOENT\.$/m);
  });

  it('with the watch-only token: status and export work, commands exit 4 with a sentence and change nothing', async () => {
    const before = lab.lab.status();
    const watch = { LAB_TOKEN: READONLY };
    expect((await cli(['status'], watch)).code).toBe(0);
    const e = await cli(['export', '--out', 'watch.json'], watch);
    expect(e.code, e.stderr).toBe(0);
    expect(existsSync(path.join(outDir, 'watch.json'))).toBe(true);
    for (const args of [['reset'], ['lesson', '02-sticky-sessions'], ['scale', 'web_dynamic=5'], ['kill', 'web_dynamic-1'], ['set', 'sticky=on'], ['proxy', 'haproxy']]) {
      const r = await cli(args, watch);
      expect(r.code, args.join(' ')).toBe(4);
      expect(r.stderr, args.join(' ')).toMatch(/^Error: This is a watch-only link: it shows the lab live but cannot change it\..*pass the instructor's with --token/m);
    }
    const after = lab.lab.status();
    expect(after.services.map((s) => s.instances.map((r) => r.hostname))).toEqual(before.services.map((s) => s.instances.map((r) => r.hostname)));
    expect(after.topology).toEqual(before.topology);
  });

  it('says so and exits 3 when no lab is running', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'lab-none-'));
    try {
      for (const args of [['lesson', '01-round-robin'], ['export'], ['lessons'], ['reset']]) {
        const r = await cli(args, { LAB_STATE_DIR: empty });
        expect(r.code, args.join(' ')).toBe(3);
        expect(r.stderr, args.join(' ')).toMatch(/No running lab found .*npm start/);
      }
      const gone = await cli(['lesson', '01-round-robin', '--url', 'http://127.0.0.1:9', '--token', 't']);
      expect(gone.code).toBe(3);
      expect(gone.stderr).toMatch(/No running lab answers at http:\/\/127\.0\.0\.1:9/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
