/**
 * `npm start`: builds the web app if needed, starts the lab (process runtime by default, embedded proxy)
 * on 127.0.0.1 and prints its URL. Ctrl-C (SIGINT) or SIGTERM stops everything it started.
 *
 * Flags override env: --runtime process|docker (LAB_RUNTIME, process), --port (LAB_PORT, 4000), --proxy-port (LAB_PROXY_PORT, 8080),
 * --host (LAB_HOST, 127.0.0.1), --token (LAB_TOKEN, random),
 * --readonly-token (LAB_READONLY_TOKEN, random: the printed "Watch-only URL"),
 * --allow-host <names> (LAB_ALLOWED_HOSTS, comma-separated: names/addresses students reach the lab by), --state-dir (LAB_STATE_DIR, .lab/).
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import type { ImageBuildProgressed } from '../lab/events.ts';
import { RUNTIME_NAMES, type RuntimeName } from './runtimes.ts';
import { buildWebIfNeeded } from './build-web.ts';
import { startLab, type RunningLab } from './compose.ts';
import { defaultStateDir } from './state-file.ts';

/** A comma-separated list of DNS names or IPv4 addresses (no port, no scheme). */
function hostList(name: string) {
  return (value: string): string[] => {
    const names = value.split(',').map((h) => h.trim().toLowerCase()).filter(Boolean);
    const bad = names.find((h) => h.length > 253 || !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(h));
    if (names.length === 0 || bad !== undefined) throw new InvalidArgumentError(`${name} takes host names or IPv4 addresses separated by commas, e.g. 192.168.1.20,lab.local${bad ? `; "${bad.slice(0, 60)}" is not one` : ''}.`);
    return names;
  };
}

function portOption(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`${name} must be a port number 0..65535 (0 = any free port).`);
    return n;
  };
}

const program = new Command()
  .name('npm start --')
  .description('Start Balancer Lab: a real reverse proxy in front of real replicas, and the lesson pages.')
  .addOption(new Option('--runtime <runtime>', 'where replicas run: process, or docker containers (env LAB_RUNTIME)').choices(RUNTIME_NAMES))
  .option('--port <port>', 'lab server port (env LAB_PORT)', portOption('--port'))
  .option('--proxy-port <port>', 'proxy port (env LAB_PROXY_PORT)', portOption('--proxy-port'))
  .option('--host <host>', 'interface to bind (env LAB_HOST)')
  .option('--token <token>', 'fixed access token instead of a random one (env LAB_TOKEN)')
  .option('--readonly-token <token>', 'fixed watch-only token for students instead of a random one (env LAB_READONLY_TOKEN)')
  .option('--allow-host <names>', 'comma-separated host names or addresses the pages may also be reached by, e.g. this machine\'s LAN address with --host 0.0.0.0 (env LAB_ALLOWED_HOSTS)', hostList('--allow-host'))
  .option('--state-dir <dir>', 'where the running lab writes its state file (env LAB_STATE_DIR)')
  .showHelpAfterError();

program.parse();
const opts = program.opts<{ runtime?: RuntimeName; port?: number; proxyPort?: number; host?: string; token?: string; readonlyToken?: string; allowHost?: string[]; stateDir?: string }>();

function envPort(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  try {
    return portOption(name)(raw);
  } catch (err) {
    console.error(`Error: ${(err as Error).message}`);
    process.exit(2);
  }
}

function envHosts(): string[] | undefined {
  const raw = process.env.LAB_ALLOWED_HOSTS;
  if (raw === undefined || raw === '') return undefined;
  try {
    return hostList('LAB_ALLOWED_HOSTS')(raw);
  } catch (err) {
    console.error(`Error: ${(err as Error).message}`);
    process.exit(2);
  }
}

function envRuntime(): RuntimeName {
  const raw = process.env.LAB_RUNTIME;
  if (raw === undefined || raw === '') return 'process';
  if ((RUNTIME_NAMES as readonly string[]).includes(raw)) return raw as RuntimeName;
  console.error(`Error: LAB_RUNTIME must be one of ${RUNTIME_NAMES.join(', ')}, not ${JSON.stringify(raw)}.`);
  process.exit(2);
}

/** Terminal progress of Docker image builds: each step once, and how each build ended. */
function printImageBuild(e: ImageBuildProgressed): void {
  if (e.done) console.log(e.error ? `  ${e.image}: build failed: ${e.error}` : `  ${e.image}: built`);
  else if (/^Step \d+\/\d+ :/.test(e.text)) console.log(`  ${e.image}: ${e.text}`);
}

const runtime = opts.runtime ?? envRuntime();
const config = {
  runtime,
  // Set by docker-compose.yml when the lab runs in a container next to Compose's replicas.
  dockerNetwork: process.env.LAB_DOCKER_NETWORK || undefined,
  composeProject: process.env.LAB_COMPOSE_PROJECT || undefined,
  onImageBuild: printImageBuild,
  onListening: (url: string) => {
    if (runtime === 'docker') console.log(`Lab server up (images may take a few minutes to build; the page shows the progress): ${url}`);
  },
  host: opts.host ?? process.env.LAB_HOST ?? '127.0.0.1',
  port: opts.port ?? envPort('LAB_PORT', 4000),
  proxyPort: opts.proxyPort ?? envPort('LAB_PROXY_PORT', 8080),
  token: opts.token ?? (process.env.LAB_TOKEN || undefined),
  readonlyToken: opts.readonlyToken ?? (process.env.LAB_READONLY_TOKEN || undefined),
  allowedHosts: opts.allowHost ?? envHosts(),
  stateDir: opts.stateDir ?? defaultStateDir(),
};

let starting: Promise<RunningLab> | null = null;
let exiting = false;
async function shutdown(signal: string): Promise<void> {
  if (exiting) return;
  exiting = true;
  console.log(`\n${signal}: stopping the lab...`);
  // A signal during start waits for the start to finish, so no replica is orphaned.
  const running = await starting?.catch(() => null);
  await running?.stop();
  console.log('Lab stopped; no replica left running.');
  process.exit(0);
}
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));

try {
  await buildWebIfNeeded((line) => console.log(line));
  console.log(`Starting the lab (${runtime === 'docker' ? 'Docker containers' : 'local processes'}): embedded proxy, web_static x3, web_dynamic x3...`);
  starting = startLab(config);
  const running = await starting;
  if (exiting) await new Promise(() => undefined); // shutdown() is stopping it
  if (running.swept > 0) console.log(`Removed ${running.swept} leftover ${runtime === 'docker' ? 'container(s) and network(s)' : 'process(es)'} of an earlier run.`);
  console.log(`Proxy: ${running.proxyUrl}`);
  // Before "Lab ready" (the line scripts wait for), so it is known by then.
  console.log(`Watch-only URL: ${running.watchUrl}   (for students: shows the lab live, cannot change it)`);
  console.log(`Lab ready: ${running.url}`);
  console.log('Open the Lab URL in a browser. Ctrl-C stops everything.');
} catch (err) {
  console.error(`Error: ${(err as Error).message}`);
  process.exit(1);
}
