// Fault injection for the Node demo backends (web_static, web_dynamic, session_express, spring_app).
// Plain ESM JavaScript, no dependencies. The PHP backend (session_php/router.php) implements the
// same modes itself from the same fault file format.
//
// Modes (the Fault type in lab/seams.ts):
//   healthy    normal answers (clears any fault)
//   unhealthy  only the health paths fail: 503 (everything else answers normally)
//   slow       every answer, health included, is delayed by `ms` (1..60000)
//   errors     every answer but the health paths is a 500 with a short body
//   hang       requests are accepted (TCP and HTTP parsing) and never answered, health included;
//              when the fault changes, the held requests go on under the new mode; on shutdown
//              (SIGTERM) their connections are closed without an answer (dropHeld()).
//
// The side channel, never an HTTP path on the replica's port (the proxy must not reach it):
//   - process mode: the Node IPC channel the lab's ProcessRuntime opens when it spawns the
//     replica (stdio slot 'ipc'). It sends `{ type: 'lab:set-fault', id, fault }`; the replica
//     applies the fault, logs `<hostname> fault: <mode>[ <ms> ms]`, then answers
//     `{ type: 'lab:fault-set', id, fault }` (or `{ type: 'lab:fault-refused', id, error }`).
//     The acknowledgement is sent only once the fault is in force for every request that
//     arrives after it.
//   - Docker mode (and anyone without IPC): env LAB_FAULT_FILE names a JSON file such as
//     `{"mode":"slow","ms":500}` (absent or empty = healthy), on a volume the lab writes to
//     (temp file + rename). The replica watches it (fs.watchFile, every 100 ms), applies a new
//     content and logs the same `fault:` line, which is its acknowledgement for a runtime that
//     reads the container's log.
// Both can be on at once; the last fault set wins.
import fs from 'node:fs';
import process from 'node:process';

export const FAULT_MODES = Object.freeze(['healthy', 'unhealthy', 'slow', 'errors', 'hang']);
export const MAX_SLOW_MS = 60_000;
/** How often LAB_FAULT_FILE is looked at, in ms. */
export const FAULT_FILE_POLL_MS = 100;

/**
 * @typedef {{ mode: 'healthy' | 'unhealthy' | 'errors' | 'hang' } | { mode: 'slow', ms: number }} Fault
 */

/**
 * Checks an untrusted value (an IPC message, a file's JSON) against the Fault shape.
 * @param {unknown} value
 * @returns {{ ok: true, fault: Fault } | { ok: false, error: string }}
 */
export function parseFault(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, error: 'a fault is an object such as {"mode":"slow","ms":500}' };
  }
  const { mode, ms } = /** @type {{ mode?: unknown, ms?: unknown }} */ (value);
  if (typeof mode !== 'string' || !FAULT_MODES.includes(mode)) {
    return { ok: false, error: `mode must be one of ${FAULT_MODES.join(', ')}` };
  }
  if (mode === 'slow') {
    if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 1 || ms > MAX_SLOW_MS) {
      return { ok: false, error: `slow needs ms, a whole number from 1 to ${MAX_SLOW_MS}` };
    }
    return { ok: true, fault: { mode: 'slow', ms } };
  }
  return { ok: true, fault: /** @type {Fault} */ ({ mode }) };
}

/**
 * `slow 500 ms`, `hang`, ...: how a fault reads in log lines.
 * @param {Fault} fault
 */
export function describeFault(fault) {
  return fault.mode === 'slow' ? `slow ${fault.ms} ms` : fault.mode;
}

/**
 * @typedef {(req: import('node:http').IncomingMessage & { path?: string }, res: import('node:http').ServerResponse) => void} Responder
 */

/** One replica's fault state and the middleware that acts on it. */
export class Faults {
  /** @type {Fault} */
  #fault = { mode: 'healthy' };
  #hostname;
  /** @type {Set<string>} */
  #healthPaths;
  /** @type {Responder} */
  #unhealthy;
  /** @type {Responder} */
  #errors;
  /** @type {(line: string) => void} */
  #log;
  /** Requests held by `hang`. @type {Set<{ req: any, res: any, next: () => void }>} */
  #held = new Set();

  /**
   * @param {{
   *   hostname: string,
   *   healthPaths?: string[],
   *   unhealthy?: Responder,
   *   errors?: Responder,
   *   log?: (line: string) => void,
   * }} options
   *   healthPaths: paths (without query) that count as health checks (default ['/health']);
   *   unhealthy / errors: how this backend answers a failing health check (503) and a faulty
   *   request (500); defaults are short JSON bodies; log: where the `fault:` line goes (stdout).
   */
  constructor({ hostname, healthPaths = ['/health'], unhealthy, errors, log }) {
    this.#hostname = hostname;
    this.#healthPaths = new Set(healthPaths);
    this.#unhealthy =
      unhealthy ??
      ((_req, res) => {
        res.statusCode = 503;
        res.setHeader('Content-Type', 'application/json; charset=utf-8');
        res.setHeader('Cache-Control', 'no-store');
        res.end(JSON.stringify({ status: 'failing', error: 'fault: unhealthy', hostname }));
      });
    this.#errors =
      errors ??
      ((_req, res) => {
        res.statusCode = 500;
        res.setHeader('Content-Type', 'application/json; charset=utf-8');
        res.setHeader('Cache-Control', 'no-store');
        res.end(JSON.stringify({ error: 'fault: errors', hostname }));
      });
    this.#log = log ?? ((line) => process.stdout.write(`${line}\n`));
  }

  /** The fault in force. */
  get current() {
    return this.#fault;
  }

  /** How many requests `hang` holds right now. */
  get heldCount() {
    return this.#held.size;
  }

  /**
   * Puts the replica in `fault` (validated by parseFault first) and logs the `fault:` line.
   * Requests held by `hang` go on under the new fault.
   * @param {Fault} fault
   */
  set(fault) {
    this.#fault = fault;
    this.#log(`${this.#hostname} fault: ${describeFault(fault)}`);
    if (fault.mode !== 'hang' && this.#held.size > 0) {
      const held = [...this.#held];
      this.#held.clear();
      for (const { req, res, next } of held) this.#handle(req, res, next);
    }
  }

  /** Closes the connections of the requests `hang` holds, without an answer (the process is going away). */
  dropHeld() {
    const held = [...this.#held];
    this.#held.clear();
    for (const { req } of held) req.socket.destroy();
  }

  /**
   * Middleware (Express or plain `(req, res, next)`): put it after the headers every answer
   * carries (X-Served-By) and after the access log, before the routes.
   * @returns {(req: any, res: any, next: () => void) => void}
   */
  middleware() {
    return (req, res, next) => this.#handle(req, res, next);
  }

  /**
   * @param {any} req
   * @param {any} res
   * @param {() => void} next
   */
  #handle(req, res, next) {
    const fault = this.#fault;
    const path = typeof req.path === 'string' ? req.path : new URL(req.url ?? '/', 'http://x').pathname;
    const isHealth = this.#healthPaths.has(path);
    switch (fault.mode) {
      case 'hang': {
        const entry = { req, res, next };
        this.#held.add(entry);
        res.once('close', () => this.#held.delete(entry));
        return;
      }
      case 'slow': {
        const timer = setTimeout(next, fault.ms);
        res.once('close', () => clearTimeout(timer)); // the client gave up: nothing to answer
        return;
      }
      case 'errors':
        if (isHealth) next();
        else this.#errors(req, res);
        return;
      case 'unhealthy':
        if (isHealth) this.#unhealthy(req, res);
        else next();
        return;
      default:
        next();
    }
  }
}

/**
 * Opens the side channels for `faults` (see the header): the IPC channel when this process has
 * one, and LAB_FAULT_FILE when it is set. Neither keeps the process alive on its own.
 * @param {Faults} faults
 * @param {{ env?: NodeJS.ProcessEnv, onError?: (line: string) => void }} [options]
 * @returns {{ close(): void }}
 */
export function listenForFaults(faults, { env = process.env, onError = (line) => process.stderr.write(`${line}\n`) } = {}) {
  /** @type {(() => void)[]} */
  const closers = [];

  if (typeof process.send === 'function') {
    /** @param {unknown} message */
    const onMessage = (message) => {
      if (message === null || typeof message !== 'object') return;
      const { type, id, fault } = /** @type {{ type?: unknown, id?: unknown, fault?: unknown }} */ (message);
      if (type !== 'lab:set-fault') return;
      const parsed = parseFault(fault);
      if (parsed.ok) {
        faults.set(parsed.fault);
        process.send?.({ type: 'lab:fault-set', id, fault: parsed.fault });
      } else {
        process.send?.({ type: 'lab:fault-refused', id, error: parsed.error });
      }
    };
    process.on('message', onMessage);
    process.channel?.unref(); // the server keeps the process alive, not the channel
    closers.push(() => process.off('message', onMessage));
  }

  const file = env.LAB_FAULT_FILE;
  if (file) {
    let last = '';
    const read = () => {
      let text;
      try {
        text = fs.readFileSync(file, 'utf8').trim();
      } catch (err) {
        if (/** @type {NodeJS.ErrnoException} */ (err).code !== 'ENOENT') {
          onError(`cannot read LAB_FAULT_FILE ${file}: ${/** @type {Error} */ (err).message}`);
          return;
        }
        text = '';
      }
      if (text === last) return;
      last = text;
      if (text === '') {
        if (faults.current.mode !== 'healthy') faults.set({ mode: 'healthy' });
        return;
      }
      let value;
      try {
        value = JSON.parse(text);
      } catch {
        onError(`LAB_FAULT_FILE ${file} is not JSON; fault unchanged`);
        return;
      }
      const parsed = parseFault(value);
      if (parsed.ok) faults.set(parsed.fault);
      else onError(`LAB_FAULT_FILE ${file}: ${parsed.error}; fault unchanged`);
    };
    read();
    fs.watchFile(file, { interval: FAULT_FILE_POLL_MS, persistent: false }, read);
    closers.push(() => fs.unwatchFile(file, read));
  }

  return {
    close() {
      for (const close of closers) close();
    },
  };
}
