// Test fixture: a separate "lab" process that starts one web_dynamic replica with ProcessRuntime,
// prints `ready <replica pid>`, and stays up until killed (SIGTERM: stops its replica first).
// Usage: node --import tsx lab-owner.ts <stateDir> <sessionId>
import { ProcessRuntime } from '../process-runtime.ts';

const [stateDir, sessionId] = process.argv.slice(2);
const runtime = new ProcessRuntime({ sessionId, stateDir });
const handle = await runtime.start(
  { service: 'web_dynamic', hostname: `web_dynamic-${sessionId}` },
  { onLog() {}, onExit() {} },
);
process.stdout.write(`ready ${handle.pid}\n`);
process.once('SIGTERM', () => {
  void runtime.stopAll().then(() => process.exit(0));
});
setInterval(() => {}, 1 << 30);
