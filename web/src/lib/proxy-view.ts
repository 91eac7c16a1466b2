/**
 * Small pure helpers the widgets share to describe the proxy: the balancer settings in force for a
 * service, the sticky cookie's default name, Set-Cookie parsing, the stats page's address.
 * Kept free of zod and node modules so the web bundle stays small.
 */
import type { LabStatus } from '../../../server/protocol.ts';

export type Algorithm = 'round-robin' | 'least-connections' | 'hash';

export interface BalancerView {
  algorithm: Algorithm;
  sticky: boolean;
  /** Custom cookie name, or undefined for the default one. */
  stickyCookie?: string;
  hashHeader: string;
  hashType: 'consistent' | 'map-based';
  /** Active health check on/off and its parameters (ms; fall/rise are HAProxy's, Traefik has none). */
  healthCheck: boolean;
  healthCheckPath: string;
  healthCheckInterval: number;
  healthCheckTimeout: number;
  healthCheckFall: number;
  healthCheckRise: number;
  /** Retry on connection failure, on another server. */
  retry: boolean;
  retryAttempts: number;
}

/**
 * Whether the engine takes a server out after `fall` failed probes in a row and back after `rise`
 * good ones (HAProxy), or after one and one (Traefik, so the embedded proxy): fall/rise ignored.
 */
export function honoursFallRise(driver: string | undefined): boolean {
  return driver === 'haproxy';
}

/**
 * The longest a crashed replica should keep failing requests once an active check runs: it is
 * taken out at its first failed probe on Traefik's semantics (within one interval), after `fall`
 * failed probes on HAProxy (within fall × interval).
 */
export function ejectionBoundMs(view: Pick<BalancerView, 'healthCheckInterval' | 'healthCheckFall'>, driver: string | undefined): number {
  return view.healthCheckInterval * (honoursFallRise(driver) ? view.healthCheckFall : 1);
}

/** The service a request path reaches (the longest matching pathPrefix, as the proxy's routers pick), or null. */
export function serviceForPath(status: LabStatus, path: string): string | null {
  let best: { service: string; length: number } | null = null;
  for (const r of status.topology.routes) {
    const prefix = r.pathPrefix ?? '/';
    if (path.startsWith(prefix) && (!best || prefix.length > best.length)) best = { service: r.service, length: prefix.length };
  }
  return best?.service ?? null;
}

/**
 * The settings in force for `service` (proxy-wide values, then the service's overrides), as
 * lab/topology.ts `balancerOf` computes them; without a service, the proxy-wide values.
 */
export function balancerView(status: LabStatus, service?: string): BalancerView {
  const { driver: _driver, ...proxyWide } = status.topology.proxy;
  const services = status.topology.services as Record<string, { balancer?: Partial<BalancerView> } | undefined>;
  const overrides = service ? (services[service]?.balancer ?? {}) : {};
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  return { ...(proxyWide as BalancerView), ...defined };
}

/**
 * The sticky cookie name every engine of the lab uses for a service when none is set: Traefik v3's
 * derivation for `<service>@file`, `_` + the first 5 hex digits of SHA-1 of
 * `_TRAEFIK_BACKEND_<service>@file` (the same function as `defaultStickyCookieName` in
 * lab/proxy/config.ts, which the server uses; here with WebCrypto). Null where WebCrypto is missing.
 */
export async function defaultStickyCookieName(service: string): Promise<string | null> {
  if (!globalThis.crypto?.subtle) return null;
  const bytes = new TextEncoder().encode(`_TRAEFIK_BACKEND_${service}@file`);
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-1', bytes));
  const hex = [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `_${hex}`.slice(0, 6);
}

export interface SetCookieView {
  name: string;
  value: string;
  /** Attributes as written, e.g. [['Path', '/'], ['HttpOnly', '']]. */
  attributes: Array<[string, string]>;
}

/** Parses one Set-Cookie header value (`name=value; Path=/; HttpOnly`). */
export function parseSetCookie(header: string): SetCookieView {
  const [pair, ...attrs] = header.split(';');
  const eq = pair.indexOf('=');
  const name = (eq >= 0 ? pair.slice(0, eq) : pair).trim();
  const value = eq >= 0 ? pair.slice(eq + 1).trim() : '';
  const attributes = attrs
    .map((a) => a.trim())
    .filter(Boolean)
    .map((a): [string, string] => {
      const i = a.indexOf('=');
      return i >= 0 ? [a.slice(0, i).trim(), a.slice(i + 1).trim()] : [a, ''];
    });
  return { name, value, attributes };
}

/**
 * The proxy's stats page (HAProxy's), with its host replaced by this page's host name: the lab
 * reports 127.0.0.1, and the learner opened the lab as localhost (same machine, same port).
 */
export function statsHref(statsUrl: string | null | undefined): string | null {
  if (!statsUrl) return null;
  try {
    const u = new URL(statsUrl);
    u.hostname = window.location.hostname;
    return u.href;
  } catch {
    return null;
  }
}

/** Human names of the capabilities, for "this engine has no ..." sentences. */
export const CAPABILITY_NAMES: Record<keyof LabStatus['proxy']['capabilities'], string> = {
  roundRobin: 'round-robin',
  weights: 'server weights',
  leastConnections: 'least-connections',
  stickyCookie: 'sticky cookies',
  headerHash: 'hashing on a header',
  activeHealthCheck: 'active health checks',
  retry: 'retries',
  perRequestEvents: 'per-request events',
  connectionEvents: 'connection events',
  runtimeApi: 'a Runtime API console',
};

/** The features the running engine lacks, as a readable list (empty when it has them all). */
export function missingCapabilities(status: LabStatus): string[] {
  const caps = status.proxy.capabilities as unknown as Record<string, boolean>;
  return Object.entries(CAPABILITY_NAMES)
    .filter(([k]) => caps[k] === false)
    .map(([, name]) => name);
}
