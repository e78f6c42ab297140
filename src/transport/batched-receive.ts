/**
 * UDP receives in batches: up to 64 datagrams per recvmmsg(2) and one call
 * into JavaScript for all of them, instead of libuv's one recvmsg and Node's
 * one 'message' event per datagram.
 *
 * Why: with sends batched (batched-udp.ts), the receiving peer's per-datagram
 * cost is what is left of the direct path's per-datagram cost
 * (docs/BENCHMARKS.md "Batched receives"). Node offers no recvmmsg, so this
 * uses the same optional addon as the sends (native/udp-batch): it polls a
 * dup of the socket's fd on Node's own event loop, after libuv's reading of
 * the socket is stopped, so each datagram is read once. Sends, the socket's
 * options and its close stay with node:dgram.
 *
 * Without the addon, on an unbound socket, or with PEER_UDP_BATCH=0,
 * receiveBatched() returns null and the caller keeps its 'message' listener.
 */
import type dgram from 'node:dgram';
import { loadAddon, socketFd, socketHandle } from './udp-addon.js';

/** What a 'message' listener gets. */
export type DatagramListener = (msg: Buffer, rinfo: dgram.RemoteInfo) => void;

/**
 * Receive buffer per datagram slot of a batched receiver by default, bytes:
 * above the tunnel's largest datagram (1472) and the STUN, PCP and NAT-PMP
 * answers that share its socket. Larger datagrams are dropped and counted.
 */
export const RECV_SLOT_BYTES = 2048;

export interface BatchedReceiver {
  /** Stops reading for good (the socket is not read again; its close does this too). Idempotent. */
  stop(): void;
  /** Datagrams dropped for being larger than the slot, known once stopped. */
  readonly truncated: number;
}

/**
 * Delivers every datagram `socket` receives to `onDatagram`, read in batches,
 * instead of as 'message' events; null when batching is not available (the
 * caller then listens for 'message' as before). The socket must be bound.
 */
export function receiveBatched(
  socket: dgram.Socket,
  onDatagram: DatagramListener,
  slotBytes = RECV_SLOT_BYTES,
): BatchedReceiver | null {
  const addon = loadAddon();
  if (!addon?.recvStart || !addon.recvStop) return null;
  const fd = socketFd(socket);
  const handle = socketHandle(socket);
  if (fd < 0 || typeof handle?.recvStop !== 'function') return null;
  const started = addon.recvStart(fd, slotBytes, (batch, length) => {
    for (let i = 0; i + 2 < length; i += 3) {
      const msg = batch[i] as Buffer;
      const address = batch[i + 1] as string;
      const rinfo: dgram.RemoteInfo = {
        address,
        family: address.includes(':') ? 'IPv6' : 'IPv4',
        port: batch[i + 2] as number,
        size: msg.length,
      };
      try {
        onDatagram(msg, rinfo);
      } catch (e) {
        // As with 'message' events, one throwing listener call is an uncaught
        // exception and the other datagrams of the batch are still delivered.
        process.nextTick(() => {
          throw e;
        });
      }
    }
  });
  if (typeof started === 'number') return null; // dup or poll refused: dgram reads as before
  // libuv stops reading only now that the addon does: datagrams arriving in
  // between wait in the socket's queue for whichever reads next.
  (handle.recvStop as () => number).call(handle);
  let truncated = 0;
  let stopped = false;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    truncated = addon.recvStop?.(started) ?? 0;
  };
  socket.once('close', stop);
  return {
    stop,
    get truncated() {
      return truncated;
    },
  };
}
