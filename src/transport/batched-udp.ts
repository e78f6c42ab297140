/**
 * UDP sends batched per turn of the event loop: the datagrams a socket is
 * given while JavaScript runs (a KCP flush, a burst of user datagrams read in
 * one poll) leave together, in one sendmmsg(2), with each run of equal-sized
 * datagrams as one UDP GSO super-packet.
 *
 * Why: Node's dgram makes one system call per datagram, and that call (with
 * the kernel's per-packet work behind it) was the largest share of a peer's
 * CPU on the direct path and in UDP services (docs/BENCHMARKS.md "Batched UDP
 * sends"). Node offers no sendmmsg or GSO, and no maintained npm package
 * does, so this uses the project's own small addon (native/udp-batch, an
 * optional dependency built at install time; Linux only).
 *
 * Without the addon (no compiler at install, not Linux) or with
 * PEER_UDP_BATCH=0, every send goes straight to node:dgram as before. With
 * it, a send is queued and flushed on setImmediate, which runs after the
 * current poll phase and before the loop can block, so batching adds no
 * waiting. Order is kept: a socket with dgram sends still queued in libuv
 * flushes through dgram too. Any error hands the datagram it concerns to the
 * caller's `onError` (as dgram would) and the rest continue; a full send
 * buffer (EAGAIN) hands the rest to dgram, which queues them in libuv.
 */
import type dgram from 'node:dgram';
import os from 'node:os';
import { keepLoan } from '../util/loan.js';
import { optionalAddon } from '../util/optional-addon.js';

interface UdpBatchAddon {
  /** Datagrams sent (a prefix), or -errno when the first failed. host '' sends on a connected socket. */
  send(fd: number, host: string, port: number, datagrams: Uint8Array[], gso: boolean): number;
  readonly maxDatagrams: number;
}

/** Why a send failed, as node:dgram would name it (e.g. 'ECONNREFUSED'). */
export type SendErrorHandler = (code: string) => void;

const loadAddon = optionalAddon<UdpBatchAddon>(
  'holepunch-udp-batch',
  'PEER_UDP_BATCH',
  (m) => typeof m.send === 'function' && typeof m.maxDatagrams === 'number',
);

const { EAGAIN, EIO, EWOULDBLOCK } = os.constants.errno;
const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

/** What went out, for the benchmarks and `peer status`: datagrams and the system calls that carried them. */
export const udpBatchStats = { datagrams: 0, calls: 0, fallbacks: 0 };

interface Pending {
  data: Uint8Array;
  /** '' for a connected socket. */
  address: string;
  port: number;
  onError: SendErrorHandler | undefined;
}

class SocketBatch {
  queue: Pending[] = [];
  /** Off for good once the kernel refuses GSO on this socket (EIO: the device cannot checksum). */
  gso = true;
  constructor(
    readonly socket: dgram.Socket,
    readonly fd: number,
  ) {}
}

const batches = new WeakMap<dgram.Socket, SocketBatch>();
let dirty: SocketBatch[] = [];
let scheduled = false;

/** True when sends are batched (the addon loaded and is not turned off). */
export function udpBatchingAvailable(): boolean {
  return loadAddon() !== null;
}

/**
 * Sends `data` to `address`:`port` on `socket` (address '' and port 0: the
 * socket's connected peer), batched with the other sends of this turn.
 * `data` must not change until the send: sealed datagrams are fresh buffers.
 */
export function sendDatagram(
  socket: dgram.Socket,
  data: Uint8Array,
  port: number,
  address: string,
  onError?: SendErrorHandler,
): void {
  const batch = batchFor(socket);
  if (!batch) {
    dgramSend(socket, data, port, address, onError);
    return;
  }
  // A view of memory lent for this call only (a relay record's block) must
  // outlive it now: the send happens after the call returns.
  keepLoan();
  if (batch.queue.length === 0) dirty.push(batch);
  batch.queue.push({ data, address, port, onError });
  if (batch.queue.length >= (loadAddon()?.maxDatagrams ?? 1)) {
    flushBatch(batch);
    return;
  }
  if (!scheduled) {
    scheduled = true;
    setImmediate(flushAll);
  }
}

function batchFor(socket: dgram.Socket): SocketBatch | null {
  let b = batches.get(socket);
  if (b !== undefined) return b;
  if (!loadAddon()) return null;
  const fd = socketFd(socket);
  if (fd < 0) return null; // not bound yet (or an unknown Node layout): dgram this time
  b = new SocketBatch(socket, fd);
  batches.set(socket, b);
  return b;
}

function flushAll(): void {
  scheduled = false;
  const list = dirty;
  dirty = [];
  for (const b of list) flushBatch(b);
}

function flushBatch(b: SocketBatch): void {
  const queue = b.queue;
  if (queue.length === 0) return;
  b.queue = [];
  if (!socketFdStillOpen(b)) return; // closed meanwhile: dgram would drop them too
  // dgram sends still waiting in libuv go first: send after them, through dgram.
  if (b.socket.getSendQueueCount() > 0) {
    for (const p of queue) dgramSend(b.socket, p.data, p.port, p.address, p.onError);
    return;
  }
  let i = 0;
  while (i < queue.length) {
    // One call per run to one destination (almost always the whole queue).
    const first = queue[i];
    let j = i + 1;
    while (j < queue.length && queue[j].port === first.port && queue[j].address === first.address) j++;
    i = sendRun(b, queue, i, j);
  }
}

/** Sends queue[from, to) to one destination; returns where the next run starts. */
function sendRun(b: SocketBatch, queue: Pending[], from: number, to: number): number {
  const addon = loadAddon();
  if (!addon) return to;
  const { address, port } = queue[from];
  let i = from;
  while (i < to) {
    const datagrams: Uint8Array[] = [];
    for (let k = i; k < to; k++) datagrams.push(queue[k].data);
    const n = addon.send(b.fd, address, port, datagrams, b.gso);
    udpBatchStats.calls++;
    if (n > 0) {
      udpBatchStats.datagrams += n;
      i += n;
      continue;
    }
    const errno = -n;
    if (errno === EIO && b.gso) {
      b.gso = false; // this device cannot offload the checksum: plain sendmmsg from now on
      continue;
    }
    if (errno === EAGAIN || errno === EWOULDBLOCK) {
      // Send buffer full: dgram queues the rest in libuv and sends them when it drains.
      for (let k = i; k < to; k++)
        dgramSend(b.socket, queue[k].data, queue[k].port, queue[k].address, queue[k].onError);
      return to;
    }
    // This datagram failed (too large, ICMP error pending on a connected
    // socket, no route): reported as dgram reports it, then the rest go on.
    queue[i].onError?.(errnoNames.get(errno) ?? `errno ${errno}`);
    i++;
  }
  return to;
}

function dgramSend(
  socket: dgram.Socket,
  data: Uint8Array,
  port: number,
  address: string,
  onError: SendErrorHandler | undefined,
): void {
  udpBatchStats.fallbacks++;
  const cb = onError ? (e: Error | null) => e && onError((e as NodeJS.ErrnoException).code ?? 'EIO') : undefined;
  try {
    if (address === '') socket.send(data, cb);
    else socket.send(data, port, address, cb);
  } catch {
    onError?.('ERR_SOCKET_DGRAM_NOT_RUNNING'); // closed under us
  }
}

/**
 * The file descriptor under a dgram socket, or -1. Node keeps the handle in a
 * symbol-keyed state object (`socket._handle` reads the same but is
 * deprecated and prints a warning); on an unknown layout batching is off.
 */
function socketFd(socket: dgram.Socket): number {
  const handle = socketHandle(socket);
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

function socketFdStillOpen(b: SocketBatch): boolean {
  return socketHandle(b.socket)?.fd === b.fd;
}

function socketHandle(socket: dgram.Socket): { fd?: unknown } | null {
  const state = stateOf(socket);
  const handle = state && (state as { handle?: unknown }).handle;
  return handle && typeof handle === 'object' ? handle : null;
}

let stateSymbol: symbol | null | undefined;
function stateOf(socket: dgram.Socket): object | null {
  if (stateSymbol === undefined)
    stateSymbol = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol') ?? null;
  if (!stateSymbol) return null;
  const state = (socket as unknown as Record<symbol, unknown>)[stateSymbol];
  return state && typeof state === 'object' ? state : null;
}
