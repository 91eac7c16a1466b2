/**
 * Lesson 05's packet capture: Record, 3 requests through the proxy, Stop, Download .pcap (fetched
 * with the token, saved through a Blob URL): the saved file is a pcap with the requests in it.
 * Runs where tcpdump can (root with tcpdump installed, as .ci/run sets up).
 */
import { readFileSync } from 'node:fs';
import { test, expect } from './lab-fixture.ts';

test('lesson 05 records the traffic to a .pcap the page downloads', async ({ page, lab }) => {
  await page.goto(lab.url);
  await page.getByTestId('lesson-list').getByRole('link', { name: 'Keep-alive and idle timeouts' }).click();
  const widget = page.getByTestId('capture-button');
  await expect(widget).toHaveAttribute('data-state', 'idle');
  await expect(widget.getByTestId('capture-download')).toBeDisabled();

  await widget.getByTestId('capture-record').click();
  await expect(widget).toHaveAttribute('data-state', 'recording');
  await expect(widget.getByTestId('capture-recording')).toContainText(String(new URL(lab.proxyUrl).port));

  const target = `${lab.proxyUrl.replace('localhost', '127.0.0.1')}api/`;
  for (let i = 0; i < 3; i++) {
    const res = await fetch(target);
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  }

  await widget.getByTestId('capture-stop').click();
  await expect(widget).toHaveAttribute('data-state', 'recorded');
  await expect(widget.getByTestId('capture-last')).toContainText(/Last capture: .*stopped/);

  const [download] = await Promise.all([page.waitForEvent('download'), widget.getByTestId('capture-download').click()]);
  expect(download.suggestedFilename()).toMatch(/^balancer-lab-.*\.pcap$/);
  const bytes = readFileSync(await download.path());
  expect(bytes.length).toBeGreaterThan(24);
  expect(['d4c3b2a1', 'a1b2c3d4', '4d3cb2a1', 'a1b23c4d']).toContain(bytes.subarray(0, 4).toString('hex'));
  expect(bytes.includes(Buffer.from('GET /api/ HTTP/1.1'))).toBe(true);
  await expect(widget.getByTestId('capture-message')).toContainText(/Saved balancer-lab-.*\.pcap/);
});
