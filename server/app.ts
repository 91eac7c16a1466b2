/**
 * The lab's HTTP face: REST commands (zod-validated), socket.io event streams, and the built
 * web app. Every /api call and every socket needs the run's token; requests whose Host or
 * Origin is not this lab's are refused (no CSRF, no DNS rebinding: this server starts processes).
 */
import http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import express, { type NextFunction, type Request, type Response } from 'express';
import { Server as SocketServer } from 'socket.io';
import { z } from 'zod';
import type { EventBus } from '../lab/events.ts';
import { LabError, type Lab } from '../lab/lab.ts';
import { LoadRequest, LoadRun } from '../lab/load.ts';
import { ProbeClient } from '../lab/probe-client.ts';
import { DriverName, ReplicaCount } from '../lab/topology.ts';
import { ruleText } from '../lab/proxy/config.ts';
import { renderHaproxyConfig } from '../lab/proxy/haproxy/render.ts';
import { renderTraefikDynamic, renderTraefikLabels } from '../lab/proxy/traefik/render.ts';
import { EventStream } from './event-stream.ts';
import type { LessonInfo } from './lessons.ts';
import { CHECKS, sendRouted } from '../lab/checks.ts';
import { BurstRequest, HashMovementRequest, measureHashMovement, runBurst } from '../lab/experiments.ts';
import {
  WATCH_ONLY_REFUSAL,
  type LessonRef,
  type NavigateMessage,
  type NavigateResult,
  type ProxyConfigsView,
  type ProxyInfo,
  type ResetMessage,
  type Role,
  type RouteTestResult,
  type SessionInfo,
} from './protocol.ts';
import { RunRecorder } from './export.ts';
import { renderRunReport } from './export-html.ts';
import { CAPTURE_MAX_SECONDS, type Capture } from '../lab/capture.ts';

export interface LabServerOptions {
  lab: Lab;
  bus: EventBus;
  /** The run's secret (the instructor's: every command); compared in constant time. */
  token: string;
  /**
   * The watch-only token (students): the socket and every GET work, any other call answers 403
   * with WATCH_ONLY_REFUSAL. Absent: there is no watch-only access. Must differ from `token`.
   */
  readonlyToken?: string;
  /** Folder of the built web app (index.html); when missing, `/` says how to build it. */
  staticDir: string;
  /** Host names the page may be reached by (default localhost, 127.0.0.1, [::1]). */
  allowedHosts?: string[];
  /** The lessons, for `reset <lesson>`. */
  lessons?: LessonInfo[];
  /** The proxy engines and whether each can run here. */
  proxies?: () => Promise<ProxyInfo[]>;
  /** Packet capture (tcpdump) of the proxy's and replicas' ports; without it the routes say it is off. */
  capture?: Capture;
}

export interface LabServer {
  httpServer: http.Server;
  /** Listens and resolves with the bound port; rejects with a sentence on EADDRINUSE. */
  listen(port: number, host: string): Promise<number>;
  /** Closes sockets, streams and the listener (does not stop the lab). */
  close(): Promise<void>;
}

/** Largest JSON body accepted (bytes); commands are tiny. */
const BODY_LIMIT_BYTES = 16 * 1024;

const ScaleBody = z.strictObject({ replicas: ReplicaCount }, { error: 'body must be {"replicas": <0..10>}' });
const ResetBody = z.strictObject(
  { lesson: z.string({ error: 'lesson must be a lesson slug, or null for the default topology' }).max(100, 'lesson is at most 100 characters').nullable().optional() },
  { error: 'body must be {}, {"lesson": "<slug>"} or {"lesson": null}' },
);
const NavigateBody = z.strictObject(
  { lesson: z.string({ error: 'lesson must be a lesson slug such as 02-sticky-sessions' }).min(1, 'lesson must not be empty').max(100, 'lesson is at most 100 characters') },
  { error: 'body must be {"lesson": "<slug>"}' },
);
const SettingsBody = z.strictObject(
  { settings: z.array(z.string().max(200), { error: 'settings must be a list of texts like "sticky=on"' }).min(1, 'settings must not be empty').max(20, 'at most 20 settings at once') },
  { error: 'body must be {"settings": ["sticky=on", ...]}' },
);
const ProxyBody = z.strictObject({ driver: DriverName }, { error: 'body must be {"driver": "embedded" | "haproxy" | "traefik"}' });
const WeightBody = z.strictObject({ weight: z.unknown() }, { error: 'body must be {"weight": <0..256>}' });
const RuntimeBody = z.strictObject(
  { command: z.string({ error: 'command must be text' }).min(1, 'command must not be empty').max(300, 'command is at most 300 characters') },
  { error: 'body must be {"command": "show stat"}' },
);
const RedeployBody = z.strictObject(
  { strategy: z.enum(['naive', 'drain'], { error: 'strategy must be naive or drain' }) },
  { error: 'body must be {"strategy": "naive" | "drain"}' },
);
const CaptureStartBody = z.strictObject(
  { seconds: z.number({ error: `seconds must be a number from 1 to ${CAPTURE_MAX_SECONDS}` }).int(`seconds must be a whole number from 1 to ${CAPTURE_MAX_SECONDS}`).min(1, `seconds must be from 1 to ${CAPTURE_MAX_SECONDS}`).max(CAPTURE_MAX_SECONDS, `seconds must be from 1 to ${CAPTURE_MAX_SECONDS}`).optional() },
  { error: `body must be {} or {"seconds": <1..${CAPTURE_MAX_SECONDS}>}` },
);
const RoutesBody = z.strictObject({ routes: z.unknown() }, { error: 'body must be {"routes": [{"service", "host"?, "pathPrefix", "stripPrefix"}, ...]}' });
const RouteTestBody = z.strictObject(
  {
    host: z
      .string({ error: 'host must be text' })
      .min(1, 'host must not be empty')
      .max(253, 'host is at most 253 characters')
      .regex(/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/, 'host must be a DNS name such as demo.localhost (no port, no scheme)'),
    path: z
      .string({ error: 'path must be text' })
      .max(300, 'path is at most 300 characters')
      .regex(/^\/[A-Za-z0-9._~!$&'()*+,;=:@%\/-]*(\?[A-Za-z0-9._~!$&'()*+,;=:@%\/?-]*)?$/, 'path must start with / and use URL characters only, e.g. /api/jokes?n=1'),
  },
  { error: 'body must be {"host": "demo.localhost", "path": "/api/"}' },
);
/** How long the request tester waits for the proxy's request event after the answer (HAProxy's comes from its log). */
const ROUTE_REPORT_WAIT_MS = 5_000;

/** The routing part of haproxy.cfg: the frontend from its router rules to the end of the section. */
function haproxyRoutingExcerpt(text: string): string {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => /^\s*# Routers/.test(l));
  if (start === -1) return text;
  let end = start;
  while (end < lines.length && lines[end].trim() !== '') end++;
  return lines.slice(start, end).join('\n');
}

/** The routing part of Traefik's dynamic YAML: the `routers:` and `middlewares:` blocks under `http:`. */
function traefikRoutingExcerpt(text: string): string {
  const out: string[] = ['http:'];
  let keep = false;
  for (const line of text.split('\n')) {
    const section = /^ {2}([A-Za-z]+):\s*$/.exec(line);
    if (section) keep = section[1] === 'routers' || section[1] === 'middlewares';
    else if (/^\S/.test(line)) keep = false;
    if (keep && line.trim() !== '') out.push(line);
  }
  return out.length > 1 ? out.join('\n') : text;
}

const ReplicaName = z
  .string()
  .max(100, 'replica name is too long')
  .regex(/^[A-Za-z0-9_.-]+$/, 'replica name may only contain letters, digits, _ . -');

/** Maps a LabError code to its HTTP status. */
const STATUS_OF: Record<LabError['code'], number> = { 'bad-request': 400, 'not-found': 404, conflict: 409, failed: 500 };

/** Validates with zod; a failure becomes a 400 whose message names the field. */
function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue?.path.join('.') ?? '';
  const message = issue?.message ?? 'invalid input';
  throw new LabError(field && !message.startsWith(field) ? `${field}: ${message}` : message, 'bad-request');
}

function hostnameOf(hostHeader: string | undefined): string | null {
  if (!hostHeader) return null;
  try {
    return new URL(`http://${hostHeader}`).hostname;
  } catch {
    return null;
  }
}

/** A lesson's names: folder `02-sticky-sessions`, page slug `sticky-sessions`, path `/lessons/sticky-sessions`. */
export function lessonRef(lesson: LessonInfo): LessonRef {
  const slug = lesson.slug.replace(/^\d+-/, '');
  return { folder: lesson.slug, slug, title: lesson.title, path: `/lessons/${slug}` };
}

export function createLabServer(o: LabServerOptions): LabServer {
  const allowedHosts = new Set(o.allowedHosts ?? ['localhost', '127.0.0.1', '[::1]']);
  if (o.readonlyToken !== undefined && (o.readonlyToken === '' || o.readonlyToken === o.token)) {
    throw new Error('The watch-only token must be non-empty and differ from the lab token.');
  }
  const same = (given: string, secret: Buffer): boolean => {
    const b = Buffer.from(given);
    return b.length === secret.length && timingSafeEqual(b, secret);
  };
  const expected = Buffer.from(o.token);
  const watchExpected = o.readonlyToken ? Buffer.from(o.readonlyToken) : null;
  /** The role a token gives, or null for no/another token. */
  const roleOf = (given: unknown): Role | null => {
    if (typeof given !== 'string') return null;
    if (same(given, expected)) return 'control';
    if (watchExpected && same(given, watchExpected)) return 'watch';
    return null;
  };
  const lessons = o.lessons ?? [];
  /** Finds a lesson by folder (`02-sticky-sessions`) or page slug (`sticky-sessions`); 404 lists them. */
  const findLesson = (name: string): LessonInfo => {
    const found = lessons.find((l) => l.slug === name || lessonRef(l).slug === name);
    if (!found) {
      const known = lessons.map((l) => l.slug).join(', ') || 'none';
      throw new LabError(`Unknown lesson "${name.slice(0, 60)}". Lessons: ${known}.`, 'not-found');
    }
    return found;
  };
  /** The class's current lesson: the last one navigated to or reset to (null: none yet, or reset to the default). */
  let current: NavigateMessage | null = null;
  const recorder = new RunRecorder(o.bus);

  /** Host must be ours; Origin, when sent, must be this same origin. Returns a reason or null. */
  const refuse = (headers: http.IncomingHttpHeaders): string | null => {
    const host = hostnameOf(headers.host);
    if (!host || !allowedHosts.has(host)) return `Host "${String(headers.host).slice(0, 80)}" is not allowed; open the lab at http://localhost:<port>/.`;
    const origin = headers.origin;
    if (origin !== undefined) {
      let originHost: string | null = null;
      try {
        const u = new URL(origin);
        originHost = u.protocol === 'http:' ? u.host : null;
      } catch {
        originHost = null;
      }
      if (originHost !== headers.host) return `Origin "${String(origin).slice(0, 80)}" is not allowed.`;
    }
    return null;
  };

  const app = express();
  app.disable('x-powered-by');
  app.use((req, res, next) => {
    const reason = refuse(req.headers);
    if (reason) {
      res.status(403).json({ error: reason });
      return;
    }
    next();
  });

  const api = express.Router();
  api.use((req, res, next) => {
    const auth = req.headers.authorization;
    const given = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
    const role = roleOf(given);
    if (!role) {
      res.status(401).json({ error: 'Missing or wrong token: open the URL the lab printed at start (it carries ?token=...).' });
      return;
    }
    // Watch-only: looking is fine, any command is refused before its body is even read.
    if (role === 'watch' && req.method !== 'GET' && req.method !== 'HEAD') {
      res.status(403).json({ error: WATCH_ONLY_REFUSAL });
      return;
    }
    res.locals.role = role;
    next();
  });
  // A declared length over the limit is refused at once: body-parser would answer 413 only after
  // draining the whole declared body, holding the connection as long as a slow client likes
  // (found by test/server/security.test.ts). `Connection: close` drops the unread rest.
  api.use((req, res, next) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > BODY_LIMIT_BYTES) {
      res.setHeader('connection', 'close');
      res.status(413).json({ error: `The request body is larger than ${BODY_LIMIT_BYTES} bytes.` });
      return;
    }
    next();
  });
  api.use(express.json({ limit: BODY_LIMIT_BYTES, strict: true }));

  api.get('/status', (_req, res) => {
    res.json(o.lab.status());
  });

  api.post('/services/:service/scale', async (req, res) => {
    const body = parse(ScaleBody, req.body ?? {});
    res.json(await o.lab.scale(String(req.params.service), body.replicas));
  });

  api.post('/replicas/:hostname/kill', async (req, res) => {
    res.json(await o.lab.kill(parse(ReplicaName, req.params.hostname)));
  });

  api.post('/reset', async (req, res) => {
    const body = parse(ResetBody, req.body ?? {});
    // {lesson}: that lesson; {lesson: null}: the default; {}: the class's current lesson, if any.
    const name = body.lesson === undefined ? (current?.folder ?? o.lab.status().lesson ?? null) : body.lesson;
    const lesson = name === null ? null : findLesson(name);
    const started = performance.now();
    load?.stop();
    kept?.client.close();
    kept = null;
    const status = await o.lab.reset(lesson?.topology, lesson?.slug ?? null);
    current = lesson ? { ...lessonRef(lesson), at: Date.now() } : null;
    // The old run's events go with it: counts, history, the export; every page is told.
    stream.resetCounts();
    recorder.reset(lesson ? `reset to the start of lesson ${lesson.slug}` : 'reset');
    const message: ResetMessage = { lesson: lesson?.slug ?? null, at: Date.now(), ms: Math.round(performance.now() - started) };
    io.emit('reset', message);
    res.json(status);
  });

  api.get('/session', async (_req, res) => {
    const pages: Record<Role, number> = { control: 0, watch: 0 };
    for (const socket of await io.fetchSockets()) pages[socket.data.role as Role]++;
    const info: SessionInfo = { role: res.locals.role as Role, lesson: current, lessons: lessons.map(lessonRef), pages };
    res.json(info);
  });

  api.post('/navigate', async (req, res) => {
    const lesson = findLesson(parse(NavigateBody, req.body ?? {}).lesson);
    current = { ...lessonRef(lesson), at: Date.now() };
    io.emit('navigate', current);
    const result: NavigateResult = { ...lessonRef(lesson), browsers: (await io.fetchSockets()).length };
    res.json(result);
  });

  const exportName = (ext: string) => `balancer-lab-run-${new Date().toISOString().replace(/[:.]/g, '-')}.${ext}`;
  api.get('/export', (req, res) => {
    res.setHeader('cache-control', 'no-store');
    if (req.query.download !== undefined) res.attachment(exportName('json'));
    res.json(recorder.export(o.lab.status()));
  });

  api.get('/export.html', (_req, res) => {
    const run = recorder.export(o.lab.status());
    const title = run.lesson ? lessons.find((l) => l.slug === run.lesson)?.title : undefined;
    res.setHeader('cache-control', 'no-store');
    res.attachment(exportName('html'));
    res.type('html').send(renderRunReport(run, title));
  });

  api.post('/settings', async (req, res) => {
    res.json(await o.lab.configure(parse(SettingsBody, req.body ?? {}).settings));
  });

  api.post('/replicas/:hostname/weight', async (req, res) => {
    const name = parse(ReplicaName, req.params.hostname);
    res.json(await o.lab.setWeight(name, parse(WeightBody, req.body ?? {}).weight as number));
  });

  api.post('/replicas/:hostname/fault', async (req, res) => {
    res.json(await o.lab.fault(parse(ReplicaName, req.params.hostname), req.body ?? {}));
  });

  api.post('/replicas/:hostname/restart', async (req, res) => {
    res.json(await o.lab.restart(parse(ReplicaName, req.params.hostname)));
  });

  api.post('/services/:service/redeploy', async (req, res) => {
    const { strategy } = parse(RedeployBody, req.body ?? {});
    res.json(await o.lab.redeploy(String(req.params.service), strategy));
  });

  let load: LoadRun | null = null;
  api.post('/load', (req, res) => {
    const request = parse(LoadRequest, req.body ?? {});
    if (load && !load.finished) throw new LabError('A load run is already going; stop it first (POST /api/load/stop).', 'conflict');
    const run = new LoadRun(request, `http://127.0.0.1:${o.lab.status().proxy.port}`, o.bus);
    load = run;
    void run.done.catch(() => undefined);
    res.json({ runId: run.id, ...request });
  });

  api.post('/load/stop', (_req, res) => {
    const running = load !== null && !load.finished;
    load?.stop();
    res.json({ stopped: running });
  });

  api.get('/proxies', async (_req, res) => {
    res.json(o.proxies ? await o.proxies() : []);
  });

  api.post('/proxy', async (req, res) => {
    const { driver } = parse(ProxyBody, req.body ?? {});
    res.json(await o.lab.switchProxy(driver));
  });

  api.get('/proxy/config', (_req, res) => {
    res.json(o.lab.proxyConfigText());
  });

  api.post('/checks/:id', async (req, res) => {
    const check = CHECKS.get(String(req.params.id));
    if (!check) throw new LabError(`Unknown check "${String(req.params.id).slice(0, 60)}". Checks: ${[...CHECKS.keys()].join(', ')}.`, 'not-found');
    const status = o.lab.status();
    res.json({ id: check.id, title: check.title, ...(await check.run({ proxyBase: `http://127.0.0.1:${status.proxy.port}`, status, requests: stream.history().requests })) });
  });

  api.post('/routes', async (req, res) => {
    res.json(await o.lab.setRoutes(parse(RoutesBody, req.body ?? {}).routes));
  });

  api.post('/route-test', async (req, res) => {
    const { host, path: target } = parse(RouteTestBody, req.body ?? {});
    const status = o.lab.status();
    const config = o.lab.proxyConfig();
    // The proxy's own report of this request, matched by our client connection: the embedded
    // proxy names it by an id announced in connection:opened, HAProxy by the client's ip:port.
    const connIds = new Map<string, string>();
    const events: Array<{ router: string | null; service: string | null; clientConnId: string }> = [];
    let wake: (() => void) | null = null;
    const offOpened = o.bus.on('connection:opened', (e) => {
      if (e.hop === 'client-proxy') connIds.set(e.local, e.id);
    });
    const offCompleted = o.bus.on('request:completed', (e) => {
      events.push({ router: e.router, service: e.service, clientConnId: e.clientConnId });
      wake?.();
    });
    const at = Date.now();
    try {
      let answer;
      try {
        answer = await sendRouted(`http://127.0.0.1:${status.proxy.port}`, host, target);
      } catch (err) {
        throw new LabError(`The proxy did not answer: ${(err as Error).message}`, 'failed');
      }
      const local = `127.0.0.1:${answer.localPort}`;
      const find = () => events.find((e) => e.clientConnId === local || e.clientConnId === connIds.get(local));
      const deadline = Date.now() + ROUTE_REPORT_WAIT_MS;
      let seen = find();
      while (!seen && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = null;
        seen = find();
      }
      const router = seen?.router ? config.routers.find((r) => r.name === seen.router) : undefined;
      const result: RouteTestResult = {
        host,
        path: target,
        driver: status.proxy.driver,
        status: answer.status,
        router: seen?.router ?? null,
        rule: router ? ruleText(router) : null,
        priority: router?.priority ?? null,
        stripPrefix: router ? router.stripPrefix : null,
        service: seen?.service ?? null,
        replica: answer.servedBy,
        receivedPath: answer.servedBy ? answer.receivedPath : null,
        body: answer.body,
        reported: seen !== undefined,
        at,
      };
      res.json(result);
    } finally {
      offOpened();
      offCompleted();
    }
  });

  api.get('/proxy/configs', (_req, res) => {
    const config = o.lab.proxyConfig();
    const running = o.lab.proxyConfigText();
    const view: ProxyConfigsView = {
      driver: running.driver,
      routers: config.routers.map((r) => ({ name: r.name, rule: ruleText(r), priority: r.priority, service: r.service, stripPrefix: r.stripPrefix })),
      configs: [],
    };
    let haproxyText = '';
    let haproxyError: string | undefined;
    try {
      // The running haproxy.cfg when HAProxy runs; otherwise the same renderer with example paths.
      haproxyText = running.driver === 'haproxy' ? running.text : renderHaproxyConfig(config, { statsSocket: '/run/haproxy/admin.sock', statsPort: 8404 });
    } catch (err) {
      haproxyError = (err as Error).message;
    }
    // Traefik's own words for the same routers: the file provider's YAML and the Docker labels.
    let dynamic = '';
    let dynamicError: string | undefined;
    try {
      dynamic = renderTraefikDynamic(config);
    } catch (err) {
      dynamicError = (err as Error).message;
    }
    const labelBlocks: string[] = [];
    const routingBlocks: string[] = [];
    let labelsError: string | undefined;
    try {
      for (const service of [...new Set(config.routers.map((r) => r.service))]) {
        const labels = Object.entries(renderTraefikLabels(config, service));
        const block = (keep: (key: string) => boolean) =>
          [`  ${service}:`, '    labels:', ...labels.filter(([k]) => keep(k)).map(([k, v]) => `      - "${k}=${v}"`)].join('\n');
        labelBlocks.push(block(() => true));
        routingBlocks.push(block((k) => k === 'traefik.enable' || k.startsWith('traefik.http.routers.') || k.startsWith('traefik.http.middlewares.')));
      }
    } catch (err) {
      labelsError = (err as Error).message;
    }
    const compose = (blocks: string[]) => ['# docker-compose.yml (Docker provider)', 'services:', ...blocks].join('\n');
    view.configs.push({
      engine: 'haproxy',
      kind: 'haproxy.cfg',
      title: 'HAProxy 2.6: haproxy.cfg',
      text: haproxyText,
      excerpt: haproxyRoutingExcerpt(haproxyText),
      ...(haproxyError ? { error: haproxyError } : {}),
    });
    view.configs.push({
      engine: 'traefik',
      kind: 'dynamic',
      title: 'Traefik v3: dynamic configuration (YAML)',
      text: dynamic,
      excerpt: dynamicError ? '' : traefikRoutingExcerpt(dynamic),
      ...(dynamicError ? { error: dynamicError } : {}),
    });
    view.configs.push({
      engine: 'traefik',
      kind: 'labels',
      title: 'Traefik v3: Docker labels',
      text: labelsError ? '' : compose(labelBlocks),
      excerpt: labelsError ? '' : compose(routingBlocks),
      ...(labelsError ? { error: labelsError } : {}),
    });
    res.json(view);
  });

  /** The keep-alive client `keep` bursts share, with the proxy port it talks to. */
  let kept: { client: ProbeClient; base: string } | null = null;
  api.post('/probe', async (req, res) => {
    const burst = parse(BurstRequest, req.body ?? {});
    if (burst.keep && (burst.connection !== 'reuse' || burst.cookies || burst.header)) {
      throw new LabError('keep goes with connection "reuse" only, without cookies or a header.', 'bad-request');
    }
    // Always the lab's own proxy: the probe cannot be pointed elsewhere.
    const base = `http://127.0.0.1:${o.lab.status().proxy.port}`;
    if (!burst.keep) {
      res.json({ results: await runBurst(base, burst) });
      return;
    }
    if (!kept || kept.base !== base) {
      kept?.client.close();
      kept = { client: new ProbeClient({ baseUrl: base, connection: 'reuse' }), base };
    }
    res.json({ results: await runBurst(base, burst, kept.client) });
  });

  api.post('/experiments/hash-movement', async (req, res) => {
    res.json(await measureHashMovement(o.lab, parse(HashMovementRequest, req.body ?? {})));
  });

  api.post('/proxy/runtime', async (req, res) => {
    const { command } = parse(RuntimeBody, req.body ?? {});
    res.json({ output: await o.lab.runtimeCommand(command) });
  });

  const capture = (): Capture => {
    if (!o.capture) throw new LabError('Packet capture is not set up in this lab server.', 'conflict');
    return o.capture;
  };
  /** The proxy's port, every replica's port and every VIP's port: the lesson's traffic. */
  const capturePorts = (): number[] => {
    const status = o.lab.status();
    const ports = [status.proxy.port];
    for (const s of status.services) {
      for (const r of s.instances) if (r.port) ports.push(r.port);
      const vipPort = s.vip ? Number(s.vip.split(':').at(-1)) : NaN;
      if (Number.isInteger(vipPort)) ports.push(vipPort);
    }
    return ports;
  };

  api.get('/capture', (_req, res) => {
    if (!o.capture) {
      res.json({ available: false, reason: 'Packet capture is not set up in this lab server.', running: false, ports: [], startedAt: null, seconds: null, fileBytes: null, endedBy: null });
      return;
    }
    res.json(o.capture.state());
  });

  api.post('/capture/start', async (req, res) => {
    const { seconds } = parse(CaptureStartBody, req.body ?? {});
    res.json(await capture().start(capturePorts(), seconds));
  });

  api.post('/capture/stop', async (_req, res) => {
    res.json(await capture().stop());
  });

  api.get('/capture/file', (_req, res) => {
    const c = capture();
    if (c.fileBytes() === null) throw new LabError('No capture recorded yet: press Record, then Stop.', 'not-found');
    if (c.running) throw new LabError('The capture is still recording: stop it before downloading.', 'conflict');
    res.setHeader('cache-control', 'no-store');
    res.download(c.file, `balancer-lab-${new Date().toISOString().replace(/[:.]/g, '-')}.pcap`, { headers: { 'content-type': 'application/vnd.tcpdump.pcap' } });
  });

  api.use((req, res) => {
    res.status(404).json({ error: `No such command: ${req.method} /api${req.path.slice(0, 100)}` });
  });

  api.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof LabError) {
      res.status(STATUS_OF[err.code]).json({ error: err.message });
      return;
    }
    const e = err as { type?: string; status?: number; message?: string };
    if (e?.type === 'entity.parse.failed') {
      res.status(400).json({ error: 'The request body is not valid JSON.' });
      return;
    }
    if (e?.type === 'entity.too.large') {
      res.status(413).json({ error: `The request body is larger than ${BODY_LIMIT_BYTES} bytes.` });
      return;
    }
    if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
      res.status(e.status).json({ error: e.message ?? 'Bad request.' });
      return;
    }
    res.status(500).json({ error: `The lab failed: ${e?.message ?? String(err)}` });
  });
  app.use('/api', api);

  const index = path.join(o.staticDir, 'index.html');
  app.use(express.static(o.staticDir, { index: false }));
  app.get('/{*splat}', (_req, res) => {
    if (!existsSync(index)) {
      res.status(503).type('text').send('The web app is not built yet: run `npm run build` (npm start does it for you).');
      return;
    }
    res.sendFile(index);
  });

  const httpServer = http.createServer(app);
  const io = new SocketServer(httpServer, {
    serveClient: false,
    destroyUpgrade: false,
    maxHttpBufferSize: BODY_LIMIT_BYTES,
    allowRequest: (req, cb) => {
      const reason = refuse(req.headers);
      cb(reason, reason === null);
    },
  });
  io.use((socket, next) => {
    const role = roleOf(socket.handshake.auth?.token);
    if (!role) {
      next(new Error('Missing or wrong token: open the URL the lab printed at start.'));
      return;
    }
    socket.data.role = role;
    next();
  });

  const stream = new EventStream(
    o.bus,
    (batch) => io.emit('batch', batch),
    () => io.emit('status', o.lab.status()),
  );
  io.on('connection', (socket) => {
    socket.emit('status', o.lab.status());
    socket.emit('history', stream.history());
    const session: SessionInfo = { role: socket.data.role as Role, lesson: current, lessons: lessons.map(lessonRef) };
    socket.emit('session', session);
  });

  return {
    httpServer,
    listen(port, host) {
      return new Promise((resolve, reject) => {
        const onError = (err: NodeJS.ErrnoException) => {
          reject(
            err.code === 'EADDRINUSE'
              ? new Error(`Port ${port} on ${host} is already in use: stop what uses it or choose another with LAB_PORT=<port>.`)
              : err,
          );
        };
        httpServer.once('error', onError);
        httpServer.listen(port, host, () => {
          httpServer.off('error', onError);
          const addr = httpServer.address();
          resolve(typeof addr === 'object' && addr ? addr.port : port);
        });
      });
    },
    async close() {
      kept?.client.close();
      await o.capture?.close().catch(() => undefined);
      stream.close();
      recorder.close();
      await new Promise<void>((resolve) => {
        io.close(() => resolve());
      });
      httpServer.closeAllConnections();
      if (httpServer.listening) await new Promise<void>((resolve) => httpServer.close(() => resolve()));
    },
  };
}
