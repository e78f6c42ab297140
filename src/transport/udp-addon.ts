/**
 * The optional udp-batch addon (native/udp-batch) and the one thing both of
 * its users need from a dgram socket: the fd under it.
 *
 * The addon batches UDP sends (batched-udp.ts) and receives
 * (batched-receive.ts). It is built by node-gyp at install time on Linux;
 * without it, or with PEER_UDP_BATCH=0, both fall back to node:dgram.
 */
import type dgram from 'node:dgram';
import { optionalAddon } from '../util/optional-addon.js';

export interface UdpBatchAddon {
  /**
   * Datagrams sent (a prefix), or -errno when the first failed. host '' sends
   * on a connected socket; runs of datagrams up to gsoMax bytes go as GSO
   * super-packets (0: none).
   */
  send(fd: number, host: string, port: number, datagrams: Uint8Array[], gsoMax: number): number;
  /** Sets DF on every datagram of the socket, ignoring ICMP-learned MTUs (IP_PMTUDISC_PROBE): 0 or -errno. */
  dontFragment?(fd: number): number;
  /**
   * Reads the socket (a dup of `fd`) with recvmmsg from now on, calling
   * `onBatch(batch, length)` with batch[0, length) = Buffer, address, port, ...
   * Returns a handle for recvStop, or -errno.
   */
  recvStart?(fd: number, maxSize: number, onBatch: (batch: unknown[], length: number) => void): object | number;
  /** Stops reading and closes the dup; returns how many datagrams were too large. Idempotent. */
  recvStop?(handle: object): number;
  readonly maxDatagrams: number;
}

export const loadAddon = optionalAddon<UdpBatchAddon>(
  'holepunch-udp-batch',
  'PEER_UDP_BATCH',
  (m) => typeof m.send === 'function' && typeof m.maxDatagrams === 'number',
);

/**
 * The file descriptor under a dgram socket, or -1 (not bound, closed). Node
 * keeps the handle in a symbol-keyed state object (`socket._handle` reads the
 * same but is deprecated and prints a warning); on an unknown layout the
 * addon is not used.
 */
export function socketFd(socket: dgram.Socket): number {
  const handle = socketHandle(socket);
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

/** Node's UDP handle under a dgram socket (fd, recvStop), or null. */
export function socketHandle(socket: dgram.Socket): { fd?: unknown; recvStop?: unknown } | null {
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
