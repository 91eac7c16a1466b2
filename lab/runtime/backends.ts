/**
 * How each demo backend runs in process mode. Two kinds:
 *
 * - `node`: `node <entry>` with PORT=0 (or ReplicaSpec.port)/HOST/LAB_HOSTNAME/LAB_SESSION in its
 *   environment and a Node IPC channel (faults: sandbox-images/shared/faults.js); the script binds
 *   the port itself and prints `listening on http://<host>:<port>` once ready.
 * - `php`: PHP's built-in server, `php -q -S 127.0.0.1:<port> -d session.save_path=<dir> <router>`,
 *   on a port the runtime picks, with a session directory of its own per replica and a fault file
 *   (LAB_FAULT_FILE); when `php` is not usable the `fallback` (a node backend with the same API) runs instead.
 */
import { fileURLToPath } from 'node:url';
import type { ServiceName } from '../topology.ts';

/** One backend as a `node` child process. */
export interface NodeBackend {
  kind?: 'node';
  /** Absolute path of the script `node` runs; it must print `listening on http://<host>:<port>` once ready. */
  entry: string;
  /** Extra environment variables for the process. */
  env?: Readonly<Record<string, string>>;
  /** What ReplicaHandle.implementation reports (absent: nothing is reported). */
  implementation?: string;
}

/** One backend as a `php -S` built-in server with a router script. */
export interface PhpBackend {
  kind: 'php';
  /** Absolute path of the router script; it must answer `GET /health` 200 with `X-Served-By: <LAB_HOSTNAME>`. */
  router: string;
  /**
   * Runs instead when php is absent or unusable. Its process gets `SESSION_BACKEND=<why>` (for
   * example `express (php not found)`), which is also the replica's `implementation`.
   */
  fallback: NodeBackend;
}

export type ProcessBackend = NodeBackend | PhpBackend;

/** Absolute path of a file under sandbox-images/, resolved from this module (not the cwd). */
function sandboxFile(relative: string): string {
  return fileURLToPath(new URL(`../../sandbox-images/${relative}`, import.meta.url));
}

/** The process-mode backend of every service in SERVICE_NAMES. */
export const PROCESS_BACKENDS: Readonly<Record<ServiceName, ProcessBackend>> = Object.freeze({
  web_static: { entry: sandboxFile('web_static/server.js') },
  web_dynamic: { entry: sandboxFile('web_dynamic/server.js') },
  session_php: {
    kind: 'php',
    router: sandboxFile('session_php/router.php'),
    fallback: { entry: sandboxFile('session_express/server.js') },
  },
  spring_app: { entry: sandboxFile('spring_app/server.js') },
});
