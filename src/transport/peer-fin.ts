/**
 * Telling a FIN (the other end closed on purpose) from a RST (the connection
 * was lost) on a TCP socket.
 *
 * Node emits 'end' for a RST that arrives while bytes of the connection are
 * still unread: libuv reads them in one short read, sees POLLHUP and reports
 * an end of stream without the next read, the one that would have returned
 * ECONNRESET. So 'end' alone does not mean a FIN. The reset is still pending
 * on the socket, though: on 'end' we write nothing (zero bytes), which fails
 * with ECONNRESET on a reset connection and succeeds on one half-closed by a
 * FIN (a FIN and then a RST gives EPIPE: closed on purpose). The write's
 * error comes before 'close'.
 */
import type net from 'node:net';

const NOTHING = Buffer.alloc(0);

/**
 * Calls `onFin(true)` when the other end of `sock` closes it with a FIN, and
 * `onFin(false)` if that turns out to be a RST. What it said last is final by
 * the socket's 'close'.
 */
export function watchPeerFin(sock: net.Socket, onFin: (fin: boolean) => void): void {
  sock.on('end', () => {
    onFin(true);
    if (sock.writable) sock.write(NOTHING);
  });
  sock.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'ECONNRESET') onFin(false);
  });
}
