/**
 * A loopback UDP forwarder that misbehaves on purpose: it drops, delays
 * (reorders) and duplicates datagrams, both ways, with a seeded PRNG so a
 * failing run can be replayed.
 *
 *   client ──▶ forwarder (127.0.0.1:port) ──▶ target
 *   client ◀──            same socket      ◀── target
 *
 * The client is whoever last sent from an address other than the target.
 * Usage:
 *   const fwd = await createLossyForwarder({ target: { port: b.port }, dropRate: 0.1 });
 *   a.send(buf, fwd.port, '127.0.0.1');   // reaches b; b's replies to fwd.port reach a
 *   await fwd.close();
 */
import dgram from 'node:dgram';
import { mulberry32 } from '../../src/util/prng.js';

export interface LossyForwarderOptions {
  /** Where datagrams from the client go. address defaults to 127.0.0.1. */
  target: { port: number; address?: string };
  /** Probability (0..1) that a datagram is dropped, per direction. */
  dropRate?: number;
  /** Probability that a forwarded datagram is sent twice. */
  duplicateRate?: number;
  /** Probability that a forwarded datagram is held back so later ones overtake it. */
  reorderRate?: number;
  /** Upper bound of the hold-back delay in ms (uniform in 1..max). Default 5. */
  reorderMaxDelayMs?: number;
  /** PRNG seed; the same seed and traffic give the same fate to each datagram. */
  seed?: number;
  /** Listen address (must be loopback). Default 127.0.0.1. */
  host?: string;
  /**
   * SO_RCVBUF/SO_SNDBUF of the forwarder's socket. Default 4 MiB: with the
   * kernel default (~208 KB) a burst of a large KCP window overflows in the
   * kernel, which would add loss nobody asked for (and the stats cannot see).
   */
  socketBufferBytes?: number;
}

export interface LossyStats {
  received: number;
  forwarded: number;
  dropped: number;
  duplicated: number;
  reordered: number;
}

export interface LossyForwarder {
  readonly address: string;
  readonly port: number;
  readonly stats: LossyStats;
  /** Changes the loss profile on the fly (e.g. to heal a link mid-test). */
  configure(opts: Pick<LossyForwarderOptions, 'dropRate' | 'duplicateRate' | 'reorderRate'>): void;
  close(): Promise<void>;
}

/** Packet fates are decided by a seeded PRNG, so a lossy run can be replayed. */
export const seededRandom = mulberry32;

export async function createLossyForwarder(opts: LossyForwarderOptions): Promise<LossyForwarder> {
  const host = opts.host ?? '127.0.0.1';
  const targetAddr = opts.target.address ?? '127.0.0.1';
  const targetPort = opts.target.port;
  let dropRate = opts.dropRate ?? 0;
  let duplicateRate = opts.duplicateRate ?? 0;
  let reorderRate = opts.reorderRate ?? 0;
  const maxDelay = Math.max(1, opts.reorderMaxDelayMs ?? 5);
  const rand = seededRandom(opts.seed ?? 1);
  const stats: LossyStats = { received: 0, forwarded: 0, dropped: 0, duplicated: 0, reordered: 0 };
  const timers = new Set<NodeJS.Timeout>();
  let client: { port: number; address: string } | null = null;
  let closed = false;

  const bufBytes = opts.socketBufferBytes ?? 4 << 20;
  const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: bufBytes, sendBufferSize: bufBytes });
  // Loopback sends can fail transiently (ENOBUFS under load); a lossy link may lose those too.
  sock.on('error', () => {});

  const send = (buf: Buffer, port: number, address: string): void => {
    if (closed) return;
    stats.forwarded++;
    sock.send(buf, port, address, () => {});
  };

  sock.on('message', (msg, rinfo) => {
    if (closed) return;
    stats.received++;
    let port: number;
    let address: string;
    if (rinfo.port === targetPort && rinfo.address === targetAddr) {
      if (!client) return; // nobody to return it to yet
      ({ port, address } = client);
    } else {
      client = { port: rinfo.port, address: rinfo.address };
      port = targetPort;
      address = targetAddr;
    }
    if (rand() < dropRate) {
      stats.dropped++;
      return;
    }
    const copies = rand() < duplicateRate ? 2 : 1;
    if (copies === 2) stats.duplicated++;
    for (let c = 0; c < copies; c++) {
      if (rand() < reorderRate) {
        stats.reordered++;
        const t = setTimeout(
          () => {
            timers.delete(t);
            send(msg, port, address);
          },
          1 + Math.floor(rand() * maxDelay),
        );
        timers.add(t);
      } else {
        send(msg, port, address);
      }
    }
  });

  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, host, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  const port = sock.address().port;

  return {
    address: host,
    port,
    stats,
    configure(o) {
      if (o.dropRate !== undefined) dropRate = o.dropRate;
      if (o.duplicateRate !== undefined) duplicateRate = o.duplicateRate;
      if (o.reorderRate !== undefined) reorderRate = o.reorderRate;
    },
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      return new Promise<void>((resolve) => sock.close(() => resolve()));
    },
  };
}
