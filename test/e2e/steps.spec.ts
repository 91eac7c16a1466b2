/**
 * Lesson steps in a real Chromium against the real lab: Next/Back with the keyboard (focus on the
 * step heading), the step in the address bar, progress kept in localStorage across a reload, a
 * deep link to a step, one step at a time, Start over; and a step check that turns green by itself
 * after the learner's own actions (scale, then requests through the proxy).
 */
import type { Page } from '@playwright/test';
import { test, expect } from './lab-fixture.ts';

const focusedId = (page: Page) => page.evaluate(() => document.activeElement?.id ?? null);

test('steps: Next/Back by keyboard, progress across a reload, deep link, one step at a time, start over', async ({ page, lab }) => {
  await page.goto(lab.url);
  await page.getByTestId('lesson-list').getByRole('link', { name: 'Round-robin' }).click();
  const nav = page.getByTestId('step-nav');
  await expect(nav).toHaveAttribute('data-steps', '11');
  await expect(nav).toHaveAttribute('data-current', '1');
  const where = page.getByTestId('step-where');
  await expect(where).toHaveText('Step 1 of 11: The setup: one address, several replicas');
  await expect(page.getByTestId('step-back')).toHaveCount(0);

  // Next, from the keyboard: focus lands on the next step's heading, the URL names the step.
  await page.getByTestId('step-next').focus();
  await page.keyboard.press('Enter');
  await expect(where).toHaveText('Step 2 of 11: Predict first');
  await expect(page).toHaveURL(/\/lessons\/round-robin#step-2$/);
  await expect.poll(() => focusedId(page)).toBe('predict-first');
  await expect(page.getByRole('heading', { level: 2, name: /Predict first/ })).toBeInViewport();
  // Step 1 had no check: moving on finished it.
  await expect(nav.locator('[data-testid=step-link][data-step="1"]')).toHaveAttribute('data-state', 'done');
  await expect(page.getByTestId('step-progress')).toContainText('1 of 11 done');

  await page.getByTestId('step-next').press('Enter');
  await expect(where).toHaveText('Step 3 of 11: Ask web_dynamic ten times');
  await expect.poll(() => focusedId(page)).toBe('ask-web-dynamic-ten-times');
  // Step 3 ends with a check: Next does not count it as done.
  await page.getByTestId('step-next').click();
  await expect(nav.locator('[data-testid=step-link][data-step="3"]')).not.toHaveAttribute('data-state', 'done');
  await page.getByTestId('step-back').click();
  await expect(where).toHaveText('Step 3 of 11: Ask web_dynamic ten times');
  await expect.poll(() => focusedId(page)).toBe('ask-web-dynamic-ten-times');
  await expect(nav.locator('[aria-current=step]')).toHaveAttribute('data-step', '3');

  // A reload keeps the step (from the URL) and the finished steps (from localStorage).
  await page.reload();
  await expect(page.getByTestId('step-where')).toHaveText('Step 3 of 11: Ask web_dynamic ten times');
  await expect(page.getByTestId('step-progress')).toContainText('2 of 11 done');
  await expect(page.getByTestId('step-nav').locator('[data-testid=step-link][data-step="2"]')).toHaveAttribute('data-state', 'done');

  // Progress lives in localStorage: the lesson without a step in the URL reopens at step 3.
  await page.goto(`${lab.origin}/lessons/round-robin`);
  await expect(page.getByTestId('step-nav')).toHaveAttribute('data-current', '3');
  await expect(where).toHaveText('Step 3 of 11: Ask web_dynamic ten times');
  await expect(page.getByTestId('step-progress')).toContainText('2 of 11 done');
  await expect(page).toHaveURL(/#step-3$/);

  // A deep link opens its step (here in a new tab of the same browser: the same progress).
  const tab = await page.context().newPage();
  await tab.goto(`${lab.origin}/lessons/round-robin#step-9`);
  await expect(tab.getByTestId('step-where')).toHaveText('Step 9 of 11: Weights and least-connections');
  await expect(tab.getByRole('heading', { level: 2, name: /Weights and least-connections/ })).toBeInViewport();
  await expect.poll(() => focusedId(tab)).toBe('weights-and-least-connections');
  // ...and a heading's own id works as well.
  await tab.goto(`${lab.origin}/lessons/round-robin#kill-a-replica`);
  await expect(tab.getByTestId('step-where')).toHaveText('Step 8 of 11: Kill a replica');
  // ...and so does the path form /lessons/<slug>/step/<n> (the server's SPA fallback serves it).
  await tab.goto(`${lab.origin}/lessons/round-robin/step/4`);
  await expect(tab.getByTestId('step-where')).toHaveText('Step 4 of 11: How round-robin works');
  await expect(tab).toHaveURL(/\/lessons\/round-robin#step-4$/);
  await tab.close();

  // One step at a time: only the current step's text and widgets show (the step the other tab left: 4).
  await page.goto(`${lab.origin}/lessons/round-robin`);
  await page.getByTestId('step-one-at-a-time').check();
  await expect(page.getByTestId('lesson')).toHaveAttribute('data-view', 'one-step');
  const currentStep = Number(await page.getByTestId('step-nav').getAttribute('data-current'));
  expect(currentStep).toBe(4);
  await page.getByTestId('step-nav').locator('[data-testid=step-link][data-step="8"]').click();
  await expect(page.getByRole('heading', { level: 2, name: /Kill a replica/ })).toBeVisible();
  await expect(page.getByRole('heading', { level: 2, name: /Weights and least-connections/ })).toBeHidden();
  await expect(page.locator('[data-testid=predict-burst]')).toBeHidden();
  // The widgets step 3 shares with this step (data-steps) show, below this step's text.
  const dynamicList = page.locator('[data-testid=replica-list][data-service=web_dynamic]');
  await expect(dynamicList).toBeVisible();
  await expect(page.getByTestId('demo-iframe')).toBeVisible();
  const below = await page.evaluate(() => {
    const list = document.querySelector('[data-testid=replica-list][data-service=web_dynamic]')!.getBoundingClientRect().top;
    const text = [...document.querySelectorAll('h2')].find((h) => h.textContent?.includes('Kill a replica'))!.nextElementSibling!.getBoundingClientRect().top;
    return list > text;
  });
  expect(below).toBe(true);
  await page.getByTestId('step-next').click();
  await expect(page.getByRole('heading', { level: 2, name: /Weights and least-connections/ })).toBeVisible();
  await expect(page.getByTestId('api-burst')).toBeVisible();
  await expect(page.getByRole('heading', { level: 2, name: /Kill a replica/ })).toBeHidden();
  // Choosing a step in the list shows that one.
  await page.getByTestId('step-nav').locator('[data-testid=step-link][data-step="2"]').click();
  await expect(page.getByTestId('predict-burst')).toBeVisible();
  await expect(dynamicList).toBeHidden();
  await expect.poll(() => focusedId(page)).toBe('predict-first');
  await page.getByTestId('step-one-at-a-time').uncheck();
  await expect(page.getByRole('heading', { level: 2, name: /Kill a replica/ })).toBeVisible();

  // Start over forgets the finished steps and goes back to step 1.
  await page.getByTestId('step-start-over').click();
  await expect(page.getByTestId('step-progress')).toContainText('0 of 11 done');
  await expect(page.getByTestId('step-where')).toHaveText('Step 1 of 11: The setup: one address, several replicas');
  await expect.poll(() => page.evaluate(() => JSON.parse(localStorage.getItem('balancer-lab:progress:round-robin') ?? '{}').done)).toEqual([]);
});

test('a step check turns green by itself after the learner scales and sends requests', async ({ page, lab }) => {
  await page.goto(lab.url);
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  await page.goto(`${lab.origin}/lessons/round-robin#step-7`);
  await expect(page.getByTestId('step-where')).toContainText('Step 7 of 11: Scale web_dynamic from 3 to 5');
  const check = page.locator('[data-testid=check-button][data-check=rotation-grew]');
  await expect(check).toHaveAttribute('data-step-check', 'yes');

  // The learner's action: scale web_dynamic to 5 in the replica list (step 3, above).
  const dynamic = page.locator('[data-testid=replica-list][data-service=web_dynamic]');
  await dynamic.getByTestId('scale-input').fill('5');
  await dynamic.getByTestId('scale-apply').click();
  await expect(dynamic.getByTestId('replica-message')).toContainText('web_dynamic now has 5 replicas', { timeout: 60_000 });
  // Not passed yet: the new replicas have not answered (asked by the button this time).
  await check.getByTestId('check-run').click();
  await expect(check).toHaveAttribute('data-result', 'fail', { timeout: 30_000 });
  await expect(check.getByTestId('check-message')).toContainText('never reached');

  // Then five requests through the proxy from the demo page: the check turns green without a click.
  const frame = page.frameLocator('[data-testid=demo-iframe]');
  const button = frame.getByTestId('fetch-dynamic');
  const newest = frame.getByTestId('dynamic-history').locator('li').first();
  for (let i = 1; i <= 5; i++) {
    await expect(button).toBeEnabled();
    await button.click();
    await expect(newest.locator('.n')).toHaveText(`#${i}`);
  }
  await expect(check).toHaveAttribute('data-result', 'pass', { timeout: 30_000 });
  await expect(check).toHaveAttribute('data-auto', 'yes');
  await expect(check.getByTestId('check-message')).toContainText('reached 5 different replicas');
  await expect(check.getByTestId('check-message')).toContainText('(ran by itself)');
  // The pass marks its step done in the progress.
  await expect(page.getByTestId('step-nav').locator('[data-testid=step-link][data-step="7"]')).toHaveAttribute('data-state', 'done');
  await page.screenshot({ path: 'test-results/steps-auto-check.png' });
  // Start over forgets the answer too.
  await page.getByTestId('step-start-over').click();
  await expect(check.getByTestId('check-message')).toContainText('Not run yet');
  await expect(page.getByTestId('step-progress')).toContainText('0 of 11 done');
});
