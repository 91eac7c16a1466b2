/**
 * Predict, then run, in a real Chromium against the real lab: the learner's shares must add up to
 * 100 % before the burst can run (with a sentence saying so), then the chart shows the prediction
 * beside the measured share per replica and explains the difference. Lesson 01 (round-robin:
 * 10/10/10) and lesson 02 (a browser-like client with sticky on: one replica takes all 30).
 */
import type { Locator } from '@playwright/test';
import { test, expect } from './lab-fixture.ts';

const sumOf = (bars: Locator) => bars.evaluateAll((els) => els.reduce((n, e) => n + Number((e as SVGElement).dataset.count), 0));

test('predict, then run: round-robin in lesson 01, a sticky pin in lesson 02', async ({ page, lab }) => {
  test.setTimeout(300_000);
  await page.goto(lab.url);
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  await page.goto(`${lab.origin}/lessons/round-robin#step-2`);
  const widget = page.getByTestId('predict-burst');
  await expect(widget.getByTestId('predict-row')).toHaveCount(3);
  await expect(widget.getByTestId('predict-conditions')).toContainText('30 requests to /api/ · 3 web_dynamic replicas · round-robin · sticky off');

  // Not 100 % yet: Run is disabled and the sentence says why.
  const run = widget.getByTestId('predict-run');
  await expect(run).toBeDisabled();
  await expect(widget.getByTestId('predict-problem')).toHaveText('Your shares add up to 0 %: make them add up to 100 %.');
  // Typed with the keyboard into the labelled number inputs: 50 + 30 + 20.
  const inputs = widget.getByTestId('predict-input');
  for (const [i, v] of [50, 30, 20].entries()) {
    await inputs.nth(i).fill(String(v));
  }
  await expect(widget.getByTestId('predict-sum')).toHaveAttribute('data-sum', '100');
  await expect(widget.getByTestId('predict-bar-predicted')).toHaveCount(3);
  await expect(widget.getByTestId('predict-bar-measured')).toHaveCount(0);
  await expect(run).toBeEnabled();
  await run.click();

  // Both bars per replica: the prediction as typed, the measurement from the real proxy.
  const measured = widget.getByTestId('predict-bar-measured');
  await expect(measured).toHaveCount(3, { timeout: 60_000 });
  await expect(widget).toHaveAttribute('data-state', 'measured');
  expect(await widget.getByTestId('predict-bar-predicted').evaluateAll((els) => els.map((e) => Number((e as SVGElement).dataset.value)))).toEqual([50, 30, 20]);
  expect(await measured.evaluateAll((els) => els.map((e) => Number((e as SVGElement).dataset.count)))).toEqual([10, 10, 10]);
  const explain = widget.getByTestId('predict-explain');
  await expect(explain).toContainText('Round-robin: each of the 3 replicas took its turn, 10/10/10 of 30.');
  await expect(explain).toContainText('Your biggest miss: you expected 50 % on');
  await widget.screenshot({ path: 'test-results/predict-round-robin.png' });

  // "Predict again" clears the measurement; Split evenly is 34/33/33.
  await widget.getByTestId('predict-again').click();
  await expect(measured).toHaveCount(0);
  await widget.getByTestId('predict-even').click();
  await expect(widget.getByTestId('predict-sum')).toHaveAttribute('data-sum', '100');

  // Lesson 02: set it up, sticky cookie on, a client with a cookie jar.
  await page.goto(`${lab.origin}/lessons/sticky-sessions`);
  const banner = page.getByTestId('lesson-setup');
  await expect(banner).toContainText('session_php');
  await page.getByTestId('lesson-setup-apply').click();
  await expect(banner).toHaveCount(0, { timeout: 120_000 });
  const sticky = page.locator('[data-testid=sticky-switch][data-service=""]');
  await sticky.getByTestId('sticky-toggle').click();
  await expect(sticky.getByTestId('sticky-toggle')).toHaveAttribute('aria-checked', 'true');

  const p2 = page.getByTestId('predict-burst');
  await expect(p2.getByTestId('predict-row')).toHaveCount(4);
  await expect(p2.getByTestId('predict-conditions')).toContainText('4 web_dynamic replicas · round-robin · sticky on · cookie jar (like a browser)');
  // With a slider, from the keyboard: the first replica to 100 %.
  const slider = p2.getByTestId('predict-slider').first();
  await slider.focus();
  await page.keyboard.press('End');
  await expect(p2.getByTestId('predict-sum')).toHaveAttribute('data-sum', '100');
  await p2.getByTestId('predict-run').click();
  const bars = p2.getByTestId('predict-bar-measured');
  await expect(bars).toHaveCount(4, { timeout: 60_000 });
  expect(await sumOf(bars)).toBe(30);
  const counts = await bars.evaluateAll((els) => els.map((e) => Number((e as SVGElement).dataset.count)).sort((a, b) => b - a));
  expect(counts).toEqual([30, 0, 0, 0]);
  await expect(p2.getByTestId('predict-explain')).toContainText(/Sticky on: web_dynamic-\S+ took all 30\./);
  await p2.screenshot({ path: 'test-results/predict-sticky.png' });
});
