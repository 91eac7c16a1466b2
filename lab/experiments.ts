/**
 * Experiments the lessons run against the real proxy with the probe client: bursts of requests
 * with explicit connection and cookie handling, and the hash-movement measurement. Results are
 * measured from real responses, never computed.
 */
import { z } from 'zod';
import { ProbeClient } from './probe-client.ts';
import type { Lab } from './lab.ts';
import { HeaderName, ServiceName } from './topology.ts';

/** Paths a burst may request on the lab's own proxy: URL path characters only. */
const ProbePath = z
  .string()
  .max(200, 'path is at most 200 characters')
  .regex(/^\/[A-Za-z0-9._~\-/]*(\?[A-Za-z0-9._~\-=&%]*)?$/, 'path must start with / and use URL path characters only');

export const BurstRequest = z.strictObject({
  path: ProbePath.default('/api/'),
  count: z.number().int('count must be a whole number').min(1, 'count must be at least 1').max(100, 'count must be at most 100').default(10),
  /** Keep a cookie jar across the burst (a browser does; many API clients do not). */
  cookies: z.boolean().default(false),
  /** One keep-alive connection for the whole burst, or a new connection per request. */
  connection: z.enum(['reuse', 'new']).default('reuse'),
  /**
   * With connection `reuse`: keep the connection open after the burst and use it for the next
   * `keep` burst, like a long-lived HttpClient, until the proxy closes it when idle (the lesson on
   * idle timeouts watches that close). Without it the client hangs up after its burst.
   */
  keep: z.boolean().default(false),
  /** Send this value as the header `headerName` on every request (e.g. X-Session-ID: alice). */
  header: z.strictObject({ name: HeaderName, value: z.string().max(100).regex(/^[\x20-\x7e]*$/, 'header value must be printable ASCII') }).optional(),
});
export type BurstRequest = z.infer<typeof BurstRequest>;

export interface BurstResult {
  status: number;
  /** X-Served-By of the answer (the replica), or null. */
  servedBy: string | null;
  /** Set-Cookie headers of the answer. */
  setCookie: string[];
  localPort: number;
}

/**
 * Sends `count` sequential GETs to the proxy and reports who answered each.
 * @param proxyBase e.g. http://127.0.0.1:8080 (always the lab's own proxy)
 * @param kept a client to use and leave open (for `keep` bursts); otherwise a new one, closed after.
 */
export async function runBurst(proxyBase: string, req: BurstRequest, kept?: ProbeClient): Promise<BurstResult[]> {
  const probe = kept ?? new ProbeClient({ baseUrl: proxyBase, connection: req.connection, cookies: req.cookies });
  const results: BurstResult[] = [];
  try {
    for (let i = 0; i < req.count; i++) {
      const res = await probe.get(req.path, { headers: req.header ? { [req.header.name]: req.header.value } : {}, timeoutMs: 10_000 });
      const sc = res.headers['set-cookie'];
      results.push({ status: res.status, servedBy: res.servedBy, setCookie: sc ? [sc].flat() : [], localPort: res.localPort });
    }
  } finally {
    if (!kept) probe.close();
  }
  return results;
}

export const HashMovementRequest = z.strictObject({
  service: ServiceName.default('web_dynamic'),
  type: z.enum(['consistent', 'map-based'], { error: 'type must be consistent or map-based' }),
  /** How many distinct session ids to send. */
  ids: z.number().int().min(10, 'ids must be at least 10').max(500, 'ids must be at most 500').default(100),
  /** Replica count before and after: from -> from + 1. */
  from: z.number().int().min(1, 'from must be at least 1').max(9, 'from must be at most 9').default(4),
});
export type HashMovementRequest = z.infer<typeof HashMovementRequest>;

export interface HashMovementResult {
  service: string;
  type: 'consistent' | 'map-based';
  header: string;
  ids: number;
  /** Replicas before and after the scale-up. */
  before: string[];
  after: string[];
  /** Ids whose replica changed when one replica was added: measured. */
  moved: number;
  /** Share of ids per replica, before and after. */
  distributionBefore: Record<string, number>;
  distributionAfter: Record<string, number>;
}

/**
 * Hashing on a header, measured: sets `<service>.algorithm=hash` with the given hash type, scales
 * the service to `from` replicas, sends one request per session id (header X-Session-ID unless the
 * topology names another), scales to `from + 1`, sends them again and counts the ids that moved.
 * Leaves the lab in the "after" state so the learner can keep looking.
 * @throws LabError from the lab (e.g. the engine cannot hash).
 */
export async function measureHashMovement(lab: Lab, req: HashMovementRequest): Promise<HashMovementResult> {
  const { service, type, ids, from } = req;
  await lab.configure([`${service}.algorithm=hash`, `${service}.hash.type=${type}`]);
  await lab.scale(service, from);
  const status = lab.status();
  const route = status.topology.routes.find((r) => r.service === service);
  const path = route?.pathPrefix ?? '/';
  const header = status.topology.services[service]?.balancer?.hashHeader ?? status.topology.proxy.hashHeader;
  const base = `http://127.0.0.1:${status.proxy.port}`;
  const keys = Array.from({ length: ids }, (_, i) => `session-${i + 1}`);

  const map = async (): Promise<Map<string, string>> => {
    const probe = new ProbeClient({ baseUrl: base, connection: 'reuse' });
    const out = new Map<string, string>();
    try {
      for (const key of keys) {
        const res = await probe.get(path, { headers: { [header]: key }, timeoutMs: 10_000 });
        out.set(key, res.servedBy ?? `status ${res.status}`);
      }
    } finally {
      probe.close();
    }
    return out;
  };
  const hostsOf = () => lab.status().services.find((s) => s.name === service)?.instances.map((r) => r.hostname) ?? [];
  const count = (m: Map<string, string>) => {
    const d: Record<string, number> = {};
    for (const v of m.values()) d[v] = (d[v] ?? 0) + 1;
    return d;
  };

  const before = hostsOf();
  const first = await map();
  await lab.scale(service, from + 1);
  const after = hostsOf();
  const second = await map();
  let moved = 0;
  for (const key of keys) if (first.get(key) !== second.get(key)) moved++;
  return { service, type, header, ids, before, after, moved, distributionBefore: count(first), distributionAfter: count(second) };
}
