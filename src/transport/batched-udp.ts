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
import { performance } from 'node:perf_hooks';
import { keepLoan } from '../util/loan.js';
import { loadAddon, socketFd } from './udp-addon.js';

/** Why a send failed, as node:dgram would name it (e.g. 'ECONNREFUSED'). */
export type SendErrorHandler = (code: string) => void;

const { EAGAIN, EIO, EWOULDBLOCK } = os.constants.errno;

/** gsoMax when nothing limits it: any datagram size. */
const GSO_ANY_SIZE = 65535;
/**
 * How long a size the route refused in a super-packet stays out of GSO
 * (path MTUs learned from ICMP expire after 10 min).
 */
export const GSO_RETRY_MS = 30_000;
const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

/**
 * What went out since start (read by test/batched-udp.test.ts): datagrams
 * batched, the calls that carried them, sends left to dgram.
 */
export const udpBatchStats = { datagrams: 0, calls: 0, fallbacks: 0, gsoRefused: 0 };

interface Pending {
  data: Uint8Array;
  /** '' for a connected socket. */
  address: string;
  port: number;
  onError: SendErrorHandler | undefined;
}

class SocketBatch {
  queue: Pending[] = [];
  /**
   * Largest datagram sent in GSO super-packets: 0 for good once the device
   * cannot checksum them (EIO) or DF could not be forced (forceDontFragment);
   * below a size the route refused (EMSGSIZE: the kernel fragments plain
   * datagrams above the path MTU it learned from ICMP, but refuses GSO
   * segments) until GSO_RETRY_MS later.
   */
  gsoMax = GSO_ANY_SIZE;
  gsoRetryAt = 0;
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
 * Makes every datagram `socket` sends leave with DF set, at its own size,
 * whatever path MTU the kernel learned from ICMP (IP_PMTUDISC_PROBE), for a
 * socket whose datagram sizes a path MTU search owns (the direct path).
 *
 * Why: under the kernel's default, DF is decided per IP packet by its
 * length, so GSO super-packets went out without DF and routers fragmented
 * their segments where the search's own probes were dropped (see the
 * addon). Where DF cannot be set (an addon without it), GSO is turned off
 * for the socket: single datagrams get DF under the default. Without the
 * addon, sends are single datagrams anyway. True when DF is set.
 */
export function forceDontFragment(socket: dgram.Socket): boolean {
  const batch = batchFor(socket);
  if (!batch) return false;
  const r = loadAddon()?.dontFragment?.(batch.fd) ?? -1;
  if (r === 0) return true;
  batch.gsoMax = 0;
  return false;
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
  if (socketFd(b.socket) !== b.fd) return; // closed meanwhile: dgram would drop them too
  // dgram sends still waiting in libuv go first: send after them, through dgram.
  if (b.socket.getSendQueueCount() > 0) {
    toDgram(b.socket, queue, 0, queue.length);
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
  if (b.gsoMax > 0 && b.gsoMax < GSO_ANY_SIZE && performance.now() >= b.gsoRetryAt) b.gsoMax = GSO_ANY_SIZE;
  // GSO is tried first; a refused super-packet is sent again without it
  // before any datagram in it is called failed.
  let gso = b.gsoMax;
  while (i < to) {
    const datagrams: Uint8Array[] = [];
    for (let k = i; k < to; k++) datagrams.push(queue[k].data);
    const n = addon.send(b.fd, address, port, datagrams, gso);
    udpBatchStats.calls++;
    if (n > 0) {
      udpBatchStats.datagrams += n;
      i += n;
      gso = b.gsoMax;
      continue;
    }
    const errno = -n;
    if (errno === EAGAIN || errno === EWOULDBLOCK) {
      // Send buffer full: dgram queues the rest in libuv and sends them when it drains.
      toDgram(b.socket, queue, i, to);
      return to;
    }
    const size = queue[i].data.length;
    if (gso >= size && i + 1 < to) {
      // The first message was (probably) a super-packet, and the kernel refused it.
      udpBatchStats.gsoRefused++;
      if (errno === EIO) b.gsoMax = 0;
      else {
        b.gsoMax = Math.min(b.gsoMax, size - 1);
        b.gsoRetryAt = performance.now() + GSO_RETRY_MS;
      }
      gso = 0;
      continue;
    }
    // This datagram failed on its own (too large, ICMP error pending on a
    // connected socket, no route): reported as dgram reports it, then the rest go on.
    queue[i].onError?.(errnoNames.get(errno) ?? `errno ${errno}`);
    i++;
    gso = b.gsoMax;
  }
  return to;
}

/** queue[from, to) through node:dgram, which queues in libuv what the kernel cannot take now. */
function toDgram(socket: dgram.Socket, queue: Pending[], from: number, to: number): void {
  for (let k = from; k < to; k++) dgramSend(socket, queue[k].data, queue[k].port, queue[k].address, queue[k].onError);
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
