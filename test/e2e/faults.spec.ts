/**
 * Faults from outside, on the page (real Chromium, real lab): a replica killed with SIGKILL by
 * someone else leaves the replica list; HAProxy killed with SIGKILL shows as down in the engine
 * selector; "Reset lab" brings HAProxy back on the same port with the lesson's replicas, and the
 * demo page's requests rotate over them again.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fetchDynamic, haproxyMissing, replicaList } from './helpers.ts';
import { test, expect } from './lab-fixture.ts';

/** The HAProxy master of the lab session `sessionId` (its work directory is `proxy-<sessionId>`). */
function haproxyMaster(sessionId: string): number | null {
  const procs: Array<{ pid: number; ppid: number }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (!/haproxy$/.test(cmd[0] ?? '') || !cmd.some((a) => a.includes(`proxy-${sessionId}`))) continue;
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] !== 'Z') procs.push({ pid: Number(name), ppid: Number(fields[1]) });
    } catch {
      // gone meanwhile
    }
  }
  return procs.find((p) => !procs.some((q) => q.pid === p.ppid))?.pid ?? null;
}

test('a replica and HAProxy dying on their own show on the page; Reset lab recovers', async ({ page, lab }) => {
  const skip = haproxyMissing('the faults test');
  test.skip(skip !== null, skip ?? '');
  await page.goto(lab.url);
  await expect(page.getByTestId('connection-state')).toHaveAttribute('data-state', 'ok');
  await page.getByTestId('lesson-list').getByRole('link', { name: 'Round-robin' }).click();
  const dynamic = await replicaList(page, 'web_dynamic');
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);

  // A replica dies on its own: it leaves the list (dynamic discovery, no restart policy).
  const before = await lab.status();
  const victim = before.services.find((s) => s.name === 'web_dynamic')!.instances[0];
  process.kill(victim.pid!, 'SIGKILL');
  await expect(dynamic.locator(`[data-testid=replica-row][data-hostname="${victim.hostname}"]`)).toHaveCount(0);
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(2);

  // HAProxy dies on its own: the engine selector says it is down, and why.
  const headers = { authorization: `Bearer ${lab.token}`, 'content-type': 'application/json' };
  const switched = await fetch(`${lab.origin}/api/proxy`, { method: 'POST', headers, body: JSON.stringify({ driver: 'haproxy' }) });
  expect(switched.status).toBe(200);
  await expect(page.getByTestId('proxy-selector')).toHaveAttribute('data-driver', 'haproxy');
  const port = (await lab.status()).proxy.port;
  const master = haproxyMaster(before.sessionId);
  expect(master).not.toBeNull();
  await expect(page.getByTestId('proxy-down')).toHaveCount(0);
  process.kill(master!, 'SIGKILL');
  const down = page.getByTestId('proxy-down');
  await expect(down).toContainText('HAProxy is down');
  await expect(down).toContainText('signal SIGKILL');
  await expect(down).toContainText(`port ${port}`);
  expect((await lab.status()).proxy.down).toMatch(/SIGKILL/);

  // Reset lab: HAProxy again on the same port, the lesson's three replicas, requests rotate.
  await page.getByTestId('reset-lab').click();
  await expect(page.getByTestId('reset-lab')).toHaveText('Reset lab', { timeout: 60_000 });
  await expect(down).toHaveCount(0);
  await expect(page.getByTestId('proxy-selector')).toHaveAttribute('data-driver', 'haproxy');
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
  const after = await lab.status();
  expect(after.proxy).toMatchObject({ driver: 'haproxy', port, down: null });
  const frame = page.frameLocator('[data-testid=demo-iframe]');
  const hosts = await fetchDynamic(frame, 3);
  expect(new Set(hosts).size).toBe(3);
});
