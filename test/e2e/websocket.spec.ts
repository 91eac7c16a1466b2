/**
 * Lesson 05's WebSocket section in a real Chromium against the real lab (embedded proxy): the
 * browser's WebSocket to the proxy (/api/ws/echo) gets 6 echoes, all from the replica it was
 * upgraded on, while the keep-alive client's 6 requests on one connection reach 3 replicas.
 */
import type { Page } from '@playwright/test';
import { test, expect } from './lab-fixture.ts';
import type { RunningLab } from './lab-fixture.ts';

async function openLesson05(page: Page, lab: RunningLab) {
  const res = await fetch(`${lab.origin}/api/reset`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${lab.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ lesson: '05-idle-timeouts' }),
  });
  expect(res.status, await res.clone().text()).toBe(200);
  await page.goto(lab.url);
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  await page.getByTestId('lesson-list').getByRole('link', { name: 'Keep-alive and idle timeouts' }).click();
  await expect(page).toHaveURL(/\/lessons\/idle-timeouts$/);
  await expect(page.getByTestId('lesson-setup')).toBeHidden({ timeout: 60_000 });
  const list = page.locator('[data-testid=replica-list][data-service=web_dynamic]');
  await expect(list.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
}

test('lesson 05: a browser WebSocket: 6 echoes, all from one replica; 6 keep-alive requests reach 3', async ({ page, lab }) => {
  await openLesson05(page, lab);
  const probe = page.getByTestId('ws-probe');
  await probe.getByTestId('ws-open').click();
  await expect(probe).toHaveAttribute('data-state', 'open');
  const hello = probe.getByTestId('ws-hello');
  await expect(hello).toHaveCount(1);
  const replica = await hello.getAttribute('data-served-by');
  expect(replica).toMatch(/^web_dynamic-/);
  for (let i = 0; i < 6; i++) await probe.getByTestId('ws-send').click();
  const echoes = probe.getByTestId('ws-echo');
  await expect(echoes).toHaveCount(6);
  for (const e of await echoes.all()) await expect(e).toHaveAttribute('data-served-by', replica!);
  await expect(probe.getByTestId('ws-summary')).toHaveAttribute('data-replicas', '1');

  // Meanwhile, plain requests on one keep-alive connection rotate.
  const client = page.getByTestId('keepalive-client');
  await client.getByTestId('ka-reuse').click();
  await expect(client.getByTestId('ka-burst').first()).toHaveAttribute('data-replicas', '3');

  // "Send one a second" keeps going on the same replica; Close ends it.
  await probe.getByTestId('ws-auto').click();
  await expect(echoes).toHaveCount(8, { timeout: 5000 });
  await probe.getByTestId('ws-auto').click();
  for (const e of await echoes.all()) await expect(e).toHaveAttribute('data-served-by', replica!);
  await probe.getByTestId('ws-close').click();
  await expect(probe).toHaveAttribute('data-state', 'closed');
  await expect(probe.getByRole('alert')).toHaveCount(0);
});
