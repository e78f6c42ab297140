/**
 * Socket reads into reusable memory instead of a fresh buffer per read.
 *
 * Node's net allocates a new 64 KiB buffer for every read. At relay rates
 * that is hundreds of MB a second of short-lived external memory, and V8
 * answers every 64 MB of it with a full mark-compact of the heap; the kernel
 * also faults the new pages in. Measured on a plain two-hop TCP forwarder:
 * ~40% less CPU per byte with the reads below (docs/BENCHMARKS.md).
 *
 * net's `onread` option reads into memory we give it, but Node offers it only
 * for sockets it connects itself. switchToUserReads() moves an accepted
 * socket to it by wrapping the socket's handle in a new net.Socket, the way
 * Node's own constructor takes a handle.
 *
 * Every socket here reads into one shared buffer: a read is handled before
 * the next one happens, so a chunk is only valid until its handler returns.
 * A handler that lets a chunk outlive that (a write the kernel did not take
 * whole keeps pointing into it) calls retireSharedReadBuffer(), and later
 * reads go to a new buffer while the old one belongs to that write.
 */
import net from 'node:net';

/** Four of net's own 64 KiB reads per syscall when data is waiting. */
export const READ_BUFFER_BYTES = 256 * 1024;

let shared = Buffer.allocUnsafe(READ_BUFFER_BYTES);
let retired = 0;

/** The buffer the next read goes into (net calls this before every read). */
export function sharedReadBuffer(): Buffer {
  return shared;
}

/** Some of the current buffer is still referenced after its handler returned: reads move to a new one. */
export function retireSharedReadBuffer(): void {
  shared = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  retired++;
}

/** How often a read buffer had to be replaced (each is one allocation; for tests and profiling). */
export function retiredReadBuffers(): number {
  return retired;
}

/** Handles one chunk, valid only until it returns. Returning false pauses the socket (resume() restarts it). */
export type ChunkHandler = (chunk: Buffer) => boolean;

/** net's `onread` option for a socket whose chunks go to `handler`. */
export function userReadOptions(handler: ChunkHandler): NonNullable<net.OnReadOpts> {
  return {
    buffer: sharedReadBuffer,
    callback: (n: number, buf: Uint8Array) => handler((buf as Buffer).subarray(0, n)),
  };
}

interface StreamHandle {
  readStop(): number;
  reading: boolean;
  useUserBuffer?: unknown;
}

/** Whether switchToUserReads() would move this socket now. */
export function canSwitchToUserReads(sock: net.Socket): boolean {
  const handle = (sock as net.Socket & { _handle: StreamHandle | null })._handle;
  if (!handle || typeof handle.readStop !== 'function' || typeof handle.useUserBuffer !== 'function') return false;
  return !sock.destroyed && !sock.connecting && sock.readableLength === 0 && sock.writableLength === 0 && !sock.readableEnded;
}

/**
 * Moves a connected socket that has been reading with 'data' events to
 * `handler`, without losing or reordering a byte: call it in the same tick as
 * the last 'data' event consumed, and nothing else is read until the new
 * socket starts reading. Returns the socket to use from now on (the old
 * object is closed without closing the connection, so a net.Server counts
 * the connection as gone), or null when the socket cannot move (not a plain
 * TCP socket, or data still queued in either direction); the old socket is
 * then untouched.
 */
export function switchToUserReads(sock: net.Socket, handler: ChunkHandler): net.Socket | null {
  if (!canSwitchToUserReads(sock)) return null;
  const s = sock as net.Socket & { _handle: StreamHandle | null };
  const handle = s._handle!;
  handle.readStop();
  handle.reading = false;
  sock.removeAllListeners();
  // Without its handle, destroy() only tells the server the connection went
  // away and emits 'close' on this now-empty object.
  s._handle = null;
  sock.on('error', () => {});
  sock.destroy();
  // `handle` is how Node itself builds a socket around an accepted connection
  // (net.Server, child_process); the public typings leave it out.
  const opts = { handle, readable: true, writable: true, onread: userReadOptions(handler) } as net.SocketConstructorOpts;
  return new net.Socket(opts);
}
