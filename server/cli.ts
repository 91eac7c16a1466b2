/**
 * The instructor CLI: `npm run lab -- <command>` against a running lab.
 *   status [--json]           services, replicas (hostname, port, state, requests) and the proxy
 *   scale <service>=<n>       e.g. scale web_dynamic=5
 *   kill <hostname>           a replica's hostname or its slot (web_dynamic-2)
 *   reset [lesson] [--default]  kill every replica, clear counts, faults, sessions and history; restore
 *                             that lesson's starting topology (default: the class's current lesson,
 *                             else the default topology; --default: the default topology)
 *   lesson <slug> [--reset]   move every connected page to that lesson (and restore its start)
 *   lessons                   list the lessons and the class's current one
 *   export [--out file] [--html]  the recent run as JSON (or a self-contained HTML report)
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
 * 3 no running lab found, 4 the token is the watch-only one (it may look, not change).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Command, CommanderError } from 'commander';
import type { LabStatus } from '../lab/status.ts';
import type { NavigateResult, RunExport, SessionInfo } from './protocol.ts';
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

/** Exit code when the lab refused a command because the token is the watch-only one. */
const EXIT_WATCH_ONLY = 4;

/** One REST call; the body as text. Throws CliError with the lab's sentence on a refusal. */
async function callText(t: Target, method: 'GET' | 'POST', path: string, body?: unknown): Promise<string> {
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
  if (res.ok) return text;
  let error = text.slice(0, 300);
  try {
    error = (JSON.parse(text) as { error?: string }).error ?? error;
  } catch {
    // not JSON: the text itself
  }
  if (res.status === 403 && /watch-only/i.test(error)) {
    throw new CliError(`${error} This CLI was given the watch-only token: pass the instructor's with --token, or drop --token/LAB_TOKEN to use .lab/lab.json.`, EXIT_WATCH_ONLY);
  }
  throw new CliError(`The lab refused (${res.status}): ${error}`, 1);
}

async function call<T = LabStatus>(t: Target, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const text = await callText(t, method, path, body);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new CliError(`The lab at ${t.url} answered with something that is not JSON.`, 1);
  }
}

/** A path as the user meant it: relative to where `npm run` was typed (INIT_CWD), not the repo root. */
function userPath(file: string): string {
  return path.resolve(process.env.INIT_CWD ?? process.cwd(), file);
}

/** Human-readable status table. */
export function formatStatus(s: LabStatus): string {
  const lines = [`Proxy: ${s.proxy.driver} at ${s.proxy.url}   runtime: ${s.runtime}   requests: ${s.requestsTotal}`];
  if (s.proxy.down) lines.push(`PROXY DOWN: ${s.proxy.driver} died (${s.proxy.down}); nothing answers on port ${s.proxy.port}. \`reset\` starts it again.`);
  if (s.lesson) lines.push(`Lesson set up: ${s.lesson}`);
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
    const t = target(program.opts());
    const s = await call(t, 'GET', '/api/status');
    if (o.json) {
      console.log(JSON.stringify(s, null, 2));
      return;
    }
    const session = await call<SessionInfo>(t, 'GET', '/api/session');
    const pages = session.pages ? `${session.pages.control + session.pages.watch} page(s) open (${session.pages.control} with the instructor's token, ${session.pages.watch} watch-only)` : '';
    console.log(`${formatStatus(s)}\n\nClass: ${session.lesson ? `on lesson ${session.lesson.folder}` : 'no lesson chosen yet'}${pages ? `; ${pages}` : ''}.`);
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
  .option('--default', 'restore the default topology (web_static x3, web_dynamic x3), not a lesson\'s')
  .description("kill every replica, clear counts, faults, sessions and history; restore the current lesson's (or the default) topology")
  .action(async (lesson: string | undefined, o: { default?: boolean }) => {
    if (lesson && o.default) throw new CliError('Give a lesson or --default, not both.', 2);
    const started = Date.now();
    const s = await call(target(program.opts()), 'POST', '/api/reset', o.default ? { lesson: null } : lesson ? { lesson } : {});
    const what = s.services.map((x) => `${x.name} x${x.instances.length}`).join(', ');
    console.log(`Reset in ${Date.now() - started} ms${s.lesson ? ` to the start of lesson ${s.lesson}` : ''}: ${what}.`);
  });

program
  .command('lesson')
  .argument('<slug>', 'e.g. 02-sticky-sessions or sticky-sessions')
  .option('--reset', "also restore that lesson's starting topology")
  .description('move every connected page to a lesson')
  .action(async (slug: string, o: { reset?: boolean }) => {
    const t = target(program.opts());
    const r = await call<NavigateResult>(t, 'POST', '/api/navigate', { lesson: slug });
    console.log(`Moved ${r.browsers} connected page(s) to lesson ${r.folder} “${r.title}” (${r.path}).`);
    if (o.reset) {
      const started = Date.now();
      const s = await call(t, 'POST', '/api/reset', { lesson: r.folder });
      console.log(`Reset to its start in ${Date.now() - started} ms: ${s.services.map((x) => `${x.name} x${x.instances.length}`).join(', ')}.`);
    }
  });

program
  .command('lessons')
  .description("list the lessons and the class's current one")
  .action(async () => {
    const s = await call<SessionInfo>(target(program.opts()), 'GET', '/api/session');
    for (const l of s.lessons) console.log(`${s.lesson?.folder === l.folder ? '*' : ' '} ${l.folder.padEnd(22)} ${l.title}`);
    console.log(s.lesson ? `The class is on ${s.lesson.folder}.` : 'No current lesson yet: `lesson <slug>` sets one.');
  });

program
  .command('export')
  .option('--out <file>', 'where to write it (default: balancer-lab-run-<time>.json or .html here; - for stdout)')
  .option('--html', 'the self-contained HTML report instead of JSON (also when --out ends in .html)')
  .description('save the recent run (requests, health, load, connections, topology, proxy config)')
  .action(async (o: { out?: string; html?: boolean }) => {
    const t = target(program.opts());
    const html = o.html || /\.html?$/i.test(o.out ?? '');
    const text = html ? await callText(t, 'GET', '/api/export.html') : await callText(t, 'GET', '/api/export');
    let run: RunExport | null = null;
    if (!html) {
      try {
        run = JSON.parse(text) as RunExport;
      } catch {
        throw new CliError(`The lab at ${t.url} answered the export with something that is not JSON.`, 1);
      }
    }
    if (o.out === '-') {
      process.stdout.write(html ? text : `${JSON.stringify(run, null, 2)}\n`);
      return;
    }
    const file = userPath(o.out ?? `balancer-lab-run-${new Date().toISOString().replace(/[:.]/g, '-')}.${html ? 'html' : 'json'}`);
    try {
      writeFileSync(file, html ? text : `${JSON.stringify(run, null, 2)}\n`);
    } catch (err) {
      throw new CliError(`Could not write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}.`, 1);
    }
    const size = Buffer.byteLength(text);
    console.log(
      html
        ? `Wrote the HTML report (${Math.round(size / 1024)} KiB, opens offline) to ${file}.`
        : `Wrote ${run!.counts.total} request(s) (${run!.requests.length} listed), ${run!.replicas.length} replica(s) and the ${run!.proxy.driver} configuration to ${file}.`,
    );
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
    // Decimal digits only: Number() would also take "0x10", "1e1" or " " (found by test/server/cli-fuzz.test.ts).
    for (const [flag, value] of [['--rate', o.rate], ['--seconds', o.seconds]] as const) {
      if (!/^\d{1,6}$/.test(value)) throw new CliError(`${flag} takes a whole number such as ${flag === '--rate' ? '20' : '15'}; got "${value.slice(0, 40)}".`, 2);
    }
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
