import { describe, expect, it } from 'vitest';
import { applySettings, parseSetting } from './settings.ts';
import { balancerOf, defaultTopology } from './topology.ts';

describe('parseSetting', () => {
  it('parses proxy-wide and per-service settings', () => {
    expect(parseSetting('sticky=on')).toMatchObject({ service: undefined, field: 'sticky', value: true });
    expect(parseSetting('web_dynamic.sticky=off')).toMatchObject({ service: 'web_dynamic', field: 'sticky', value: false });
    expect(parseSetting('sticky.cookie=lab_pin')).toMatchObject({ field: 'stickyCookie', value: 'lab_pin' });
    expect(parseSetting('sticky.cookie=default')).toMatchObject({ field: 'stickyCookie', value: undefined });
    expect(parseSetting('algorithm=hash')).toMatchObject({ field: 'algorithm', value: 'hash' });
    expect(parseSetting('hash.header=X-Session-ID')).toMatchObject({ field: 'hashHeader', value: 'X-Session-ID' });
    expect(parseSetting('session_php.hash.type=map-based')).toMatchObject({ service: 'session_php', field: 'hashType', value: 'map-based' });
  });

  it.each([
    ['stiky=on', /Unknown setting "stiky"; known: algorithm, sticky/],
    ['sticky=maybe', /^sticky: sticky must be on or off/],
    ['algorithm=random', /^algorithm: algorithm must be one of: round-robin, least-connections, hash/],
    ['sticky.cookie=bad name;', /^sticky.cookie: sticky.cookie may only contain letters, digits, _ and -/],
    ['sticky.cookie=', /^sticky.cookie: sticky.cookie must not be empty/],
    ['hash.header=X Session', /^hash.header: hash.header may only contain letters, digits and -/],
    ['hash.type=ring', /hash.type must be consistent or map-based/],
    ['sticky', /Expected <setting>=<value>/],
    ['nope.sticky=on', /Unknown setting "nope.sticky"/],
  ])('refuses %j with a sentence naming the field', (text, message) => {
    expect(() => parseSetting(text)).toThrow(message);
  });
});

describe('applySettings', () => {
  it('sets proxy-wide values, per-service overrides, and a later proxy-wide value clears the override', () => {
    let t = applySettings(defaultTopology(), [parseSetting('web_dynamic.sticky=on')]);
    expect(balancerOf(t, 'web_dynamic').sticky).toBe(true);
    expect(balancerOf(t, 'web_static').sticky).toBe(false);
    t = applySettings(t, [parseSetting('sticky=off')]);
    expect(balancerOf(t, 'web_dynamic').sticky).toBe(false);
    t = applySettings(t, [parseSetting('algorithm=hash'), parseSetting('hash.type=map-based')]);
    expect(balancerOf(t, 'web_static')).toMatchObject({ algorithm: 'hash', hashType: 'map-based', hashHeader: 'X-Session-ID' });
  });

  it('does not change its input', () => {
    const before = defaultTopology();
    applySettings(before, [parseSetting('sticky=on')]);
    expect(before.proxy.sticky).toBe(false);
  });
});

describe('balancerOf', () => {
  it('a per-service override of one field keeps the proxy-wide values of the others', () => {
    const t = applySettings(defaultTopology(), [parseSetting('sticky=on'), parseSetting('hash.header=X-User'), parseSetting('web_dynamic.algorithm=hash')]);
    expect(balancerOf(t, 'web_dynamic')).toMatchObject({ algorithm: 'hash', sticky: true, hashHeader: 'X-User' });
    expect(balancerOf(t, 'web_static')).toMatchObject({ algorithm: 'round-robin', sticky: true });
  });
});

describe('health check, retry and discovery settings', () => {
  it('parses them', () => {
    expect(parseSetting('healthcheck=on')).toMatchObject({ field: 'healthCheck', value: true });
    expect(parseSetting('healthcheck.interval=1000')).toMatchObject({ field: 'healthCheckInterval', value: 1000 });
    expect(parseSetting('web_dynamic.healthcheck.path=/app/health')).toMatchObject({ service: 'web_dynamic', field: 'healthCheckPath', value: '/app/health' });
    expect(parseSetting('retry=on')).toMatchObject({ field: 'retry', value: true });
    expect(parseSetting('discovery=static')).toMatchObject({ field: 'discovery', value: 'static' });
    const t = applySettings(defaultTopology(), [parseSetting('discovery=static'), parseSetting('healthcheck.fall=2')]);
    expect(t.discovery).toBe('static');
    expect(balancerOf(t, 'web_static').healthCheckFall).toBe(2);
  });

  it.each([
    ['healthcheck.interval=50', /healthcheck.interval must be at least 100 ms/],
    ['healthcheck.interval=1s', /healthcheck.interval must be a whole number/],
    ['healthcheck.timeout=99999', /healthcheck.timeout must be at most 30000 ms/],
    ['healthcheck.path=health', /healthcheck.path must start with \//],
    ['healthcheck.fall=0', /healthcheck.fall must be at least 1/],
    ['retry=maybe', /retry must be on or off/],
    ['retry.attempts=9', /retry.attempts must be at most 5/],
    ['discovery=dns', /discovery must be dynamic or static/],
    ['web_static.discovery=static', /applies to the whole lab/],
  ])('refuses %j', (text, message) => {
    expect(() => parseSetting(text)).toThrow(message);
  });
});

describe('connection settings', () => {
  it('parses timeouts, vip, reuse and dnsrr', () => {
    const t = applySettings(defaultTopology(), [
      parseSetting('timeouts.clientIdle=10000'),
      parseSetting('timeouts.backendKeepAlive=30000'),
      parseSetting('web_dynamic.vip=on'),
      parseSetting('reuse=off'),
    ]);
    expect(t.proxy.clientIdle).toBe(10_000);
    expect(balancerOf(t, 'web_static').backendKeepAlive).toBe(30_000);
    expect(balancerOf(t, 'web_dynamic')).toMatchObject({ vip: true, reuse: false, dnsrr: false });
    expect(balancerOf(t, 'web_static').vip).toBe(false);
    expect(parseSetting('timeouts.backendKeepAlive=default').value).toBeUndefined();
  });

  it.each([
    ['timeouts.clientIdle=50', /timeouts.clientIdle must be at least 100 ms/],
    ['web_dynamic.timeouts.clientIdle=1000', /setting of the proxy's entrypoint/],
    ['timeouts.backendKeepAlive=1000000', /at most 900000 ms/],
    ['vip=yes', /vip must be on or off/],
  ])('refuses %j', (text, message) => {
    expect(() => parseSetting(text)).toThrow(message);
  });
});
