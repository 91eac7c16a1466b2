/**
 * The proxy engines this lab can run, and a factory the Lab uses to switch between them.
 * embedded: always; haproxy: when the `haproxy` binary is on PATH; traefik: not yet in process
 * mode (it comes with Docker mode).
 */
import path from 'node:path';
import type { EventBus } from '../lab/events.ts';
import { LabError, type ProxyFactory } from '../lab/lab.ts';
import { EmbeddedProxy } from '../lab/proxy/embedded/embedded-proxy.ts';
import { HaproxyDriver } from '../lab/proxy/haproxy/haproxy-driver.ts';
import type { ProxyInfo } from './protocol.ts';

const TRAEFIK_REASON = 'Traefik cannot run in process mode: it comes with Docker mode, which this version of the lab does not have yet.';

/** Which engines can run here, with a sentence for those that cannot. */
export async function proxyAvailability(): Promise<ProxyInfo[]> {
  const haproxy = await HaproxyDriver.available();
  return [
    { name: 'embedded', available: true, version: `Node ${process.version}` },
    haproxy.ok ? { name: 'haproxy', available: true, version: haproxy.version } : { name: 'haproxy', available: false, reason: haproxy.reason },
    { name: 'traefik', available: false, reason: TRAEFIK_REASON },
  ];
}

/** Makes drivers by name; work files (haproxy.cfg, its socket) go under `stateDir/proxy-<sessionId>`. */
export function proxyFactory(o: { bus: EventBus; stateDir: string; sessionId: string }): ProxyFactory {
  return async (name) => {
    if (name === 'embedded') return new EmbeddedProxy({ bus: o.bus });
    if (name === 'haproxy') {
      const available = await HaproxyDriver.available();
      if (!available.ok) throw new LabError(available.reason, 'conflict');
      return new HaproxyDriver({ bus: o.bus, workDir: path.join(o.stateDir, `proxy-${o.sessionId}`) });
    }
    throw new LabError(TRAEFIK_REASON, 'conflict');
  };
}
