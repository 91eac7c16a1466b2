/**
 * The instructor CLI: `npm run lab -- <command>` against a running lab.
 *   status [--json]           services, replicas (hostname, port, state, requests) and the proxy
 *   scale <service>=<n>       e.g. scale web_dynamic=5
 *   kill <hostname>           a replica's hostname or its slot (web_dynamic-2)
 *   reset                     back to the default topology, counts cleared
 * Finds the lab through its state file (LAB_STATE_DIR or .lab/lab.json), or --url and --token.
 * Exit codes: 0 done, 1 the lab refused or failed (its sentence is printed), 2 bad usage,
 * 3 no running lab found.
 */
import { Command, CommanderError } from 'commander';
import type { LabStatus } from '../lab/status.ts';
import { defaultStateDir, readStateFile, stateFilePath } from './state-file.ts';

class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

interface Target {
  url: string;
  token: string;
}

function target(opts: { url?: string; token?: string }): Target {
  const stateDir = defaultStateDir();
  const state = readStateFile(stateDir);
  const url = opts.url || process.env.LAB_URL || state?.url;
  const token = opts.token || process.env.LAB_TOKEN || state?.token;
  if (!url || !token) {
    throw new CliError(
      `No running lab found (looked for ${stateFilePath(stateDir)}). Start one with \`npm start\`, or pass --url and --token.`,
      3,
    );
  }
  return { url: url.replace(/\/+$/, ''), token };
}

async function call(t: Target, method: 'GET' | 'POST', path: string, body?: unknown): Promise<LabStatus> {
  let res: Response;
  try {
    res = await fetch(`${t.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${t.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new CliError(`No running lab answers at ${t.url}. Start one with \`npm start\`.`, 3);
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CliError(`The lab at ${t.url} answered ${res.status} with something that is not JSON.`, 1);
  }
  if (!res.ok) throw new CliError(`The lab refused (${res.status}): ${(json as { error?: string }).error ?? text}`, 1);
  return json as LabStatus;
}

/** Human-readable status table. */
export function formatStatus(s: LabStatus): string {
  const lines = [`Proxy: ${s.proxy.driver} at ${s.proxy.url}   runtime: ${s.runtime}   requests: ${s.requestsTotal}`];
  for (const svc of s.services) {
    lines.push('', `${svc.name}  (${svc.instances.length}/${svc.replicas} replicas)`);
    for (const r of svc.instances) {
      lines.push(`  ${r.hostname.padEnd(22)} ${r.state.padEnd(9)} port ${String(r.port ?? '-').padEnd(6)} requests ${r.requests}`);
    }
    if (svc.instances.length === 0) lines.push('  (no replicas)');
  }
  return lines.join('\n');
}

const program = new Command()
  .name('npm run lab --')
  .description('Drive a running Balancer Lab.')
  .option('--url <url>', 'lab server URL (default: from the state file)')
  .option('--token <token>', 'lab token (default: from the state file)')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

program
  .command('status')
  .description('print services, replicas and the proxy')
  .option('--json', 'print the status as JSON')
  .action(async (o: { json?: boolean }) => {
    const s = await call(target(program.opts()), 'GET', '/api/status');
    console.log(o.json ? JSON.stringify(s, null, 2) : formatStatus(s));
  });

program
  .command('scale')
  .argument('<service=n>', 'e.g. web_dynamic=5')
  .description('set a service replica count (0..10)')
  .action(async (arg: string) => {
    const m = /^([A-Za-z0-9_]+)=(\d+)$/.exec(arg);
    if (!m) throw new CliError(`Expected <service>=<count>, e.g. web_dynamic=5; got "${arg}".`, 2);
    const s = await call(target(program.opts()), 'POST', `/api/services/${encodeURIComponent(m[1])}/scale`, { replicas: Number(m[2]) });
    const svc = s.services.find((x) => x.name === m[1]);
    console.log(`Scaled ${m[1]} to ${svc?.instances.length ?? m[2]} replica(s): ${svc?.instances.map((r) => r.hostname).join(', ') || 'none'}.`);
  });

program
  .command('kill')
  .argument('<hostname>', 'replica hostname, or its slot such as web_dynamic-2')
  .description('kill one replica (SIGKILL), as docker kill would')
  .action(async (name: string) => {
    const before = await call(target(program.opts()), 'GET', '/api/status');
    const known = before.services.flatMap((s) => s.instances.map((r) => r.hostname));
    await call(target(program.opts()), 'POST', `/api/replicas/${encodeURIComponent(name)}/kill`);
    const match = known.find((h) => h === name) ?? known.find((h) => h.startsWith(`${name}-`)) ?? name;
    console.log(`Killed ${match}; it left the proxy's pool.`);
  });

program
  .command('reset')
  .description('kill every replica, clear counts, restore the default topology')
  .action(async () => {
    const started = Date.now();
    const s = await call(target(program.opts()), 'POST', '/api/reset');
    console.log(`Reset in ${Date.now() - started} ms: ${s.services.map((x) => `${x.name} x${x.instances.length}`).join(', ')}.`);
  });

try {
  await program.parseAsync();
} catch (err) {
  if (err instanceof CommanderError) {
    // commander printed its own message (help, unknown command, missing argument).
    process.exit(err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : 2);
  }
  if (err instanceof CliError) {
    console.error(`Error: ${err.message}`);
    process.exit(err.exitCode);
  }
  console.error(`Error: ${(err as Error).message}`);
  process.exit(1);
}
