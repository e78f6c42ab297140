/**
 * Notices a change of this host's addresses (a new DHCP lease, another Wi-Fi
 * network, an interface gone): polls os.networkInterfaces(), which is a cheap
 * local call, and compares one string. Emits 'change' (added, removed).
 * One watcher per process is enough; it runs only while someone listens.
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

export class NetWatch extends EventEmitter {
  private timer: NodeJS.Timeout | null = null;
  private last: string[] = [];
  /** Settled by the next change that adds an address, then replaced: see addressAdded. */
  private added = latch();

  constructor(private readonly intervalMs = NETWATCH_INTERVAL_MS) {
    super();
  }

  start(): void {
    if (this.timer) return;
    this.last = localAddresses();
    this.timer = setInterval(() => this.check(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Resolves at the next change that adds an address (a network back, a new
   * lease): for loops that wait out a backoff to try again at once then.
   */
  get addressAdded(): Promise<void> {
    return this.added.promise;
  }

  /** Compares now (also called by the interval). */
  check(): void {
    const now = localAddresses();
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
