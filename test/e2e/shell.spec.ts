/**
 * The lesson shell against the real lab: the token (never in a cookie, out of the URL, a clear
 * message without it), deep links through the SPA fallback, and the Reset lab button.
 */
import { test, expect } from './lab-fixture.ts';

test('without a token the page explains how to get one', async ({ page, lab }) => {
  await page.goto(`${lab.origin}/lessons/round-robin`);
  await expect(page.getByTestId('token-help')).toContainText('not connected to a lab');
  await expect(page.getByTestId('token-help')).toContainText('Lab ready: http://localhost:4000/?token=');
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'bad');
  // The lesson text is still readable.
  await expect(page.getByRole('heading', { level: 1, name: 'Round-robin' })).toBeVisible();
});

test('a wrong token is refused with a clear message', async ({ page, lab }) => {
  await page.goto(`${lab.origin}/?token=not-the-token`);
  await expect(page.getByTestId('token-help')).toContainText('did not accept');
  await expect(page).toHaveURL(`${lab.origin}/`);
  expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
});

test('the token leaves the URL, stays out of cookies, and survives a reload of a deep link', async ({ page, lab }) => {
  await page.goto(lab.url);
  await expect(page).toHaveURL(`${lab.origin}/`);
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  await page.getByTestId('lesson-list').getByRole('link', { name: 'Round-robin' }).click();
  await expect(page).toHaveURL(`${lab.origin}/lessons/round-robin`);
  await page.reload();
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  await expect(page.getByTestId('token-help')).toHaveCount(0);
  await expect(page.locator('[data-testid=replica-list][data-service=web_dynamic] [data-testid=replica-row]')).toHaveCount(3);
  // Back/forward work with the history API.
  await page.goBack();
  await expect(page.getByTestId('lesson-list')).toBeVisible();
  await page.goForward();
  await expect(page.getByRole('heading', { level: 1, name: 'Round-robin' })).toBeVisible();
  // The demo app on the proxy's port received no token: no cookie exists at all.
  expect(await page.context().cookies()).toEqual([]);
});

test('Reset lab restores the starting topology and clears the timeline', async ({ page, lab }) => {
  await page.goto(lab.url);
  await page.getByTestId('lesson-list').getByRole('link', { name: 'Round-robin' }).click();
  const dynamic = page.locator('[data-testid=replica-list][data-service=web_dynamic]');
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
  const frame = page.frameLocator('[data-testid=demo-iframe]');
  await frame.getByTestId('fetch-dynamic').click();
  await expect(frame.getByTestId('dynamic-history').locator('li')).toHaveCount(1);
  const timeline = page.locator('[data-testid=request-timeline][data-service=web_dynamic]');
  await expect(timeline.getByTestId('timeline-mark')).toHaveCount(1);

  await dynamic.getByTestId('scale-input').fill('1');
  await dynamic.getByTestId('scale-apply').click();
  await expect(dynamic.getByTestId('replica-row')).toHaveCount(1);
  // Out of range: the input refuses before asking the server.
  await dynamic.getByTestId('scale-input').fill('11');
  await dynamic.getByTestId('scale-apply').click();
  await expect(dynamic.getByTestId('replica-message')).toContainText('from 0 to 10');

  const before = new Set((await lab.status()).services.flatMap((s) => s.instances.map((i) => i.hostname)));
  await page.getByTestId('reset-lab').click();
  await expect(page.getByTestId('reset-lab')).toHaveText('Reset lab', { timeout: 60_000 });
  await expect(page.getByText('Lab reset to the start of “Round-robin”: web_static ×3, web_dynamic ×3.')).toBeVisible();
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
  await expect(dynamic.getByTestId('scale-input')).toHaveValue('3');
  await expect(timeline.getByTestId('timeline-mark')).toHaveCount(0);
  // Every replica is new after a reset.
  const after = (await lab.status()).services.flatMap((s) => s.instances.map((i) => i.hostname));
  expect(after.filter((h) => before.has(h))).toEqual([]);
});
