/**
 * The console's allow-list and the Runtime API answer parsers.
 */
import { describe, expect, it } from 'vitest';
import { checkRuntimeCommand, MAX_COMMAND_LENGTH, parseServersConn, parseShowInfo, parseShowStat } from './runtime-api.ts';

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

/** `show stat` of HAProxy 2.6.12 (header and one server row as printed), and a row built from it by field name. */
const STAT_HEADER = '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,';
const STAT_S1 = 'be,s1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,7,0,,1,3,1,,0,,2,0,,0,L7OK,200,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Layer7 check passed,,1,2,2,,,,127.0.0.1:18081,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,';
function statRow(changes: Record<string, string>): string {
  const cols = STAT_HEADER.slice(2).split(',');
  const f = STAT_S1.split(',');
  for (const [k, v] of Object.entries(changes)) f[cols.indexOf(k)] = v;
  return f.join(',');
}

describe('answer parsers', () => {
  it('parseShowStat: server rows by header name, check fields, the `* ` of a check in progress', () => {
    const down = statRow({ svname: 'web_dynamic-2-ab', status: 'DOWN', scur: '0', qcur: '0', check_status: '* L4CON', check_code: '', check_duration: '0', last_chk: 'Connection refused', check_desc: 'Layer4 connection problem', check_health: '0' });
    const busy = statRow({ svname: 'b', status: 'DRAIN', scur: '2', qcur: '1', check_status: '', check_code: '', check_duration: '', check_desc: '', last_chk: '', check_rise: '', check_fall: '', check_health: '' });
    const backendRow = statRow({ svname: 'BACKEND', type: '1' });
    const rows = parseShowStat([STAT_HEADER, STAT_S1, down, busy, backendRow, ''].join('\n'));
    expect(rows).toEqual([
      { backend: 'be', server: 's1', status: 'UP', scur: 0, qcur: 0, checkStatus: 'L7OK', checkRunning: false, checkCode: 200, checkDuration: 0, checkDesc: 'Layer7 check passed', lastCheck: '', checkHealth: 2, checkRise: 1, checkFall: 2 },
      { backend: 'be', server: 'web_dynamic-2-ab', status: 'DOWN', scur: 0, qcur: 0, checkStatus: 'L4CON', checkRunning: true, checkCode: null, checkDuration: 0, checkDesc: 'Layer4 connection problem', lastCheck: 'Connection refused', checkHealth: 0, checkRise: 1, checkFall: 2 },
      { backend: 'be', server: 'b', status: 'DRAIN', scur: 2, qcur: 1, checkStatus: '', checkRunning: false, checkCode: null, checkDuration: null, checkDesc: '', lastCheck: '', checkHealth: null, checkRise: null, checkFall: null },
    ]);
    expect(parseShowStat('')).toEqual([]);
  });

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
