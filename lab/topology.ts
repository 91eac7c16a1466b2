/**
 * The topology: which services run, how many replicas each, how the proxy routes to them and
 * how it balances. Validated with zod; every bound here is what the API and CLI enforce.
 */
import { z } from 'zod';

/** The demo backends this lab can run (sources in sandbox-images/). */
export const SERVICE_NAMES = ['web_static', 'web_dynamic', 'session_php', 'spring_app'] as const;
export const ServiceName = z.enum(SERVICE_NAMES);
export type ServiceName = z.infer<typeof ServiceName>;

/** Most replicas one service may have: enough to teach, few enough for a 2-core laptop. */
export const MAX_REPLICAS = 10;

export const ReplicaCount = z
  .number({ error: 'replicas must be a number' })
  .int('replicas must be a whole number')
  .min(0, 'replicas must be at least 0')
  .max(MAX_REPLICAS, `replicas must be at most ${MAX_REPLICAS}`);

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

/** Load-balancing algorithm (see BalanceAlgorithm in lab/seams.ts for each one's semantics). */
export const Algorithm = z.enum(['round-robin', 'least-connections', 'hash'], {
  error: 'algorithm must be one of: round-robin, least-connections, hash',
});

/** Cookie names are restricted to letters, digits, _ and -: safe in any proxy's configuration. */
export const CookieName = z
  .string()
  .min(1, 'sticky.cookie must not be empty')
  .max(64, 'sticky.cookie must be at most 64 characters')
  .regex(/^[A-Za-z0-9_-]+$/, 'sticky.cookie may only contain letters, digits, _ and -');

export const HeaderName = z
  .string()
  .min(1, 'hash.header must not be empty')
  .max(64, 'hash.header must be at most 64 characters')
  .regex(/^[A-Za-z0-9-]+$/, 'hash.header may only contain letters, digits and -');

export const HealthPath = z
  .string()
  .max(200, 'healthcheck.path is at most 200 characters')
  .regex(/^\/[A-Za-z0-9._~\-/]*$/, 'healthcheck.path must start with / and use URL path characters only');
/** Probe interval in ms: 100 ms .. 60 s. */
export const HealthInterval = z
  .number({ error: 'healthcheck.interval must be a number of ms' })
  .int('healthcheck.interval must be whole ms')
  .min(100, 'healthcheck.interval must be at least 100 ms')
  .max(60_000, 'healthcheck.interval must be at most 60000 ms');
/** Probe timeout in ms: 50 ms .. 30 s. */
export const HealthTimeout = z
  .number({ error: 'healthcheck.timeout must be a number of ms' })
  .int('healthcheck.timeout must be whole ms')
  .min(50, 'healthcheck.timeout must be at least 50 ms')
  .max(30_000, 'healthcheck.timeout must be at most 30000 ms');
export const FallRise = (name: string) =>
  z.number({ error: `${name} must be a number` }).int(`${name} must be a whole number`).min(1, `${name} must be at least 1`).max(10, `${name} must be at most 10`);
export const RetryAttempts = z
  .number({ error: 'retry.attempts must be a number' })
  .int('retry.attempts must be a whole number')
  .min(1, 'retry.attempts must be at least 1')
  .max(5, 'retry.attempts must be at most 5');

/** A keep-alive or idle timeout in ms: 100 ms .. 15 min. */
export const KeepAliveMs = (name: string) =>
  z
    .number({ error: `${name} must be a number of ms` })
    .int(`${name} must be whole ms`)
    .min(100, `${name} must be at least 100 ms`)
    .max(900_000, `${name} must be at most 900000 ms`);

export const HashType = z.enum(['consistent', 'map-based'], { error: 'hash.type must be consistent or map-based' });

/**
 * How one service is balanced. The proxy-wide values apply to every service; a service may
 * override any of them (`web_dynamic.sticky=on`).
 */
export const Balancer = z.object({
  algorithm: Algorithm.default('round-robin'),
  /** Sticky sessions with a proxy-set cookie. */
  sticky: z.boolean().default(false),
  /** Sticky cookie name; absent = the driver's default (Traefik derives one from the service name). */
  stickyCookie: CookieName.optional(),
  /** Header hashed when algorithm is `hash`. */
  hashHeader: HeaderName.default('X-Session-ID'),
  /** `consistent` (hash ring) or `map-based` (modulo), as HAProxy's hash-type. */
  hashType: HashType.default('consistent'),
  /** Active health check on/off and its parameters (see HealthCheck in lab/seams.ts). */
  healthCheck: z.boolean().default(false),
  healthCheckPath: HealthPath.default('/health'),
  healthCheckInterval: HealthInterval.default(3000),
  healthCheckTimeout: HealthTimeout.default(1000),
  healthCheckFall: FallRise('healthcheck.fall').default(3),
  healthCheckRise: FallRise('healthcheck.rise').default(2),
  /** Retry on connection failure on another server (see Retry in lab/seams.ts). */
  retry: z.boolean().default(false),
  retryAttempts: RetryAttempts.default(3),
  /**
   * Reach the service through a VIP: one virtual address in front of its replicas that picks a
   * replica per TCP connection, as Docker Swarm's IPVS VIP does (lab/vip.ts).
   */
  vip: z.boolean().default(false),
  /** Reuse keep-alive connections to the servers (off: Traefik maxIdleConnsPerHost=-1, HAProxy option http-server-close). */
  reuse: z.boolean().default(true),
  /** With a VIP in front: resolve the service name to every task address (Swarm endpoint_mode dnsrr) instead of the VIP. */
  dnsrr: z.boolean().default(false),
  /** Keep-alive timeout of the service's replicas (ms; e.g. Kestrel's 30 s); absent = each backend's own default. */
  backendKeepAlive: KeepAliveMs('timeouts.backendKeepAlive').optional(),
});
export type Balancer = z.infer<typeof Balancer>;

/** A service's overrides: the same fields, none defaulted (zod's .partial() would keep the defaults). */
export const BalancerOverrides = z.object({
  algorithm: Algorithm.optional(),
  sticky: z.boolean().optional(),
  stickyCookie: CookieName.optional(),
  hashHeader: HeaderName.optional(),
  hashType: HashType.optional(),
  healthCheck: z.boolean().optional(),
  healthCheckPath: HealthPath.optional(),
  healthCheckInterval: HealthInterval.optional(),
  healthCheckTimeout: HealthTimeout.optional(),
  healthCheckFall: FallRise('healthcheck.fall').optional(),
  healthCheckRise: FallRise('healthcheck.rise').optional(),
  retry: z.boolean().optional(),
  retryAttempts: RetryAttempts.optional(),
  vip: z.boolean().optional(),
  reuse: z.boolean().optional(),
  dnsrr: z.boolean().optional(),
  backendKeepAlive: KeepAliveMs('timeouts.backendKeepAlive').optional(),
});

export const DRIVER_NAMES = ['embedded', 'haproxy', 'traefik'] as const;
export const DriverName = z.enum(DRIVER_NAMES, { error: 'proxy must be one of: embedded, haproxy, traefik' });
export type DriverName = z.infer<typeof DriverName>;

export const ProxySettings = Balancer.extend({
  driver: DriverName.default('embedded'),
  /**
   * How long the proxy keeps an idle client keep-alive connection open (ms): Traefik's entrypoint
   * `transport.respondingTimeouts.idleTimeout` (default 180 s), HAProxy `timeout http-keep-alive`.
   */
  clientIdle: KeepAliveMs('timeouts.clientIdle').default(180_000),
});
export type ProxySettings = z.infer<typeof ProxySettings>;

export const ServiceSpec = z.object({
  replicas: ReplicaCount,
  /** Overrides of the proxy-wide balancer settings for this service only. */
  balancer: BalancerOverrides.optional(),
});
export type ServiceSpec = z.infer<typeof ServiceSpec>;

/**
 * How the proxy learns about replicas. `dynamic`: like Traefik's Docker provider, the lab tells
 * the proxy when a replica starts or stops, and a crash is noticed as an orchestrator would.
 * `static`: like Traefik's file provider, a fixed server list: a crashed replica stays in the pool.
 */
export const Discovery = z.enum(['dynamic', 'static'], { error: 'discovery must be dynamic or static' });
export type Discovery = z.infer<typeof Discovery>;

export const Topology = z.object({
  services: z.partialRecord(ServiceName, ServiceSpec),
  routes: z.array(Route).max(20),
  discovery: Discovery.default('dynamic'),
  proxy: ProxySettings.default(ProxySettings.parse({})),
});
export type Topology = z.infer<typeof Topology>;

/** The balancer settings in force for one service: proxy-wide values, then the service's overrides. */
export function balancerOf(topology: Topology, service: ServiceName): Balancer {
  const { driver: _driver, ...proxyWide } = topology.proxy;
  const overrides = Object.fromEntries(Object.entries(topology.services[service]?.balancer ?? {}).filter(([, v]) => v !== undefined));
  return { ...proxyWide, ...overrides };
}

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
