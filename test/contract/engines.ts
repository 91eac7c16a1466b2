/**
 * The proxy engines the contract suites run against: the embedded proxy always, HAProxy when its
 * binary is found (else the suites skip it and print why), and the small topology they share.
 */
import path from 'node:path';
import type { EventBus } from '../../lab/events.ts';
import { EmbeddedProxy } from '../../lab/proxy/embedded/embedded-proxy.ts';
import { HaproxyDriver } from '../../lab/proxy/haproxy/haproxy-driver.ts';
import type { ProxyDriver } from '../../lab/seams.ts';
import { Topology } from '../../lab/topology.ts';

export const haproxy = await HaproxyDriver.available();

export const ENGINES: Array<{ name: 'embedded' | 'haproxy'; ok: boolean; create(bus: EventBus, dir: string): ProxyDriver }> = [
  { name: 'embedded', ok: true, create: (bus) => new EmbeddedProxy({ bus }) },
  { name: 'haproxy', ok: haproxy.ok, create: (bus, dir) => new HaproxyDriver({ bus, workDir: path.join(dir, 'haproxy') }) },
];

/** web_dynamic x3 behind `/api/` (prefix stripped), with proxy-wide settings `extra`. */
export function topology(extra: Record<string, unknown> = {}): Topology {
  return Topology.parse({
    services: { web_dynamic: { replicas: 3 } },
    routes: [{ service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true }],
    proxy: extra,
  });
}
