/**
 * Lesson 04 (rolling redeploy) in a real Chromium against the real lab: under a steady load, a
 * naive redeploy (kill, start) fails requests and the check says so; a redeploy with drain fails
 * none and the check passes.
 */
import type { Locator } from '@playwright/test';
import { test, expect } from './lab-fixture.ts';

const numberAttr = async (el: Locator, name: string) => Number(await el.getAttribute(name));

/** Starts the lesson's load (if none is running) and waits until its first second is measured. */
async function startLoad(load: Locator) {
  if ((await load.getAttribute('data-state')) === 'running') return;
  const before = await load.getAttribute('data-run-id');
  await load.getByTestId('load-start').click();
  await expect(load).toHaveAttribute('data-state', 'running');
  await expect(load).not.toHaveAttribute('data-run-id', before ?? '');
  await expect.poll(() => numberAttr(load.getByTestId('load-totals'), 'data-seconds'), { timeout: 20_000 }).toBeGreaterThan(0);
}

async function redeploy(panel: Locator, strategy: 'naive' | 'drain') {
  const shown = panel.getByTestId('redeploy-result');
  const previous = (await shown.count()) > 0 ? await shown.getAttribute('data-ms') : null;
  await panel.getByTestId(`redeploy-${strategy}`).click();
  const result = panel.getByTestId('redeploy-result');
  await expect(result).toHaveAttribute('data-strategy', strategy, { timeout: 90_000 });
  if (previous) await expect(result).not.toHaveAttribute('data-ms', previous);
  await expect(panel).toHaveAttribute('data-busy', 'no', { timeout: 90_000 });
  return result;
}

test('rolling redeploy: naive loses requests, drain loses none', async ({ page, lab }) => {
  await page.goto(lab.url);
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  await page.getByTestId('lesson-list').getByRole('link', { name: 'Rolling redeploy' }).click();
  await expect(page).toHaveURL(/\/lessons\/rolling-redeploy$/);
  await page.getByTestId('lesson-setup-apply').click();
  await expect(page.getByTestId('lesson-setup')).toBeHidden({ timeout: 60_000 });

  const list = page.locator('[data-testid=replica-list][data-service=spring_app]');
  await expect(list.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
  // The lesson starts with the health check on (every second): every replica is UP.
  await expect(page.getByTestId('health-settings')).toHaveAttribute('data-healthcheck', 'on');
  await expect(page.getByTestId('health-settings')).toHaveAttribute('data-interval', '1000');
  await expect(list.locator('[data-testid=replica-row][data-health=up]')).toHaveCount(3);

  const panel = page.getByTestId('redeploy-panel');
  const load = page.getByTestId('load-chart');
  const check = page.getByTestId('check-button');
  // Without traffic the panel suggests a load first.
  await expect(panel.getByTestId('redeploy-suggest')).toBeVisible();

  // Naive: kill, then start, one replica at a time, under load.
  await startLoad(load);
  await expect(panel.getByTestId('redeploy-suggest')).toBeHidden();
  const hostnames = await list.getByTestId('replica-row').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.hostname));
  const naive = await redeploy(panel, 'naive');
  expect(await numberAttr(naive, 'data-requests'), 'requests during the naive redeploy').toBeGreaterThanOrEqual(5);
  expect(await numberAttr(naive, 'data-failed'), 'failed requests during the naive redeploy').toBeGreaterThan(0);
  // Static discovery: the same replicas (names and addresses) came back.
  await expect(list.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
  expect(await list.getByTestId('replica-row').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.hostname))).toEqual(hostnames);
  // The load chart shows those failures too (its seconds are measured a little behind).
  await expect.poll(() => numberAttr(load.getByTestId('load-totals'), 'data-failed'), { timeout: 20_000 }).toBeGreaterThan(0);
  await check.getByTestId('check-run').click();
  await expect(check).toHaveAttribute('data-result', 'fail', { timeout: 30_000 });
  await expect(check.getByTestId('check-message')).toContainText('failed during the naive redeploy');
  await panel.screenshot({ path: 'test-results/redeploy-panel-naive.png' });

  // Drain: out of rotation, requests in flight finish, stop, start, back in. Nothing fails.
  await startLoad(load);
  const drain = await redeploy(panel, 'drain');
  expect(await numberAttr(drain, 'data-requests'), 'requests during the drain redeploy').toBeGreaterThanOrEqual(5);
  await expect(drain).toHaveAttribute('data-failed', '0');
  await check.getByTestId('check-run').click();
  await expect(check).toHaveAttribute('data-result', 'pass', { timeout: 30_000 });
  await expect(check.getByTestId('check-message')).toContainText('none failed, during the drain redeploy');
  await panel.screenshot({ path: 'test-results/redeploy-panel-drain.png' });

  await load.getByTestId('load-stop').click();
  await expect(load).toHaveAttribute('data-state', 'finished', { timeout: 30_000 });
  await expect(list.locator('[data-testid=replica-row][data-health=up]')).toHaveCount(3, { timeout: 20_000 });
  await load.screenshot({ path: 'test-results/redeploy-load.png' });
  await page.getByTestId('probe-timeline').screenshot({ path: 'test-results/redeploy-probes.png' });
  await page.screenshot({ path: 'test-results/redeploy-lesson.png', fullPage: true });
});
