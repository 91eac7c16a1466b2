/**
 * Shared by the flood e2e test and the benchmark: a paced flood of requests from Node against the
 * proxy, and the page's frame gaps (requestAnimationFrame deltas) measured while it arrives.
 */
import type { Page } from 'playwright-core';

/** Starts recording the gap between consecutive animation frames in the page. */
export async function watchFrames(page: Page): Promise<void> {
  // A string, not a function: tsx (the benchmark) would wrap a named arrow in a helper the page lacks.
  await page.evaluate(`(() => {
    window.__frameGaps = [];
    window.__watching = true;
    let last = performance.now();
    const tick = (now) => {
      window.__frameGaps.push(now - last);
      last = now;
      if (window.__watching) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  })()`);
}

export interface FrameGaps {
  frames: number;
  p99Ms: number;
  maxMs: number;
}

/** Stops recording; the longest and the 99th-percentile frame gap (ms, rounded to 0.1). */
export async function stopFrames(page: Page): Promise<FrameGaps> {
  const gaps = await page.evaluate(() => {
    const w = window as unknown as { __frameGaps: number[]; __watching: boolean };
    w.__watching = false;
    return w.__frameGaps;
  });
  const sorted = [...gaps].sort((a, b) => a - b);
  const round = (x: number) => Math.round(x * 10) / 10;
  const p99 = sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)] : 0;
  return { frames: sorted.length, p99Ms: round(p99), maxMs: round(sorted.at(-1) ?? 0) };
}

/**
 * Sends `total` GETs to `url` spread evenly over `seconds` (a tick every 50 ms sends what is due,
 * without waiting for answers). Resolves when every answer is in.
 */
export async function pacedFlood(url: string, total: number, seconds: number): Promise<{ sent: number; failed: number; ms: number }> {
  const started = performance.now();
  const pending: Promise<void>[] = [];
  let sent = 0;
  let failed = 0;
  const one = async () => {
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      if (!res.ok) failed++;
    } catch {
      failed++;
    }
  };
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / (seconds * 1000)) * total) + 1);
    while (sent < due) {
      sent++;
      pending.push(one());
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await Promise.all(pending);
  return { sent, failed, ms: Math.round(performance.now() - started) };
}
