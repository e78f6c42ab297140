import dgram from 'node:dgram';
import { isStunPacket } from '../stun/message.js';
import { peekDatagramHeader, type DatagramHeader } from '../wire/datagram.js';

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
 * The peer's UDP endpoint (Tailscale would call it magicsock): one socket that
 * carries every session's direct path and the STUN requests that discover its
 * public mapping, plus any extra sockets a birthday punch opens. Datagrams are
 * routed by the receiver index in their header; anything that is not STUN and
 * not for a live session is dropped without a reply.
 */
export class PeerSocket {
  private handlers = new Map<number, DatagramHandler>();
  private extra = new Set<dgram.Socket>();
  dropped = 0;

  private constructor(readonly socket: dgram.Socket) {
    this.attach(socket);
    growBuffers(socket);
  }

  static open(host = '0.0.0.0', port = 0): Promise<PeerSocket> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4' });
      s.once('error', reject);
      s.bind({ address: host, port }, () => {
        s.off('error', reject);
        resolve(new PeerSocket(s));
      });
    });
  }

  get port(): number {
    return this.socket.address().port;
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
  }

  private attach(s: dgram.Socket): void {
    // ICMP errors (port unreachable while punching) surface as socket errors; they are expected.
    s.on('error', () => {});
    s.on('message', (msg, rinfo) => {
      if (isStunPacket(msg)) return; // the STUN client listening on this socket takes it
      const h = peekDatagramHeader(msg);
      const handler = h && this.handlers.get(h.receiver);
      if (!handler) {
        this.dropped++;
        return;
      }
      handler(msg, h, rinfo, s);
    });
  }
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
