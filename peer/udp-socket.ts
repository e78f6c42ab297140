import dgram from 'node:dgram';
import net from 'node:net';

/**
 * Kernel buffer asked for each UDP socket of a UDP service (the visit side's
 * listener, the serve side's flow sockets): a burst of a fast flow (a
 * WireGuard tunnel at full speed) must not overflow the default ~200 KiB
 * while the event loop is busy sealing. Linux caps it at net.core.rmem_max /
 * wmem_max without complaint.
 */
export const UDP_SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

/** A UDP socket of the family `host` needs (a name resolves as IPv4), with UDP_SOCKET_BUFFER_BYTES asked for. */
export function udpSocketFor(host: string): dgram.Socket {
  return dgram.createSocket({
    type: net.isIPv6(host) ? 'udp6' : 'udp4',
    recvBufferSize: UDP_SOCKET_BUFFER_BYTES,
    sendBufferSize: UDP_SOCKET_BUFFER_BYTES,
  });
}
