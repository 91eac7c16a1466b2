/**
 * Routing lesson (07) in a real Chromium against the real lab: set up the lesson, the request
 * tester shows the router, service, replica and the path the replica received; the routes editor
 * adds StripPrefix (keyboard only), after which /api/ arrives as / and the check passes; a
 * Host-less /api/ rule loses to the longer Host rule (and a bad host is refused on the page); the
 * configuration panel shows HAProxy's and Traefik's versions; then the same on HAProxy.
 */
import type { Locator } from '@playwright/test';
import { haproxyMissing } from './helpers.ts';
import { test, expect } from './lab-fixture.ts';

/** Sends one request with the tester's form (typed, then Enter) and waits for its answer. */
async function send(tester: Locator, host: string, path: string) {
  const before = Number(await tester.getAttribute('data-answers'));
  await tester.getByTestId('route-host').fill(host);
  await tester.getByTestId('route-path').fill(path);
  await tester.getByTestId('route-path').press('Enter');
  await expect(tester).toHaveAttribute('data-answers', String(before + 1), { timeout: 30_000 });
  return tester.getByTestId('route-result');
}

test('routing lesson: the tester shows router and stripped path, the editor strips /api/, the check passes, on both engines', async ({ page, lab }) => {
  test.setTimeout(300_000);
  await page.goto(`${lab.origin}/lessons/routing?token=${lab.token}`);
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');

  // The lab starts on the default routes: the lesson offers its own.
  await page.getByTestId('lesson-setup-apply').click();
  await expect(page.getByTestId('lesson-setup')).toHaveCount(0, { timeout: 120_000 });
  for (const service of ['web_static', 'web_dynamic']) {
    await expect(page.locator(`[data-testid=replica-list][data-service=${service}] [data-testid=replica-row][data-state=running]`)).toHaveCount(2, { timeout: 120_000 });
  }

  const editor = page.getByTestId('route-editor');
  await expect(editor.getByTestId('route-row')).toHaveCount(3);
  const apiRow = editor.locator('[data-testid=route-row][data-prefix="/api/"]');
  await expect(apiRow).toHaveAttribute('data-host', 'demo.localhost');
  await expect(apiRow).toHaveAttribute('data-priority', '45');
  await expect(apiRow).toHaveAttribute('data-strip', 'no');

  const map = page.getByTestId('route-map');
  await expect(map.getByTestId('route-map-router')).toHaveCount(4); // 3 routers and the 404
  await expect(map.getByTestId('route-map-router').first()).toHaveAttribute('data-router', 'web_dynamic-1');
  await expect(map.getByTestId('route-map-service')).toHaveCount(2);

  const tester = page.getByTestId('route-tester');
  // An example button: demo.localhost /api/ reaches web_dynamic, unstripped: the replica's own 404.
  await tester.locator('[data-testid=route-example][data-host="demo.localhost"][data-path="/api/"]').click();
  let result = tester.getByTestId('route-result');
  await expect(result).toHaveAttribute('data-router', 'web_dynamic-1');
  await expect(result).toHaveAttribute('data-service', 'web_dynamic');
  await expect(result).toHaveAttribute('data-received', '/api/');
  await expect(result).toHaveAttribute('data-status', '404');
  await expect(result).toHaveAttribute('data-replica', /^web_dynamic-\d+-/);
  await expect(tester.getByTestId('route-received')).toHaveText('/api/');
  await expect(map).toHaveAttribute('data-last-router', 'web_dynamic-1');
  await map.screenshot({ path: 'test-results/routing-map.png' });

  // No router for localhost: the proxy's own 404, no replica.
  result = await send(tester, 'localhost', '/');
  await expect(result).toHaveAttribute('data-router', '');
  await expect(result).toHaveAttribute('data-replica', '');
  await expect(tester.getByTestId('route-router')).toHaveText('no router matched');
  await expect(map).toHaveAttribute('data-last-router', '404');

  // A bad host is refused with a sentence, nothing sent.
  await tester.getByTestId('route-host').fill('demo.localhost:8080');
  await tester.getByTestId('route-send').click();
  await expect(tester.getByTestId('route-error')).toContainText('must be a DNS name');

  const check = page.getByTestId('check-button');
  await check.getByTestId('check-run').click();
  await expect(check).toHaveAttribute('data-result', 'fail', { timeout: 30_000 });
  await expect(check.getByTestId('check-message')).toContainText('strip the /api/ prefix');

  // The fix, by keyboard: tick strip on the /api/ row (Space), then Apply (Enter).
  await apiRow.getByTestId('route-strip').focus();
  await page.keyboard.press('Space');
  await expect(editor).toHaveAttribute('data-dirty', 'yes');
  await editor.getByTestId('route-apply').focus();
  await page.keyboard.press('Enter');
  await expect(editor.getByTestId('route-message')).toContainText('Applied', { timeout: 30_000 });
  await expect(apiRow).toHaveAttribute('data-strip', 'yes');
  await expect(editor).toHaveAttribute('data-dirty', 'no');

  result = await send(tester, 'demo.localhost', '/api/');
  await expect(result).toHaveAttribute('data-router', 'web_dynamic-1');
  await expect(result).toHaveAttribute('data-received', '/');
  await expect(result).toHaveAttribute('data-status', '200');
  result = await send(tester, 'demo.localhost', '/api/jokes?n=1');
  await expect(result).toHaveAttribute('data-received', '/jokes?n=1');

  await check.getByTestId('check-run').click();
  await expect(check).toHaveAttribute('data-result', 'pass', { timeout: 30_000 });

  // Step 3 with the editor: a bad host is refused on the page; Undo restores the row.
  const apiHost = apiRow.getByTestId('route-host-input');
  await apiHost.fill('bad host');
  await expect(apiHost).toHaveAttribute('aria-invalid', 'true');
  await editor.getByTestId('route-apply').click();
  await expect(editor.getByTestId('route-message')).toContainText('Fix the marked rows first');
  await editor.getByTestId('route-revert').click();
  await expect(apiHost).toHaveValue('demo.localhost');
  // Without its host the /api/ rule (priority 19) loses to Host(demo.localhost) && PathPrefix(/) (41).
  await apiHost.fill('');
  await expect(apiRow).toHaveAttribute('data-priority', '19');
  await editor.getByTestId('route-apply').click();
  await expect(editor).toHaveAttribute('data-dirty', 'no', { timeout: 30_000 });
  result = await send(tester, 'demo.localhost', '/api/');
  await expect(result).toHaveAttribute('data-router', 'web_static');
  await expect(result).toHaveAttribute('data-received', '/api/');
  await expect(map.getByTestId('route-map-router').first()).toHaveAttribute('data-router', 'web_static');
  // The host back: /api/ wins again.
  await apiRow.getByTestId('route-host-input').fill('demo.localhost');
  await editor.getByTestId('route-apply').click();
  await expect(editor).toHaveAttribute('data-dirty', 'no', { timeout: 30_000 });
  result = await send(tester, 'demo.localhost', '/api/');
  await expect(result).toHaveAttribute('data-router', 'web_dynamic-1');
  await expect(result).toHaveAttribute('data-received', '/');

  // The same routes in each engine's words.
  const panel = page.getByTestId('routing-config');
  await expect(panel.getByTestId('routing-config-pane')).toHaveCount(2);
  await expect(panel.locator('[data-testid=routing-config-pane][data-engine=haproxy] [data-testid=routing-config-excerpt]')).toContainText('set-path');
  const traefik = panel.locator('[data-testid=routing-config-pane][data-engine=traefik]');
  await expect(traefik).toHaveAttribute('data-kind', 'dynamic');
  await expect(traefik.getByTestId('routing-config-excerpt')).toContainText('stripPrefix');
  await traefik.locator('[data-testid=routing-config-kind][data-kind=labels]').focus();
  await page.keyboard.press('Enter');
  await expect(traefik).toHaveAttribute('data-kind', 'labels');
  await expect(traefik.getByTestId('routing-config-excerpt')).toContainText('stripprefix.prefixes=/api/');
  await panel.screenshot({ path: 'test-results/routing-config-panel.png' });

  await page.screenshot({ path: 'test-results/routing-lesson-embedded.png', fullPage: true });

  const missing = haproxyMissing('the HAProxy half of the routing test');
  if (missing) console.log(missing);
  else {
    const selector = page.getByTestId('proxy-selector');
    await selector.locator('[data-testid=proxy-option][data-driver=haproxy]').click();
    await expect(selector).toHaveAttribute('data-driver', 'haproxy', { timeout: 60_000 });
    result = await send(tester, 'demo.localhost', '/api/');
    await expect(result).toHaveAttribute('data-driver', 'haproxy');
    await expect(result).toHaveAttribute('data-router', 'web_dynamic-1');
    await expect(result).toHaveAttribute('data-received', '/');
    await expect(result).toHaveAttribute('data-status', '200');
    result = await send(tester, 'api.localhost', '/');
    await expect(result).toHaveAttribute('data-router', 'web_dynamic-2');
    await check.getByTestId('check-run').click();
    await expect(check).toHaveAttribute('data-result', 'pass', { timeout: 30_000 });
    await tester.screenshot({ path: 'test-results/routing-tester-haproxy.png' });
  }

  // The browser itself reaches demo.localhost (Chromium sends *.localhost to loopback): the page, and the API under /api/.
  const proxyPort = new URL(lab.proxyUrl).port;
  const other = await page.context().newPage();
  const home = await other.goto(`http://demo.localhost:${proxyPort}/`);
  expect(home?.status()).toBe(200);
  expect(home?.headers()['x-served-by']).toMatch(/^web_static-/);
  const apiAnswer = await other.goto(`http://demo.localhost:${proxyPort}/api/`);
  expect(apiAnswer?.headers()['x-received-path']).toBe('/');
  expect(await apiAnswer?.json()).toHaveProperty('joke');
  await other.close();

  // Lesson 1 after this one: its routes exist here only on demo.localhost, so it offers its setup.
  await page.goto(`${lab.origin}/lessons/round-robin`);
  await expect(page.getByTestId('lesson-setup')).toContainText('/api/ → web_dynamic');
});
