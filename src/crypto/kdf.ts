/**
 * The handshake's key schedule and MACs, all keyed BLAKE2b (crypto_generichash).
 * Kept apart from the message flow in handshake.ts so each formula can be read
 * against docs/CRYPTO.md on its own. Every input is fixed-length except the
 * context, which is hashed to 32 bytes first, so concatenations are unambiguous.
 */
import { HANDSHAKE_INIT_LEN, HS_MAC_LEN, HS_MAC_OFFSET } from '../wire/handshake.js';
import { sodium } from './sodium.js';

export const PSK_LEN = 32;
export const SESSION_KEY_LEN = 32;

const enc = new TextEncoder();
const LABEL_MAC = enc.encode('holepunch/hs/v1 mac key');
const LABEL_KDF = enc.encode('holepunch/hs/v1 kdf key');
const LABEL_CTX = enc.encode('holepunch/hs/v1 context');
const LABEL_KEYS = enc.encode('holepunch/hs/v1 session keys');

/** The bytes of `parts`, one after the other (KDF inputs). */
export function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export interface HandshakeKeys {
  /** Keys the transcript MACs. */
  macKey: Uint8Array;
  /** Keys the session-key derivation. */
  kdfKey: Uint8Array;
}

/** Two independent subkeys of the PSK, so the PSK itself keys nothing directly. */
export function handshakeKeys(psk: Uint8Array): HandshakeKeys {
  const s = sodium();
  return {
    macKey: s.crypto_generichash(32, LABEL_MAC, psk),
    kdfKey: s.crypto_generichash(32, LABEL_KDF, psk),
  };
}

/** 32-byte digest of the caller's context (service name, rendezvous session id...). */
export function contextHash(context: Uint8Array): Uint8Array {
  return sodium().crypto_generichash(32, concat([LABEL_CTX, context]), null);
}

/** MAC carried in the init: over the context hash and every init byte before the MAC. */
export function initMac(macKey: Uint8Array, ctxHash: Uint8Array, init: Uint8Array): Uint8Array {
  return sodium().crypto_generichash(HS_MAC_LEN, concat([ctxHash, init.subarray(0, HS_MAC_OFFSET)]), macKey);
}

/** MAC carried in the response: over the context hash, the whole init, and the response body. */
export function responseMac(
  macKey: Uint8Array,
  ctxHash: Uint8Array,
  init: Uint8Array,
  response: Uint8Array,
): Uint8Array {
  return sodium().crypto_generichash(
    HS_MAC_LEN,
    concat([ctxHash, init.subarray(0, HANDSHAKE_INIT_LEN), response.subarray(0, HS_MAC_OFFSET)]),
    macKey,
  );
}

/** Hash of everything both sides saw: context, full init, full response. */
export function transcriptHash(ctxHash: Uint8Array, init: Uint8Array, response: Uint8Array): Uint8Array {
  return sodium().crypto_generichash(32, concat([ctxHash, init, response]), null);
}

/**
 * Directional session keys from the X25519 shared secret and the transcript,
 * keyed with the PSK-derived kdfKey: an attacker needs both the PSK and one
 * ephemeral secret key to compute them.
 */
export function sessionKeys(kdfKey: Uint8Array, dh: Uint8Array, th: Uint8Array): { i2r: Uint8Array; r2i: Uint8Array } {
  const s = sodium();
  const input = concat([LABEL_KEYS, dh, th]);
  const okm = s.crypto_generichash(2 * SESSION_KEY_LEN, input, kdfKey);
  const keys = { i2r: okm.slice(0, SESSION_KEY_LEN), r2i: okm.slice(SESSION_KEY_LEN) };
  s.memzero(okm);
  s.memzero(input);
  return keys;
}
