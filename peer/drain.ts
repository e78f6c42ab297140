import type net from 'node:net';
import type { MuxStream, TunnelHost } from './tunnel.js';
import { sleep } from '../src/util/backoff.js';
import type { Logger } from '../src/util/log.js';

interface Entry {
  sock: net.Socket;
  stream: MuxStream;
}

/**
 * The TCP connections a peer is carrying, so a graceful shutdown can wait for
 * them and then end the rest with a FIN (never a reset): bytes already handed
 * to us are delivered before the end.
 */
export class StreamSet {
  private live = new Set<Entry>();
  private waiters: (() => void)[] = [];

  get size(): number {
    return this.live.size;
  }

  /** Tracks one bridged connection until `done` settles. */
  track(sock: net.Socket, stream: MuxStream, done: Promise<void>): void {
    const e = { sock, stream };
    this.live.add(e);
    void done.finally(() => {
      this.live.delete(e);
      if (this.live.size === 0) for (const w of this.waiters.splice(0)) w();
    });
  }

  /**
   * Waits up to `graceMs` for every connection to finish on its own, then
   * half-closes what is left in both directions. Resolves with how many had to be ended.
   */
  async drain(graceMs: number): Promise<number> {
    if (this.live.size) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        timer.unref();
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const left = [...this.live];
    for (const { sock, stream } of left) {
      // Stop the pipes first so nothing is written after our end(); whatever
      // they already moved is queued ahead of the FIN.
      sock.unpipe(stream);
      stream.unpipe(sock);
      stream.end();
      sock.end();
    }
    return left.length;
  }
}

/** Waits until every session of `host` has no unacknowledged data (FINs included), up to `timeoutMs`. */
export async function flushSessions(host: TunnelHost, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let pending = 0;
    for (const t of host.tunnels.values())
      if (!t.session.closed) pending += t.session.kcp.waitSnd() + t.session.mux.openStreams().length;
    if (pending === 0) return;
    await sleep(20);
  }
}

/**
 * The common part of serve's and visit's graceful shutdown, once they stopped
 * taking new work: open connections get `graceMs` to finish, the rest end with
 * a FIN (logged as `drained`), and the FINs get 2 s to be acknowledged.
 */
export async function drainAndFlush(
  peer: { streams: StreamSet; host: TunnelHost; opts: { log: Logger; name: string } },
  graceMs: number,
): Promise<void> {
  const forced = await peer.streams.drain(graceMs);
  if (forced)
    peer.opts.log.info('drained', `ended ${forced} open connection(s) with a FIN`, { name: peer.opts.name, forced });
  await flushSessions(peer.host, 2000);
}
