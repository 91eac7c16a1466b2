/**
 * Docker mode in a real Chromium: `npm start -- --runtime docker`, the round-robin lesson's
 * widgets unchanged, every replica a container (its id and address on the page), the demo page's
 * "Fetch web_dynamic" rotating over them, scale and kill from the replica list, a fault, the
 * replicas' own container logs in the terminal, HAProxy in a container from the engine selector.
 * Teardown (lab-fixture.ts) checks that no container or network of the lab is left.
 * Skipped, saying why, without a Docker engine (fails instead with LAB_REQUIRE_DOCKER=1).
 */
import { connectDocker } from '../../lab/runtime/docker/docker-client.ts';
import { fetchDynamic, replicaList } from './helpers.ts';
import { test, expect } from './lab-fixture.ts';

const docker = await connectDocker().then(
  () => null,
  (err: Error) => err.message,
);
if (docker && process.env.LAB_REQUIRE_DOCKER === '1') throw new Error(`LAB_REQUIRE_DOCKER=1 but ${docker}`);

test.use({ labArgs: ['--runtime', 'docker'] });

test('Docker mode: the round-robin lesson over containers, scale, kill, fault, logs, HAProxy in a container', async ({ page, lab }) => {
  test.skip(docker !== null, `Docker mode e2e skipped: ${docker}`);
  test.setTimeout(300_000);
  const status = await lab.status();
  expect(status.runtime).toBe('docker');

  await page.goto(lab.url);
  await page.goto(`${lab.origin}/lessons/round-robin`);
  await expect(page.getByRole('heading', { level: 1, name: 'Round-robin' })).toBeVisible();

  // Every replica is a container: the list shows its id and its address on the lab network.
  const dynamic = await replicaList(page, 'web_dynamic');
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(3);
  const containers = dynamic.getByTestId('replica-container');
  await expect(containers).toHaveCount(3);
  for (const text of await containers.allTextContents()) expect(text).toMatch(/^container [0-9a-f]{12} at \d+\.\d+\.\d+\.\d+$/);
  const fromApi = (await lab.status()).services.find((s) => s.name === 'web_dynamic')!.instances;
  expect(fromApi.every((r) => r.pid === null && /^[0-9a-f]{12}$/.test(r.containerId ?? ''))).toBe(true);

  // The same demo page and button: three clicks, three containers, in turn.
  const frame = page.frameLocator('[data-testid=demo-iframe]');
  await expect(frame.getByTestId('served-by')).toHaveText(/^web_static-/);
  const three = await fetchDynamic(frame, 3);
  expect(new Set(three).size).toBe(3);
  expect([...three].sort()).toEqual(fromApi.map((r) => r.hostname).sort());

  // Scale to 4 from the widget: a fourth container joins the rotation.
  await dynamic.getByTestId('scale-input').fill('4');
  await dynamic.getByTestId('scale-apply').click();
  await expect(dynamic.getByTestId('replica-message')).toContainText('web_dynamic now has 4 replicas', { timeout: 120_000 });
  await expect(dynamic.locator('[data-testid=replica-row][data-state=running]')).toHaveCount(4);
  const four = await fetchDynamic(frame, 4);
  expect(new Set(four).size).toBe(4);

  // Kill one with its button (docker kill): it leaves the list and the rotation.
  const victim = four[0];
  await dynamic.getByRole('button', { name: `Kill ${victim}` }).click();
  await expect(dynamic.locator(`[data-testid=replica-row][data-hostname="${victim}"]`)).toHaveCount(0);
  const next = await fetchDynamic(frame, 3);
  expect(next).not.toContain(victim);

  // A fault through the container's fault file: the row shows it.
  const target = next[0];
  const res = await fetch(`${lab.origin}/api/replicas/${target}/fault`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${lab.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ mode: 'slow', ms: 200 }),
  });
  expect(res.status).toBe(200);
  await expect(dynamic.locator(`[data-testid=replica-row][data-hostname="${target}"] [data-testid=replica-fault]`)).toHaveText('slow 200 ms');

  // The terminal streams the containers' own logs (demultiplexed): the stripped path they received.
  const terminal = page.getByTestId('log-terminal');
  await expect(terminal).toContainText(/web_dynamic-\d+-[0-9a-f]+ \d+\.\d+\.\d+\.\d+ GET \/ 200/);

  // HAProxy from the engine selector runs in a container; the same replicas keep answering.
  const selector = page.getByTestId('proxy-selector');
  await selector.locator('[data-testid=proxy-option][data-driver=haproxy]').click();
  // Done when the switch answered (status names the new engine while it is still starting).
  await expect(selector.getByTestId('proxy-message')).toContainText('Now running HAProxy', { timeout: 120_000 });
  expect((await lab.status()).proxy.driver).toBe('haproxy');
  const viaHaproxy = await fetchDynamic(frame, 3);
  expect(new Set(viaHaproxy).size).toBe(3);
  await page.screenshot({ path: 'test-results/docker-mode.png', fullPage: false });
});
