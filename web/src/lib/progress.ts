/**
 * A learner's progress through one lesson, kept in the browser (localStorage, per origin, so per
 * lab port): the step they are on, the steps they finished, and the last answer of each check.
 * Pure functions; the reactive store is `progress.svelte.ts`.
 */

/** The last answer of one lesson check, as the lab gave it. */
export interface StoredCheck {
  ok: boolean;
  /** The check's one sentence. */
  message: string;
  /** When it ran (epoch ms). */
  at: number;
}

export interface ProgressRecord {
  /** The step the learner is on, 1-based. */
  current: number;
  /** The furthest step the learner has been on (>= current); checks up to it run by themselves. */
  reached: number;
  /** Finished steps (1-based, ascending, no duplicates). */
  done: number[];
  /** Check id -> its last answer. */
  checks: Record<string, StoredCheck>;
  /** Show only the current step (true) or the whole lesson with the current step marked (false). */
  oneStep: boolean;
}

/** The localStorage key of a lesson's progress (`slug` as in the URL, e.g. `round-robin`). */
export const progressKey = (slug: string) => `balancer-lab:progress:${slug}`;

export const emptyProgress = (): ProgressRecord => ({ current: 1, reached: 1, done: [], checks: {}, oneStep: false });

/**
 * Reads a stored record, keeping only what is valid: steps within 1..`steps` (when `steps` is known,
 * i.e. > 0), checks with a boolean `ok` and a string message. Anything unreadable gives the empty record.
 */
export function parseProgress(raw: string | null, steps = 0): ProgressRecord {
  if (!raw) return emptyProgress();
  let data: unknown;
  try {
    data = JSON.parse(raw);
  } catch {
    return emptyProgress();
  }
  if (!data || typeof data !== 'object') return emptyProgress();
  const d = data as Partial<Record<keyof ProgressRecord, unknown>>;
  const inRange = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 1 && (steps <= 0 || n <= steps);
  const checks: Record<string, StoredCheck> = {};
  if (d.checks && typeof d.checks === 'object') {
    for (const [id, c] of Object.entries(d.checks as Record<string, unknown>)) {
      const v = c as Partial<StoredCheck> | null;
      if (v && typeof v.ok === 'boolean' && typeof v.message === 'string') checks[id] = { ok: v.ok, message: v.message.slice(0, 500), at: typeof v.at === 'number' ? v.at : 0 };
    }
  }
  const current = inRange(d.current) ? d.current : 1;
  return {
    current,
    reached: inRange(d.reached) ? Math.max(d.reached, current) : current,
    done: Array.isArray(d.done) ? [...new Set(d.done.filter(inRange))].sort((a, b) => a - b) : [],
    checks,
    oneStep: d.oneStep === true,
  };
}

/**
 * The step a URL hash names: `#step-3` (1-based), or the id of a step's heading (`#weights`);
 * null when it names no step of `stepIds` (the heading ids in order).
 */
export function stepFromHash(hash: string, stepIds: readonly string[]): number | null {
  const h = decodeURIComponent(hash.replace(/^#/, ''));
  if (!h) return null;
  const m = /^step-(\d+)$/.exec(h);
  if (m) {
    const n = Number(m[1]);
    return n >= 1 && n <= stepIds.length ? n : null;
  }
  const i = stepIds.indexOf(h);
  return i >= 0 ? i + 1 : null;
}

/** A step's title for lists: its heading text without a leading "Step N:" an author may have written. */
export const stepTitle = (heading: string) => heading.replace(/^\s*step\s+\d+\s*[:.–-]\s*/i, '').trim() || heading.trim();
