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

/**
 * Where a socket's chunks go, settable after the socket exists: until a
 * consumer sets `handler`, chunks are kept (copied) in `early` and reading
 * pauses, so nothing is lost while the consumer gets ready.
 */
export class ReadTarget {
  readonly early: Buffer[] = [];
  handler: ChunkHandler = (chunk) => {
    this.early.push(Buffer.from(chunk));
    return false;
  };

  /** For net.connect({ onread }) and switchToUserReads(). */
  readonly onChunk: ChunkHandler = (chunk) => this.handler(chunk);
}

interface StreamHandle {
  readStop(): number;
  reading: boolean;
  useUserBuffer?: unknown;
}

type Internals = net.Socket & { _handle: StreamHandle | null; _readableState?: { ended?: boolean } };

/** Whether switchToUserReads() would move this socket now. */
export function canSwitchToUserReads(sock: net.Socket): boolean {
  const s = sock as Internals;
  const handle = s._handle;
  if (!handle || typeof handle.readStop !== 'function' || typeof handle.useUserBuffer !== 'function') return false;
  // An end of stream already read would be lost with the old object.
  return !sock.destroyed && !sock.connecting && sock.writableLength === 0 && !sock.readableEnded && s._readableState?.ended === false;
}

/** A socket moved to user reads, and what the old one had read but nobody consumed yet, in order. */
export interface SwitchedSocket {
  socket: net.Socket;
  rest: Buffer[];
}

/**
 * Moves a connected socket that has been reading with Node's streams to
 * `handler`, without losing or reordering a byte: whatever the old object
 * buffered comes back in `rest`, and nothing else is read until the new
 * socket starts. Returns null when the socket cannot move (not a plain TCP
 * socket, writes still queued, or its end already read); it is then
 * untouched. The old object is closed without closing the connection, so a
 * net.Server counts the connection as gone.
 */
export function switchToUserReads(sock: net.Socket, handler: ChunkHandler): SwitchedSocket | null {
  if (!canSwitchToUserReads(sock)) return null;
  const s = sock as Internals;
  const handle = s._handle!;
  handle.readStop();
  handle.reading = false;
  const rest: Buffer[] = [];
  // read() hands out what is buffered; with the handle stopped, no more arrives.
  for (let chunk = sock.read() as Buffer | null; chunk !== null; chunk = sock.read() as Buffer | null) rest.push(chunk);
  const allowHalfOpen = sock.allowHalfOpen;
  sock.removeAllListeners();
  // Without its handle, destroy() only tells the server the connection went
  // away and emits 'close' on this now-empty object.
  s._handle = null;
  sock.on('error', () => {});
  sock.destroy();
  // `handle` is how Node itself builds a socket around an accepted connection
  // (net.Server, child_process); the public typings leave it out.
  const opts = { handle, allowHalfOpen, readable: true, writable: true, onread: userReadOptions(handler) } as net.SocketConstructorOpts;
  return { socket: new net.Socket(opts), rest };
}
