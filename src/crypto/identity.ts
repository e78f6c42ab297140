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

const VISIT_CONTEXT = 'holepunch-visit\0';
const ACCEPT_CONTEXT = 'holepunch-accept\0';

/**
 * Pinned keys: a visitor signs its handshake initiation, the server signs
 * initiation + response. Both contain fresh ephemerals and nonces, so a
 * signature cannot be replayed into another session, and the rendezvous,
 * which carries them, cannot forge one.
 */
export function signVisit(id: Identity, hsInit: Uint8Array): Uint8Array {
  return sodium.crypto_sign_detached(Buffer.concat([Buffer.from(VISIT_CONTEXT), hsInit]), id.secretKey);
}

export function verifyVisit(publicKey: Uint8Array, sig: Uint8Array, hsInit: Uint8Array): boolean {
  return verifyDetached(publicKey, sig, Buffer.concat([Buffer.from(VISIT_CONTEXT), hsInit]));
}

export function signAccept(id: Identity, hsInit: Uint8Array, hsResp: Uint8Array): Uint8Array {
  return sodium.crypto_sign_detached(Buffer.concat([Buffer.from(ACCEPT_CONTEXT), hsInit, hsResp]), id.secretKey);
}

export function verifyAccept(publicKey: Uint8Array, sig: Uint8Array, hsInit: Uint8Array, hsResp: Uint8Array): boolean {
  return verifyDetached(publicKey, sig, Buffer.concat([Buffer.from(ACCEPT_CONTEXT), hsInit, hsResp]));
}

function verifyDetached(publicKey: Uint8Array, sig: Uint8Array, msg: Uint8Array): boolean {
  if (publicKey.length !== sodium.crypto_sign_PUBLICKEYBYTES || sig.length !== sodium.crypto_sign_BYTES) return false;
  try {
    return sodium.crypto_sign_verify_detached(sig, msg, publicKey);
  } catch {
    return false;
  }
}

/** Public keys travel as base64 text (what `peer keygen` prints). */
export function encodePublicKey(k: Uint8Array): string {
  return Buffer.from(k).toString('base64');
}

/** Parses a public key given on the command line; throws a message naming the value. */
export function parsePublicKey(text: string): Uint8Array {
  const b = Buffer.from(text.trim(), 'base64');
  if (b.length !== 32 || b.toString('base64').replace(/=+$/, '') !== text.trim().replace(/=+$/, '')) {
    throw new Error(`invalid public key "${text}": expected 32 bytes of base64, as printed by \`peer keygen\``);
  }
  return new Uint8Array(b);
}

/** Identity file: JSON with base64 keys, written 0600. */
export function serializeIdentity(id: Identity): string {
  return (
    JSON.stringify(
      {
        type: 'holepunch-identity',
        version: 1,
        publicKey: encodePublicKey(id.publicKey),
        secretKey: Buffer.from(id.secretKey).toString('base64'),
      },
      null,
      2,
    ) + '\n'
  );
}

export function parseIdentity(text: string, source = 'identity file'): Identity {
  let o: { type?: unknown; publicKey?: unknown; secretKey?: unknown };
  try {
    o = JSON.parse(text) as typeof o;
  } catch {
    throw new Error(`${source} is not valid JSON (make one with \`peer keygen --out FILE\`)`);
  }
  if (o.type !== 'holepunch-identity' || typeof o.publicKey !== 'string' || typeof o.secretKey !== 'string') {
    throw new Error(`${source} is not a holepunch identity (make one with \`peer keygen --out FILE\`)`);
  }
  const publicKey = parsePublicKey(o.publicKey);
  const secretKey = new Uint8Array(Buffer.from(o.secretKey, 'base64'));
  if (secretKey.length !== 64 || !Buffer.from(secretKey.subarray(32)).equals(Buffer.from(publicKey))) {
    throw new Error(`${source}: the secret key does not match the public key`);
  }
  return { publicKey, secretKey };
}
