/**
 * How each demo backend runs in process mode: the Node entry script in sandbox-images/,
 * started as `node <entry>` with PORT/HOST/LAB_HOSTNAME/LAB_SESSION in its environment.
 */
import { fileURLToPath } from 'node:url';
import type { ServiceName } from '../topology.ts';

/** One backend as a child process. */
export interface ProcessBackend {
  /** Absolute path of the script `node` runs; it must print `listening on http://<host>:<port>` once ready. */
  entry: string;
}

/** Absolute path of a file under sandbox-images/, resolved from this module (not the cwd). */
function sandboxFile(relative: string): string {
  return fileURLToPath(new URL(`../../sandbox-images/${relative}`, import.meta.url));
}

/** The process-mode backend of every service in SERVICE_NAMES. */
export const PROCESS_BACKENDS: Readonly<Record<ServiceName, ProcessBackend>> = Object.freeze({
  web_static: { entry: sandboxFile('web_static/server.js') },
  web_dynamic: { entry: sandboxFile('web_dynamic/server.js') },
});
