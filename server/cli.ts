/**
 * The instructor CLI: `npm run lab -- <command>` against a running lab.
 *   status [--json]           services, replicas (hostname, port, state, requests) and the proxy
 *   scale <service>=<n>       e.g. scale web_dynamic=5
 *   kill <hostname>           a replica's hostname or its slot (web_dynamic-2)
 *   reset [lesson]            back to the default topology (or a lesson's starting one), counts cleared
 *   proxy embedded|haproxy    swap the proxy engine; the replicas keep running
 *   set <setting>=<value>...  proxy settings: sticky=on|off, sticky.cookie=<name>|default,
 *                             algorithm=round-robin|least-connections|hash, hash.header=<name>,
 *                             hash.type=consistent|map-based; `<service>.<setting>=...` for one service
 *   weight <hostname>=<n>     a replica's round-robin weight, 0..256
 *   runtime <command...>      one HAProxy Runtime API command (allow-listed), e.g. runtime show stat
 *   fault <hostname> <mode>   crash | hang | slow=<ms> | errors | unhealthy | healthy
 *   restart <hostname>        start a crashed replica again at the same address
 *   redeploy <service> [--drain]  rolling redeploy, naive or with drain
 *   load [--rate n] [--seconds n] [--path p]  a steady load through the proxy (see the page's charts)
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

async function call<T = LabStatus>(t: Target, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
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
  return json as T;
}

/** Human-readable status table. */
export function formatStatus(s: LabStatus): string {
  const lines = [`Proxy: ${s.proxy.driver} at ${s.proxy.url}   runtime: ${s.runtime}   requests: ${s.requestsTotal}`];
  if (s.lesson) lines.push(`Lesson: ${s.lesson}`);
  const t = s.topology.proxy;
  lines.push(`Balancing: ${t.algorithm}${t.algorithm === 'hash' ? ` on ${t.hashHeader} (${t.hashType})` : ''}, sticky ${t.sticky ? `on${t.stickyCookie ? ` (cookie ${t.stickyCookie})` : ''}` : 'off'}`);
  for (const svc of s.services) {
    const impl = svc.instances.find((r) => r.implementation)?.implementation;
    const overrides = Object.entries(s.topology.services[svc.name]?.balancer ?? {}).map(([k, v]) => `${k}=${v}`);
    lines.push('', `${svc.name}  (${svc.instances.length}/${svc.replicas} replicas)${impl ? `  runs on ${impl}` : ''}${overrides.length ? `  [${overrides.join(', ')}]` : ''}`);
    for (const r of svc.instances) {
      lines.push(`  ${r.hostname.padEnd(22)} ${r.state.padEnd(9)} port ${String(r.port ?? '-').padEnd(6)} weight ${String(r.weight).padEnd(4)} requests ${r.requests}`);
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
  .argument('[lesson]', "a lesson slug such as 02-sticky-sessions: restore that lesson's starting topology")
  .description('kill every replica, clear counts, restore the default (or a lesson\'s) topology')
  .action(async (lesson?: string) => {
    const started = Date.now();
    const s = await call(target(program.opts()), 'POST', '/api/reset', lesson ? { lesson } : {});
    const what = s.services.map((x) => `${x.name} x${x.instances.length}`).join(', ');
    console.log(`Reset${lesson ? ` to lesson ${lesson}` : ''} in ${Date.now() - started} ms: ${what}.`);
  });

program
  .command('proxy')
  .argument('<engine>', 'embedded | haproxy | traefik')
  .description('swap the proxy engine on the same port; the replicas keep running')
  .action(async (engine: string) => {
    const s = await call(target(program.opts()), 'POST', '/api/proxy', { driver: engine });
    console.log(`Proxy is now ${s.proxy.driver} at ${s.proxy.url}${s.proxy.statsUrl ? ` (stats: ${s.proxy.statsUrl})` : ''}.`);
  });

program
  .command('set')
  .argument('<settings...>', 'e.g. sticky=on web_dynamic.algorithm=hash hash.header=X-Session-ID')
  .description('change proxy settings live (all or none)')
  .action(async (settings: string[]) => {
    await call(target(program.opts()), 'POST', '/api/settings', { settings });
    console.log(`Applied: ${settings.join(' ')}.`);
  });

program
  .command('weight')
  .argument('<hostname=n>', 'e.g. web_dynamic-1=3')
  .description("set a replica's round-robin weight (0..256)")
  .action(async (arg: string) => {
    const m = /^([A-Za-z0-9_.-]+)=(\d+)$/.exec(arg);
    if (!m) throw new CliError(`Expected <hostname>=<weight>, e.g. web_dynamic-1=3; got "${arg}".`, 2);
    const s = await call(target(program.opts()), 'POST', `/api/replicas/${encodeURIComponent(m[1])}/weight`, { weight: Number(m[2]) });
    const r = s.services.flatMap((x) => x.instances).find((x) => x.hostname === m[1] || x.hostname.startsWith(`${m[1]}-`));
    console.log(`Weight of ${r?.hostname ?? m[1]} is now ${r?.weight ?? m[2]}.`);
  });

program
  .command('runtime')
  .argument('<command...>', 'e.g. show stat')
  .description("run one command on HAProxy's Runtime API (allow-listed)")
  .action(async (words: string[]) => {
    const r = await call<{ output: string }>(target(program.opts()), 'POST', '/api/proxy/runtime', { command: words.join(' ') });
    process.stdout.write(r.output.endsWith('\n') ? r.output : `${r.output}\n`);
  });

program
  .command('fault')
  .argument('<hostname>', 'replica hostname or slot')
  .argument('<mode>', 'crash | hang | slow=<ms> | errors | unhealthy | healthy')
  .description('put a replica into a fault (a side channel, not through the proxy)')
  .action(async (name: string, mode: string) => {
    const slow = /^slow=(\d{1,6})$/.exec(mode);
    const modes = ['crash', 'hang', 'errors', 'unhealthy', 'healthy'];
    if (!slow && !modes.includes(mode)) throw new CliError(`Unknown fault "${mode}"; use one of: crash, hang, slow=<ms>, errors, unhealthy, healthy.`, 2);
    const s = await call(target(program.opts()), 'POST', `/api/replicas/${encodeURIComponent(name)}/fault`, slow ? { mode: 'slow', ms: Number(slow[1]) } : { mode });
    const r = s.services.flatMap((x) => x.instances).find((x) => x.hostname === name || x.hostname.startsWith(`${name}-`));
    console.log(mode === 'crash' ? `Crashed ${r?.hostname ?? name}${r ? ` (now ${r.state})` : ''}.` : `${r?.hostname ?? name} is now ${r?.fault ?? mode}.`);
  });

program
  .command('restart')
  .argument('<hostname>', 'a crashed replica')
  .description('start a crashed replica again at the same address')
  .action(async (name: string) => {
    await call(target(program.opts()), 'POST', `/api/replicas/${encodeURIComponent(name)}/restart`);
    console.log(`Restarted ${name}.`);
  });

program
  .command('redeploy')
  .argument('<service>', 'e.g. spring_app')
  .option('--drain', 'drain each replica before stopping it (no failed request)')
  .description('replace every replica of a service one by one')
  .action(async (service: string, o: { drain?: boolean }) => {
    const started = Date.now();
    await call(target(program.opts()), 'POST', `/api/services/${encodeURIComponent(service)}/redeploy`, { strategy: o.drain ? 'drain' : 'naive' });
    console.log(`Redeployed ${service} (${o.drain ? 'drain' : 'naive'}) in ${Date.now() - started} ms.`);
  });

program
  .command('load')
  .option('--rate <n>', 'requests a second (1..200)', '20')
  .option('--seconds <n>', 'duration (1..120)', '15')
  .option('--path <path>', 'path through the proxy', '/api/')
  .description('start a steady load through the proxy; the page charts it')
  .action(async (o: { rate: string; seconds: string; path: string }) => {
    const r = await call<{ runId: string }>(target(program.opts()), 'POST', '/api/load', { rate: Number(o.rate), seconds: Number(o.seconds), path: o.path });
    console.log(`Load ${r.runId} started: ${o.rate} req/s for ${o.seconds} s on ${o.path}.`);
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
