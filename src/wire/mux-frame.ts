import { readU32BE, writeU32BE } from './bytes.js';
/**
 * Stream multiplexer frame layout. One frame is one message of the reliable,
 * ordered message transport underneath (KCP in message mode), so a frame never
 * needs a length prefix for framing; the header still states the DATA length so
 * that a truncated or concatenated message is detected instead of misparsed.
 *
 *   offset  size  field
 *   0       1     version   (MUX_VERSION)
 *   1       1     cmd       (MuxCmd)
 *   2       4     streamId  big-endian; 0 only for PING/PONG
 *   6       4     arg       big-endian, meaning depends on cmd (below)
 *   10      n     payload   DATA only
 *
 *   cmd            arg                                   payload
 *   SYN            opener's receive window in bytes      none
 *   DATA           payload length (must equal n)         stream bytes
 *   FIN            0                                     none
 *   RST            reset reason (MuxResetReason)         none
 *   WINDOW_UPDATE  extra credit in bytes (> 0)           none
 *   PING / PONG    opaque value echoed back              none
 *
 * Every field is validated by decodeMuxFrame, which never throws: bad bytes
 * come back as { ok: false } with a reason, so the caller decides what to reset.
 */

export const MUX_VERSION = 1;
export const MUX_HEADER_LEN = 10;

export const MuxCmd = {
  Syn: 1,
  Data: 2,
  Fin: 3,
  Rst: 4,
  WindowUpdate: 5,
  Ping: 6,
  Pong: 7,
} as const;
export type MuxCmd = (typeof MuxCmd)[keyof typeof MuxCmd];

/**
 * Why a stream was reset. Unknown values received from a peer are kept as
 * numbers and treated like Cancel, so new reasons can be added later.
 */
export const MuxResetReason = {
  /** The application aborted the stream. */
  Cancel: 0,
  /** Nobody accepts streams on this side. */
  Refused: 1,
  /** The receiver already has maxStreams open. */
  TooManyStreams: 2,
  /** The peer broke the protocol on this stream (bad id, data after FIN, ...). */
  ProtocolError: 3,
  /** The peer sent more than the window it was granted. */
  FlowControl: 4,
  /** The multiplexer is shutting down. */
  GoingAway: 5,
} as const;
export type MuxResetReason = (typeof MuxResetReason)[keyof typeof MuxResetReason];

export interface MuxFrame {
  cmd: MuxCmd;
  streamId: number;
  arg: number;
  /** A view into the decoded message (no copy); empty except for DATA. */
  payload: Uint8Array;
}

export type MuxDecodeError =
  | 'short' // fewer bytes than a header
  | 'version' // unknown version byte
  | 'cmd' // unknown command (streamId is still reported)
  | 'length' // DATA length field disagrees with the message, or a control frame has a payload
  | 'stream-id'; // 0 where a stream is required, or non-zero on PING/PONG

export type MuxDecodeResult =
  { ok: true; frame: MuxFrame } | { ok: false; error: MuxDecodeError; streamId: number | null };

const EMPTY = new Uint8Array(0);

function isKnownCmd(c: number): c is MuxCmd {
  return c >= MuxCmd.Syn && c <= MuxCmd.Pong;
}

/** Parses one transport message; the payload aliases `buf`. Never throws. */
export function decodeMuxFrame(buf: Uint8Array): MuxDecodeResult {
  if (!(buf instanceof Uint8Array) || buf.length < MUX_HEADER_LEN) return { ok: false, error: 'short', streamId: null };
  if (buf[0] !== MUX_VERSION) return { ok: false, error: 'version', streamId: null };
  const cmd = buf[1];
  const streamId = readU32BE(buf, 2);
  const arg = readU32BE(buf, 6);
  if (!isKnownCmd(cmd)) return { ok: false, error: 'cmd', streamId };
  const bodyLen = buf.length - MUX_HEADER_LEN;
  const isPing = cmd === MuxCmd.Ping || cmd === MuxCmd.Pong;
  if (isPing ? streamId !== 0 : streamId === 0) return { ok: false, error: 'stream-id', streamId };
  if (cmd === MuxCmd.Data) {
    if (arg !== bodyLen) return { ok: false, error: 'length', streamId };
    return { ok: true, frame: { cmd, streamId, arg, payload: buf.subarray(MUX_HEADER_LEN) } };
  }
  if (bodyLen !== 0) return { ok: false, error: 'length', streamId };
  return { ok: true, frame: { cmd, streamId, arg, payload: EMPTY } };
}

/** Writes a header into the first MUX_HEADER_LEN bytes of `out`. */
export function writeMuxHeader(out: Uint8Array, cmd: MuxCmd, streamId: number, arg: number): void {
  out[0] = MUX_VERSION;
  out[1] = cmd;
  writeU32BE(out, 2, streamId >>> 0);
  writeU32BE(out, 6, arg >>> 0);
}

/** A header-only frame (SYN, FIN, RST, WINDOW_UPDATE, PING, PONG). */
export function encodeMuxControl(cmd: MuxCmd, streamId: number, arg: number): Buffer {
  const out = Buffer.allocUnsafe(MUX_HEADER_LEN);
  writeMuxHeader(out, cmd, streamId, arg);
  return out;
}

/**
 * A DATA frame whose payload the caller fills in at offset MUX_HEADER_LEN.
 * Lets the multiplexer copy queued bytes straight into the outgoing message:
 * one allocation and one copy per frame.
 */
export function allocMuxData(
  streamId: number,
  payloadLen: number,
  alloc: (size: number) => Buffer = Buffer.allocUnsafe,
): Buffer {
  const out = alloc(MUX_HEADER_LEN + payloadLen);
  writeMuxHeader(out, MuxCmd.Data, streamId, payloadLen);
  return out;
}

/** A DATA frame from one payload (tests, tools); the multiplexer uses allocMuxData. */
export function encodeMuxData(streamId: number, payload: Uint8Array): Buffer {
  const out = allocMuxData(streamId, payload.length);
  out.set(payload, MUX_HEADER_LEN);
  return out;
}
