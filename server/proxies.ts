/**
 * The proxy engines this lab can run, and a factory the Lab uses to switch between them.
 *
 * Process mode: embedded always; haproxy when the `haproxy` binary (2.6+) is on PATH; traefik when a
 * `traefik` v3 binary is on PATH.
 * Docker mode: embedded always; haproxy in a container (its image built from sandbox-images/haproxy
 * on first use, with build progress as `image:build` events); traefik in a container
 * (lab/runtime/docker/traefik-container.ts: LAB_TRAEFIK_IMAGE as it is, or an image built from
 * sandbox-images/traefik FROM LAB_TRAEFIK_BASE or `traefik:v3.1`, progress as `image:build` events),
 * listed as available when that image or its base is on this machine (no build, no pull to tell),
 * else with the sentence naming the image and how to provide it.
 */
import path from 'node:path';
import type { EventBus } from '../lab/events.ts';
import { LabError, type ProxyFactory } from '../lab/lab.ts';
import { EmbeddedProxy } from '../lab/proxy/embedded/embedded-proxy.ts';
import { HaproxyDriver } from '../lab/proxy/haproxy/haproxy-driver.ts';
import { TraefikDriver } from '../lab/proxy/traefik/traefik-driver.ts';
import type { Docker } from '../lab/runtime/docker/docker-client.ts';
import type { ProxyInfo } from './protocol.ts';
import type { RuntimeName } from './runtimes.ts';

/** Where the engines run: the lab's runtime, and the Docker client in Docker mode. */
export interface ProxyEnvironment {
  runtime: RuntimeName;
  /** Set in Docker mode (the runtime's client). */
  docker: Docker | null;
  bus: EventBus;
  /** Work files: haproxy.cfg and its socket in `stateDir/proxy-<sessionId>`, Traefik's in `stateDir/traefik-<sessionId>`. */
  stateDir: string;
  sessionId: string;
}

/** Which engines can run here, with a sentence for those that cannot. Never rejects. */
export function proxyAvailability(env: Pick<ProxyEnvironment, 'runtime' | 'docker'>): () => Promise<ProxyInfo[]> {
  return async () => {
    const [haproxy, traefik] = await Promise.all([
      env.docker ? Promise.resolve({ ok: true as const, version: 'HAProxy in a container (image from sandbox-images/haproxy)' }) : HaproxyDriver.available(),
      env.docker ? import('../lab/runtime/docker/traefik-container.ts').then((m) => m.traefikImageAvailability(env.docker!)) : TraefikDriver.available(),
    ]);
    return [
      { name: 'embedded', available: true, version: `Node ${process.version}` },
      haproxy.ok ? { name: 'haproxy', available: true, version: haproxy.version } : { name: 'haproxy', available: false, reason: haproxy.reason },
      traefik.ok ? { name: 'traefik', available: true, version: `Traefik ${traefik.version}` } : { name: 'traefik', available: false, reason: traefik.reason },
    ];
  };
}

/** Makes drivers by name. @throws LabError conflict (a sentence) when the engine cannot run here. */
export function proxyFactory(env: ProxyEnvironment): ProxyFactory {
  const workDir = (name: 'haproxy' | 'traefik') => path.join(env.stateDir, `${name === 'haproxy' ? 'proxy' : 'traefik'}-${env.sessionId}`);
  return async (name) => {
    if (name === 'embedded') return new EmbeddedProxy({ bus: env.bus });
    if (name === 'haproxy') {
      if (env.docker) {
        // Docker mode: HAProxy runs in a container (host network, work dir bind-mounted).
        const { ensureHaproxyImage, HaproxyContainerHost } = await import('../lab/runtime/docker/haproxy-container.ts');
        let image: string;
        try {
          image = await ensureHaproxyImage(env.docker, {
            cacheDir: path.join(env.stateDir, 'docker-cache'),
            onProgress: (e) => env.bus.emit('image:build', e),
          });
        } catch (err) {
          throw new LabError((err as Error).message, 'conflict');
        }
        const host = new HaproxyContainerHost({ docker: env.docker, sessionId: env.sessionId, image });
        return new HaproxyDriver({ bus: env.bus, workDir: workDir('haproxy'), host });
      }
      const available = await HaproxyDriver.available();
      if (!available.ok) throw new LabError(available.reason, 'conflict');
      return new HaproxyDriver({ bus: env.bus, workDir: workDir('haproxy') });
    }
    if (env.docker) {
      // Docker mode: Traefik runs in a container (host network, work dir bind-mounted); the image is
      // found or built here, so a missing one is refused before the running engine is stopped.
      const host = await traefikContainerHost(env, env.docker);
      const found = await host.version();
      if (!found.ok) throw new LabError(found.reason, 'conflict');
      return new TraefikDriver({ bus: env.bus, workDir: workDir('traefik'), host });
    }
    const available = await TraefikDriver.available();
    if (!available.ok) throw new LabError(available.reason, 'conflict');
    return new TraefikDriver({ bus: env.bus, workDir: workDir('traefik') });
  };
}

/** The Traefik container host of this lab (its image built on first use, progress as `image:build` events). */
async function traefikContainerHost(env: ProxyEnvironment, docker: Docker) {
  const { TraefikContainerHost } = await import('../lab/runtime/docker/traefik-container.ts');
  return new TraefikContainerHost({
    docker,
    sessionId: env.sessionId,
    cacheDir: path.join(env.stateDir, 'docker-cache'),
    onProgress: (e) => env.bus.emit('image:build', e),
  });
}

/**
 * Removes the proxies an earlier lab run left behind (killed before it could stop them): local
 * HAProxy and Traefik processes whose state files are in `env.stateDir`, and in Docker mode the
 * HAProxy containers whose work directory was there and the Traefik containers of ended labs
 * (a lab that still runs keeps its own). Resolves with how many were removed.
 */
export async function sweepProxies(env: ProxyEnvironment): Promise<number> {
  let n = (await HaproxyDriver.sweep(env.stateDir)) + (await TraefikDriver.sweep(env.stateDir));
  if (env.docker) {
    const { sweepProxyContainers } = await import('../lab/runtime/docker/proxy-container.ts');
    n += await sweepProxyContainers(env.docker, { sessionId: env.sessionId, engine: 'haproxy', parentDir: env.stateDir });
    n += await TraefikDriver.sweep(env.stateDir, await traefikContainerHost(env, env.docker));
  }
  return n;
}
