/**
 * serve.js, the startup the Node demo backends share: a bad PORT or KEEPALIVE_TIMEOUT_MS exits 2,
 * a port that cannot be bound exits 1 (spring_app adds its Spring failure line), SIGINT shuts down
 * like SIGTERM, and isEntryPoint() is false for an imported module.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { ended, startProcess } from './test-servers.js';
import { intFromEnv, isEntryPoint } from './serve.js';

const entry = (backend: string) => fileURLToPath(new URL(`../${backend}/server.js`, import.meta.url));

/** Runs `node <entry>` to its exit, with only PATH, HOST=127.0.0.1 and `env`. */
function runToExit(file: string, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [file], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

describe('serve', () => {
  test('intFromEnv: unset or empty -> the fallback, a whole number -> itself', () => {
    expect(intFromEnv(undefined, 3000, 'PORT')).toBe(3000);
    expect(intFromEnv('', 3000, 'PORT')).toBe(3000);
    expect(intFromEnv('0', 3000, 'PORT')).toBe(0);
    expect(intFromEnv('8081', 3000, 'PORT')).toBe(8081);
  });

  test('isEntryPoint is false for a module the test imports', () => {
    expect(isEntryPoint(new URL('./serve.js', import.meta.url).href)).toBe(false);
  });

  test.each(['web_static', 'web_dynamic', 'session_express', 'spring_app'])('%s: a bad PORT or KEEPALIVE_TIMEOUT_MS exits 2 before printing anything', async (backend) => {
    const port = await runToExit(entry(backend), { PORT: '1.5' });
    expect(port).toEqual({ code: 2, stdout: '', stderr: 'PORT must be a whole number >= 0, got "1.5"\n' });
    const keepAlive = await runToExit(entry(backend), { PORT: '0', KEEPALIVE_TIMEOUT_MS: '-1' });
    expect(keepAlive).toEqual({ code: 2, stdout: '', stderr: 'KEEPALIVE_TIMEOUT_MS must be a whole number >= 0, got "-1"\n' });
  });

  test('a port in use exits 1 with `cannot listen on`; spring_app says it first in Spring words', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const port = (holder.address() as net.AddressInfo).port;
    try {
      const plain = await runToExit(entry('web_dynamic'), { PORT: String(port) });
      expect(plain.code).toBe(1);
      expect(plain.stdout).toBe('');
      expect(plain.stderr).toMatch(new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE.*\\n$`));
      const spring = await runToExit(entry('spring_app'), { PORT: String(port) });
      expect(spring.code).toBe(1);
      const lines = spring.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(new RegExp(` ERROR \\d+ --- .* : Web server failed to start\\. Port ${port} was already in use\\. `));
      expect(lines[1]).toMatch(new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${port}: `));
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  test('SIGINT shuts down as SIGTERM does: exit 0 (spring_app logs its graceful shutdown)', async () => {
    const plain = await startProcess(entry('session_express'), { LAB_HOSTNAME: 'session_express-s1' });
    try {
      plain.child.kill('SIGINT');
      expect(await plain.exited).toEqual({ code: 0, signal: null });
    } finally {
      await ended(plain);
    }
    const spring = await startProcess(entry('spring_app'), { LAB_HOSTNAME: 'spring_app-s1' });
    try {
      spring.child.kill('SIGINT');
      expect(await spring.next()).toMatch(/GracefulShutdown +: Commencing graceful shutdown\. Waiting for active requests to complete$/);
      expect(await spring.next()).toMatch(/\[tomcat-shutdown\] o\.s\.b\.w\.e\.tomcat\.GracefulShutdown +: Graceful shutdown complete$/);
      expect(await spring.exited).toEqual({ code: 0, signal: null });
    } finally {
      await ended(spring);
    }
  });
});
