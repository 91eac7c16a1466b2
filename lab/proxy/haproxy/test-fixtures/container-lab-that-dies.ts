/**
 * A "lab" that starts HAProxy in a container and is then killed (by the test) before it can stop
 * it: `node --import tsx container-lab-that-dies.ts <workDir> <backendPort> <sessionId> <image>`.
 * Prints `port <n>` once ready.
 */
import { EventBus } from '../../../events.ts';
import { connectDocker } from '../../../runtime/docker/docker-client.ts';
import { HaproxyContainerHost } from '../../../runtime/docker/haproxy-container.ts';
import { HaproxyDriver } from '../haproxy-driver.ts';

const [workDir, backendPort, sessionId, image] = process.argv.slice(2);
const host = new HaproxyContainerHost({ docker: await connectDocker(), sessionId, image });
const driver = new HaproxyDriver({ bus: new EventBus(), workDir, host });
const port = await driver.start({
  entrypoint: { name: 'web', host: '127.0.0.1', port: 0 },
  routers: [{ name: 'r', pathPrefix: '/', stripPrefix: false, service: 's', priority: 1 }],
  services: [{ name: 's', loadBalancer: { algorithm: 'round-robin', servers: [{ name: 'b', url: `http://127.0.0.1:${backendPort}`, weight: 1 }] } }],
});
process.stdout.write(`port ${port}\n`);
setInterval(() => {}, 60_000);
