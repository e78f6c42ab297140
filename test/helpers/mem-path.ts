/**
 * The in-memory path the session tests share: two real Sessions, each holding
 * one end, with no sockets in between.
 */
import { performance } from 'node:perf_hooks';
import type { Session } from '../../src/session/session.js';
import type { Path, PathKind } from '../../src/session/path.js';
import { DATAGRAM_OVERHEAD, DatagramType, MAX_DATAGRAM_LEN, MAX_RELAY_DATAGRAM_LEN } from '../../src/wire/datagram.js';

export interface MemPathOptions {
  /** Drop (and count as refused) anything larger, as a UDP socket refuses an oversized datagram. */
  refuseAbove?: number;
  /** Fraction of datagrams lost at random, drawn from `rng`. */
  loss?: number;
  rng?: () => number;
  /** Offer sendRecord() (seal into the path's own buffer), as the relay path does. */
  gathers?: boolean;
  /**
   * Deliver each datagram this long after sending, in order (`delayMs` can be changed
   * at any time). Without it, what is sent arrives together on the next event-loop turn.
   */
  delayMs?: number;
}

export interface PathStats {
  sent: number;
  largest: number;
  /** Datagrams above a UDP datagram's size handed to this path. */
  large: number;
  /** The same, counted only after `mark` was set (the session moved away). */
  largeAfterMark: number;
  /** Any datagram handed over after `mark`. */
  sentAfterMark: number;
  /** DATA datagrams with no KCP bytes in them (nothing for the peer to do). */
  emptyData: number;
  refused: number;
  lost: number;
  rejectedByPeer: number;
}

/**
 * One session's end of an in-memory path: what it sends lands, on a later
 * event-loop turn, at the peer session's end of the same path. Copies every
 * datagram on send, as a socket does.
 */
export class MemPath implements Path {
  closed = false;
  mark = false;
  peer!: { session: Session; path: MemPath };
  /** Called after each delivery (the test's trigger point). */
  onDelivered: (() => void) | null = null;
  readonly stats: PathStats = {
    sent: 0,
    largest: 0,
    large: 0,
    largeAfterMark: 0,
    sentAfterMark: 0,
    emptyData: 0,
    refused: 0,
    lost: 0,
    rejectedByPeer: 0,
  };
  private queue: Buffer[] = [];
  /** The batch being delivered, and the next one of it to go. */
  private batch: Buffer[] = [];
  private next = 0;
  private timer: NodeJS.Immediate | null = null;
  /** Delay mode (a number): each datagram arrives this long after it was sent, never before an earlier one. */
  delayMs: number | null;
  private lastAt = 0;
  sendRecord?: (length: number, fill: (out: Uint8Array) => void) => void;

  constructor(
    readonly kind: PathKind,
    readonly remote: string,
    readonly maxDatagram: number,
    private readonly opts: MemPathOptions = {},
  ) {
    this.delayMs = opts.delayMs ?? null;
    // The relay path seals records into its own send buffer; UDP has no such call.
    // One reused buffer, overwritten with garbage after each record, as a
    // socket reuses it once the kernel has taken the bytes.
    if (opts.gathers) {
      const scratch = Buffer.alloc(MAX_RELAY_DATAGRAM_LEN);
      this.sendRecord = (length, fill) => {
        const out = scratch.subarray(0, length);
        fill(out);
        this.accept(Buffer.from(out));
        out.fill(0xa5);
      };
    }
  }

  send(datagram: Uint8Array): void {
    this.accept(Buffer.from(datagram));
  }

  close(): void {
    this.closed = true;
    this.loseQueued();
  }

  /** Everything not yet delivered is gone, like records a relay dropped from a full queue. */
  loseQueued(): number {
    const n = this.queue.length + this.batch.length - this.next;
    this.stats.lost += n;
    this.queue = [];
    this.batch = [];
    this.next = 0;
    return n;
  }

  private accept(d: Buffer): void {
    const s = this.stats;
    s.sent++;
    if (d.length > s.largest) s.largest = d.length;
    if (d.length > MAX_DATAGRAM_LEN) s.large++;
    if (this.mark) {
      s.sentAfterMark++;
      if (d.length > MAX_DATAGRAM_LEN) s.largeAfterMark++;
    }
    if (d[0] === DatagramType.Data && d.length === DATAGRAM_OVERHEAD) s.emptyData++;
    if (this.closed) return;
    if (this.opts.refuseAbove !== undefined && d.length > this.opts.refuseAbove) {
      s.refused++;
      return;
    }
    if (this.opts.loss && this.opts.rng!() < this.opts.loss) {
      s.lost++;
      return;
    }
    if (this.delayMs !== null) return this.deliverLater(d, this.delayMs);
    this.queue.push(d);
    if (!this.timer) this.timer = setImmediate(this.deliver);
  }

  private readonly deliver = (): void => {
    this.timer = null;
    this.batch = this.queue;
    this.queue = [];
    for (this.next = 0; this.next < this.batch.length && !this.closed;) {
      const d = this.batch[this.next++];
      if (!this.peer.session.receive(d, this.peer.path)) this.stats.rejectedByPeer++;
      this.onDelivered?.();
    }
    this.batch = [];
    this.next = 0;
  };

  private deliverLater(d: Buffer, delayMs: number): void {
    const at = Math.max(this.lastAt, performance.now() + delayMs);
    this.lastAt = at;
    setTimeout(() => {
      if (this.closed) return;
      if (!this.peer.session.receive(d, this.peer.path)) this.stats.rejectedByPeer++;
      this.onDelivered?.();
    }, at - performance.now());
  }
}
