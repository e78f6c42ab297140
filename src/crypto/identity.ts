import sodium from 'libsodium-wrappers';

/**
 * Long-term Ed25519 identities. A serve peer proves it owns the key that holds
 * its name by signing the rendezvous's per-connection nonce, so nobody else can
 * take over a live name, and a replayed registration is useless on a new connection.
 */
export interface Identity {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

export async function identityReady(): Promise<void> {
  await sodium.ready;
}

export function generateIdentity(): Identity {
  const kp = sodium.crypto_sign_keypair();
  return { publicKey: kp.publicKey, secretKey: kp.privateKey };
}

export function registrationPayload(nonce: Uint8Array, name: string): Uint8Array {
  return Buffer.concat([Buffer.from('holepunch-register\0'), nonce, Buffer.from('\0' + name.toLowerCase())]);
}

export function signRegistration(id: Identity, nonce: Uint8Array, name: string): Uint8Array {
  return sodium.crypto_sign_detached(registrationPayload(nonce, name), id.secretKey);
}

/** Never throws: a malformed key or signature is simply not valid. */
export function verifyRegistration(publicKey: Uint8Array, sig: Uint8Array, nonce: Uint8Array, name: string): boolean {
  if (publicKey.length !== sodium.crypto_sign_PUBLICKEYBYTES || sig.length !== sodium.crypto_sign_BYTES) return false;
  try {
    return sodium.crypto_sign_verify_detached(sig, registrationPayload(nonce, name), publicKey);
  } catch {
    return false;
  }
}
