/**
 * One request/response exchange with the gateway over UDP (PCP, NAT-PMP):
 * a fresh socket connected to the gateway, so only its answers arrive and an
 * ICMP port-unreachable ends the wait at once; resends every `rtoMs` until
 * `timeoutMs`. Datagrams the caller's `accept` rejects are dropped (it logs why).
 */
import dgram from 'node:dgram';

export interface UdpExchangeOptions {
  timeoutMs: number;
  rtoMs: number;
}

/**
 * Sends `payload` to `gateway:port` and resolves with the first reply that
 * `accept` turns into a value; null on timeout or when the gateway refuses
 * the port (ICMP unreachable). Never throws.
 */
export function udpExchange<T>(
  gateway: string,
  port: number,
  payload: Buffer,
  accept: (msg: Buffer) => T | null,
  opts: UdpExchangeOptions,
): Promise<{ value: T } | { value: null; why: string }> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    let done = false;
    let resend: NodeJS.Timeout | undefined;
    const finish = (r: { value: T } | { value: null; why: string }) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      clearInterval(resend);
      try {
        s.close();
      } catch {
        /* already closed */
      }
      resolve(r);
    };
    const deadline = setTimeout(() => finish({ value: null, why: 'no answer' }), opts.timeoutMs);
    s.on('error', (e: NodeJS.ErrnoException) =>
      finish({
        value: null,
        why: e.code === 'ECONNREFUSED' ? 'port closed (ICMP unreachable)' : (e.code ?? e.message),
      }),
    );
    s.on('message', (msg, rinfo) => {
      if (rinfo.address !== gateway || rinfo.port !== port) return;
      const v = accept(msg);
      if (v !== null) finish({ value: v });
    });
    const send = () => {
      if (!done) s.send(payload, (e) => e && finish({ value: null, why: e.message }));
    };
    // A connect that fails (no route after a network change, a broadcast
    // gateway) comes to this callback, not to 'error'; send() would throw.
    s.connect(port, gateway, (e?: Error) => {
      if (e) return finish({ value: null, why: (e as NodeJS.ErrnoException).code ?? e.message });
      send();
      resend = setInterval(send, opts.rtoMs);
    });
  });
}
