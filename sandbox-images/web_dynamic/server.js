// web_dynamic: a tiny JSON API that says which replica answered.
// Plain ESM JavaScript (no build step) so it runs as-is in a stock `node` image.
//
//   GET /        -> 200 { hostname, instanceId, joke, at }
//   GET /health  -> 200 { status: "ok" }
//   WS  /ws/echo -> a WebSocket (the `ws` package): on open it sends { hostname, instanceId },
//                   then answers each message with { hostname, echo } (the message's text)
//   every response carries `X-Served-By: <hostname>` and `X-Received-Path: <path?query as received>`
//
// Environment:
//   PORT                  port to listen on (default 3000; 0 = any free port)
//   HOST                  address to bind (default 0.0.0.0; the lab passes 127.0.0.1)
//   LAB_HOSTNAME          the replica's name (default: os.hostname(), a container's id in Docker)
//   KEEPALIVE_TIMEOUT_MS  how long an idle keep-alive connection stays open (default 5000)
//   LAB_CONN_EVENTS       1 = a stdout line per accepted/closed connection (../shared/conn-events.js)
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
// report, and SIGTERM/SIGINT: graceful shutdown, requests held by `hang` dropped, exit 0. (The
// image needs ../shared/: its Dockerfile builds from sandbox-images/ as the context.)
//
// Once listening it prints exactly one line `listening on http://<host>:<port>` (the real port)
// on stdout; the lab's process runtime waits for that line. Access log lines follow on stdout
// (their format: ../shared/access-log.js).
import crypto from 'node:crypto';
import express from 'express';
import morgan from 'morgan';
import { accessLogFormat } from '../shared/access-log.js';
import { Faults } from '../shared/faults.js';
import { isEntryPoint, serve } from '../shared/serve.js';
import { WebSocketServer } from 'ws';

/** Programming jokes; one is picked per request. */
export const JOKES = [
  'There are 10 kinds of people: those who understand binary and those who do not.',
  'A SQL query walks into a bar, walks up to two tables and asks: "Can I join you?"',
  'Why do programmers prefer dark mode? Because light attracts bugs.',
  'It works on my machine. Then we will ship your machine.',
  'There are two hard things in computer science: cache invalidation, naming things, and off-by-one errors.',
  'A load balancer walks into a bar. And a bar. And a bar.',
  '!false: it is funny because it is true.',
  'I would tell you a UDP joke, but you might not get it.',
  'Knock knock. Race condition. Who is there?',
  'To understand recursion, you must first understand recursion.',
];

/**
 * Builds the app. Exported so tests can mount it without a process.
 * @param {{ hostname: string, instanceId?: string, log?: boolean, faults?: Faults }} options
 *   hostname: reported in the body and `X-Served-By`; instanceId: a uuid for this process
 *   (new per start); log: write a morgan access log line per request to stdout (default true);
 *   faults: the replica's fault state (default: a healthy one of its own).
 * @returns {import('express').Express}
 */
export function createApp({ hostname, instanceId = crypto.randomUUID(), log = true, faults = new Faults({ hostname }) }) {
  if (!/^[\x21-\x7e][\x20-\x7e]*$/.test(hostname)) {
    // It goes into an HTTP header: printable ASCII only.
    throw new Error(`hostname must be printable ASCII (it is sent as X-Served-By), got ${JSON.stringify(hostname)}`);
  }
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.use((req, res, next) => {
    res.setHeader('X-Served-By', hostname);
    // The request target as this replica received it (after the proxy's StripPrefix): the routing
    // lesson shows it. Anything but printable ASCII is percent-encoded so the header stays valid.
    res.setHeader('X-Received-Path', req.originalUrl.replace(/[^\x21-\x7e]/g, (c) => encodeURIComponent(c)));
    next();
  });

  if (log) {
    // e.g. `web_dynamic-1 127.0.0.1 GET / 200 123 - 0.912 ms`
    app.use(morgan(accessLogFormat(hostname)));
  }

  // After X-Served-By and the access log, before the routes: a faulty answer is logged and named.
  app.use(faults.middleware());

  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/', (_req, res) => {
    res.setHeader('Cache-Control', 'no-store');
    res.json({
      hostname,
      instanceId,
      joke: JOKES[Math.floor(Math.random() * JOKES.length)],
      /** ISO 8601 time the answer was made. */
      at: new Date().toISOString(),
    });
  });

  app.use((req, res) => {
    res.status(404).json({ error: `no route for ${req.method} ${req.path}`, hostname });
  });

  return app;
}

/**
 * Serves the WebSocket echo at `/ws/echo` on `server` (its 'upgrade' event); other upgrade paths
 * get a 404 and a closed socket. On open the client gets `{"hostname","instanceId"}`, then each
 * message comes back as `{"hostname","echo"}`. Exported so tests can attach it to any server.
 * @param {import('node:http').Server} server
 * @param {{ hostname: string, instanceId: string }} who
 * @returns {import('ws').WebSocketServer}
 */
export function attachWebSocketEcho(server, { hostname, instanceId }) {
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/ws/echo') {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(JSON.stringify({ hostname, instanceId }));
      ws.on('message', (data) => ws.send(JSON.stringify({ hostname, echo: data.toString() })));
    });
  });
  return wss;
}

/** Starts the server from the environment (../shared/serve.js); see the header comment. */
function main() {
  const instanceId = crypto.randomUUID();
  let who = { hostname: '', instanceId };
  /** @type {import('ws').WebSocketServer | undefined} */
  let wss;
  serve({
    createApp: ({ hostname, faults }) => {
      who = { hostname, instanceId };
      return createApp({ hostname, instanceId, faults });
    },
    configure: (server) => {
      wss = attachWebSocketEcho(server, who);
    },
    // server.close() waits for every connection, the upgraded ones too: close the WebSockets (1001).
    onShutdown: () => {
      for (const ws of wss?.clients ?? []) ws.close(1001, 'server shutting down');
    },
  });
}

// Run only as the entry point (`node server.js`), not when a test imports createApp.
if (isEntryPoint(import.meta.url)) {
  main();
}
