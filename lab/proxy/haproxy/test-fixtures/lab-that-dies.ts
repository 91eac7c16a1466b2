/**
 * A "lab" that starts HAProxy and is then killed (by the test) before it can stop it:
 * `node --import tsx lab-that-dies.ts <workDir> <backendPort>`. Prints `port <n> pid <master>` once ready.
 */
import { EventBus } from '../../../events.ts';
import { HaproxyDriver } from '../haproxy-driver.ts';

const [workDir, backendPort] = process.argv.slice(2);
const driver = new HaproxyDriver({ bus: new EventBus(), workDir });
const port = await driver.start({
  entrypoint: { name: 'web', host: '127.0.0.1', port: 0 },
  routers: [{ name: 'r', pathPrefix: '/', stripPrefix: false, service: 's', priority: 1 }],
  services: [{ name: 's', loadBalancer: { algorithm: 'round-robin', servers: [{ name: 'b', url: `http://127.0.0.1:${backendPort}`, weight: 1 }] } }],
});
process.stdout.write(`port ${port} pid ${driver.pid}\n`);
setInterval(() => {}, 60_000);
