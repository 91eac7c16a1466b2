/**
 * Predict, then run: the arithmetic behind the PredictBurst widget. A prediction is a share in
 * whole percent per replica (summing to 100); a measurement is who answered each request of a
 * real burst. Pure functions, unit-tested.
 */

/** One replica's row: what the learner expected and what the burst measured. */
export interface CompareRow {
  hostname: string;
  /** Expected share, percent (0..100). */
  predicted: number;
  /** Requests this replica answered. */
  count: number;
  /** Measured share, percent (0..100, one decimal). */
  measured: number;
}

/** An even split of 100 % over `n` replicas in whole percent (the remainder goes to the first ones): 3 -> 34/33/33. */
export function evenSplit(n: number): number[] {
  if (n <= 0) return [];
  const base = Math.floor(100 / n);
  return Array.from({ length: n }, (_, i) => base + (i < 100 - base * n ? 1 : 0));
}

/** The sum of a prediction, and a sentence saying what is wrong with it (null: it is usable). */
export function predictionProblem(values: readonly number[]): string | null {
  if (values.length === 0) return 'There is no replica to predict for: start some first.';
  if (values.some((v) => !Number.isFinite(v) || v < 0 || v > 100)) return 'Each share must be a number from 0 to 100.';
  const sum = values.reduce((a, b) => a + b, 0);
  if (Math.round(sum) !== 100) return `Your shares add up to ${Math.round(sum)} %: make them add up to 100 %.`;
  return null;
}

/**
 * Rows for the chart: every predicted replica, then any other that answered, in that order.
 * @param answeredBy the replica of each answer (null: no replica answered, e.g. a 502).
 */
export function compare(predicted: ReadonlyMap<string, number>, answeredBy: readonly (string | null)[]): CompareRow[] {
  const total = answeredBy.length;
  const counts = new Map<string, number>();
  for (const h of answeredBy) if (h) counts.set(h, (counts.get(h) ?? 0) + 1);
  const names = [...predicted.keys(), ...[...counts.keys()].filter((h) => !predicted.has(h))];
  return names.map((hostname) => {
    const count = counts.get(hostname) ?? 0;
    return { hostname, predicted: predicted.get(hostname) ?? 0, count, measured: total ? Math.round((count / total) * 1000) / 10 : 0 };
  });
}

/** What the burst ran with, for the explanation. */
export interface BurstConditions {
  requests: number;
  /** Sticky cookie on for the service. */
  sticky: boolean;
  /** The client kept a cookie jar. */
  cookies: boolean;
  algorithm: string;
  /** Requests that got no replica's answer. */
  failed: number;
}

/**
 * A short explanation of the measurement and of its difference from the prediction: two or three
 * sentences, e.g. "Sticky on: web_dynamic-1-ab12 took all 30; the proxy's cookie pinned this
 * client to it. Your prediction was within 5 points on every replica."
 */
export function explain(rows: readonly CompareRow[], c: BurstConditions): string[] {
  const out: string[] = [];
  const answered = rows.reduce((a, r) => a + r.count, 0);
  const took = rows.filter((r) => r.count > 0);
  if (answered === 0) return [`None of the ${c.requests} requests got an answer from a replica.`];
  if (took.length === 1 && rows.length > 1) {
    const who = took[0].hostname;
    if (c.sticky && c.cookies) out.push(`Sticky on: ${who} took all ${answered}. The first answer set the proxy's cookie, and the client sent it back with every request, so the proxy kept choosing ${who}.`);
    else if (c.sticky) out.push(`${who} took all ${answered}, although this client keeps no cookie: something other than the sticky cookie pinned it.`);
    else out.push(`${who} took all ${answered}: something pinned this client to one replica.`);
  } else {
    const counts = rows.map((r) => r.count);
    const even = Math.max(...counts) - Math.min(...counts) <= 1;
    if (even && c.algorithm === 'round-robin') {
      out.push(`Round-robin: each of the ${rows.length} replicas took its turn, ${counts.join('/')} of ${answered}.`);
      if (c.sticky && !c.cookies) out.push('Sticky is on, but this client keeps no cookie jar, so it never sends the cookie back and is balanced like a new visitor every time.');
    } else out.push(`Measured: ${rows.map((r) => `${r.hostname} ${r.count}`).join(', ')} of ${answered}.`);
  }
  if (c.failed > 0) out.push(`${c.failed} of ${c.requests} requests got no replica's answer.`);
  const worst = rows.reduce((a, r) => (Math.abs(r.predicted - r.measured) > Math.abs(a.predicted - a.measured) ? r : a), rows[0]);
  const miss = Math.round(Math.abs(worst.predicted - worst.measured));
  if (miss === 0) out.push('Your prediction was right on every replica.');
  else if (miss <= 5) out.push(`Your prediction was within ${miss} point${miss === 1 ? '' : 's'} on every replica.`);
  else out.push(`Your biggest miss: you expected ${worst.predicted} % on ${worst.hostname}, it took ${worst.measured} %.`);
  return out;
}
