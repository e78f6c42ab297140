import type { Duplex, Readable, Writable } from 'node:stream';
import type net from 'node:net';

/**
 * Joins a local byte stream to a mux stream in both directions, carrying
 * half-close (FIN one way leaves the other way open, as ssh and scp expect)
 * and turning an error on either side into a reset of the other.
 * Resolves when both directions are finished or one side failed.
 */
export function bridge(local: { readable: Readable; writable: Writable; destroy(err?: Error): void; reset?(): void }, remote: Duplex & { reset?(reason?: string): void }): Promise<void> {
  return new Promise((resolve) => {
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      resolve();
    };
    local.readable.pipe(remote);
    pipeCoalesced(remote, local.writable);
    local.readable.on('error', () => {
      remote.reset ? remote.reset('local error') : remote.destroy();
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

/** Adapts a TCP socket to bridge(): a remote reset becomes a TCP RST. */
export function socketEnd(sock: net.Socket) {
  return {
    readable: sock,
    writable: sock,
    destroy: (err?: Error) => sock.destroy(err),
    reset: () => (typeof sock.resetAndDestroy === 'function' ? sock.resetAndDestroy() : sock.destroy()),
  };
}

/**
 * Like readable.pipe(writable), but the writes of one tick are corked into a
 * single writev: the mux delivers a burst of ~1.4 KB frames per KCP flush, and
 * one syscall per frame costs more than everything else on the receive path.
 */
export function pipeCoalesced(src: Readable, dst: Writable): void {
  let corked = false;
  src.on('data', (chunk: Buffer) => {
    if (dst.destroyed) return;
    if (!corked) {
      corked = true;
      dst.cork();
      process.nextTick(() => {
        corked = false;
        dst.uncork();
      });
    }
    if (!dst.write(chunk)) src.pause();
  });
  dst.on('drain', () => src.resume());
  src.once('end', () => dst.end());
}
