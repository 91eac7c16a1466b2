// The startup every Node demo backend (web_static, web_dynamic, session_express, spring_app)
// shares: read the lab's environment, listen, print the lab's readiness line, report
// connections, take faults over the side channel, and shut down gracefully on SIGTERM/SIGINT.
// Plain ESM JavaScript, no dependencies beyond the other shared modules. (An image using it
// needs ../shared/: its Dockerfile builds from sandbox-images/ as the context.)
//
// Environment (the lab's conventions):
//   PORT                  port to listen on (default: the backend's; 0 = any free port)
//   HOST                  address to bind (default 0.0.0.0; the lab passes 127.0.0.1)
//   LAB_HOSTNAME          the replica's name (default: os.hostname(), a container's id in Docker)
//   KEEPALIVE_TIMEOUT_MS  how long an idle keep-alive connection stays open (default: the backend's)
//   LAB_CONN_EVENTS       1 = a stdout line per accepted/closed connection (./conn-events.js)
//   LAB_FAULT_FILE        the fault file in Docker mode (./faults.js)
// A PORT or KEEPALIVE_TIMEOUT_MS that is not a whole number >= 0 is reported on stderr, exit 2.
// A port that cannot be bound: `cannot listen on <host>:<port>: <reason>` on stderr, exit 1.
//
// Once listening it prints exactly one line `listening on http://<host>:<port>` (the real port)
// on stdout; the lab's process runtime waits for that line. SIGTERM or SIGINT: stop accepting,
// close idle keep-alive connections, let requests in flight finish, close the connections of
// requests held by the `hang` fault without an answer, then exit 0.
import fs from 'node:fs';
import os from 'node:os';
import process from 'node:process';
import { pathToFileURL } from 'node:url';
import { Faults, listenForFaults } from './faults.js';
import { reportConnections } from './conn-events.js';

/**
 * Parses an integer environment variable; exits with 2 (after a line on stderr) when it is not a
 * whole number >= 0.
 * @param {string | undefined} value
 * @param {number} fallback used when the variable is unset or empty
 * @param {string} name
 * @returns {number}
 */
export function intFromEnv(value, fallback, name) {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`${name} must be a whole number >= 0, got "${value}"`);
    process.exit(2);
  }
  return n;
}

/**
 * Whether the module at `moduleUrl` (its import.meta.url) is the process's entry point
 * (`node server.js`), not a module a test imports.
 * @param {string} moduleUrl
 * @returns {boolean}
 */
export function isEntryPoint(moduleUrl) {
  return Boolean(process.argv[1]) && moduleUrl === pathToFileURL(fs.realpathSync(process.argv[1])).href;
}

/**
 * @typedef {object} ServeOptions
 * @property {(context: { hostname: string, faults: Faults, port: () => number }) => import('express').Express} createApp
 *   builds the app; `port()` is the configured port until the server listens, the bound one after
 * @property {number} [defaultPort] PORT when unset (default 3000)
 * @property {number} [defaultKeepAliveMs] KEEPALIVE_TIMEOUT_MS when unset (default 5000)
 * @property {(hostname: string) => Faults} [makeFaults] the replica's fault state (default: plain Faults)
 * @property {(context: { hostname: string }) => void} [banner] after the environment is read, before anything starts
 * @property {(err: Error, context: { host: string, port: number }) => void} [onListenError]
 *   before the `cannot listen on` line
 * @property {(addr: import('node:net').AddressInfo) => void} [onListening] before the `listening on` line
 * @property {(server: import('node:http').Server, context: { keepAliveTimeout: number }) => void} [configure]
 *   last word on the server's settings, after keepAliveTimeout and the connection report
 * @property {() => void} [onShutdown] on SIGTERM/SIGINT, before the server closes
 * @property {() => void} [onClosed] once the server has closed, before exit 0
 */

/**
 * Starts a backend from the environment; see the header comment.
 * @param {ServeOptions} options
 * @returns {import('node:http').Server}
 */
export function serve({
  createApp,
  defaultPort = 3000,
  defaultKeepAliveMs = 5000,
  makeFaults = (hostname) => new Faults({ hostname }),
  banner,
  onListenError,
  onListening,
  configure,
  onShutdown,
  onClosed,
}) {
  const hostname = process.env.LAB_HOSTNAME || os.hostname();
  const port = intFromEnv(process.env.PORT, defaultPort, 'PORT');
  const host = process.env.HOST || '0.0.0.0';
  const keepAliveTimeout = intFromEnv(process.env.KEEPALIVE_TIMEOUT_MS, defaultKeepAliveMs, 'KEEPALIVE_TIMEOUT_MS');
  banner?.({ hostname });

  let boundPort = port;
  const faults = makeFaults(hostname);
  listenForFaults(faults);
  const app = createApp({ hostname, faults, port: () => boundPort });
  const server = app.listen(port, host, (err) => {
    if (err) {
      onListenError?.(err, { host, port });
      console.error(`cannot listen on ${host}:${port}: ${err.message}`);
      process.exit(1);
    }
    const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
    boundPort = addr.port;
    onListening?.(addr);
    const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    process.stdout.write(`listening on http://${shown}:${addr.port}\n`);
  });
  server.keepAliveTimeout = keepAliveTimeout;
  // LAB_CONN_EVENTS=1: a line per accepted/closed connection (./conn-events.js).
  reportConnections(server);
  configure?.(server, { keepAliveTimeout });

  const shutdown = () => {
    onShutdown?.();
    // close() stops accepting, closes idle keep-alive connections and waits for requests in flight.
    server.close(() => {
      onClosed?.();
      process.exit(0);
    });
    server.closeIdleConnections();
    faults.dropHeld(); // requests held by `hang` are never answered: close them
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  return server;
}
