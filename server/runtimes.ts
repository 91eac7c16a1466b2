/**
 * The backend runtimes the lab can use, chosen at start (`npm start -- --runtime docker`, or
 * LAB_RUNTIME): `process` (child processes on 127.0.0.1, the default) or `docker` (containers, through
 * dockerode). Docker's modules are loaded only in Docker mode, so process mode never needs them.
 */
import type { EventBus } from '../lab/events.ts';
import type { BackendRuntime } from '../lab/seams.ts';
import { ProcessRuntime } from '../lab/runtime/process-runtime.ts';
import type { Docker } from '../lab/runtime/docker/docker-client.ts';

export const RUNTIME_NAMES = ['process', 'docker'] as const;
export type RuntimeName = (typeof RUNTIME_NAMES)[number];

/** What createRuntime needs: the bus (image build progress goes there), the session and its state folder. */
export interface RuntimeOptions {
  bus: EventBus;
  sessionId: string;
  stateDir: string;
  /** Docker mode: join this network instead of creating one (Compose's `<project>_lab` when the lab runs in a container). */
  dockerNetwork?: string;
  /** Docker mode: adopt this Compose project's demo containers (`docker compose up --scale ...`). */
  composeProject?: string;
}

/**
 * Makes the runtime (and, in Docker mode, the connected client the proxies share). Backends report their own connections (LAB_CONN_EVENTS), so the proxy->backend
 * hop shows for every engine.
 * @throws DockerUnavailableError (lab/runtime/docker/docker-client.ts) in Docker mode when the engine
 *   cannot be reached: its message is one sentence that offers process mode.
 */
export async function createRuntime(name: RuntimeName, o: RuntimeOptions): Promise<{ runtime: BackendRuntime; docker: Docker | null }> {
  if (name === 'process') {
    return { runtime: new ProcessRuntime({ sessionId: o.sessionId, stateDir: o.stateDir, connectionReports: true }), docker: null };
  }
  const { connectDocker } = await import('../lab/runtime/docker/docker-client.ts');
  // Ping first: a missing engine is reported before anything else is loaded or started.
  const docker = await connectDocker();
  const { DockerRuntime } = await import('../lab/runtime/docker/docker-runtime.ts');
  const runtime = new DockerRuntime({
    docker,
    sessionId: o.sessionId,
    stateDir: o.stateDir,
    connectionReports: true,
    onImageProgress: (e) => o.bus.emit('image:build', e),
    ...(o.dockerNetwork ? { network: o.dockerNetwork } : {}),
    ...(o.composeProject ? { composeProject: o.composeProject } : {}),
  });
  return { runtime, docker };
}
