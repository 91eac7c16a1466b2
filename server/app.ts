/**
 * The lab's HTTP face: REST commands (zod-validated), socket.io event streams, and the built
 * web app. Every /api call and every socket needs the run's token; requests whose Host or
 * Origin is not this lab's are refused (no CSRF, no DNS rebinding: this server starts processes).
 */
import http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import express, { type NextFunction, type Request, type Response } from 'express';
import { Server as SocketServer } from 'socket.io';
import { z } from 'zod';
import type { EventBus } from '../lab/events.ts';
import { LabError, type Lab } from '../lab/lab.ts';
import { ReplicaCount } from '../lab/topology.ts';
import { EventStream } from './event-stream.ts';

export interface LabServerOptions {
  lab: Lab;
  bus: EventBus;
  /** The run's secret; compared in constant time. */
  token: string;
  /** Folder of the built web app (index.html); when missing, `/` says how to build it. */
  staticDir: string;
  /** Host names the page may be reached by (default localhost, 127.0.0.1, [::1]). */
  allowedHosts?: string[];
}

export interface LabServer {
  httpServer: http.Server;
  /** Listens and resolves with the bound port; rejects with a sentence on EADDRINUSE. */
  listen(port: number, host: string): Promise<number>;
  /** Closes sockets, streams and the listener (does not stop the lab). */
  close(): Promise<void>;
}

/** Largest JSON body accepted (bytes); commands are tiny. */
const BODY_LIMIT_BYTES = 16 * 1024;

const ScaleBody = z.strictObject({ replicas: ReplicaCount }, { error: 'body must be {"replicas": <0..10>}' });
const ReplicaName = z
  .string()
  .max(100, 'replica name is too long')
  .regex(/^[A-Za-z0-9_.-]+$/, 'replica name may only contain letters, digits, _ . -');

/** Maps a LabError code to its HTTP status. */
const STATUS_OF: Record<LabError['code'], number> = { 'bad-request': 400, 'not-found': 404, conflict: 409, failed: 500 };

function hostnameOf(hostHeader: string | undefined): string | null {
  if (!hostHeader) return null;
  try {
    return new URL(`http://${hostHeader}`).hostname;
  } catch {
    return null;
  }
}

export function createLabServer(o: LabServerOptions): LabServer {
  const allowedHosts = new Set(o.allowedHosts ?? ['localhost', '127.0.0.1', '[::1]']);
  const expected = Buffer.from(o.token);
  const tokenOk = (given: unknown): boolean => {
    if (typeof given !== 'string') return false;
    const b = Buffer.from(given);
    return b.length === expected.length && timingSafeEqual(b, expected);
  };

  /** Host must be ours; Origin, when sent, must be this same origin. Returns a reason or null. */
  const refuse = (headers: http.IncomingHttpHeaders): string | null => {
    const host = hostnameOf(headers.host);
    if (!host || !allowedHosts.has(host)) return `Host "${String(headers.host).slice(0, 80)}" is not allowed; open the lab at http://localhost:<port>/.`;
    const origin = headers.origin;
    if (origin !== undefined) {
      let originHost: string | null = null;
      try {
        const u = new URL(origin);
        originHost = u.protocol === 'http:' ? u.host : null;
      } catch {
        originHost = null;
      }
      if (originHost !== headers.host) return `Origin "${String(origin).slice(0, 80)}" is not allowed.`;
    }
    return null;
  };

  const app = express();
  app.disable('x-powered-by');
  app.use((req, res, next) => {
    const reason = refuse(req.headers);
    if (reason) {
      res.status(403).json({ error: reason });
      return;
    }
    next();
  });

  const api = express.Router();
  api.use((req, res, next) => {
    const auth = req.headers.authorization;
    const given = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
    if (!tokenOk(given)) {
      res.status(401).json({ error: 'Missing or wrong token: open the URL the lab printed at start (it carries ?token=...).' });
      return;
    }
    next();
  });
  api.use(express.json({ limit: BODY_LIMIT_BYTES, strict: true }));

  api.get('/status', (_req, res) => {
    res.json(o.lab.status());
  });

  api.post('/services/:service/scale', async (req, res) => {
    const body = ScaleBody.safeParse(req.body ?? {});
    if (!body.success) throw new LabError(body.error.issues[0]?.message ?? 'invalid body', 'bad-request');
    res.json(await o.lab.scale(String(req.params.service), body.data.replicas));
  });

  api.post('/replicas/:hostname/kill', async (req, res) => {
    const name = ReplicaName.safeParse(req.params.hostname);
    if (!name.success) throw new LabError(name.error.issues[0]?.message ?? 'invalid replica name', 'bad-request');
    res.json(await o.lab.kill(name.data));
  });

  api.post('/reset', async (_req, res) => {
    const status = await o.lab.reset();
    stream.resetCounts();
    res.json(status);
  });

  api.use((req, res) => {
    res.status(404).json({ error: `No such command: ${req.method} /api${req.path.slice(0, 100)}` });
  });

  api.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof LabError) {
      res.status(STATUS_OF[err.code]).json({ error: err.message });
      return;
    }
    const e = err as { type?: string; status?: number; message?: string };
    if (e?.type === 'entity.parse.failed') {
      res.status(400).json({ error: 'The request body is not valid JSON.' });
      return;
    }
    if (e?.type === 'entity.too.large') {
      res.status(413).json({ error: `The request body is larger than ${BODY_LIMIT_BYTES} bytes.` });
      return;
    }
    if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
      res.status(e.status).json({ error: e.message ?? 'Bad request.' });
      return;
    }
    res.status(500).json({ error: `The lab failed: ${e?.message ?? String(err)}` });
  });
  app.use('/api', api);

  const index = path.join(o.staticDir, 'index.html');
  app.use(express.static(o.staticDir, { index: false }));
  app.get('/{*splat}', (_req, res) => {
    if (!existsSync(index)) {
      res.status(503).type('text').send('The web app is not built yet: run `npm run build` (npm start does it for you).');
      return;
    }
    res.sendFile(index);
  });

  const httpServer = http.createServer(app);
  const io = new SocketServer(httpServer, {
    serveClient: false,
    destroyUpgrade: false,
    maxHttpBufferSize: BODY_LIMIT_BYTES,
    allowRequest: (req, cb) => {
      const reason = refuse(req.headers);
      cb(reason, reason === null);
    },
  });
  io.use((socket, next) => {
    if (tokenOk(socket.handshake.auth?.token)) next();
    else next(new Error('Missing or wrong token: open the URL the lab printed at start.'));
  });

  const stream = new EventStream(
    o.bus,
    (batch) => io.emit('batch', batch),
    () => io.emit('status', o.lab.status()),
  );
  io.on('connection', (socket) => {
    socket.emit('status', o.lab.status());
    socket.emit('history', stream.history());
  });

  return {
    httpServer,
    listen(port, host) {
      return new Promise((resolve, reject) => {
        const onError = (err: NodeJS.ErrnoException) => {
          reject(
            err.code === 'EADDRINUSE'
              ? new Error(`Port ${port} on ${host} is already in use: stop what uses it or choose another with LAB_PORT=<port>.`)
              : err,
          );
        };
        httpServer.once('error', onError);
        httpServer.listen(port, host, () => {
          httpServer.off('error', onError);
          const addr = httpServer.address();
          resolve(typeof addr === 'object' && addr ? addr.port : port);
        });
      });
    },
    async close() {
      stream.close();
      await new Promise<void>((resolve) => {
        io.close(() => resolve());
      });
      httpServer.closeAllConnections();
      if (httpServer.listening) await new Promise<void>((resolve) => httpServer.close(() => resolve()));
    },
  };
}
