/**
 * The classroom in a real Chromium against the real lab (`server/main.ts`): two pages on one lab,
 * the instructor's and a student's watch-only one, driven by the instructor CLI as a teacher would
 * (`reset`, `lesson <slug>`). The CLI runs as a real child process.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Locator, Page } from '@playwright/test';
import { test, expect, type RunningLab } from './lab-fixture.ts';
import { isAlive as alive } from '../support/processes.ts';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** `npm run lab -- <args>` against this lab (its URL and a token), as a child process. */
function cli(lab: RunningLab, args: string[], token = lab.token): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(REPO_ROOT, 'server/cli.ts'), '--url', lab.origin, '--token', token, ...args],
      { cwd: REPO_ROOT, env: { ...process.env, LAB_URL: '', LAB_TOKEN: '' }, timeout: 120_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The watch-only token the lab printed at start. */
function watchToken(lab: RunningLab): string {
  const m = /^Watch-only URL: (\S+)/m.exec(lab.output());
  if (!m) throw new Error(`The lab printed no "Watch-only URL:" line.\n${lab.output()}`);
  return new URL(m[1]).searchParams.get('token')!;
}

/** A second browser page (its own context: its own sessionStorage and token). */
async function secondPage(browser: Browser): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  return context.newPage();
}

const dynamicList = (page: Page): Locator => page.locator('[data-testid=replica-list][data-service=web_dynamic]');
const hostnames = (page: Page): Promise<string[]> =>
  dynamicList(page)
    .getByTestId('replica-row')
    .evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.hostname!));
const countSum = (page: Page): Promise<number> =>
  page
    .locator('[data-testid=request-timeline][data-service=web_dynamic] [data-testid=count-bar]')
    .evaluateAll((bars) => bars.reduce((n, b) => n + Number((b as HTMLElement).dataset.count), 0));

async function openLesson(page: Page, lab: RunningLab, token: string): Promise<void> {
  await page.goto(`${lab.origin}/lessons/round-robin?token=${encodeURIComponent(token)}`);
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  await expect(dynamicList(page).locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
}

/** `n` GETs of /api/ through the proxy, one connection each, as any client would. */
async function sendRequests(lab: RunningLab, n: number): Promise<void> {
  const port = (await lab.status()).proxy.port;
  for (let i = 0; i < n; i++) {
    const res = await fetch(`http://127.0.0.1:${port}/api/`, { headers: { connection: 'close' } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  }
}

test('reset from the CLI: both pages show the new replicas, the old run is gone, no old process is left', async ({ page, browser, lab }) => {
  const student = await secondPage(browser);
  await openLesson(page, lab, lab.token);
  await openLesson(student, lab, watchToken(lab));
  // One lab, one state: the instructor scales from the page, the student's page follows.
  await dynamicList(page).getByTestId('scale-input').fill('4');
  await dynamicList(page).getByTestId('scale-apply').click();
  await expect(dynamicList(student).locator('[data-testid=replica-row][data-state=running]')).toHaveCount(4);
  await sendRequests(lab, 8);
  await expect.poll(() => countSum(page)).toBe(8);
  await expect.poll(() => countSum(student)).toBe(8);
  const before = await lab.status();
  const oldReplicas = before.services.flatMap((s) => s.instances);
  const oldNames = (await hostnames(page)).sort();
  expect(oldNames).toHaveLength(4);
  expect(await hostnames(student)).toEqual(await hostnames(page));

  const r = await cli(lab, ['reset']);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/Reset in \d+ ms: web_static x3, web_dynamic x3\./);

  // Nothing of the old replicas is left running, and the lab runs the default topology again.
  for (const old of oldReplicas) expect(alive(old.pid!), `${old.hostname} (pid ${old.pid}) after reset`).toBe(false);
  const after = await lab.status();
  expect(after.services.map((s) => `${s.name} x${s.instances.filter((i) => i.state === 'running').length}`)).toEqual(['web_static x3', 'web_dynamic x3']);
  const newNames = after.services.find((s) => s.name === 'web_dynamic')!.instances.map((i) => i.hostname).sort();
  expect(newNames.filter((h) => oldNames.includes(h))).toEqual([]);

  // Both pages show it: the new replicas, and no count of the old run.
  for (const p of [page, student]) {
    await expect.poll(async () => (await hostnames(p)).sort()).toEqual(newNames);
    await expect.poll(() => countSum(p)).toBe(0);
    for (const old of oldNames) await expect(p.locator(`[data-testid=count-bar][data-hostname="${old}"]`)).toHaveCount(0);
  }
  await student.context().close();
});

test('the watch-only page: a banner, commands disabled with the reason, refused by the server, still live', async ({ page, lab }) => {
  const watch = watchToken(lab);
  await openLesson(page, lab, watch);
  await expect(page.getByTestId('watch-only-banner')).toContainText('Watch-only');

  // Command controls are there, disabled, and say why; view controls and the steps still work.
  const reason = /Watch-only link: this page shows the instructor’s lab live but cannot change it/;
  for (const control of [
    page.getByTestId('reset-lab'),
    dynamicList(page).getByTestId('scale-apply'),
    dynamicList(page).getByRole('button', { name: /^Kill/ }).first(),
    page.getByTestId('proxy-option').filter({ hasText: 'HAProxy' }),
  ]) {
    await expect(control).toBeVisible();
    await expect(control).toBeDisabled();
    await expect(control).toHaveAttribute('title', reason);
  }
  const pause = page.getByTestId('log-pause').first();
  if ((await pause.count()) > 0) await expect(pause).toBeEnabled();
  await expect(page.getByTestId('export-menu')).toBeVisible();

  // A command sent anyway (the page's own token) is refused by the server with a sentence.
  const refused = await page.evaluate(async () => {
    const res = await fetch('/api/services/web_dynamic/scale', {
      method: 'POST',
      headers: { authorization: `Bearer ${sessionStorage.getItem('balancer-lab.token')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ replicas: 5 }),
    });
    return { status: res.status, body: (await res.json()) as { error: string } };
  });
  expect(refused.status).toBe(403);
  expect(refused.body.error).toMatch(/watch-only link/);
  expect((await lab.status()).services.find((s) => s.name === 'web_dynamic')!.instances).toHaveLength(3);

  // It still sees everything live.
  await sendRequests(lab, 3);
  await expect.poll(() => countSum(page)).toBe(3);

  // The CLI with the watch-only token may look, not change: exit 4 and a sentence.
  const status = await cli(lab, ['status'], watch);
  expect(status.code, status.stderr).toBe(0);
  expect(status.stdout).toMatch(/web_dynamic\s+\(3\/3 replicas\)/);
  const scale = await cli(lab, ['scale', 'web_dynamic=5'], watch);
  expect(scale.code).toBe(4);
  expect(scale.stderr).toMatch(/^Error: This is a watch-only link: .*This CLI was given the watch-only token/m);
  expect((await lab.status()).services.find((s) => s.name === 'web_dynamic')!.instances).toHaveLength(3);
});

test('lesson <slug> moves every connected page; a student who opens the link later lands there too', async ({ page, browser, lab }) => {
  const student = await secondPage(browser);
  await openLesson(page, lab, lab.token);
  await openLesson(student, lab, watchToken(lab));

  const unknown = await cli(lab, ['lesson', 'no-such-lesson']);
  expect(unknown.code).toBe(1);
  expect(unknown.stderr).toMatch(/Unknown lesson "no-such-lesson"\. Lessons: 01-round-robin, 02-sticky-sessions, .*07-routing\./);
  await expect(page).toHaveURL(/\/lessons\/round-robin$/);

  const r = await cli(lab, ['lesson', '02-sticky-sessions']);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/Moved [2-9] connected page\(s\) to lesson 02-sticky-sessions “Sticky sessions” \(\/lessons\/sticky-sessions\)\./);
  for (const p of [page, student]) {
    await expect(p).toHaveURL(/\/lessons\/sticky-sessions$/);
    await expect(p.getByRole('heading', { level: 1, name: 'Sticky sessions' })).toBeVisible();
    await expect(p.getByTestId('class-navigated')).toContainText('The instructor moved the class to Sticky sessions');
    await expect(p.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  }
  // Back works as after a link click.
  await page.goBack();
  await expect(page).toHaveURL(/\/lessons\/round-robin$/);

  const late = await secondPage(browser);
  await late.goto(`${lab.origin}/?token=${encodeURIComponent(watchToken(lab))}`);
  await expect(late).toHaveURL(/\/lessons\/sticky-sessions$/);
  await expect(late.getByTestId('class-navigated')).toContainText('The class is on Sticky sessions');

  // `reset` now restores that lesson's start (the class's current lesson).
  const reset = await cli(lab, ['reset']);
  expect(reset.code, reset.stderr).toBe(0);
  expect(reset.stdout).toMatch(/Reset in \d+ ms to the start of lesson 02-sticky-sessions: web_static x3, web_dynamic x4, session_php x3\./);
  await student.context().close();
  await late.context().close();
});
