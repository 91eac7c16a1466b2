/**
 * parseAccessLog / errorOf on lines written by HAProxy 2.6 in the lab's LOG_FORMAT (copied from
 * real runs, except IPV6_REDISPATCHED, shaped after the manual), and on lines that are not access lines.
 */
import { describe, expect, it } from 'vitest';
import { errorOf, parseAccessLog } from './log-line.ts';

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
