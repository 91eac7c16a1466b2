/**
 * The server-state file HAProxy loads at start and on every reload (`server-state-file` +
 * `load-server-state-from-file global`, https://docs.haproxy.org/2.6/configuration.html#4.2-load-server-state-from-file).
 * Format: version 1 of `show servers state` (https://docs.haproxy.org/2.6/management.html#9.3-show%20servers%20state).
 *
 * HAProxy 2.6 has no `drain` keyword for a server line, and a new worker otherwise starts every
 * server UP: the driver writes this file before a reload (from the running worker's `show servers
 * state`) so that
 * - a server in `drain` (administrative state 0x08, FDRAIN) starts drained;
 * - a server that health checks took out stays DOWN until its checks pass again (as it would
 *   without the reload), instead of taking requests until it fails `rise` probes.
 * Everything else comes from haproxy.cfg: the administrative state is the configuration's (a
 * console `disable server` is not carried over), the weight is the configuration's, the address
 * and port are the configuration's. A server that is not drained and has no earlier state gets no
 * row (HAProxy's defaults). Pure.
 */
import type { HaproxyModel } from './render.ts';

/** The columns of version 1, in order. */
export const STATE_COLUMNS = [
  'be_id', 'be_name', 'srv_id', 'srv_name', 'srv_addr', 'srv_op_state', 'srv_admin_state', 'srv_uweight', 'srv_iweight',
  'srv_time_since_last_change', 'srv_check_status', 'srv_check_result', 'srv_check_health', 'srv_check_state',
  'srv_agent_state', 'bk_f_forced_id', 'srv_f_forced_id', 'srv_fqdn', 'srv_port', 'srvrecord', 'srv_use_ssl',
  'srv_check_port', 'srv_check_addr', 'srv_agent_addr', 'srv_agent_port',
] as const;

/** srv_op_state: 0 = STOPPED (DOWN), 2 = RUNNING (UP). */
const OP_DOWN = 0;
const OP_UP = 2;
/** srv_admin_state 0x08: forced drain. */
const ADMIN_DRAIN = 0x08;
/** srv_check_state: 0x02 configured | 0x04 enabled. */
const CHECK_CONFIGURED = 0x02;
const CHECK_ON = 0x02 | 0x04;
/**
 * srv_check_status 1 = INI (not checked yet). A row with 0 (UNKNOWN) leaves HAProxy 2.6's check
 * stuck "in progress" (seen here), so a row never carries 0.
 */
const STATUS_INI = 1;

/** One row of `show servers state`, by column name. */
export type ServerStateRow = Record<(typeof STATE_COLUMNS)[number], string>;

/**
 * Parses `show servers state` (version 1): the rows under the `# be_id be_name ...` header, by
 * column name. Rows of another length and other versions are skipped.
 */
export function parseServersState(text: string): ServerStateRow[] {
  const lines = text.split('\n');
  if (lines[0]?.trim() !== '1') return [];
  const header = lines.find((l) => l.startsWith('#'));
  if (!header) return [];
  const cols = header.slice(1).trim().split(/\s+/);
  const rows: ServerStateRow[] = [];
  for (const l of lines.slice(1)) {
    if (l.startsWith('#') || l.trim() === '') continue;
    const f = l.trim().split(/\s+/);
    if (f.length !== cols.length) continue;
    const row = {} as ServerStateRow;
    for (const c of STATE_COLUMNS) {
      const i = cols.indexOf(c);
      row[c] = i === -1 ? '-' : f[i];
    }
    rows.push(row);
  }
  return rows;
}

const IP = /^(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)$/;

/**
 * The server-state file for `model`, from the running worker's rows (`show servers state`; none
 * at the first start). See the module comment for what is carried over.
 */
export function serverStateText(model: HaproxyModel, running: ServerStateRow[] = []): string {
  const old = new Map(running.map((r) => [`${r.be_name}/${r.srv_name}`, r]));
  const out = ['1', `# ${STATE_COLUMNS.join(' ')}`];
  for (const b of model.backends) {
    for (const s of b.servers) {
      const prev = old.get(`${b.name}/${s.name}`);
      // The same name at another address is another server: its old state does not apply.
      const same = prev !== undefined && Number(prev.srv_port) === s.port && (prev.srv_addr === s.host || prev.srv_fqdn === s.host);
      const was = same ? prev : undefined;
      if (!was && s.state !== 'drain') continue;
      const checked = s.check !== null;
      const wasChecked = was !== undefined && (Number(was.srv_check_state) & CHECK_CONFIGURED) !== 0;
      const down = checked && wasChecked && Number(was.srv_op_state) === OP_DOWN;
      const max = checked ? s.check!.rise + s.check!.fall - 1 : 0;
      const status = checked && wasChecked && Number(was.srv_check_status) > 0 ? was.srv_check_status : String(STATUS_INI);
      const result = checked && wasChecked ? was.srv_check_result : '0';
      const row: ServerStateRow = {
        be_id: '0',
        be_name: b.name,
        srv_id: String(s.id),
        srv_name: s.name,
        srv_addr: was ? was.srv_addr : IP.test(s.host) ? s.host : '-',
        srv_op_state: String(down ? OP_DOWN : OP_UP),
        srv_admin_state: String(s.state === 'drain' ? ADMIN_DRAIN : 0),
        srv_uweight: String(s.weight),
        srv_iweight: String(s.weight),
        srv_time_since_last_change: was ? was.srv_time_since_last_change : '0',
        srv_check_status: status,
        srv_check_result: result,
        srv_check_health: String(down ? 0 : max),
        srv_check_state: String(checked ? CHECK_ON : 0),
        srv_agent_state: '0',
        bk_f_forced_id: '0',
        srv_f_forced_id: '1',
        srv_fqdn: was ? was.srv_fqdn : IP.test(s.host) ? '-' : s.host,
        srv_port: String(s.port),
        srvrecord: '-',
        srv_use_ssl: '0',
        srv_check_port: '0',
        srv_check_addr: '-',
        srv_agent_addr: '-',
        srv_agent_port: '0',
      };
      out.push(STATE_COLUMNS.map((c) => row[c]).join(' '));
    }
  }
  return `${out.join('\n')}\n`;
}

/** The drain ACL file of a sticky backend: the cookie values of its drained servers, one a line. */
export function drainAclText(backend: HaproxyModel['backends'][number]): string {
  const values = backend.servers.filter((s) => s.state === 'drain' && s.cookie !== null).map((s) => s.cookie!);
  return values.length > 0 ? `${values.join('\n')}\n` : '';
}
