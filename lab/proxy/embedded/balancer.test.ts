import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { ProxyService, StickyCookie } from '../../seams.ts';
import {
  ServiceBalancer,
  fnv64Hex,
  readCookie,
  setCookieHeader,
  stickyCookieValue,
  type BalancedServer,
} from './balancer.ts';

type LB = Pick<ProxyService['loadBalancer'], 'algorithm' | 'sticky' | 'hash'>;

function servers(spec: Record<string, number>): BalancedServer<string>[] {
  return Object.entries(spec).map(([name, weight], i) => ({ name, url: `http://127.0.0.1:${4000 + i}`, weight, data: name }));
}

function picks(b: ServiceBalancer<string>, n: number, req: Parameters<ServiceBalancer<string>['pick']>[0] = {}): string[] {
  return Array.from({ length: n }, () => b.pick(req)?.server.name ?? 'none');
}

const rr: LB = { algorithm: 'round-robin' };
const cookie: StickyCookie = { name: '_abcde', httpOnly: false, secure: false, sameSite: '' };

describe('weighted round-robin (Traefik wrr, earliest deadline first)', () => {
  it('equal weights: plain round-robin in pool order', () => {
    expect(picks(new ServiceBalancer(rr, servers({ a: 1, b: 1, c: 1 })), 7)).toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'a']);
  });

  it('3:1:1 interleaves a a b c a, so every 5 requests share 3/5, 1/5, 1/5', () => {
    const seq = picks(new ServiceBalancer(rr, servers({ a: 3, b: 1, c: 1 })), 50);
    expect(seq.slice(0, 5)).toEqual(['a', 'a', 'b', 'c', 'a']);
    for (let i = 0; i < 50; i += 5) {
      const w = seq.slice(i, i + 5);
      expect([w.filter((x) => x === 'a').length, w.filter((x) => x === 'b').length, w.filter((x) => x === 'c').length]).toEqual([3, 1, 1]);
    }
  });

  it('weight 0 takes no requests; a service of only weight-0 servers has none', () => {
    expect(new Set(picks(new ServiceBalancer(rr, servers({ a: 1, z: 0, b: 1 })), 10))).toEqual(new Set(['a', 'b']));
    expect(new ServiceBalancer(rr, servers({ z: 0 })).pick()).toBeNull();
    expect(new ServiceBalancer(rr, []).pick()).toBeNull();
  });

  it('a rebuild with the same servers keeps its place; new servers restart the rotation in pool order (as Traefik rebuilds)', () => {
    const first = new ServiceBalancer(rr, servers({ a: 1, b: 1, c: 1 }));
    expect(picks(first, 4)).toEqual(['a', 'b', 'c', 'a']);
    const same = new ServiceBalancer(rr, servers({ a: 1, b: 1, c: 1 }), first);
    expect(picks(same, 3)).toEqual(['b', 'c', 'a']);
    const withD = [...servers({ a: 1, b: 1, c: 1 }), { name: 'd', url: 'http://127.0.0.1:4999', weight: 1, data: 'd' }];
    expect(picks(new ServiceBalancer(rr, withD, same), 8)).toEqual(['a', 'b', 'c', 'd', 'a', 'b', 'c', 'd']);
  });

  it('rejects weights outside 0..256', () => {
    expect(() => new ServiceBalancer(rr, servers({ a: 257 }))).toThrow(RangeError);
    expect(() => new ServiceBalancer(rr, servers({ a: 1.5 }))).toThrow(/whole number from 0 to 256/);
    expect(() => new ServiceBalancer(rr, servers({ a: -1 }))).toThrow(RangeError);
  });
});

describe('least-connections (HAProxy leastconn)', () => {
  const lc: LB = { algorithm: 'least-connections' };

  it('picks the server with the fewest requests in flight, round-robin among equals', () => {
    const b = new ServiceBalancer(lc, servers({ a: 1, b: 1, c: 1 }));
    const busy: Record<string, number> = { a: 2, b: 0, c: 0 };
    expect(picks(b, 4, { inflight: (s) => busy[s.name] })).toEqual(['b', 'c', 'b', 'c']);
    busy.c = 1;
    expect(picks(b, 2, { inflight: (s) => busy[s.name] })).toEqual(['b', 'b']);
    // Equal loads again: the server picked longest ago first (a never was), no catching up.
    expect(picks(b, 4, { inflight: () => 0 })).toEqual(['a', 'c', 'b', 'a']);
  });

  it('weighs the load: in flight / weight', () => {
    const b = new ServiceBalancer(lc, servers({ a: 4, b: 1 }));
    // a: 3/4 < b: 1/1
    expect(b.pick({ inflight: (s) => (s.name === 'a' ? 3 : 1) })?.server.name).toBe('a');
    // a: 5/4 > b: 1/1
    expect(b.pick({ inflight: (s) => (s.name === 'a' ? 5 : 1) })?.server.name).toBe('b');
  });
});

describe('header hashing (HAProxy balance hdr() + hash-type)', () => {
  const ids = Array.from({ length: 1000 }, (_, i) => `session-${i}`);
  const five = servers({ s1: 1, s2: 1, s3: 1, s4: 1, s5: 1 });

  function moved(type: 'consistent' | 'map-based'): { moved: string[]; before: Map<string, string>; after: Map<string, string> } {
    const lb: LB = { algorithm: 'hash', hash: { header: 'X-Session-ID', type } };
    const four = new ServiceBalancer(lb, five.slice(0, 4));
    const all = new ServiceBalancer(lb, five);
    const before = new Map(ids.map((id) => [id, four.pick({ hashKey: id })?.server.name ?? '']));
    const after = new Map(ids.map((id) => [id, all.pick({ hashKey: id })?.server.name ?? '']));
    return { moved: ids.filter((id) => before.get(id) !== after.get(id)), before, after };
  }

  it('sends the same key to the same server, and every server gets a share', () => {
    for (const type of ['consistent', 'map-based'] as const) {
      const b = new ServiceBalancer({ algorithm: 'hash', hash: { header: 'X-Session-ID', type } }, five);
      for (const id of ids.slice(0, 20)) expect(new Set(picks(b, 5, { hashKey: id })).size).toBe(1);
      const counts = new Map<string, number>();
      for (const id of ids) {
        const s = b.pick({ hashKey: id })?.server.name ?? '';
        counts.set(s, (counts.get(s) ?? 0) + 1);
      }
      expect(counts.size).toBe(5);
      for (const n of counts.values()) expect(n).toBeGreaterThan(100); // fair share 200
    }
  });

  it('consistent: adding a 5th server moves about 1/5 of the keys, all of them to the new server', () => {
    const r = moved('consistent');
    expect(r.moved.length / ids.length).toBeGreaterThan(0.1);
    expect(r.moved.length / ids.length).toBeLessThan(0.3);
    for (const id of r.moved) expect(r.after.get(id)).toBe('s5');
  });

  it('map-based: adding a 5th server moves most keys', () => {
    expect(moved('map-based').moved.length / ids.length).toBeGreaterThan(0.7);
  });

  it('falls back to round-robin without the header', () => {
    const b = new ServiceBalancer({ algorithm: 'hash', hash: { header: 'X-Session-ID', type: 'consistent' } }, servers({ a: 1, b: 1 }));
    expect(picks(b, 4)).toEqual(['a', 'b', 'a', 'b']);
    expect(b.pick({ hashKey: 'x' })?.by).toBe('hash');
    expect(b.pick({})?.by).toBe('round-robin');
  });
});

describe('sticky cookie (Traefik v3)', () => {
  const sticky: LB = { algorithm: 'round-robin', sticky: { cookie } };
  const pool = servers({ a: 1, b: 1, c: 1 });

  it("values a server by the first 16 hex digits of SHA-256 of its URL; older formats are Go's FNV-64", () => {
    expect(stickyCookieValue('http://127.0.0.1:4000')).toBe(createHash('sha256').update('http://127.0.0.1:4000').digest('hex').slice(0, 16));
    // FNV-1 64-bit reference vectors (Go's hash/fnv New64).
    expect(fnv64Hex('')).toBe('cbf29ce484222325');
    expect(fnv64Hex('a')).toBe('af63bd4c8601b7be');
    expect(fnv64Hex('foobar')).toBe('340d8765a4dda9c2');
  });

  it('without a cookie: the algorithm picks and the cookie is set', () => {
    const b = new ServiceBalancer(sticky, pool);
    const p = b.pick();
    expect(p?.server.name).toBe('a');
    const v = stickyCookieValue(pool[0].url);
    expect(p?.sticky).toEqual({ pair: `_abcde=${v}`, set: `_abcde=${v}; Path=/` });
  });

  it('with a valid cookie: that server, no Set-Cookie, and the rotation does not move', () => {
    const b = new ServiceBalancer(sticky, pool);
    const header = `other=1; _abcde=${stickyCookieValue(pool[2].url)}`;
    for (let i = 0; i < 3; i++) {
      const p = b.pick({ cookie: header });
      expect(p?.server.name).toBe('c');
      expect(p?.by).toBe('sticky');
      expect(p?.sticky?.set).toBeUndefined();
      expect(p?.sticky?.pair).toBe(`_abcde=${stickyCookieValue(pool[2].url)}`);
    }
    expect(b.pick()?.server.name).toBe('a');
  });

  it('an unknown value or a server that left is re-pinned and the cookie rewritten', () => {
    const b = new ServiceBalancer(sticky, pool.slice(1));
    const gone = b.pick({ cookie: `_abcde=${stickyCookieValue(pool[0].url)}` });
    expect(gone?.server.name).toBe('b');
    expect(gone?.sticky?.set).toBe(`_abcde=${stickyCookieValue(pool[1].url)}; Path=/`);
    expect(b.pick({ cookie: '_abcde=garbage' })?.sticky?.set).toMatch(/^_abcde=[0-9a-f]{16}; Path=\/$/);
  });

  it('older cookie formats (raw URL, FNV-64, double FNV-64) are honoured and rewritten', () => {
    const b = new ServiceBalancer(sticky, pool);
    for (const old of [pool[1].url, fnv64Hex(pool[1].url), fnv64Hex(fnv64Hex(pool[1].url))]) {
      const p = b.pick({ cookie: `_abcde="${old}"` });
      expect(p?.server.name).toBe('b');
      expect(p?.by).toBe('sticky');
      expect(p?.sticky?.set).toBe(`_abcde=${stickyCookieValue(pool[1].url)}; Path=/`);
    }
  });

  it('a weight-0 server is out of the service: its cookie is re-pinned', () => {
    const b = new ServiceBalancer(sticky, servers({ a: 0, b: 1 }));
    const p = b.pick({ cookie: `_abcde=${stickyCookieValue('http://127.0.0.1:4000')}` });
    expect(p?.server.name).toBe('b');
    expect(p?.sticky?.set).toBeDefined();
  });

  it('the cookie wins over header hashing', () => {
    const b = new ServiceBalancer({ algorithm: 'hash', hash: { header: 'X-Session-ID', type: 'consistent' }, sticky: { cookie } }, pool);
    const target = pool.find((s) => s.name !== b.pick({ hashKey: 'k' })?.server.name) as BalancedServer<string>;
    expect(b.pick({ hashKey: 'k', cookie: `_abcde=${stickyCookieValue(target.url)}` })?.server.name).toBe(target.name);
  });

  it('writes the attributes as Go does and reads cookies as Go does', () => {
    expect(setCookieHeader(cookie, 'v')).toBe('_abcde=v; Path=/');
    expect(setCookieHeader({ name: 'n', httpOnly: true, secure: true, sameSite: 'strict' }, 'v')).toBe('n=v; Path=/; HttpOnly; Secure; SameSite=Strict');
    expect(setCookieHeader({ name: 'n', httpOnly: false, secure: false, sameSite: 'lax' }, 'v')).toBe('n=v; Path=/; SameSite=Lax');
    expect(setCookieHeader({ name: 'n', httpOnly: false, secure: true, sameSite: 'none' }, 'v')).toBe('n=v; Path=/; Secure; SameSite=None');
    expect(readCookie('a=1; b="2"; a=3', 'a')).toBe('1');
    expect(readCookie('a=1; b="2"', 'b')).toBe('2');
    expect(readCookie('ab=1', 'a')).toBeUndefined();
    expect(readCookie(undefined, 'a')).toBeUndefined();
  });
});

describe('servers that may not take a request (PickRequest.usable: down, draining, failed)', () => {
  const notB = { usable: (s: BalancedServer<string>) => s.name !== 'b' };

  it('round-robin skips them (Traefik wrr) and comes back to them in order once usable again', () => {
    const b = new ServiceBalancer(rr, servers({ a: 1, b: 1, c: 1 }));
    expect(picks(b, 2)).toEqual(['a', 'b']);
    expect(picks(b, 4, notB)).toEqual(['c', 'a', 'c', 'a']);
    // b's deadline moved on while it was skipped: no burst of requests for it afterwards.
    expect(picks(b, 6)).toEqual(['b', 'c', 'a', 'b', 'c', 'a']);
  });

  it('weighted round-robin keeps the ratio among the usable ones', () => {
    const seq = picks(new ServiceBalancer(rr, servers({ a: 3, b: 5, c: 1 })), 40, notB);
    expect(seq.filter((x) => x === 'a').length).toBe(30);
    expect(seq.filter((x) => x === 'c').length).toBe(10);
  });

  it('no usable server: null (the proxy answers 503), for every algorithm', () => {
    const none = { usable: () => false };
    for (const lb of [rr, { algorithm: 'least-connections' } as LB, { algorithm: 'hash', hash: { header: 'X-Id', type: 'consistent' } } as LB]) {
      expect(new ServiceBalancer(lb, servers({ a: 1, b: 1 })).pick({ ...none, hashKey: 'k' })).toBeNull();
    }
  });

  it('a sticky cookie naming an unusable server is re-pinned and rewritten; usable again, it is honoured again', () => {
    const b = new ServiceBalancer({ algorithm: 'round-robin', sticky: { cookie } }, servers({ a: 1, b: 1, c: 1 }));
    const toB = `${cookie.name}=${stickyCookieValue('http://127.0.0.1:4001')}`;
    const moved = b.pick({ cookie: toB, ...notB });
    expect(moved?.server.name).not.toBe('b');
    expect(moved?.by).toBe('round-robin');
    expect(moved?.sticky?.set).toMatch(new RegExp(`^${cookie.name}=${stickyCookieValue(moved!.server.url)}; Path=/$`));
    const back = b.pick({ cookie: toB });
    expect(back).toMatchObject({ by: 'sticky', server: { name: 'b' }, sticky: { pair: toB } });
    expect(back?.sticky?.set).toBeUndefined();
  });

  it('least-connections leaves them out even when they are the least loaded', () => {
    const b = new ServiceBalancer({ algorithm: 'least-connections' }, servers({ a: 1, b: 1, c: 1 }));
    const load: Record<string, number> = { a: 2, b: 0, c: 1 };
    expect(picks(b, 3, { ...notB, inflight: (s) => load[s.name] })).toEqual(['c', 'c', 'c']);
  });

  it('consistent hashing moves only the keys of the unusable server, each to the next server on the ring', () => {
    const lb: LB = { algorithm: 'hash', hash: { header: 'X-Id', type: 'consistent' } };
    const b = new ServiceBalancer(lb, servers({ a: 1, b: 1, c: 1, d: 1 }));
    const keys = Array.from({ length: 200 }, (_, i) => `k${i}`);
    const before = keys.map((k) => b.pick({ hashKey: k })!.server.name);
    const after = keys.map((k) => b.pick({ hashKey: k, ...notB })!.server.name);
    expect(after).not.toContain('b');
    keys.forEach((_, i) => {
      if (before[i] !== 'b') expect(after[i]).toBe(before[i]);
    });
    expect(before.filter((x) => x === 'b').length).toBeGreaterThan(10);
  });

  it('map-based hashing maps over the usable servers only (most keys move, as HAProxy rebuilds its map)', () => {
    const lb: LB = { algorithm: 'hash', hash: { header: 'X-Id', type: 'map-based' } };
    const b = new ServiceBalancer(lb, servers({ a: 1, b: 1, c: 1, d: 1 }));
    const keys = Array.from({ length: 200 }, (_, i) => `k${i}`);
    const before = keys.map((k) => b.pick({ hashKey: k })!.server.name);
    const after = keys.map((k) => b.pick({ hashKey: k, ...notB })!.server.name);
    expect(new Set(after)).toEqual(new Set(['a', 'c', 'd']));
    expect(keys.filter((_, i) => before[i] !== 'b' && after[i] !== before[i]).length).toBeGreaterThan(50);
    // All usable again: the original map.
    expect(keys.map((k) => b.pick({ hashKey: k })!.server.name)).toEqual(before);
  });
});
