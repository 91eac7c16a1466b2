/**
 * The composition root: builds the bus, the runtime, the proxy and the Lab, and exposes them
 * through the lab server. Nothing else constructs dependencies.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { EventBus } from '../lab/events.ts';
import { Lab } from '../lab/lab.ts';
import { EmbeddedProxy } from '../lab/proxy/embedded/embedded-proxy.ts';
import { Topology } from '../lab/topology.ts';
import type { ImageBuildProgressed } from '../lab/events.ts';
import { createRuntime, type RuntimeName } from './runtimes.ts';
import { createLabServer } from './app.ts';
import { Capture } from '../lab/capture.ts';
import { WEB_DIST } from './build-web.ts';
import { loadLessons } from './lessons.ts';
import { proxyAvailability, proxyFactory, sweepProxies } from './proxies.ts';
import { removeStateFile, writeStateFile } from './state-file.ts';

export interface LabConfig {
  /** Interface both servers bind (default 127.0.0.1). */
  host: string;
  /** Lab server port (4000 by default; 0 = any free port). */
  port: number;
  /** Proxy entrypoint port (8080 by default; 0 = any free port). */
  proxyPort: number;
  /** Fixed token, or undefined for a random one per run. */
  token?: string;
  /** Fixed watch-only token (students: see the lab, change nothing), or undefined for a random one per run. */
  readonlyToken?: string;
  /**
   * Extra host names or addresses the pages may be reached by (e.g. this machine's LAN address for
   * a class, with `host` 0.0.0.0); localhost, 127.0.0.1 and [::1] always are. The first one is used
   * in the watch-only URL.
   */
  allowedHosts?: string[];
  /** Where the state file and runtime bookkeeping go. */
  stateDir: string;
  /** Folder of the built web app. */
  staticDir?: string;
  topology?: Topology;
  /** Where replicas run: `process` (default) or `docker` (containers; needs a reachable Docker engine). */
  runtime?: RuntimeName;
  /** Docker mode: join this existing network (Compose's `<project>_lab`) instead of creating one. */
  dockerNetwork?: string;
  /** Docker mode: adopt the demo containers of this Compose project, e.g. after `docker compose up --scale web_dynamic=5`. */
  composeProject?: string;
  /** Called once the lab server listens, before replicas start (Docker mode may build images first). */
  onListening?: (url: string) => void;
  /** Called for every Docker image build line (Docker mode), e.g. to print progress in the terminal. */
  onImageBuild?: (e: ImageBuildProgressed) => void;
}

export interface RunningLab {
  /** The URL to open, with the token: http://localhost:<port>/?token=... */
  url: string;
  /** Base URL for API clients: http://127.0.0.1:<port> */
  apiUrl: string;
  proxyUrl: string;
  port: number;
  proxyPort: number;
  token: string;
  /** The watch-only URL (http://localhost:<port>/?token=<readonly token>) and its token. */
  watchUrl: string;
  readonlyToken: string;
  lab: Lab;
  bus: EventBus;
  /** Leftover processes of an earlier run removed at start. */
  swept: number;
  /** Stops the server, the proxy and every replica; resolves when nothing is left. */
  stop(): Promise<void>;
}

/**
 * The starting topology of a lab that runs next to `docker compose up` (LAB_COMPOSE_PROJECT): no
 * replica of its own (Compose's are adopted, each adding one to its service's count), and the routes
 * docker-compose.yml gives Traefik, without its Host rule: `/api/` -> web_dynamic and `/session/` ->
 * session_php (prefix stripped), `/app/` -> spring_app, `/` -> web_static.
 */
export function composeTopology(): Topology {
  return Topology.parse({
    services: { web_static: { replicas: 0 }, web_dynamic: { replicas: 0 }, session_php: { replicas: 0 }, spring_app: { replicas: 0 } },
    routes: [
      { service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true },
      { service: 'session_php', pathPrefix: '/session/', stripPrefix: true },
      { service: 'spring_app', pathPrefix: '/app/' },
      { service: 'web_static', pathPrefix: '/' },
    ],
  });
}

/** Starts a whole lab. Rejects with a sentence (port in use, a replica that cannot start). */
export async function startLab(config: LabConfig): Promise<RunningLab> {
  const sessionId = randomBytes(6).toString('hex');
  const token = config.token ?? randomBytes(18).toString('base64url');
  const readonlyToken = config.readonlyToken ?? randomBytes(18).toString('base64url');
  if (readonlyToken === token) throw new Error('The watch-only token must differ from the lab token.');
  const bus = new EventBus();
  if (config.onImageBuild) bus.on('image:build', config.onImageBuild);
  // Docker mode pings the engine here: a missing Docker is one sentence before anything starts.
  const runtimeName = config.runtime ?? 'process';
  const { runtime, docker } = await createRuntime(runtimeName, {
    bus,
    sessionId,
    stateDir: config.stateDir,
    ...(config.dockerNetwork ? { dockerNetwork: config.dockerNetwork } : {}),
    ...(config.composeProject ? { composeProject: config.composeProject } : {}),
  });
  const proxy = new EmbeddedProxy({ bus });
  const lessons = loadLessons();
  const lab = new Lab({
    runtime,
    proxy,
    proxyFactory: proxyFactory({ runtime: runtimeName, docker, bus, stateDir: config.stateDir, sessionId }),
    bus,
    sessionId,
    proxyListen: { host: config.host, port: config.proxyPort },
    // Next to Docker Compose, the replicas are Compose's: the lab starts none of its own and adopts them.
    topology: config.topology ?? (config.composeProject ? composeTopology() : undefined),
  });
  const server = createLabServer({
    lab,
    bus,
    token,
    readonlyToken,
    allowedHosts: ['localhost', '127.0.0.1', '[::1]', ...(config.allowedHosts ?? [])],
    staticDir: config.staticDir ?? WEB_DIST,
    lessons,
    proxies: proxyAvailability({ runtime: runtimeName, docker }),
    capture: new Capture({ dir: path.join(config.stateDir, 'capture') }),
  });

  let port = 0;
  let swept = 0;
  try {
    // The lab port first: if it is taken, fail before starting any process.
    port = await server.listen(config.port, config.host);
    config.onListening?.(`http://localhost:${port}/?token=${encodeURIComponent(token)}`);
    // A killed lab may have left an HAProxy holding the proxy port: stop it before starting ours.
    const sweptProxies = await sweepProxies({ runtime: runtimeName, docker, bus, stateDir: config.stateDir, sessionId });
    ({ swept } = await lab.start());
    swept += sweptProxies;
  } catch (err) {
    await server.close().catch(() => undefined);
    await lab.stop().catch(() => undefined);
    throw err;
  }
  const proxyPort = lab.status().proxy.port;
  writeStateFile(config.stateDir, {
    url: `http://127.0.0.1:${port}`,
    token,
    pid: process.pid,
    port,
    proxyPort,
    sessionId,
    startedAt: Date.now(),
  });

  let stopping: Promise<void> | null = null;
  return {
    url: `http://localhost:${port}/?token=${encodeURIComponent(token)}`,
    watchUrl: `http://${config.allowedHosts?.[0] ?? 'localhost'}:${port}/?token=${encodeURIComponent(readonlyToken)}`,
    readonlyToken,
    apiUrl: `http://127.0.0.1:${port}`,
    proxyUrl: `http://localhost:${proxyPort}/`,
    port,
    proxyPort,
    token,
    lab,
    bus,
    swept,
    stop() {
      stopping ??= (async () => {
        await server.close().catch(() => undefined);
        await lab.stop();
        removeStateFile(config.stateDir, process.pid);
      })();
      return stopping;
    },
  };
}
