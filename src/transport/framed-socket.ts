import { EventEmitter } from 'node:events';
import net from 'node:net';
import { FrameDecoder, FrameKind, TransientFrameDecoder, describeFrameError, encodeFrameHeader, MAX_CONTROL_FRAME, MAX_DATAGRAM_FRAME } from '../wire/frame.js';
import { ControlMessage, ErrorCode, encodeControl, parseControl } from '../wire/control.js';

export interface FramedSocketOptions {
  /** Close the connection when nothing arrives for this long (slowloris / half-open guard). */
  idleTimeoutMs?: number;
  maxControlFrame?: number;
  maxDatagramFrame?: number;
}

/**
 * One read buffer for every connection made with FramedSocket.connect(): a
 * read is parsed before the next one can happen, so they can share it.
 */
const sharedReadBuffer = Buffer.allocUnsafe(256 * 1024);

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

  /**
   * Connects a socket that reads into a shared, reusable buffer instead of a
   * new one per read: for bulk traffic (the relay path), where per-read
   * allocation and its garbage collection cost more than the parsing.
   */
  static connect(to: { host: string; port: number }, opts: FramedSocketOptions = {}): FramedSocket {
    let self: FramedSocket | null = null;
    const socket = net.connect({
      ...to,
      onread: {
        buffer: sharedReadBuffer,
        callback: (n: number, buf: Uint8Array) => {
          self?.onData(buf.subarray(0, n));
          return true;
        },
      },
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
      socket.setTimeout(opts.idleTimeoutMs, () => this.fail('timeout', `no traffic for ${Math.round(opts.idleTimeoutMs! / 1000)} s`));
    }
    // Frames (and 'datagram' bodies) from a transient read alias the shared
    // buffer: every listener consumes them synchronously (see connect()).
    if (!transientReads) socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {
      /* 'close' follows; the reason is reported by whoever owns the socket */
    });
    socket.on('close', (hadError) => {
      this.closed = true;
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
    return this.sendDatagramParts([body], body.length);
  }

  /** One datagram frame whose body is `parts` back to back (`length` bytes in all). */
  sendDatagramParts(parts: Uint8Array[], length: number): boolean {
    if (this.isClosed) return false;
    // KCP flushes many datagrams in one go: cork until the end of this tick so
    // they leave in one writev, instead of one syscall (and TCP segment) each.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    let ok = this.socket.write(encodeFrameHeader(FrameKind.Datagram, length));
    for (const p of parts) ok = this.socket.write(p);
    return ok;
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

  private onData(chunk: Buffer | Uint8Array): void {
    if (this.closed) return;
    const { frames, error } = this.decoder instanceof FrameDecoder ? this.decoder.push(chunk as Buffer) : this.decoder.push(chunk);
    for (const f of frames) {
      if (this.closed) return;
      if (f.kind === FrameKind.Datagram) {
        this.emit('datagram', f.body);
        continue;
      }
      const r = parseControl(f.body);
      if (!r.ok) return this.fail('bad_message', r.error);
      this.emit('message', r.msg);
    }
    if (error) this.fail(error.code === 'frame_too_large' ? 'frame_too_large' : error.code === 'bad_version' ? 'bad_version' : 'bad_message', describeFrameError(error));
  }
}
