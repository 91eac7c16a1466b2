// Connection reports of a demo backend: one stdout line per accepted and per closed TCP connection,
// with the peer's address:port (the proxy's or the VIP's source address: the lab matches hops by
// it) and, on close, who sent the first FIN and why:
//
//   conn opened 127.0.0.1:53412
//   conn closed 127.0.0.1:53412 by server (keep-alive timeout)
//   conn closed 127.0.0.1:53412 by client (client closed)
//
// Reasons when the server closed: `keep-alive timeout` (idle for the server's keepAliveTimeout),
// `Connection: close` (the last answer said so), `closed` otherwise; `error: <code>` on a reset.
// On only when LAB_CONN_EVENTS=1 (the lab sets it), so a backend run by hand logs nothing extra.
// Plain ESM JavaScript, no dependencies.
import process from 'node:process';

/**
 * Reports `server`'s connections on stdout when `env.LAB_CONN_EVENTS === '1'`.
 * @param {import('node:http').Server} server
 * @param {{ env?: NodeJS.ProcessEnv, write?: (line: string) => void }} [options]
 * @returns {boolean} whether reporting is on
 */
export function reportConnections(server, { env = process.env, write = (line) => process.stdout.write(`${line}\n`) } = {}) {
  if (env.LAB_CONN_EVENTS !== '1') return false;
  server.on('connection', (socket) => {
    const peer = socket.remoteAddress?.includes(':') ? `[${socket.remoteAddress}]:${socket.remotePort}` : `${socket.remoteAddress}:${socket.remotePort}`;
    let peerFirst = false;
    let busy = 0;
    let lastDone = Date.now();
    let askedClose = false;
    let error = null;
    // node:http arms the socket timeout with keepAliveTimeout once an answer is done, and destroys
    // the socket when it fires (no 'timeout' listener on the server).
    let timedOut = false;
    socket.on('timeout', () => {
      if (busy === 0) timedOut = true;
    });
    socket.prependListener('end', () => {
      if (!socket.writableEnded) peerFirst = true;
    });
    socket.on('error', (err) => {
      error ??= /** @type {NodeJS.ErrnoException} */ (err).code ?? err.message;
    });
    socket.once('close', () => {
      let text;
      if (peerFirst) text = 'by client (client closed)';
      else if (timedOut) text = 'by server (keep-alive timeout)';
      else if (error) text = `by client (error: ${error})`;
      else if (askedClose) text = 'by server (Connection: close)';
      else if (busy === 0 && server.keepAliveTimeout > 0 && Date.now() - lastDone >= server.keepAliveTimeout - 50) text = 'by server (keep-alive timeout)';
      else text = 'by server (closed)';
      write(`conn closed ${peer} ${text}`);
    });
    socket.__labConn = {
      start() {
        busy++;
      },
      done(close) {
        busy--;
        lastDone = Date.now();
        if (close) askedClose = true;
      },
    };
    write(`conn opened ${peer}`);
  });
  server.on('request', (req, res) => {
    const conn = req.socket.__labConn;
    if (!conn) return;
    conn.start();
    res.once('finish', () => conn.done(/(^|,)\s*close\s*(,|$)/i.test(String(res.getHeader('connection') ?? '')) || !res.shouldKeepAlive));
    res.once('close', () => {
      if (!res.writableFinished) conn.done(false);
    });
  });
  return true;
}
