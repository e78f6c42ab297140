import { performance } from 'node:perf_hooks';
import { EventEmitter } from 'node:events';
import {
  MUX_HEADER_LEN,
  MuxCmd,
  MuxResetReason,
  decodeMuxFrame,
  encodeMuxControl,
  type MuxDecodeError,
} from '../wire/mux-frame.js';
import { streamError } from './errors.js';
import { Fifo } from './fifo.js';
import { MuxStream, type StreamHost } from './stream.js';

/**
 * Credit every stream starts with in the acceptor-to-opener direction, before
 * the acceptor's first WINDOW_UPDATE. Part of the protocol: a receiver must
 * accept this much on a new stream, so no window may be configured smaller.
 * (The other direction needs no such constant: SYN carries the opener's window.)
 */
export const MUX_BASE_WINDOW = 64 * 1024;

const DEFAULT_FRAME_PAYLOAD = 1200;
const DEFAULT_WINDOW = 256 * 1024;
const DEFAULT_MAX_STREAMS = 1024;
const DEFAULT_SEND_HIGH_WATER = 64 * 1024;
const MAX_WINDOW = 0x7fffffff;
const MAX_STREAM_ID = 0xffffffff;
/** Replies we volunteer (RST to stray frames, PONG) are dropped beyond this backlog. */
const MAX_REPLY_BACKLOG = 4096;
/**
 * A stream that carried DATA (either way) this recently counts as busy: while
 * another stream is busy, a stream's receive window is `sharedWindow`.
 */
export const BUSY_STREAM_MS = 1000;

export interface MuxOptions {
  /** 'client' (the visitor) opens odd stream ids, 'server' even ones. */
  role: 'client' | 'server';
  /** Hands one frame to the transport as one message; the mux does not reuse `frame` afterwards. */
  sendMessage: (frame: Uint8Array) => void;
  /** Whether the transport wants more now; when it turns true again the transport calls pump(). */
  canSend: () => boolean;
  /** DATA payload bytes per frame; default 1200 so a frame fits one KCP segment. */
  maxFramePayload?: number;
  /** Per-stream receive window in bytes; default 256 KiB, at least MUX_BASE_WINDOW. */
  initialWindow?: number;
  /**
   * The receive window a stream grants while another stream of this mux is
   * busy (BUSY_STREAM_MS); default initialWindow. One ordered transport
   * carries every stream, so what one stream has in flight is what another's
   * next message waits behind: a stream alone may fill a large window, one
   * with company gets this smaller share.
   */
  sharedWindow?: number;
  /** Open streams (both directions) beyond which new ones are refused; default 1024. */
  maxStreams?: number;
  /** Per-stream unsent bytes above which write callbacks wait; default 64 KiB. */
  sendHighWater?: number;
  /** Memory for a DATA frame of `size` bytes (default Buffer.allocUnsafe): lets the transport reuse frame buffers. */
  allocFrame?: (size: number) => Buffer;
}

export interface MuxProtocolError {
  error: MuxDecodeError | 'syn-id' | 'unknown-stream';
  streamId: number | null;
}

interface PendingPing {
  start: number;
  resolve: (rttMs: number) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * Stream multiplexer over a reliable, ordered message transport.
 *
 * Events: 'stream' (MuxStream) for each stream the peer opens (with no listener,
 * peer streams are refused); 'protocolError' (MuxProtocolError) for frames that
 * were dropped or caused a stream reset, informational only; 'close' (err?) once.
 * receive() never throws on bad input: it resets only the stream concerned.
 */
export class Mux extends EventEmitter {
  readonly role: 'client' | 'server';
  bytesSent = 0;
  bytesReceived = 0;
  framesSent = 0;
  framesReceived = 0;
  protocolErrors = 0;

  private readonly sendMessage: (frame: Uint8Array) => void;
  private readonly canSend: () => boolean;
  private maxFramePayload: number;
  private readonly window: number;
  private readonly sharedWindow: number;
  /** The stream that carried DATA last, and when (performance.now()). */
  private busyId = -1;
  private busyAt = -Infinity;
  /** When the stream before it (always another id) last carried DATA. */
  private otherBusyAt = -Infinity;
  private readonly maxStreams: number;
  private readonly sendHighWater: number;
  private readonly host: StreamHost;

  private readonly streams = new Map<number, MuxStream>();
  private readonly control = new Fifo<Buffer>();
  private readonly ready = new Fifo<MuxStream>();
  private nextLocalId: number;
  private lastPeerId = 0;
  private closed = false;
  private pumping = false;
  private pumpAgain = false;
  private pumpScheduled = false;
  private readonly pings = new Map<number, PendingPing>();
  private nextPing = 1;

  constructor(opts: MuxOptions) {
    super();
    this.role = opts.role;
    this.sendMessage = opts.sendMessage;
    this.canSend = opts.canSend;
    this.maxFramePayload = clampInt(opts.maxFramePayload ?? DEFAULT_FRAME_PAYLOAD, 1, 0xffff);
    this.window = clampInt(opts.initialWindow ?? DEFAULT_WINDOW, MUX_BASE_WINDOW, MAX_WINDOW);
    this.sharedWindow = clampInt(opts.sharedWindow ?? this.window, MUX_BASE_WINDOW, this.window);
    this.maxStreams = clampInt(opts.maxStreams ?? DEFAULT_MAX_STREAMS, 0, 0x7fffffff);
    this.sendHighWater = clampInt(opts.sendHighWater ?? DEFAULT_SEND_HIGH_WATER, 1, MAX_WINDOW);
    this.nextLocalId = this.role === 'client' ? 1 : 2;
    // The getter's own `this` is the host object; the arrow reads this Mux's current value.
    const framePayload = () => this.maxFramePayload;
    this.host = {
      get maxFramePayload() {
        return framePayload();
      },
      allocFrame: opts.allocFrame ?? ((size) => Buffer.allocUnsafe(size)),
      sendControl: (frame) => this.queueControl(frame),
      markReady: (s) => this.markReady(s),
      carriedData: (s) => this.carriedData(s.id),
      windowFor: (s) => this.windowFor(s.id),
      forget: (s) => {
        if (this.streams.get(s.id) === s) this.streams.delete(s.id);
      },
    };
  }

  /**
   * Largest DATA payload from now on. The session sizes frames to the active
   * path's segment (UDP or relay), so a frame always fills one segment.
   */
  setMaxFramePayload(n: number): void {
    this.maxFramePayload = clampInt(n, 1, 0xffff);
  }

  /** Notes that stream `id` carried DATA now: the two most recent distinct streams are enough for windowFor(). */
  private carriedData(id: number): void {
    // Without a shared window nothing reads this: no clock read per frame.
    if (this.sharedWindow === this.window) return;
    if (id !== this.busyId) {
      this.otherBusyAt = this.busyAt;
      this.busyId = id;
    }
    this.busyAt = performance.now();
  }

  /** The receive window stream `id` grants now: the shared one while another stream is busy. */
  private windowFor(id: number): number {
    if (this.sharedWindow === this.window) return this.window;
    // The most recent stream other than `id` is the busy one, or the one before it.
    const otherAt = this.busyId !== id ? this.busyAt : this.otherBusyAt;
    return performance.now() - otherAt < BUSY_STREAM_MS ? this.sharedWindow : this.window;
  }

  /** Streams currently open on the wire, both directions. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** The streams currently open on the wire (for status listings and shutdown). */
  openStreams(): MuxStream[] {
    return [...this.streams.values()];
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Opens a stream; data may be written at once (no round trip). Failure
   * (too many streams, mux closed, refused by the peer) arrives as an 'error'
   * on the stream, never as an exception here.
   */
  openStream(): MuxStream {
    const id = this.nextLocalId;
    const stream = new MuxStream(this.host, {
      id,
      sendCredit: MUX_BASE_WINDOW,
      recvWindow: this.window,
      recvCredit: this.window,
      sendHighWater: this.sendHighWater,
    });
    let refusal: Error | null = null;
    if (this.closed) refusal = streamError('ECONNABORTED', 'mux is closed');
    else if (this.streams.size >= this.maxStreams)
      refusal = streamError('ECONNREFUSED', `too many streams (${this.maxStreams})`, MuxResetReason.TooManyStreams);
    else if (id > MAX_STREAM_ID) refusal = streamError('ECONNREFUSED', 'stream ids exhausted');
    if (refusal) {
      stream.abort(refusal, false);
      return stream;
    }
    this.nextLocalId += 2;
    this.streams.set(id, stream);
    this.queueControl(encodeMuxControl(MuxCmd.Syn, id, this.window));
    return stream;
  }

  /** Feeds one message from the transport. Never throws on bad input. */
  receive(message: Uint8Array): void {
    if (this.closed) return;
    this.framesReceived++;
    const r = decodeMuxFrame(message);
    if (!r.ok) {
      this.reportProtocolError(r.error, r.streamId);
      return;
    }
    const { cmd, streamId, arg, payload } = r.frame;
    switch (cmd) {
      case MuxCmd.Syn:
        this.onSyn(streamId, arg);
        return;
      case MuxCmd.Data: {
        const s = this.streams.get(streamId);
        if (!s) return this.onStray(streamId);
        this.bytesReceived += payload.length;
        s.onData(payload);
        return;
      }
      case MuxCmd.Fin: {
        const s = this.streams.get(streamId);
        if (!s) return this.onStray(streamId);
        s.onFin();
        return;
      }
      case MuxCmd.Rst:
        // Never answered, even for unknown ids: two sides must not bounce RSTs.
        this.streams.get(streamId)?.onRst(arg);
        return;
      case MuxCmd.WindowUpdate: {
        const s = this.streams.get(streamId);
        // Credit for a stream that already closed here is normal (it was in flight).
        if (s) s.onWindowUpdate(arg);
        else if (!this.wasEverOpen(streamId)) this.reportProtocolError('unknown-stream', streamId);
        return;
      }
      case MuxCmd.Ping:
        this.queueReply(encodeMuxControl(MuxCmd.Pong, 0, arg));
        return;
      case MuxCmd.Pong:
        this.onPong(arg);
        return;
    }
  }

  /** Sends queued frames while the transport accepts them: control first, then streams round-robin. */
  pump(): void {
    if (this.closed) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        while (this.canSend()) {
          const frame = this.control.shift() ?? this.nextDataFrame();
          if (!frame) break;
          this.emitFrame(frame);
        }
      } while (this.pumpAgain && !this.closed);
    } finally {
      this.pumping = false;
    }
  }

  /** Round-trip time in ms of a PING answered by the peer's mux. */
  ping(timeoutMs = 10_000): Promise<number> {
    if (this.closed) return Promise.reject(streamError('ECONNABORTED', 'mux is closed'));
    const nonce = this.nextPing;
    this.nextPing = (this.nextPing + 1) >>> 0 || 1;
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pings.delete(nonce);
        reject(Object.assign(new Error('mux ping timed out'), { code: 'ETIMEDOUT' }));
      }, timeoutMs);
      timer.unref();
      this.pings.set(nonce, { start: performance.now(), resolve, reject, timer });
      this.queueControl(encodeMuxControl(MuxCmd.Ping, 0, nonce));
    });
  }

  /**
   * Resets every stream (the peer gets RST going-away, sent even if the
   * transport says it is full, since they are tiny and final), then stops.
   */
  close(): void {
    if (this.closed) return;
    const err = streamError('ECONNABORTED', 'mux closed', MuxResetReason.GoingAway);
    for (const s of [...this.streams.values()]) s.abort(err, true);
    let frame: Buffer | undefined;
    while ((frame = this.control.shift())) this.emitFrame(frame);
    this.shutDown(undefined);
  }

  /** Stops at once without telling the peer (the transport is gone); streams fail with ECONNABORTED. */
  destroy(err?: Error): void {
    if (this.closed) return;
    const streamErr = streamError(
      'ECONNABORTED',
      err ? `mux destroyed: ${err.message}` : 'mux destroyed',
      undefined,
      err,
    );
    this.closed = true;
    for (const s of [...this.streams.values()]) s.abort(streamErr, false);
    this.shutDown(err);
  }

  // ---- internals ----

  private shutDown(err: Error | undefined): void {
    this.closed = true;
    this.streams.clear();
    this.control.clear();
    this.ready.clear();
    for (const p of this.pings.values()) {
      clearTimeout(p.timer);
      p.reject(streamError('ECONNABORTED', 'mux closed'));
    }
    this.pings.clear();
    this.emit('close', err);
  }

  private onSyn(id: number, peerWindow: number): void {
    if (!this.isPeerId(id) || id <= this.lastPeerId) {
      // A SYN must carry a fresh id of the peer's parity; ids are never reused.
      const existing = this.streams.get(id);
      if (existing) existing.fail(MuxResetReason.ProtocolError, 'SYN for an open stream');
      else this.queueReply(encodeMuxControl(MuxCmd.Rst, id, MuxResetReason.ProtocolError));
      this.reportProtocolError('syn-id', id);
      return;
    }
    this.lastPeerId = id;
    if (this.streams.size >= this.maxStreams) {
      this.queueReply(encodeMuxControl(MuxCmd.Rst, id, MuxResetReason.TooManyStreams));
      return;
    }
    if (this.listenerCount('stream') === 0) {
      this.queueReply(encodeMuxControl(MuxCmd.Rst, id, MuxResetReason.Refused));
      return;
    }
    const stream = new MuxStream(this.host, {
      id,
      sendCredit: peerWindow,
      recvWindow: this.window,
      recvCredit: MUX_BASE_WINDOW,
      sendHighWater: this.sendHighWater,
    });
    this.streams.set(id, stream);
    if (this.window > MUX_BASE_WINDOW) stream.onAccepted(this.window - MUX_BASE_WINDOW);
    this.emit('stream', stream);
  }

  /** DATA or FIN for an id with no stream. */
  private onStray(id: number): void {
    // Frames for a stream that closed here are normal: they crossed our RST.
    if (this.wasEverOpen(id)) return;
    this.reportProtocolError('unknown-stream', id);
    this.queueReply(encodeMuxControl(MuxCmd.Rst, id, MuxResetReason.ProtocolError));
  }

  private wasEverOpen(id: number): boolean {
    return this.isPeerId(id) ? id <= this.lastPeerId : id < this.nextLocalId;
  }

  private isPeerId(id: number): boolean {
    return (id & 1) === (this.role === 'client' ? 0 : 1);
  }

  private onPong(nonce: number): void {
    const p = this.pings.get(nonce);
    if (!p) return;
    this.pings.delete(nonce);
    clearTimeout(p.timer);
    p.resolve(performance.now() - p.start);
  }

  private reportProtocolError(error: MuxProtocolError['error'], streamId: number | null): void {
    this.protocolErrors++;
    this.emit('protocolError', { error, streamId } satisfies MuxProtocolError);
  }

  private queueControl(frame: Buffer): void {
    if (this.closed) return;
    this.control.push(frame);
    this.schedulePump();
  }

  /** A frame we send in answer to the peer's; bounded so a misbehaving peer cannot grow our memory. */
  private queueReply(frame: Buffer): void {
    if (this.control.length < MAX_REPLY_BACKLOG) this.queueControl(frame);
  }

  private markReady(s: MuxStream): void {
    if (this.closed) return;
    if (!s.inReady) {
      s.inReady = true;
      this.ready.push(s);
    }
    this.schedulePump();
  }

  private nextDataFrame(): Buffer | null {
    let s: MuxStream | undefined;
    while ((s = this.ready.shift())) {
      s.inReady = false;
      const frame = s.takeFrame(this.maxFramePayload);
      if (s.canProduce()) {
        s.inReady = true;
        this.ready.push(s);
      }
      if (frame) return frame;
    }
    return null;
  }

  private emitFrame(frame: Buffer): void {
    this.framesSent++;
    if (frame[1] === MuxCmd.Data) this.bytesSent += frame.length - MUX_HEADER_LEN;
    this.sendMessage(frame);
  }

  // Writes within one tick coalesce into full frames, and user callbacks never
  // run inside receive() or the transport's call into pump().
  private schedulePump(): void {
    if (this.pumpScheduled || this.closed) return;
    this.pumpScheduled = true;
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }
}

function clampInt(v: number, lo: number, hi: number): number {
  if (!Number.isFinite(v)) return lo;
  return Math.min(hi, Math.max(lo, Math.floor(v)));
}
