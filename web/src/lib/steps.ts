/**
 * A lesson's steps, found in its rendered Markdown: every `##` heading starts a step, and a step
 * runs until the next `##` heading. What comes before the first `##` (the introduction) belongs
 * to step 1. The page tags each top-level element of the lesson body with `data-step="<n>"` (and
 * never moves or wraps them: Svelte owns those nodes).
 */
import { stepTitle } from './progress.ts';

/** One step of the lesson. */
export interface StepItem {
  /** 1-based. */
  n: number;
  /** Id of its `##` heading (kept when the author gave one, else made from the text). */
  id: string;
  /** The heading's text without an author-written "Step N:". */
  title: string;
  /** Ids of the lesson checks in the step (elements with `data-check`), in page order. */
  checks: string[];
}

const slugify = (text: string) =>
  text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');

/**
 * Tags the top-level elements of `body` with their step and lists the steps. Headings get an id,
 * `tabindex="-1"` (focus moves to them) and `data-step-label` ("Step 2 of 7"). Idempotent: call it
 * again when the body's top-level elements change. No `##` heading = no steps (empty list).
 */
export function tagSteps(body: HTMLElement): StepItem[] {
  const elements = [...body.children] as HTMLElement[];
  const headings = elements.filter((el) => el.tagName === 'H2');
  if (headings.length === 0) return [];
  const steps: StepItem[] = [];
  let n = 0;
  for (const el of elements) {
    if (el.tagName === 'H2') {
      n++;
      const text = el.textContent?.trim() ?? '';
      if (!el.id) el.id = slugify(text) || `step-${n}`;
      el.tabIndex = -1;
      el.dataset.stepLabel = `Step ${n} of ${headings.length}`;
      steps.push({ n, id: el.id, title: stepTitle(text), checks: [] });
    }
    const step = Math.max(n, 1);
    if (el.dataset.step !== String(step)) el.dataset.step = String(step);
    const owner = steps[step - 1] ?? steps[0];
    for (const c of [el, ...el.querySelectorAll<HTMLElement>('[data-check]')]) {
      const id = c.dataset.check;
      if (id && !owner.checks.includes(id)) owner.checks.push(id);
    }
  }
  return steps;
}

/**
 * The steps a top-level element asks to be shown in besides its own, from `data-steps` ("3-8",
 * "3,5,7" or "3-5,8"): how a widget that later steps use stays on screen in the one-step view.
 */
export function sharedSteps(el: HTMLElement): number[] {
  const raw = el.dataset.steps;
  if (!raw) return [];
  const out: number[] = [];
  for (const part of raw.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) continue;
    const a = Number(m[1]);
    const b = m[2] ? Number(m[2]) : a;
    for (let n = a; n <= Math.min(b, a + 100); n++) out.push(n);
  }
  return out;
}

/** The step a node of `body` belongs to (from its top-level element's tag), or null. */
export function stepOfNode(body: HTMLElement, node: Node): number | null {
  let el: Node | null = node;
  while (el && el.parentNode !== body) el = el.parentNode;
  const n = el instanceof HTMLElement ? Number(el.dataset.step) : NaN;
  return Number.isInteger(n) && n >= 1 ? n : null;
}
