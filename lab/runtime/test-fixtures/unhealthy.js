// Test fixture: listens and prints the line, but GET /health always answers 503.
import http from 'node:http';

process.stdout.write(`pid ${process.pid}\n`);
const server = http.createServer((_req, res) => {
  res.writeHead(503, { 'content-type': 'text/plain' }).end('not yet\n');
});
server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1', () => {
  const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
  process.stdout.write(`listening on http://${addr.address}:${addr.port}\n`);
});
