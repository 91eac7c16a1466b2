/**
 * The web_static page's Session panel in a real Chromium, against a real lab: the embedded proxy
 * round-robins web_static x2 and session_php x2 (real `php -S`, or the Express stand-in where PHP
 * is missing). What the sticky-session lesson shows: logged in on one replica, anonymous on the
 * next. And without session_php in the topology, the panel steps aside without disturbing the
 * page's own rotation.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { EventBus, type RequestCompleted } from '../../lab/events.ts';
import { Lab } from '../../lab/lab.ts';
import { EmbeddedProxy } from '../../lab/proxy/embedded/embedded-proxy.ts';
import { ProcessRuntime } from '../../lab/runtime/process-runtime.ts';
import { Topology } from '../../lab/topology.ts';

/** The system's Chromium (as playwright.config.ts finds it); no browser download happens here. */
function findChromium(): string {
  if (process.env.CHROMIUM_PATH) {
    if (!existsSync(process.env.CHROMIUM_PATH)) throw new Error(`CHROMIUM_PATH is set to ${process.env.CHROMIUM_PATH}, which does not exist.`);
    return process.env.CHROMIUM_PATH;
  }
  if (existsSync('/usr/bin/chromium')) return '/usr/bin/chromium';
  try {
    const own = chromium.executablePath();
    if (own && existsSync(own)) return own;
  } catch {
    // none
  }
  throw new Error('No Chromium found for the session panel test: `apt-get install -y chromium fonts-liberation`, or set CHROMIUM_PATH.');
}

interface RunningLab {
  lab: Lab;
  base: string;
  requests: RequestCompleted[];
  stateDir: string;
}

async function startLab(name: string, topology: Topology): Promise<RunningLab> {
  const stateDir = mkdtempSync(path.join(tmpdir(), `lab-panel-${name}-`));
  const bus = new EventBus();
  const requests: RequestCompleted[] = [];
  bus.on('request:completed', (r) => requests.push(r));
  const sessionId = `panel${name}${process.pid}`;
  const lab = new Lab({
    runtime: new ProcessRuntime({ sessionId, stateDir }),
    proxy: new EmbeddedProxy({ bus }),
    bus,
    sessionId,
    proxyListen: { host: '127.0.0.1', port: 0 },
    topology,
  });
  await lab.start();
  return { lab, base: `http://localhost:${lab.status().proxy.port}`, requests, stateDir };
}

async function stopLab(running: RunningLab | undefined): Promise<void> {
  if (!running) return;
  const pids = running.lab.status().services.flatMap((s) => s.instances.map((r) => r.pid!));
  await running.lab.stop();
  for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  rmSync(running.stateDir, { recursive: true, force: true });
}

let browser: Browser;
let withSession: RunningLab;
let withoutSession: RunningLab;

beforeAll(async () => {
  [withSession, withoutSession, browser] = await Promise.all([
    startLab(
      'on',
      Topology.parse({
        services: { web_static: { replicas: 2 }, session_php: { replicas: 2 } },
        routes: [
          { service: 'session_php', pathPrefix: '/session/', stripPrefix: true },
          { service: 'web_static', pathPrefix: '/' },
        ],
      }),
    ),
    startLab('off', Topology.parse({ services: { web_static: { replicas: 2 } }, routes: [{ service: 'web_static', pathPrefix: '/' }] })),
    chromium.launch({
      executablePath: findChromium(),
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    }),
  ]);
});

afterAll(async () => {
  await browser?.close();
  await Promise.all([stopLab(withSession), stopLab(withoutSession)]);
});

/** Vitest's polling stands in for Playwright's web-first assertions (this runs under Vitest). */
const text = (page: Page, id: string) => expect.poll(async () => ((await page.getByTestId(id).textContent()) ?? '').trim());
const visible = (page: Page, id: string) => expect.poll(() => page.getByTestId(id).isVisible());

/** The history lines, newest first, as `<action> <replica> <known>` (`known`: yes, no, none). */
async function historyOf(page: Page): Promise<string[]> {
  return page
    .getByTestId('session-history')
    .locator('li')
    .evaluateAll((lis) => lis.map((li) => `${(li.textContent ?? '').split(' ')[1]} ${(li as HTMLElement).dataset.replica} ${(li as HTMLElement).dataset.known}`));
}

/** Loads the page and waits for the panel's first answer (one more history line than before). */
async function loadPage(page: Page, base: string, how: 'goto' | 'reload', historyBefore: number): Promise<void> {
  if (how === 'goto') await page.goto(`${base}/`);
  else await page.reload();
  await expect.poll(() => page.getByTestId('session-history').locator('li').count()).toBe(Math.min(historyBefore + 1, 10));
}

describe('web_static session panel', () => {
  test('behind round-robin, the login flips between session replicas; the page stays one web_static request per load', async () => {
    const { base, lab, requests } = withSession;
    const sessionReplicas = lab.status().services.find((s) => s.name === 'session_php')!.instances;
    expect(sessionReplicas).toHaveLength(2);
    const implementation = sessionReplicas[0].implementation!;
    expect(implementation).toMatch(/^(php \d+\.\d+\.\d+|express \(php not found\))/);
    const context = await browser.newContext();
    const page = await context.newPage();
    try {
      const before = requests.length;
      await loadPage(page, base, 'goto', 0);
      await text(page, 'session-user').toBe('Anonymous');
      const first = (await page.getByTestId('session-replica').textContent())!;
      expect(first).toMatch(/^session_php-\d-[0-9a-f]{4}$/);
      await text(page, 'session-backend').toBe(implementation);
      await visible(page, 'session-note').toBe(false);
      // One page load: one web_static request, one session_php request.
      await expect.poll(() => requests.length - before).toBe(2);
      expect(requests.slice(before).map((r) => r.service).sort()).toEqual(['session_php', 'web_static']);

      // Log in with the keyboard: the button is a real, focusable button.
      await page.getByTestId('login').focus();
      await page.keyboard.press('Enter');
      await text(page, 'session-user').toBe('Logged in as alice');
      const loggedInOn = (await page.getByTestId('session-replica').textContent())!;
      expect(loggedInOn).not.toBe(first); // round-robin: the login went to the other replica
      expect((await context.cookies()).map((c) => c.name)).toContain('PHPSESSID');

      // Reload: the next GET /session/ lands on the replica that never saw the login.
      await loadPage(page, base, 'reload', 2);
      await text(page, 'session-user').toBe('Anonymous');
      await text(page, 'session-replica').toBe(first);
      // And again: back on the replica that has the login.
      await loadPage(page, base, 'reload', 3);
      await text(page, 'session-user').toBe('Logged in as alice');
      await text(page, 'session-replica').toBe(loggedInOn);

      // The history survives reloads (per tab) and says who knew the session.
      expect(await historyOf(page)).toEqual([
        `load ${loggedInOn} yes`,
        `load ${first} no`,
        `login ${loggedInOn} none`,
        `load ${first} none`,
      ]);
      expect(await page.getByTestId('session-history').locator('li').nth(1).textContent()).toContain('did not know my session · anonymous');
      expect(await page.getByTestId('session-history').locator('li').first().textContent()).toContain('knew my session · alice');

      // The page itself kept rotating over web_static: 3 loads, alternating between the 2 replicas.
      const pages = requests.slice(before).filter((r) => r.service === 'web_static').map((r) => r.replica);
      expect(pages).toHaveLength(3);
      expect(pages[0]).not.toBe(pages[1]);
      expect(pages[2]).toBe(pages[0]);

      // Log out (from the replica that answers next, the one that never saw the login).
      await page.getByTestId('logout').click();
      await expect.poll(() => page.getByTestId('session-history').locator('li').count()).toBe(5);
      await text(page, 'session-user').toBe('Anonymous');
    } finally {
      await context.close();
    }
  });

  test('without session_php (404) the panel is replaced by a one-line note, and auto-reload does not ask again', async () => {
    const { base, requests } = withoutSession;
    const context = await browser.newContext();
    const page = await context.newPage();
    const sessionRequests: string[] = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname.startsWith('/session/')) sessionRequests.push(r.url());
    });
    try {
      await page.goto(`${base}/`);
      await visible(page, 'session-note').toBe(true);
      await text(page, 'session-note').toContain('/session/ answered 404');
      await visible(page, 'session-panel').toBe(false);
      await visible(page, 'session-error').toBe(false);
      expect(sessionRequests).toHaveLength(1);

      // "Check again" asks once more (still 404).
      await page.getByTestId('session-recheck').click();
      await expect.poll(() => sessionRequests.length).toBe(2);
      await expect.poll(() => requests.filter((r) => r.path === '/session/').length).toBe(2); // answered
      await visible(page, 'session-note').toBe(true);

      // Auto-reload: each reload is one request, so web_static's two replicas alternate.
      const before = requests.length;
      const served: string[] = [];
      page.on('load', () => {
        page
          .getByTestId('served-by')
          .textContent({ timeout: 5000 })
          .then((t) => void (t && served.push(t)))
          .catch(() => {}); // the page may already be reloading again
      });
      await page.getByTestId('auto-reload').check();
      await expect.poll(() => served.length, { timeout: 20_000 }).toBeGreaterThanOrEqual(3);
      await page.getByTestId('auto-reload').uncheck();
      expect(sessionRequests).toHaveLength(2); // none during auto-reload
      await text(page, 'session-note').toContain('not asked again while auto-reloading');
      for (let i = 1; i < 3; i++) expect(served[i]).not.toBe(served[i - 1]);
      // The proxy saw only page loads meanwhile: no /session/ request took a turn of the rotation.
      const paths = requests.slice(before).map((r) => r.path);
      expect(paths.length).toBeGreaterThanOrEqual(3);
      expect(new Set(paths)).toEqual(new Set(['/']));
    } finally {
      await context.close();
    }
  });

  test('?session=off turns the panel off without asking', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const sessionRequests: string[] = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname.startsWith('/session/')) sessionRequests.push(r.url());
    });
    try {
      await page.goto(`${withSession.base}/?session=off`);
      await text(page, 'session-note').toMatch(/Session panel off/);
      await visible(page, 'session-panel').toBe(false);
      await visible(page, 'session-recheck').toBe(false);
      expect(sessionRequests).toEqual([]);
    } finally {
      await context.close();
    }
  });
});
