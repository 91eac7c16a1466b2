/**
 * Small helpers the integration tests share: collect a bus's events and await a condition on
 * them (no sleeping), and a port nothing listens on.
 */
import net from 'node:net';
import type { EventBus, LabEventName, LabEvents } from '../../lab/events.ts';

/** Collects every event of one name; `until` waits (no sleeping) for a condition on them. */
export function collect<K extends LabEventName>(bus: EventBus, name: K) {
  const items: LabEvents[K][] = [];
  const waiters: Array<{ test: () => boolean; resolve: () => void }> = [];
  bus.on(name, (e) => {
    items.push(e);
    for (const w of [...waiters]) {
      if (w.test()) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  return {
    items,
    until(test: (items: LabEvents[K][]) => boolean): Promise<void> {
      if (test(items)) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ test: () => test(items), resolve }));
    },
  };
}

/** A port on 127.0.0.1 nothing listens on: bound, then closed. */
export async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/**
 * The next event of `name` that `match`es, or a rejection after `ms` naming `what` was awaited
 * (default: the event name).
 */
export function nextEvent<K extends LabEventName>(bus: EventBus, name: K, match: (p: LabEvents[K]) => boolean, ms: number, what: string = `${name} event`): Promise<LabEvents[K]> {
  return new Promise((resolve, reject) => {
    const off = bus.on(name, (p) => {
      if (!match(p)) return;
      clearTimeout(timer);
      off();
      resolve(p);
    });
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${what} within ${ms} ms`));
    }, ms);
  });
}
