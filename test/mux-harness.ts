/**
 * In-memory message transport for mux tests: two Mux instances joined by two
 * bounded queues. Like KCP underneath a session, a queue takes messages while
 * it is under capacity (canSend), delivers them later (setImmediate, never
 * inside sendMessage), and asks the sender to pump() once it has drained.
 */
import { createHash, randomBytes } from 'node:crypto';
import { setImmediate as tick } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import { Mux, type MuxOptions } from '../src/mux/index.js';

type MuxTuning = Omit<MuxOptions, 'role' | 'sendMessage' | 'canSend'>;

export class Link {
  queue: Uint8Array[] = [];
  /** Messages handed to the receiver so far. */
  delivered = 0;
  /** Called with each message just before the receiver gets it, with its delivery index. */
  tap: ((frame: Uint8Array, index: number) => void) | null = null;
  source!: Mux;
  target!: Mux;
  private timer: NodeJS.Immediate | null = null;
  private closed = false;

  constructor(readonly capacity: number) {}

  readonly send = (frame: Uint8Array): void => {
    if (this.closed) return;
    this.queue.push(frame);
    this.schedule();
  };

  readonly canSend = (): boolean => !this.closed && this.queue.length < this.capacity;

  get busy(): boolean {
    return this.queue.length > 0 || this.timer !== null;
  }

  close(): void {
    this.closed = true;
    this.queue = [];
    if (this.timer) clearImmediate(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    if (this.timer === null && this.queue.length > 0 && !this.closed) this.timer = setImmediate(this.deliver);
  }

  private readonly deliver = (): void => {
    this.timer = null;
    const batch = this.queue;
    this.queue = [];
    for (const frame of batch) {
      if (this.closed) return;
      this.tap?.(frame, this.delivered);
      this.delivered++;
      this.target.receive(frame);
    }
    this.source.pump();
    this.schedule();
  };
}

export interface MuxPair {
  /** role 'client' (opens odd ids) */
  a: Mux;
  /** role 'server' */
  b: Mux;
  aToB: Link;
  bToA: Link;
  /** Resolves once both links have been idle for a few event-loop turns (bounded). */
  settle(maxTurns?: number): Promise<void>;
  close(): void;
}

export function createMuxPair(opts: { capacity?: number; a?: MuxTuning; b?: MuxTuning } = {}): MuxPair {
  const capacity = opts.capacity ?? 32;
  const aToB = new Link(capacity);
  const bToA = new Link(capacity);
  const a = new Mux({ ...opts.a, role: 'client', sendMessage: aToB.send, canSend: aToB.canSend });
  const b = new Mux({ ...opts.b, role: 'server', sendMessage: bToA.send, canSend: bToA.canSend });
  aToB.source = a;
  aToB.target = b;
  bToA.source = b;
  bToA.target = a;
  return {
    a,
    b,
    aToB,
    bToA,
    async settle(maxTurns = 10_000) {
      let idle = 0;
      for (let i = 0; i < maxTurns && idle < 5; i++) {
        await tick();
        idle = aToB.busy || bToA.busy ? 0 : idle + 1;
      }
    },
    close() {
      aToB.close();
      bToA.close();
      // Streams a test left open fail with ECONNABORTED here; that is expected, not a test failure.
      for (const s of [...a.openStreams(), ...b.openStreams()]) s.on('error', () => {});
      a.destroy();
      b.destroy();
    },
  };
}

export function sha256(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

export function randomData(n: number): Buffer {
  return randomBytes(n);
}

/** All bytes until 'end'; rejects on 'error'. */
export function readAll(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    stream.on('data', (c: Buffer) => parts.push(c));
    stream.once('end', () => resolve(Buffer.concat(parts)));
    stream.once('error', reject);
  });
}

/** Resolves with the stream's error (or rejects if it ends cleanly / closes without one). */
export function nextError(stream: Readable): Promise<Error & { code?: string }> {
  return new Promise((resolve, reject) => {
    stream.once('error', resolve);
    stream.once('close', () => setImmediate(() => reject(new Error('closed without error'))));
  });
}

/** Rejects after `ms` so a hung test fails instead of stalling the runner. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
