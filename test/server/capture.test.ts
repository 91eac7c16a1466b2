/**
 * Packet capture through the REST API: records the proxy's and replicas' traffic with tcpdump
 * (here: root with tcpdump installed, as .ci/run sets up), stops, downloads a .pcap; and the
 * sentences where it cannot run or is misused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startLab, type RunningLab } from '../../server/compose.ts';
import { createLabServer, type LabServer } from '../../server/app.ts';
import { Capture } from '../../lab/capture.ts';

let lab: RunningLab;
let stateDir: string;

function api(base: string, pathname: string, init: RequestInit = {}, token = lab.token) {
  return fetch(`${base}${pathname}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
  });
}

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 'lab-capture-'));
  lab = await startLab({ host: '127.0.0.1', port: 0, proxyPort: 0, stateDir });
});

afterAll(async () => {
  await lab.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

describe('packet capture', () => {
  it('records 3 requests through the proxy and downloads a .pcap', async () => {
    const before = await (await api(lab.apiUrl, '/api/capture')).json();
    expect(before).toMatchObject({ available: true, running: false, fileBytes: null });

    const started = await api(lab.apiUrl, '/api/capture/start', { method: 'POST', body: JSON.stringify({ seconds: 30 }) });
    expect(started.status).toBe(200);
    const state = await started.json();
    expect(state.running).toBe(true);
    expect(state.ports).toContain(lab.proxyPort);

    const again = await api(lab.apiUrl, '/api/capture/start', { method: 'POST', body: '{}' });
    expect(again.status).toBe(409);
    expect((await again.json()).error).toMatch(/already recording/);

    const early = await api(lab.apiUrl, '/api/capture/file');
    expect(early.status).toBe(409);
    expect((await early.json()).error).toMatch(/still recording/);

    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${lab.proxyUrl}api/`);
      expect(res.status).toBe(200);
      await res.text();
    }

    const stopped = await api(lab.apiUrl, '/api/capture/stop', { method: 'POST' });
    expect(stopped.status).toBe(200);
    const after = await stopped.json();
    expect(after).toMatchObject({ running: false, endedBy: 'stopped' });
    expect(after.fileBytes).toBeGreaterThan(24);

    const file = await api(lab.apiUrl, '/api/capture/file');
    expect(file.status).toBe(200);
    expect(file.headers.get('content-disposition')).toMatch(/^attachment; filename="?balancer-lab-[0-9TZ-]+\.pcap"?$/);
    const bytes = Buffer.from(await file.arrayBuffer());
    expect(bytes.length).toBeGreaterThan(24);
    // pcap magic number, either byte order (microsecond or nanosecond timestamps).
    expect(['d4c3b2a1', 'a1b2c3d4', '4d3cb2a1', 'a1b23c4d']).toContain(bytes.subarray(0, 4).toString('hex'));
    // The GET of the proxy is in it.
    expect(bytes.includes(Buffer.from('GET /api/ HTTP/1.1'))).toBe(true);

    const noToken = await api(lab.apiUrl, '/api/capture/file', {}, 'x'.repeat(lab.token.length));
    expect(noToken.status).toBe(401);
  });

  it('refuses to stop when nothing records, and bad input, with sentences', async () => {
    const stop = await api(lab.apiUrl, '/api/capture/stop', { method: 'POST' });
    expect(stop.status).toBe(409);
    expect((await stop.json()).error).toMatch(/^No capture is recording/);

    for (const body of ['{"seconds": 0}', '{"seconds": "ten"}', '{"seconds": 9999}', '{"file": "/etc/passwd"}']) {
      const res = await api(lab.apiUrl, '/api/capture/start', { method: 'POST', body });
      expect(res.status, body).toBe(400);
      expect((await res.json()).error, body).toMatch(/seconds|body must be/);
    }
    expect((await (await api(lab.apiUrl, '/api/capture')).json()).running).toBe(false);
  });

  it('says why when tcpdump is missing', async () => {
    const capture = new Capture({ dir: path.join(stateDir, 'nowhere'), tcpdumpPath: path.join(stateDir, 'no-such-tcpdump') });
    expect(capture.available()).toEqual({ ok: false, reason: expect.stringMatching(/needs tcpdump, which is not installed here/) });

    const server: LabServer = createLabServer({ lab: lab.lab, bus: lab.bus, token: lab.token, staticDir: stateDir, capture });
    const port = await server.listen(0, '127.0.0.1');
    try {
      const base = `http://127.0.0.1:${port}`;
      const state = await (await api(base, '/api/capture')).json();
      expect(state).toMatchObject({ available: false, running: false });
      expect(state.reason).toMatch(/apt-get install -y tcpdump/);
      const start = await api(base, '/api/capture/start', { method: 'POST', body: '{}' });
      expect(start.status).toBe(409);
      expect((await start.json()).error).toBe(state.reason);
      const file = await api(base, '/api/capture/file');
      expect(file.status).toBe(404);
      expect((await file.json()).error).toMatch(/No capture recorded yet/);
    } finally {
      await server.close();
    }
  });
});
