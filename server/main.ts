/**
 * `npm start`: builds the web app if needed, starts the lab (process runtime, embedded proxy)
 * on 127.0.0.1 and prints its URL. Ctrl-C (SIGINT) or SIGTERM stops everything it started.
 *
 * Flags override env: --port (LAB_PORT, 4000), --proxy-port (LAB_PROXY_PORT, 8080),
 * --host (LAB_HOST, 127.0.0.1), --token (LAB_TOKEN, random), --state-dir (LAB_STATE_DIR, .lab/).
 */
import { Command, InvalidArgumentError } from 'commander';
import { buildWebIfNeeded } from './build-web.ts';
import { startLab, type RunningLab } from './compose.ts';
import { defaultStateDir } from './state-file.ts';

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
  .option('--port <port>', 'lab server port (env LAB_PORT)', portOption('--port'))
  .option('--proxy-port <port>', 'proxy port (env LAB_PROXY_PORT)', portOption('--proxy-port'))
  .option('--host <host>', 'interface to bind (env LAB_HOST)')
  .option('--token <token>', 'fixed access token instead of a random one (env LAB_TOKEN)')
  .option('--state-dir <dir>', 'where the running lab writes its state file (env LAB_STATE_DIR)')
  .showHelpAfterError();

program.parse();
const opts = program.opts<{ port?: number; proxyPort?: number; host?: string; token?: string; stateDir?: string }>();

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

const config = {
  host: opts.host ?? process.env.LAB_HOST ?? '127.0.0.1',
  port: opts.port ?? envPort('LAB_PORT', 4000),
  proxyPort: opts.proxyPort ?? envPort('LAB_PROXY_PORT', 8080),
  token: opts.token ?? (process.env.LAB_TOKEN || undefined),
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
  console.log('Starting the lab: embedded proxy, web_static x3, web_dynamic x3...');
  starting = startLab(config);
  const running = await starting;
  if (exiting) await new Promise(() => undefined); // shutdown() is stopping it
  if (running.swept > 0) console.log(`Removed ${running.swept} leftover process(es) of an earlier run.`);
  console.log(`Proxy: ${running.proxyUrl}`);
  console.log(`Lab ready: ${running.url}`);
  console.log('Open the Lab URL in a browser. Ctrl-C stops everything.');
} catch (err) {
  console.error(`Error: ${(err as Error).message}`);
  process.exit(1);
}
