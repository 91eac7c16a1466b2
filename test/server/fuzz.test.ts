/**
 * Property-based fuzzing of the REST API (fast-check) against a real running lab (process runtime,
 * embedded proxy, real replicas): more than 10,000 generated bad inputs (520 per command) across every command —
 * wrong types, huge and negative numbers, unicode, path-like names, unknown fields, oversized bodies,
 * wrong content types. Every one must get a 4xx whose JSON body is `{ error: "<sentence>" }`: never a
 * 5xx, never a crash; afterwards the lab still serves, with the same replicas, and no process of it
 * is left after stop.
 *
 * The generators only make inputs that are invalid by construction (a body that has an unknown
 * field, a field of the wrong type or out of range, a name that is no replica), so a generated
 * input can never scale, reset or kill anything.
 */
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Topology } from '../../lab/topology.ts';
import { startLab, type RunningLab } from '../../server/compose.ts';
import type { LabStatus } from '../../lab/status.ts';
import { isGone } from '../support/processes.ts';

let lab: RunningLab;
let stateDir: string;
let pids: number[] = [];

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-fuzz-'));
  lab = await startLab({
    host: '127.0.0.1',
    port: 0,
    proxyPort: 0,
    stateDir,
    topology: Topology.parse({
      services: { web_dynamic: { replicas: 2 } },
      routes: [{ service: 'web_dynamic', pathPrefix: '/' }],
    }),
  });
  pids = lab.lab.status().services.flatMap((s) => s.instances).map((r) => r.pid).filter((p): p is number => p !== null);
  expect(pids).toHaveLength(2);
}, 120_000);

afterAll(async () => {
  await lab?.stop();
  for (const pid of pids) expect(isGone(pid), `replica pid ${pid}`).toBe(true);
  rmSync(stateDir, { recursive: true, force: true });
});

interface Sent {
  method: 'GET' | 'POST';
  path: string;
  body?: string;
  contentType?: string;
}

async function send(req: Sent): Promise<{ status: number; body: unknown; raw: string }> {
  const res = await fetch(`${lab.apiUrl}/api${req.path}`, {
    method: req.method,
    headers: {
      authorization: `Bearer ${lab.token}`,
      ...(req.body !== undefined ? { 'content-type': req.contentType ?? 'application/json' } : {}),
    },
    ...(req.body !== undefined ? { body: req.body } : {}),
  });
  const raw = await res.text();
  let body: unknown = null;
  try {
    body = JSON.parse(raw);
  } catch {
    // checked below: every error must be JSON
  }
  return { status: res.status, body, raw };
}

// ---------------------------------------------------------------- generators of bad values

/** Text a name can never be: unicode, path-like, control characters, empty, too long. */
const badName = fc.oneof(
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }).map((s) => `ü${s}`),
  fc.constantFrom('..', '../../etc/passwd', '%2e%2e%2f', 'a/b', 'web_dynamic-1-zzzz;rm -rf /', '$(id)', '`id`', 'nul\u0000byte', '\u202eevil', 'a'.repeat(300)),
  fc.string({ minLength: 101, maxLength: 400 }).map((s) => `x${s.replace(/[^A-Za-z0-9]/g, 'x')}`),
  fc.stringMatching(/^[A-Za-z0-9_.-]{1,60}$/).map((s) => `no-such-${s}`),
);

/** Any JSON value that is not a whole number in 0..max. */
function badCount(max: number) {
  return fc.oneof(
    fc.integer({ min: max + 1, max: Number.MAX_SAFE_INTEGER }),
    fc.integer({ min: Number.MIN_SAFE_INTEGER, max: -1 }),
    fc.double({ min: 0.001, max: max - 0.001, noNaN: true }).filter((d) => !Number.isInteger(d)),
    fc.constantFrom(1e308, -1e308, Number.MAX_VALUE),
    fc.string({ maxLength: 20 }),
    fc.constant(null),
    fc.boolean(),
    fc.array(fc.integer({ min: 0, max: max })),
    fc.object({ maxDepth: 1 }),
  );
}

/** Any JSON value that is not a string. */
const notText = fc.oneof(fc.integer(), fc.double({ noNaN: true }), fc.boolean(), fc.constant(null), fc.array(fc.string()), fc.object({ maxDepth: 1 }));

/** A key no command accepts (every body is a zod strictObject). */
const unknownKey = fc.stringMatching(/^[a-z][a-zA-Z0-9]{0,15}$/).map((k) => `zz${k}`);

/** A JSON body that is an object with an unknown key added to `base` (strict bodies refuse it). */
function withUnknownKey(base: fc.Arbitrary<Record<string, unknown>>) {
  return fc.tuple(base, unknownKey, fc.jsonValue()).map(([b, k, v]) => JSON.stringify({ ...b, [k]: v }));
}

/** A body that is not a JSON object at all: arrays, scalars, broken JSON. */
const notAnObject = fc.oneof(
  fc.array(fc.jsonValue(), { maxLength: 5 }).map((v) => JSON.stringify(v)),
  fc.oneof(fc.integer(), fc.string(), fc.boolean()).map((v) => JSON.stringify(v)),
  fc.constantFrom('{', '{"replicas":', 'nul', '{"a":1,}', "{'a':1}", '\u0000', '[1,2'),
);

/**
 * Bad bodies for a command: `fields` with a bad value, the same plus an unknown key, non-objects,
 * and `{}` when the command has a required field (`emptyIsBad`; /probe and /load have defaults).
 */
function badBody(fields: fc.Arbitrary<Record<string, unknown>>, emptyIsBad = true) {
  return fc.oneof(
    fields.map((f) => JSON.stringify(f)),
    withUnknownKey(fields),
    notAnObject,
    ...(emptyIsBad ? [fc.constant('{}')] : []),
  );
}

interface Command {
  name: string;
  arb: fc.Arbitrary<Sent>;
}

const SERVICES_THAT_ARE_NOT = badName;

const commands: Command[] = [
  {
    name: 'POST /services/:service/scale',
    arb: fc.oneof(
      fc.tuple(SERVICES_THAT_ARE_NOT, fc.integer({ min: 0, max: 10 })).map(([s, n]) => ({ method: 'POST' as const, path: `/services/${encodeURIComponent(s)}/scale`, body: JSON.stringify({ replicas: n }) })),
      badBody(fc.record({ replicas: badCount(10) })).map((body) => ({ method: 'POST' as const, path: '/services/web_dynamic/scale', body })),
    ),
  },
  { name: 'POST /replicas/:hostname/kill', arb: badName.map((h) => ({ method: 'POST' as const, path: `/replicas/${encodeURIComponent(h)}/kill` })) },
  { name: 'POST /replicas/:hostname/restart', arb: badName.map((h) => ({ method: 'POST' as const, path: `/replicas/${encodeURIComponent(h)}/restart` })) },
  {
    name: 'POST /replicas/:hostname/weight',
    arb: fc.oneof(
      fc.tuple(badName, fc.integer({ min: 0, max: 256 })).map(([h, w]) => ({ method: 'POST' as const, path: `/replicas/${encodeURIComponent(h)}/weight`, body: JSON.stringify({ weight: w }) })),
      badBody(fc.record({ weight: badCount(256) })).map((body) => ({ method: 'POST' as const, path: '/replicas/web_dynamic-1/weight', body })),
    ),
  },
  {
    name: 'POST /replicas/:hostname/fault',
    arb: fc.oneof(
      fc.tuple(badName, fc.constantFrom('healthy', 'slow')).map(([h, mode]) => ({ method: 'POST' as const, path: `/replicas/${encodeURIComponent(h)}/fault`, body: JSON.stringify({ mode, ms: 10 }) })),
      badBody(
        fc.oneof(
          fc.record({ mode: fc.oneof(notText, fc.string().filter((s) => !['healthy', 'unhealthy', 'slow', 'errors', 'hang', 'crash'].includes(s))) }),
          fc.record({ mode: fc.constant('slow'), ms: badCount(60_000).filter((v) => v !== 0 || true) }),
        ),
      ).map((body) => ({ method: 'POST' as const, path: '/replicas/web_dynamic-1/fault', body })),
    ),
  },
  {
    name: 'POST /services/:service/redeploy',
    arb: fc.oneof(
      fc.tuple(badName, fc.constantFrom('naive', 'drain')).map(([s, strategy]) => ({ method: 'POST' as const, path: `/services/${encodeURIComponent(s)}/redeploy`, body: JSON.stringify({ strategy }) })),
      badBody(fc.record({ strategy: fc.oneof(notText, fc.string().filter((s) => s !== 'naive' && s !== 'drain')) })).map((body) => ({ method: 'POST' as const, path: '/services/web_dynamic/redeploy', body })),
    ),
  },
  {
    name: 'POST /reset',
    // `{}` is a valid reset: only bodies with a bad lesson, an unknown key, or no object at all.
    arb: fc
      .oneof(
        // (null is valid: the default topology.)
        fc.record({ lesson: fc.oneof(notText.filter((v) => v !== null), badName) }).map((b) => JSON.stringify(b)),
        withUnknownKey(fc.constant({})),
        notAnObject,
      )
      .map((body) => ({ method: 'POST' as const, path: '/reset', body })),
  },
  {
    name: 'POST /settings',
    arb: badBody(
      fc.oneof(
        fc.record({ settings: notText.filter((v) => !Array.isArray(v)) }),
        fc.record({ settings: fc.array(fc.oneof(notText, fc.string({ minLength: 201, maxLength: 300 })), { minLength: 1, maxLength: 5 }) }),
        fc.record({ settings: fc.array(fc.string({ maxLength: 30 }).map((s) => `zz${s}=1`), { minLength: 1, maxLength: 5 }) }),
        fc.record({ settings: fc.array(fc.constantFrom('sticky=maybe', 'web_dynamic.weight=-1', 'healthcheck.interval=1', 'timeouts.clientIdle=-5', 'algorithm=random', '=', 'sticky'), { minLength: 1, maxLength: 3 }) }),
        fc.record({ settings: fc.array(fc.constant('sticky=on'), { minLength: 21, maxLength: 25 }) }),
        fc.constant({ settings: [] }),
      ),
    ).map((body) => ({ method: 'POST' as const, path: '/settings', body })),
  },
  {
    name: 'POST /proxy',
    arb: badBody(fc.record({ driver: fc.oneof(notText, fc.string().filter((s) => !['embedded', 'haproxy', 'traefik'].includes(s))) })).map((body) => ({ method: 'POST' as const, path: '/proxy', body })),
  },
  {
    name: 'POST /proxy/runtime',
    // The embedded proxy has no Runtime API: even a well-formed command is a 4xx (409).
    arb: badBody(fc.record({ command: fc.oneof(notText, fc.string({ maxLength: 60 }), fc.string({ minLength: 301, maxLength: 400 }), fc.constantFrom('show stat', 'shutdown sessions', '; reboot')) })).map((body) => ({ method: 'POST' as const, path: '/proxy/runtime', body })),
  },
  {
    name: 'POST /probe',
    arb: badBody(
      fc.oneof(
        fc.record({ path: fc.oneof(notText, fc.string({ maxLength: 30 }).map((s) => `no-slash${s}`), fc.constant('/'.repeat(5000))) }),
        fc.record({ path: fc.constant('/'), count: badCount(100) }),
        fc.record({ path: fc.constant('/'), count: fc.constant(5), connection: fc.oneof(notText, fc.string().filter((s) => s !== 'reuse' && s !== 'new')) }),
        fc.record({ path: fc.constant('/'), count: fc.constant(5), cookies: fc.oneof(fc.string(), fc.integer(), fc.constant(null)) }),
      ),
      false,
    ).map((body) => ({ method: 'POST' as const, path: '/probe', body })),
  },
  {
    name: 'POST /experiments/hash-movement',
    arb: badBody(fc.record({ type: fc.oneof(notText, fc.string().filter((s) => s !== 'consistent' && s !== 'map-based')) })).map((body) => ({ method: 'POST' as const, path: '/experiments/hash-movement', body })),
  },
  {
    name: 'POST /load',
    arb: badBody(
      fc.oneof(
        fc.record({ rate: badCount(200), seconds: fc.constant(1), path: fc.constant('/') }),
        fc.record({ rate: fc.constant(10), seconds: badCount(120), path: fc.constant('/') }),
        fc.record({ rate: fc.constant(10), seconds: fc.constant(1), path: fc.oneof(notText, fc.constant('no-slash')) }),
      ),
      false,
    ).map((body) => ({ method: 'POST' as const, path: '/load', body })),
  },
  {
    name: 'POST /routes',
    arb: badBody(
      fc.oneof(
        fc.record({ routes: notText.filter((v) => !Array.isArray(v)) }),
        fc.record({ routes: fc.array(fc.record({ service: fc.oneof(notText, badName), pathPrefix: fc.constant('/') }), { minLength: 1, maxLength: 3 }) }),
        fc.record({ routes: fc.array(fc.record({ service: fc.constant('web_dynamic'), pathPrefix: fc.oneof(notText, fc.constantFrom('no-slash', '/a b', '/ü', '/'.repeat(300))) }), { minLength: 1, maxLength: 3 }) }),
        fc.record({ routes: fc.array(fc.record({ service: fc.constant('web_dynamic'), host: fc.oneof(notText, fc.constantFrom('a..b', '-x.localhost', 'demo.localhost:80', 'http://x', 'ü.localhost')) }), { minLength: 1, maxLength: 3 }) }),
        fc.record({ routes: fc.array(fc.constant({ service: 'web_dynamic', pathPrefix: '/' }), { minLength: 21, maxLength: 25 }) }),
      ),
    ).map((body) => ({ method: 'POST' as const, path: '/routes', body })),
  },
  {
    name: 'POST /route-test',
    arb: badBody(
      fc.oneof(
        fc.record({ host: fc.oneof(notText, fc.constantFrom('', 'a..b', 'x:80', 'http://demo.localhost', 'ü.localhost', 'a'.repeat(254))), path: fc.constant('/') }),
        fc.record({ host: fc.constant('demo.localhost'), path: fc.oneof(notText, fc.constantFrom('', 'no-slash', '/a b', `/${'x'.repeat(400)}`)) }),
      ),
    ).map((body) => ({ method: 'POST' as const, path: '/route-test', body })),
  },
  { name: 'POST /checks/:id', arb: badName.map((id) => ({ method: 'POST' as const, path: `/checks/${encodeURIComponent(id)}` })) },
  {
    name: 'POST /capture/start',
    // `{}` starts a capture: only bad seconds, unknown keys, non-objects.
    arb: fc
      .oneof(
        fc.record({ seconds: fc.oneof(badCount(300).filter((v) => v !== null || true), fc.constant(0)) }).map((b) => JSON.stringify(b)),
        withUnknownKey(fc.constant({})),
        notAnObject,
      )
      .map((body) => ({ method: 'POST' as const, path: '/capture/start', body })),
  },
  { name: 'POST /capture/stop (not recording)', arb: fc.constant({ method: 'POST' as const, path: '/capture/stop' }) },
  {
    name: 'wrong content type',
    arb: fc.tuple(fc.constantFrom('/services/web_dynamic/scale', '/settings', '/proxy', '/replicas/web_dynamic-1/weight'), fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'application/xml'), fc.string({ maxLength: 50 })).map(([p, ct, body]) => ({ method: 'POST' as const, path: p, body, contentType: ct })),
  },
  {
    name: 'oversized body',
    arb: fc.tuple(fc.constantFrom('/settings', '/reset', '/probe', '/load'), fc.integer({ min: 17 * 1024, max: 256 * 1024 })).map(([p, size]) => ({ method: 'POST' as const, path: p, body: JSON.stringify({ settings: ['x'.repeat(size)] }) })),
  },
  // ('.' and '..' would be resolved away by the URL parser, leaving /api.)
  { name: 'unknown route', arb: badName.filter((s) => s !== '.' && s !== '..').map((s) => ({ method: 'POST' as const, path: `/${encodeURIComponent(s)}` })) },
];

/** Runs per command: 21 commands x 520 = 10,920 inputs, plus 20 for capture/stop. */
const RUNS = 520;

describe('REST API fuzz: every bad input gets a 4xx with a sentence', () => {
  for (const c of commands) {
    it(c.name, async () => {
      await fc.assert(
        fc.asyncProperty(c.arb, async (req) => {
          const r = await send(req);
          if (r.status < 400 || r.status >= 500) {
            throw new Error(`${req.method} ${req.path} ${req.body?.slice(0, 120) ?? ''} -> ${r.status} ${r.raw.slice(0, 200)}`);
          }
          const error = (r.body as { error?: unknown } | null)?.error;
          if (typeof error !== 'string' || error.trim().length < 5) throw new Error(`${req.method} ${req.path} -> ${r.status} without an error sentence: ${r.raw.slice(0, 200)}`);
        }),
        { numRuns: c.name === 'POST /capture/stop (not recording)' ? 20 : RUNS },
      );
    }, 600_000);
  }

  it('afterwards the lab still serves, with the replicas it had, and the proxy answers', async () => {
    const status = await send({ method: 'GET', path: '/status' });
    expect(status.status).toBe(200);
    const replicas = (status.body as LabStatus).services.flatMap((s) => s.instances);
    expect(replicas.map((r) => r.pid).sort()).toEqual([...pids].sort());
    expect(replicas.every((r) => r.state === 'running')).toBe(true);
    const res = await fetch(lab.proxyUrl.replace('localhost', '127.0.0.1'));
    expect(res.status).toBe(200);
  });
});
