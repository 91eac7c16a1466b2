/**
 * planRuntimeChanges: which configuration changes go through the Runtime API and which need a
 * reload, and the commands sent.
 */
import { describe, expect, it } from 'vitest';
import type { ProxyConfig, ProxyService } from '../../seams.ts';
import { buildHaproxyModel } from './render.ts';
import { planRuntimeChanges, stepCommands } from './runtime-plan.ts';

const OPTS = { statsSocket: '/run/lab/haproxy.sock', statsPort: 8404 };

function config(servers: [string, number, number?][], lb: Partial<ProxyService['loadBalancer']> = {}, prefix = '/'): ProxyConfig {
  return {
    entrypoint: { name: 'web', host: '127.0.0.1', port: 8080 },
    routers: [{ name: 'web_dynamic', pathPrefix: prefix, stripPrefix: false, service: 'web_dynamic', priority: 1 }],
    services: [
      {
        name: 'web_dynamic',
        loadBalancer: {
          algorithm: 'round-robin',
          servers: servers.map(([name, port, weight]) => ({ name, url: `http://127.0.0.1:${port}`, weight: weight ?? 1 })),
          ...lb,
        },
      },
    ],
  };
}
const plan = (a: ProxyConfig, b: ProxyConfig) => planRuntimeChanges(buildHaproxyModel(a, OPTS), buildHaproxyModel(b, OPTS));
const STICKY = { sticky: { cookie: { name: 'S', httpOnly: false, secure: false, sameSite: '' as const } } };
const AB: [string, number][] = [['a', 1], ['b', 2]];

describe('planRuntimeChanges', () => {
  it('does nothing for the same configuration', () => {
    expect(plan(config(AB), config(AB))).toEqual({ kind: 'none' });
  });

  it('changes weights live: set server <b>/<s> weight N', () => {
    const p = plan(config(AB), config([['a', 1, 3], ['b', 2]]));
    expect(p).toEqual({ kind: 'runtime', steps: [{ op: 'weight', backend: 'web_dynamic', server: 'a', weight: 3 }] });
    if (p.kind === 'runtime') expect(stepCommands(p.steps[0])).toEqual(['set server web_dynamic/a weight 3']);
  });

  it('adds a server at the end of a non-sticky backend live (add server with its id, then enable server), also with consistent hashing', () => {
    for (const lb of [{}, { algorithm: 'least-connections' as const }, { algorithm: 'hash' as const, hash: { header: 'X-Session-ID', type: 'consistent' as const } }]) {
      const to = buildHaproxyModel(config([...AB, ['c', 3, 2]], lb), OPTS);
      const p = planRuntimeChanges(buildHaproxyModel(config(AB, lb), OPTS), to);
      expect(p.kind).toBe('runtime');
      if (p.kind !== 'runtime') return;
      const c = to.backends[0].servers[2];
      expect(stepCommands(p.steps[0])).toEqual([`add server web_dynamic/c 127.0.0.1:3 id ${c.id} weight 2`, 'enable server web_dynamic/c']);
    }
  });

  it('removes a server live (disable, then del once drained), also from a sticky backend', () => {
    for (const lb of [{}, STICKY]) {
      const p = plan(config([...AB, ['c', 3]], lb), config([['a', 1], ['c', 3]], lb));
      expect(p).toEqual({ kind: 'runtime', steps: [{ op: 'remove', backend: 'web_dynamic', server: 'b' }] });
      if (p.kind === 'runtime') expect(stepCommands(p.steps[0])).toEqual(['disable server web_dynamic/b', 'del server web_dynamic/b']);
    }
  });

  it('orders steps: adds, then weights, then removals', () => {
    const p = plan(config(AB), config([['b', 2, 5], ['c', 3]]));
    expect(p.kind === 'runtime' && p.steps.map((s) => s.op)).toEqual(['add', 'weight', 'remove']);
  });

  it.each([
    ['a server added to a sticky backend', config(AB, STICKY), config([...AB, ['c', 3]], STICKY), /sticky and HAProxy 2\.6 refuses the cookie keyword/],
    [
      'any server change with map-based hashing',
      config(AB, { algorithm: 'hash', hash: { header: 'H', type: 'map-based' } }),
      config([['a', 1, 2], ['b', 2]], { algorithm: 'hash', hash: { header: 'H', type: 'map-based' } }),
      /map-based/,
    ],
    ['a server inserted before others', config(AB), config([['c', 3], ...AB]), /order of the servers/],
    ['servers reordered', config(AB), config([['b', 2], ['a', 1]]), /order of the servers/],
    ['a server with a new address', config(AB), config([['a', 9], ['b', 2]]), /changed its address/],
    ['sticky turned on', config(AB), config(AB, STICKY), /routers, backends or their balancing settings/],
    ['the algorithm', config(AB), config(AB, { algorithm: 'least-connections' }), /balancing settings/],
    ['a router', config(AB), config(AB, {}, '/api/'), /routers/],
  ])('reloads for %s', (_label, from, to, reason) => {
    const p = plan(from, to);
    expect(p.kind).toBe('reload');
    if (p.kind === 'reload') expect(p.reason).toMatch(reason);
  });

  it('health check: an added server carries check inter/fall/rise and gets enable health; changed settings reload', () => {
    const HC = { healthCheck: { path: '/health', intervalMs: 200, timeoutMs: 1000, fall: 2, rise: 1 } };
    const to = buildHaproxyModel(config([...AB, ['c', 3]], HC), OPTS);
    const p = planRuntimeChanges(buildHaproxyModel(config(AB, HC), OPTS), to);
    expect(p.kind).toBe('runtime');
    if (p.kind === 'runtime') {
      expect(stepCommands(p.steps[0])).toEqual([
        `add server web_dynamic/c 127.0.0.1:3 id ${to.backends[0].servers[2].id} weight 1 check inter 200ms fall 2 rise 1`,
        'enable health web_dynamic/c',
        'enable server web_dynamic/c',
      ]);
    }
    for (const other of [{ ...HC.healthCheck, fall: 3 }, { ...HC.healthCheck, intervalMs: 300 }, { ...HC.healthCheck, path: '/app/health' }]) {
      expect(plan(config(AB, HC), config(AB, { healthCheck: other })).kind).toBe('reload');
    }
    expect(plan(config(AB), config(AB, HC)).kind).toBe('reload');
    expect(plan(config(AB), config(AB, { retry: { attempts: 2 } })).kind).toBe('reload');
  });

  it('drain and back: set server state drain|ready live; in a sticky backend also add acl / del acl on its drain ACL file', () => {
    const drained = (lb: Partial<ProxyService['loadBalancer']> = {}) => {
      const c = config(AB, lb);
      c.services[0].loadBalancer.servers[1].state = 'drain';
      return c;
    };
    const p = plan(config(AB), drained());
    expect(p).toEqual({ kind: 'runtime', steps: [{ op: 'state', backend: 'web_dynamic', server: 'b', state: 'drain', acl: null }] });
    if (p.kind === 'runtime') expect(stepCommands(p.steps[0])).toEqual(['set server web_dynamic/b state drain']);
    const back = plan(drained(), config(AB));
    if (back.kind === 'runtime') expect(stepCommands(back.steps[0])).toEqual(['set server web_dynamic/b state ready']);
    expect(back.kind).toBe('runtime');

    const acl = '/run/lab/drain.web_dynamic.acl';
    const sp = plan(config(AB, STICKY), drained(STICKY));
    expect(sp.kind === 'runtime' && sp.steps.flatMap(stepCommands)).toEqual(['set server web_dynamic/b state drain', `add acl ${acl} b`]);
    const sb = plan(drained(STICKY), config(AB, STICKY));
    expect(sb.kind === 'runtime' && sb.steps.flatMap(stepCommands)).toEqual([`del acl ${acl} b`, 'set server web_dynamic/b state ready']);

    // A reload that also drains a server lists it, to drain it in the worker being replaced.
    const r = plan(config(AB), drained(STICKY));
    expect(r).toMatchObject({ kind: 'reload', drain: [{ op: 'state', server: 'b', state: 'drain', acl: null }] });
    // A server that joins already drained: a reload (no window in which it could take requests).
    const joins = config([...AB, ['c', 3]]);
    joins.services[0].loadBalancer.servers[2].state = 'drain';
    expect(plan(config(AB), joins)).toMatchObject({ kind: 'reload', reason: expect.stringMatching(/joins web_dynamic in drain state/) });
  });

  it('lists the servers leaving when it reloads, to disable them first', () => {
    const p = plan(config([...AB, ['c', 3]]), config([['a', 1]], STICKY));
    expect(p).toMatchObject({
      kind: 'reload',
      disable: [
        { backend: 'web_dynamic', server: 'b' },
        { backend: 'web_dynamic', server: 'c' },
      ],
    });
  });
});
