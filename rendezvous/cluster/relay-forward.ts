import net from 'node:net';
import { formatHostPort } from '../../src/util/addr.js';
import type { FramedSocket } from '../../src/transport/framed-socket.js';
import { encodeControl } from '../../src/wire/control.js';
import type { HostPort } from '../../src/util/addr.js';

/**
 * Carries a visitor's relay leg to the node that brokered its session: opens
 * a TCP connection to that node's relay, presents the visitor's ticket
 * unchanged (the owning node checks its MAC with its own key), then splices
 * the two sockets with backpressure. Bytes are never parsed here, as in the
 * relay itself. `onEnd` runs once when either side goes away.
 */
export function forwardRelayLeg(
  fs: FramedSocket,
  ticket: string,
  to: HostPort,
  onEnd: (reason: string) => void,
  connectTimeoutMs = 10_000,
): void {
  const rest = fs.detach();
  const visitor = fs.socket;
  const upstream = net.connect({ host: to.host, port: to.port });
  upstream.setNoDelay(true);
  let done = false;
  const end = (reason: string) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    visitor.destroy();
    upstream.destroy();
    onEnd(reason);
  };
  const timer = setTimeout(
    () => end(`no connection to ${formatHostPort(to)} within ${connectTimeoutMs} ms`),
    connectTimeoutMs,
  );
  timer.unref();
  // Anything the visitor sent after relay_bind waits in the kernel until the pipe runs.
  visitor.pause();
  upstream.once('connect', () => {
    clearTimeout(timer);
    upstream.write(encodeControl({ type: 'relay_bind', ticket }));
    if (rest.length) upstream.write(rest);
    visitor.pipe(upstream);
    upstream.pipe(visitor);
    visitor.resume();
  });
  upstream.on('error', (e: NodeJS.ErrnoException) =>
    end(`relay of the owning node ${formatHostPort(to)}: ${e.code ?? e.message}`),
  );
  visitor.on('error', () => end('visitor connection error'));
  upstream.on('close', () => end('owning node closed the relay leg'));
  visitor.on('close', () => end('visitor closed the relay leg'));
}
