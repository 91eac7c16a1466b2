/**
 * The probe client: an HTTP/1.1 client whose connection handling is explicit, so a lesson can show
 * what a keep-alive client (one TCP connection for many requests, like .NET's HttpClient or a
 * browser) sees behind a load balancer, versus a client that opens a new connection per request.
 * Used by widgets, lesson checks and tests alike. Built on node:http so each response tells which
 * TCP connection carried it (the socket's local port).
 */
import http from 'node:http';
import type net from 'node:net';
import { CookieJar } from 'tough-cookie';

export interface ProbeClientOptions {
  /** Where requests go, e.g. `http://127.0.0.1:8080` (only http:). Paths given to get() are resolved against it. */
  baseUrl: string;
  /**
   * `reuse`: one keep-alive connection (node:http Agent with keepAlive, maxSockets 1), reopened only
   * if the server closed it. `new`: a fresh TCP connection per request, sent with `Connection: close`.
   */
  connection: 'reuse' | 'new';
  /** Keep a cookie jar (tough-cookie): send stored cookies, store Set-Cookie. Default false. */
  cookies?: boolean;
}

export interface ProbeRequestOptions {
  /** Extra request headers, e.g. `{ Host: 'demo.localhost' }` or `{ 'X-Session-ID': 'abc' }`. */
  headers?: Record<string, string>;
  /** Give up (reject) after this many ms without a complete response. Default 30000. */
  timeoutMs?: number;
}

export interface ProbeResponse {
  status: number;
  /** Response headers, names lower-cased (node:http's IncomingHttpHeaders). */
  headers: http.IncomingHttpHeaders;
  /** The body decoded as UTF-8. */
  body: string;
  /** The `X-Served-By` response header (the replica that answered), or null. */
  servedBy: string | null;
  /** Local TCP port of the client socket that carried the request: the same value means the same connection. */
  localPort: number;
  /** True when the request went over a connection that had already carried an earlier request. */
  reused: boolean;
}

/**
 * An HTTP client with explicit connection control. Not safe for concurrent requests in `reuse`
 * mode in the sense that they queue on the one connection (maxSockets 1), which is the point.
 *
 * Errors: get() rejects with the socket error (e.g. code ECONNREFUSED) or with an Error whose
 * message says the request timed out.
 */
export class ProbeClient {
  /** The cookie jar when `cookies` is on, else null. Tests and widgets may read or clear it. */
  readonly jar: CookieJar | null;
  readonly #base: URL;
  readonly #mode: 'reuse' | 'new';
  readonly #agent: http.Agent;
  readonly #sockets = new Set<net.Socket>();
  #closed = false;

  constructor(opts: ProbeClientOptions) {
    this.#base = new URL(opts.baseUrl);
    if (this.#base.protocol !== 'http:') throw new Error(`ProbeClient only speaks http:, not ${this.#base.protocol} (${opts.baseUrl}).`);
    this.#mode = opts.connection;
    this.jar = opts.cookies ? new CookieJar() : null;
    this.#agent =
      opts.connection === 'reuse'
        ? new http.Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 })
        : new http.Agent({ keepAlive: false });
  }

  /**
   * Sends `GET path` and resolves with the whole response once its body has been read.
   * @param path absolute path (with query) or URL, resolved against baseUrl.
   */
  get(path: string, opts: ProbeRequestOptions = {}): Promise<ProbeResponse> {
    return this.request('GET', path, opts);
  }

  /**
   * Sends `POST path` with a JSON body (Content-Type application/json) and resolves with the
   * whole response. Used by lesson checks to log in on a demo app.
   */
  post(path: string, json: unknown, opts: ProbeRequestOptions = {}): Promise<ProbeResponse> {
    return this.request('POST', path, { ...opts, body: JSON.stringify(json), headers: { 'Content-Type': 'application/json', ...opts.headers } });
  }

  /** Sends one request; `body` (UTF-8 text) is sent with a Content-Length. */
  async request(method: 'GET' | 'POST', path: string, opts: ProbeRequestOptions & { body?: string } = {}): Promise<ProbeResponse> {
    if (this.#closed) throw new Error('ProbeClient is closed.');
    const url = new URL(path, this.#base);
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body !== undefined) headers['Content-Length'] = String(Buffer.byteLength(opts.body));
    if (this.#mode === 'new') headers['Connection'] = 'close';
    if (this.jar) {
      const cookie = await this.jar.getCookieString(url.href);
      if (cookie) headers['Cookie'] = cookie;
    }
    const timeoutMs = opts.timeoutMs ?? 30_000;

    const res = await new Promise<{ msg: http.IncomingMessage; body: string; localPort: number; reused: boolean }>((resolve, reject) => {
      const req = http.request(url, { method, agent: this.#agent, headers });
      const timer = setTimeout(() => {
        req.destroy(new Error(`${method} ${url.href} got no complete response within ${timeoutMs} ms.`));
      }, timeoutMs);
      req.on('socket', (s: net.Socket) => {
        if (!this.#sockets.has(s)) {
          this.#sockets.add(s);
          s.once('close', () => this.#sockets.delete(s));
        }
      });
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.on('response', (msg) => {
        const localPort = msg.socket.localPort ?? 0;
        const reused = req.reusedSocket;
        const chunks: Buffer[] = [];
        msg.on('data', (c: Buffer) => chunks.push(c));
        msg.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        msg.on('end', () => {
          clearTimeout(timer);
          resolve({ msg, body: Buffer.concat(chunks).toString('utf8'), localPort, reused });
        });
      });
      req.end(opts.body);
    });

    if (this.jar) {
      const setCookie = res.msg.headers['set-cookie'] ?? [];
      for (const c of setCookie) await this.jar.setCookie(c, url.href, { ignoreError: true });
    }
    const servedBy = res.msg.headers['x-served-by'];
    return {
      status: res.msg.statusCode ?? 0,
      headers: res.msg.headers,
      body: res.body,
      servedBy: typeof servedBy === 'string' ? servedBy : null,
      localPort: res.localPort,
      reused: res.reused,
    };
  }

  /** Destroys every socket this client holds (pooled or in use); later get() calls reject. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#agent.destroy();
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }
}
