/**
 * The relay's bytes forwarded in the kernel: splice(2) from one TCP socket
 * into a pipe and from the pipe into the other, through the optional addon
 * native/tcp-splice.
 *
 * Why: forwarding in JavaScript copies every byte out of the kernel and back
 * in, with a read callback and a write request per chunk; on the relay path
 * that is the rendezvous's whole CPU cost (docs/BENCHMARKS.md, "The relay hop
 * in the kernel"). With splice the kernel moves page references, and no
 * JavaScript runs while data flows.
 *
 * The relay still follows its frames (relay.ts, FrameCursor): the addon
 * reads each 6-byte frame header and splices the body. A forwarding starts
 * from the JavaScript path's cursors and hands back, when stopped, the
 * cursors and the bytes read but not yet written, so the JavaScript path can
 * take over at any byte (a leg that died, a leg that came back).
 *
 * Without the addon (not built, not Linux), or with RELAY_KERNEL_SPLICE=0,
 * kernelSpliceAvailable() is false and the relay forwards in JavaScript.
 */
import type net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { optionalAddon } from '../util/optional-addon.js';

interface TcpSpliceAddon {
  start(
    fdA: number,
    fdB: number,
    frames: boolean,
    hdrA: Buffer,
    remA: number,
    hdrB: Buffer,
    remB: number,
    counters: Float64Array,
    onEnd: (side: number, errno: number) => void,
    maxBody: number,
  ): object | number;
  stop(handle: object): [Buffer, Buffer, number, Buffer, Buffer, number] | undefined;
}

const loadAddon = optionalAddon<TcpSpliceAddon>(
  'holepunch-tcp-splice',
  'RELAY_KERNEL_SPLICE',
  (m) => typeof m.start === 'function' && typeof m.stop === 'function',
);

/** Whether the relay can forward in the kernel here. */
export function kernelSpliceAvailable(): boolean {
  return loadAddon() !== null;
}

/** Where one direction's frame stream is: header bytes of the current frame seen, body bytes left. */
export interface CursorState {
  header: Buffer;
  remaining: number;
}

/** One direction when a forwarding stopped: where its frames are, and what it read but did not write. */
export interface DirectionState {
  cursor: CursorState;
  pending: Buffer;
}

/** Why a forwarding stopped by itself: which socket (0: a, 1: b), and the error (null: end of stream). */
export interface SpliceEnd {
  side: 0 | 1;
  error: NodeJS.ErrnoException | null;
}

export interface KernelForwarding {
  /** Bytes written a -> b and b -> a so far (live: the addon updates them). */
  readonly bytes: Float64Array;
  /**
   * Stops forwarding. Returns each direction's state (index 0: what a sent
   * to b); null if already stopped. Neither socket is closed or resumed: the
   * caller decides what each does next.
   */
  stop(): [DirectionState, DirectionState] | null;
}

type Internals = net.Socket & { _handle?: { fd?: unknown; reading?: boolean } | null };

function fdOf(sock: net.Socket): number {
  const fd = (sock as Internals)._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

/**
 * Forwards between `a` and `b` in the kernel from now on, following frames
 * from the given cursors. Both must be connected TCP sockets reading with
 * user buffers (switchToUserReads), with nothing queued to write; they are
 * paused here (Node reads them no more) and nothing may be written to them
 * until stop(). `onEnd` runs once if either socket reaches its end of stream
 * or fails; forwarding has then stopped, and the caller calls stop().
 * A frame header that announces a body over `maxFrameBody` stops it too,
 * with the error EMSGSIZE: the header is not forwarded, and that
 * direction's cursor comes back with the announced length as `remaining`.
 * Returns null (sockets untouched) when kernel forwarding cannot start.
 */
export function forwardInKernel(
  a: net.Socket,
  b: net.Socket,
  cursors: [CursorState, CursorState],
  maxFrameBody: number,
  onEnd: (end: SpliceEnd) => void,
): KernelForwarding | null {
  const addon = loadAddon();
  if (!addon) return null;
  const fa = fdOf(a);
  const fb = fdOf(b);
  if (fa < 0 || fb < 0 || a.writableLength > 0 || b.writableLength > 0) return null;
  a.pause();
  b.pause();
  // pause() stops the handle's reads at once only for user-buffer sockets; any other would keep reading.
  if ((a as Internals)._handle?.reading !== false || (b as Internals)._handle?.reading !== false) {
    a.resume();
    b.resume();
    return null;
  }
  const bytes = new Float64Array(2);
  const started = addon.start(
    fa,
    fb,
    true,
    cursors[0].header,
    cursors[0].remaining,
    cursors[1].header,
    cursors[1].remaining,
    bytes,
    (side, errno) => onEnd({ side: side === 0 ? 0 : 1, error: errno === 0 ? null : errnoError(errno) }),
    maxFrameBody,
  );
  if (typeof started === 'number') {
    a.resume();
    b.resume();
    return null;
  }
  let handle: object | null = started;
  return {
    bytes,
    stop() {
      if (!handle) return null;
      const r = addon.stop(handle);
      handle = null;
      if (!r) return null;
      return [
        { pending: r[0], cursor: { header: r[1], remaining: r[2] } },
        { pending: r[3], cursor: { header: r[4], remaining: r[5] } },
      ];
    },
  };
}

/** An error as Node's sockets report it: code (ECONNRESET, ...), errno and syscall. */
function errnoError(errno: number): NodeJS.ErrnoException {
  const code = getSystemErrorName(-errno);
  const err: NodeJS.ErrnoException = new Error(`relay forwarding failed: ${code}`);
  err.code = code;
  err.errno = -errno;
  err.syscall = 'splice';
  return err;
}
