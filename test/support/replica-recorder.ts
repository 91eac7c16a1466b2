/**
 * Replica hooks for the runtime tests (ProcessRuntime, DockerRuntime, the runtime contract) that
 * record every log line and exit, with promises for "a line matching" and "the exit".
 */
import type { ReplicaHooks } from '../../lab/seams.ts';

/** What onExit was told. */
export type ExitRecord = Parameters<ReplicaHooks['onExit']>[0];

/** Hooks that keep every line (with its stream) and exit; `line()` and `exited` wait without sleeping. */
export function recorder() {
  const lines: { stream: 'stdout' | 'stderr'; text: string }[] = [];
  const exits: ExitRecord[] = [];
  const waiters: { re: RegExp; resolve: (text: string) => void }[] = [];
  let resolveExit!: (e: ExitRecord) => void;
  const exited = new Promise<ExitRecord>((resolve) => (resolveExit = resolve));
  const hooks: ReplicaHooks = {
    onLog(stream, text) {
      lines.push({ stream, text });
      for (const w of [...waiters]) {
        if (w.re.test(text)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(text);
        }
      }
    },
    onExit(info) {
      exits.push(info);
      resolveExit(info);
    },
  };
  return {
    hooks,
    lines,
    exits,
    exited,
    /** The text of the first line matching `re` after the first `from` lines (already seen or still coming). */
    line(re: RegExp, from = 0): Promise<string> {
      const seen = lines.slice(from).find((l) => re.test(l.text));
      if (seen !== undefined) return Promise.resolve(seen.text);
      return new Promise((resolve) => waiters.push({ re, resolve }));
    },
  };
}
