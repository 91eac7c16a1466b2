import { describe, expect, it } from 'vitest';
import { mergeImageBuilds } from './lab-client.svelte.ts';

const at = 1_000;

describe('mergeImageBuilds', () => {
  it('keeps one entry per image with its latest step and last non-empty line', () => {
    const out = mergeImageBuilds([], [
      { image: 'a', step: null, text: 'Sending context', done: false, at },
      { image: 'b', step: '1/4', text: 'FROM base', done: false, at },
      { image: 'a', step: '2/5', text: 'RUN apt-get install nodejs', done: false, at: at + 1 },
      { image: 'a', step: null, text: '   ', done: false, at: at + 2 },
      { image: 'a', step: null, text: ' ---> Running in d46a41e830d3', done: false, at: at + 2 },
    ]);
    expect(out.map((b) => b.image)).toEqual(['a', 'b']);
    expect(out[0]).toEqual({ image: 'a', step: '2/5', lastLine: 'RUN apt-get install nodejs', done: false, error: null, at: at + 2 });
  });

  it('marks a build done, or failed with its sentence', () => {
    const start = mergeImageBuilds([], [{ image: 'a', step: '5/5', text: 'CMD', done: false, at }]);
    const ok = mergeImageBuilds(start, [{ image: 'a', step: null, text: '', done: true, at: at + 1 }]);
    expect(ok[0]).toMatchObject({ done: true, error: null, step: '5/5', lastLine: 'CMD' });
    const failed = mergeImageBuilds(start, [{ image: 'a', step: null, text: '', done: true, error: 'The base image node:20 cannot be pulled.', at: at + 1 }]);
    expect(failed[0]).toMatchObject({ done: true, error: 'The base image node:20 cannot be pulled.' });
  });
});
