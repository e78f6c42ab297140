import { Duplex } from 'node:stream';
import { MUX_HEADER_LEN, MuxCmd, MuxResetReason, allocMuxData, encodeMuxControl } from '../wire/mux-frame.js';
import { sharedBlockPool } from '../util/block-pool.js';
import { keepLoan } from '../util/loan.js';
import { ByteQueue } from './byte-queue.js';
import { localResetError, peerResetError } from './errors.js';

/** Largest credit a sender may hold; more means the peer's accounting is broken. */
const MAX_CREDIT = 0xffffffff;

/** What a stream needs from its multiplexer; kept narrow so Mux's public surface stays small. */
export interface StreamHost {
  readonly maxFramePayload: number;
  /** Memory for an outgoing DATA frame (see MuxOptions.allocFrame). */
  allocFrame: (size: number) => Buffer;
  /** Queue a header-only frame ahead of all stream data and make sure it gets sent. */
  sendControl(frame: Buffer): void;
  /** The stream has something to send (data with credit, or its FIN). */
  markReady(stream: MuxStream): void;
  /** The stream sent or received DATA just now. */
  carriedData(stream: MuxStream): void;
  /** The receive window the stream grants now (at most its recvWindow; see MuxOptions.sharedWindow). */
  windowFor(stream: MuxStream): number;
  /** The stream is finished on the wire (both FINs, or an RST either way): drop its id. */
  forget(stream: MuxStream): void;
}

/** A consumer that takes a stream's DATA payloads directly (attachSink). */
export interface StreamSink {
  /** Takes one payload; false when full (the stream then waits for sinkReady()). */
  write(chunk: Uint8Array): boolean;
}

export interface MuxStreamInit {
  id: number;
  /** Bytes we may send before the peer's first WINDOW_UPDATE. */
  sendCredit: number;
  /** Our receive window: the most the peer may have in flight plus unread here. */
  recvWindow: number;
  /** Credit the peer holds at creation (what it was told, or assumes, about our window). */
  recvCredit: number;
  /** Queued-but-unsent bytes above which write callbacks are held back. */
  sendHighWater: number;
}

/**
 * One multiplexed byte stream. Writable side: bytes go out as DATA frames as
 * the peer grants credit; end() sends FIN after the last byte. Readable side:
 * DATA payloads are pushed as they arrive; FIN ends it. Credit is granted back
 * only from _read, i.e. when the consumer actually drains, so a consumer that
 * stops reading stops the sender after one window.
 */
export class MuxStream extends Duplex {
  readonly id: number;

  private readonly host: StreamHost;
  private readonly sendQueue = new ByteQueue();
  private readonly sendHighWater: number;
  private readonly recvWindow: number;
  private sendCredit: number;
  private recvCredit: number;
  private heldWriteCb: ((err?: Error | null) => void) | null = null;
  /** writeTransient() returned false: emit 'sendable' once the queue drains. */
  private wantSendable = false;
  /** Takes DATA payloads in place of the Readable side (attachSink). */
  private sink: StreamSink | null = null;
  /** The sink is full: no credit is granted until sinkReady(). */
  private sinkBlocked = false;
  private finalCb: ((err?: Error | null) => void) | null = null;
  private finQueued = false;
  private finSent = false;
  private remoteFin = false;
  /** No longer known to the mux by id: fully closed or reset. */
  private gone = false;
  private resetReason: number = MuxResetReason.Cancel;
  /** Set by the mux while the stream sits in its round-robin queue. */
  inReady = false;

  constructor(host: StreamHost, init: MuxStreamInit) {
    // Half the window as readable high-water mark keeps a grant of at least a
    // quarter window possible whenever _read runs (see _read), whatever Node's default.
    super({ allowHalfOpen: true, readableHighWaterMark: Math.min(64 * 1024, init.recvWindow >>> 1) });
    this.host = host;
    this.id = init.id;
    this.sendCredit = init.sendCredit;
    this.recvWindow = init.recvWindow;
    this.recvCredit = init.recvCredit;
    this.sendHighWater = init.sendHighWater;
  }

  /** Bytes the peer still lets us send. */
  get sendWindow(): number {
    return this.sendCredit;
  }

  /** Bytes written but not yet handed to the transport. */
  get queuedBytes(): number {
    return this.sendQueue.length;
  }

  /**
   * Queues a copy of `chunk`, which is only valid during this call (a
   * socket's shared read buffer, see transport/user-reads.ts), in pooled
   * blocks: bulk bytes from a local socket reach their frames without an
   * allocation per read. Returns false once the unsent queue is at its
   * high-water mark; 'sendable' follows when it has drained below it.
   * Not to be mixed with write() on one stream: Writable buffers those on its
   * own, and the two could overtake each other. end() after it is fine.
   */
  writeTransient(chunk: Uint8Array): boolean {
    if (this.destroyed || this.finQueued || this.writableEnded) return false;
    this.sendQueue.pushCopy(chunk, sharedBlockPool);
    if (this.sendCredit > 0) this.host.markReady(this);
    if (this.sendQueue.length < this.sendHighWater) return true;
    this.wantSendable = true;
    return false;
  }

  /**
   * Delivers DATA payloads to `sink` as they arrive instead of through the
   * Readable side, which keeps each chunk until it is read. The payloads may
   * be lent memory (util/loan.ts): the sink must not keep one past its
   * write() without calling keepLoan(). Credit is granted as the sink takes
   * data; when write() returns false, none until sinkReady(). The end of the
   * stream is still the Readable's 'end'.
   */
  attachSink(sink: StreamSink): void {
    // What arrived before the sink (a local connection still being made)
    // waits in the Readable: it goes first.
    for (let c = this.read() as Buffer | null; c !== null; c = this.read() as Buffer | null) {
      if (!sink.write(c)) this.sinkBlocked = true;
    }
    this.sink = sink;
    // Flowing, so that 'end' is emitted: no data goes through the Readable any more.
    this.resume();
  }

  /** The sink has room again (after its write() returned false). */
  sinkReady(): void {
    this.sinkBlocked = false;
    this.grantCredit();
  }

  /** Aborts the stream: the peer gets an RST with `reason` and sees an error; locally it is destroyed without one. */
  reset(reason: number = MuxResetReason.Cancel): void {
    if (this.destroyed) return;
    this.resetReason = reason;
    this.destroy();
  }

  // ---- Duplex implementation ----

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.enqueue(chunk);
    this.settleWrite(cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    for (const c of chunks) this.enqueue(c.chunk);
    this.settleWrite(cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.finQueued = true;
    this.finalCb = cb;
    this.host.markReady(this);
  }

  override _read(): void {
    this.grantCredit();
  }

  /** Credit back to the peer once a quarter window has been consumed. */
  private grantCredit(): void {
    if (this.gone || this.remoteFin || this.sinkBlocked) return;
    // The peer may have at most one window in flight or unread here; the
    // window is smaller while another stream is busy (MuxOptions.sharedWindow),
    // and credit already granted stays valid when it shrinks.
    const window = Math.min(this.recvWindow, this.host.windowFor(this));
    const grant = window - this.recvCredit - this.readableLength;
    if (grant >= window >>> 2) {
      this.recvCredit += grant;
      this.host.sendControl(encodeMuxControl(MuxCmd.WindowUpdate, this.id, grant));
    }
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.gone) {
      this.gone = true;
      this.host.sendControl(encodeMuxControl(MuxCmd.Rst, this.id, this.resetReason));
      this.host.forget(this);
    }
    this.sendQueue.clear();
    const held = [this.heldWriteCb, this.finalCb];
    this.heldWriteCb = null;
    this.finalCb = null;
    cb(err);
    const gone = Object.assign(new Error('stream destroyed'), { code: 'ERR_STREAM_DESTROYED' });
    for (const fn of held) if (fn) process.nextTick(fn, gone);
  }

  // ---- called by the mux ----

  /** True when takeFrame would return a frame. */
  canProduce(): boolean {
    if (this.gone) return false;
    if (this.sendQueue.length > 0) return this.sendCredit > 0;
    return this.finQueued && !this.finSent;
  }

  /** The next DATA (up to maxPayload bytes within credit) or FIN frame, or null. */
  takeFrame(maxPayload: number): Buffer | null {
    if (this.gone) return null;
    const queued = this.sendQueue.length;
    if (queued > 0) {
      if (this.sendCredit === 0) return null;
      const n = Math.min(queued, this.sendCredit, maxPayload);
      const frame = allocMuxData(this.id, n, this.host.allocFrame);
      this.sendQueue.copyOut(frame, MUX_HEADER_LEN, n);
      this.sendCredit -= n;
      this.host.carriedData(this);
      if (this.heldWriteCb && this.sendQueue.length < this.sendHighWater) {
        // Deferred so user code never runs inside the mux's send loop.
        process.nextTick(this.heldWriteCb);
        this.heldWriteCb = null;
      }
      if (this.wantSendable && this.sendQueue.length < this.sendHighWater) {
        this.wantSendable = false;
        process.nextTick(() => this.emit('sendable'));
      }
      return frame;
    }
    if (this.finQueued && !this.finSent) {
      this.finSent = true;
      if (this.finalCb) process.nextTick(this.finalCb);
      this.finalCb = null;
      if (this.remoteFin) this.finishOnWire();
      return encodeMuxControl(MuxCmd.Fin, this.id, 0);
    }
    return null;
  }

  onData(payload: Uint8Array): void {
    if (this.remoteFin) {
      this.fail(MuxResetReason.ProtocolError, 'DATA after FIN');
      return;
    }
    if (payload.length > this.recvCredit) {
      this.fail(MuxResetReason.FlowControl, `peer sent ${payload.length} bytes with ${this.recvCredit} credit`);
      return;
    }
    this.recvCredit -= payload.length;
    if (payload.length === 0) return;
    this.host.carriedData(this);
    const sink = this.sink;
    if (sink) {
      if (sink.write(payload)) this.grantCredit();
      else this.sinkBlocked = true;
      return;
    }
    this.push(payload);
    // The Readable (or whoever reads it) may keep the chunk.
    keepLoan();
  }

  onFin(): void {
    if (this.remoteFin) {
      this.fail(MuxResetReason.ProtocolError, 'second FIN');
      return;
    }
    this.remoteFin = true;
    this.push(null);
    if (this.finSent) this.finishOnWire();
  }

  onRst(reason: number): void {
    if (this.gone) return;
    this.gone = true; // no RST back: the peer already dropped the stream
    this.host.forget(this);
    this.destroy(peerResetError(this.id, reason));
  }

  onWindowUpdate(delta: number): void {
    if (this.sendCredit + delta > MAX_CREDIT) {
      this.fail(MuxResetReason.FlowControl, 'window update overflows the send credit');
      return;
    }
    this.sendCredit += delta;
    if (this.canProduce()) this.host.markReady(this);
  }

  /** Acceptor side: raise the peer's credit from the protocol's base window to ours. */
  onAccepted(extraCredit: number): void {
    this.recvCredit += extraCredit;
    this.host.sendControl(encodeMuxControl(MuxCmd.WindowUpdate, this.id, extraCredit));
  }

  /** The mux is going down (or never had room): destroy with `err`, telling the peer only if `notifyPeer`. */
  abort(err: Error, notifyPeer: boolean): void {
    if (this.destroyed) return;
    if (!notifyPeer && !this.gone) {
      this.gone = true;
      this.host.forget(this);
    }
    this.resetReason = MuxResetReason.GoingAway;
    this.destroy(err);
  }

  /** Resets the stream because the peer broke the protocol on it. */
  fail(reason: number, detail: string): void {
    if (this.destroyed) return;
    this.resetReason = reason;
    this.destroy(localResetError(this.id, reason, detail));
  }

  // ---- internals ----

  private enqueue(chunk: Buffer): void {
    this.sendQueue.push(chunk);
    if (this.sendCredit > 0) this.host.markReady(this);
  }

  private settleWrite(cb: (err?: Error | null) => void): void {
    if (this.sendQueue.length < this.sendHighWater) cb();
    else this.heldWriteCb = cb;
  }

  private finishOnWire(): void {
    if (this.gone) return;
    this.gone = true;
    this.host.forget(this);
  }
}
