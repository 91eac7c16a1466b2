/**
 * Browser tests in a real Chromium. No browser download here: we use the system's Chromium
 * (CHROMIUM_PATH, else /usr/bin/chromium, else Playwright's own if someone installed it).
 */
import { existsSync } from 'node:fs';
import { defineConfig } from '@playwright/test';
import { chromium } from 'playwright-core';

function findChromium(): string {
  const candidates: Array<[string, string | undefined]> = [
    ['CHROMIUM_PATH', process.env.CHROMIUM_PATH],
    ['system Chromium', '/usr/bin/chromium'],
  ];
  let own: string | undefined;
  try {
    own = chromium.executablePath();
  } catch {
    own = undefined;
  }
  candidates.push(["Playwright's own Chromium", own]);
  if (process.env.CHROMIUM_PATH && !existsSync(process.env.CHROMIUM_PATH)) {
    throw new Error(`CHROMIUM_PATH is set to ${process.env.CHROMIUM_PATH}, which does not exist.`);
  }
  for (const [, p] of candidates) if (p && existsSync(p)) return p;
  throw new Error(
    'No Chromium found for the browser tests. Install one with `apt-get install -y chromium fonts-liberation` ' +
      '(or set CHROMIUM_PATH to a Chromium/Chrome binary). They are not skipped: the lessons are only tested in a real browser.',
  );
}

export default defineConfig({
  testDir: 'test/e2e',
  outputDir: 'test-results',
  // One lab at a time: each test file starts real processes on a small machine.
  workers: 1,
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  retries: 0,
  // Generous: the first start builds the web app and spawns 6 replicas on a loaded 2-core box.
  timeout: 240_000,
  expect: { timeout: 20_000 },
  // LAB_TEST_REPORT_DIR (set by .ci/run) adds a JSON report, added up with Vitest's into one line.
  reporter: process.env.LAB_TEST_REPORT_DIR
    ? [['list'], ['json', { outputFile: `${process.env.LAB_TEST_REPORT_DIR}/playwright.json` }]]
    : [['list']],
  use: {
    browserName: 'chromium',
    headless: true,
    viewport: { width: 1280, height: 900 },
    actionTimeout: 20_000,
    navigationTimeout: 60_000,
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: findChromium(),
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    },
  },
});
