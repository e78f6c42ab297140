/**
 * One place that loads libsodium. Everything else asks `sodium()` and relies on
 * `cryptoReady()` having been awaited once at startup, so hot paths never await.
 */
import _sodium from 'libsodium-wrappers';
import { optionalAddon } from '../util/optional-addon.js';

export type Sodium = typeof _sodium;

let readyPromise: Promise<void> | null = null;
let loaded = false;

/** Initialises libsodium; safe to call any number of times, from anywhere. */
export function cryptoReady(): Promise<void> {
  if (!readyPromise) {
    readyPromise = _sodium.ready.then(() => {
      loaded = true;
    });
  }
  return readyPromise;
}

export function isCryptoReady(): boolean {
  return loaded;
}

export function sodium(): Sodium {
  if (!loaded) throw new Error('libsodium not initialised: await cryptoReady() first');
  return _sodium;
}

/**
 * The emscripten module under the wrappers. It is what the wrappers themselves
 * call; using it directly lets the datagram path keep its scratch buffers in
 * WASM memory instead of malloc/copy/free on every packet (faster on UDP-sized
 * packets: docs/CRYPTO.md, "raw AEAD backend alone"). Not part of the typed API, so we probe for
 * exactly what we use and fall back to the wrappers when it is missing.
 */
export interface RawSodium {
  HEAPU8: Uint8Array;
  _malloc(n: number): number;
  _crypto_aead_chacha20poly1305_ietf_encrypt_detached(
    c: number,
    mac: number,
    maclenP: number,
    m: number,
    mlenLo: number,
    mlenHi: number,
    ad: number,
    adlenLo: number,
    adlenHi: number,
    nsec: number,
    npub: number,
    k: number,
  ): number;
  _crypto_aead_chacha20poly1305_ietf_decrypt_detached(
    m: number,
    nsec: number,
    c: number,
    clenLo: number,
    clenHi: number,
    mac: number,
    ad: number,
    adlenLo: number,
    adlenHi: number,
    npub: number,
    k: number,
  ): number;
}

export function rawSodium(): RawSodium | null {
  const raw = (sodium() as unknown as { libsodium?: Partial<RawSodium> }).libsodium;
  if (
    raw &&
    raw.HEAPU8 instanceof Uint8Array &&
    typeof raw._malloc === 'function' &&
    typeof raw._crypto_aead_chacha20poly1305_ietf_encrypt_detached === 'function' &&
    typeof raw._crypto_aead_chacha20poly1305_ietf_decrypt_detached === 'function'
  ) {
    return raw as RawSodium;
  }
  return null;
}

/**
 * The parts of sodium-native (libsodium compiled to a native addon, prebuilt
 * for the usual platforms) that the datagram path uses. Same library and
 * cipher as the wrappers, but vectorised C writing into caller-owned memory:
 * no per-packet allocation, and several times faster than the WASM build
 * (docs/BENCHMARKS.md, "sodium-native for the AEAD").
 */
export interface NativeSodium {
  crypto_aead_chacha20poly1305_ietf_encrypt_detached(
    c: Uint8Array,
    mac: Uint8Array,
    m: Uint8Array,
    ad: Uint8Array,
    nsec: null,
    npub: Uint8Array,
    k: Uint8Array,
  ): number;
  /** Throws when the tag does not verify. */
  crypto_aead_chacha20poly1305_ietf_decrypt_detached(
    m: Uint8Array,
    nsec: null,
    c: Uint8Array,
    mac: Uint8Array,
    ad: Uint8Array,
    npub: Uint8Array,
    k: Uint8Array,
  ): void;
}

/**
 * sodium-native if its addon loads on this platform, else null and the
 * datagram path stays on the WASM build (and OpenSSL for relay records).
 * PEER_NATIVE_SODIUM=0 forces the fallback, to compare or to test it.
 */
export const nativeSodium = optionalAddon<NativeSodium>(
  'sodium-native',
  'PEER_NATIVE_SODIUM',
  (lib) =>
    typeof lib.crypto_aead_chacha20poly1305_ietf_encrypt_detached === 'function' &&
    typeof lib.crypto_aead_chacha20poly1305_ietf_decrypt_detached === 'function',
);
