import { describe, expect, it } from 'vitest';
import { emptyProgress, parseProgress, progressKey, stepFromHash, stepTitle } from './progress.ts';

describe('parseProgress', () => {
  it('gives the empty record for nothing, garbage and non-objects', () => {
    expect(parseProgress(null)).toEqual(emptyProgress());
    expect(parseProgress('{not json')).toEqual(emptyProgress());
    expect(parseProgress('42')).toEqual(emptyProgress());
  });

  it('keeps valid steps within the lesson, sorted and unique, and valid checks', () => {
    const raw = JSON.stringify({
      current: 3,
      done: [2, 1, 2, 9, 0, 'x', 1.5],
      checks: { a: { ok: true, message: 'fine', at: 5 }, b: { ok: 'yes' }, c: null },
      oneStep: true,
    });
    expect(parseProgress(raw, 5)).toEqual({ current: 3, reached: 3, done: [1, 2], checks: { a: { ok: true, message: 'fine', at: 5 } }, oneStep: true });
  });

  it('keeps the furthest step reached, never behind the current one', () => {
    expect(parseProgress(JSON.stringify({ current: 2, reached: 5 }), 6).reached).toBe(5);
    expect(parseProgress(JSON.stringify({ current: 4, reached: 2 }), 6).reached).toBe(4);
    expect(parseProgress(JSON.stringify({ current: 4, reached: 9 }), 6).reached).toBe(4);
  });

  it('falls back to step 1 when the stored step is past the end (the lesson got shorter)', () => {
    expect(parseProgress(JSON.stringify({ current: 12, done: [] }), 4).current).toBe(1);
    expect(parseProgress(JSON.stringify({ current: 12, done: [] }), 0).current).toBe(12);
  });
});

describe('stepFromHash', () => {
  const ids = ['the-setup', 'ask-ten-times', 'weights'];
  it('reads #step-n and heading ids', () => {
    expect(stepFromHash('#step-2', ids)).toBe(2);
    expect(stepFromHash('#weights', ids)).toBe(3);
  });
  it('is null for other or out-of-range hashes', () => {
    expect(stepFromHash('', ids)).toBeNull();
    expect(stepFromHash('#step-0', ids)).toBeNull();
    expect(stepFromHash('#step-4', ids)).toBeNull();
    expect(stepFromHash('#nothing', ids)).toBeNull();
  });
});

describe('stepTitle and progressKey', () => {
  it('drops an author-written "Step N:"', () => {
    expect(stepTitle('Step 1: the Host header picks the site')).toBe('the Host header picks the site');
    expect(stepTitle('Scale web_dynamic to 5')).toBe('Scale web_dynamic to 5');
  });
  it('keys by slug', () => expect(progressKey('round-robin')).toBe('balancer-lab:progress:round-robin'));
});
