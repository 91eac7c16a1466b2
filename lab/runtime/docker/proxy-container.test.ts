/**
 * ProxyContainers on a real engine, with the offline base image (a plain Debian: `sh`, `sleep`,
 * `test`) standing in for a proxy binary: what HAProxy and Traefik in containers share. Short-lived
 * runs (exit code, both streams, the work directory at its own path, written as the lab's uid),
 * a long-lived container (lines, exec, SIGTERM handled, SIGTERM ignored -> SIGKILL, killed from
 * outside or crashed: removed all the same), a start that fails, and the sweeps (leftovers of
 * ended labs go, a running lab's and the other engine's stay). No container of this file is left
 * (asserted).
 *
 * Skipped, saying why, when Docker is not reachable or the base image is missing (an error with
 * LAB_REQUIRE_DOCKER=1, as CI sets it).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectDocker, LABEL_OWNER, LABEL_ROLE, LABEL_SESSION, labelFilter, ownerLabel, type Docker } from './docker-client.ts';
import { OFFLINE_BASE } from './images.ts';
import { LABEL_ENGINE, LABEL_WORKDIR, ProxyContainers, type ProxyContainer } from './proxy-container.ts';

const IMAGE = process.env.LAB_DOCKER_BASE || OFFLINE_BASE;
const docker = await connectDocker().catch((e: Error) => {
  console.warn(`proxy-container: skipped: ${e.message}`);
  return null;
});
const hasImage = docker ? await docker.getImage(IMAGE).inspect().then(() => true, () => false) : false;
if (docker && !hasImage) console.warn(`proxy-container: skipped: the image ${IMAGE} is missing (sandbox-images/base/build-offline-base.sh makes it).`);
if ((!docker || !hasImage) && process.env.LAB_REQUIRE_DOCKER === '1') throw new Error('LAB_REQUIRE_DOCKER=1 but Docker or its base image is missing.');

/** This file's sessions: the one its hosts use, and one for hand-made leftovers. */
const SESSION = `pc${process.pid}-${randomBytes(3).toString('hex')}`;
const OTHER = `${SESSION}-old`;

describe.skipIf(!docker || !hasImage)('ProxyContainers on a real engine', () => {
  const d = docker as Docker;
  let root: string;
  const started: ProxyContainer[] = [];
  const shell = (runTimeoutMs?: number) => new ProxyContainers({ docker: d, sessionId: SESSION, engine: 'traefik', image: IMAGE, entrypoint: ['sh', '-c'], runTimeoutMs });
  const ours = async (session = SESSION) => (await d.listContainers({ all: true, filters: labelFilter(session) })).map((c) => c.Id);

  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-pc-'));
  });

  afterEach(async () => {
    for (const c of started.splice(0)) await c.stop(0);
  });

  afterAll(async () => {
    for (const session of [SESSION, OTHER]) for (const id of await ours(session)) await d.getContainer(id).remove({ force: true });
    fs.rmSync(root, { recursive: true, force: true });
    expect([...(await ours(SESSION)), ...(await ours(OTHER))]).toEqual([]);
  });

  it('refuses a session id that cannot be a label', () => {
    expect(() => new ProxyContainers({ docker: d, sessionId: 'a b', engine: 'haproxy', image: IMAGE })).toThrow(/^The session id "a b" must be 1 to 40 letters/);
  });

  it('runOnce: exit code and both streams; the work directory is mounted at its own path and written as the lab uid; nothing is left', async () => {
    const dir = fs.mkdtempSync(path.join(root, 'run-'));
    const r = await shell().runOnce([`echo out; echo err >&2; pwd; touch ${dir}/made; exit 3`], dir);
    expect(r.code).toBe(3);
    expect(r.lines).toEqual(expect.arrayContaining(['out', 'err', dir]));
    expect(fs.statSync(path.join(dir, 'made')).uid).toBe(process.getuid!());
    expect(await ours()).toEqual([]);
  });

  it('runOnce that does not end in time: a sentence, and its container is removed', async () => {
    await expect(shell(500).runOnce(['sleep 30'], null)).rejects.toThrow(/^sh -c sleep 30 did not finish within 500 ms in its container\.$/);
    expect(await ours()).toEqual([]);
  });

  it('start: labels, lines with their stream, exec, SIGTERM handled -> exit 0 after its last line, container removed', async () => {
    const workDir = fs.mkdtempSync(path.join(root, 'w-'));
    const lines: Array<[string, string]> = [];
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => (ready = resolve));
    const c = await shell().start({
      workDir,
      args: ['trap "echo bye; exit 0" TERM; echo ready; echo oops >&2; while :; do sleep 0.05; done'],
      onLine: (line, stream) => {
        lines.push([stream, line]);
        if (line === 'ready') ready();
      },
    });
    started.push(c);
    await isReady;
    expect(c.name).toMatch(new RegExp(`^balancer-lab-traefik-${SESSION}-[0-9a-f]{8}$`));
    const [info] = await d.listContainers({ all: true, filters: labelFilter(SESSION, 'proxy') });
    expect(info.Labels).toMatchObject({ [LABEL_SESSION]: SESSION, [LABEL_ROLE]: 'proxy', [LABEL_ENGINE]: 'traefik', [LABEL_WORKDIR]: workDir, [LABEL_OWNER]: ownerLabel() });
    expect(info.HostConfig.NetworkMode).toBe('host');
    expect(c.hostPid).toEqual(expect.any(Number)); // this engine runs on this kernel
    expect(await c.exec(['test', '-d', workDir])).toBe(0);
    expect(await c.exec(['test', '-d', '/proc/999999'])).toBe(1);
    await c.stop(5000);
    expect(await c.exited).toEqual({ code: 0, signal: null });
    expect(lines).toEqual(expect.arrayContaining([['stdout', 'ready'], ['stderr', 'oops'], ['stdout', 'bye']]));
    expect(await ours()).toEqual([]);
    await expect(c.exec(['true'])).rejects.toThrow();
  });

  it('stop escalates: a PID 1 that ignores SIGTERM is SIGKILLed after the grace period', async () => {
    const workDir = fs.mkdtempSync(path.join(root, 'w-'));
    // `sleep` as PID 1 has no SIGTERM handler, and the kernel drops default-action signals to PID 1.
    const c = await shell().start({ workDir, args: ['exec sleep 600'], onLine: () => {} });
    started.push(c);
    const t0 = Date.now();
    await c.stop(400);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(390);
    expect(await c.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(await ours()).toEqual([]);
  });

  it('killed from outside or crashed: exited says how, after its last line, and its container is gone; stop() then has nothing left to do', async () => {
    const workDir = fs.mkdtempSync(path.join(root, 'w-'));
    const c = await shell().start({ workDir, args: ['exec sleep 600'], onLine: () => {} });
    started.push(c);
    await d.getContainer(c.id).kill({ signal: 'SIGKILL' });
    expect(await c.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(await ours()).toEqual([]);
    await c.stop(3000);
    const lines: string[] = [];
    const crashed = await shell().start({ workDir, args: ['echo dying; exit 2'], onLine: (l) => lines.push(l) });
    started.push(crashed);
    expect(await crashed.exited).toEqual({ code: 2, signal: null });
    expect(lines).toEqual(['dying']);
    expect(await ours()).toEqual([]);
  });

  it('a start that fails is a sentence naming the engine and image, and leaves nothing', async () => {
    const workDir = fs.mkdtempSync(path.join(root, 'w-'));
    const bad = new ProxyContainers({ docker: d, sessionId: SESSION, engine: 'haproxy', image: IMAGE, entrypoint: ['no-such-program'] });
    await expect(bad.start({ workDir, args: [], onLine: () => {} })).rejects.toThrow(new RegExp(`^Could not start HAProxy in a container of ${IMAGE}: .*no-such-program.*\\.$`));
    expect(await ours()).toEqual([]);
  });

  it("sweeps: an ended lab's containers go (per work dir, or under a parent dir), a running lab's and the other engine's stay", async () => {
    const host = os.hostname();
    const ended = `${host}/999999999/1`; // no such pid: its lab is gone
    const running = `${host}/${process.ppid}/-`; // vitest's main process
    const leftover = async (name: string, engine: string, owner: string, workDir: string) =>
      (
        await d.createContainer({
          name: `balancer-lab-${engine}-${OTHER}-${name}`,
          Image: IMAGE,
          Cmd: ['sleep', '600'],
          Labels: { [LABEL_SESSION]: OTHER, [LABEL_ROLE]: 'proxy', [LABEL_ENGINE]: engine, [LABEL_OWNER]: owner, [LABEL_WORKDIR]: workDir },
        })
      ).id;
    const inside = (n: string) => path.join(root, n);
    await leftover('dead', 'traefik', ended, inside('a'));
    const deadElsewhere = await leftover('elsewhere', 'traefik', ended, path.join(os.tmpdir(), `not-${SESSION}`));
    const alive = await leftover('alive', 'traefik', running, inside('b'));
    const haproxy = await leftover('haproxy', 'haproxy', ended, inside('c'));
    await leftover('deaddir', 'traefik', ended, inside('d'));
    const host1 = shell();
    expect(await host1.sweepWorkDir(inside('b'))).toBe(false); // a running lab's
    expect(await host1.sweepWorkDir(inside('c'))).toBe(false); // HAProxy's: not this engine
    expect(await host1.sweepWorkDir(inside('d'))).toBe(true);
    expect(await host1.sweepLeftovers(root)).toBe(1); // `dead`; not the one outside root
    expect((await ours(OTHER)).sort()).toEqual([deadElsewhere, alive, haproxy].sort());
    expect(await host1.sweepLeftovers()).toBe(1); // anywhere: `elsewhere`
    expect((await ours(OTHER)).sort()).toEqual([alive, haproxy].sort());
    // This session's own containers are never leftovers of an earlier lab.
    fs.mkdirSync(inside('e'));
    const mine = await shell().start({ workDir: inside('e'), args: ['exec sleep 600'], onLine: () => {} });
    started.push(mine);
    expect(await host1.sweepLeftovers()).toBe(0);
    // ...but its own work directory's container is (start() of a driver sweeps it first).
    expect(await host1.sweepWorkDir(inside('e'))).toBe(true);
    expect(await mine.exited).toEqual({ code: null, signal: 'SIGKILL' });
  });
});
