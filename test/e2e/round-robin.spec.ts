/**
 * The Round-robin lesson in a real Chromium against the real lab: every claim the lesson makes
 * is checked here against the real proxy and real replicas.
 */
import type { Locator } from '@playwright/test';
import { fetchDynamic, replicaList } from './helpers.ts';
import { test, expect } from './lab-fixture.ts';

const rowsOf = (list: Locator) => list.getByTestId('replica-row');
const hostnamesOf = (list: Locator) => rowsOf(list).evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.hostname!));

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
  // No session_php in this lesson: the frame turns the demo page's session panel off (one request per load).
  await expect(page.getByTestId('demo-url')).toHaveText(`http://localhost:${proxyPort}/?session=off`);
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

  // The same requests as a table (the keyboard and screen-reader view of the marks).
  await timeline.getByText('Show these requests as a table').click();
  await expect(timeline.getByTestId('timeline-table').locator('tbody tr')).toHaveCount(6);
  await expect(timeline.getByTestId('timeline-table')).toContainText(conns[0]!);

  // Step 2: scale web_dynamic 3 -> 5 with the widget; the next 5 clicks reach 5 distinct replicas.
  // Record every state a row shows on the way (new rows read "starting" before "running").
  await dynamic.evaluate((list) => {
    const seen = new Set<string>();
    (window as unknown as { __states: Set<string> }).__states = seen;
    const record = () => list.querySelectorAll<HTMLElement>('[data-testid=replica-row]').forEach((r) => seen.add(r.dataset.state!));
    new MutationObserver(record).observe(list, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
  });
  await dynamic.getByTestId('scale-input').fill('5');
  await dynamic.getByTestId('scale-apply').click();
  await expect(dynamic.getByTestId('replica-message')).toContainText('web_dynamic now has 5 replicas', { timeout: 60_000 });
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(5);
  expect(await page.evaluate(() => [...(window as unknown as { __states: Set<string> }).__states].sort())).toEqual(['running', 'starting']);
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
  // The killed replica keeps its bar, marked as gone, with the requests it answered.
  await expect(timeline.locator(`[data-testid=count-bar][data-hostname="${victim}"]`)).toContainText('(gone)');

  // The terminal streams the proxy's access log.
  const terminal = page.getByTestId('log-terminal');
  await expect(terminal).toContainText('"GET /api/');
  // ...and the replica's own log shows the path it received, with /api/ stripped.
  await expect(terminal).toContainText(/web_dynamic-\d+-[0-9a-f]+ 127\.0\.0\.1 GET \/ 200/);

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
  await page.getByTestId('demo-frame').screenshot({ path: 'test-results/round-robin-demo-frame.png' });
  await dynamic.screenshot({ path: 'test-results/round-robin-replicas.png' });
  await timeline.screenshot({ path: 'test-results/round-robin-timeline.png' });
  await page.locator('.log-terminal').screenshot({ path: 'test-results/round-robin-terminal.png' });
});
