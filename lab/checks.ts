/**
 * Lesson checks: small functions over what the lab shows from outside (the probe client against
 * the proxy, the status), never driver internals. A lesson's front matter lists the ids of its
 * checks; each must fail on the lesson's starting topology and pass on the solved one.
 */
import { ProbeClient } from './probe-client.ts';
import type { LabStatus } from './status.ts';

export interface CheckContext {
  /** The lab's proxy, e.g. http://127.0.0.1:8080 */
  proxyBase: string;
  status: LabStatus;
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
      for (let i = 0; i < 40; i++) {
        const wait = started + i * 50 - Date.now();
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

/** Every check, by id. */
export const CHECKS: ReadonlyMap<string, LessonCheck> = new Map(
  [loginSurvivesReloads, requestsSurviveACrash, redeployLosesNothing].map((c) => [c.id, c]),
);
