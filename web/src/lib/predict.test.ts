import { describe, expect, it } from 'vitest';
import { compare, evenSplit, explain, predictionProblem } from './predict.ts';

describe('evenSplit', () => {
  it('sums to 100 in whole percent', () => {
    expect(evenSplit(3)).toEqual([34, 33, 33]);
    expect(evenSplit(4)).toEqual([25, 25, 25, 25]);
    expect(evenSplit(0)).toEqual([]);
    for (let n = 1; n <= 10; n++) expect(evenSplit(n).reduce((a, b) => a + b, 0)).toBe(100);
  });
});

describe('predictionProblem', () => {
  it('accepts 100 % and says what is wrong otherwise', () => {
    expect(predictionProblem([50, 50])).toBeNull();
    expect(predictionProblem([50, 30])).toBe('Your shares add up to 80 %: make them add up to 100 %.');
    expect(predictionProblem([150, -50])).toMatch(/from 0 to 100/);
    expect(predictionProblem([])).toMatch(/no replica/);
  });
});

describe('compare and explain', () => {
  const p = new Map([
    ['a', 34],
    ['b', 33],
    ['c', 33],
  ]);
  it('counts the measured shares, adding replicas nobody predicted', () => {
    const rows = compare(p, ['a', 'b', 'c', 'a', 'd', null]);
    expect(rows.map((r) => [r.hostname, r.count, r.measured])).toEqual([
      ['a', 2, 33.3],
      ['b', 1, 16.7],
      ['c', 1, 16.7],
      ['d', 1, 16.7],
    ]);
  });

  it('explains a sticky pin and the miss against an even prediction', () => {
    const rows = compare(p, Array(30).fill('b'));
    const text = explain(rows, { requests: 30, sticky: true, cookies: true, algorithm: 'round-robin', failed: 0 });
    expect(text[0]).toMatch(/^Sticky on: b took all 30/);
    expect(text[1]).toBe('Your biggest miss: you expected 33 % on b, it took 100 %.');
  });

  it('explains a round-robin even split that matched the prediction', () => {
    const rows = compare(p, Array.from({ length: 30 }, (_, i) => 'abc'[i % 3]));
    const text = explain(rows, { requests: 30, sticky: false, cookies: false, algorithm: 'round-robin', failed: 0 });
    expect(text).toEqual(['Round-robin: each of the 3 replicas took its turn, 10/10/10 of 30.', 'Your prediction was within 1 point on every replica.']);
  });
});
