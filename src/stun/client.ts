/**
 * STUN Binding client on a socket the caller already owns.
 *
 * Each UDP socket gets its own NAT mapping, so the server-reflexive address is
 * only useful if it is learned on the socket that will carry the data. The
 * client therefore never opens a socket: it sends on the given one and
 * listens next to whoever else listens there. Node hands every datagram to
 * every 'message' listener, so our listener only *looks* for STUN responses
 * carrying our transaction id; other listeners keep receiving everything
 * (including our response, which they should ignore: isStunPacket()).
 */
import { CodedError } from '../util/errors.js';
import type dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { endpointToString, toEndpoint, type Endpoint } from './address.js';
import {
  decodeStun,
  encodeStun,
  isStunPacket,
  mappedAddressOf,
  newTransactionId,
  StunClass,
  StunMethod,
  type StunMessage,
} from './message.js';

export interface StunBindingOptions {
  /** RFC 5780 CHANGE-REQUEST flags: ask the server to answer from its other IP and/or port. */
  changeIp?: boolean;
  changePort?: boolean;
  /** Give up after this long (default 4000 ms). */
  timeoutMs?: number;
  /** Retransmissions after the first request (default 4; RTO doubles from rtoMs). */
  retries?: number;
  /** First retransmission timeout (RFC 5389 §7.2.1 suggests 500 ms). */
  rtoMs?: number;
  signal?: AbortSignal;
}

export interface StunBindingResult {
  /** Our transport address as the server saw it (XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS). */
  mapped: Endpoint;
  /** RFC 5780 OTHER-ADDRESS: the server's alternate IP and port, if it has one. */
  otherAddress?: Endpoint;
  /** RFC 5780 RESPONSE-ORIGIN: the address the server says it answered from. */
  responseOrigin?: Endpoint;
  /** Where the response actually came from (what the NAT let through). */
  source: Endpoint;
  software?: string;
  /** From the first request to the response; includes retransmission waits. */
  elapsedMs: number;
  /** Requests sent (1 + retransmissions). */
  attempts: number;
}

import type { StunErrorCode } from '../util/errors.js';
export type { StunErrorCode };

export class StunError extends CodedError {
  constructor(
    message: string,
    override readonly code: StunErrorCode,
    /** ERROR-CODE from the server, for ESTUNERROR. */
    readonly stunCode?: number,
  ) {
    super(code, message);
    this.name = 'StunError';
  }
}

export const DEFAULT_STUN_TIMEOUT_MS = 4000;
export const DEFAULT_STUN_RETRIES = 4;
export const DEFAULT_STUN_RTO_MS = 500;

/**
 * One Binding transaction on `socket` to `server` (an IP literal and port;
 * a host name is resolved by dgram on every send). Resolves with the mapped
 * address; rejects with a StunError on timeout, error response, socket close
 * or abort. Always removes its listener and timers before settling.
 */
export function stunBinding(
  socket: dgram.Socket,
  server: { address: string; port: number },
  opts: StunBindingOptions = {},
): Promise<StunBindingResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_STUN_TIMEOUT_MS;
  const retries = Math.max(0, Math.min(opts.retries ?? DEFAULT_STUN_RETRIES, 16));
  const rtoMs = Math.max(1, opts.rtoMs ?? DEFAULT_STUN_RTO_MS);
  const transactionId = newTransactionId();
  const req: StunMessage = { cls: StunClass.Request, method: StunMethod.Binding, transactionId, fingerprint: true };
  if (opts.changeIp || opts.changePort)
    req.changeRequest = { changeIp: !!opts.changeIp, changePort: !!opts.changePort };
  const packet = encodeStun(req);
  const target = endpointToString(server);

  return new Promise<StunBindingResult>((resolve, reject) => {
    const started = performance.now();
    let attempts = 0;
    let rto = rtoMs;
    let retransmitTimer: NodeJS.Timeout | undefined;
    let settled = false;

    const finish = (err: Error | null, result?: StunBindingResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(retransmitTimer);
      clearTimeout(deadline);
      socket.off('message', onMessage);
      socket.off('close', onClose);
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(result!);
    };

    const onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
      if (!isStunPacket(msg)) return;
      const res = decodeStun(msg);
      if (res === null || res.method !== StunMethod.Binding || !res.transactionId.equals(transactionId)) return;
      if (res.cls === StunClass.ErrorResponse) {
        const code = res.errorCode?.code;
        const why = res.errorCode ? `${res.errorCode.code} ${res.errorCode.reason}` : 'without ERROR-CODE';
        finish(new StunError(`STUN server ${target} answered error ${why}`, 'ESTUNERROR', code));
        return;
      }
      if (res.cls !== StunClass.SuccessResponse) return;
      const mapped = mappedAddressOf(res);
      if (!mapped) {
        finish(new StunError(`STUN response from ${target} has no (XOR-)MAPPED-ADDRESS`, 'ESTUNBADRESPONSE'));
        return;
      }
      finish(null, {
        mapped,
        otherAddress: res.otherAddress,
        responseOrigin: res.responseOrigin,
        source: toEndpoint(rinfo),
        software: res.software,
        elapsedMs: performance.now() - started,
        attempts,
      });
    };

    const onClose = (): void => finish(new StunError(`socket closed during STUN binding to ${target}`, 'ESTUNCLOSED'));
    const onAbort = (): void => finish(new StunError(`STUN binding to ${target} aborted`, 'ESTUNABORTED'));

    const send = (): void => {
      if (settled) return;
      attempts++;
      try {
        socket.send(packet, server.port, server.address, (err) => {
          if (err) finish(new StunError(`cannot send STUN request to ${target}: ${err.message}`, 'ESTUNSEND'));
        });
      } catch (err) {
        // dgram throws synchronously when the socket is already closed.
        finish(new StunError(`cannot send STUN request to ${target}: ${(err as Error).message}`, 'ESTUNSEND'));
        return;
      }
      if (attempts <= retries) {
        retransmitTimer = setTimeout(send, rto);
        rto *= 2;
      }
    };

    const deadline = setTimeout(
      () =>
        finish(
          new StunError(
            `STUN binding to ${target} timed out after ${timeoutMs} ms ` +
              `(${attempts} requests sent, no matching response)`,
            'ESTUNTIMEOUT',
          ),
        ),
      timeoutMs,
    );

    if (opts.signal?.aborted) {
      onAbort();
      return;
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('message', onMessage);
    socket.once('close', onClose);
    send();
  });
}
