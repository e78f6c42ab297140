/**
 * The flows of one UDP session (`--proto udp`), as pure bookkeeping: no
 * sockets, no timers, time passed in. The visit side keys a flow by its
 * client's source address and numbers it; the serve side keys it by that
 * number and holds the socket towards the service as the flow's value. Both
 * expire flows idle for longer than their idle timeout (sweep()) and cap how
 * many a session may hold.
 */

// Caps and timings of UDP flows, in one place.
/** A flow with no datagram either way for this long is closed (its socket too): `--udp-idle-timeout`. */
export const UDP_FLOW_IDLE_MS = 60_000;
/** Flows one session may hold at once; a datagram that would open one more is dropped (`flow_limit`). */
export const MAX_UDP_FLOWS = 1024;
/** Bounds of the interval between two sweeps for idle flows (a quarter of the idle timeout, within these). */
export const UDP_SWEEP_MIN_MS = 250;
export const UDP_SWEEP_MAX_MS = 5_000;

/** How often a table with idle timeout `idleMs` is swept: expiry is at most this late. */
export function sweepIntervalFor(idleMs: number): number {
  return Math.min(UDP_SWEEP_MAX_MS, Math.max(UDP_SWEEP_MIN_MS, Math.floor(idleMs / 4)));
}

export interface Flow<T> {
  readonly id: number;
  /** The visit side's client address ("ip:port"); on the serve side, the id as text. */
  readonly key: string;
  readonly value: T;
  /** When a datagram last went through it, either way (the caller's clock, ms). */
  lastActive: number;
}

export class FlowTable<T> {
  private readonly byId = new Map<number, Flow<T>>();
  private readonly byKey = new Map<string, Flow<T>>();
  private nextId = 1;

  constructor(readonly limits: { maxFlows?: number; idleMs?: number } = {}) {}

  get size(): number {
    return this.byId.size;
  }

  get maxFlows(): number {
    return this.limits.maxFlows ?? MAX_UDP_FLOWS;
  }

  get idleMs(): number {
    return this.limits.idleMs ?? UDP_FLOW_IDLE_MS;
  }

  get(id: number): Flow<T> | undefined {
    return this.byId.get(id);
  }

  lookup(key: string): Flow<T> | undefined {
    return this.byKey.get(key);
  }

  /** A new flow under the next free id (1..2^32-1, never 0); null when the table is full. */
  open(key: string, value: (id: number) => T, now: number): Flow<T> | null {
    if (this.byId.size >= this.maxFlows) return null;
    let id = this.nextId;
    // Bounded by the cap: at most maxFlows ids are in use.
    while (this.byId.has(id)) id = id >= 0xffffffff ? 1 : id + 1;
    this.nextId = id >= 0xffffffff ? 1 : id + 1;
    return this.insert(id, key, value(id), now);
  }

  /** The flow with the peer's id `id` (serve side), opened if new; null when it is new and the table is full. */
  openAs(id: number, value: (id: number) => T, now: number): Flow<T> | null {
    const cur = this.byId.get(id);
    if (cur) return cur;
    if (this.byId.size >= this.maxFlows) return null;
    return this.insert(id, String(id), value(id), now);
  }

  private insert(id: number, key: string, value: T, now: number): Flow<T> {
    const flow: Flow<T> = { id, key, value, lastActive: now };
    this.byId.set(id, flow);
    this.byKey.set(key, flow);
    return flow;
  }

  /** A datagram went through `flow`. */
  touch(flow: Flow<T>, now: number): void {
    flow.lastActive = now;
  }

  /** Removes and returns the flows idle for longer than the idle timeout at `now`. */
  sweep(now: number): Flow<T>[] {
    const gone: Flow<T>[] = [];
    for (const flow of this.byId.values()) if (now - flow.lastActive > this.idleMs) gone.push(flow);
    for (const flow of gone) this.remove(flow);
    return gone;
  }

  remove(flow: Flow<T>): void {
    if (this.byId.get(flow.id) !== flow) return;
    this.byId.delete(flow.id);
    this.byKey.delete(flow.key);
  }

  /** Removes and returns every flow (the session ended). */
  clear(): Flow<T>[] {
    const all = [...this.byId.values()];
    this.byId.clear();
    this.byKey.clear();
    return all;
  }
}
