import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import {
  connectDocker,
  DockerUnavailableError,
  followLogs,
  LABEL_ROLE,
  LABEL_SESSION,
  labelFilter,
  ownerAlive,
  ownerLabel,
  type Docker,
} from './docker-client.ts';

const BASE = process.env.LAB_DOCKER_BASE || 'balancer-lab/base:bookworm';

describe('connectDocker without Docker', () => {
  it('rejects with one sentence naming the socket and offering process mode (DOCKER_HOST at a missing socket)', async () => {
    const saved = process.env.DOCKER_HOST;
    process.env.DOCKER_HOST = 'unix:///tmp/nope.sock';
    try {
      const err = await connectDocker().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DockerUnavailableError);
      const message = (err as Error).message;
      expect(message).toBe(
        'Docker is not reachable at /tmp/nope.sock (connect ENOENT): start Docker, or run the lab in process mode with `npm start` (no --runtime docker).',
      );
      expect(message).not.toMatch(/\n|    at /);
    } finally {
      if (saved === undefined) delete process.env.DOCKER_HOST;
      else process.env.DOCKER_HOST = saved;
    }
  });

  it('names a socket path that cannot exist', async () => {
    const err = (await connectDocker({ socketPath: '/dev/null/none.sock' }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(DockerUnavailableError);
    expect(err.message).toMatch(/^Docker is not reachable at \/dev\/null\/none\.sock \(connect E[A-Z]+\): start Docker/);
  });

  it('names a tcp:// DOCKER_HOST that refuses', async () => {
    const saved = process.env.DOCKER_HOST;
    process.env.DOCKER_HOST = 'tcp://127.0.0.1:1';
    try {
      await expect(connectDocker()).rejects.toThrow(
        'Docker is not reachable at tcp://127.0.0.1:1 (connect ECONNREFUSED): start Docker, or run the lab in process mode with `npm start` (no --runtime docker).',
      );
    } finally {
      if (saved === undefined) delete process.env.DOCKER_HOST;
      else process.env.DOCKER_HOST = saved;
    }
  });

  it('refuses a malformed DOCKER_HOST with a sentence', async () => {
    const saved = process.env.DOCKER_HOST;
    process.env.DOCKER_HOST = 'ftp://x';
    try {
      await expect(connectDocker()).rejects.toThrow(/^DOCKER_HOST must look like unix:\/\//);
    } finally {
      if (saved === undefined) delete process.env.DOCKER_HOST;
      else process.env.DOCKER_HOST = saved;
    }
  });
});

describe('owner labels (what a sweep may remove)', () => {
  it('this process is alive; a process that exited, a recycled pid, or no label are not', () => {
    const mine = ownerLabel();
    expect(mine).toMatch(new RegExp(`^${os.hostname()}/${process.pid}/(\\d+|-)$`));
    expect(ownerAlive(mine)).toBe(true);
    const child = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    expect(ownerAlive(`${os.hostname()}/${child.stdout.trim()}/1`)).toBe(false);
    // Our own pid with another start time: a recycled pid, not the lab that made the object.
    expect(ownerAlive(`${os.hostname()}/${process.pid}/1`)).toBe(false);
    expect(ownerAlive(undefined)).toBe(false);
    expect(ownerAlive('garbage')).toBe(false);
    // Another host (e.g. a lab in a container): cannot be told, so it is left alone.
    expect(ownerAlive(`not-${os.hostname()}/1/1`)).toBe(true);
  });
});

const docker = await connectDocker().catch((e: Error) => {
  console.warn(`docker-client: real-Docker tests skipped: ${e.message}`);
  return null;
});
const hasBase = docker ? await docker.getImage(BASE).inspect().then(() => true, () => false) : false;
if (docker && !hasBase) console.warn(`docker-client: followLogs test skipped: image ${BASE} is missing (sandbox-images/base/build-offline-base.sh makes it).`);

describe.skipIf(!docker || !hasBase)('followLogs on a real container', () => {
  const session = `t${randomBytes(4).toString('hex')}`;

  afterAll(async () => {
    const d = docker as Docker;
    for (const c of await d.listContainers({ all: true, filters: labelFilter(session) })) {
      await d.getContainer(c.Id).remove({ force: true }).catch(() => {});
    }
    expect(await d.listContainers({ all: true, filters: labelFilter(session) })).toEqual([]);
  });

  it('splits multiplexed stdout and stderr into lines, and ends when the container exits', async () => {
    const d = docker as Docker;
    const container = await d.createContainer({
      name: `balancer-lab-${session}-logs`,
      Image: BASE,
      // Two lines in one write on stderr, interleaved with stdout.
      Cmd: ['sh', '-c', 'echo one; echo "two é"; printf "err line\\nerr two\\n" >&2; sleep 0.2; echo three'],
      Labels: { [LABEL_SESSION]: session, [LABEL_ROLE]: 'replica' },
      HostConfig: { NetworkMode: 'none' },
    });
    const lines: string[] = [];
    await container.start();
    const follower = await followLogs(container, (stream, text) => lines.push(`${stream}:${text}`));
    await follower.ended;
    expect(lines.filter((l) => l.startsWith('stdout:'))).toEqual(['stdout:one', 'stdout:two é', 'stdout:three']);
    expect(lines.filter((l) => l.startsWith('stderr:'))).toEqual(['stderr:err line', 'stderr:err two']);
    await container.remove({ force: true });
  });
});
