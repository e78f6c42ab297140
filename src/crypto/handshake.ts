/**
 * Two-message tunnel handshake: ephemeral X25519 for forward secrecy, keyed
 * BLAKE2b MACs from the shared-secret PSK for authentication. The visitor is
 * the initiator, the serving peer the responder; the rendezvous only carries
 * the bytes. Construction and rationale: docs/CRYPTO.md.
 *
 * Network bytes only ever produce HandshakeError; TypeError means the local
 * caller passed a bad argument (wrong PSK length, index not a uint32).
 */
import { CodedError } from '../util/errors.js';
import {
  HANDSHAKE_INIT_LEN,
  HANDSHAKE_RESPONSE_LEN,
  HS_MAC_LEN,
  HS_MAC_OFFSET,
  HS_NONCE_LEN,
  decodeHandshakeInit,
  decodeHandshakeResponse,
  encodeHandshakeInit,
  encodeHandshakeResponse,
} from '../wire/handshake.js';
import { PSK_LEN, contextHash, handshakeKeys, initMac, responseMac, sessionKeys, transcriptHash } from './kdf.js';
import { sodium } from './sodium.js';
import { checkU32 } from '../wire/bytes.js';

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

export class HandshakeError extends CodedError {
  override readonly name = 'HandshakeError';
  constructor(
    override readonly code: HandshakeErrorCode,
    message?: string,
  ) {
    super(code, message ?? code);
  }
}

export interface SessionKeys {
  /** Seals datagrams we send. */
  sendKey: Uint8Array;
  /** Opens datagrams we receive. */
  recvKey: Uint8Array;
  /** Our index: the receiver field of datagrams sent to us. */
  localIndex: number;
  /** The peer's index: the receiver field of datagrams we send. */
  remoteIndex: number;
  /** KCP conversation id, chosen by the initiator. */
  conv: number;
  isInitiator: boolean;
}

export interface InitiatorOptions {
  initiatorIndex: number;
  conv: number;
  /** Bound into the MACs and keys; both sides must pass the same bytes (a string is taken as UTF-8). */
  context: Uint8Array | string;
}

export interface Initiator {
  /** The init message to hand to the rendezvous. */
  readonly message: Uint8Array;
  readonly initiatorIndex: number;
  readonly conv: number;
  /**
   * Verifies the responder's message and returns the session keys. A bad
   * response throws HandshakeError and leaves the initiator able to try the
   * genuine response; after success the ephemeral secret is wiped.
   */
  finish(response: Uint8Array): SessionKeys;
}

export interface ResponderOptions {
  responderIndex: number;
  context: Uint8Array | string;
}

export interface RespondResult {
  /** The response message to hand back through the rendezvous. */
  response: Uint8Array;
  keys: SessionKeys;
  initiatorIndex: number;
  conv: number;
}

const utf8 = new TextEncoder();

function contextBytes(context: Uint8Array | string): Uint8Array {
  if (typeof context === 'string') return utf8.encode(context);
  if (context instanceof Uint8Array) return context;
  throw new TypeError('context must be a Uint8Array or a string');
}

function checkPsk(psk: Uint8Array): void {
  if (!(psk instanceof Uint8Array) || psk.length !== PSK_LEN) throw new TypeError(`psk must be ${PSK_LEN} bytes`);
}

interface Ephemeral {
  secret: Uint8Array;
  public: Uint8Array;
}

function newEphemeral(): Ephemeral {
  const s = sodium();
  const secret = s.randombytes_buf(32);
  return { secret, public: s.crypto_scalarmult_base(secret) };
}

/** X25519; null for a low-order peer key (libsodium refuses an all-zero result). */
function dh(secret: Uint8Array, peerPublic: Uint8Array): Uint8Array | null {
  try {
    return sodium().crypto_scalarmult(secret, peerPublic);
  } catch {
    return null;
  }
}

function macMatches(expected: Uint8Array, got: Uint8Array): boolean {
  return got.length === HS_MAC_LEN && sodium().memcmp(expected, got);
}

export function createInitiator(psk: Uint8Array, opts: InitiatorOptions): Initiator {
  checkPsk(psk);
  checkU32('initiatorIndex', opts.initiatorIndex);
  checkU32('conv', opts.conv);
  const s = sodium();
  const { macKey, kdfKey } = handshakeKeys(psk);
  const ctx = contextHash(contextBytes(opts.context));
  let eph: Ephemeral | null = newEphemeral();

  const message = encodeHandshakeInit({
    initiatorIndex: opts.initiatorIndex,
    conv: opts.conv,
    ephemeral: eph.public,
    nonce: s.randombytes_buf(HS_NONCE_LEN),
    mac: new Uint8Array(HS_MAC_LEN),
  });
  message.set(initMac(macKey, ctx, message), HS_MAC_OFFSET);
  // Handed out to callers; keep our own copy for the transcript so later
  // mutation of `message` by a caller cannot change what we verify against.
  const init = message.slice();

  function finish(response: Uint8Array): SessionKeys {
    if (!eph) throw new HandshakeError('already_finished', 'handshake already finished');
    const r = decodeHandshakeResponse(response);
    if (typeof r === 'string') throw new HandshakeError(r, `response: ${r}`);
    if (r.initiatorIndex !== opts.initiatorIndex)
      throw new HandshakeError('auth_failed', 'response is for another handshake');
    const resp = Uint8Array.prototype.slice.call(response, 0, HANDSHAKE_RESPONSE_LEN);
    if (!macMatches(responseMac(macKey, ctx, init, resp), r.mac)) {
      throw new HandshakeError('auth_failed', 'response MAC mismatch (wrong secret or context?)');
    }
    const shared = dh(eph.secret, r.ephemeral);
    if (!shared) throw new HandshakeError('weak_key', 'responder ephemeral key is a low-order point');
    const { i2r, r2i } = sessionKeys(kdfKey, shared, transcriptHash(ctx, init, resp));
    s.memzero(shared);
    s.memzero(eph.secret);
    eph = null;
    s.memzero(macKey);
    s.memzero(kdfKey);
    return {
      sendKey: i2r,
      recvKey: r2i,
      localIndex: opts.initiatorIndex,
      remoteIndex: r.responderIndex,
      conv: opts.conv,
      isInitiator: true,
    };
  }

  return { message, initiatorIndex: opts.initiatorIndex, conv: opts.conv, finish };
}

export function respond(psk: Uint8Array, message: Uint8Array, opts: ResponderOptions): RespondResult {
  checkPsk(psk);
  checkU32('responderIndex', opts.responderIndex);
  const s = sodium();
  const m = decodeHandshakeInit(message);
  if (typeof m === 'string') throw new HandshakeError(m, `init: ${m}`);
  const { macKey, kdfKey } = handshakeKeys(psk);
  const ctx = contextHash(contextBytes(opts.context));
  const init = Uint8Array.prototype.slice.call(message, 0, HANDSHAKE_INIT_LEN);
  try {
    if (!macMatches(initMac(macKey, ctx, init), m.mac)) {
      throw new HandshakeError('auth_failed', 'init MAC mismatch (wrong secret or context?)');
    }
    const eph = newEphemeral();
    const shared = dh(eph.secret, m.ephemeral);
    s.memzero(eph.secret);
    if (!shared) throw new HandshakeError('weak_key', 'initiator ephemeral key is a low-order point');

    const response = encodeHandshakeResponse({
      responderIndex: opts.responderIndex,
      initiatorIndex: m.initiatorIndex,
      ephemeral: eph.public,
      nonce: s.randombytes_buf(HS_NONCE_LEN),
      mac: new Uint8Array(HS_MAC_LEN),
    });
    response.set(responseMac(macKey, ctx, init, response), HS_MAC_OFFSET);
    const { i2r, r2i } = sessionKeys(kdfKey, shared, transcriptHash(ctx, init, response));
    s.memzero(shared);
    return {
      response,
      keys: {
        sendKey: r2i,
        recvKey: i2r,
        localIndex: opts.responderIndex,
        remoteIndex: m.initiatorIndex,
        conv: m.conv,
        isInitiator: false,
      },
      initiatorIndex: m.initiatorIndex,
      conv: m.conv,
    };
  } finally {
    s.memzero(macKey);
    s.memzero(kdfKey);
  }
}

/** A random non-zero uint32 for initiatorIndex / responderIndex. */
export function randomIndex(): number {
  const s = sodium();
  for (;;) {
    const v = s.randombytes_random() >>> 0;
    if (v !== 0) return v;
  }
}
