import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ImageBuildProgressed } from '../../events.ts';
import { connectDocker, type Docker } from './docker-client.ts';
import { ensureImage, ImageBuilder, type ImageTarget } from './images.ts';

// Built FROM the offline base (or LAB_DOCKER_BASE): no registry is needed.
const BASE = process.env.LAB_DOCKER_BASE || 'balancer-lab/base:bookworm';

const docker = await connectDocker().catch((e: Error) => {
  console.warn(`images: skipped: ${e.message}`);
  return null;
});
const hasBase = docker ? await docker.getImage(BASE).inspect().then(() => true, () => false) : false;
if (docker && !hasBase) console.warn(`images: skipped: the base image ${BASE} is missing (sandbox-images/base/build-offline-base.sh makes it).`);
if ((!docker || !hasBase) && process.env.LAB_REQUIRE_DOCKER === '1') throw new Error('LAB_REQUIRE_DOCKER=1 but Docker or its base image is missing.');

describe.skipIf(!docker || !hasBase)('ensureImage on a real engine', () => {
  const repository = `balancer-lab/test-images-${randomBytes(4).toString('hex')}`;
  let context: string;
  let cacheDir: string;
  const d = docker as Docker;

  const target = (dockerfile = 'Dockerfile'): ImageTarget => ({
    repository,
    context,
    dockerfile,
    baseArg: 'TEST_BASE',
    defaultBase: 'debian:bookworm-slim',
  });

  beforeAll(() => {
    context = fs.mkdtempSync(path.join(os.tmpdir(), 'images-test-'));
    cacheDir = path.join(context, '.cache');
    fs.writeFileSync(
      path.join(context, 'Dockerfile'),
      ['ARG TEST_BASE=debian:bookworm-slim', 'FROM ${TEST_BASE}', 'COPY hello.txt /hello.txt', 'RUN cat /hello.txt', 'CMD ["cat", "/hello.txt"]', ''].join('\n'),
    );
    fs.writeFileSync(path.join(context, 'Dockerfile.fail'), ['ARG TEST_BASE', 'FROM ${TEST_BASE}', 'RUN echo about to fail', 'RUN exit 7', ''].join('\n'));
    fs.writeFileSync(path.join(context, 'hello.txt'), 'hello v1\n');
    fs.writeFileSync(path.join(context, 'notes.md'), 'not part of the image\n');
    fs.writeFileSync(path.join(context, '.dockerignore'), '*.md\n.cache\n');
  });

  afterAll(async () => {
    const images = await d.listImages({ filters: { reference: [repository] } });
    for (const image of images) await d.getImage(image.Id).remove({ force: true }).catch(() => {});
    fs.rmSync(context, { recursive: true, force: true });
    expect(await d.listImages({ filters: { reference: [repository] } })).toEqual([]);
  });

  test('builds once, streams every step, and reuses the tag while nothing changed', async () => {
    const events: ImageBuildProgressed[] = [];
    const first = await ensureImage(d, target(), { base: BASE, cacheDir, onProgress: (e) => events.push(e) });
    expect(first).toMatchObject({ built: true, base: BASE });
    expect(first.tag).toMatch(new RegExp(`^${repository}:[0-9a-f]{12}$`));
    expect(events.some((e) => e.step !== null && /^\d+\/\d+$/.test(e.step) && /^Step \d+\/\d+ : RUN cat \/hello.txt/.test(e.text))).toBe(true);
    expect(events.some((e) => e.text === 'hello v1')).toBe(true); // the RUN's own output
    expect(events.at(-1)).toMatchObject({ image: first.tag, done: true, text: '' });
    expect(events.at(-1)?.error).toBeUndefined();
    await d.getImage(`${repository}:latest`).inspect(); // `latest` follows the newest build

    const again = await ensureImage(d, target(), { base: BASE, cacheDir });
    expect(again).toEqual({ tag: first.tag, built: false, base: BASE });

    // A file the .dockerignore leaves out does not make a new image...
    fs.writeFileSync(path.join(context, 'notes.md'), 'edited\n');
    expect((await ensureImage(d, target(), { base: BASE, cacheDir })).tag).toBe(first.tag);
    // ...an edited context file does.
    fs.writeFileSync(path.join(context, 'hello.txt'), 'hello v2\n');
    const edited = await ensureImage(d, target(), { base: BASE, cacheDir });
    expect(edited.built).toBe(true);
    expect(edited.tag).not.toBe(first.tag);
  });

  test('three callers at once share one build', async () => {
    fs.writeFileSync(path.join(context, 'hello.txt'), 'hello v3\n');
    const events: ImageBuildProgressed[] = [];
    const builder = new ImageBuilder(d, { base: BASE, cacheDir, onProgress: (e) => events.push(e) });
    const results = await Promise.all([builder.ensure(target()), builder.ensure(target()), builder.ensure(target())]);
    expect(new Set(results.map((r) => r.tag)).size).toBe(1);
    expect(events.filter((e) => e.text.startsWith('Successfully built'))).toHaveLength(1);
  });

  test('a failing step rejects with a sentence naming the step, and the last event carries it', async () => {
    const events: ImageBuildProgressed[] = [];
    const err = (await ensureImage(d, target('Dockerfile.fail'), { base: BASE, cacheDir, onProgress: (e) => events.push(e) }).catch(
      (e: unknown) => e,
    )) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(new RegExp(`^Building ${repository}:[0-9a-f]{12} failed at step 4/\\d+: .*returned a non-zero code: 7\\.$`));
    expect(events.at(-1)).toMatchObject({ done: true, error: err.message });
  });

  test('a missing base image that cannot be pulled is named, with the offline way to provide it', async () => {
    const missing = `balancer-lab/no-such-base-${randomBytes(3).toString('hex')}:none`;
    await expect(ensureImage(d, target(), { base: missing, cacheDir })).rejects.toThrow(
      new RegExp(
        `^The base image ${missing} is not here and cannot be pulled \\(.+\\): build the offline one with sandbox-images/base/build-offline-base\\.sh and set LAB_DOCKER_BASE=balancer-lab/base:bookworm\\.$`,
      ),
    );
  });

  test('build args are checked', async () => {
    await expect(ensureImage(d, { ...target(), buildArgs: { TEST_BASE: 'x' } }, { base: BASE, cacheDir })).rejects.toThrow(/TEST_BASE is set by the builder/);
    await expect(ensureImage(d, { ...target(), buildArgs: { 'bad name': 'x' } }, { base: BASE, cacheDir })).rejects.toThrow(/not allowed/);
  });
});
