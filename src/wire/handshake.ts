import { checkU32, readU32BE, writeU32BE } from './bytes.js';
/**
 * Byte layout of the two tunnel handshake messages. The rendezvous server
 * carries them as opaque base64 strings inside its JSON control messages; it
 * never needs to parse them. The cryptography lives in src/crypto/handshake.ts;
 * this file only knows where the bytes go.
 *
 * All integers are big-endian. Both messages are exactly 90 bytes.
 *
 * HandshakeInit (visitor -> server)
 *   offset  size  field
 *   0       1     kind            0x01
 *   1       1     version         0x01
 *   2       4     initiatorIndex  index the visitor wants in datagrams sent TO it
 *   6       4     conv            KCP conversation id for the session
 *   10      32    ephemeral       visitor's X25519 ephemeral public key
 *   42      16    nonce           16 random bytes
 *   58      32    mac             keyed BLAKE2b-256 (see docs/CRYPTO.md)
 *
 * HandshakeResponse (server -> visitor)
 *   offset  size  field
 *   0       1     kind            0x02
 *   1       1     version         0x01
 *   2       4     responderIndex  index the server wants in datagrams sent TO it
 *   6       4     initiatorIndex  echo of the init's initiatorIndex (for routing)
 *   10      32    ephemeral       server's X25519 ephemeral public key
 *   42      16    nonce           16 random bytes
 *   58      32    mac             keyed BLAKE2b-256 over the whole transcript
 *
 * The kinds 0x01/0x02 are disjoint from the datagram types (0xA1..) so the two
 * can never be confused even if a buggy path mixes them.
 */

export const HANDSHAKE_VERSION = 1;

export const enum HandshakeKind {
  Init = 0x01,
  Response = 0x02,
}

export const HS_PUBLIC_KEY_LEN = 32;
export const HS_NONCE_LEN = 16;
export const HS_MAC_LEN = 32;
/** Offset of the MAC in either message; everything before it is the MAC'd body. */
export const HS_MAC_OFFSET = 58;
export const HANDSHAKE_INIT_LEN = HS_MAC_OFFSET + HS_MAC_LEN;
export const HANDSHAKE_RESPONSE_LEN = HS_MAC_OFFSET + HS_MAC_LEN;

export interface HandshakeInitFields {
  initiatorIndex: number;
  conv: number;
  ephemeral: Uint8Array;
  nonce: Uint8Array;
  mac: Uint8Array;
}

export interface HandshakeResponseFields {
  responderIndex: number;
  initiatorIndex: number;
  ephemeral: Uint8Array;
  nonce: Uint8Array;
  mac: Uint8Array;
}

export type HandshakeParseError = 'bad_format' | 'bad_version';

/** A copy even when `b` is a Node Buffer, whose slice() would alias the input. */
function copyOf(b: Uint8Array, start: number, end: number): Uint8Array {
  return Uint8Array.prototype.slice.call(b, start, end);
}

function checkField(name: string, v: Uint8Array, len: number): void {
  if (!(v instanceof Uint8Array) || v.length !== len) throw new TypeError(`${name} must be ${len} bytes`);
}

/**
 * Writes an init message. The mac field is written as given; callers that
 * compute the MAC over the body pass zeros first and patch it in afterwards.
 */
export function encodeHandshakeInit(f: HandshakeInitFields): Uint8Array {
  checkU32('initiatorIndex', f.initiatorIndex);
  checkU32('conv', f.conv);
  checkField('ephemeral', f.ephemeral, HS_PUBLIC_KEY_LEN);
  checkField('nonce', f.nonce, HS_NONCE_LEN);
  checkField('mac', f.mac, HS_MAC_LEN);
  const out = new Uint8Array(HANDSHAKE_INIT_LEN);
  out[0] = HandshakeKind.Init;
  out[1] = HANDSHAKE_VERSION;
  writeU32BE(out, 2, f.initiatorIndex);
  writeU32BE(out, 6, f.conv);
  out.set(f.ephemeral, 10);
  out.set(f.nonce, 42);
  out.set(f.mac, HS_MAC_OFFSET);
  return out;
}

export function encodeHandshakeResponse(f: HandshakeResponseFields): Uint8Array {
  checkU32('responderIndex', f.responderIndex);
  checkU32('initiatorIndex', f.initiatorIndex);
  checkField('ephemeral', f.ephemeral, HS_PUBLIC_KEY_LEN);
  checkField('nonce', f.nonce, HS_NONCE_LEN);
  checkField('mac', f.mac, HS_MAC_LEN);
  const out = new Uint8Array(HANDSHAKE_RESPONSE_LEN);
  out[0] = HandshakeKind.Response;
  out[1] = HANDSHAKE_VERSION;
  writeU32BE(out, 2, f.responderIndex);
  writeU32BE(out, 6, f.initiatorIndex);
  out.set(f.ephemeral, 10);
  out.set(f.nonce, 42);
  out.set(f.mac, HS_MAC_OFFSET);
  return out;
}

function checkEnvelope(buf: unknown, kind: HandshakeKind, len: number): HandshakeParseError | null {
  if (!(buf instanceof Uint8Array) || buf.length !== len || buf[0] !== kind) return 'bad_format';
  if (buf[1] !== HANDSHAKE_VERSION) return 'bad_version';
  return null;
}

/** Parses an init message; the returned byte fields are copies, so the input may be reused. */
export function decodeHandshakeInit(buf: Uint8Array): HandshakeInitFields | HandshakeParseError {
  const err = checkEnvelope(buf, HandshakeKind.Init, HANDSHAKE_INIT_LEN);
  if (err) return err;
  return {
    initiatorIndex: readU32BE(buf, 2),
    conv: readU32BE(buf, 6),
    ephemeral: copyOf(buf, 10, 42),
    nonce: copyOf(buf, 42, 58),
    mac: copyOf(buf, HS_MAC_OFFSET, HANDSHAKE_INIT_LEN),
  };
}

export function decodeHandshakeResponse(buf: Uint8Array): HandshakeResponseFields | HandshakeParseError {
  const err = checkEnvelope(buf, HandshakeKind.Response, HANDSHAKE_RESPONSE_LEN);
  if (err) return err;
  return {
    responderIndex: readU32BE(buf, 2),
    initiatorIndex: readU32BE(buf, 6),
    ephemeral: copyOf(buf, 10, 42),
    nonce: copyOf(buf, 42, 58),
    mac: copyOf(buf, HS_MAC_OFFSET, HANDSHAKE_RESPONSE_LEN),
  };
}

/**
 * Unauthenticated look at a handshake message, e.g. to route a response to the
 * pending initiator with that index. Never trust these values before the
 * handshake verifies.
 */
export function peekHandshake(
  buf: Uint8Array,
):
  | { kind: HandshakeKind.Init; initiatorIndex: number; conv: number }
  | { kind: HandshakeKind.Response; initiatorIndex: number; responderIndex: number }
  | null {
  if (!(buf instanceof Uint8Array) || buf.length !== HANDSHAKE_INIT_LEN || buf[1] !== HANDSHAKE_VERSION) return null;
  if (buf[0] === HandshakeKind.Init)
    return { kind: HandshakeKind.Init, initiatorIndex: readU32BE(buf, 2), conv: readU32BE(buf, 6) };
  if (buf[0] === HandshakeKind.Response) {
    return { kind: HandshakeKind.Response, responderIndex: readU32BE(buf, 2), initiatorIndex: readU32BE(buf, 6) };
  }
  return null;
}
