// web_static: a page that shows, big and clear, which replica served it.
// Plain ESM JavaScript (no build step) so it runs as-is in a stock `node` image.
//
//   GET /  (and /index.html) -> the page, with the replica's hostname injected (HTML-escaped)
//   GET /app.js, /style.css  -> the same files the page inlines (handy to read; the page itself
//                               needs no second request, so each reload is one request)
//   GET /health              -> 200 { status: "ok" }
//   every response carries `X-Served-By: <hostname>` and `X-Received-Path: <path?query as received>`
//
// Environment (same conventions as web_dynamic):
//   PORT                  port to listen on (default 3000; 0 = any free port)
//   HOST                  address to bind (default 0.0.0.0; the lab passes 127.0.0.1)
//   LAB_HOSTNAME          the replica's name (default: os.hostname())
//   KEEPALIVE_TIMEOUT_MS  how long an idle keep-alive connection stays open (default 5000)
//
// Faults (lab/seams.ts Fault: healthy, unhealthy, slow, errors, hang), through a side channel the
// proxy never routes, implemented in ../shared/faults.js: in process mode the Node IPC channel
// the lab's ProcessRuntime opens (`{type:'lab:set-fault'}` -> applied -> acknowledged); in
// Docker mode LAB_FAULT_FILE, a JSON file on a volume the lab writes (`{"mode":"slow","ms":500}`),
// watched every 100 ms. Each change logs `<hostname> fault: <mode>[ <ms> ms]` on stdout.
// unhealthy fails only GET /health (503); errors answers 500 everywhere but /health.
//
// Startup is ../shared/serve.js's, as for the other Node backends: the environment above (a bad
// PORT or KEEPALIVE_TIMEOUT_MS: exit 2; a port that cannot be bound: exit 1), the connection
// report (LAB_CONN_EVENTS=1, ../shared/conn-events.js), and SIGTERM/SIGINT: graceful shutdown,
// requests held by `hang` dropped, exit 0. (The image needs ../shared/: its Dockerfile builds
// from sandbox-images/ as the context.)
//
// Once listening it prints exactly one line `listening on http://<host>:<port>` (the real port)
// on stdout; the lab's process runtime waits for that line. Access log lines follow on stdout
// (their format: ../shared/access-log.js).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express';
import morgan from 'morgan';
import { accessLogFormat } from '../shared/access-log.js';
import { Faults } from '../shared/faults.js';
import { isEntryPoint, serve } from '../shared/serve.js';

const PUBLIC_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'public');

/**
 * Escapes text for HTML element content and quoted attribute values.
 * @param {string} text
 * @returns {string}
 */
export function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * A hue (0-359) derived from the hostname, so different replicas get different colours.
 * FNV-1a over the UTF-16 code units; public/app.js computes the same for web_dynamic answers.
 * @param {string} text
 * @returns {number}
 */
export function hueOf(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % 360;
}

/**
 * Renders the page template for one replica.
 * @param {string} template HTML with `{{HOSTNAME}}`, `{{HUE}}`, `{{STYLE}}` and `{{SCRIPT}}` placeholders
 * @param {string} hostname raw hostname (escaped here)
 * @param {{ style?: string, script?: string }} [assets] CSS and JS to inline (trusted, from public/)
 * @returns {string}
 */
export function renderPage(template, hostname, assets = {}) {
  /** @type {Record<string, string>} */
  const values = {
    HOSTNAME: escapeHtml(hostname),
    HUE: String(hueOf(hostname)),
    STYLE: (assets.style ?? '').replaceAll('</style', '<\\/style'),
    SCRIPT: (assets.script ?? '').replaceAll('</script', '<\\/script'),
  };
  // One pass with a function replacer: no `$&`-style patterns, and no placeholder inside an
  // inserted value is ever expanded.
  return template.replace(/\{\{(HOSTNAME|HUE|STYLE|SCRIPT)\}\}/g, (_m, key) => values[key]);
}

/**
 * Builds the app. Exported so tests can mount it without a process.
 * @param {{ hostname: string, log?: boolean, faults?: Faults }} options
 *   hostname: shown on the page and sent as `X-Served-By`;
 *   log: write a morgan access log line per request to stdout (default true);
 *   faults: the replica's fault state (default: a healthy one of its own).
 * @returns {import('express').Express}
 */
export function createApp({ hostname, log = true, faults = new Faults({ hostname }) }) {
  const read = (/** @type {string} */ name) => fs.readFileSync(path.join(PUBLIC_DIR, name), 'utf8');
  const page = renderPage(read('index.html'), hostname, { style: read('style.css'), script: read('app.js') });
  if (!/^[\x21-\x7e][\x20-\x7e]*$/.test(hostname)) {
    // It goes into an HTTP header: printable ASCII only.
    throw new Error(`hostname must be printable ASCII (it is sent as X-Served-By), got ${JSON.stringify(hostname)}`);
  }
  const app = express();
  app.disable('x-powered-by');

  app.use((req, res, next) => {
    res.setHeader('X-Served-By', hostname);
    // The request target as this replica received it (after the proxy's StripPrefix): the routing
    // lesson shows it. Anything but printable ASCII is percent-encoded so the header stays valid.
    res.setHeader('X-Received-Path', req.originalUrl.replace(/[^\x21-\x7e]/g, (c) => encodeURIComponent(c)));
    next();
  });

  if (log) {
    // e.g. `web_static-1 127.0.0.1 GET / 200 1234 - 0.912 ms`
    app.use(morgan(accessLogFormat(hostname)));
  }

  // After X-Served-By and the access log, before the routes: a faulty answer is logged and named.
  app.use(faults.middleware());

  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });

  /**
   * @param {import('express').Request} _req
   * @param {import('express').Response} res
   */
  const sendPage = (_req, res) => {
    // Never cached: each load must reach the proxy so the learner sees the rotation.
    res.setHeader('Cache-Control', 'no-store');
    res.type('html').send(page);
  };
  app.get('/', sendPage);
  app.get('/index.html', sendPage);

  app.use(express.static(PUBLIC_DIR, { index: false, maxAge: 0 }));

  app.use((req, res) => {
    res.status(404).type('text').send(`404: no ${req.path} on ${hostname}\n`);
  });

  return app;
}

/** Starts the server from the environment (../shared/serve.js); see the header comment. */
function main() {
  serve({ createApp: ({ hostname, faults }) => createApp({ hostname, faults }) });
}

// Run only as the entry point (`node server.js`), not when a test imports createApp.
if (isEntryPoint(import.meta.url)) {
  main();
}
