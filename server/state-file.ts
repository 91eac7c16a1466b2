/**
 * The state file a running lab writes so `npm run lab -- ...` finds it without flags:
 * `<stateDir>/lab.json` = { url, token, pid, port, proxyPort, sessionId, startedAt }, mode 0600
 * (it holds the token). Removed when the lab stops.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/** Repository root (this file is server/state-file.ts). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** `LAB_STATE_DIR`, else `<repo>/.lab`. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.LAB_STATE_DIR ? path.resolve(env.LAB_STATE_DIR) : path.join(REPO_ROOT, '.lab');
}

export const LabStateFile = z.object({
  /** Base URL of the lab server, e.g. http://127.0.0.1:4000 */
  url: z.string().url(),
  token: z.string().min(1),
  pid: z.number().int(),
  port: z.number().int(),
  proxyPort: z.number().int(),
  sessionId: z.string(),
  startedAt: z.number(),
});
export type LabStateFile = z.infer<typeof LabStateFile>;

export function stateFilePath(stateDir: string): string {
  return path.join(stateDir, 'lab.json');
}

/** Writes atomically (temp file + rename) with mode 0600. */
export function writeStateFile(stateDir: string, state: LabStateFile): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const file = stateFilePath(stateDir);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2), { mode: 0o600 });
  renameSync(tmp, file);
}

/** Reads the state file; null when absent or unreadable. */
export function readStateFile(stateDir: string): LabStateFile | null {
  try {
    const parsed = LabStateFile.safeParse(JSON.parse(readFileSync(stateFilePath(stateDir), 'utf8')));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/** Removes the state file if it still belongs to `pid`. */
export function removeStateFile(stateDir: string, pid: number): void {
  const current = readStateFile(stateDir);
  if (current && current.pid !== pid) return;
  rmSync(stateFilePath(stateDir), { force: true });
}
