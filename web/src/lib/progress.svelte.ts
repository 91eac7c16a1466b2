/**
 * The reactive progress of one lesson (see progress.ts for the stored shape), saved to localStorage
 * on every change, and handed from the lesson page to step checks through context.
 */
import { getContext, setContext } from 'svelte';
import { emptyProgress, parseProgress, progressKey, type ProgressRecord, type StoredCheck } from './progress.ts';

function storage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: progress lives as long as the page
  }
}

export class LessonProgress {
  readonly slug: string;
  /** Number of steps the lesson has (0 until the page counted them). */
  steps = $state(0);
  current = $state(1);
  /** The furthest step the learner has been on. */
  reached = $state(1);
  done = $state<number[]>([]);
  checks = $state<Record<string, StoredCheck>>({});
  oneStep = $state(false);

  /** @param slug the lesson's URL slug, e.g. `round-robin`. */
  constructor(slug: string) {
    this.slug = slug;
    this.#apply(parseProgress(storage()?.getItem(progressKey(slug)) ?? null));
  }

  #apply(r: ProgressRecord): void {
    this.current = r.current;
    this.reached = r.reached;
    this.done = r.done;
    this.checks = r.checks;
    this.oneStep = r.oneStep;
  }

  #save(): void {
    const record: ProgressRecord = { current: this.current, reached: this.reached, done: this.done, checks: this.checks, oneStep: this.oneStep };
    try {
      storage()?.setItem(progressKey(this.slug), JSON.stringify(record));
    } catch {
      // quota or disabled storage: keep going without saving
    }
  }

  /** Sets the step count once the page knows it, dropping stored steps past the end. */
  setSteps(n: number): void {
    this.steps = n;
    this.#apply(parseProgress(JSON.stringify({ current: this.current, reached: this.reached, done: this.done, checks: this.checks, oneStep: this.oneStep }), n));
  }

  /** Makes step `n` (1-based, clamped to the lesson) the current one. */
  go(n: number): void {
    this.current = Math.min(Math.max(1, Math.round(n)), Math.max(1, this.steps));
    if (this.current > this.reached) this.reached = this.current;
    this.#save();
  }

  /** Marks step `n` finished. */
  markDone(n: number): void {
    if (n < 1 || this.done.includes(n)) return;
    this.done = [...this.done, n].sort((a, b) => a - b);
    this.#save();
  }

  isDone(n: number): boolean {
    return this.done.includes(n);
  }

  /** Keeps a check's last answer; a pass marks `step` finished. */
  recordCheck(id: string, answer: { ok: boolean; message: string }, step: number | null): void {
    this.checks = { ...this.checks, [id]: { ok: answer.ok, message: answer.message, at: Date.now() } };
    if (answer.ok && step) this.markDone(step);
    this.#save();
  }

  setOneStep(on: boolean): void {
    this.oneStep = on;
    this.#save();
  }

  /** Forgets this lesson's progress (finished steps and check answers) and goes back to step 1. */
  startOver(): void {
    this.#apply({ ...emptyProgress(), oneStep: this.oneStep });
    this.#save();
  }
}

/** What the lesson page shares with the step checks inside its Markdown. */
export interface StepsContext {
  progress: LessonProgress;
  /** The step (1-based) an element of the lesson body belongs to, or null outside the steps. */
  stepOf(el: Element): number | null;
}

const KEY = Symbol('lesson-steps');

export function setStepsContext(ctx: StepsContext): StepsContext {
  return setContext(KEY, ctx);
}

/** The lesson page's steps, or undefined when a widget is used outside a lesson page. */
export function getStepsContext(): StepsContext | undefined {
  return getContext<StepsContext | undefined>(KEY);
}
