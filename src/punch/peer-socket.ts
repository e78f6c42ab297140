import dgram from 'node:dgram';
import { isStunPacket } from '../stun/message.js';
import { peekDatagramHeader, type DatagramHeader } from '../wire/datagram.js';
import { receiveBatched } from '../transport/batched-receive.js';
import { forceDontFragment } from '../transport/batched-udp.js';

/**
 * Receives datagrams addressed to one session (by its local
 * receiver index), with the header already parsed for routing.
 */
export type DatagramHandler = (
  msg: Buffer,
  header: DatagramHeader,
  rinfo: dgram.RemoteInfo,
  socket: dgram.Socket,
) => void;

/**
 * The peer's UDP endpoint (Tailscale would call it magicsock): one socket per
 * address family that carries every session's direct paths of that family and
 * the STUN requests that discover its public mapping, plus any extra sockets a
 * birthday punch opens (IPv4 only: IPv6 has no NAT to outguess). Datagrams
 * are routed by the receiver index in their header; anything that is not STUN
 * and not for a live session is dropped without a reply.
 *
 * Why two sockets rather than one dual-stack socket (docs/ARCHITECTURE.md
 * "Data sockets"): the IPv4 socket stays exactly what it was, so IPv4
 * behaviour cannot change; each family's STUN mapping is learned on the
 * socket that carries that family; a host without IPv6 (or an OS whose
 * sockets are IPV6_V6ONLY by default, or cannot be dual-stack at all) just
 * has no `socket6`; and an IPv4 peer is never seen as '::ffff:a.b.c.d'.
 */
export class PeerSocket {
  private handlers = new Map<number, DatagramHandler>();
  private extra = new Set<dgram.Socket>();
  dropped = 0;

  private constructor(
    readonly socket: dgram.Socket,
    /** The IPv6 data socket (IPV6_V6ONLY), or null: no IPv6 here, or not asked for. */
    readonly socket6: dgram.Socket | null = null,
  ) {
    this.attach(socket, true);
    growBuffers(socket);
    if (socket6) {
      this.attach(socket6, true);
      growBuffers(socket6);
    }
  }

  /**
   * Opens the data socket on `host`:`port` (IPv4 unless `host` is an IPv6
   * literal) and, with `ipv6` and an IPv4 main socket, an IPv6 one on [::]
   * (any port); a failure of the IPv6 socket (a kernel without IPv6) leaves it out.
   */
  static async open(host = '0.0.0.0', port = 0, opts: { ipv6?: boolean } = {}): Promise<PeerSocket> {
    const v6main = host.includes(':');
    const main = await bindUdp(v6main ? 'udp6' : 'udp4', host, port);
    const six = opts.ipv6 && !v6main ? await bindUdp('udp6', '::', 0).catch(() => null) : null;
    return new PeerSocket(main, six);
  }

  get port(): number {
    return this.socket.address().port;
  }

  /** The IPv6 socket's port (null without one). */
  get port6(): number | null {
    return this.socket6 ? this.socket6.address().port : null;
  }

  /** The socket that sends to `address`: the IPv6 one for an IPv6 literal when there is one, else the main one. */
  socketFor(address: string): dgram.Socket {
    return this.socket6 && address.includes(':') && !address.startsWith('::ffff:') ? this.socket6 : this.socket;
  }

  register(index: number, handler: DatagramHandler): void {
    this.handlers.set(index >>> 0, handler);
  }

  unregister(index: number): void {
    this.handlers.delete(index >>> 0);
  }

  /** Opens an extra socket routed like the main one (birthday punching). */
  openExtra(): Promise<dgram.Socket> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket({ type: 'udp4' });
      s.once('error', reject);
      s.bind({ address: '0.0.0.0', port: 0 }, () => {
        s.off('error', reject);
        this.attach(s);
        this.extra.add(s);
        resolve(s);
      });
    });
  }

  closeExtra(s: dgram.Socket): void {
    if (this.extra.delete(s)) s.close();
  }

  close(): void {
    for (const s of this.extra) s.close();
    this.extra.clear();
    this.socket.close();
    this.socket6?.close();
  }

  /**
   * Listens on `s`. The data sockets (`batched`) are read in batches where
   * the udp-batch addon is built (transport/batched-receive.ts); datagrams no
   * session takes (STUN answers, anything unknown) are then emitted as
   * 'message', so the socket's other listeners (the STUN client) hear them
   * as before.
   */
  private attach(s: dgram.Socket, batched = false): void {
    // The path MTU search owns datagram sizes: DF on every one, batched or not.
    forceDontFragment(s);
    // ICMP errors (port unreachable while punching) surface as socket errors; they are expected.
    s.on('error', () => {});
    const rx =
      batched &&
      receiveBatched(s, (msg, rinfo) => {
        if (!this.deliver(msg, rinfo, s)) s.emit('message', msg, rinfo);
      });
    if (!rx) s.on('message', (msg, rinfo) => this.deliver(msg, rinfo, s));
  }

  /** Hands a session datagram to its session; false for anything else (counted unless STUN). */
  private deliver(msg: Buffer, rinfo: dgram.RemoteInfo, s: dgram.Socket): boolean {
    if (isStunPacket(msg)) return false; // the STUN client listening on this socket takes it
    const h = peekDatagramHeader(msg);
    const handler = h && this.handlers.get(h.receiver);
    if (!handler) {
      this.dropped++;
      return false;
    }
    handler(msg, h, rinfo, s);
    return true;
  }
}

function bindUdp(type: 'udp4' | 'udp6', address: string, port: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type, ipv6Only: type === 'udp6' && address === '::' });
    s.once('error', (e) => {
      s.close();
      reject(e);
    });
    s.bind({ address, port }, () => {
      s.off('error', reject);
      resolve(s);
    });
  });
}

/**
 * A full KCP window (1024 segments, ~1.4 MB) can arrive in one burst; the
 * kernel's default 208 KiB receive buffer would drop most of it and turn a
 * fast path into a retransmission storm. Best effort: the kernel caps the
 * size at net.core.rmem_max / wmem_max.
 */
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;
function growBuffers(s: dgram.Socket): void {
  try {
    s.setRecvBufferSize(SOCKET_BUFFER_BYTES);
    s.setSendBufferSize(SOCKET_BUFFER_BYTES);
  } catch {
    /* capped or refused: the default still works, only slower */
  }
}
