import { EventEmitter } from 'node:events';
import { happyEyeballs } from '../util/connect.js';
import net from 'node:net';
import {
  FRAME_HEADER_LEN,
  FrameDecoder,
  FrameKind,
  TransientFrameDecoder,
  describeFrameError,
  encodeFrameHeader,
  writeFrameHeader,
  MAX_CONTROL_FRAME,
  MAX_DATAGRAM_FRAME,
} from '../wire/frame.js';
import { userReadOptions } from './user-reads.js';
import { BlockPool } from '../util/block-pool.js';
import { ControlMessage, ErrorCode, encodeControl, parseControl } from '../wire/control.js';

export interface FramedSocketOptions {
  /** Close the connection when nothing arrives for this long (slowloris / half-open guard). */
  idleTimeoutMs?: number;
  /**
   * Close the connection unless a first control message arrives this soon
   * after it was opened: a deadline, where the idle timeout is a silence, so
   * a frame dripped a byte at a time cannot hold the connection.
   */
  firstMessageTimeoutMs?: number;
  maxControlFrame?: number;
  maxDatagramFrame?: number;
}

/** A relay record and its frame header fit (MAX_RELAY_DATAGRAM_LEN + 6). */
const SEND_RECORD_BLOCK = 64 * 1024 + 64;

/**
 * Buffers of relay records that sendDatagramFilled() wrote, back once the
 * socket's write queue no longer holds them; shared by every socket of the
 * process. 128 free ones (8 MiB) cover most of a full write queue draining at once.
 * Why a pool: a window of records in flight on a busy relay leg sits in the
 * write queue, and a fresh 64 KiB buffer per record there was garbage
 * collection and page faults on the sender (docs/BENCHMARKS.md).
 */
export const sendRecordPool = new BlockPool(SEND_RECORD_BLOCK, 128);

/**
 * A TCP socket speaking our framing. Emits:
 *  - 'message' (ControlMessage): a validated control message;
 *  - 'datagram' (Buffer): a relay datagram frame body;
 *  - 'protocolError' (code, message): the peer broke the protocol; an error frame
 *    has been sent and the socket is closing;
 *  - 'close' (hadError: boolean).
 * Writing never throws; after close it is a no-op.
 */
export class FramedSocket extends EventEmitter {
  readonly decoder: FrameDecoder | TransientFrameDecoder;
  private closed = false;
  private corked = false;
  /** Runs until the first control message (firstMessageTimeoutMs). */
  private firstMessageTimer: NodeJS.Timeout | null = null;
  /** Record buffers handed to write(), oldest first, until the write queue lets go of them. */
  private readonly sentRecords: Buffer[] = [];
  /** Their lengths, summed. */
  private sentRecordBytes = 0;

  /**
   * Connects a socket that reads into a shared, reusable buffer instead of a
   * new one per read: for bulk traffic (the relay path), where per-read
   * allocation and its garbage collection cost more than the parsing.
   */
  static connect(to: { host: string; port: number }, opts: FramedSocketOptions = {}): FramedSocket {
    let self: FramedSocket | null = null;
    const socket = net.connect({
      ...happyEyeballs(to),
      // Frames are parsed before the next read: the process's shared read buffer will do.
      onread: userReadOptions((chunk) => {
        self?.onData(chunk);
        return true;
      }),
    });
    self = new FramedSocket(socket, opts, true);
    return self;
  }

  constructor(
    readonly socket: net.Socket,
    opts: FramedSocketOptions = {},
    transientReads = false,
  ) {
    super();
    const maxCtl = opts.maxControlFrame ?? MAX_CONTROL_FRAME;
    const maxDg = opts.maxDatagramFrame ?? MAX_DATAGRAM_FRAME;
    const maxBody = (kind: number) => (kind === FrameKind.Control ? maxCtl : maxDg);
    this.decoder = transientReads ? new TransientFrameDecoder(maxBody) : new FrameDecoder(maxBody);
    socket.setNoDelay(true);
    if (opts.idleTimeoutMs) {
      socket.setTimeout(opts.idleTimeoutMs, () =>
        this.fail('timeout', `no traffic for ${Math.round(opts.idleTimeoutMs! / 1000)} s`),
      );
    }
    if (opts.firstMessageTimeoutMs) {
      const ms = opts.firstMessageTimeoutMs;
      this.firstMessageTimer = setTimeout(
        () => this.fail('timeout', `no message within ${Math.round(ms / 1000)} s of connecting`),
        ms,
      ).unref();
    }
    // Frames (and 'datagram' bodies) from a transient read alias the shared
    // buffer: every listener consumes them synchronously (see connect()).
    if (!transientReads) socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {
      /* 'close' follows; the reason is reported by whoever owns the socket */
    });
    socket.on('close', (hadError) => {
      this.closed = true;
      this.clearFirstMessageTimer();
      this.emit('close', hadError);
    });
  }

  get isClosed(): boolean {
    return this.closed || this.socket.destroyed;
  }

  get remote(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }

  send(msg: ControlMessage): boolean {
    if (this.isClosed) return false;
    return this.socket.write(encodeControl(msg));
  }

  sendDatagram(body: Uint8Array): boolean {
    if (this.isClosed) return false;
    // KCP flushes many datagrams in one go: cork until the end of this tick so
    // they leave in one writev, instead of one syscall (and TCP segment) each.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => this.uncork());
    }
    this.socket.write(encodeFrameHeader(FrameKind.Datagram, body.length));
    return this.socket.write(body);
  }

  /**
   * One datagram frame of `length` body bytes that `fill` writes in place, in
   * a pooled buffer: a 64 KiB relay record costs no allocation, whether the
   * kernel takes it at once (the buffer is back before this returns) or it
   * waits in the write queue (back once the queue has passed it). `fill`
   * runs before anything is written, so if it throws, nothing was sent.
   */
  sendDatagramFilled(length: number, fill: (body: Uint8Array) => void): boolean {
    if (this.isClosed) return false;
    const total = FRAME_HEADER_LEN + length;
    this.reclaimSentRecords();
    const buf = total <= SEND_RECORD_BLOCK ? sendRecordPool.take(total) : Buffer.allocUnsafe(total);
    writeFrameHeader(buf, FrameKind.Datagram, length);
    try {
      fill(buf.subarray(FRAME_HEADER_LEN, total));
    } catch (e) {
      sendRecordPool.give(buf);
      throw e;
    }
    // Small datagrams corked earlier in this tick go first (order), and a
    // corked write would sit in JS holding the buffer.
    this.uncork();
    const ok = this.socket.write(buf);
    this.sentRecords.push(buf);
    this.sentRecordBytes += total;
    this.reclaimSentRecords();
    return ok;
  }

  /**
   * Gives back the record buffers the socket has finished writing. The write
   * queue drains in order and writableLength is what it still holds, so a
   * record followed by at least that many bytes of later records is out.
   * (Writes that are not records only make this wait longer, never less.)
   */
  private reclaimSentRecords(): void {
    const queued = this.socket.writableLength;
    const sent = this.sentRecords;
    while (sent.length > 0 && this.sentRecordBytes - sent[0].length >= queued) {
      const b = sent.shift()!;
      this.sentRecordBytes -= b.length;
      sendRecordPool.give(b);
    }
  }

  private uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  /** Sends an error message, then closes once it is flushed. */
  fail(code: ErrorCode, message: string, extra: { reqId?: string; sid?: string } = {}): void {
    if (this.isClosed) return;
    this.emit('protocolError', code, message);
    this.socket.end(encodeControl({ type: 'error', code, message, ...extra }));
    // A peer that never reads must not keep the socket alive.
    setTimeout(() => this.socket.destroy(), 2000).unref();
    this.closed = true;
  }

  close(): void {
    if (this.closed && this.socket.destroyed) return;
    this.closed = true;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }

  /** Stops parsing frames; the caller takes over the raw socket (relay piping). */
  detach(): Buffer {
    if (!(this.decoder instanceof FrameDecoder)) throw new Error('detach() needs a socket that reads with data events');
    this.socket.removeAllListeners('data');
    this.socket.setTimeout(0);
    return this.decoder.drainRemainder();
  }

  private clearFirstMessageTimer(): void {
    if (this.firstMessageTimer) clearTimeout(this.firstMessageTimer);
    this.firstMessageTimer = null;
  }

  private onData(chunk: Buffer | Uint8Array): void {
    if (this.closed) return;
    const { frames, error } =
      this.decoder instanceof FrameDecoder ? this.decoder.push(chunk as Buffer) : this.decoder.push(chunk);
    for (const f of frames) {
      if (this.closed) return;
      if (f.kind === FrameKind.Datagram) {
        this.emit('datagram', f.body);
        continue;
      }
      const r = parseControl(f.body);
      if (!r.ok) return this.fail('bad_message', r.error);
      this.clearFirstMessageTimer();
      this.emit('message', r.msg);
    }
    if (error)
      this.fail(
        error.code === 'frame_too_large'
          ? 'frame_too_large'
          : error.code === 'bad_version'
            ? 'bad_version'
            : 'bad_message',
        describeFrameError(error),
      );
  }
}
