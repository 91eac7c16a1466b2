/**
 * docker-compose.yml as Compose itself reads it (`docker compose config`, or `docker-compose config`
 * with the Compose 1.29 Debian packages), checked against the topology the lab uses: every demo
 * service is there, built from sandbox-images/ as the lab builds it (Dockerfile, build args), and Traefik's label routers match the
 * lab's default routes (same PathPrefix, prefix stripped where the lab strips it).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { sandboxImageTarget } from '../../lab/runtime/docker/images.ts';
import { SERVICE_NAMES, defaultTopology } from '../../lab/topology.ts';
import { REPO_ROOT } from '../../server/state-file.ts';

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: REPO_ROOT, env: { ...process.env, COMPOSE_PROJECT_NAME: '' } }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 127) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The first Compose that answers: `docker compose` (v2 plugin), else `docker-compose` (v1). */
async function findCompose(): Promise<{ cmd: string; args: string[] } | null> {
  if ((await run('docker', ['compose', 'version'])).code === 0) return { cmd: 'docker', args: ['compose'] };
  if ((await run('docker-compose', ['version'])).code === 0) return { cmd: 'docker-compose', args: [] };
  return null;
}

const compose = await findCompose();
if (!compose) console.warn('compose-file: skipped: neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose).');

interface ComposeService {
  build?: { context: string; dockerfile?: string; args?: Record<string, string> };
  labels?: Record<string, string>;
  ports?: Array<{ host_ip?: string; published?: string | number; target?: number } | string>;
  volumes?: Array<{ source?: string; target?: string } | string>;
}

(compose ? describe : describe.skip)('docker-compose.yml', () => {
  let services: Record<string, ComposeService> = {};

  it('is valid for Compose and has the lab server, Traefik and every demo service', async () => {
    const r = await run(compose!.cmd, [...compose!.args, 'config']);
    expect(r.stderr).not.toMatch(/error|invalid/i);
    expect(r.code).toBe(0);
    const doc = parse(r.stdout) as { services: Record<string, ComposeService>; networks: Record<string, { name?: string }> };
    services = doc.services;
    expect(Object.keys(services).sort()).toEqual(['lab', 'traefik', ...SERVICE_NAMES].sort());
    const names = await run(compose!.cmd, [...compose!.args, 'config', '--services']);
    expect(names.code).toBe(0);
    expect(names.stdout.trim().split('\n').sort()).toEqual(['lab', 'traefik', ...SERVICE_NAMES].sort());
  });

  it('builds every demo service in sandbox-images/ from the Dockerfile and build args the lab builds it with, labelled with its service name', () => {
    for (const name of SERVICE_NAMES) {
      const s = services[name];
      expect(s, name).toBeDefined();
      const target = sandboxImageTarget(name);
      expect(path.resolve(REPO_ROOT, s.build!.context)).toBe(path.join(REPO_ROOT, 'sandbox-images'));
      const dockerfile = path.resolve(REPO_ROOT, s.build!.context, s.build!.dockerfile ?? 'Dockerfile');
      expect(dockerfile).toBe(path.join(REPO_ROOT, 'sandbox-images', target.dockerfile));
      expect(existsSync(dockerfile), dockerfile).toBe(true);
      expect(s.build!.args ?? {}, name).toMatchObject(target.buildArgs ?? {});
      expect(Object.keys(s.build!.args ?? {}), name).toContain(target.baseArg);
      expect(s.labels?.['balancer-lab.service']).toBe(name);
      expect(s.labels?.['traefik.enable']).toBe('true');
    }
  });

  it("Traefik's label routers match the lab's default routes (PathPrefix and StripPrefix)", () => {
    for (const route of defaultTopology().routes) {
      const labels = services[route.service].labels ?? {};
      const rule = labels[`traefik.http.routers.${route.service}.rule`];
      expect(rule, route.service).toContain(`PathPrefix(\`${route.pathPrefix}\`)`);
      const middlewares = (labels[`traefik.http.routers.${route.service}.middlewares`] ?? '').split(',').filter(Boolean);
      const strips = middlewares.map((m) => labels[`traefik.http.middlewares.${m}.stripprefix.prefixes`]).filter(Boolean);
      if (route.stripPrefix) expect(strips.map((p) => p.replace(/\/?$/, '/'))).toContain(route.pathPrefix);
      else expect(strips).toEqual([]);
    }
  });

  it('publishes ports on 127.0.0.1 only, and gives the Docker socket to the lab server and Traefik alone', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const p of s.ports ?? []) {
        const hostIp = typeof p === 'string' ? p.split(':')[0] : p.host_ip;
        expect(hostIp, `${name} port ${JSON.stringify(p)}`).toBe('127.0.0.1');
      }
      const socket = (s.volumes ?? []).some((v) => (typeof v === 'string' ? v : v.source ?? '').includes('docker.sock'));
      expect(socket, name).toBe(name === 'lab' || name === 'traefik');
    }
    expect(existsSync(path.join(REPO_ROOT, 'Dockerfile'))).toBe(true);
  });
});
