/**
 * Decides how the running HAProxy moves from one configuration to the next: through the Runtime
 * API (no new process, nothing reset) when only servers changed in ways HAProxy 2.6 can do live,
 * else by a reload (SIGUSR2 to the master: a new worker reads the new haproxy.cfg; the old one
 * finishes its connections). Pure.
 *
 * Runtime API (https://docs.haproxy.org/2.6/management.html#9.3):
 * - a weight change: `set server <b>/<s> weight N`;
 * - a server added at the end of a non-sticky backend with a dynamic algorithm: `add server <b>/<s>
 *   <addr:port> id <id> weight N` then `enable server <b>/<s>` (a dynamic server starts in
 *   maintenance);
 * - a server removed: `disable server` (maintenance: no new request, those in flight finish), wait
 *   until it carries no request, then `del server`;
 * - a server's state ready <-> drain: `set server <b>/<s> state drain|ready`, and in a sticky
 *   backend `add acl` / `del acl` on its drain ACL file (render.ts) so that sticky clients are
 *   re-pinned;
 * - with a health check, an added server carries `check inter .. fall .. rise ..` and gets
 *   `enable health` (a dynamic server's check starts disabled).
 * A reload is needed for everything else: routers, algorithms, cookies, hashing settings, health
 * check and retry settings; a server added to a sticky backend (2.6 refuses `cookie` on a dynamic
 * server) or added in drain state; any server change in a `hash-type map-based` backend (a static
 * algorithm: no dynamic server, weights ignored while up); a changed address, id or order of servers.
 */
import { checkKeywords, type HaproxyModel, type HaproxyServerModel } from './render.ts';

/** One Runtime API change. */
export type RuntimeStep =
  | { op: 'add'; backend: string; server: HaproxyServerModel }
  | { op: 'weight'; backend: string; server: string; weight: number }
  | { op: 'remove'; backend: string; server: string }
  /** `acl`: the backend's drain ACL file and the server's cookie value, for a sticky backend. */
  | { op: 'state'; backend: string; server: string; state: 'ready' | 'drain'; acl: { file: string; value: string } | null };

export type RuntimePlan =
  /** Nothing to do: the texts are equal. */
  | { kind: 'none' }
  /** Everything through the Runtime API, in this order (adds, weights, removals). */
  | { kind: 'runtime'; steps: RuntimeStep[] }
  /**
   * A reload, for `reason`. `disable` lists the servers leaving their backend: the driver puts
   * them in maintenance first, so the worker being replaced (which keeps serving its open
   * keep-alive connections for a while) sends them nothing new either. `drain` lists the servers
   * that stay and turn to drain: the driver drains them in the worker being replaced too.
   */
  | { kind: 'reload'; reason: string; disable: { backend: string; server: string }[]; drain?: RuntimeStep[] };

/** The Runtime API command lines for one step (what the driver sends, and logs). */
export function stepCommands(step: RuntimeStep): string[] {
  switch (step.op) {
    case 'add': {
      const s = step.server;
      const addr = s.host.includes(':') ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
      const health = s.check ? [`enable health ${step.backend}/${s.name}`] : [];
      return [`add server ${step.backend}/${s.name} ${addr} id ${s.id} weight ${s.weight}${checkKeywords(s)}`, ...health, `enable server ${step.backend}/${s.name}`];
    }
    case 'state': {
      const set = `set server ${step.backend}/${step.server} state ${step.state}`;
      if (!step.acl) return [set];
      // Drain: out of the rotation first, then sticky clients re-pinned; ready: the reverse.
      return step.state === 'drain'
        ? [set, `add acl ${step.acl.file} ${step.acl.value}`]
        : [`del acl ${step.acl.file} ${step.acl.value}`, set];
    }
    case 'weight':
      return [`set server ${step.backend}/${step.server} weight ${step.weight}`];
    case 'remove':
      return [`disable server ${step.backend}/${step.server}`, `del server ${step.backend}/${step.server}`];
  }
}

/** How to go from the running model `from` to `to`. */
export function planRuntimeChanges(from: HaproxyModel, to: HaproxyModel): RuntimePlan {
  if (from.text === to.text) return { kind: 'none' };

  const disable: { backend: string; server: string }[] = [];
  const fromBackends = new Map(from.backends.map((b) => [b.name, b]));
  for (const b of to.backends) {
    const old = fromBackends.get(b.name);
    if (!old) continue;
    const names = new Set(b.servers.map((s) => s.name));
    for (const s of old.servers) if (!names.has(s.name)) disable.push({ backend: b.name, server: s.name });
  }
  const drain: RuntimeStep[] = [];
  for (const b of to.backends) {
    const old = fromBackends.get(b.name);
    if (!old) continue;
    const before = new Map(old.servers.map((s) => [s.name, s]));
    for (const s of b.servers) {
      const o = before.get(s.name);
      if (o && o.state !== 'drain' && s.state === 'drain') drain.push(stateStep(old, s.name, 'drain'));
    }
  }
  const reload = (reason: string): RuntimePlan => ({ kind: 'reload', reason, disable, ...(drain.length > 0 ? { drain } : {}) });

  if (from.skeleton !== to.skeleton) return reload('the routers, backends or their balancing settings changed');

  const adds: RuntimeStep[] = [];
  const weights: RuntimeStep[] = [];
  const states: RuntimeStep[] = [];
  const removes: RuntimeStep[] = [];
  for (const b of to.backends) {
    const old = fromBackends.get(b.name);
    if (!old) return reload(`backend ${b.name} is new`);
    const before = new Map(old.servers.map((s) => [s.name, s]));
    const after = new Map(b.servers.map((s) => [s.name, s]));
    const kept = b.servers.filter((s) => before.has(s.name));
    const added = b.servers.filter((s) => !before.has(s.name));
    const removed = old.servers.filter((s) => !after.has(s.name));
    const weightChanged = kept.filter((s) => before.get(s.name)!.weight !== s.weight);
    // A dynamic server goes after the others: only an append keeps the file's order the running one.
    const expected = [...old.servers.filter((s) => after.has(s.name)).map((s) => s.name), ...added.map((s) => s.name)];
    if (b.servers.some((s, i) => s.name !== expected[i])) return reload(`the order of the servers of ${b.name} changed`);
    for (const s of kept) {
      const o = before.get(s.name)!;
      if (o.host !== s.host || o.port !== s.port || o.id !== s.id || o.cookie !== s.cookie) {
        return reload(`server ${b.name}/${s.name} changed its address`);
      }
      if (checkKeywords(o) !== checkKeywords(s)) return reload(`the health check of ${b.name}/${s.name} changed`);
    }
    const stateChanged = kept.filter((s) => before.get(s.name)!.state !== s.state);
    if (added.length === 0 && removed.length === 0 && weightChanged.length === 0 && stateChanged.length === 0) continue;
    if (added.length > 0 || removed.length > 0 || weightChanged.length > 0) {
      if (b.hashType === 'map-based') return reload(`backend ${b.name} uses hash-type map-based, a static mapping that the Runtime API cannot change`);
      if (added.length > 0 && b.cookie) return reload(`backend ${b.name} is sticky and HAProxy 2.6 refuses the cookie keyword on a server added at runtime`);
    }
    if (added.some((s) => s.state === 'drain')) return reload(`a server joins ${b.name} in drain state`);
    for (const s of added) adds.push({ op: 'add', backend: b.name, server: s });
    for (const s of weightChanged) weights.push({ op: 'weight', backend: b.name, server: s.name, weight: s.weight });
    for (const s of stateChanged) states.push(stateStep(b, s.name, s.state));
    for (const s of removed) removes.push({ op: 'remove', backend: b.name, server: s.name });
  }
  const steps = [...adds, ...weights, ...states, ...removes];
  // Equal skeletons, equal servers, yet different texts: something this plan does not model.
  if (steps.length === 0) return reload('the configuration text changed');
  return { kind: 'runtime', steps };
}

/** The step that sets a server of backend `b` to `state` (with its drain ACL entry when `b` is sticky). */
function stateStep(b: HaproxyModel['backends'][number], server: string, state: 'ready' | 'drain'): RuntimeStep {
  const cookie = b.servers.find((s) => s.name === server)?.cookie ?? null;
  const acl = b.drainAcl !== null && cookie !== null ? { file: b.drainAcl, value: cookie } : null;
  return { op: 'state', backend: b.name, server, state, acl };
}
