// spring_app: a Spring-Boot-like service, as in the classic "two Spring Boot nodes behind a
// reverse proxy" set-up: a static page under /app/, a REST endpoint, an Actuator-style health
// endpoint, Spring's banner and startup log, Tomcat's access log. It is NOT Java: Express 5 in
// plain ESM JavaScript that looks and answers like one (so the lab needs no JVM).
//
//   GET /, /index.html           -> a redirect page to app/index.html (meta refresh), as in the seed
//   GET /app/index.html          -> a small HTML page naming the replica (hostname, instance id)
//   GET /app/helloParams?name=x  -> 200 { message: "Hello x", hostname, instanceId } (name defaults
//                                   to "World"; repeated name=a&name=b reads "a,b" as Spring binds a
//                                   String; more than 200 characters -> 400)
//   GET /app/health              -> 200 {"status":"UP"} (Spring Boot Actuator style), 503
//   GET /actuator/health             {"status":"DOWN"} while the fault is `unhealthy`
//   GET /health                  -> the same, for the lab's readiness check
//   anything else                -> Spring's JSON error body {timestamp, status, error, path}
//                                   (404, or 405 for another method on a known path)
//   every response carries `X-Served-By: <hostname>`
//
// Environment (the lab's conventions, as web_dynamic):
//   PORT                  server.port (default 8080; 0 = any free port)
//   HOST                  address to bind (default 0.0.0.0; the lab passes 127.0.0.1)
//   LAB_HOSTNAME          the replica's name (default: os.hostname())
//   KEEPALIVE_TIMEOUT_MS  how long an idle keep-alive connection stays open, Tomcat's
//                         keepAliveTimeout (default 60000: Tomcat's keepAliveTimeout defaults to
//                         its connectionTimeout, whose default is 60000 ms; Spring Boot's embedded
//                         Tomcat keeps it. The server.xml of a standalone Tomcat sets 20000.)
//
// Logs on stdout: the Spring banner, Spring Boot's startup lines in its default console format
// (`2026-05-11 23:54:41.123  INFO 10944 --- [           main] c.e.demo.DemoApplication : ...`:
// `Starting DemoApplication ... on <hostname> with PID <pid>`, `Tomcat initialized with port(s):
// <port> (http)`, `Started DemoApplication in 0.123 seconds (JVM running for 0.456)`, real
// figures of this process), then exactly one line `listening on http://<host>:<port>` (the lab's
// readiness line), then one Tomcat access log line per request (pattern `%h %l %u %t "%r" %s %b
// %D`, as server.tomcat.accesslog with its `common` pattern plus the time taken in ms):
//   127.0.0.1 - - [11/May/2026:23:54:42 +0200] "GET /app/helloParams?name=x HTTP/1.1" 200 87 2
// SIGTERM: graceful shutdown as Spring Boot's server.shutdown=graceful (requests in flight finish,
// idle keep-alive connections close, `Graceful shutdown complete`), then exit 0.
//
// Faults (lab/seams.ts Fault), through ../shared/faults.js like the other Node backends: the Node
// IPC channel in process mode, LAB_FAULT_FILE (a JSON file on a volume) in Docker mode; each
// change logs a WARN line ending `<hostname> fault: <mode>[ <ms> ms]`. unhealthy fails the three
// health paths (503 {"status":"DOWN"}); errors answers Spring's 500 error body everywhere else.
//
// The startup itself (environment, listen, the `listening on` line, keep-alive timeout, connection
// report with LAB_CONN_EVENTS=1, faults channel, SIGTERM/SIGINT) is ../shared/serve.js's, shared
// with the other Node backends; this file adds the Spring lines around it through its hooks.
// (The image needs ../shared/: its Dockerfile builds from sandbox-images/ as the context.)
import crypto from 'node:crypto';
import os from 'node:os';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { Faults } from '../shared/faults.js';
import { isEntryPoint, serve } from '../shared/serve.js';

export const SPRING_BOOT_VERSION = '2.7.18';
export const TOMCAT_VERSION = '9.0.83';
export const APP_NAME = 'DemoApplication';
export const APP_VERSION = '0.0.1-SNAPSHOT';
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 60_000;
export const HEALTH_PATHS = Object.freeze(['/health', '/app/health', '/actuator/health']);
const MAX_NAME = 200;
/** Tomcat's default minSpareThreads: request threads are named http-nio-<port>-exec-1..10. */
const EXEC_THREADS = 10;

/** Spring Boot's banner, as it prints it. */
export const BANNER = [
  '',
  '  .   ____          _            __ _ _',
  " /\\\\ / ___'_ __ _ _(_)_ __  __ _ \\ \\ \\ \\",
  "( ( )\\___ | '_ | '_| | '_ \\/ _` | \\ \\ \\ \\",
  " \\\\/  ___)| |_)| | | | | || (_| |  ) ) ) )",
  "  '  |____| .__|_| |_|_| |_\\__, | / / / /",
  ' =========|_|==============|___/=/_/_/_/',
  ` :: Spring Boot ::               (v${SPRING_BOOT_VERSION})`,
  '',
];

const pad2 = (/** @type {number} */ n) => String(n).padStart(2, '0');
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** `+0200`: the local offset as Tomcat and Logback print it. */
function offset(/** @type {Date} */ d) {
  const minutes = -d.getTimezoneOffset();
  const sign = minutes >= 0 ? '+' : '-';
  const abs = Math.abs(minutes);
  return `${sign}${pad2(Math.floor(abs / 60))}${pad2(abs % 60)}`;
}

/**
 * One line in Spring Boot 2's default console format:
 * `%d{yyyy-MM-dd HH:mm:ss.SSS} %5p ${PID} --- [%15.15t] %-40.40logger{39} : %m`.
 * @param {{ level?: 'INFO' | 'WARN' | 'ERROR', thread?: string, logger: string, message: string, at?: Date, pid?: number }} entry
 * @returns {string}
 */
export function springLine({ level = 'INFO', thread = 'main', logger, message, at = new Date(), pid = process.pid }) {
  const date =
    `${at.getFullYear()}-${pad2(at.getMonth() + 1)}-${pad2(at.getDate())} ` +
    `${pad2(at.getHours())}:${pad2(at.getMinutes())}:${pad2(at.getSeconds())}.${String(at.getMilliseconds()).padStart(3, '0')}`;
  const t = thread.length > 15 ? thread.slice(-15) : thread.padStart(15);
  const l = logger.length > 40 ? logger.slice(-40) : logger.padEnd(40);
  return `${date} ${level.padStart(5)} ${pid} --- [${t}] ${l} : ${message}`;
}

/**
 * One Tomcat access log line, pattern `%h %l %u %t "%r" %s %b %D` (%D: ms, as Tomcat 9).
 * @param {{ remote: string, method: string, url: string, httpVersion: string, status: number, bytes: number | null, ms: number, at?: Date }} entry
 * @returns {string}
 */
export function accessLine({ remote, method, url, httpVersion, status, bytes, ms, at = new Date() }) {
  const t =
    `[${pad2(at.getDate())}/${MONTHS[at.getMonth()]}/${at.getFullYear()}:` +
    `${pad2(at.getHours())}:${pad2(at.getMinutes())}:${pad2(at.getSeconds())} ${offset(at)}]`;
  const request = `${method} ${url} HTTP/${httpVersion}`.replace(/[^\x20-\x7e]/g, '?').replace(/"/g, '\\"');
  return `${remote} - - ${t} "${request}" ${status} ${bytes ? bytes : '-'} ${Math.round(ms)}`;
}

/**
 * Escapes text for HTML element content and quoted attribute values.
 * @param {string} text
 */
function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * Spring's default error body (BasicErrorController), e.g. for a 404.
 * @param {number} status
 * @param {string} error reason phrase
 * @param {string} path
 */
export function springError(status, error, path) {
  // Spring Boot prints the timestamp as ISO 8601 with a numeric offset.
  return { timestamp: new Date().toISOString().replace('Z', '+00:00'), status, error, path };
}

/**
 * The Faults of a spring_app replica: its three health paths, Actuator's DOWN, Spring's 500 body,
 * and the `fault:` line as a Spring WARN line.
 * @param {{ hostname: string, log?: (line: string) => void }} options
 */
export function springFaults({ hostname, log = (line) => process.stdout.write(`${line}\n`) }) {
  return new Faults({
    hostname,
    healthPaths: [...HEALTH_PATHS],
    unhealthy: (_req, res) => {
      res.statusCode = 503;
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ status: 'DOWN' }));
    },
    errors: (req, res) => {
      res.statusCode = 500;
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify(springError(500, 'Internal Server Error', req.path ?? req.url ?? '/')));
    },
    log: (line) => log(springLine({ level: 'WARN', thread: 'lab-control', logger: 'c.e.demo.LabFaultInjector', message: line })),
  });
}

/**
 * Builds the app. Exported so tests can mount it without a process.
 * @param {{ hostname: string, instanceId?: string, log?: ((line: string) => void) | false, faults?: Faults, port?: () => number }} options
 *   hostname: in the page, the JSON and `X-Served-By`; instanceId: a uuid for this process;
 *   log: where access log and request-thread lines go (default stdout; false = none);
 *   faults: the replica's fault state (default: a healthy one of its own);
 *   port: the listening port, for the thread names (http-nio-<port>-exec-N).
 * @returns {import('express').Express}
 */
export function createApp({ hostname, instanceId = crypto.randomUUID(), log = (line) => process.stdout.write(`${line}\n`), faults, port = () => 8080 }) {
  if (!/^[\x21-\x7e][\x20-\x7e]*$/.test(hostname)) {
    // It goes into an HTTP header: printable ASCII only.
    throw new Error(`hostname must be printable ASCII (it is sent as X-Served-By), got ${JSON.stringify(hostname)}`);
  }
  const emit = log === false ? () => {} : log;
  const replicaFaults = faults ?? springFaults({ hostname, log: emit });
  let requests = 0;
  let dispatcherReady = false;

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('strict routing', true);
  app.set('case sensitive routing', true);

  app.use((req, res, next) => {
    const thread = `http-nio-${port()}-exec-${(requests++ % EXEC_THREADS) + 1}`;
    if (!dispatcherReady) {
      // What Spring MVC logs on the first request, lazily initialising its DispatcherServlet.
      dispatcherReady = true;
      const logger = 'o.a.c.c.C.[Tomcat].[localhost].[/]';
      emit(springLine({ thread, logger, message: "Initializing Spring DispatcherServlet 'dispatcherServlet'" }));
      emit(springLine({ thread, logger: 'o.s.web.servlet.DispatcherServlet', message: "Initializing Servlet 'dispatcherServlet'" }));
      emit(springLine({ thread, logger: 'o.s.web.servlet.DispatcherServlet', message: 'Completed initialization in 1 ms' }));
    }
    const started = performance.now();
    res.setHeader('X-Served-By', hostname);
    res.once('finish', () => {
      const length = Number(res.getHeader('content-length'));
      emit(
        accessLine({
          remote: (req.socket.remoteAddress ?? '-').replace(/^::ffff:/, ''),
          method: req.method,
          url: req.originalUrl,
          httpVersion: req.httpVersion,
          status: res.statusCode,
          bytes: Number.isFinite(length) ? length : null,
          ms: performance.now() - started,
        }),
      );
    });
    next();
  });

  // After X-Served-By and the access log, before the routes: a faulty answer is logged and named.
  app.use(replicaFaults.middleware());

  /**
   * GET (and HEAD) `path` -> handler; any other method -> Spring's 405.
   * @param {string} path
   * @param {import('express').RequestHandler} handler
   */
  const route = (path, handler) => {
    app.get(path, handler);
    app.all(path, (req, res) => {
      res.setHeader('Allow', 'GET, HEAD');
      res.status(405).json(springError(405, 'Method Not Allowed', req.path));
    });
  };

  const up = (/** @type {import('express').Request} */ _req, /** @type {import('express').Response} */ res) => {
    res.type('application/json').send(JSON.stringify({ status: 'UP' }));
  };
  for (const p of HEALTH_PATHS) route(p, up);

  const redirectPage = (/** @type {import('express').Request} */ _req, /** @type {import('express').Response} */ res) => {
    res.type('html').send(
      '<!doctype html>\n<html>\n<head>\n    <meta http-equiv="refresh" content="0; url=app/index.html" />\n</head>\n' +
        '<body>\nRedirect... <a href="app/index.html">app/</a>\n</body>\n</html>\n',
    );
  };
  route('/', redirectPage);
  route('/index.html', redirectPage);

  route('/app/index.html', (_req, res) => {
    res.setHeader('Cache-Control', 'no-store');
    res.type('html').send(
      '<!doctype html>\n<html>\n<head>\n    <meta charset="utf-8">\n    <title>test-spring-web</title>\n</head>\n<body>\n' +
        '<h1>Test Springboot Web</h1>\n' +
        `<p>Served by <strong data-testid="served-by">${escapeHtml(hostname)}</strong></p>\n` +
        `<p>Instance <code>${escapeHtml(instanceId)}</code></p>\n` +
        '<p><a href="helloParams?name=World">helloParams</a> · <a href="health">health</a></p>\n' +
        '</body>\n</html>\n',
    );
  });

  route('/app/helloParams', (req, res) => {
    const raw = req.query.name;
    // @RequestParam(defaultValue = "World") String name: several values bind as "a,b".
    const name = raw === undefined ? 'World' : Array.isArray(raw) ? raw.map(String).join(',') : String(raw);
    if (name.length > MAX_NAME) {
      res.status(400).json(springError(400, 'Bad Request', req.path));
      return;
    }
    res.setHeader('Cache-Control', 'no-store');
    res.json({ message: `Hello ${name}`, hostname, instanceId });
  });

  app.use((req, res) => {
    res.status(404).json(springError(404, 'Not Found', req.path));
  });

  return app;
}

/** Starts the server from the environment (../shared/serve.js); see the header comment. */
function main() {
  const startedAt = performance.now();
  const say = (/** @type {string} */ line) => process.stdout.write(`${line}\n`);
  const info = (/** @type {string} */ logger, /** @type {string} */ message, thread = 'main') => say(springLine({ logger, message, thread }));
  const mainLogger = 'com.example.demo.DemoApplication';
  const tomcat = 'o.s.b.w.embedded.tomcat.TomcatWebServer';

  serve({
    defaultPort: 8080,
    defaultKeepAliveMs: DEFAULT_KEEPALIVE_TIMEOUT_MS,
    makeFaults: (hostname) => springFaults({ hostname }),
    createApp: ({ hostname, faults, port }) => createApp({ hostname, faults, port }),
    banner: ({ hostname }) => {
      for (const line of BANNER) say(line);
      const entry = fileURLToPath(import.meta.url);
      let user = 'unknown';
      try {
        user = os.userInfo().username;
      } catch {
        // no passwd entry (some containers)
      }
      info(
        mainLogger,
        `Starting ${APP_NAME} v${APP_VERSION} using Node.js ${process.version} on ${hostname} with PID ${process.pid} (${entry} started by ${user} in ${process.cwd()})`,
      );
      info(mainLogger, 'No active profile set, falling back to 1 default profile: "default"');
    },
    onListenError: (err, { port }) => {
      console.error(springLine({ level: 'ERROR', logger: 'o.s.b.d.LoggingFailureAnalysisReporter', message: `Web server failed to start. Port ${port} was already in use. (${err.message})` }));
    },
    onListening: (addr) => {
      const contextMs = Math.max(1, Math.round(performance.now() - startedAt));
      info(tomcat, `Tomcat initialized with port(s): ${addr.port} (http)`);
      info('o.apache.catalina.core.StandardService', 'Starting service [Tomcat]');
      info('org.apache.catalina.core.StandardEngine', `Starting Servlet engine: [Apache Tomcat/${TOMCAT_VERSION}]`);
      info('o.a.c.c.C.[Tomcat].[localhost].[/]', 'Initializing Spring embedded WebApplicationContext');
      info('w.s.c.ServletWebServerApplicationContext', `Root WebApplicationContext: initialization completed in ${contextMs} ms`);
      info('o.s.b.a.e.web.EndpointLinksResolver', "Exposing 1 endpoint(s) beneath base path '/actuator'");
      info(tomcat, `Tomcat started on port(s): ${addr.port} (http) with context path ''`);
      const seconds = ((performance.now() - startedAt) / 1000).toFixed(3);
      info(mainLogger, `Started ${APP_NAME} in ${seconds} seconds (JVM running for ${process.uptime().toFixed(3)})`);
    },
    configure: (server, { keepAliveTimeout }) => {
      // Node must not cut a keep-alive connection for slow headers before its idle timeout has run.
      server.headersTimeout = Math.max(server.headersTimeout, keepAliveTimeout + 1000);
    },
    onShutdown: () => {
      info('o.s.b.w.e.tomcat.GracefulShutdown', 'Commencing graceful shutdown. Waiting for active requests to complete', 'SpringApplicationShutdownHook');
    },
    onClosed: () => {
      info('o.s.b.w.e.tomcat.GracefulShutdown', 'Graceful shutdown complete', 'tomcat-shutdown');
    },
  });
}

// Run only as the entry point (`node server.js`), not when a test imports createApp.
if (isEntryPoint(import.meta.url)) {
  main();
}
