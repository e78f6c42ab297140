import type { Duplex, Readable, Writable } from 'node:stream';
import type net from 'node:net';
import type { ReadTarget } from '../transport/user-reads.js';
import { keepLoan } from '../util/loan.js';
import { MuxResetReason } from '../wire/mux-frame.js';

/**
 * Joins a local byte stream to a mux stream in both directions, carrying
 * half-close (FIN one way leaves the other way open, as ssh and scp expect)
 * and turning an error on either side into a reset of the other.
 * Resolves when both directions are finished or one side failed.
 */
export function bridge(
  local: {
    readable: Readable;
    writable: Writable;
    destroy(err?: Error): void;
    reset?(): void;
    pipeTo?(remote: Duplex): void;
  },
  remote: Sinkable & Duplex & { reset?(reason?: number): void },
): Promise<void> {
  return new Promise((resolve) => {
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      resolve();
    };
    if (local.pipeTo) local.pipeTo(remote);
    else local.readable.pipe(remote);
    sinkInto(remote, local.writable);
    local.readable.on('error', () => {
      if (remote.reset) remote.reset(MuxResetReason.Cancel);
      else remote.destroy();
      done();
    });
    remote.on('error', () => {
      // A reset from the far side: pass it on as a reset, not a clean FIN.
      if (local.reset) local.reset();
      else local.destroy();
      done();
    });
    let ends = 0;
    const oneEnd = () => {
      if (++ends === 2) done();
    };
    remote.once('end', oneEnd);
    local.readable.once('end', oneEnd);
    remote.once('close', done);
  });
}

/**
 * bridge() for a TCP socket that reads into the shared buffer (its chunks go
 * to `target`: see transport/user-reads.ts): bulk bytes are copied straight
 * into pooled send-queue blocks, with no allocation per read. `rest` is what
 * the socket read before (switchToUserReads), sent first.
 */
export function bridgeUserReads(
  sock: net.Socket,
  target: ReadTarget,
  remote: Sinkable & Duplex & { reset?(reason?: number): void; writeTransient(chunk: Uint8Array): boolean },
  rest: Buffer[] = [],
): Promise<void> {
  const resume = () => sock.resume();
  const take = (chunk: Uint8Array): boolean => {
    if (remote.writeTransient(chunk)) return true;
    remote.once('sendable', resume);
    return false;
  };
  const early = [...rest, ...target.early.splice(0)];
  target.handler = take;
  let ok = true;
  for (const c of early) ok = remote.writeTransient(c);
  if (!ok) {
    sock.pause();
    remote.once('sendable', resume);
  } else {
    // The early handler stopped reading by returning false, which does not
    // mark the socket paused; resume() restarts a socket that is not reading.
    sock.resume();
  }
  return bridge({ ...socketEnd(sock), pipeTo: (r) => sock.once('end', () => r.end()) }, remote);
}

/** Adapts a TCP socket to bridge(): a remote reset becomes a TCP RST. */
export function socketEnd(sock: net.Socket) {
  return {
    readable: sock,
    writable: sock,
    destroy: (err?: Error) => sock.destroy(err),
    reset: () => (typeof sock.resetAndDestroy === 'function' ? sock.resetAndDestroy() : sock.destroy()),
  };
}

/** A mux stream that delivers straight to a sink (MuxStream.attachSink). */
export interface Sinkable extends Readable {
  attachSink(sink: { write(chunk: Uint8Array): boolean }): void;
  sinkReady(): void;
}

/**
 * Payloads this large are written at once. Smaller ones are corked until the
 * end of this turn of the event loop (setImmediate: after every datagram
 * libuv read in this poll phase, up to 32 per socket, before the loop can
 * block) and leave in one writev. On the direct path each datagram arrives
 * in its own callback and carries one ~1.4 KB frame: uncorked at the end of
 * each tick, that was one write system call per datagram, the largest share
 * of a receiving peer's CPU (docs/BENCHMARKS.md "Batched UDP sends").
 */
const CORK_BELOW = 16 * 1024;

/**
 * remote -> dst without the Readable in between: each payload is written to
 * `dst` as it arrives. Payloads may be lent memory (util/loan.ts): a write
 * the kernel did not take whole, or a corked one, keeps the loan.
 */
export function sinkInto(remote: Sinkable, dst: Writable): void {
  let corked = false;
  let waiting = false;
  const uncork = () => {
    if (!corked) return;
    corked = false;
    dst.uncork();
  };
  const onDrain = () => {
    waiting = false;
    remote.sinkReady();
  };
  remote.attachSink({
    write(chunk) {
      if (dst.destroyed) return true; // dropped, as pipe() would
      let ok: boolean;
      if (chunk.length < CORK_BELOW) {
        if (!corked) {
          corked = true;
          dst.cork();
          setImmediate(uncork);
        }
        ok = dst.write(chunk);
        keepLoan(); // waits in the corked socket until the end of the turn
      } else {
        uncork(); // earlier small chunks first, and this one must not wait in the cork
        ok = dst.write(chunk);
        // The kernel did not take all of it: the socket keeps pointing into the chunk.
        if (dst.writableLength > 0) keepLoan();
      }
      if (!ok && !waiting) {
        waiting = true;
        dst.once('drain', onDrain);
      }
      return ok;
    },
  });
  remote.once('end', () => dst.end());
}
