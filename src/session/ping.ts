import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Session } from './session.js';
import type { Path } from './path.js';
import { DatagramType } from '../wire/datagram.js';
import { decodeProbe, encodeProbe } from '../wire/probe.js';
import { CodedError } from '../util/errors.js';

/**
 * `peer ping`: one sealed Probe on the session's active path, timed until its
 * ProbeAck comes back on the same path. On a direct path the peer's direct
 * path manager (src/punch/direct.ts) answers probes already; on the relay
 * nothing did, so every session answers probes that arrive off the direct
 * path (answerProbesOffDirect). Probe ids are random, so a ping's ack is
 * never taken for one of the path manager's and the other way round.
 */

/** How long one probe waits for its answer unless the caller says. */
export const PING_TIMEOUT_MS = 2000;

export interface PingResult {
  path: 'relay' | 'direct';
  remote: string;
  rttMs: number;
}

/** Answers Probe datagrams that arrive on the relay (or any non-direct path) with a ProbeAck on the same path. */
export function answerProbesOffDirect(session: Session): () => void {
  const onControl = (type: DatagramType, payload: Uint8Array, from: Path) => {
    if (type !== DatagramType.Probe || from.kind === 'direct') return;
    const probe = decodeProbe(payload);
    if (probe) session.sendSealed(DatagramType.ProbeAck, encodeProbe(probe.id, from.remote), from);
  };
  session.on('control', onControl);
  return () => session.off('control', onControl);
}

/** Sends one probe on the active path; resolves with that path and the round trip, rejects with code 'timeout'. */
export function pingSession(session: Session, timeoutMs = PING_TIMEOUT_MS): Promise<PingResult> {
  const path = session.path;
  if (session.closed || !path || path.closed)
    return Promise.reject(new CodedError('disconnected', 'the session has no open path to ping on'));
  return new Promise((resolve, reject) => {
    const id = crypto.randomInt(1, 2 ** 31);
    const sentAt = performance.now();
    const done = () => {
      clearTimeout(timer);
      session.off('control', onControl);
      session.off('close', onClose);
    };
    const onControl = (type: DatagramType, payload: Uint8Array, from: Path) => {
      if (type !== DatagramType.ProbeAck || from !== path) return;
      const ack = decodeProbe(payload);
      if (!ack || ack.id !== id) return;
      done();
      resolve({ path: path.kind, remote: path.remote, rttMs: performance.now() - sentAt });
    };
    const onClose = (reason: string) => {
      done();
      reject(new CodedError('disconnected', `the session closed: ${reason}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new CodedError('timeout', `no answer on the ${path.kind} path (${path.remote}) within ${timeoutMs} ms`));
    }, timeoutMs);
    session.on('control', onControl);
    session.once('close', onClose);
    session.sendSealed(DatagramType.Probe, encodeProbe(id, path.remote), path);
  });
}
