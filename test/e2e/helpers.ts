/**
 * What several e2e specs do the same way on the page: the demo page's "Fetch web_dynamic", a
 * service's replica list, and whether HAProxy is installed for the HAProxy half of a spec.
 */
import { execFileSync } from 'node:child_process';
import type { FrameLocator, Locator, Page } from '@playwright/test';
import { expect } from './lab-fixture.ts';

/** Clicks "Fetch web_dynamic" `n` times in the demo page; returns the hostname of each answer, in order. */
export async function fetchDynamic(frame: FrameLocator, n: number): Promise<string[]> {
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

/** The replica list of `service` on the page (exactly one). */
export async function replicaList(page: Page, service: string): Promise<Locator> {
  const list = page.locator(`[data-testid=replica-list][data-service=${service}]`);
  await expect(list).toHaveCount(1);
  return list;
}

/**
 * Null when `haproxy -v` runs here; else the reason `what` (e.g. `the HAProxy half of the
 * routing test`) is skipped.
 */
export function haproxyMissing(what: string): string | null {
  try {
    execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    return null;
  } catch {
    return `haproxy is not installed (apt-get install haproxy): ${what} is skipped.`;
  }
}
