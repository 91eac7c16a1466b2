/**
 * The console's allow-list and the Runtime API answer parsers.
 */
import { describe, expect, it } from 'vitest';
import { checkRuntimeCommand, MAX_COMMAND_LENGTH, parseServersConn, parseShowInfo } from './runtime-api.ts';

describe('checkRuntimeCommand', () => {
  it.each([
    ['show info', false],
    ['show stat', false],
    ['show servers state', false],
    ['show servers state web_dynamic', false],
    ['show servers conn web_dynamic', false],
    ['show backend', false],
    ['show sess', false],
    ['disable server web_dynamic/web_dynamic-1-a1b2', true],
    ['enable server web_dynamic/web_dynamic-1-a1b2', true],
    ['set server web_dynamic/web_dynamic-1-a1b2 weight 0', true],
    ['set server web_dynamic/web_dynamic-1-a1b2 weight 256', true],
    ['set server web_dynamic/web_dynamic-1-a1b2 state drain', true],
    ['set server web_dynamic/web_dynamic-1-a1b2 state maint', true],
    ['set server web_dynamic/web_dynamic-1-a1b2 state ready', true],
    ['add server web_dynamic/extra 127.0.0.1:4001', true],
    ['add server web_dynamic/extra 127.0.0.1:4001 weight 3', true],
    ['del server web_dynamic/extra', true],
  ])('allows %j', (command, mutates) => {
    expect(checkRuntimeCommand(command)).toEqual({ command, mutates });
  });

  it('trims and makes runs of spaces single', () => {
    expect(checkRuntimeCommand('  show   servers\tstate  web_dynamic ').command).toBe('show servers state web_dynamic');
  });

  it.each([
    ['', /Type a command/],
    ['show info; shutdown frontend web', /one command at a time/],
    ['show info\nshutdown frontend web', /one command at a time/],
    ['shutdown frontend web', /not a command this console forwards/],
    ['set server web_dynamic/a weight 300', /from 0 to 256, not 300/],
    ['set server web_dynamic/a weight 10%', /not a command/],
    ['set server web_dynamic/a addr 10.0.0.1', /not a command/],
    ['add server web_dynamic/x 127.0.0.1:70000', /from 1 to 65535/],
    ['add server web_dynamic/x 999.0.0.1:80', /not a command/],
    ['add server web_dynamic/x 127.0.0.1:80 check', /not a command/],
    ['disable server web_dynamic', /not a command/],
    ['show servers state a b', /not a command/],
    ['del server web dynamic/x', /not a command/],
    ['set ssl cert /etc/x', /not a command/],
    [`show servers state ${'a'.repeat(MAX_COMMAND_LENGTH)}`, /at most 200/],
  ])('refuses %j with a sentence listing what is allowed', (command, message) => {
    expect(() => checkRuntimeCommand(command)).toThrow(message);
    expect(() => checkRuntimeCommand(command)).toThrow(/Allowed commands: show info; show stat; .*del server <backend>\/<server>\./);
  });
});

describe('answer parsers', () => {
  it('parseShowInfo', () => {
    const info = parseShowInfo('Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nPid: 3601\nUptime: 0d 0h00m01s\n\n');
    expect(info.get('Pid')).toBe('3601');
    expect(info.get('Uptime')).toBe('0d 0h00m01s');
  });

  it('parseServersConn (as HAProxy 2.6 prints it)', () => {
    const text =
      '# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[2]\n' +
      'web_dynamic/web_dynamic-1-abcd 3/1001 127.0.0.1 46477 - 5000 2 1 1 1 0 -1 1 0 1\n' +
      'web_dynamic/b 3/900 127.0.0.1 42007 - 0 0 0 0 0 0 0 0\n\n';
    expect(parseServersConn(text)).toEqual([
      { backend: 'web_dynamic', server: 'web_dynamic-1-abcd', usedCur: 2, idleCur: 1 },
      { backend: 'web_dynamic', server: 'b', usedCur: 0, idleCur: 0 },
    ]);
  });
});
