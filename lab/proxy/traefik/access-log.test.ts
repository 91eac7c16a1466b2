/**
 * Traefik JSON access-log lines (field names and layout as Traefik v3 writes them with
 * `accessLog.format: json`) -> the lab's request:completed.
 */
import { describe, expect, it } from 'vitest';
import { InFlightTracker, parseTraefikAccessLog, requestEventOf, rfc3339Ms, withoutProvider, type AccessLogContext } from './access-log.ts';

/** A request to web_dynamic through /api/ (stripped), answered 200 by the second server. */
const OK_LINE = JSON.stringify({
  ClientAddr: '127.0.0.1:53412',
  ClientHost: '127.0.0.1',
  ClientPort: '53412',
  ClientUsername: '-',
  DownstreamContentSize: 173,
  DownstreamStatus: 200,
  Duration: 2_345_678,
  OriginContentSize: 173,
  OriginDuration: 1_900_000,
  OriginStatus: 200,
  Overhead: 445_678,
  RequestAddr: 'localhost:8080',
  RequestContentSize: 0,
  RequestCount: 7,
  RequestHost: 'localhost',
  RequestMethod: 'GET',
  RequestPath: '/api/jokes?n=1',
  RequestPort: '8080',
  RequestProtocol: 'HTTP/1.1',
  RequestScheme: 'http',
  RetryAttempts: 0,
  RouterName: 'web_dynamic@file',
  ServiceAddr: '127.0.0.1:41002',
  ServiceName: 'web_dynamic@file',
  ServiceURL: 'http://127.0.0.1:41002',
  StartLocal: '2026-11-22T02:21:09.503803974Z',
  StartUTC: '2026-11-22T02:21:09.503803974Z',
  entryPointName: 'web',
  'downstream_X-Served-By': 'web_dynamic-2-c3d4',
  'origin_X-Served-By': 'web_dynamic-2-c3d4',
  level: 'info',
  msg: '',
  time: '2026-11-22T02:21:09Z',
});

const SERVERS: Record<string, { name: string; vip: boolean }> = {
  'web_dynamic http://127.0.0.1:41001': { name: 'web_dynamic-1-a1b2', vip: false },
  'web_dynamic http://127.0.0.1:41002': { name: 'web_dynamic-2-c3d4', vip: false },
  'web_vip http://127.0.0.1:43000': { name: 'web_vip-vip', vip: true },
};
const ctx: AccessLogContext = {
  id: 1,
  serverOf: (svc, url) => SERVERS[`${svc} ${url}`] ?? null,
  cookieOf: (svc) => (svc === 'web_dynamic' ? '_7a3f1' : undefined),
};

function line(fields: Record<string, unknown>): string {
  return JSON.stringify({ ...JSON.parse(OK_LINE), ...fields });
}

describe('parseTraefikAccessLog', () => {
  it('reads a v3 JSON line: names without @file, Duration ns -> ms, StartUTC with ns -> epoch ms', () => {
    const log = parseTraefikAccessLog(OK_LINE)!;
    expect(log).toEqual({
      client: '127.0.0.1:53412',
      method: 'GET',
      path: '/api/jokes?n=1',
      router: 'web_dynamic',
      service: 'web_dynamic',
      serviceUrl: 'http://127.0.0.1:41002',
      status: 200,
      originStatus: 200,
      ms: 2.3,
      startMs: Date.UTC(2026, 10, 22, 2, 21, 9, 503),
      requestCount: 7,
      retryAttempts: 0,
      entryPoint: 'web',
      servedBy: 'web_dynamic-2-c3d4',
      setCookie: null,
    });
  });

  it('is null for Traefik\'s own log lines and for JSON that is not an access-log entry', () => {
    expect(parseTraefikAccessLog('2026-11-22T02:21:09Z INF Traefik version 3.1.2 built on 2024-08-06T13:51:42Z version=3.1.2')).toBeNull();
    expect(parseTraefikAccessLog('{"level":"error","error":"field not found, node: healthcheck","time":"2026-11-22T02:21:09Z","message":"Error while building configuration"}')).toBeNull();
    expect(parseTraefikAccessLog('{"RequestMethod":"GET"')).toBeNull();
    expect(parseTraefikAccessLog(line({ StartUTC: 'yesterday' }))).toBeNull();
  });

  it('reads a v2-style ServiceURL object too', () => {
    const log = parseTraefikAccessLog(line({ ServiceURL: { Scheme: 'http', Opaque: '', User: null, Host: '127.0.0.1:41001', Path: '' } }))!;
    expect(log.serviceUrl).toBe('http://127.0.0.1:41001');
  });

  it('helpers: provider suffix, RFC 3339 with offsets and without fraction', () => {
    expect(withoutProvider('api@internal')).toBe('api');
    expect(withoutProvider('')).toBeNull();
    expect(rfc3339Ms('2026-11-22T03:21:09+01:00')).toBe(Date.UTC(2026, 10, 22, 2, 21, 9));
    expect(rfc3339Ms('2026-11-22T02:21:09.5Z')).toBe(Date.UTC(2026, 10, 22, 2, 21, 9, 500));
  });
});

describe('requestEventOf', () => {
  it('a request answered by a replica', () => {
    expect(requestEventOf(parseTraefikAccessLog(OK_LINE)!, ctx)).toEqual({
      id: 1,
      at: Date.UTC(2026, 10, 22, 2, 21, 9, 503),
      method: 'GET',
      path: '/api/jokes?n=1',
      router: 'web_dynamic',
      service: 'web_dynamic',
      replica: 'web_dynamic-2-c3d4',
      hostname: 'web_dynamic-2-c3d4',
      status: 200,
      ms: 2.3,
      clientConnId: '127.0.0.1:53412',
      upstreamConnId: null,
    });
  });

  it('no router matched: 404 from Traefik, no router/service/replica', () => {
    const raw = line({ DownstreamStatus: 404, OriginStatus: 0, RouterName: undefined, ServiceName: undefined, ServiceURL: undefined, ServiceAddr: undefined, 'downstream_X-Served-By': undefined, 'origin_X-Served-By': undefined });
    const e = requestEventOf(parseTraefikAccessLog(raw)!, ctx);
    expect(e).toMatchObject({ router: null, service: null, replica: null, hostname: null, status: 404 });
    expect(e.error).toBeUndefined();
  });

  it('a dead server: 502 with OriginStatus 0, the replica named, no hostname; retried when RetryAttempts > 0', () => {
    const raw = line({ DownstreamStatus: 502, OriginStatus: 0, ServiceURL: 'http://127.0.0.1:41001', RetryAttempts: 2, 'downstream_X-Served-By': undefined, 'origin_X-Served-By': undefined });
    expect(requestEventOf(parseTraefikAccessLog(raw)!, ctx)).toMatchObject({ replica: 'web_dynamic-1-a1b2', hostname: null, status: 502, error: 'bad gateway', retried: true });
  });

  it('no server in the pool: 503 no server available', () => {
    const raw = line({ DownstreamStatus: 503, OriginStatus: 0, ServiceURL: '', 'downstream_X-Served-By': undefined, 'origin_X-Served-By': undefined });
    expect(requestEventOf(parseTraefikAccessLog(raw)!, ctx)).toMatchObject({ replica: null, status: 503, error: 'no server available' });
  });

  it('the sticky cookie Traefik set is reported; other cookies are not', () => {
    const raw = line({ 'downstream_Set-Cookie': 'PHPSESSID=abc; path=/, _7a3f1=5b6c7d8e9f; Path=/' });
    expect(requestEventOf(parseTraefikAccessLog(raw)!, ctx).stickyCookie).toBe('_7a3f1=5b6c7d8e9f; Path=/');
    expect(requestEventOf(parseTraefikAccessLog(line({ 'downstream_Set-Cookie': 'PHPSESSID=abc' }))!, ctx).stickyCookie).toBeUndefined();
  });

  it('through a VIP: the replica is the one named by X-Served-By', () => {
    const raw = line({ RouterName: 'web_vip@file', ServiceName: 'web_vip@file', ServiceURL: 'http://127.0.0.1:43000', 'downstream_X-Served-By': 'web_vip-3-9999' });
    expect(requestEventOf(parseTraefikAccessLog(raw)!, ctx)).toMatchObject({ replica: 'web_vip-3-9999', hostname: 'web_vip-3-9999' });
  });

  it('a client that went away: 499', () => {
    const raw = line({ DownstreamStatus: 0, OriginStatus: 0, 'downstream_X-Served-By': undefined, 'origin_X-Served-By': undefined });
    expect(requestEventOf(parseTraefikAccessLog(raw)!, ctx)).toMatchObject({ status: 499, error: 'client closed request' });
  });
});

describe('InFlightTracker', () => {
  it('counts below a marker that have no line yet are in flight', () => {
    const t = new InFlightTracker();
    for (const c of [1, 2, 4, 6]) t.logged(c);
    expect(t.allLoggedBelow(3)).toBe(true);
    expect(t.allLoggedBelow(6)).toBe(false);
    expect(t.missingBelow(7)).toBe(2);
    t.logged(3);
    t.logged(5);
    expect(t.allLoggedBelow(7)).toBe(true);
    t.reset();
    expect(t.allLoggedBelow(2)).toBe(false);
  });
});
