/**
 * Proxy settings as people type them: `sticky=on`, `web_dynamic.sticky.cookie=lab_pin`,
 * `algorithm=hash`, `hash.header=X-Session-ID`, `hash.type=map-based`. One parser for the REST
 * API and the CLI, so both refuse the same input with the same sentence (naming the field).
 */
import { z } from 'zod';
import {
  Algorithm,
  CookieName,
  Discovery,
  FallRise,
  HashType,
  HeaderName,
  HealthInterval,
  HealthPath,
  HealthTimeout,
  KeepAliveMs,
  RetryAttempts,
  ServiceName,
  type Balancer,
  type Topology,
} from './topology.ts';

/** A setting name as typed, and the Balancer field it sets. */
const SETTINGS = {
  algorithm: 'algorithm',
  sticky: 'sticky',
  'sticky.cookie': 'stickyCookie',
  'hash.header': 'hashHeader',
  'hash.type': 'hashType',
  healthcheck: 'healthCheck',
  'healthcheck.path': 'healthCheckPath',
  'healthcheck.interval': 'healthCheckInterval',
  'healthcheck.timeout': 'healthCheckTimeout',
  'healthcheck.fall': 'healthCheckFall',
  'healthcheck.rise': 'healthCheckRise',
  retry: 'retry',
  'retry.attempts': 'retryAttempts',
  vip: 'vip',
  reuse: 'reuse',
  dnsrr: 'dnsrr',
  'timeouts.backendKeepAlive': 'backendKeepAlive',
} as const satisfies Record<string, keyof Balancer>;
export type SettingName = keyof typeof SETTINGS;
/** Settings of the whole topology rather than of a service's balancer. */
const TOPOLOGY_SETTINGS = { discovery: Discovery } as const;
/** Settings of the proxy's entrypoint (not per service). */
const ENTRYPOINT_SETTINGS = { 'timeouts.clientIdle': 'clientIdle' } as const;
export const SETTING_NAMES = [
  ...(Object.keys(SETTINGS) as SettingName[]),
  ...(Object.keys(ENTRYPOINT_SETTINGS) as Array<keyof typeof ENTRYPOINT_SETTINGS>),
  ...(Object.keys(TOPOLOGY_SETTINGS) as Array<keyof typeof TOPOLOGY_SETTINGS>),
];

const OnOff = (name: string) =>
  z.enum(['on', 'off', 'true', 'false'], { error: `${name} must be on or off` }).transform((v) => v === 'on' || v === 'true');
/** A whole number typed as text, then checked by `schema`. */
const Int = (name: string, schema: z.ZodNumber) =>
  z
    .string()
    .regex(/^\d{1,7}$/, `${name} must be a whole number`)
    .transform(Number)
    .pipe(schema);

/** Validators of each setting's value, as text. */
const VALUE: Record<SettingName, z.ZodType<unknown>> = {
  algorithm: Algorithm,
  sticky: OnOff('sticky'),
  // `default` clears a custom name: the driver's default name applies again.
  'sticky.cookie': z.union([z.literal('default').transform(() => undefined), CookieName]),
  'hash.header': HeaderName,
  'hash.type': HashType,
  healthcheck: OnOff('healthcheck'),
  'healthcheck.path': HealthPath,
  'healthcheck.interval': Int('healthcheck.interval', HealthInterval),
  'healthcheck.timeout': Int('healthcheck.timeout', HealthTimeout),
  'healthcheck.fall': Int('healthcheck.fall', FallRise('healthcheck.fall')),
  'healthcheck.rise': Int('healthcheck.rise', FallRise('healthcheck.rise')),
  retry: OnOff('retry'),
  'retry.attempts': Int('retry.attempts', RetryAttempts),
  vip: OnOff('vip'),
  reuse: OnOff('reuse'),
  dnsrr: OnOff('dnsrr'),
  'timeouts.backendKeepAlive': z.union([z.literal('default').transform(() => undefined), Int('timeouts.backendKeepAlive', KeepAliveMs('timeouts.backendKeepAlive'))]),
};

/** One validated change: a Balancer field for every service (service undefined) or for one. */
export interface SettingChange {
  service?: ServiceName;
  /** A Balancer field, `clientIdle` (the proxy's entrypoint) or `discovery` (topology-wide). */
  field: keyof Balancer | 'discovery' | 'clientIdle';
  /** undefined clears the value (only for stickyCookie). */
  value: Balancer[keyof Balancer] | Discovery | undefined;
  /** The text the user typed, for messages. */
  text: string;
}

/** Thrown for a setting that cannot be parsed; the message names the field and what is allowed. */
export class SettingError extends Error {
  override name = 'SettingError';
}

/**
 * Parses `[<service>.]<setting>=<value>`.
 * @throws SettingError with a sentence, e.g. `Unknown setting "stiky"; known: algorithm, sticky, ...`.
 */
export function parseSetting(text: string): SettingChange {
  if (typeof text !== 'string' || text.length > 200) throw new SettingError('A setting is text of at most 200 characters, like sticky=on.');
  const eq = text.indexOf('=');
  if (eq <= 0) throw new SettingError(`Expected <setting>=<value>, e.g. sticky=on; got "${text.slice(0, 60)}".`);
  const key = text.slice(0, eq).trim();
  const raw = text.slice(eq + 1).trim();
  let service: ServiceName | undefined;
  let name = key;
  const dot = key.indexOf('.');
  if (dot > 0) {
    const maybeService = ServiceName.safeParse(key.slice(0, dot));
    if (maybeService.success) {
      service = maybeService.data;
      name = key.slice(dot + 1);
    }
  }
  if (name in ENTRYPOINT_SETTINGS) {
    if (service) throw new SettingError(`${name} is a setting of the proxy's entrypoint, not of one service: use ${name}=<ms>.`);
    const parsed = Int(name, KeepAliveMs(name)).safeParse(raw);
    if (!parsed.success) throw new SettingError(`${name}: ${parsed.error.issues[0]?.message ?? 'invalid value'} (got "${raw.slice(0, 40)}").`);
    return { field: 'clientIdle', value: parsed.data, text };
  }
  if (name in TOPOLOGY_SETTINGS) {
    if (service) throw new SettingError(`${name} applies to the whole lab, not one service: use ${name}=<value>.`);
    const parsed = TOPOLOGY_SETTINGS[name as keyof typeof TOPOLOGY_SETTINGS].safeParse(raw);
    if (!parsed.success) throw new SettingError(`${name}: ${parsed.error.issues[0]?.message ?? 'invalid value'} (got "${raw.slice(0, 40)}").`);
    return { field: 'discovery', value: parsed.data, text };
  }
  if (!(name in SETTINGS)) {
    throw new SettingError(
      `Unknown setting "${name.slice(0, 40)}"; known: ${SETTING_NAMES.join(', ')} (prefix with a service, e.g. web_dynamic.sticky=on, to set one service only).`,
    );
  }
  const setting = name as SettingName;
  const parsed = VALUE[setting].safeParse(raw);
  if (!parsed.success) {
    throw new SettingError(`${setting}: ${parsed.error.issues[0]?.message ?? 'invalid value'} (got "${raw.slice(0, 40)}").`);
  }
  return { service, field: SETTINGS[setting], value: parsed.data as SettingChange['value'], text };
}

/** Returns a new topology with the changes applied (proxy-wide or per service). Pure. */
export function applySettings(topology: Topology, changes: readonly SettingChange[]): Topology {
  const next: Topology = structuredClone(topology);
  for (const c of changes) {
    if (c.field === 'discovery') {
      next.discovery = c.value as Discovery;
    } else if (c.field === 'clientIdle') {
      next.proxy.clientIdle = c.value as number;
    } else if (c.service) {
      const spec = next.services[c.service];
      if (!spec) continue;
      const balancer = { ...(spec.balancer ?? {}) } as Record<string, unknown>;
      if (c.value === undefined) delete balancer[c.field];
      else balancer[c.field] = c.value;
      spec.balancer = balancer as Partial<Balancer>;
    } else {
      const proxy = next.proxy as Record<string, unknown>;
      if (c.value === undefined) delete proxy[c.field];
      else proxy[c.field] = c.value;
      // A proxy-wide setting wins over earlier per-service overrides of the same field.
      for (const spec of Object.values(next.services)) {
        if (spec?.balancer) delete (spec.balancer as Record<string, unknown>)[c.field];
      }
    }
  }
  return next;
}
