/**
 * The topology: which services run, how many replicas each, how the proxy routes to them and
 * how it balances. Validated with zod; every bound here is what the API and CLI enforce.
 */
import { z } from 'zod';

/** The demo backends this lab can run (sources in sandbox-images/). */
export const SERVICE_NAMES = ['web_static', 'web_dynamic'] as const;
export const ServiceName = z.enum(SERVICE_NAMES);
export type ServiceName = z.infer<typeof ServiceName>;

/** Most replicas one service may have: enough to teach, few enough for a 2-core laptop. */
export const MAX_REPLICAS = 10;

export const ReplicaCount = z
  .number({ error: 'replicas must be a number' })
  .int('replicas must be a whole number')
  .min(0, 'replicas must be at least 0')
  .max(MAX_REPLICAS, `replicas must be at most ${MAX_REPLICAS}`);

export const ServiceSpec = z.object({
  replicas: ReplicaCount,
});
export type ServiceSpec = z.infer<typeof ServiceSpec>;

/** A host name a rule may match: `localhost`, `demo.localhost`, `127.0.0.1`. Browsers resolve `*.localhost` to loopback. */
const HostRule = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i, 'host must be a DNS name such as demo.localhost');

const PathPrefix = z
  .string()
  .max(200)
  .regex(/^\/[A-Za-z0-9._~\-/]*$/, 'pathPrefix must start with / and use URL path characters only');

/**
 * A routing rule, modelled on Traefik's routers: `Host(...) && PathPrefix(...)`, plus the
 * StripPrefix middleware. Priority follows Traefik's default (longer rule first); see
 * https://doc.traefik.io/traefik/routing/routers/#priority
 */
export const Route = z.object({
  service: ServiceName,
  host: HostRule.optional(),
  pathPrefix: PathPrefix.default('/'),
  /** Remove pathPrefix before forwarding (Traefik StripPrefix; the old PathPrefixStrip). `/api/x` -> `/x`. */
  stripPrefix: z.boolean().default(false),
});
export type Route = z.infer<typeof Route>;

/** Load-balancing algorithm. Only round-robin in this issue; more come with sticky sessions. */
export const Algorithm = z.enum(['round-robin']);

export const ProxySettings = z.object({
  driver: z.enum(['embedded']).default('embedded'),
  algorithm: Algorithm.default('round-robin'),
});
export type ProxySettings = z.infer<typeof ProxySettings>;

export const Topology = z.object({
  services: z.partialRecord(ServiceName, ServiceSpec),
  routes: z.array(Route).max(20),
  proxy: ProxySettings.default({ driver: 'embedded', algorithm: 'round-robin' }),
});
export type Topology = z.infer<typeof Topology>;

/**
 * The default lab, as in the source write-ups: web_static x3 and web_dynamic x3 behind one
 * proxy; `/api/` goes to web_dynamic with the prefix stripped, everything else to web_static.
 */
export function defaultTopology(): Topology {
  return Topology.parse({
    services: { web_static: { replicas: 3 }, web_dynamic: { replicas: 3 } },
    routes: [
      { service: 'web_dynamic', pathPrefix: '/api/', stripPrefix: true },
      { service: 'web_static', pathPrefix: '/' },
    ],
  });
}
