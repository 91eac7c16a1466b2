/**
 * Round-robin lesson, Step 6 (weights and least-connections) in a real Chromium, on the embedded
 * proxy and then on HAProxy through the engine selector: weights 3:1:1 give shares of about
 * 3/5, 1/5, 1/5 over 50 requests; least-connections with one request at a time takes turns.
 */
import type { Locator } from '@playwright/test';
import { haproxyMissing } from './helpers.ts';
import { test, expect } from './lab-fixture.ts';

/** Sends the burst with the widget and returns the count per replica. */
async function burst(widget: Locator): Promise<Record<string, number>> {
  const summary = widget.getByTestId('burst-summary');
  const before = (await summary.count()) ? Number(await summary.getAttribute('data-run')) : 0;
  await widget.getByTestId('burst-run').click();
  await expect(summary).toHaveAttribute('data-run', String(before + 1));
  await expect(widget.getByTestId('burst-chip')).toHaveCount(50);
  const rows = await widget.getByTestId('burst-share').evaluateAll((els) =>
    els.map((e) => [(e as HTMLElement).dataset.hostname!, Number((e as HTMLElement).dataset.count)] as const),
  );
  return Object.fromEntries(rows);
}

async function check(engine: string, heavy: string, others: string[], widget: Locator, algorithm: Locator) {
  // Weighted round-robin 3:1:1.
  await algorithm.locator('[data-testid=algorithm-option][data-algorithm=round-robin]').click();
  await expect(algorithm).toHaveAttribute('data-algorithm', 'round-robin');
  const wrr = await burst(widget);
  expect(wrr[heavy], `${engine} weighted: ${JSON.stringify(wrr)}`).toBeGreaterThanOrEqual(26);
  expect(wrr[heavy]).toBeLessThanOrEqual(34);
  for (const h of others) {
    expect(wrr[h], `${engine} weighted: ${JSON.stringify(wrr)}`).toBeGreaterThanOrEqual(6);
    expect(wrr[h]).toBeLessThanOrEqual(14);
  }
  // Least-connections, one request at a time: turns, whatever the weights.
  await algorithm.locator('[data-testid=algorithm-option][data-algorithm=least-connections]').click();
  await expect(algorithm).toHaveAttribute('data-algorithm', 'least-connections');
  await expect(algorithm.getByTestId('algorithm-message')).toContainText('least connections');
  const lc = await burst(widget);
  for (const h of [heavy, ...others]) {
    expect(lc[h], `${engine} least-connections: ${JSON.stringify(lc)}`).toBeGreaterThanOrEqual(14);
    expect(lc[h]).toBeLessThanOrEqual(20);
  }
}

test('round-robin lesson, weights and least-connections, on the embedded proxy and on HAProxy', async ({ page, lab }) => {
  test.setTimeout(300_000);
  await page.goto(`${lab.origin}/lessons/round-robin?token=${lab.token}`);
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  // The lab runs this lesson's topology already: no setup banner.
  await expect(page.getByTestId('lesson-setup')).toHaveCount(0);

  const dynamic = page.locator('[data-testid=replica-list][data-service=web_dynamic]');
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
  const hosts = await dynamic.getByTestId('replica-row').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.hostname!));
  const [heavy, ...others] = hosts;

  // Weight 3 on the first replica with the list's control.
  const firstRow = dynamic.locator(`[data-testid=replica-row][data-hostname="${heavy}"]`);
  await firstRow.getByTestId('weight-input').fill('300');
  await firstRow.getByTestId('weight-apply').click();
  await expect(dynamic.getByTestId('replica-message')).toContainText('from 0 to 256');
  await firstRow.getByTestId('weight-input').fill('3');
  await firstRow.getByTestId('weight-apply').click();
  await expect(dynamic.getByTestId('replica-message')).toContainText(`${heavy} now has weight 3`);
  await expect(firstRow.getByTestId('weight-input')).toHaveAttribute('data-weight', '3');

  const widget = page.locator('[data-testid=api-burst][data-path="/api/"]');
  const algorithm = page.locator('[data-testid=algorithm-select][data-service=web_dynamic]');
  await check('embedded', heavy, others, widget, algorithm);
  await page.locator('section.api-burst').screenshot({ path: 'test-results/weights-burst-embedded.png' });

  const missing = haproxyMissing('the HAProxy half of the weights test');
  if (missing) {
    console.log(missing);
    test.info().annotations.push({ type: 'skipped part', description: missing });
    return;
  }
  // Switch with the keyboard: focus the HAProxy button and press Enter.
  const selector = page.getByTestId('proxy-selector');
  await selector.locator('[data-testid=proxy-option][data-driver=haproxy]').focus();
  await page.keyboard.press('Enter');
  await expect(selector).toHaveAttribute('data-driver', 'haproxy', { timeout: 60_000 });
  await expect(selector.getByTestId('proxy-message')).toContainText('Now running HAProxy');
  // Replicas, weights and algorithm carried over.
  expect(await dynamic.getByTestId('replica-row').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.hostname!))).toEqual(hosts);
  await expect(firstRow.getByTestId('weight-input')).toHaveAttribute('data-weight', '3');
  await expect(algorithm).toHaveAttribute('data-algorithm', 'least-connections');
  await check('haproxy', heavy, others, widget, algorithm);
  await expect(selector.getByTestId('stats-link')).toBeVisible();
  await page.locator('section.api-burst').screenshot({ path: 'test-results/weights-burst-haproxy.png' });
  await page.screenshot({ path: 'test-results/round-robin-lesson-haproxy.png', fullPage: true });
  await selector.screenshot({ path: 'test-results/weights-proxy-selector.png' });
});
