/**
 * Turns the user's `--secret` string into the 32-byte pre-shared key.
 *
 * libsodium's standard build has no crypto_pwhash, so the stretching is Node's
 * scrypt. The salt is a fixed domain-separation label rather than random: both
 * peers must derive the same key from the secret alone, with nothing exchanged.
 * The cost only matters for weak secrets (see docs/CRYPTO.md); callers derive
 * once at startup and keep the result.
 */
import { randomBytes, scrypt } from 'node:crypto';
import { PSK_LEN } from './kdf.js';

export const PSK_SALT = 'holepunch/psk/v1';
/** scrypt cost: N = 2^15, r = 8, p = 1 uses 32 MiB and ~50-100 ms per derivation. */
export const PSK_SCRYPT = { N: 1 << 15, r: 8, p: 1 } as const;
/** Node refuses scrypt above `maxmem` (32 MiB by default); 128 * N * r = exactly 32 MiB, plus headroom. */
const MAX_MEM = 64 * 1024 * 1024;

export async function deriveSecretKey(secret: string): Promise<Uint8Array> {
  if (typeof secret !== 'string' || secret.length === 0) throw new RangeError('secret must be a non-empty string');
  // NFC so the same secret typed on systems that compose accents differently
  // still gives the same key.
  const pass = Buffer.from(secret.normalize('NFC'), 'utf8');
  const key = await new Promise<Buffer>((resolve, reject) => {
    scrypt(pass, PSK_SALT, PSK_LEN, { ...PSK_SCRYPT, maxmem: MAX_MEM }, (err, k) => (err ? reject(err) : resolve(k)));
  });
  pass.fill(0);
  const out = new Uint8Array(key);
  key.fill(0);
  return out;
}

/**
 * A fresh random secret for `peer keygen`: 256 bits, base64url, safe to paste
 * on a command line or into a config file. With a secret like this offline
 * guessing is hopeless, whatever the scrypt cost.
 */
export function generateSecret(): string {
  return randomBytes(32).toString('base64url');
}
