/**
 * ChaCha20-Poly1305 from Node's own OpenSSL, in place: @ronomon/crypto-async,
 * an N-API addon over OpenSSL's EVP interface, built at install time against
 * the OpenSSL inside the node binary.
 *
 * Why: on 64 KiB relay records it is about twice as fast as libsodium
 * (sodium-native), and the AEAD is a large share of a peer's CPU on the relay
 * path (figures: docs/BENCHMARKS.md, relay path). Node's own crypto API reaches
 * the same OpenSSL but allocates a fresh output buffer per call, and on the
 * bulk path that garbage collection costs more than the cipher saves. The
 * addon writes into buffers we own, like sodium-native. On small datagrams its
 * per-call set-up (a cipher context per call) makes libsodium the faster one,
 * so UDP datagrams stay there (aead.ts).
 *
 * An optional dependency: without a compiler at install time it is simply
 * missing, and everything runs on libsodium. PEER_OPENSSL_AEAD=0 turns it
 * off. Before first use it must reproduce node:crypto's ChaCha20-Poly1305
 * byte for byte, or it is not used.
 */
import crypto from 'node:crypto';
import { optionalAddon } from '../util/optional-addon.js';

/** The one call we use: crypto-async's synchronous, 19-argument cipher(); returns bytes written, throws on a bad tag. */
export interface InPlaceCipher {
  cipher(
    algorithm: string,
    encrypt: 0 | 1,
    key: Buffer,
    keyOffset: number,
    keySize: number,
    iv: Buffer,
    ivOffset: number,
    ivSize: number,
    source: Buffer,
    sourceOffset: number,
    sourceSize: number,
    target: Buffer,
    targetOffset: number,
    aad: Buffer,
    aadOffset: number,
    aadSize: number,
    tag: Buffer,
    tagOffset: number,
    tagSize: number,
  ): number;
}

export const OPENSSL_AEAD = 'chacha20-poly1305';

/** The addon if it is installed, enabled (PEER_OPENSSL_AEAD) and agrees with node:crypto; else null. */
export const inPlaceOpenSsl = optionalAddon<InPlaceCipher>(
  '@ronomon/crypto-async',
  'PEER_OPENSSL_AEAD',
  (lib) => typeof lib.cipher === 'function' && agreesWithNodeCrypto(lib as InPlaceCipher),
);

/**
 * A known-answer check against node:crypto (the same cipher through Node's
 * documented API): ciphertext, tag, a round trip, and a rejected forgery.
 * Exported for its tests (test/crypto-openssl.test.ts).
 */
export function agreesWithNodeCrypto(lib: InPlaceCipher): boolean {
  const key = crypto.createHash('sha256').update('peer openssl self-test key').digest();
  const nonce = Buffer.from('000000000102030405060708', 'hex');
  const aad = Buffer.from('thirteen byte');
  const plain = crypto.createHash('sha512').update('peer openssl self-test').digest();
  const c = crypto.createCipheriv(OPENSSL_AEAD, key, nonce, { authTagLength: 16 });
  c.setAAD(aad, { plaintextLength: plain.length });
  const expected = Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);

  const out = Buffer.alloc(plain.length + 16);
  lib.cipher(
    OPENSSL_AEAD,
    1,
    key,
    0,
    32,
    nonce,
    0,
    12,
    plain,
    0,
    plain.length,
    out,
    0,
    aad,
    0,
    aad.length,
    out,
    plain.length,
    16,
  );
  if (!out.equals(expected)) return false;
  const back = Buffer.alloc(plain.length);
  lib.cipher(
    OPENSSL_AEAD,
    0,
    key,
    0,
    32,
    nonce,
    0,
    12,
    out,
    0,
    plain.length,
    back,
    0,
    aad,
    0,
    aad.length,
    out,
    plain.length,
    16,
  );
  if (!back.equals(plain)) return false;
  out[0] ^= 1;
  try {
    lib.cipher(
      OPENSSL_AEAD,
      0,
      key,
      0,
      32,
      nonce,
      0,
      12,
      out,
      0,
      plain.length,
      back,
      0,
      aad,
      0,
      aad.length,
      out,
      plain.length,
      16,
    );
    return false; // a forgery opened
  } catch {
    return true;
  }
}
