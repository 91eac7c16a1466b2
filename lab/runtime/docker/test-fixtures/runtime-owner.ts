// Test fixture: a separate "lab" process that starts one web_dynamic replica with the given
// runtime, prints `ready <host>:<port> <pid or ->`, and stays up until killed (SIGTERM: stops it first).
// Usage: node --import tsx runtime-owner.ts <process|docker> <stateDir> <sessionId> [<docker cache dir>]
// (Docker: the base comes from LAB_DOCKER_BASE, as in the lab.)
import { ProcessRuntime } from '../../process-runtime.ts';
import { DockerRuntime } from '../docker-runtime.ts';

const [kind, stateDir, sessionId, cacheDir] = process.argv.slice(2);
const runtime =
  kind === 'docker'
    ? new DockerRuntime({ sessionId, stateDir, ...(cacheDir ? { cacheDir } : {}) })
    : new ProcessRuntime({ sessionId, stateDir });
const handle = await runtime.start({ service: 'web_dynamic', hostname: `web_dynamic-${sessionId}` }, { onLog() {}, onExit() {} });
process.stdout.write(`ready ${handle.host}:${handle.port} ${handle.pid ?? '-'}\n`);
process.once('SIGTERM', () => {
  void runtime.stopAll().then(() => process.exit(0));
});
setInterval(() => {}, 1 << 30);
