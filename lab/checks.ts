/**
 * Lesson checks: small functions over what the lab shows from outside (the probe client against
 * the proxy, the status), never driver internals. A lesson's front matter lists the ids of its
 * checks; each must fail on the lesson's starting topology and pass on the solved one.
 */
import net from 'node:net';
import { ProbeClient } from './probe-client.ts';
import type { LabStatus } from './status.ts';
import type { RequestCompleted } from './events.ts';
import { balancerOf, type ServiceName } from './topology.ts';

export interface CheckContext {
  /** The lab's proxy, e.g. http://127.0.0.1:8080 */
  proxyBase: string;
  status: LabStatus;
  /**
   * The event history: the proxy's recent `request:completed` events since the last reset, oldest
   * first (the server keeps the newest 300). Absent = no history known (checks that need it fail
   * with a sentence, never throw).
   */
  requests?: readonly RequestCompleted[];
}

export interface CheckResult {
  ok: boolean;
  /** One sentence: what passed, or what is still missing. */
  message: string;
}

export interface LessonCheck {
  id: string;
  /** What the learner must achieve, as the lesson would say it. */
  title: string;
  run(ctx: CheckContext): Promise<CheckResult>;
}

interface SessionAnswer {
  hostname: string;
  user: string | null;
}

/**
 * Logs in on session_php through the proxy with a browser-like client (cookie jar, a new
 * connection per request like reloads), then reloads 6 times: passes when every reload still
 * knows the user.
 */
const loginSurvivesReloads: LessonCheck = {
  id: 'login-survives-reloads',
  title: 'Log in once, and stay logged in over 6 reloads',
  async run({ proxyBase, status }) {
    if (!status.services.some((s) => s.name === 'session_php' && s.instances.length > 0)) {
      return { ok: false, message: 'session_php is not running: set up this lesson first.' };
    }
    const browser = new ProbeClient({ baseUrl: proxyBase, connection: 'new', cookies: true });
    try {
      const login = await browser.post('/session/login', { user: 'alice' }, { timeoutMs: 10_000 });
      if (login.status !== 200) return { ok: false, message: `Logging in answered ${login.status}.` };
      const answers: SessionAnswer[] = [];
      for (let i = 0; i < 6; i++) {
        const res = await browser.get('/session/', { timeoutMs: 10_000 });
        answers.push(res.status === 200 ? (JSON.parse(res.body) as SessionAnswer) : { hostname: `status ${res.status}`, user: null });
      }
      const lost = answers.filter((a) => a.user !== 'alice');
      if (lost.length === 0) {
        return { ok: true, message: `Logged in on all 6 reloads, every one answered by ${[...new Set(answers.map((a) => a.hostname))].join(', ')}.` };
      }
      const where = [...new Set(lost.map((a) => a.hostname))].join(', ');
      return { ok: false, message: `The login was lost on ${lost.length} of 6 reloads: ${where} did not know the session.` };
    } finally {
      browser.close();
    }
  },
};

/**
 * With a replica down, sends a short steady burst through the proxy (20 requests a second for
 * 2 s, a new connection each, like independent users) and passes when none failed.
 */
const requestsSurviveACrash: LessonCheck = {
  id: 'requests-survive-a-crash',
  title: 'With a replica crashed, no request fails',
  async run({ proxyBase, status }) {
    const down = status.services.flatMap((s) => s.instances).filter((r) => r.state === 'crashed' || r.healthy === false);
    if (down.length === 0) return { ok: false, message: 'No replica is down yet: crash one first.' };
    const service = down[0].service;
    const path = status.topology.routes.find((r) => r.service === service)?.pathPrefix ?? '/';
    const client = new ProbeClient({ baseUrl: proxyBase, connection: 'new' });
    const results: Array<{ status: number; servedBy: string | null }> = [];
    try {
      const started = Date.now();
      const sends: Promise<void>[] = [];
      // Random (Poisson) spacing, about 20 a second: at a fixed 50 ms the check would alternate in
      // lock-step with a steady 20/s load sharing the round-robin, and could land all 40 on the live
      // replica (a false pass) or all on the dead one.
      let due = started;
      for (let i = 0; i < 40; i++) {
        if (i > 0) due += Math.min(200, -50 * Math.log(1 - Math.random()));
        const wait = due - Date.now();
        // Pacing a steady load, not waiting for readiness.
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        sends.push(
          client.get(path, { timeoutMs: 3000 }).then(
            (r) => void results.push({ status: r.status, servedBy: r.servedBy }),
            () => void results.push({ status: 0, servedBy: null }),
          ),
        );
      }
      await Promise.all(sends);
    } finally {
      client.close();
    }
    const failed = results.filter((r) => r.status === 0 || r.status >= 500);
    if (failed.length === 0) return { ok: true, message: `All 40 requests succeeded while ${down.map((r) => r.hostname).join(', ')} was down.` };
    const statuses = [...new Set(failed.map((r) => (r.status === 0 ? 'no answer' : String(r.status))))].join(', ');
    return { ok: false, message: `${failed.length} of 40 requests failed (${statuses}) while ${down.map((r) => r.hostname).join(', ')} was down.` };
  },
};

/** Passes when the last rolling redeploy ran under traffic and no request failed meanwhile. */
const redeployLosesNothing: LessonCheck = {
  id: 'redeploy-loses-nothing',
  title: 'Redeploy every replica under load with no failed request',
  async run({ status }) {
    const last = status.lastRedeploy;
    if (!last) return { ok: false, message: 'No rolling redeploy has finished yet: start a load, then redeploy.' };
    if (last.requests < 5) return { ok: false, message: `Only ${last.requests} requests reached ${last.service} during the redeploy: run it under load.` };
    if (last.failed > 0) return { ok: false, message: `${last.failed} of ${last.requests} requests failed during the ${last.strategy} redeploy of ${last.service}.` };
    return { ok: true, message: `${last.requests} requests, none failed, during the ${last.strategy} redeploy of ${last.service}.` };
  },
};

/** The service a connection check exercises: the first with `vip` on, else web_dynamic, else the first routed one. */
function connectionService(status: LabStatus): { service: ServiceName; path: string } | null {
  const routed = status.topology.routes.filter((r) => status.services.some((s) => s.name === r.service && s.instances.length > 0));
  const pick =
    routed.find((r) => status.topology.services[r.service] && balancerOf(status.topology, r.service).vip) ??
    routed.find((r) => r.service === 'web_dynamic') ??
    routed[0];
  return pick ? { service: pick.service, path: pick.pathPrefix } : null;
}

/**
 * The VIP pitfall fixed: 3 keep-alive clients one after the other, 10 requests each over one
 * connection (like three API clients with their own HttpClient). Passes when the requests of every
 * client connection reach more than one replica (the proxy balances per request again); fails while
 * one replica serves them all, or while each client connection stays pinned to one replica.
 */
const vipSpread: LessonCheck = {
  id: 'vip-spread',
  title: '30 requests from 3 keep-alive clients spread over the replicas, not all on one',
  async run({ proxyBase, status }) {
    const target = connectionService(status);
    if (!target) return { ok: false, message: 'No routed service is running: set up this lesson first.' };
    const names = status.services.find((s) => s.name === target.service)?.instances.filter((r) => r.state === 'running').map((r) => r.hostname) ?? [];
    if (names.length < 2) return { ok: false, message: `${target.service} needs at least 2 running replicas to spread over.` };
    const perClient: string[][] = [];
    for (let c = 0; c < 3; c++) {
      const client = new ProbeClient({ baseUrl: proxyBase, connection: 'reuse' });
      const hosts: string[] = [];
      try {
        for (let i = 0; i < 10; i++) {
          const res = await client.get(target.path, { timeoutMs: 10_000 });
          hosts.push(res.status === 200 ? (res.servedBy ?? 'unknown') : `status ${res.status}`);
        }
      } finally {
        client.close();
      }
      perClient.push(hosts);
    }
    const all = perClient.flat();
    const byReplica = names.map((n) => all.filter((h) => h === n).length);
    const shown = `${byReplica.join('/')} over ${names.join(', ')}`;
    if (new Set(all).size === 1) return { ok: false, message: `One replica served all 30 requests (${shown}): the connection to the VIP pins them.` };
    // Balanced one by one, 10 requests over 2+ replicas put at most 5 on one; a connection pinned
    // after its first request (HAProxy's http-reuse safe behind a VIP: 1 + 9) puts 9 there.
    const mostOnOne = (h: string[]) => Math.max(...[...new Set(h)].map((x) => h.filter((y) => y === x).length));
    const pinned = perClient.filter((h) => mostOnOne(h) >= 8).length;
    if (pinned > 0) return { ok: false, message: `${pinned} of 3 client connections stayed (almost) on one replica (${shown}): requests are not balanced one by one.` };
    return { ok: true, message: `The 30 requests spread: ${shown}; every client connection reached several replicas.` };
  },
};

/**
 * Opens one keep-alive connection to the proxy, sends one request and stays silent: passes when the
 * proxy closes the connection (its FIN arrives) after the configured client idle timeout and not
 * before. The timeout must be short enough to wait for (at most 15 s: set timeouts.clientIdle).
 */
const idleCloseSeen: LessonCheck = {
  id: 'idle-close-seen',
  title: 'See the proxy close an idle client connection after its idle timeout',
  async run({ proxyBase, status }) {
    const idle = status.topology.proxy.clientIdle;
    if (idle > 15_000) {
      return { ok: false, message: `The proxy keeps an idle client connection open for ${idle / 1000} s: set timeouts.clientIdle to a few seconds (e.g. 2000) to watch it close.` };
    }
    const target = connectionService(status);
    const url = new URL(proxyBase);
    const socket = net.connect(Number(url.port), url.hostname);
    try {
      const result = await new Promise<{ silentMs: number } | { error: string }>((resolve) => {
        let last = 0;
        const deadline = setTimeout(() => resolve({ error: `the connection was still open ${Math.round((idle + 10_000) / 1000)} s later` }), idle + 10_000);
        socket.on('data', () => (last = Date.now()));
        socket.once('end', () => {
          clearTimeout(deadline);
          resolve(last === 0 ? { error: 'the proxy closed it before answering' } : { silentMs: Date.now() - last });
        });
        socket.once('error', (err) => {
          clearTimeout(deadline);
          resolve({ error: err.message });
        });
        socket.write(`GET ${target?.path ?? '/'} HTTP/1.1\r\nHost: ${url.host}\r\n\r\n`);
      });
      if ('error' in result) return { ok: false, message: `No idle close seen: ${result.error}.` };
      if (result.silentMs < idle - 100) {
        return { ok: false, message: `The connection closed after ${result.silentMs} ms of silence, before the ${idle} ms idle timeout.` };
      }
      return { ok: true, message: `The proxy closed the idle connection after ${result.silentMs} ms of silence (idle timeout ${idle} ms).` };
    } finally {
      socket.destroy();
    }
  },
};

/** The host name lesson 07 routes on (browsers resolve `*.localhost` to loopback). */
export const ROUTING_HOST = 'demo.localhost';

/** One request sent through the proxy with a chosen Host header, and what came back. */
export interface RoutedAnswer {
  status: number;
  /** The replica that answered (`X-Served-By`), or null when none did (the proxy answered itself). */
  servedBy: string | null;
  /** The request target the replica received (`X-Received-Path`, set by web_static and web_dynamic), or null. */
  receivedPath: string | null;
  /** The first 300 characters of the body. */
  body: string;
  /** Local port of the client connection (a new connection per request): how the proxy's event is matched. */
  localPort: number;
}

/**
 * Sends `GET <path>` to the proxy on a new connection with `Host: <host>:<proxy port>` (what a
 * browser sends for `http://<host>:<port><path>`).
 * @param proxyBase e.g. `http://127.0.0.1:8080`.
 * @param path a request target starting with `/` (validated by the caller).
 * @throws Error when the proxy cannot be reached or does not answer within `timeoutMs` (default 10 s).
 */
export async function sendRouted(proxyBase: string, host: string, path: string, timeoutMs = 10_000): Promise<RoutedAnswer> {
  const client = new ProbeClient({ baseUrl: proxyBase, connection: 'new' });
  try {
    const port = new URL(proxyBase).port;
    const res = await client.get(path, { headers: { Host: port ? `${host}:${port}` : host }, timeoutMs });
    const received = res.headers['x-received-path'];
    return {
      status: res.status,
      servedBy: res.servedBy,
      receivedPath: typeof received === 'string' ? received : null,
      body: res.body.slice(0, 300),
      localPort: res.localPort,
    };
  } finally {
    client.close();
  }
}

/** The service a replica belongs to, from the status (null: not a replica the lab knows). */
function serviceOfReplica(status: LabStatus, hostname: string | null): ServiceName | null {
  if (!hostname) return null;
  return status.services.find((s) => s.instances.some((r) => r.hostname === hostname))?.name ?? null;
}

/**
 * Lesson 07: web_static and web_dynamic behind the same host, as in the source write-up's
 * `Host:demo.res.ch;PathPrefixStrip:/api/jokes/`. On `Host: demo.localhost`, `GET /` must reach a
 * web_static replica (200) and `GET /api/` a web_dynamic replica (200) that received `/`: the
 * prefix stripped, since web_dynamic serves its API at `/`.
 */
const routingWorks: LessonCheck = {
  id: 'routing-works',
  title: `On ${ROUTING_HOST}, / reaches web_static and /api/ reaches web_dynamic with the prefix stripped`,
  async run({ proxyBase, status }) {
    for (const need of ['web_static', 'web_dynamic'] as const) {
      if (!status.services.some((s) => s.name === need && s.instances.some((r) => r.state === 'running'))) {
        return { ok: false, message: `${need} has no running replica: set up this lesson first.` };
      }
    }
    const root = await sendRouted(proxyBase, ROUTING_HOST, '/');
    const rootService = serviceOfReplica(status, root.servedBy);
    if (root.status !== 200 || rootService !== 'web_static') {
      const who = root.servedBy ? `${root.servedBy} (${rootService ?? 'unknown'})` : 'the proxy itself';
      return { ok: false, message: `GET / on ${ROUTING_HOST} was answered ${root.status} by ${who}; it should reach web_static.` };
    }
    const api = await sendRouted(proxyBase, ROUTING_HOST, '/api/');
    const apiService = serviceOfReplica(status, api.servedBy);
    if (apiService !== 'web_dynamic') {
      const who = api.servedBy ? `${api.servedBy} (${apiService ?? 'unknown'})` : 'the proxy itself';
      return { ok: false, message: `GET /api/ on ${ROUTING_HOST} was answered ${api.status} by ${who}; it should reach web_dynamic.` };
    }
    if (api.receivedPath !== '/' || api.status !== 200) {
      return {
        ok: false,
        message: `GET /api/ on ${ROUTING_HOST} reached ${api.servedBy}, which received ${api.receivedPath ?? 'an unknown path'} and answered ${api.status}; strip the /api/ prefix so it receives /.`,
      };
    }
    return {
      ok: true,
      message: `On ${ROUTING_HOST}, / reached ${root.servedBy} and /api/ reached ${api.servedBy} as / (200): both services behind one host.`,
    };
  },
};

/** Running replicas of a service, in the proxy's round-robin order. */
function runningReplicas(status: LabStatus, service: ServiceName) {
  return status.services.find((s) => s.name === service)?.instances.filter((r) => r.state === 'running') ?? [];
}

/**
 * Lesson 01, from the event history (sends nothing): the learner's own requests to web_dynamic.
 * Passes when the last 2×N answered requests (N = running replicas, at least 2) went round the
 * rotation twice: every running replica answered, and each answer came from the same replica as
 * the one N requests before it.
 */
const rotationSeen: LessonCheck = {
  id: 'rotation-seen',
  title: 'Send requests to web_dynamic and see them go round the replicas in turn',
  async run({ status, requests }) {
    const names = runningReplicas(status, 'web_dynamic').map((r) => r.hostname);
    if (names.length < 2) return { ok: false, message: `web_dynamic runs ${names.length} replica(s): it needs at least 2 to rotate over.` };
    if (!requests) return { ok: false, message: 'The lab sent no request history with this check.' };
    const want = 2 * names.length;
    const seen = answeredBy(requests, 'web_dynamic', names);
    if (seen.length < want) {
      return { ok: false, message: `${seen.length} of ${want} requests to web_dynamic so far: click Fetch web_dynamic ${want - seen.length} more time(s).` };
    }
    const last = seen.slice(-want);
    const missing = names.filter((n) => !last.includes(n));
    if (missing.length > 0) return { ok: false, message: `The last ${want} requests never reached ${missing.join(', ')}: they did not go round every replica.` };
    const broken = last.findIndex((h, i) => i >= names.length && h !== last[i - names.length]);
    if (broken >= 0) return { ok: false, message: `Request ${broken + 1} of the last ${want} broke the order: not a plain rotation (is an algorithm other than round-robin on?).` };
    return { ok: true, message: `Your last ${want} requests went round all ${names.length} replicas twice, in the same order: ${last.slice(0, names.length).join(' → ')}.` };
  },
};

/** The learner's answered requests to a service, oldest first, on replicas that still run. */
function answeredBy(requests: readonly RequestCompleted[], service: ServiceName, names: readonly string[]): string[] {
  return requests.filter((r) => r.service === service && r.status < 500 && r.hostname !== null && names.includes(r.hostname)).map((r) => r.hostname as string);
}

/**
 * Lesson 01, from the event history (sends nothing): web_dynamic scaled to 5 or more, and the
 * rotation grew with it. Passes when the last N requests to web_dynamic (N = running replicas,
 * at least 5) reached N different replicas.
 */
const rotationGrew: LessonCheck = {
  id: 'rotation-grew',
  title: 'Scale web_dynamic to 5 replicas and see every one of them answer',
  async run({ status, requests }) {
    const names = runningReplicas(status, 'web_dynamic').map((r) => r.hostname);
    if (names.length < 5) return { ok: false, message: `web_dynamic runs ${names.length} replica(s): scale it to 5.` };
    if (!requests) return { ok: false, message: 'The lab sent no request history with this check.' };
    const seen = answeredBy(requests, 'web_dynamic', names);
    const last = seen.slice(-names.length);
    const missing = names.filter((n) => !last.includes(n));
    if (missing.length > 0) {
      return { ok: false, message: `Your last ${last.length} requests to web_dynamic never reached ${missing.join(', ')}: click Fetch web_dynamic until all ${names.length} answered in a row.` };
    }
    return { ok: true, message: `Your last ${names.length} requests reached ${names.length} different replicas: the rotation grew to ${names.length}.` };
  },
};

/**
 * Lesson 01, from the event history (sends nothing): weighted round-robin. Needs web_dynamic
 * replicas with different weights; passes when, of the last 50 requests to web_dynamic, every
 * replica's share is within 8 percentage points of its weight's share (3:1:1 -> 60 %, 20 %, 20 %).
 */
const weightedShares: LessonCheck = {
  id: 'weighted-shares',
  title: 'Give one web_dynamic replica weight 3 and measure it take about 3 requests in 5',
  async run({ status, requests }) {
    const replicas = runningReplicas(status, 'web_dynamic');
    if (replicas.length < 2) return { ok: false, message: `web_dynamic runs ${replicas.length} replica(s): it needs at least 2 to weigh.` };
    const weights = replicas.map((r) => r.weight);
    if (new Set(weights).size === 1) return { ok: false, message: `Every web_dynamic replica has weight ${weights[0]}: give one of them weight 3.` };
    const total = weights.reduce((a, b) => a + b, 0);
    if (!requests) return { ok: false, message: 'The lab sent no request history with this check.' };
    const seen = answeredBy(requests, 'web_dynamic', replicas.map((r) => r.hostname));
    if (seen.length < 50) return { ok: false, message: `${seen.length} of 50 requests to web_dynamic so far: send a burst of 50.` };
    const last = seen.slice(-50);
    const rows = replicas.map((r) => {
      const got = last.filter((h) => h === r.hostname).length;
      return { name: r.hostname, weight: r.weight, got, off: Math.abs((got / 50) * 100 - (r.weight / total) * 100) };
    });
    const shown = rows.map((r) => `${r.name} (weight ${r.weight}): ${r.got}`).join(', ');
    const worst = rows.reduce((a, b) => (b.off > a.off ? b : a));
    const algorithm = balancerOf(status.topology, 'web_dynamic').algorithm;
    if (worst.off > 8) {
      const why = algorithm !== 'round-robin' ? ` ${algorithm} does not follow weights: choose weighted round-robin and send them again.` : ' Send 50 more now that the weights are set.';
      return { ok: false, message: `Of your last 50 requests ${shown}: ${worst.name} is ${Math.round(worst.off)} points off its weight's share.${why}` };
    }
    return { ok: true, message: `Of your last 50 requests ${shown}: the shares follow the weights ${weights.join(':')}.` };
  },
};

/** Every check, by id. */
export const CHECKS: ReadonlyMap<string, LessonCheck> = new Map(
  [rotationSeen, rotationGrew, weightedShares, loginSurvivesReloads, requestsSurviveACrash, redeployLosesNothing, vipSpread, idleCloseSeen, routingWorks].map((c) => [c.id, c]),
);
