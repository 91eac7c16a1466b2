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

/** Every check, by id. */
export const CHECKS: ReadonlyMap<string, LessonCheck> = new Map([loginSurvivesReloads].map((c) => [c.id, c]));
