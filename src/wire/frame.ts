/**
 * Framing for every TCP connection we speak (control channel and relay):
 *
 *   offset  size  field
 *   0       4     length   of the body that follows (big-endian), not counting this header
 *   4       1     version  PROTOCOL_VERSION
 *   5       1     kind     FrameKind
 *   6       n     body     (length bytes)
 *
 * A frame longer than the reader's limit is a protocol error: the reader stops
 * at the header and never buffers the body, so a peer cannot make us allocate.
 */
export const PROTOCOL_VERSION = 1;
export const FRAME_HEADER_LEN = 6;
/** Default cap for control frames (JSON). */
export const MAX_CONTROL_FRAME = 16 * 1024;
/** Cap for relay datagram frames: one sealed datagram. */
export const MAX_DATAGRAM_FRAME = 2048;

export const enum FrameKind {
  /** UTF-8 JSON control message, validated by src/wire/control.ts. */
  Control = 1,
  /** One sealed datagram (src/wire/datagram.ts), relay path only. */
  Datagram = 2,
}

export interface Frame {
  kind: FrameKind;
  body: Buffer;
}

export type FrameError =
  | { code: 'frame_too_large'; length: number; max: number }
  | { code: 'bad_version'; version: number }
  | { code: 'bad_kind'; kind: number };

export function encodeFrame(kind: FrameKind, body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_LEN + body.length);
  out.writeUInt32BE(body.length, 0);
  out[4] = PROTOCOL_VERSION;
  out[5] = kind;
  out.set(body, FRAME_HEADER_LEN);
  return out;
}

/** Writes just the header, so a large body can be sent without a copy. */
export function encodeFrameHeader(kind: FrameKind, bodyLength: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_LEN);
  out.writeUInt32BE(bodyLength, 0);
  out[4] = PROTOCOL_VERSION;
  out[5] = kind;
  return out;
}

/**
 * Incremental frame reader. Feed it chunks; it returns whole frames, or an
 * error after which the connection must be closed (the stream is out of sync).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed: FrameError | null = null;

  constructor(private readonly maxBody: (kind: number) => number = () => MAX_CONTROL_FRAME) {}

  get bufferedBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): { frames: Frame[]; error: FrameError | null } {
    const frames: Frame[] = [];
    if (this.failed) return { frames, error: this.failed };
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= FRAME_HEADER_LEN) {
      const head = this.peek(FRAME_HEADER_LEN);
      const length = head.readUInt32BE(0);
      const version = head[4];
      const kind = head[5];
      if (version !== PROTOCOL_VERSION) return this.fail(frames, { code: 'bad_version', version });
      if (kind !== FrameKind.Control && kind !== FrameKind.Datagram) return this.fail(frames, { code: 'bad_kind', kind });
      const max = this.maxBody(kind);
      if (length > max) return this.fail(frames, { code: 'frame_too_large', length, max });
      if (this.buffered < FRAME_HEADER_LEN + length) break;
      const whole = this.take(FRAME_HEADER_LEN + length);
      frames.push({ kind: kind as FrameKind, body: whole.subarray(FRAME_HEADER_LEN) });
    }
    return { frames, error: null };
  }

  /** Bytes received after the last whole frame; used when a relay switches to raw piping. */
  drainRemainder(): Buffer {
    const rest = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    return rest;
  }

  private fail(frames: Frame[], error: FrameError) {
    this.failed = error;
    this.chunks = [];
    this.buffered = 0;
    return { frames, error };
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0];
    const merged = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [merged];
    return merged;
  }

  private take(n: number): Buffer {
    const first = this.peek(n);
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}

export function describeFrameError(e: FrameError): string {
  switch (e.code) {
    case 'frame_too_large':
      return `frame of ${e.length} bytes exceeds the limit of ${e.max}`;
    case 'bad_version':
      return `unsupported protocol version ${e.version} (this build speaks ${PROTOCOL_VERSION})`;
    case 'bad_kind':
      return `unknown frame kind ${e.kind}`;
  }
}
