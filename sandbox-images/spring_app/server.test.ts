/**
 * spring_app: the Spring-Boot-like routes and bodies (in process), and the real process: banner,
 * Spring startup lines with real figures, the lab's `listening on` line, Tomcat access log lines,
 * Actuator health under faults set over the IPC channel, keep-alive header, graceful SIGTERM.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { appMounter, ended, startProcess } from '../shared/test-servers.js';
import { accessLine, BANNER, createApp, springFaults, springLine } from './server.js';

const ENTRY = fileURLToPath(new URL('./server.js', import.meta.url));
const mount = appMounter();

const serve = (options: Parameters<typeof createApp>[0]) => mount(createApp(options));

const SPRING_LINE = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} {2}INFO \d+ --- \[[ \w.-]{15}\] .{40} : /;

describe('spring_app app', () => {
  test('GET /app/index.html names the replica (escaped), with X-Served-By', async () => {
    const base = await serve({ hostname: 'spring_app-1-<b>', instanceId: 'id-1', log: false });
    const res = await fetch(`${base}/app/index.html`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.headers.get('x-served-by')).toBe('spring_app-1-<b>');
    const html = await res.text();
    expect(html).toContain('<h1>Test Springboot Web</h1>');
    expect(html).toContain('<strong data-testid="served-by">spring_app-1-&#60;b&#62;</strong>');
    expect(html).toContain('<code>id-1</code>');
  });

  test('/ and /index.html redirect to app/index.html, as in the seed', async () => {
    const base = await serve({ hostname: 'spring_app-1', log: false });
    for (const p of ['/', '/index.html']) {
      const res = await fetch(`${base}${p}`);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('<meta http-equiv="refresh" content="0; url=app/index.html" />');
    }
  });

  test('GET /app/helloParams answers {message, hostname, instanceId}', async () => {
    const base = await serve({ hostname: 'spring_app-2', instanceId: 'id-2', log: false });
    const hello = async (q: string) => {
      const res = await fetch(`${base}/app/helloParams${q}`);
      return { res, body: (await res.json()) as Record<string, unknown> };
    };
    const x = await hello('?name=x');
    expect(x.res.status).toBe(200);
    expect(x.res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(x.res.headers.get('x-served-by')).toBe('spring_app-2');
    expect(x.body).toEqual({ message: 'Hello x', hostname: 'spring_app-2', instanceId: 'id-2' });
    expect((await hello('')).body.message).toBe('Hello World');
    expect((await hello('?name=a&name=b')).body.message).toBe('Hello a,b');
    expect((await hello('?name=%22%3Cx%3E')).body.message).toBe('Hello "<x>');
    const long = await hello(`?name=${'n'.repeat(201)}`);
    expect(long.res.status).toBe(400);
    expect(long.body).toMatchObject({ status: 400, error: 'Bad Request', path: '/app/helloParams' });
  });

  test('health: /app/health, /actuator/health and /health answer {"status":"UP"}', async () => {
    const base = await serve({ hostname: 'spring_app-3', log: false });
    for (const p of ['/app/health', '/actuator/health', '/health']) {
      const res = await fetch(`${base}${p}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('x-served-by')).toBe('spring_app-3');
      expect(await res.text()).toBe('{"status":"UP"}');
    }
  });

  test('unknown paths and methods get Spring error bodies (404, 405 with Allow)', async () => {
    const base = await serve({ hostname: 'spring_app-4', log: false });
    const missing = await fetch(`${base}/app/nope`);
    expect(missing.status).toBe(404);
    const body = (await missing.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ status: 404, error: 'Not Found', path: '/app/nope' });
    expect(body.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$/);
    const post = await fetch(`${base}/app/helloParams`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    expect(await post.json()).toMatchObject({ status: 405, error: 'Method Not Allowed', path: '/app/helloParams' });
  });

  test('faults: unhealthy is Actuator DOWN (503) on every health path; errors is Spring 500 everywhere else', async () => {
    const lines: string[] = [];
    const faults = springFaults({ hostname: 'spring_app-5', log: (l) => void lines.push(l) });
    const base = await serve({ hostname: 'spring_app-5', log: false, faults });

    faults.set({ mode: 'unhealthy' });
    expect(lines.at(-1)).toMatch(/^\d{4}-\d\d-\d\d \S+ {2}WARN \d+ --- \[    lab-control\] c\.e\.demo\.LabFaultInjector +: spring_app-5 fault: unhealthy$/);
    for (const p of ['/app/health', '/actuator/health', '/health']) {
      const res = await fetch(`${base}${p}`);
      expect(res.status).toBe(503);
      expect(res.headers.get('x-served-by')).toBe('spring_app-5');
      expect(await res.text()).toBe('{"status":"DOWN"}');
    }
    expect((await fetch(`${base}/app/index.html`)).status).toBe(200);

    faults.set({ mode: 'errors' });
    const failed = await fetch(`${base}/app/helloParams?name=x`);
    expect(failed.status).toBe(500);
    expect(await failed.json()).toMatchObject({ status: 500, error: 'Internal Server Error', path: '/app/helloParams' });
    expect((await fetch(`${base}/app/health`)).status).toBe(200);

    faults.set({ mode: 'healthy' });
    expect((await fetch(`${base}/app/helloParams`)).status).toBe(200);
    expect(lines.map((l) => l.replace(/^.* : /, ''))).toEqual(['spring_app-5 fault: unhealthy', 'spring_app-5 fault: errors', 'spring_app-5 fault: healthy']);
  });

  test('logs the DispatcherServlet initialisation once, then one Tomcat access log line per request', async () => {
    const lines: string[] = [];
    const base = await serve({ hostname: 'spring_app-6', log: (l) => void lines.push(l), port: () => 8081 });
    await (await fetch(`${base}/app/helloParams?name=x`)).text();
    await (await fetch(`${base}/nope`)).text();
    expect(lines.slice(0, 3).map((l) => l.replace(SPRING_LINE, ''))).toEqual([
      "Initializing Spring DispatcherServlet 'dispatcherServlet'",
      "Initializing Servlet 'dispatcherServlet'",
      'Completed initialization in 1 ms',
    ]);
    expect(lines[0]).toContain('[nio-8081-exec-1] o.a.c.c.C.[Tomcat].[localhost].[/]       : ');
    expect(lines.slice(3)).toHaveLength(2);
    expect(lines[3]).toMatch(/^127\.0\.0\.1 - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET \/app\/helloParams\?name=x HTTP\/1\.1" 200 \d+ \d+$/);
    expect(lines[4]).toMatch(/"GET \/nope HTTP\/1\.1" 404 \d+ \d+$/);
  });

  test('line formats: Spring console and Tomcat access log', () => {
    const at = new Date(2017, 4, 11, 23, 54, 41, 7);
    expect(springLine({ at, pid: 10944, logger: 'o.s.b.w.embedded.tomcat.TomcatWebServer', message: 'Tomcat initialized with port(s): 8082 (http)' })).toBe(
      '2017-05-11 23:54:41.007  INFO 10944 --- [           main] o.s.b.w.embedded.tomcat.TomcatWebServer  : Tomcat initialized with port(s): 8082 (http)',
    );
    expect(springLine({ at, pid: 1, thread: 'http-nio-8080-exec-10', logger: 'x', message: 'm' })).toContain('[io-8080-exec-10] x' + ' '.repeat(39) + ' : m');
    const line = accessLine({ at, remote: '::1', method: 'GET', url: '/app/index.html', httpVersion: '1.1', status: 304, bytes: null, ms: 1.6 });
    expect(line).toMatch(/^::1 - - \[11\/May\/2017:23:54:41 [+-]\d{4}\] "GET \/app\/index\.html HTTP\/1\.1" 304 - 2$/);
  });
});

// ---------------------------------------------------------------- the process

describe('spring_app process', () => {
  test('banner, Spring startup lines with its hostname, PID and port, the listening line; access log; keep-alive 60 s; graceful SIGTERM', async () => {
    const p = await startProcess(ENTRY, { LAB_HOSTNAME: 'spring_app-1-ab12' });
    try {
      const { startup, port } = p;
      expect(startup.slice(0, BANNER.length)).toEqual(BANNER);
      expect(startup[7]).toBe(' :: Spring Boot ::               (v2.7.18)');
      const logs = startup.slice(BANNER.length, -1);
      for (const l of logs) expect(l).toMatch(SPRING_LINE);
      const messages = logs.map((l) => l.replace(SPRING_LINE, ''));
      expect(messages[0]).toMatch(
        new RegExp(`^Starting DemoApplication v0\\.0\\.1-SNAPSHOT using Node\\.js v\\d+\\.\\d+\\.\\d+ on spring_app-1-ab12 with PID ${p.child.pid} \\(.*server\\.js started by .+ in .+\\)$`),
      );
      expect(logs[0]).toContain(` INFO ${p.child.pid} --- [           main] com.example.demo.DemoApplication         : Starting`);
      expect(messages).toContain(`Tomcat initialized with port(s): ${port} (http)`);
      expect(messages).toContain(`Tomcat started on port(s): ${port} (http) with context path ''`);
      expect(messages.at(-1)).toMatch(/^Started DemoApplication in \d+\.\d{3} seconds \(JVM running for \d+\.\d{3}\)$/);
      expect(startup.at(-1)).toBe(`listening on http://127.0.0.1:${port}`);

      const res = await fetch(`http://127.0.0.1:${port}/app/helloParams?name=x`);
      expect(res.headers.get('x-served-by')).toBe('spring_app-1-ab12');
      expect(res.headers.get('keep-alive')).toBe('timeout=60'); // Tomcat's default keepAliveTimeout
      expect(((await res.json()) as { message: string }).message).toBe('Hello x');
      const first = [await p.next(), await p.next(), await p.next(), await p.next()];
      expect(first[0]).toContain(`[${`http-nio-${port}-exec-1`.slice(-15)}] `); // %15.15t keeps the last 15 characters
      expect(first[3]).toMatch(/^127\.0\.0\.1 - - \[.+\] "GET \/app\/helloParams\?name=x HTTP\/1\.1" 200 \d+ \d+$/);

      // SIGTERM with the fetch's keep-alive connection still open: graceful, then exit 0.
      p.child.kill('SIGTERM');
      expect((await p.next()).replace(/^.* : /, '')).toBe('Commencing graceful shutdown. Waiting for active requests to complete');
      expect((await p.next()).replace(/^.* : /, '')).toBe('Graceful shutdown complete');
      expect(await p.exited).toEqual({ code: 0, signal: null });
    } finally {
      await ended(p);
    }
  });

  test('faults over the IPC channel: acknowledged after they are in force; a bad one is refused', async () => {
    const p = await startProcess(ENTRY, { LAB_HOSTNAME: 'spring_app-2-cd34' }, true);
    try {
      const reply = (message: object) =>
        new Promise<Record<string, unknown>>((resolve) => {
          p.child.once('message', (m) => resolve(m as Record<string, unknown>));
          p.child.send(message);
        });
      expect(await reply({ type: 'lab:set-fault', id: 1, fault: { mode: 'unhealthy' } })).toEqual({ type: 'lab:fault-set', id: 1, fault: { mode: 'unhealthy' } });
      expect(await p.next()).toMatch(/ WARN \d+ --- \[    lab-control\] c\.e\.demo\.LabFaultInjector +: spring_app-2-cd34 fault: unhealthy$/);
      const down = await fetch(`http://127.0.0.1:${p.port}/app/health`);
      expect(down.status).toBe(503);
      expect(await down.text()).toBe('{"status":"DOWN"}');

      expect(await reply({ type: 'lab:set-fault', id: 2, fault: { mode: 'slow', ms: 0 } })).toEqual({
        type: 'lab:fault-refused',
        id: 2,
        error: 'slow needs ms, a whole number from 1 to 60000',
      });
      expect((await fetch(`http://127.0.0.1:${p.port}/app/health`)).status).toBe(503); // unchanged

      p.child.kill('SIGTERM');
      expect((await p.exited).code).toBe(0);
    } finally {
      await ended(p);
    }
  });

  test('KEEPALIVE_TIMEOUT_MS sets the keep-alive timeout it announces', async () => {
    const p = await startProcess(ENTRY, { LAB_HOSTNAME: 'spring_app-3', KEEPALIVE_TIMEOUT_MS: '20000' });
    try {
      const res = await fetch(`http://127.0.0.1:${p.port}/app/health`);
      expect(res.headers.get('keep-alive')).toBe('timeout=20');
      await res.arrayBuffer();
    } finally {
      await ended(p);
    }
  });
});
