/**
 * Batches the lab's events for browsers: a flood of requests is sent as a few bounded frames a
 * second, while the totals stay exact. Also keeps a short history so a page that connects (or
 * reloads) sees the recent past.
 */
import type { EventBus, RequestCompleted, LogLine, ImageBuildProgressed } from '../lab/events.ts';
import { BATCH_INTERVAL_MS, BATCH_MAX_LOGS, BATCH_MAX_REQUESTS, type EventBatch } from './protocol.ts';

/** Requests and log lines kept for the `history` message. */
const HISTORY_REQUESTS = 300;
const HISTORY_LOGS = 500;
const HISTORY_HEALTH = 500;
const HISTORY_LOAD = 200;

/** A bounded FIFO: pushing past `max` drops the oldest. */
class Ring<T> {
  #items: T[] = [];
  constructor(readonly max: number) {}
  push(item: T): boolean {
    this.#items.push(item);
    if (this.#items.length > this.max) {
      this.#items.splice(0, this.#items.length - this.max);
      return false;
    }
    return true;
  }
  values(): T[] {
    return [...this.#items];
  }
  clear(): void {
    this.#items = [];
  }
  get size(): number {
    return this.#items.length;
  }
}

export class EventStream {
  readonly #bus: EventBus;
  readonly #send: (batch: EventBatch) => void;
  readonly #onStatusChange: () => void;
  #timer: NodeJS.Timeout | null = null;
  readonly #off: Array<() => void> = [];

  // the current window
  #requests = new Ring<RequestCompleted>(BATCH_MAX_REQUESTS);
  #logs: LogLine[] = [];
  #logsDropped = 0;
  #connections: EventBatch['connections'] = [];
  #replicas: EventBatch['replicas'] = [];
  #health: EventBatch['health'] = [];
  #load: EventBatch['load'] = [];
  #dirty = false;
  #statusDirty = false;

  // exact totals since the last reset
  #total = 0;
  #failed = 0;
  #byReplica: Record<string, number> = {};

  // history for newcomers
  readonly #historyRequests = new Ring<RequestCompleted>(HISTORY_REQUESTS);
  readonly #historyLogs = new Ring<LogLine>(HISTORY_LOGS);
  readonly #historyHealth = new Ring<EventBatch['health'][number]>(HISTORY_HEALTH);
  readonly #historyLoad = new Ring<EventBatch['load'][number]>(HISTORY_LOAD);
  readonly #historyImages = new Map<string, ImageBuildProgressed>();
  #images: ImageBuildProgressed[] = [];

  /**
   * @param send called with each batch, at most every BATCH_INTERVAL_MS (150 ms)
   * @param onStatusChange called (at most once per batch) after the lab's state changed
   */
  constructor(bus: EventBus, send: (batch: EventBatch) => void, onStatusChange: () => void) {
    this.#bus = bus;
    this.#send = send;
    this.#onStatusChange = onStatusChange;
    this.#off.push(
      bus.on('request:completed', (r) => {
        this.#total++;
        if (r.status >= 500 || r.error) this.#failed++;
        if (r.replica) this.#byReplica[r.replica] = (this.#byReplica[r.replica] ?? 0) + 1;
        this.#requests.push(r);
        this.#historyRequests.push(r);
        this.#dirty = true;
      }),
      bus.on('log:line', (l) => {
        if (this.#logs.length < BATCH_MAX_LOGS) this.#logs.push(l);
        else this.#logsDropped++;
        this.#historyLogs.push(l);
        this.#dirty = true;
      }),
      bus.on('connection:opened', (c) => this.#connection({ type: 'opened', ...c })),
      bus.on('connection:closed', (c) => this.#connection({ type: 'closed', ...c })),
      bus.on('replica:started', (e) => this.#replica({ type: 'started', ...e })),
      bus.on('replica:stopped', (e) => this.#replica({ type: 'stopped', ...e })),
      bus.on('replica:crashed', (e) => this.#replica({ type: 'crashed', ...e })),
      bus.on('healthcheck:probed', (e) => this.#healthEvent({ type: 'probed', ...e })),
      bus.on('replica:health-changed', (e) => this.#healthEvent({ type: 'changed', ...e })),
      bus.on('load:ticked', (e) => this.#loadEvent({ type: 'ticked', ...e })),
      bus.on('load:finished', (e) => this.#loadEvent({ type: 'finished', ...e })),
      bus.on('image:build', (e) => {
        // The latest line of each image is history: a page opened mid-build shows where it is.
        this.#historyImages.set(e.image, e);
        if (e.done || this.#images.length < BATCH_MAX_LOGS) this.#images.push(e);
        this.#dirty = true;
      }),
      bus.on('lab:changed', () => {
        this.#statusDirty = true;
      }),
    );
    this.#timer = setInterval(() => this.flush(), BATCH_INTERVAL_MS);
    this.#timer.unref();
  }

  #connection(c: EventBatch['connections'][number]): void {
    if (this.#connections.length < BATCH_MAX_REQUESTS) this.#connections.push(c);
    this.#dirty = true;
  }

  #healthEvent(e: EventBatch['health'][number]): void {
    this.#historyHealth.push(e);
    // Ups and downs are always kept; probes are bounded like requests.
    if (e.type === 'changed' || this.#health.length < BATCH_MAX_REQUESTS) this.#health.push(e);
    this.#dirty = true;
  }

  #loadEvent(e: EventBatch['load'][number]): void {
    this.#historyLoad.push(e);
    this.#load.push(e);
    this.#dirty = true;
  }

  #replica(e: EventBatch['replicas'][number]): void {
    this.#replicas.push(e);
    this.#dirty = true;
    this.#statusDirty = true;
  }

  #counts(): EventBatch['counts'] {
    return { total: this.#total, failed: this.#failed, byReplica: { ...this.#byReplica } };
  }

  /** Sends what accumulated since the last flush, if anything. */
  flush(): void {
    if (this.#statusDirty) {
      this.#statusDirty = false;
      this.#onStatusChange();
    }
    if (!this.#dirty) return;
    const batch: EventBatch = {
      requests: this.#requests.values(),
      counts: this.#counts(),
      logs: this.#logs,
      logsDropped: this.#logsDropped,
      connections: this.#connections,
      replicas: this.#replicas,
      health: this.#health,
      load: this.#load,
      ...(this.#images.length > 0 ? { images: this.#images } : {}),
    };
    this.#requests.clear();
    this.#logs = [];
    this.#logsDropped = 0;
    this.#connections = [];
    this.#replicas = [];
    this.#health = [];
    this.#load = [];
    this.#images = [];
    this.#dirty = false;
    this.#send(batch);
  }

  /** The recent past, for a browser that just connected. */
  history(): EventBatch {
    return {
      requests: this.#historyRequests.values(),
      counts: this.#counts(),
      logs: this.#historyLogs.values(),
      logsDropped: 0,
      connections: [],
      replicas: [],
      health: this.#historyHealth.values(),
      load: this.#historyLoad.values(),
      ...(this.#historyImages.size > 0 ? { images: [...this.#historyImages.values()] } : {}),
    };
  }

  /**
   * Zeroes the totals and forgets the history (after a lab reset): a page that connects later sees
   * the new run only. What is still pending is flushed first, so open pages see every event once.
   */
  resetCounts(): void {
    this.flush();
    this.#total = 0;
    this.#failed = 0;
    this.#byReplica = {};
    this.#historyRequests.clear();
    this.#historyHealth.clear();
    this.#historyLoad.clear();
    this.#historyLogs.clear();
    this.#dirty = true;
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    for (const off of this.#off.splice(0)) off();
  }
}
