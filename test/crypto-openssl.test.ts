/**
 * The in-place OpenSSL AEAD is an optional native addon; before it seals a
 * byte it must match node:crypto's ChaCha20-Poly1305 and reject a forgery.
 * Here the check itself is tested: the real addon passes, and doctored
 * versions of it (wrong bytes, a forgery accepted) are refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { agreesWithNodeCrypto, inPlaceOpenSsl, type InPlaceCipher } from '../src/crypto/openssl.js';

const addon = (() => {
  try {
    return createRequire(import.meta.url)('@ronomon/crypto-async') as InPlaceCipher;
  } catch {
    return null;
  }
})();
const skip = addon
  ? false
  : 'the optional @ronomon/crypto-async addon is not installed here (no compiler at install time)';

test('the real addon passes the self-test and is the one in use', { skip }, () => {
  assert.equal(agreesWithNodeCrypto(addon!), true);
  if (process.env.PEER_OPENSSL_AEAD !== '0') assert.ok(inPlaceOpenSsl(), 'loaded');
});

test('an addon whose ciphertext differs from node:crypto is refused', { skip }, () => {
  const flipped: InPlaceCipher = {
    cipher(...args: Parameters<InPlaceCipher['cipher']>) {
      const n = addon!.cipher(...args);
      if (args[1] === 1) args[11][args[12]] ^= 0x80; // encrypt: one bit of the ciphertext wrong
      return n;
    },
  };
  assert.equal(agreesWithNodeCrypto(flipped), false);
});

test('an addon that opens a forgery is refused', { skip }, () => {
  const lax: InPlaceCipher = {
    cipher(...args: Parameters<InPlaceCipher['cipher']>) {
      try {
        return addon!.cipher(...args);
      } catch {
        return args[10]; // pretend the tag was fine
      }
    },
  };
  assert.equal(agreesWithNodeCrypto(lax), false);
});
