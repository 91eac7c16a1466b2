/**
 * The server-state file written before a reload: drained servers start drained, servers that
 * health checks took out stay DOWN, everything else comes from haproxy.cfg.
 */
import { describe, expect, it } from 'vitest';
import type { ProxyConfig, ProxyService } from '../../seams.ts';
import { buildHaproxyModel } from './render.ts';
import { drainAclText, parseServersState, serverStateText, STATE_COLUMNS } from './server-state.ts';

const OPTS = { statsSocket: '/run/lab/haproxy.sock', statsPort: 8404 };
const HC = { path: '/health', intervalMs: 200, timeoutMs: 1000, fall: 2, rise: 1 };

function config(lb: Partial<ProxyService['loadBalancer']>, drained: string[] = []): ProxyConfig {
  return {
    entrypoint: { name: 'web', host: '127.0.0.1', port: 8080 },
    routers: [{ name: 'r', pathPrefix: '/', stripPrefix: false, service: 'web_dynamic', priority: 1 }],
    services: [
      {
        name: 'web_dynamic',
        loadBalancer: {
          algorithm: 'round-robin',
          servers: [
            ['a', 4001],
            ['b', 4002],
            ['c', 4003],
          ].map(([name, port]) => ({ name: String(name), url: `http://127.0.0.1:${port}`, weight: 2, ...(drained.includes(String(name)) ? { state: 'drain' as const } : {}) })),
          ...lb,
        },
      },
    ],
  };
}

/** `show servers state` as HAProxy 2.6.12 printed it: a UP, b DOWN (L4CON), c UP at another port. */
const RUNNING = [
  '1',
  `# ${STATE_COLUMNS.join(' ')}`,
  '3 web_dynamic 101 a 127.0.0.1 2 0 2 2 8 15 3 2 6 0 0 1 - 4001 - 0 0 - - 0',
  '3 web_dynamic 102 b 127.0.0.1 0 0 2 2 5 8 2 0 6 0 0 1 - 4002 - 0 0 - - 0',
  '3 web_dynamic 103 c 127.0.0.1 2 0 2 2 5 15 3 2 6 0 0 1 - 4999 - 0 0 - - 0',
  '',
].join('\n');

const rowsOf = (text: string) => new Map(parseServersState(text).map((r) => [r.srv_name, r]));

describe('serverStateText', () => {
  it('at the first start: a row for each drained server only (admin state 0x08), with its id, address and weight', () => {
    const model = buildHaproxyModel(config({}, ['b']), OPTS);
    const text = serverStateText(model);
    expect(text.split('\n')[0]).toBe('1');
    const rows = rowsOf(text);
    expect([...rows.keys()]).toEqual(['b']);
    expect(rows.get('b')).toMatchObject({
      be_name: 'web_dynamic',
      srv_id: String(model.backends[0].servers[1].id),
      srv_f_forced_id: '1',
      srv_addr: '127.0.0.1',
      srv_port: '4002',
      srv_op_state: '2',
      srv_admin_state: '8',
      srv_uweight: '2',
      srv_iweight: '2',
      srv_check_status: '1', // INI: a row with 0 (UNKNOWN) leaves the check stuck
      srv_check_state: '0',
    });
  });

  it('before a reload with a health check: DOWN stays DOWN, UP is fully up, the config decides drain and weight; another address is another server', () => {
    const model = buildHaproxyModel(config({ healthCheck: HC }, ['a']), OPTS);
    const rows = rowsOf(serverStateText(model, parseServersState(RUNNING)));
    expect(rows.get('a')).toMatchObject({ srv_op_state: '2', srv_admin_state: '8', srv_check_health: '2', srv_check_state: '6', srv_check_status: '15', srv_time_since_last_change: '8' });
    expect(rows.get('b')).toMatchObject({ srv_op_state: '0', srv_admin_state: '0', srv_check_health: '0', srv_check_state: '6', srv_check_status: '8', srv_check_result: '2' });
    expect(rows.has('c')).toBe(false);
  });

  it('without a health check now, a server that was DOWN is written UP (nothing would bring it back)', () => {
    const model = buildHaproxyModel(config({}), OPTS);
    const rows = rowsOf(serverStateText(model, parseServersState(RUNNING)));
    expect(rows.get('b')).toMatchObject({ srv_op_state: '2', srv_check_state: '0', srv_check_status: '1', srv_check_result: '0' });
  });

  it('parses only version 1 rows of the header length', () => {
    expect(parseServersState('2\n# be_id\n1\n')).toEqual([]);
    expect(parseServersState(`1\n# ${STATE_COLUMNS.join(' ')}\n3 web_dynamic 1 a\n`)).toEqual([]);
  });
});

describe('drainAclText', () => {
  it('lists the cookie values of the drained servers of a sticky backend', () => {
    const sticky = { sticky: { cookie: { name: 'S', httpOnly: false, secure: false, sameSite: '' as const } } };
    expect(drainAclText(buildHaproxyModel(config(sticky, ['a', 'c']), OPTS).backends[0])).toBe('a\nc\n');
    expect(drainAclText(buildHaproxyModel(config(sticky), OPTS).backends[0])).toBe('');
  });
});
