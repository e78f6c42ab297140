/**
 * Every error code of the project, in one place. A failure the user can see
 * (the `error` log event, an exit) carries one of these in `code`, so scripts
 * and our own code branch on the code, never on the message text. The list,
 * with cause and fix for each, is in docs/CLI.md and docs/TROUBLESHOOTING.md.
 */
import type { ErrorCode as WireErrorCode } from '../wire/control.js';

/** Codes of a failed handshake (src/crypto/handshake.ts HandshakeError). */
export type HandshakeErrorCode =
  /** Not a handshake message of the expected kind and length. */
  | 'bad_format'
  /** A handshake message from a protocol version we do not speak. */
  | 'bad_version'
  /** MAC mismatch: wrong secret, different context, or tampered/misrouted message. */
  | 'auth_failed'
  /** Authenticated, but the peer's ephemeral key is a low-order point. */
  | 'weak_key'
  /** finish() after a successful finish(): the ephemeral secret is gone. */
  | 'already_finished';

/** Codes of a failed STUN transaction (src/stun/client.ts StunError). */
export type StunErrorCode =
  'ESTUNTIMEOUT' | 'ESTUNERROR' | 'ESTUNBADRESPONSE' | 'ESTUNCLOSED' | 'ESTUNABORTED' | 'ESTUNSEND';

/** Codes raised on this machine (the wire and handshake codes are below). */
export type LocalErrorCode =
  /** A flag, argument or environment variable has a bad value, or a required one is missing. */
  | 'usage'
  /** A config file cannot be read or does not validate (the message names file, line and key). */
  | 'config'
  /** An identity (key pair) file cannot be read, parsed or written. */
  | 'identity'
  /** A port we must listen on is taken (EADDRINUSE). */
  | 'address_in_use'
  /** Any other failure to listen (EACCES, EADDRNOTAVAIL...). */
  | 'listen_failed'
  /** The rendezvous cannot be reached, does not answer, or closed the connection before the welcome. */
  | 'unreachable'
  /** The rendezvous connection closed while a request was waiting for its answer. */
  | 'disconnected'
  /** --mode direct and no hole could be punched (or none is possible for this NAT pair). */
  | 'no_direct_path'
  /** `peer status`: no running peer, or its admin socket did not answer. */
  | 'no_peer'
  /** The datagram counter is used up: the session needs a new handshake. */
  | 'rekey_needed'
  /**
   * A tunnel session ended because no path can carry it: the peer stopped
   * acknowledging (or sending anything) on every path it has, or data is cut
   * larger than every open path carries.
   */
  | 'no_path'
  /**
   * A tunnel session lost its paths (network change, outage, relay or peer
   * gone) and could not take them back within --resume-timeout: its streams
   * are reset.
   */
  | 'resume_timeout';

/**
 * The whole union: wire codes (src/wire/control.ts `ErrorCode`, public: they
 * travel in `error`/`reject` messages), handshake codes (src/crypto/handshake.ts),
 * STUN client codes (src/stun/client.ts) and the local ones above.
 */
export type ErrorCode = WireErrorCode | HandshakeErrorCode | StunErrorCode | LocalErrorCode;

/** An Error with a code from the list above. Subclasses: FatalError (peer), HandshakeError, StunError, ConfigError. */
export class CodedError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The code of any thrown value: its own when it is a CodedError, 'internal' otherwise. */
export function codeOf(e: unknown): ErrorCode {
  return e instanceof CodedError ? e.code : 'internal';
}

/** A failed listen as a coded error: `what` names the address ("127.0.0.1:2222", "UDP 0.0.0.0:7000"). */
export function listenError(e: NodeJS.ErrnoException, what: string): CodedError {
  return e.code === 'EADDRINUSE'
    ? new CodedError('address_in_use', `cannot listen on ${what}: the port is already in use`, { cause: e })
    : new CodedError('listen_failed', `cannot listen on ${what}: ${e.code ?? e.message}`, { cause: e });
}
