/**
 * Process checks for tests that assert nothing is left running.
 */
import { readFileSync } from 'node:fs';

/**
 * True when the process no longer runs: it does not exist, or it is a zombie (state Z in
 * /proc/<pid>/stat) — this machine's init does not always reap orphans, and a zombie runs nothing.
 */
export function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state follows the command name in parentheses, which may itself contain spaces or ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** True while the process runs (exists and is not a zombie): the opposite of isGone(). */
export function isAlive(pid: number): boolean {
  return !isGone(pid);
}
