/**
 * Notices a change of this host's addresses (a new DHCP lease, another Wi-Fi
 * network, an interface gone): polls os.networkInterfaces(), which is a cheap
 * local call, and compares one string. Emits 'change' (added, removed).
 * Every watcher in a process shares one poll, which runs only while one is started.
 */
import { EventEmitter } from 'node:events';
import os from 'node:os';

/** How often the addresses are compared: the bound on noticing a change. */
export const NETWATCH_INTERVAL_MS = 1000;

/** Non-internal addresses, sorted: what a change is measured against. */
export function localAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(os.networkInterfaces()))
    for (const a of list ?? []) if (!a.internal) out.push(a.address);
  return out.sort();
}

/**
 * One poll per process, whatever the number of watchers: a process may run
 * many tunnels (one `peer` with many entries, or the bench's 100 visitors),
 * and a poll each was 100 os.networkInterfaces() calls a second, most of an
 * idle process's CPU.
 */
class AddressPoller {
  private timer: NodeJS.Timeout | null = null;
  private readonly watchers = new Set<NetWatch>();

  constructor(private readonly intervalMs: number) {}

  add(w: NetWatch): void {
    this.watchers.add(w);
    if (this.timer) return;
    this.timer = setInterval(() => this.poll(), this.intervalMs);
    this.timer.unref();
  }

  remove(w: NetWatch): void {
    this.watchers.delete(w);
    if (this.watchers.size > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
  }

  poll(): void {
    const now = localAddresses();
    for (const w of this.watchers) w.compare(now);
  }
}

const pollers = new Map<number, AddressPoller>();

export class NetWatch extends EventEmitter {
  private started = false;
  private last: string[] = [];
  /** Settled by the next change that adds an address, then replaced: see addressAdded. */
  private added = latch();
  private readonly poller: AddressPoller;

  constructor(intervalMs = NETWATCH_INTERVAL_MS) {
    super();
    let p = pollers.get(intervalMs);
    if (!p) pollers.set(intervalMs, (p = new AddressPoller(intervalMs)));
    this.poller = p;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.last = localAddresses();
    this.poller.add(this);
  }

  stop(): void {
    if (!this.started) return;
    this.started = false;
    this.poller.remove(this);
  }

  /**
   * Resolves at the next change that adds an address (a network back, a new
   * lease): for loops that wait out a backoff to try again at once then.
   */
  get addressAdded(): Promise<void> {
    return this.added.promise;
  }

  /** Compares `now` (sorted addresses, read once per poll for every watcher) with the last seen; emits what changed. */
  compare(now: string[]): void {
    if (now.join(',') === this.last.join(',')) return;
    const added = now.filter((a) => !this.last.includes(a));
    const removed = this.last.filter((a) => !now.includes(a));
    this.last = now;
    this.emit('change', added, removed);
    if (added.length) {
      const was = this.added;
      this.added = latch();
      was.resolve();
    }
  }
}

function latch(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
