/**
 * Exporting a run: the page's "Export run" menu and `npm run lab -- export` save the run; the HTML
 * report then opens in Chromium from disk (file://) with the network off and every request
 * refused, and shows the run: the replicas that answered, how many each, the configuration.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Browser } from '@playwright/test';
import { test, expect, type RunningLab } from './lab-fixture.ts';
import type { RunExport } from '../../server/protocol.ts';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function cli(lab: RunningLab, args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(REPO_ROOT, 'server/cli.ts'), '--url', lab.origin, '--token', lab.token, ...args],
      // INIT_CWD is where `npm run` was typed: a relative --out lands there.
      { cwd: REPO_ROOT, env: { ...process.env, LAB_URL: '', LAB_TOKEN: '', INIT_CWD: cwd }, timeout: 120_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Opens a saved report from disk with the network off; fails the test if it asks for anything but itself. */
async function openOffline(browser: Browser, file: string) {
  const context = await browser.newContext({ offline: true, viewport: { width: 1100, height: 900 } });
  const asked: string[] = [];
  const url = pathToFileURL(file).href;
  // Only the file itself may load; anything else it asked for is noted and refused.
  await context.route('**/*', (route) => {
    if (route.request().url() === url) return route.continue();
    asked.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  page.on('request', (r) => {
    if (r.url() !== url) asked.push(r.url());
  });
  await page.goto(url);
  return { page, context, asked };
}

test('the run exported from the page and the CLI opens offline from disk and shows the run', async ({ page, browser, lab }) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'balancer-lab-export-'));
  try {
    await page.goto(`${lab.origin}/lessons/round-robin?token=${encodeURIComponent(lab.token)}`);
    const list = page.locator('[data-testid=replica-list][data-service=web_dynamic]');
    await expect(list.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
    const status = await lab.status();
    const dynamic = status.services.find((s) => s.name === 'web_dynamic')!.instances.map((i) => i.hostname);

    // Nine requests through the proxy: round-robin gives each replica three.
    for (let i = 0; i < 9; i++) {
      const res = await fetch(`http://127.0.0.1:${status.proxy.port}/api/`, { headers: { connection: 'close' } });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    const bars = page.locator('[data-testid=request-timeline][data-service=web_dynamic] [data-testid=count-bar]');
    await expect.poll(() => bars.evaluateAll((b) => b.reduce((n, e) => n + Number((e as HTMLElement).dataset.count), 0))).toBe(9);

    // From the page: the menu's HTML report and JSON, as downloads.
    await page.getByTestId('export-menu').locator('summary').click();
    const [htmlDownload] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-html').click()]);
    expect(htmlDownload.suggestedFilename()).toMatch(/^balancer-lab-run-.*\.html$/);
    const fromPage = path.join(dir, 'from-page.html');
    await htmlDownload.saveAs(fromPage);
    const [jsonDownload] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-json').click()]);
    const jsonFile = path.join(dir, 'run.json');
    await jsonDownload.saveAs(jsonFile);
    const run = JSON.parse(readFileSync(jsonFile, 'utf8')) as RunExport;
    expect(Object.fromEntries(dynamic.map((h) => [h, run.counts.byReplica[h]]))).toEqual(Object.fromEntries(dynamic.map((h) => [h, 3])));
    await expect(page.getByTestId('export-message')).toContainText('Saved');
    // The menu closes with Escape (focus back on its summary) and with a click elsewhere.
    const menu = page.getByTestId('export-menu');
    await page.keyboard.press('Escape');
    await expect(menu).not.toHaveAttribute('open');
    await expect(menu.locator('summary')).toBeFocused();
    await page.keyboard.press('Enter');
    await expect(menu).toHaveAttribute('open');
    await page.getByRole('heading', { level: 1 }).click();
    await expect(menu).not.toHaveAttribute('open');

    // From the CLI: a relative --out is where the command was typed.
    const r = await cli(lab, ['export', '--out', 'from-cli.html'], dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Wrote the HTML report`);
    expect(r.stdout).toContain(path.join(dir, 'from-cli.html'));
    const j = await cli(lab, ['export', '--out', 'from-cli.json'], dir);
    expect(j.code, j.stderr).toBe(0);
    expect(j.stdout).toMatch(/Wrote \d+ request\(s\) \(\d+ listed\), 6 replica\(s\) and the embedded configuration to /);

    for (const file of [fromPage, path.join(dir, 'from-cli.html')]) {
      const { page: report, context, asked } = await openOffline(browser, file);
      await expect(report.getByTestId('report-title')).toBeVisible();
      // Each web_dynamic replica: its name and its three requests.
      for (const h of dynamic) {
        const row = report.locator(`[data-testid=report-count][data-replica="${h}"]`);
        await expect(row).toHaveAttribute('data-count', '3');
        await expect(row).toContainText(h);
        await expect(report.locator(`[data-testid=report-mark][data-replica="${h}"]`)).toHaveCount(3);
      }
      await expect(report.getByTestId('report-totals')).toHaveAttribute('data-failed', '0');
      await expect(report.getByTestId('report-driver')).toHaveText('embedded');
      await expect(report.getByTestId('report-config')).toContainText('/api/');
      // Its script runs offline too: the legend highlights one replica's marks.
      await report.locator(`.legend button[data-replica="${dynamic[0]}"]`).click();
      await expect(report.locator(`[data-testid=report-mark][data-replica="${dynamic[1]}"]`).first()).toHaveClass(/dim/);
      await expect(report.locator(`[data-testid=report-mark][data-replica="${dynamic[0]}"]`).first()).not.toHaveClass(/dim/);
      expect(asked, 'the report asked the network for nothing').toEqual([]);
      await context.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
