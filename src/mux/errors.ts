import { MuxResetReason } from '../wire/mux-frame.js';

/** Error carried by a stream that ended abnormally. `code` follows the net.Socket vocabulary. */
export interface MuxStreamError extends Error {
  code: 'ECONNREFUSED' | 'ECONNRESET' | 'EPROTO' | 'ECONNABORTED';
  /** Reset reason on the wire, when the error came from (or caused) an RST. */
  resetReason?: number;
}

export function resetReasonName(reason: number): string {
  switch (reason) {
    case MuxResetReason.Cancel:
      return 'cancel';
    case MuxResetReason.Refused:
      return 'refused';
    case MuxResetReason.TooManyStreams:
      return 'too many streams';
    case MuxResetReason.ProtocolError:
      return 'protocol error';
    case MuxResetReason.FlowControl:
      return 'flow control violation';
    case MuxResetReason.GoingAway:
      return 'going away';
    default:
      return `reason ${reason}`;
  }
}

function codeFor(reason: number): MuxStreamError['code'] {
  switch (reason) {
    case MuxResetReason.Refused:
    case MuxResetReason.TooManyStreams:
      return 'ECONNREFUSED';
    case MuxResetReason.ProtocolError:
    case MuxResetReason.FlowControl:
      return 'EPROTO';
    default:
      return 'ECONNRESET';
  }
}

export function streamError(
  code: MuxStreamError['code'],
  message: string,
  resetReason?: number,
  cause?: unknown,
): MuxStreamError {
  const err = new Error(message, cause === undefined ? undefined : { cause }) as MuxStreamError;
  err.code = code;
  if (resetReason !== undefined) err.resetReason = resetReason;
  return err;
}

/** The error a stream is destroyed with when the peer resets it. */
export function peerResetError(streamId: number, reason: number): MuxStreamError {
  return streamError(codeFor(reason), `stream ${streamId} reset by peer: ${resetReasonName(reason)}`, reason);
}

/** The error a stream is destroyed with when this side resets it for a peer fault. */
export function localResetError(streamId: number, reason: number, detail: string): MuxStreamError {
  return streamError(codeFor(reason), `stream ${streamId} reset: ${detail}`, reason);
}
