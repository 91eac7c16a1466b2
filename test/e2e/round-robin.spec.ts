/**
 * The Round-robin lesson in a real Chromium against the real lab: every claim the lesson makes
 * is checked here against the real proxy and real replicas.
 */
import type { FrameLocator, Locator, Page } from '@playwright/test';
import { test, expect } from './lab-fixture.ts';

/** Clicks "Fetch web_dynamic" `n` times in the demo page; returns the hostname of each answer, in order. */
async function fetchDynamic(frame: FrameLocator, n: number): Promise<string[]> {
  const button = frame.getByTestId('fetch-dynamic');
  const newest = frame.getByTestId('dynamic-history').locator('li').first();
  const hosts: string[] = [];
  for (let i = 0; i < n; i++) {
    const before = (await newest.count()) ? await newest.locator('.n').textContent() : '#0';
    const next = `#${Number(before?.slice(1) ?? 0) + 1}`;
    await expect(button).toBeEnabled();
    await button.click();
    await expect(newest.locator('.n')).toHaveText(next);
    hosts.push((await newest.locator('.host').textContent())!.trim());
  }
  return hosts;
}

const rowsOf = (list: Locator) => list.getByTestId('replica-row');
const hostnamesOf = (list: Locator) => rowsOf(list).evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.hostname!));

async function replicaList(page: Page, service: string): Promise<Locator> {
  const list = page.locator(`[data-testid=replica-list][data-service=${service}]`);
  await expect(list).toHaveCount(1);
  return list;
}

test('round-robin: rotation, scaling, killing, logs', async ({ page, lab }) => {
  await page.goto(lab.url);
  // The token leaves the address bar at once (it stays in this tab's sessionStorage).
  await expect(page).toHaveURL((u) => !u.searchParams.has('token'));
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  expect(await page.context().cookies()).toEqual([]);

  await page.getByTestId('lesson-list').getByRole('link', { name: 'Round-robin' }).click();
  await expect(page).toHaveURL(/\/lessons\/round-robin$/);
  await expect(page.getByRole('heading', { level: 1, name: 'Round-robin' })).toBeVisible();

  // The default topology: 3 + 3 replicas, all running.
  const dynamic = await replicaList(page, 'web_dynamic');
  const statics = await replicaList(page, 'web_static');
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
  await expect(statics.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
  const order = await hostnamesOf(dynamic);

  // The demo app is served by the proxy on the same hostname as the lesson page.
  const proxyPort = (await lab.status()).proxy.port;
  await expect(page.getByTestId('demo-url')).toHaveText(`http://localhost:${proxyPort}/`);
  const frame = page.frameLocator('[data-testid=demo-iframe]');
  await expect(frame.getByTestId('served-by')).toHaveText(/^web_static-/);

  // Step 1: six clicks = three distinct replicas, twice, in the order the list shows.
  const six = await fetchDynamic(frame, 6);
  expect(new Set(six.slice(0, 3)).size).toBe(3);
  expect(six.slice(3)).toEqual(six.slice(0, 3));
  const start = order.indexOf(six[0]);
  expect(start).toBeGreaterThanOrEqual(0);
  expect(six.slice(0, 3)).toEqual([0, 1, 2].map((k) => order[(start + k) % 3]));

  // The timeline shows those requests, coloured by replica, and exact counts per replica.
  const timeline = page.locator('[data-testid=request-timeline][data-service=web_dynamic]');
  const marks = timeline.getByTestId('timeline-mark');
  await expect(marks).toHaveCount(6);
  expect(await marks.evaluateAll((m) => m.map((e) => (e as HTMLElement).dataset.hostname))).toEqual(six);
  for (const h of order) await expect(timeline.locator(`[data-testid=count-bar][data-hostname="${h}"]`)).toHaveAttribute('data-count', '2');

  // Per request, not per connection: consecutive requests on one client connection reach different replicas.
  const conns = await marks.evaluateAll((m) => m.map((e) => (e as HTMLElement).dataset.conn));
  const sameConnDifferentReplica = six.some((h, i) => i > 0 && conns[i] === conns[i - 1] && h !== six[i - 1]);
  expect(sameConnDifferentReplica, `connections of the six requests: ${conns.join(', ')}`).toBe(true);

  // Step 2: scale web_dynamic 3 -> 5 with the widget; the next 5 clicks reach 5 distinct replicas.
  await dynamic.getByTestId('scale-input').fill('5');
  await dynamic.getByTestId('scale-apply').click();
  await expect(dynamic.getByTestId('replica-message')).toContainText('web_dynamic now has 5 replicas', { timeout: 60_000 });
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(5);
  const five = await hostnamesOf(dynamic);
  const next5 = await fetchDynamic(frame, 5);
  expect(new Set(next5).size).toBe(5);
  expect([...next5].sort()).toEqual([...five].sort());

  // Step 3: kill one replica with its Kill button: it leaves the list and the rotation.
  const victim = five[1];
  await dynamic.getByRole('button', { name: `Kill ${victim}` }).click();
  await expect(dynamic.locator(`[data-testid=replica-row][data-hostname="${victim}"]`)).toHaveCount(0);
  await expect(rowsOf(dynamic)).toHaveCount(4);
  const next4 = await fetchDynamic(frame, 4);
  expect(new Set(next4).size).toBe(4);
  expect(next4).not.toContain(victim);
  await expect(frame.getByTestId('dynamic-error')).toBeHidden();

  // Counts stay exact: 15 requests reached web_dynamic, none failed.
  await expect(marks).toHaveCount(15);
  await expect
    .poll(() => timeline.getByTestId('count-bar').evaluateAll((b) => b.reduce((n, e) => n + Number((e as HTMLElement).dataset.count), 0)))
    .toBe(15);
  await expect(timeline.locator('[data-testid=timeline-mark].failed')).toHaveCount(0);

  // The terminal streams the proxy's access log.
  const terminal = page.getByTestId('log-terminal');
  await expect(terminal).toContainText('"GET /api/');

  // Step 4: the auto-reloading page shows a different web_static hostname as it reloads.
  await frame.getByTestId('auto-reload').check();
  const seen = new Set<string>();
  await expect
    .poll(
      async () => {
        const h = await frame.getByTestId('served-by').textContent().catch(() => null);
        if (h) seen.add(h.trim());
        return seen.size;
      },
      { timeout: 30_000, intervals: [200] },
    )
    .toBeGreaterThanOrEqual(3);

  await page.screenshot({ path: 'test-results/round-robin-lesson.png', fullPage: true });
});
