/**
 * parseAccessLog / errorOf on lines written by HAProxy 2.6 in the lab's LOG_FORMAT (copied from
 * real runs, except IPV6_REDISPATCHED, shaped after the manual), and on lines that are not access lines.
 */
import { describe, expect, it } from 'vitest';
import { errorOf, parseAccessLog, parseHaproxyMessage, parseHealthMessage, probeError } from './log-line.ts';

const OK =
  '127.0.0.1:52316 [21/Nov/2026:23:45:09.670] web web_dynamic/web_dynamic-2-abcd 0/0/0/4/4 200 427 --NI 1/1/0/0/0 0/0 {web_dynamic-2-abcd} "GET /api/x?q=1 HTTP/1.1" router=web_dynamic upstream=127.0.0.1:49400 start=1795304709.670+0+12';
const NOSRV =
  '127.0.0.1:52302 [21/Nov/2026:23:45:09.667] web empty/<NOSRV> 0/-1/-1/-1/0 503 217 SC-- 1/1/0/0/0 0/0 {} "GET /api/ HTTP/1.1" router=web_static upstream=-:- start=1795304709.667+0+0';
const NO_ROUTE =
  '127.0.0.1:51332 [21/Nov/2026:23:45:19.709] web web/<NOSRV> 0/-1/-1/-1/0 404 113 LR-- 1/1/0/0/0 0/0 {} "GET /nothing HTTP/1.1" router=- upstream=-:- start=1795304719.709+0+0';
const DEAD =
  '127.0.0.1:60510 [21/Nov/2026:23:53:50.936] web web_dynamic/dead-46063 0/0/-1/-1/3003 503 217 SC-- 2/2/0/0/3 0/0 {} "GET /api/ HTTP/1.1" router=api upstream=127.0.0.1:51560 start=1795305230.936+0+0';
const BADREQ =
  '127.0.0.1:45790 [21/Nov/2026:23:50:33.494] web web/<NOSRV> -1/-1/-1/-1/0 400 0 CR-- 1/1/0/0/0 0/0 "<BADREQ>" router=- upstream=-:- start=1795305033.494+0+0';
const IPV6_REDISPATCHED =
  '::1:33000 [21/Nov/2026:23:59:01.002] web web_dynamic/b 0/0/1/2/3 200 10 --VN 1/1/0/0/+1 0/0 {b} "POST /x HTTP/1.1" router=r upstream=127.0.0.1:5 start=1795305541.002+1+2';

describe('parseAccessLog', () => {
  it('reads a proxied request: client, backend/server, timers, status, capture, request line, router, upstream, start', () => {
    expect(parseAccessLog(OK)).toEqual({
      client: '127.0.0.1:52316',
      frontend: 'web',
      backend: 'web_dynamic',
      server: 'web_dynamic-2-abcd',
      timers: { TR: 0, Tw: 0, Tc: 0, Tr: 4, Ta: 4 },
      status: 200,
      bytes: 427,
      terminationState: '--NI',
      retries: 0,
      redispatched: false,
      servedBy: 'web_dynamic-2-abcd',
      method: 'GET',
      path: '/api/x?q=1',
      router: 'web_dynamic',
      upstream: '127.0.0.1:49400',
      startMs: 1795304709670 + 12,
    });
  });

  it('reads requests no server answered', () => {
    expect(parseAccessLog(NOSRV)).toMatchObject({ server: '<NOSRV>', status: 503, servedBy: null, upstream: null, router: 'web_static' });
    expect(parseAccessLog(NO_ROUTE)).toMatchObject({ backend: 'web', server: '<NOSRV>', status: 404, router: null, terminationState: 'LR--' });
    expect(parseAccessLog(DEAD)).toMatchObject({ server: 'dead-46063', status: 503, retries: 3, timers: { Tc: -1, Ta: 3003 } });
    expect(parseAccessLog(BADREQ)).toMatchObject({ method: '<BADREQ>', path: '', servedBy: null, status: 400 });
  });

  it('reads IPv6 clients and a redispatch (+N retries)', () => {
    expect(parseAccessLog(IPV6_REDISPATCHED)).toMatchObject({ client: '::1:33000', retries: 1, redispatched: true, method: 'POST', startMs: 1795305541002 + 3 });
  });

  it('returns null for HAProxy messages and other text', () => {
    for (const line of [
      '[NOTICE]   (3403) : New worker (3406) forked',
      '[WARNING]  (3403) : Former worker (3406) exited with code 0 (Exit)',
      'Server web_dynamic/x is UP/READY (leaving forced maintenance).',
      '',
      OK.replace(' router=', ' routr='),
    ]) {
      expect(parseAccessLog(line)).toBeNull();
    }
  });
});

describe('errorOf', () => {
  it('names what failed from the termination state; nothing for normal answers and the no-router 404', () => {
    expect(errorOf(parseAccessLog(OK)!)).toBeUndefined();
    expect(errorOf(parseAccessLog(NO_ROUTE)!)).toBeUndefined();
    expect(errorOf(parseAccessLog(NOSRV)!)).toBe('no server available');
    expect(errorOf(parseAccessLog(DEAD)!)).toBe('server connection failed');
    expect(errorOf(parseAccessLog(BADREQ)!)).toBe('client closed request');
    expect(errorOf({ server: 's', router: 'r', terminationState: 'sH--' })).toBe('server timeout');
    expect(errorOf({ server: 's', router: 'r', terminationState: 'SD--' })).toBe('server aborted');
  });
});

describe('HAProxy messages and health checks', () => {
  it('parseHaproxyMessage: level, pid and text, without the `CLI : ` or `config : ` context', () => {
    expect(parseHaproxyMessage('[WARNING]  (25363) : Health check for server be/s1 succeeded, x')).toEqual({ level: 'WARNING', pid: 25363, text: 'Health check for server be/s1 succeeded, x' });
    expect(parseHaproxyMessage('[WARNING]  (24873) : CLI : Proxy web stopped (cumulated conns: FE: 3, BE: 0).')?.text).toBe('Proxy web stopped (cumulated conns: FE: 3, BE: 0).');
    expect(parseHaproxyMessage('[WARNING]  (24634) : config : Server be/k1 remains in forced drain mode.')).toMatchObject({ pid: 24634, text: 'Server be/k1 remains in forced drain mode.' });
    expect(parseHaproxyMessage('Health check for server be/s1 succeeded')).toBeNull();
    expect(parseHaproxyMessage(OK)).toBeNull();
  });

  it('parseHealthMessage: probes that moved the health counter, UP and DOWN transitions (as HAProxy 2.6.12 writes them)', () => {
    expect(parseHealthMessage('Health check for server be/s3 failed, reason: Layer4 connection problem, info: "Connection refused", check duration: 0ms, status: 0/1 DOWN.')).toEqual({
      kind: 'probe',
      backend: 'be',
      server: 's3',
      ok: false,
      reason: 'Layer4 connection problem',
      code: null,
      info: 'Connection refused',
      durationMs: 0,
      health: 0,
      of: 1,
      up: false,
    });
    expect(parseHealthMessage('Health check for server web_dynamic/web_dynamic-1-c0de succeeded, reason: Layer7 check passed, code: 200, check duration: 24ms, status: 2/2 UP.')).toMatchObject({
      kind: 'probe',
      backend: 'web_dynamic',
      server: 'web_dynamic-1-c0de',
      ok: true,
      code: 200,
      info: null,
      durationMs: 24,
      up: true,
    });
    expect(parseHealthMessage('Health check for server be/s1 failed, reason: Layer7 wrong status, code: 503, info: "Service Unavailable", check duration: 1ms, status: 1/2 UP.')).toMatchObject({
      ok: false,
      code: 503,
      info: 'Service Unavailable',
      health: 1,
      of: 2,
      up: true,
    });
    expect(parseHealthMessage('Health check for server be/s1 failed, reason: Layer7 timeout, check duration: 301ms, status: 0/2 DOWN.')).toMatchObject({ reason: 'Layer7 timeout', durationMs: 301 });
    expect(parseHealthMessage('Server be/s3 is DOWN. 2 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.')).toEqual({ kind: 'state', backend: 'be', server: 's3', up: false, reason: null });
    expect(parseHealthMessage('Server be/s1 is UP, reason: Layer7 check passed, code: 200, check duration: 1ms. 3 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.')).toEqual({
      kind: 'state',
      backend: 'be',
      server: 's1',
      up: true,
      reason: 'Layer7 check passed, code: 200',
    });
    // Administrative changes are not health changes.
    for (const text of [
      'Server be/k1 is UP/READY (leaving forced maintenance).',
      'Server be/k1 is going DOWN for maintenance. 2 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.',
      'Server be/k1 is UP (leaving forced drain).',
      'Server be/k1 enters drain state. 2 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.',
      'Server be/x9 is DOWN, changed from server-state after a reload. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.',
      'Server be/x9 was DOWN and now enters maintenance.',
      'Proxy be stopped (cumulated conns: FE: 0, BE: 3).',
    ]) {
      expect(parseHealthMessage(text), text).toBeNull();
    }
  });

  it('probeError: the embedded proxy words where they exist', () => {
    expect(probeError('Layer4 connection problem', null, 'Connection refused')).toBe('ECONNREFUSED');
    expect(probeError('Layer7 timeout', null, null)).toBe('timeout');
    expect(probeError('Layer4 timeout', null, null)).toBe('timeout');
    expect(probeError('Layer7 wrong status', 503, 'Service Unavailable')).toBe('status 503');
    expect(probeError('Layer7 invalid response', null, 'TCPCHK got an empty response')).toBe('Layer7 invalid response: TCPCHK got an empty response');
  });
});
