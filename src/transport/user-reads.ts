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
 * Node asks for a socket's next read buffer right after each read of that
 * socket and keeps it until the next read, so a buffer handed out is in use
 * by that socket from then on. Two kinds:
 *  - the shared buffer (userReadOptions): one for every socket whose handler
 *    never lets a chunk outlive the call (it parses or copies). A read is
 *    handled before the next one happens, so they can share it;
 *  - an own buffer per socket (OwnReadBuffer): for a handler that passes the
 *    chunk on to something that may keep it (the relay writing it to the
 *    other leg, where the kernel may take only part). When that happens the
 *    socket moves to a new buffer and the old one belongs to the write.
 */
import net from 'node:net';

/** Four of net's own 64 KiB reads per syscall when data is waiting. */
export const READ_BUFFER_BYTES = 256 * 1024;

const shared = Buffer.allocUnsafe(READ_BUFFER_BYTES);
let replaced = 0;

/** The buffer every shared-read socket reads into (net calls this before every read). */
export function sharedReadBuffer(): Buffer {
  return shared;
}

/** How often an own read buffer had to be replaced (each is one allocation; for tests and profiling). */
export function retiredReadBuffers(): number {
  return replaced;
}

/** One socket's own read buffer, replaced when a chunk read into it is kept past its handler. */
export class OwnReadBuffer {
  private buf: Buffer;

  constructor(private readonly size = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(size);
  }

  /** For net's `onread.buffer`: called before each read of the socket. */
  readonly next = (): Buffer => this.buf;

  /** The last chunk is still referenced (a queued write): the next read goes into a new buffer. */
  retire(): void {
    this.buf = Buffer.allocUnsafe(this.size);
    replaced++;
  }
}

/** Handles one chunk, valid only until it returns. Returning false pauses the socket (resume() restarts it). */
export type ChunkHandler = (chunk: Buffer) => boolean;

/**
 * net's `onread` option for a socket whose chunks go to `handler`: into the
 * shared buffer, which the handler must not let a chunk outlive, or into
 * `own` (see the top of this file).
 */
export function userReadOptions(handler: ChunkHandler, own?: OwnReadBuffer): NonNullable<net.OnReadOpts> {
  return {
    buffer: own ? own.next : sharedReadBuffer,
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
  return (
    !sock.destroyed &&
    !sock.connecting &&
    sock.writableLength === 0 &&
    !sock.readableEnded &&
    s._readableState?.ended === false
  );
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
export function switchToUserReads(sock: net.Socket, handler: ChunkHandler, own?: OwnReadBuffer): SwitchedSocket | null {
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
  const opts = {
    handle,
    allowHalfOpen,
    readable: true,
    writable: true,
    onread: userReadOptions(handler, own),
  } as net.SocketConstructorOpts;
  return { socket: new net.Socket(opts), rest };
}
