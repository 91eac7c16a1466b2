/**
 * web_static: the page names the replica that served it, escaped; the process follows the
 * lab's conventions (startup line, X-Served-By, keep-alive timeout, graceful SIGTERM).
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { appMounter, ended, startProcess } from '../shared/test-servers.js';
import { createApp, escapeHtml, hueOf } from './server.js';

const ENTRY = fileURLToPath(new URL('./server.js', import.meta.url));
const mount = appMounter();

/** Mounts the app in this process on a free port. */
const serve = (hostname: string) => mount(createApp({ hostname, log: false }));

describe('web_static page', () => {
  test('shows the hostname that served it, in the page and in X-Served-By, never cached', async () => {
    const base = await serve('web_static-2-ab12');
    const res = await fetch(`${base}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-served-by')).toBe('web_static-2-ab12');
    expect(res.headers.get('cache-control')).toBe('no-store');
    const html = await res.text();
    expect(html).toContain('<h1 class="hostname" data-testid="served-by">web_static-2-ab12</h1>');
    expect(html).toContain(`style="--hue: ${hueOf('web_static-2-ab12')}"`);
    expect(html).not.toContain('{{');
    for (const id of [
      'auto-reload',
      'fetch-dynamic',
      'dynamic-hostname',
      'dynamic-instance',
      'dynamic-history',
      'session-panel',
      'session-user',
      'session-replica',
      'session-history',
      'session-backend',
      'session-note',
    ]) {
      expect(html).toContain(`data-testid="${id}"`);
    }
    // The session panel's buttons are real buttons (keyboard: Tab, Enter, Space).
    expect(html).toContain('<button type="button" id="login" data-testid="login">Log in as alice</button>');
    expect(html).toContain('<button type="button" id="logout" data-testid="logout" class="secondary">Log out</button>');
    // The panel talks to session_php (another service behind the same proxy), with the cookie.
    expect(html).toContain("sessionCall('load', 'GET', '/session/')");
    expect(html).toContain("credentials: 'same-origin'");
    expect(html).toMatch(/<input type="checkbox" id="auto-reload"[^>]*>\s*Auto-reload every second\s*<\/label>/);
    // One page load = one request (so round-robin moves the page on every reload), and
    // nothing from another origin (the lab runs offline): CSS and JS are inlined.
    expect(html).not.toMatch(/(src|href)="(?!data:)/);
    expect(html).toContain("fetch('/api/', { cache: 'no-store'");
    expect(html).toContain('.hostname {');

    expect(await (await fetch(`${base}/index.html`)).text()).toBe(html);
  });

  test('escapes a hostname that contains markup', async () => {
    const evil = `<script>alert("x")</script>&'`;
    const base = await serve(evil);
    const res = await fetch(`${base}/`);
    const html = await res.text();
    expect(html).not.toContain('<script>alert');
    expect(html).toContain('data-testid="served-by">&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;&#38;&#39;</h1>');
    expect(html).toContain('<title>&#60;script&#62;');
    expect(res.headers.get('x-served-by')).toBe(evil);
    expect(escapeHtml(`a<b>"c"&'d'`)).toBe('a&#60;b&#62;&#34;c&#34;&#38;&#39;d&#39;');
  });

  test('inserts a hostname with replacement patterns literally', async () => {
    const html = await (await fetch(`${await serve('web_$&_$1-{{HUE}}')}/`)).text();
    expect(html).toContain('data-testid="served-by">web_$&#38;_$1-{{HUE}}</h1>');
  });

  test('refuses a hostname that cannot go in an HTTP header', () => {
    expect(() => createApp({ hostname: 'web\nstatic', log: false })).toThrow(/printable ASCII/);
  });

  test('serves its script and stylesheet, /health, and a 404 naming the replica', async () => {
    const base = await serve('web_static-1');
    const js = await fetch(`${base}/app.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/javascript/);
    expect(js.headers.get('x-served-by')).toBe('web_static-1');
    const script = await js.text();
    expect(script).toContain("fetch('/api/', { cache: 'no-store'");
    expect(script).toContain('sessionStorage');
    const css = await fetch(`${base}/style.css`);
    expect(css.status).toBe(200);
    expect(css.headers.get('content-type')).toMatch(/^text\/css/);
    await css.arrayBuffer();

    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });

    const missing = await fetch(`${base}/nope`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get('x-served-by')).toBe('web_static-1');
    expect(await missing.text()).toContain('web_static-1');
  });

  test('hues differ between replica names and stay the same for one name', () => {
    const hues = new Set(['web_static-1', 'web_static-2', 'web_static-3', 'web_dynamic-1'].map(hueOf));
    expect(hues.size).toBe(4);
    expect(hueOf('web_static-1')).toBe(hueOf('web_static-1'));
    for (const h of hues) {
      expect(h).toBeGreaterThanOrEqual(0);
      expect(h).toBeLessThan(360);
    }
  });
});

describe('web_static process', () => {
  test('prints its listening line, logs each request with its hostname, honours KEEPALIVE_TIMEOUT_MS, exits 0 on SIGTERM', async () => {
    const p = await startProcess(ENTRY, { LAB_HOSTNAME: 'web_static-p1', KEEPALIVE_TIMEOUT_MS: '7000' });
    try {
      expect(p.startup).toHaveLength(1);
      expect(p.startup[0]).toMatch(/^listening on http:\/\/127\.0\.0\.1:\d+$/);
      const { port } = p;

      const res = await fetch(`http://127.0.0.1:${port}/health`);
      expect(res.status).toBe(200);
      expect(res.headers.get('x-served-by')).toBe('web_static-p1');
      expect(res.headers.get('keep-alive')).toBe('timeout=7');
      await res.arrayBuffer();
      expect(await p.next()).toMatch(/^web_static-p1 127\.0\.0\.1 GET \/health 200 15 - [\d.]+ ms$/);

      p.child.kill('SIGTERM');
      expect(await p.exited).toEqual({ code: 0, signal: null });
    } finally {
      await ended(p);
    }
  });
});
