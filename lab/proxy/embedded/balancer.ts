/**
 * How the embedded proxy picks a server for a request: the per-service balancer. Pure logic (no
 * sockets, no clock): the proxy gives it the request's Cookie header, the hashed header's value and
 * the number of requests in flight per server; it answers with a server and the sticky cookie to
 * write, if any. Which behaviour follows which documentation:
 *
 * - `round-robin`: Traefik v3's weighted round-robin (`wrr`, the default strategy), an Earliest
 *   Deadline First schedule: every server has a deadline, the earliest one is picked and its
 *   deadline moves on by 1/weight; a server that joins starts at the current deadline + 1/weight.
 *   Pool servers of weight 3:1:1 (a, b, c) thus get `a a b c a` in every 5 requests: interleaved,
 *   3/5, 1/5, 1/5. Ties (equal deadlines) go to the server that waited longest, so equal weights
 *   give plain round-robin in pool order. A server of weight 0 is left out of the service, as
 *   Traefik ignores non-positive weights (HAProxy differs: its weight-0 server still takes
 *   requests carrying its persistence cookie).
 *   https://doc.traefik.io/traefik/routing/services/#weighted-round-robin-service and
 *   traefik/traefik pkg/server/service/loadbalancer/wrr/wrr.go.
 * - `least-connections`: Traefik v3 has no such strategy; this follows HAProxy's `balance
 *   leastconn` (https://docs.haproxy.org/2.6/configuration.html#4.2-balance): the server with the
 *   fewest requests in flight relative to its weight (in flight / weight); "round-robin is performed
 *   within groups of servers of the same load": among equals, the server picked longest ago (so a
 *   server skipped while busy builds no credit, as HAProxy re-queues a server behind its equals).
 * - `hash`: HAProxy's `balance hdr(<name>)` with `hash-type`
 *   (https://docs.haproxy.org/2.6/configuration.html#4.2-hash-type). The header value is hashed with
 *   SHA-1 (first 4 bytes, big-endian, as an unsigned 32-bit number) instead of HAProxy's sdbm:
 *   `consistent` looks the hash up on a ring holding {@link RING_POINTS_PER_WEIGHT} x weight points
 *   per server (each point = SHA-1 of `<server name>#<i>`), so adding a server moves about 1/N of the
 *   keys; `map-based` takes the hash modulo the total weight over the servers in pool order (each
 *   server `weight` slots), so adding a server moves most keys. "If the header is absent or if it
 *   does not contain any value, the roundrobin algorithm is applied instead."
 * - sticky cookie: Traefik v3 (https://doc.traefik.io/traefik/routing/services/#sticky-sessions and
 *   pkg/server/service/loadbalancer/sticky.go since v3.3.4, PR traefik/traefik#11518). The cookie
 *   value is the first 16 hex digits of SHA-256 of the server URL ({@link stickyCookieValue}). A
 *   request whose cookie names a server of the service goes there and gets NO Set-Cookie; a cookie
 *   in an older Traefik format (the raw server URL, or its FNV-64 hash, or that hash hashed again) is
 *   honoured too and rewritten in the new format. No cookie, an unknown value or a server that left
 *   the pool: the algorithm picks and the response sets the cookie. Attributes as Go's
 *   http.Cookie writes them: `Path=/`, then `HttpOnly`, `Secure`, `SameSite=Lax|Strict|None` when
 *   configured; no Max-Age (a session cookie), no Domain. The sticky cookie is consulted before
 *   every algorithm, hash included.
 * - servers that may not take a request (PickRequest.usable: out of the rotation after a failed
 *   health check, draining, or already failed during a retry): a sticky cookie naming one is
 *   re-pinned (and rewritten), as Traefik's wrr does for a server whose status is down; round-robin
 *   skips them as Traefik's EDF does (the skipped server's deadline moves on too, so it does not
 *   come back with a burst of credit); least-connections leaves them out; consistent hashing walks
 *   the ring on to the next usable server (HAProxy); map-based hashing maps over the usable servers
 *   only, as HAProxy rebuilds its map when a server goes down. No usable server: null (503).
 */
import { createHash } from 'node:crypto';
import type { ProxyService, StickyCookie } from '../../seams.ts';

/** Points on the consistent-hash ring per unit of weight. */
export const RING_POINTS_PER_WEIGHT = 100;
/** Deadlines closer than this are equal (floating-point sums of 1/weight drift). */
const EPSILON = 1e-9;

/** One server as a balancer sees it; `T` is whatever the caller attaches (the proxy's agent). */
export interface BalancedServer<T = unknown> {
  /** The replica hostname. */
  name: string;
  /** `http://host:port`; its SHA-256 is the sticky cookie value. */
  url: string;
  /** 0..256; 0 = left out of the service. */
  weight: number;
  data: T;
}

/** What the balancer needs to know about one request. */
export interface PickRequest<T> {
  /** The request's `Cookie` header, if any. */
  cookie?: string | undefined;
  /** The value of the hashed header (`hash` algorithm), if the request has it. */
  hashKey?: string | undefined;
  /** Requests in flight on a server right now (`least-connections`). */
  inflight?: (server: BalancedServer<T>) => number;
  /**
   * Whether a server may take this request (default: all may). The proxy leaves out servers its
   * health check took out of the rotation, servers in `drain` state, and servers a retry already
   * failed on. See the class comment for how each algorithm skips them.
   */
  usable?: (server: BalancedServer<T>) => boolean;
}

export interface BalancerPick<T> {
  server: BalancedServer<T>;
  /** How the pick was made: `sticky` (cookie honoured), `hash`, or the algorithm (`round-robin`, `least-connections`). */
  by: 'sticky' | 'hash' | 'round-robin' | 'least-connections';
  /**
   * The sticky cookie, when sticky sessions are on: `set` is the whole Set-Cookie header value the
   * response must carry (absent when the request's cookie was honoured as is); `pair` is the cookie
   * as `name=value` (what the client will send, or sent).
   */
  sticky?: { pair: string; set?: string };
}

interface Slot<T> {
  server: BalancedServer<T>;
  deadline: number;
  /** When it was last picked or joined (tie-break: lower = has waited longer). */
  seq: number;
}

/** `url` -> first 16 hex digits of its SHA-256: Traefik v3's sticky cookie value for a server. */
export function stickyCookieValue(url: string): string {
  return createHash('sha256').update(url).digest('hex').slice(0, 16);
}

/** Go's hash/fnv New64 (FNV-1, 64 bit) as lower-case hex without padding: Traefik's older cookie value. */
export function fnv64Hex(input: string): string {
  let h = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(input, 'utf8')) {
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
    h ^= BigInt(byte);
  }
  return h.toString(16);
}

/** SHA-1 of a string, first 4 bytes as an unsigned 32-bit integer. */
export function hash32(input: string): number {
  return createHash('sha1').update(input).digest().readUInt32BE(0);
}

/**
 * The value of the cookie `name` in a Cookie header, as Go's Request.Cookie finds it: the first
 * `name=value` pair with that exact name; surrounding double quotes are removed. Undefined if absent.
 */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() !== name) continue;
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    return value;
  }
  return undefined;
}

/** The Set-Cookie header value for a sticky cookie, attributes in Go's http.Cookie order. */
export function setCookieHeader(cookie: StickyCookie, value: string): string {
  let s = `${cookie.name}=${value}; Path=/`;
  if (cookie.httpOnly) s += '; HttpOnly';
  if (cookie.secure) s += '; Secure';
  if (cookie.sameSite === 'lax') s += '; SameSite=Lax';
  else if (cookie.sameSite === 'strict') s += '; SameSite=Strict';
  else if (cookie.sameSite === 'none') s += '; SameSite=None';
  return s;
}

/** True when two server lists have the same servers (name, url, weight) in the same order. */
function sameServers<T>(a: ReadonlyArray<BalancedServer<T>>, b: ReadonlyArray<BalancedServer<T>>): boolean {
  return a.length === b.length && a.every((s, i) => s.name === b[i].name && s.url === b[i].url && s.weight === b[i].weight);
}

/**
 * The balancer of one service. Build a new one on every configuration change, passing the previous
 * one: when the servers (and weights) are unchanged the weighted round-robin schedule carries over;
 * otherwise it starts again at the first server in pool order, as Traefik's does when it builds
 * the service anew from a new dynamic configuration.
 */
export class ServiceBalancer<T> {
  readonly algorithm: ProxyService['loadBalancer']['algorithm'];
  readonly sticky: StickyCookie | null;
  readonly hash: ProxyService['loadBalancer']['hash'] | null;
  /** Servers taking requests (weight > 0), in pool order. */
  readonly servers: ReadonlyArray<BalancedServer<T>>;
  readonly #slots: Slot<T>[];
  #curDeadline: number;
  #seq: number;
  /** sticky cookie value -> server, plus whether a request carrying it must get a rewritten cookie. */
  readonly #byCookie = new Map<string, { server: BalancedServer<T>; rewrite: boolean }>();
  #ring: { points: Uint32Array; owners: BalancedServer<T>[] } | null = null;
  #map: BalancedServer<T>[] | null = null;

  /**
   * @param lb the service's `loadBalancer` (algorithm, sticky, hash); its `servers` are ignored in
   *   favour of `servers`, which carry the caller's data.
   * @param servers every server of the service in pool order; weight-0 ones are left out.
   * @param previous the balancer this one replaces, if any.
   * @throws RangeError when a weight is not an integer in 0..256.
   */
  constructor(
    lb: Pick<ProxyService['loadBalancer'], 'algorithm' | 'sticky' | 'hash'>,
    servers: ReadonlyArray<BalancedServer<T>>,
    previous?: ServiceBalancer<T> | null,
  ) {
    for (const s of servers) {
      if (!Number.isInteger(s.weight) || s.weight < 0 || s.weight > 256) {
        throw new RangeError(`Server ${s.name} has weight ${s.weight}; a weight must be a whole number from 0 to 256.`);
      }
    }
    this.algorithm = lb.algorithm;
    this.sticky = lb.sticky?.cookie ?? null;
    this.hash = lb.algorithm === 'hash' ? (lb.hash ?? null) : null;
    this.servers = servers.filter((s) => s.weight > 0);
    // Traefik builds a new wrr balancer from each new configuration, so a change of servers or
    // weights restarts the schedule at the first server in pool order; an unchanged server list
    // (say, only the sticky cookie changed) keeps its place.
    const same = previous != null && sameServers(previous.servers, this.servers);
    if (!same) previous = null;
    this.#curDeadline = previous ? previous.#curDeadline : 0;
    this.#seq = previous ? previous.#seq : 0;
    const old = new Map((previous ? previous.#slots : []).map((slot) => [`${slot.server.name} ${slot.server.url}`, slot]));
    this.#slots = this.servers.map((server) => {
      const was = old.get(`${server.name} ${server.url}`);
      if (was && was.server.weight === server.weight) return { server, deadline: was.deadline, seq: was.seq };
      return { server, deadline: this.#curDeadline + 1 / server.weight, seq: this.#seq++ };
    });
    if (this.sticky) {
      for (const server of this.servers) {
        const legacy = fnv64Hex(server.url);
        this.#byCookie.set(server.url, { server, rewrite: true });
        this.#byCookie.set(legacy, { server, rewrite: true });
        this.#byCookie.set(fnv64Hex(legacy), { server, rewrite: true });
      }
      // The current format last: it wins over a legacy value that happens to collide.
      for (const server of this.servers) this.#byCookie.set(stickyCookieValue(server.url), { server, rewrite: false });
    }
  }

  /**
   * Picks the server for a request, or null when the service has no server taking requests (the
   * proxy answers 503). Advances the round-robin schedule unless the sticky cookie or the hash decided.
   */
  pick(req: PickRequest<T> = {}): BalancerPick<T> | null {
    const usable = req.usable;
    if (!this.servers.some((s) => !usable || usable(s))) return null;
    if (this.sticky) {
      const value = readCookie(req.cookie, this.sticky.name);
      const hit = value === undefined ? undefined : this.#byCookie.get(value);
      if (hit && (!usable || usable(hit.server))) {
        const pair = `${this.sticky.name}=${value}`;
        if (!hit.rewrite) return { server: hit.server, by: 'sticky', sticky: { pair } };
        return { server: hit.server, by: 'sticky', sticky: this.#cookieFor(hit.server) };
      }
    }
    const picked = this.#choose(req);
    return this.sticky ? { ...picked, sticky: this.#cookieFor(picked.server) } : picked;
  }

  #cookieFor(server: BalancedServer<T>): { pair: string; set: string } {
    const cookie = this.sticky as StickyCookie;
    const value = stickyCookieValue(server.url);
    return { pair: `${cookie.name}=${value}`, set: setCookieHeader(cookie, value) };
  }

  /** Picks among the usable servers; at least one is usable (pick() checked). */
  #choose(req: PickRequest<T>): BalancerPick<T> {
    const usable = req.usable ?? (() => true);
    if (this.hash && req.hashKey) {
      const h = hash32(req.hashKey);
      const server = this.hash.type === 'consistent' ? this.#onRing(h, usable) : this.#onMap(h, usable);
      return { server, by: 'hash' };
    }
    if (this.algorithm === 'least-connections') {
      const inflight = req.inflight ?? (() => 0);
      let best: Slot<T>[] = [];
      let bestLoad = { n: 0, w: 1 };
      for (const slot of this.#slots) {
        if (!usable(slot.server)) continue;
        const n = inflight(slot.server);
        // n / w < best.n / best.w, in integers.
        const cmp = best.length === 0 ? -1 : n * bestLoad.w - bestLoad.n * slot.server.weight;
        if (cmp < 0) {
          best = [slot];
          bestLoad = { n, w: slot.server.weight };
        } else if (cmp === 0) best.push(slot);
      }
      // Round-robin within the group of equal load: the one picked longest ago.
      const next = best.reduce((a, b) => (b.seq < a.seq ? b : a));
      next.seq = this.#seq++;
      return { server: next.server, by: 'least-connections' };
    }
    return { server: this.#edf(this.#slots, usable), by: 'round-robin' };
  }

  /**
   * Earliest deadline first among `slots` (non-empty, one of them usable); moves the winner's
   * deadline on by 1/weight. An unusable winner is skipped after its deadline moved on, as
   * Traefik's wrr pops and pushes back a server whose status is down, and the next one is tried.
   */
  #edf(slots: Slot<T>[], usable: (server: BalancedServer<T>) => boolean): BalancedServer<T> {
    for (;;) {
      let best = slots[0];
      for (const slot of slots) {
        const d = slot.deadline - best.deadline;
        if (d < -EPSILON || (Math.abs(d) <= EPSILON && slot.seq < best.seq)) best = slot;
      }
      this.#curDeadline = best.deadline;
      best.deadline += 1 / best.server.weight;
      best.seq = this.#seq++;
      if (usable(best.server)) return best.server;
    }
  }

  #onRing(h: number, usable: (server: BalancedServer<T>) => boolean): BalancedServer<T> {
    if (!this.#ring) {
      const entries: Array<[number, number]> = [];
      this.servers.forEach((server, idx) => {
        for (let i = 0; i < RING_POINTS_PER_WEIGHT * server.weight; i++) entries.push([hash32(`${server.name}#${i}`), idx]);
      });
      entries.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      this.#ring = { points: Uint32Array.from(entries, (e) => e[0]), owners: entries.map((e) => this.servers[e[1]]) };
    }
    const { points, owners } = this.#ring;
    // First point at or after h, wrapping around.
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid] < h) lo = mid + 1;
      else hi = mid;
    }
    // Walk on (wrapping) to the first point owned by a usable server.
    for (let k = 0; k < points.length; k++) {
      const owner = owners[(lo + k) % points.length];
      if (usable(owner)) return owner;
    }
    return owners[lo % points.length]; // unreachable: pick() checked one server is usable
  }

  #onMap(h: number, usable: (server: BalancedServer<T>) => boolean): BalancedServer<T> {
    const up = this.servers.filter(usable);
    let map: BalancedServer<T>[];
    if (up.length === this.servers.length) map = this.#map ??= this.#mapOf(this.servers);
    else map = this.#mapOf(up);
    return map[h % map.length];
  }

  #mapOf(servers: ReadonlyArray<BalancedServer<T>>): BalancedServer<T>[] {
    return servers.flatMap((s) => Array.from({ length: s.weight }, () => s));
  }
}
