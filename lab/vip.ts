/**
 * The VIP: an L4 (TCP) balancer in front of a service's replicas, as Docker Swarm puts a virtual
 * IP in front of a service (`endpoint_mode: vip`, the default). Swarm programs the kernel's IPVS
 * for that address; IPVS balances per TCP CONNECTION, not per request: it picks a real server when
 * a connection's first packet (SYN) arrives and sends every later packet of that connection to the
 * same server (https://docs.docker.com/engine/swarm/ingress/ and
 * https://docs.docker.com/engine/swarm/networking/ "endpoint_mode vip | dnsrr"; IPVS scheduling:
 * `man ipvsadm`, scheduler `rr`). A proxy that keeps ONE pooled keep-alive connection to the VIP
 * therefore sends every request to one replica until that connection closes; this is the pitfall
 * in ../shared/seeds/000_*: "Traefik maintains just one connection and docker only load balances
 * between containers when a connection is first created ... ALL requests will be served from one
 * container until that connection is closed due to inactivity".
 *
 * Here the VIP is a user-space TCP relay on 127.0.0.1 (IPVS does not route in every kernel and
 * needs root): each accepted connection gets the next backend in round-robin order (IPVS `rr`) and
 * a connection of its own to it; bytes are piped both ways, half-closes (FIN) are forwarded.
 *
 * Idle timeout: IPVS forgets an ESTABLISHED connection after 900 s without packets
 * (`ipvsadm --list --timeout` shows `Timeout (tcp tcpfin udp): 900 120 300`; the kernel's
 * net/netfilter/ipvs/ip_vs_proto_tcp.c sets IP_VS_TCP_S_ESTABLISHED to 15*60*HZ), which is why
 * Swarm users see long-idle connections through a VIP break after 15 minutes (moby/moby#31208).
 * Real IPVS drops the entry silently (the next packet of either side gets a reset); this VIP
 * closes both sides when the timeout fires, so the moment shows up as `connection:closed` with
 * `closedBy: 'vip'`, reason `idle timeout`. Default {@link DEFAULT_VIP_IDLE_TIMEOUT_MS}, configurable.
 *
 * Events (on the lab's bus): for each relayed connection `connection:opened` / `connection:closed`
 * for hop `vip-backend` (local = the VIP's source address towards the replica, remote = the
 * replica, `replica` = its hostname) and, unless `proxySideEvents` is false (the proxy reports that
 * socket itself), for hop `proxy-vip` (local = the proxy's source address, remote = the VIP).
 * `closedBy` names the side that decided: the peer that sent the first FIN (`proxy` or `backend`,
 * the VIP forwards it to the other side), `vip` on its idle timeout or when it is stopped.
 * Connections are matched across hops by address:port.
 */
import net from 'node:net';
import type { EventBus, Hop } from './events.ts';

/** IPVS's ESTABLISHED timeout, Swarm's VIP default: 900 s. */
export const DEFAULT_VIP_IDLE_TIMEOUT_MS = 900_000;

/** A replica behind the VIP. */
export interface VipBackend {
  /** The replica's hostname (reported as `replica` on vip-backend events). */
  name: string;
  host: string;
  port: number;
}

export interface VipOptions {
  bus: EventBus;
  /** Name for messages and the VIP's own server name in the proxy, e.g. `web_dynamic-vip`. */
  name: string;
  /** Listen address (default 127.0.0.1) and port (default 0 = a free one). */
  host?: string;
  port?: number;
  /** Idle time (ms) after which a relayed connection is closed. Default {@link DEFAULT_VIP_IDLE_TIMEOUT_MS}. */
  idleTimeoutMs?: number;
  /** Emit events for the proxy-vip hop too (default true); false when the proxy reports that socket itself. */
  proxySideEvents?: boolean;
}

interface Side {
  id: string;
  hop: Extract<Hop, 'proxy-vip' | 'vip-backend'>;
  socket: net.Socket;
  local: string;
  remote: string;
  replica?: string;
  /** Whether `connection:opened` was emitted (so `closed` is emitted once, only after it). */
  reported: boolean;
  closed: boolean;
}

interface Relay {
  front: Side;
  back: Side | null;
  /** Who decided the close, once known: the first FIN, the idle timeout, an error, stop(). */
  closedBy?: 'proxy' | 'backend' | 'vip';
  reason?: string;
  timer: NodeJS.Timeout | null;
}

function addr(ip: string | undefined, port: number | undefined): string {
  if (!ip) return '?';
  return ip.includes(':') ? `[${ip}]:${port ?? '?'}` : `${ip}:${port ?? '?'}`;
}

/** An L4 per-connection round-robin balancer; see the module comment. */
export class Vip {
  readonly name: string;
  readonly #bus: EventBus;
  readonly #host: string;
  readonly #wantPort: number;
  #idleMs: number;
  #proxySide: boolean;
  #backends: VipBackend[] = [];
  #next = 0;
  #server: net.Server | null = null;
  #port: number | null = null;
  readonly #relays = new Set<Relay>();
  #seq = 0;
  static #instances = 0;
  readonly #prefix: string;

  constructor(opts: VipOptions) {
    this.name = opts.name;
    this.#bus = opts.bus;
    this.#host = opts.host ?? '127.0.0.1';
    this.#wantPort = opts.port ?? 0;
    this.#idleMs = opts.idleTimeoutMs ?? DEFAULT_VIP_IDLE_TIMEOUT_MS;
    this.#proxySide = opts.proxySideEvents ?? true;
    this.#prefix = `v${++Vip.#instances}.`;
  }

  /** The address the proxy connects to. */
  get host(): string {
    return this.#host;
  }

  /** The bound port, or null when not started. */
  get port(): number | null {
    return this.#port;
  }

  /** Connections being relayed now. */
  get connections(): number {
    return this.#relays.size;
  }

  /** Starts listening; resolves with the port. */
  async start(): Promise<number> {
    if (this.#server) throw new Error(`The VIP ${this.name} is already started.`);
    const server = net.createServer((socket) => this.#accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#wantPort, this.#host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#server = server;
    this.#port = (server.address() as net.AddressInfo).port;
    return this.#port;
  }

  /**
   * Replaces the replicas behind the VIP (as Swarm updates IPVS when tasks start and stop). Open
   * connections stay on their replica (IPVS keeps existing entries); a connection to a replica that
   * left ends when that replica goes away. The rotation restarts at the first backend.
   */
  setBackends(backends: readonly VipBackend[]): void {
    const same =
      backends.length === this.#backends.length &&
      backends.every((b, i) => b.name === this.#backends[i].name && b.host === this.#backends[i].host && b.port === this.#backends[i].port);
    if (same) return;
    this.#backends = backends.map((b) => ({ ...b }));
    this.#next = 0;
  }

  /** The replicas behind the VIP, in rotation order. */
  backends(): VipBackend[] {
    return this.#backends.map((b) => ({ ...b }));
  }

  /** Changes the idle timeout; applies to connections from their next packet on. */
  setIdleTimeout(ms: number): void {
    this.#idleMs = ms;
    for (const r of this.#relays) this.#touch(r);
  }

  /** Whether the VIP reports the proxy-vip hop (false when the proxy reports its own socket). */
  setProxySideEvents(on: boolean): void {
    this.#proxySide = on;
  }

  /** Closes the listener and every relayed connection (closedBy `vip`, reason `VIP stopped`); resolves when all are closed. */
  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = null;
    const closing = new Promise<void>((resolve) => server.close(() => resolve()));
    const waits: Promise<void>[] = [];
    for (const r of this.#relays) {
      r.closedBy ??= 'vip';
      r.reason ??= 'VIP stopped';
      for (const s of [r.front, r.back]) {
        if (s && !s.closed) waits.push(new Promise<void>((resolve) => s.socket.once('close', () => resolve())));
      }
      r.front.socket.destroy();
      r.back?.socket.destroy();
    }
    await Promise.all([closing, ...waits]);
    this.#port = null;
  }

  // ------------------------------------------------------------------ relaying

  #accept(front: net.Socket): void {
    front.setNoDelay(true);
    const relay: Relay = {
      front: {
        id: `${this.#prefix}${++this.#seq}`,
        hop: 'proxy-vip',
        socket: front,
        local: addr(front.remoteAddress, front.remotePort),
        remote: addr(front.localAddress, front.localPort),
        reported: false,
        closed: false,
      },
      back: null,
      timer: null,
    };
    this.#relays.add(relay);
    this.#openEvent(relay.front);
    front.on('error', (err: NodeJS.ErrnoException) => {
      relay.closedBy ??= 'proxy';
      relay.reason ??= `error: ${err.code ?? err.message}`;
    });
    front.once('close', () => this.#sideClosed(relay, relay.front));
    if (this.#backends.length === 0) {
      relay.closedBy = 'vip';
      relay.reason = 'no replica behind the VIP';
      front.destroy();
      return;
    }
    const target = this.#backends[this.#next % this.#backends.length];
    this.#next = (this.#next + 1) % this.#backends.length;
    // Hold the proxy's bytes until the replica's connection is up.
    front.pause();
    const back = net.connect({ host: target.host, port: target.port });
    back.setNoDelay(true);
    const side: Side = { id: `${this.#prefix}${++this.#seq}`, hop: 'vip-backend', socket: back, local: '?', remote: addr(target.host, target.port), replica: target.name, reported: false, closed: false };
    relay.back = side;
    back.on('error', (err: NodeJS.ErrnoException) => {
      relay.closedBy ??= side.reported ? 'backend' : 'vip';
      relay.reason ??= `error: ${err.code ?? err.message}`;
      front.destroy();
    });
    back.once('close', () => this.#sideClosed(relay, side));
    back.once('connect', () => {
      side.local = addr(back.localAddress, back.localPort);
      side.remote = addr(back.remoteAddress, back.remotePort);
      this.#openEvent(side);
      if (front.destroyed) {
        back.destroy();
        return;
      }
      this.#pipe(relay, front, back, 'proxy');
      this.#pipe(relay, back, front, 'backend');
      front.resume();
      this.#touch(relay);
    });
  }

  /** Copies `from` -> `to`; a FIN from `from` is forwarded (half-close) and names who closed. */
  #pipe(relay: Relay, from: net.Socket, to: net.Socket, who: 'proxy' | 'backend'): void {
    from.on('data', (chunk: Buffer) => {
      this.#touch(relay);
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
    from.once('end', () => {
      relay.closedBy ??= who;
      relay.reason ??= who === 'proxy' ? 'proxy closed (FIN forwarded by the VIP)' : 'backend closed (FIN forwarded by the VIP)';
      to.end();
    });
  }

  /** (Re)arms the idle timer: no byte either way for idleMs closes both sides. */
  #touch(relay: Relay): void {
    if (relay.timer) clearTimeout(relay.timer);
    relay.timer = setTimeout(() => {
      relay.timer = null;
      relay.closedBy ??= 'vip';
      relay.reason ??= 'idle timeout';
      relay.front.socket.destroy();
      relay.back?.socket.destroy();
    }, this.#idleMs);
    relay.timer.unref();
  }

  #sideClosed(relay: Relay, side: Side): void {
    side.closed = true;
    // One side gone: the other follows (a relay without its peer is useless).
    const other = side === relay.front ? relay.back : relay.front;
    if (other && !other.closed) {
      if (!other.socket.destroyed) other.socket.end();
      // A peer that does not close its half in time is cut.
      setTimeout(() => other.socket.destroy(), 1000).unref();
    }
    if (side.reported) {
      const wanted = side.hop === 'vip-backend' || this.#proxySide;
      if (wanted) {
        this.#bus.emit('connection:closed', {
          id: side.id,
          hop: side.hop,
          local: side.local,
          remote: side.remote,
          ...(side.replica !== undefined ? { replica: side.replica } : {}),
          at: Date.now(),
          closedBy: relay.closedBy ?? (side === relay.front ? 'proxy' : 'backend'),
          reason: relay.reason ?? 'closed',
        });
      }
    }
    if (relay.front.closed && (!relay.back || relay.back.closed)) {
      if (relay.timer) clearTimeout(relay.timer);
      relay.timer = null;
      this.#relays.delete(relay);
    }
  }

  #openEvent(side: Side): void {
    side.reported = true;
    if (side.hop === 'proxy-vip' && !this.#proxySide) return;
    this.#bus.emit('connection:opened', {
      id: side.id,
      hop: side.hop,
      local: side.local,
      remote: side.remote,
      ...(side.replica !== undefined ? { replica: side.replica } : {}),
      at: Date.now(),
    });
  }
}
