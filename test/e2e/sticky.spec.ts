/**
 * The Sticky sessions lesson in a real Chromium against the real lab: a PHP login behind
 * round-robin, the proxy's sticky cookie (shown, deleted, rewritten after a kill), an API client
 * without a cookie jar, header hashing measured, and the same login check on HAProxy with its
 * Runtime API console. Every claim the lesson makes about what the page shows is checked here.
 */
import type { FrameLocator, Locator, Page } from '@playwright/test';
import { haproxyMissing } from './helpers.ts';
import { test, expect, type RunningLab } from './lab-fixture.ts';

interface Answer {
  /** "Logged in as alice" or "Anonymous". */
  user: string;
  /** session_php replica that answered GET /session/. */
  session: string;
  /** web_static replica that served the page. */
  page: string;
}

const demo = (page: Page): FrameLocator => page.frameLocator('[data-testid=demo-iframe]');

/** Number of the newest Session history line (`#7` -> 7), 0 when there is none. */
async function newestSessionEntry(frame: FrameLocator): Promise<number> {
  const top = frame.getByTestId('session-history').locator('li').first();
  if ((await top.count()) === 0) return 0;
  return Number((await top.locator('.n').textContent())?.slice(1) ?? 0);
}

/** Presses "Reload frame" and waits for the new page's GET /session/ answer; returns what it shows. */
async function reloadFrame(page: Page): Promise<Answer> {
  const frame = demo(page);
  const before = await newestSessionEntry(frame);
  await page.getByRole('button', { name: 'Reload frame' }).click();
  // The history lives in the tab's sessionStorage: the new page shows the old lines, then its own answer.
  await expect(frame.getByTestId('session-history').locator('li').first().locator('.n')).toHaveText(`#${before + 1}`);
  return {
    user: (await frame.getByTestId('session-user').textContent())!.trim(),
    session: (await frame.getByTestId('session-replica').textContent())!.trim(),
    page: (await frame.getByTestId('served-by').textContent())!.trim(),
  };
}

/** Presses "Log in as alice" in the demo page; returns the replica that took the login. */
async function logIn(page: Page): Promise<string> {
  const frame = demo(page);
  const before = await newestSessionEntry(frame);
  await frame.getByTestId('login').click();
  await expect(frame.getByTestId('session-history').locator('li').first().locator('.n')).toHaveText(`#${before + 1}`);
  await expect(frame.getByTestId('session-user')).toHaveText('Logged in as alice');
  return (await frame.getByTestId('session-replica').textContent())!.trim();
}

async function reloads(page: Page, n: number): Promise<Answer[]> {
  const out: Answer[] = [];
  for (let i = 0; i < n; i++) out.push(await reloadFrame(page));
  return out;
}

/** The Set-Cookie the proxy last wrote for a service, as the CookieInspector shows it. */
function proxySetCookie(page: Page, service: string): Locator {
  return page.locator(`[data-testid=cookie-inspector] [data-testid=proxy-set-cookie][data-service=${service}]`);
}

async function lastSetCookieId(page: Page, service: string): Promise<number> {
  const el = proxySetCookie(page, service);
  if ((await el.count()) === 0) return 0;
  return Number(await el.getAttribute('data-request-id'));
}

async function openLesson(page: Page, lab: RunningLab) {
  await page.goto(`${lab.origin}/lessons/sticky-sessions?token=${lab.token}`);
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  await expect(page.getByRole('heading', { level: 1, name: 'Sticky sessions' })).toBeVisible();
}

/** The lab starts with the default topology: the lesson offers to set itself up. */
async function setUpLesson(page: Page) {
  const banner = page.getByTestId('lesson-setup');
  await expect(banner).toContainText('session_php');
  await page.getByTestId('lesson-setup-apply').click();
  await expect(banner).toHaveCount(0, { timeout: 90_000 });
  const php = page.locator('[data-testid=replica-list][data-service=session_php]');
  await expect(php.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
  return php;
}

test('sticky sessions: login lost behind round-robin, sticky cookie, delete, kill, API client, hashing; then HAProxy', async ({ page, lab }) => {
  test.setTimeout(420_000);
  await openLesson(page, lab);
  const php = await setUpLesson(page);
  // What runs each replica is shown (php when installed, else the Express stand-in says so).
  await expect(php.getByTestId('replica-implementation').first()).toContainText(/^runs on (php \d|express)/);
  const frame = demo(page);
  await expect(frame.getByTestId('session-user')).toHaveText(/Anonymous|Logged in/);

  // ---- Step 1: without stickiness the login holds only where it was made.
  const loginReplica = await logIn(page);
  const plain = await reloads(page, 6);
  expect(plain.map((a) => a.user), JSON.stringify(plain)).toContain('Anonymous');
  expect(new Set(plain.map((a) => a.session)).size).toBeGreaterThan(1);
  for (const a of plain) expect(a.user).toBe(a.session === loginReplica ? 'Logged in as alice' : 'Anonymous');
  // The panel's history marks the replicas that did not know the session.
  await expect(frame.locator('[data-testid=session-history] li[data-known=no]').first()).toContainText('did not know my session');
  // The timeline counts the /session/ requests per replica.
  await expect(page.locator('[data-testid=request-timeline][data-service=session_php] [data-testid=timeline-mark]')).not.toHaveCount(0);

  // ---- Step 2: sticky cookie on (every service); log in again; six reloads stay on one replica, logged in.
  const sticky = page.locator('[data-testid=sticky-switch][data-service=""]');
  await sticky.getByTestId('sticky-toggle').click();
  await expect(sticky).toHaveAttribute('data-sticky', 'on');
  await expect(sticky.getByTestId('sticky-toggle')).toHaveAttribute('aria-checked', 'true');
  const pinned = await logIn(page);
  const pinnedAnswers = await reloads(page, 6);
  expect(pinnedAnswers.map((a) => a.user)).toEqual(Array(6).fill('Logged in as alice'));
  expect(new Set(pinnedAnswers.map((a) => a.session))).toEqual(new Set([pinned]));
  // web_static is sticky too: the page itself stops rotating.
  expect(new Set(pinnedAnswers.map((a) => a.page)).size).toBe(1);

  // The cookie as the browser holds it, and as the proxy wrote it.
  const cookieName = (await sticky.locator('[data-testid=sticky-cookie-of][data-service=session_php]').textContent())!.trim();
  expect(cookieName).toMatch(/^_[0-9a-f]{5}$/);
  const inspector = page.getByTestId('cookie-inspector');
  const row = inspector.locator(`[data-testid=cookie-row][data-name="${cookieName}"]`);
  await expect(row).toBeVisible();
  await expect(row).toContainText('sticky cookie of session_php');
  await expect(row).toHaveAttribute('data-value', /^[0-9a-f]{16}$/); // Traefik: SHA-256 of the server URL, 16 hex digits
  await expect(proxySetCookie(page, 'session_php')).toContainText(`Set-Cookie: ${cookieName}=`);
  await expect(proxySetCookie(page, 'session_php')).toContainText('Path=/');
  // PHPSESSID is HttpOnly: never listed.
  await expect(inspector.locator('[data-testid=cookie-row][data-name=PHPSESSID]')).toHaveCount(0);
  // The running configuration shows the sticky cookie.
  const config = page.locator('[data-testid=proxy-config]').first();
  await expect(config).toHaveAttribute('data-driver', 'embedded');
  await expect(config.getByTestId('proxy-config-text')).toContainText(`"name": "${cookieName}"`);

  // A bad cookie name: the lab's sentence, nothing changed.
  await sticky.getByTestId('sticky-cookie-name').fill('my cookie');
  await sticky.getByTestId('sticky-cookie-apply').click();
  await expect(sticky.getByTestId('sticky-message')).toContainText('may only contain letters, digits, _ and -');
  await expect(sticky).toHaveAttribute('data-sticky', 'on');
  await sticky.getByTestId('sticky-cookie-name').fill('');

  // ---- Step 3: delete the cookie: the next request is balanced again and gets a NEW Set-Cookie.
  const setBefore = await lastSetCookieId(page, 'session_php');
  expect(setBefore).toBeGreaterThan(0);
  await inspector.getByRole('button', { name: `Delete cookie ${cookieName}` }).click();
  await expect(row).toHaveCount(0);
  await expect(inspector.getByTestId('cookie-message')).toContainText(`Deleted ${cookieName}`);
  const afterDelete = await reloadFrame(page);
  await expect.poll(() => lastSetCookieId(page, 'session_php')).toBeGreaterThan(setBefore);
  await expect(row).toBeVisible();
  // Re-pinned: the following reloads stay where the new cookie points.
  const repinned = await reloads(page, 2);
  expect(repinned.map((a) => a.session)).toEqual([afterDelete.session, afterDelete.session]);

  // ---- Step 4: log in on the pinned replica, kill it: another replica answers, anonymous, cookie rewritten.
  const victim = await logIn(page);
  expect(victim).toBe(afterDelete.session);
  const setBeforeKill = await lastSetCookieId(page, 'session_php');
  await php.getByRole('button', { name: `Kill ${victim}` }).click();
  await expect(php.locator(`[data-testid=replica-row][data-hostname="${victim}"]`)).toHaveCount(0);
  const afterKill = await reloadFrame(page);
  expect(afterKill.session).not.toBe(victim);
  expect(afterKill.user).toBe('Anonymous');
  await expect.poll(() => lastSetCookieId(page, 'session_php')).toBeGreaterThan(setBeforeKill);
  await expect(page.locator('[data-testid=request-timeline][data-service=session_php] [data-testid=timeline-mark].failed')).toHaveCount(0);
  expect((await reloadFrame(page)).session).toBe(afterKill.session);

  // ---- Step 5: an API client without a cookie jar loses stickiness; with one it keeps it.
  const apiClient = page.locator('[data-testid=api-burst][data-path="/session/"]');
  const runBurst = async (widget: Locator) => {
    const summary = widget.getByTestId('burst-summary');
    const before = (await summary.count()) ? Number(await summary.getAttribute('data-run')) : 0;
    await widget.getByTestId('burst-run').click();
    await expect(summary).toHaveAttribute('data-run', String(before + 1));
  };
  await runBurst(apiClient);
  await expect(apiClient.getByTestId('burst-chip')).toHaveCount(9);
  await expect(apiClient.getByTestId('burst-summary')).toHaveAttribute('data-replicas', '2');
  await expect(apiClient.getByTestId('burst-summary')).toHaveAttribute('data-set-cookies', '9');
  await apiClient.getByTestId('burst-reuse').check();
  await runBurst(apiClient);
  await expect(apiClient.getByTestId('burst-summary')).toContainText('one connection');
  await expect(apiClient.getByTestId('burst-summary')).toHaveAttribute('data-replicas', '2');
  await expect(apiClient.getByTestId('burst-summary')).toHaveAttribute('data-set-cookies', '9');
  await apiClient.getByTestId('burst-jar').check();
  await runBurst(apiClient);
  await expect(apiClient.getByTestId('burst-summary')).toContainText('cookie jar on');
  await expect(apiClient.getByTestId('burst-summary')).toHaveAttribute('data-replicas', '1');
  await expect(apiClient.getByTestId('burst-summary')).toHaveAttribute('data-set-cookies', '1');
  await expect(apiClient.getByTestId('burst-chip').first()).toHaveAttribute('data-set-cookie', 'yes');

  // ---- Step 6: header hashing when a 5th replica is added, measured for both hash types.
  const hash = page.getByTestId('hash-movement');
  await hash.getByTestId('hash-run').click();
  await expect(hash.getByTestId('hash-progress')).toContainText('sending 100 requests');
  const consistent = hash.locator('[data-testid=hash-result][data-type=consistent]');
  const mapBased = hash.locator('[data-testid=hash-result][data-type=map-based]');
  await expect(mapBased).toHaveAttribute('data-moved', /^\d+$/, { timeout: 120_000 });
  await expect(consistent).toHaveAttribute('data-moved', /^\d+$/);
  const movedC = Number(await consistent.getAttribute('data-moved'));
  const movedM = Number(await mapBased.getAttribute('data-moved'));
  await expect(consistent.getByTestId('hash-moved')).toHaveText(`moved ${movedC} of 100`);
  await expect(mapBased.getByTestId('hash-moved')).toHaveText(`moved ${movedM} of 100`);
  expect(movedC, `consistent moved ${movedC}, map-based ${movedM}`).toBeLessThan(movedM);
  expect(movedC).toBeLessThanOrEqual(45);
  expect(movedM).toBeGreaterThanOrEqual(55);
  await expect(hash.getByTestId('hash-explain')).toContainText(`moved ${movedC} of 100 ids under consistent hashing and ${movedM} under map-based`);
  // The 200 requests of the experiment did not push session_php's last Set-Cookie out of the inspector.
  await expect(proxySetCookie(page, 'session_php')).toHaveCount(1);
  // Now an API client without cookies but with X-Session-ID stays on one replica; without the header it does not.
  const hashed = page.locator('[data-testid=api-burst][data-path="/api/"]');
  await runBurst(hashed);
  await expect(hashed.getByTestId('burst-chip')).toHaveCount(8);
  await expect(hashed.getByTestId('burst-summary')).toHaveAttribute('data-replicas', '1');
  await expect(hashed.getByTestId('burst-summary')).toContainText('X-Session-ID: alice');
  await hashed.getByTestId('burst-header-on').uncheck();
  await runBurst(hashed);
  await expect(hashed.getByTestId('burst-summary')).not.toContainText('X-Session-ID');
  expect(Number(await hashed.getByTestId('burst-summary').getAttribute('data-replicas'))).toBeGreaterThan(1);

  // The Runtime API console is off on the embedded proxy and says so.
  const consoleWidget = page.getByTestId('runtime-console');
  await expect(consoleWidget.getByTestId('runtime-unavailable')).toContainText('has no Runtime API');
  await expect(consoleWidget.getByTestId('runtime-input')).toBeDisabled();
  // Traefik cannot run here: its button is disabled and the reason is written out.
  await expect(page.locator('[data-testid=proxy-option][data-driver=traefik]')).toBeDisabled();
  await expect(page.locator('[data-testid=proxy-reason][data-driver=traefik]')).toContainText('Traefik');

  await page.screenshot({ path: 'test-results/sticky-lesson-embedded.png', fullPage: true });
  await page.getByTestId('demo-frame').screenshot({ path: 'test-results/sticky-demo-frame-embedded.png' });
  await inspector.screenshot({ path: 'test-results/sticky-cookie-inspector.png' });
  await hash.screenshot({ path: 'test-results/sticky-hash-movement.png' });

  // ---- Step 7: the same on HAProxy.
  const missing = haproxyMissing('the HAProxy half of the sticky test');
  if (missing) {
    console.log(missing);
    test.info().annotations.push({ type: 'skipped part', description: missing });
    return;
  }
  const hostnames = (list: Locator) => list.getByTestId('replica-row').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.hostname));
  const replicasBefore = await hostnames(php);
  const selector = page.getByTestId('proxy-selector');
  await selector.locator('[data-testid=proxy-option][data-driver=haproxy]').click();
  await expect(selector).toHaveAttribute('data-driver', 'haproxy', { timeout: 60_000 });
  await expect(selector.getByTestId('proxy-message')).toContainText('Now running HAProxy');
  await expect(sticky).toHaveAttribute('data-sticky', 'on');

  // The replicas kept running: the same session_php replicas as before the switch.
  expect(await hostnames(php)).toEqual(replicasBefore);
  await expect(php.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(2);
  const haPinned = await logIn(page);
  const haAnswers = await reloads(page, 6);
  expect(haAnswers.map((a) => a.user)).toEqual(Array(6).fill('Logged in as alice'));
  expect(new Set(haAnswers.map((a) => a.session))).toEqual(new Set([haPinned]));
  // HAProxy's cookie value is the server's cookie, here the replica's name.
  await expect(inspector.locator(`[data-testid=cookie-row][data-name="${cookieName}"]`)).toHaveAttribute('data-value', haPinned);
  await expect(proxySetCookie(page, 'session_php')).toContainText(`Set-Cookie: ${cookieName}=`);

  // haproxy.cfg with the sticky cookie and the hash of the experiment.
  await expect(config).toHaveAttribute('data-driver', 'haproxy');
  await expect(config.getByTestId('proxy-config-text')).toContainText(`cookie ${cookieName} insert indirect nocache`);
  await expect(config.getByTestId('proxy-config-text')).toContainText('balance hdr(X-Session-ID)');
  await expect(config.getByTestId('proxy-config-text')).toContainText(`cookie ${haPinned}`);

  // The stats page link points at this host and answers.
  const stats = selector.getByTestId('stats-link');
  const href = (await stats.getAttribute('href'))!;
  expect(new URL(href).hostname).toBe('localhost');
  const statsPage = await page.request.get(href);
  expect(statsPage.status()).toBe(200);
  expect(await statsPage.text()).toContain('session_php');

  // The Runtime API console: HAProxy's own answers.
  await expect(consoleWidget).toHaveAttribute('data-available', 'yes');
  const input = consoleWidget.getByTestId('runtime-input');
  const output = consoleWidget.getByTestId('runtime-output');
  const run = async (command: string) => {
    const seq = Number(await output.getAttribute('data-seq'));
    await input.fill(command);
    await input.press('Enter');
    await expect(output).toHaveAttribute('data-seq', String(seq + 1));
    await expect(output).toHaveAttribute('data-command', command);
  };
  await run('show stat');
  for (const name of ['web_static', 'session_php', 'web_dynamic', 'BACKEND', haPinned]) await expect(output).toContainText(name);
  // The terminal prints the same answer (its visible rows hold the end of it).
  await expect(consoleWidget.getByTestId('runtime-terminal')).toContainText('BACKEND');
  const statRow = (server: string) => consoleWidget.locator(`[data-testid=runtime-stat-row][data-proxy=session_php][data-server="${server}"]`);
  await expect(statRow(haPinned)).toBeVisible();

  // disable server: MAINT in show stat, and the next reload is re-pinned elsewhere with a new cookie.
  const setBeforeDisable = await lastSetCookieId(page, 'session_php');
  await run(`disable server session_php/${haPinned}`);
  await run('show stat');
  await expect(statRow(haPinned)).toHaveAttribute('data-status', /^MAINT/);
  const afterDisable = await reloadFrame(page);
  expect(afterDisable.session).not.toBe(haPinned);
  await expect.poll(() => lastSetCookieId(page, 'session_php')).toBeGreaterThan(setBeforeDisable);
  await run(`enable server session_php/${haPinned}`);
  await run('show stat');
  await expect(statRow(haPinned)).not.toHaveAttribute('data-status', /^MAINT/);

  // add server: registered in maintenance until enabled.
  const port = (await lab.status()).services.find((s) => s.name === 'session_php')!.instances[0]!.port!;
  await run(`add server session_php/extra 127.0.0.1:${port}`);
  await expect(output).toContainText('New server registered');
  await run('show stat');
  await expect(statRow('extra')).toHaveAttribute('data-status', /^MAINT/);
  await run('enable server session_php/extra');
  await run('show stat');
  await expect(statRow('extra')).not.toHaveAttribute('data-status', /^MAINT/);

  // Commands outside the allowed list are refused with the list.
  await run('shutdown sessions server session_php/extra');
  await expect(output).toContainText('is not a command this console forwards');
  // Up brings back the previous command.
  await input.press('ArrowUp');
  await expect(input).toHaveValue('shutdown sessions server session_php/extra');
  await input.press('ArrowUp');
  await expect(input).toHaveValue('show stat');

  await page.screenshot({ path: 'test-results/sticky-lesson-haproxy.png', fullPage: true });
  await page.getByTestId('demo-frame').screenshot({ path: 'test-results/sticky-demo-frame-haproxy.png' });
  await page.locator('[data-testid=proxy-config]').last().screenshot({ path: 'test-results/sticky-haproxy-cfg.png' });
  await consoleWidget.screenshot({ path: 'test-results/sticky-runtime-console.png' });
  await selector.screenshot({ path: 'test-results/sticky-proxy-selector.png' });
});
