// session_express: the stand-in for session_php when PHP is not installed (process mode only).
// Plain ESM JavaScript like the other backends. Same API, same cookie (PHPSESSID), same
// behaviour as sandbox-images/session_php/router.php, so the sticky-session lesson works
// unchanged; the `X-Session-Backend` header says which one answered.
//
//   GET  /        -> 200 { hostname, user, sessionId, knownSession, visits }
//   POST /login   -> body JSON {"user": "bob"} or form user=bob (default "alice"; 1-32 letters or
//                    digits, else 400): logs in with a new session id, answers like GET /
//   POST /logout  -> destroys the session and expires the cookie, answers like GET /
//   GET  /health  -> 200 { status: "ok" }
//   every response: `X-Served-By: <hostname>`, `X-Session-Backend: <SESSION_BACKEND>`, no caching
//
// Sessions live in this process's memory only (a Map): no shared store, on purpose. As PHP
// does with session.use_strict_mode=0, a well-formed session id this replica does not know is
// adopted as a new, empty session (knownSession: false), and the cookie is left alone.
//
// Environment (same conventions as web_dynamic):
//   PORT, HOST, LAB_HOSTNAME, KEEPALIVE_TIMEOUT_MS
//   SESSION_BACKEND   value of X-Session-Backend (default "express (php not found)")
//
// Faults (lab/seams.ts Fault), as the other Node backends, through ../shared/faults.js: the Node
// IPC channel in process mode, LAB_FAULT_FILE (a JSON file on a volume) otherwise; each change
// logs `<hostname> fault: <mode>[ <ms> ms]`. unhealthy fails only GET /health (503); errors
// answers 500 everywhere but /health. router.php does the same from LAB_FAULT_FILE.
//
// Startup is ../shared/serve.js's, as for the other Node backends: the environment above (a bad
// PORT or KEEPALIVE_TIMEOUT_MS: exit 2; a port that cannot be bound: exit 1), the connection
// report (LAB_CONN_EVENTS=1), and SIGTERM/SIGINT: graceful shutdown, requests held by `hang`
// dropped, exit 0. (The image needs ../shared/: its Dockerfile builds from sandbox-images/ as the
// context.)
//
// Once listening it prints exactly one line `listening on http://<host>:<port>` on stdout;
// access log lines follow (`<hostname> <ip> <method> <path> <status> <bytes> - <ms> ms`,
// ../shared/access-log.js).
import crypto from 'node:crypto';
import process from 'node:process';
import express from 'express';
import morgan from 'morgan';
import { accessLogFormat } from '../shared/access-log.js';
import { Faults } from '../shared/faults.js';
import { isEntryPoint, serve } from '../shared/serve.js';

export const COOKIE_NAME = 'PHPSESSID';
export const DEFAULT_USER = 'alice';
const USER_PATTERN = /^[A-Za-z0-9]{1,32}$/;
/** Session ids PHP accepts: letters, digits, "-" and ",", 22-256 characters. */
const SESSION_ID_PATTERN = /^[A-Za-z0-9,-]{22,256}$/;
/** PHP 8's default session ids: 26 characters of 5 bits each. */
const ID_ALPHABET = '0123456789abcdefghijklmnopqrstuv';
const MAX_BODY = '16kb';
/** Most sessions one replica keeps; the oldest goes first (a flood of made-up cookies cannot exhaust memory). */
const MAX_SESSIONS = 10_000;
const COOKIE_ATTRIBUTES = 'path=/; HttpOnly; SameSite=Lax';

/** A new session id shaped like PHP's (26 characters from [0-9a-v]). */
export function newSessionId() {
  const bytes = crypto.randomBytes(26);
  let id = '';
  for (const b of bytes) id += ID_ALPHABET[b & 31];
  return id;
}

/**
 * The value of one cookie in a Cookie header (the first one of that name), or null.
 * @param {string | undefined} header
 * @param {string} name
 * @returns {string | null}
 */
function readCookie(header, name) {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() !== name) continue;
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    try {
      return decodeURIComponent(value);
    } catch {
      return value;
    }
  }
  return null;
}

/**
 * Builds the app. Exported so tests can mount it without a process.
 * @param {{ hostname: string, backend?: string, log?: boolean, faults?: Faults }} options
 *   hostname: reported in the body and `X-Served-By`; backend: the `X-Session-Backend` value;
 *   log: write an access log line per request to stdout (default true);
 *   faults: the replica's fault state (default: a healthy one of its own).
 * @returns {import('express').Express}
 */
export function createApp({ hostname, backend = 'express (php not found)', log = true, faults = new Faults({ hostname }) }) {
  for (const [name, value] of [['hostname', hostname], ['backend', backend]]) {
    if (!/^[\x21-\x7e][\x20-\x7e]*$/.test(value)) {
      throw new Error(`${name} must be printable ASCII (it is sent in a header), got ${JSON.stringify(value)}`);
    }
  }
  /** @type {Map<string, { user: string | null, visits: number }>} */
  const sessions = new Map();

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Exact paths, as the PHP router matches them (`/Login` and `/login/` are 404 there too).
  app.set('strict routing', true);
  app.set('case sensitive routing', true);

  app.use((_req, res, next) => {
    res.setHeader('X-Served-By', hostname);
    res.setHeader('X-Session-Backend', backend);
    res.setHeader('Cache-Control', 'no-store');
    next();
  });

  if (log) {
    app.use(morgan(accessLogFormat(hostname)));
  }

  /**
   * The request's session cookie, looked at before anything changes.
   * @param {import('express').Request} req
   */
  const cookieOf = (req) => {
    const id = readCookie(req.headers.cookie, COOKIE_NAME);
    const valid = id !== null && SESSION_ID_PATTERN.test(id);
    return { id, valid, known: valid && sessions.has(id) };
  };

  /** Opens (or adopts) the session `id`, keeping the map bounded. */
  const open = (/** @type {string} */ id) => {
    let session = sessions.get(id);
    if (!session) {
      session = { user: null, visits: 0 };
      sessions.set(id, session);
      while (sessions.size > MAX_SESSIONS) sessions.delete(sessions.keys().next().value ?? '');
    }
    return session;
  };

  /**
   * @param {{ user: string | null, visits: number } | null} session
   * @param {string | null} id
   * @param {boolean} knownSession
   */
  const view = (session, id, knownSession) => ({
    hostname,
    user: session?.user ?? null,
    sessionId: session ? id : null,
    knownSession,
    visits: session?.visits ?? 0,
  });

  const methodNotAllowed = (/** @type {string} */ allow) => (/** @type {import('express').Request} */ req, /** @type {import('express').Response} */ res) => {
    res.setHeader('Allow', allow);
    res.status(405).json({ error: `${req.path} answers ${allow} only`, hostname });
  };

  // After the headers and the access log, before the routes: a faulty answer is logged and named.
  app.use(faults.middleware());

  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.all('/health', methodNotAllowed('GET, HEAD'));

  app.get('/', (req, res) => {
    const cookie = cookieOf(req);
    // A visitor without a session cookie gets no session (and no cookie) until they log in.
    if (!cookie.valid || cookie.id === null) {
      res.json(view(null, null, false));
      return;
    }
    const session = open(cookie.id);
    session.visits += 1;
    res.json(view(session, cookie.id, cookie.known));
  });
  app.all('/', methodNotAllowed('GET, HEAD'));

  const bodies = [
    express.json({ limit: MAX_BODY, strict: false, type: 'application/json' }),
    express.urlencoded({ limit: MAX_BODY, extended: false, type: 'application/x-www-form-urlencoded' }),
  ];

  app.post('/login', ...bodies, (req, res) => {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    const length = Number(req.headers['content-length'] ?? 0);
    /** @type {unknown} */
    let user;
    if (type === 'application/json') {
      const body = req.body;
      if (body !== undefined && (body === null || typeof body !== 'object' || Array.isArray(body))) {
        res.status(400).json({ error: 'the body must be a JSON object such as {"user":"alice"}', hostname });
        return;
      }
      user = body?.user;
    } else if (type === 'application/x-www-form-urlencoded') {
      user = req.body?.user;
    } else if (length > 0 || req.headers['transfer-encoding']) {
      res.status(415).json({ error: 'send the user as JSON ({"user":"alice"}) or as a form field user=alice', hostname });
      return;
    }
    user ??= DEFAULT_USER;
    if (typeof user !== 'string' || !USER_PATTERN.test(user)) {
      res.status(400).json({ error: 'user must be 1-32 letters or digits', hostname });
      return;
    }
    const cookie = cookieOf(req);
    // As session_regenerate_id(true): the session moves to a new id, the old id is forgotten.
    const previous = cookie.valid && cookie.id !== null ? open(cookie.id) : { user: null, visits: 0 };
    if (cookie.valid && cookie.id !== null) sessions.delete(cookie.id);
    const id = newSessionId();
    const session = { user, visits: previous.visits + 1 };
    sessions.set(id, session);
    res.setHeader('Set-Cookie', `${COOKIE_NAME}=${id}; ${COOKIE_ATTRIBUTES}`);
    res.json(view(session, id, cookie.known));
  });
  app.all('/login', methodNotAllowed('POST'));

  app.post('/logout', (req, res) => {
    const cookie = cookieOf(req);
    if (cookie.valid && cookie.id !== null) sessions.delete(cookie.id);
    if (cookie.id !== null) {
      // What PHP's setcookie(name, '', expires in the past) sends.
      res.setHeader('Set-Cookie', `${COOKIE_NAME}=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; ${COOKIE_ATTRIBUTES}`);
    }
    res.json(view(null, null, cookie.known));
  });
  app.all('/logout', methodNotAllowed('POST'));

  app.use((req, res) => {
    res.status(404).json({ error: `no route for ${req.method} ${req.path}`, hostname });
  });

  // Body errors (bad JSON, too large) as JSON with their status, like the PHP app.
  app.use(
    /**
     * @param {Error & { status?: number, type?: string }} err
     * @param {import('express').Request} _req
     * @param {import('express').Response} res
     * @param {import('express').NextFunction} _next
     */
    (err, _req, res, _next) => {
      const status = err.status && err.status >= 400 && err.status < 500 ? err.status : 500;
      const error =
        err.type === 'entity.parse.failed'
          ? `the body is not valid JSON: ${err.message}`
          : err.type === 'entity.too.large'
            ? 'the body must be at most 16384 bytes'
            : err.message;
      res.status(status).json({ error, hostname });
    },
  );

  return app;
}

/** Starts the server from the environment (../shared/serve.js); see the header comment. */
function main() {
  const backend = process.env.SESSION_BACKEND || undefined;
  serve({ createApp: ({ hostname, faults }) => createApp({ hostname, backend, faults }) });
}

// Run only as the entry point (`node server.js`), not when a test imports createApp.
if (isEntryPoint(import.meta.url)) {
  main();
}
