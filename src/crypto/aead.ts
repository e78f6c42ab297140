/**
 * ChaCha20-Poly1305 (IETF, RFC 8439) for sealed datagrams.
 *
 * The datagram layout fixes everything but the key: the 13-byte header is the
 * additional data and the 96-bit nonce is four zero bytes followed by the
 * header's 8-byte counter (bytes 5..13). Interchangeable backends, all the same
 * cipher and byte for byte the same output. Each is here because a measured
 * figure says so; the figures are in docs/BENCHMARKS.md (and CRYPTO.md), not here:
 *  - sodium-native: libsodium as a native addon, writing into the caller's
 *             buffer with no allocation. The default for UDP datagrams
 *             (BENCHMARKS.md, "direct path (AEAD)": against the WASM build);
 *  - openssl: Node's own OpenSSL in place, through an optional addon
 *             (openssl.ts). Relay records only: a cipher context per call
 *             makes it lose on small datagrams (BENCHMARKS.md, relay path:
 *             "Node's OpenSSL in place for relay records", and the
 *             PEER_OPENSSL_AEAD=0 comparison);
 *  - native:  Node's OpenSSL through node:crypto, the fallback for relay
 *             records where neither addon loads: faster than the WASM build
 *             on 64 KiB despite an output allocation per call (BENCHMARKS.md,
 *             "sodium-native for the AEAD": OpenSSL through Node against
 *             libsodium WASM);
 *  - raw:     libsodium's WASM exports with scratch buffers allocated once, the
 *             fallback for UDP datagrams without sodium-native (the WASM build
 *             of BENCHMARKS.md's "direct path (AEAD)" row; against the
 *             wrappers: CRYPTO.md, "raw AEAD backend alone");
 *  - wrapper: the documented libsodium-wrappers API: not for speed, but the
 *             reference the others are tested against, and the fallback when
 *             libsodium's build does not expose the raw exports.
 * `datagramAead()` picks by size: sodium-native (or without it raw, or the
 * wrapper) up to a UDP datagram, openssl above (or without it sodium-native,
 * or node:crypto's OpenSSL).
 */
import crypto from 'node:crypto';
import { AEAD_TAG_LEN, DATAGRAM_HEADER_LEN, DATAGRAM_OVERHEAD, MAX_UDP_DATAGRAM_LEN } from '../wire/datagram.js';
import { nativeSodium, rawSodium, sodium, type NativeSodium, type RawSodium } from './sodium.js';
import { inPlaceOpenSsl, OPENSSL_AEAD, type InPlaceCipher } from './openssl.js';

export const AEAD_KEY_LEN = 32;
const NONCE_LEN = 12;
/** Where the counter sits in the header, and therefore in the nonce's last 8 bytes. */
const COUNTER_OFFSET = 5;

export interface DatagramAead {
  readonly name: 'sodium-native' | 'openssl' | 'raw' | 'wrapper' | 'native' | 'by-size';
  /**
   * Encrypts `payload` under `key`, authenticating `out[0..13)` (the already
   * written header) and writes ciphertext||tag to `out[13..)`.
   * `out.length` must be exactly sealedLength(payload.length).
   */
  seal(key: Uint8Array, payload: Uint8Array, out: Uint8Array): void;
  /**
   * Verifies and decrypts a whole datagram; a fresh plaintext array, or null
   * if the tag fails. With `into` (at least the plaintext's length), backends
   * that can write there do, and return a view of it.
   */
  open(key: Uint8Array, datagram: Uint8Array, into?: Uint8Array): Uint8Array | null;
}

/** Nonce = 4 zero bytes || the header's 8-byte counter; `nonce`'s first 4 bytes stay zero. */
function loadNonce(nonce: Uint8Array, header: Uint8Array): void {
  for (let i = 0; i < 8; i++) nonce[4 + i] = header[COUNTER_OFFSET + i];
}

class SodiumNativeAead implements DatagramAead {
  readonly name = 'sodium-native' as const;
  private readonly nonce = new Uint8Array(NONCE_LEN);

  constructor(private readonly lib: NativeSodium) {}

  seal(key: Uint8Array, payload: Uint8Array, out: Uint8Array): void {
    const n = payload.length;
    const body = DATAGRAM_HEADER_LEN;
    loadNonce(this.nonce, out);
    this.lib.crypto_aead_chacha20poly1305_ietf_encrypt_detached(
      out.subarray(body, body + n),
      out.subarray(body + n, body + n + AEAD_TAG_LEN),
      payload,
      out.subarray(0, DATAGRAM_HEADER_LEN),
      null,
      this.nonce,
      key,
    );
  }

  open(key: Uint8Array, datagram: Uint8Array, into?: Uint8Array): Uint8Array | null {
    const n = datagram.length - DATAGRAM_OVERHEAD;
    const body = DATAGRAM_HEADER_LEN;
    const plain = into && into.length >= n ? into.subarray(0, n) : pooledBytes(n);
    loadNonce(this.nonce, datagram);
    try {
      this.lib.crypto_aead_chacha20poly1305_ietf_decrypt_detached(
        plain,
        null,
        datagram.subarray(body, body + n),
        datagram.subarray(body + n, body + n + AEAD_TAG_LEN),
        datagram.subarray(0, DATAGRAM_HEADER_LEN),
        this.nonce,
        key,
      );
    } catch {
      return null;
    }
    return plain;
  }
}

/** A Buffer over the same memory (the addon takes Buffers only); no copy. */
function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

class OpenSslAead implements DatagramAead {
  readonly name = 'openssl' as const;
  private readonly nonce = Buffer.alloc(NONCE_LEN);

  constructor(private readonly lib: InPlaceCipher) {}

  seal(key: Uint8Array, payload: Uint8Array, out: Uint8Array): void {
    const n = payload.length;
    const body = DATAGRAM_HEADER_LEN;
    const o = asBuffer(out);
    loadNonce(this.nonce, o);
    // Header as AD, ciphertext after it, tag after that: all in `out`.
    this.lib.cipher(
      OPENSSL_AEAD,
      1,
      asBuffer(key),
      0,
      AEAD_KEY_LEN,
      this.nonce,
      0,
      NONCE_LEN,
      asBuffer(payload),
      0,
      n,
      o,
      body,
      o,
      0,
      body,
      o,
      body + n,
      AEAD_TAG_LEN,
    );
  }

  open(key: Uint8Array, datagram: Uint8Array, into?: Uint8Array): Uint8Array | null {
    const n = datagram.length - DATAGRAM_OVERHEAD;
    const body = DATAGRAM_HEADER_LEN;
    const d = asBuffer(datagram);
    const plain = into && into.length >= n ? into.subarray(0, n) : pooledBytes(n);
    loadNonce(this.nonce, d);
    try {
      this.lib.cipher(
        OPENSSL_AEAD,
        0,
        asBuffer(key),
        0,
        AEAD_KEY_LEN,
        this.nonce,
        0,
        NONCE_LEN,
        d,
        body,
        n,
        asBuffer(plain),
        0,
        d,
        0,
        body,
        d,
        body + n,
        AEAD_TAG_LEN,
      );
    } catch {
      // A bad tag. `plain` holds unauthenticated bytes: the caller drops it.
      return null;
    }
    return plain;
  }
}

class RawAead implements DatagramAead {
  readonly name = 'raw' as const;
  private readonly keyP: number;
  private readonly nonceP: number;
  /**
   * One datagram-shaped region: header (the AD) then ciphertext then tag.
   * Encryption and decryption run in place (libsodium allows c == m for the
   * detached AEAD calls), so a packet is one copy in and one copy out.
   */
  private readonly dgP: number;

  constructor(private readonly lib: RawSodium) {
    // One block for the life of the process: keys are copied in per call (32
    // bytes, negligible) so instances never own WASM memory that needs freeing.
    const base = lib._malloc(AEAD_KEY_LEN + 16 + MAX_UDP_DATAGRAM_LEN);
    if (!base) throw new Error('libsodium: cannot allocate scratch buffers');
    this.keyP = base;
    this.nonceP = base + AEAD_KEY_LEN;
    this.dgP = this.nonceP + 16;
  }

  seal(key: Uint8Array, payload: Uint8Array, out: Uint8Array): void {
    // HEAPU8 is replaced when WASM memory grows, so read it fresh every call.
    const heap = this.lib.HEAPU8;
    const n = payload.length;
    const ad = this.dgP;
    const body = ad + DATAGRAM_HEADER_LEN;
    heap.set(key, this.keyP);
    for (let i = 0; i < DATAGRAM_HEADER_LEN; i++) heap[ad + i] = out[i];
    this.loadHeapNonce(heap);
    heap.set(payload, body);
    const rc = this.lib._crypto_aead_chacha20poly1305_ietf_encrypt_detached(
      body,
      body + n,
      0,
      body,
      n,
      0,
      ad,
      DATAGRAM_HEADER_LEN,
      0,
      0,
      this.nonceP,
      this.keyP,
    );
    if (rc !== 0) throw new Error('libsodium: encryption failed');
    out.set(heap.subarray(body, body + n + AEAD_TAG_LEN), DATAGRAM_HEADER_LEN);
  }

  open(key: Uint8Array, datagram: Uint8Array): Uint8Array | null {
    const heap = this.lib.HEAPU8;
    const n = datagram.length - DATAGRAM_OVERHEAD;
    const ad = this.dgP;
    const body = ad + DATAGRAM_HEADER_LEN;
    heap.set(key, this.keyP);
    heap.set(datagram, ad);
    this.loadHeapNonce(heap);
    const rc = this.lib._crypto_aead_chacha20poly1305_ietf_decrypt_detached(
      body,
      0,
      body,
      n,
      0,
      body + n,
      ad,
      DATAGRAM_HEADER_LEN,
      0,
      this.nonceP,
      this.keyP,
    );
    if (rc !== 0) return null;
    const plain = pooledBytes(n);
    plain.set(heap.subarray(body, body + n));
    return plain;
  }

  /** Nonce = 4 zero bytes || the header's 8-byte counter (already in the scratch header). */
  private loadHeapNonce(heap: Uint8Array): void {
    const np = this.nonceP;
    const cp = this.dgP + COUNTER_OFFSET;
    heap[np] = 0;
    heap[np + 1] = 0;
    heap[np + 2] = 0;
    heap[np + 3] = 0;
    for (let i = 0; i < 8; i++) heap[np + 4 + i] = heap[cp + i];
  }
}

class WrapperAead implements DatagramAead {
  readonly name = 'wrapper' as const;
  private readonly nonce = new Uint8Array(NONCE_LEN);

  seal(key: Uint8Array, payload: Uint8Array, out: Uint8Array): void {
    const ad = out.subarray(0, DATAGRAM_HEADER_LEN);
    loadNonce(this.nonce, ad);
    const ct = sodium().crypto_aead_chacha20poly1305_ietf_encrypt(payload, ad, null, this.nonce, key);
    out.set(ct, DATAGRAM_HEADER_LEN);
  }

  open(key: Uint8Array, datagram: Uint8Array): Uint8Array | null {
    const ad = datagram.subarray(0, DATAGRAM_HEADER_LEN);
    loadNonce(this.nonce, ad);
    try {
      return sodium().crypto_aead_chacha20poly1305_ietf_decrypt(
        null,
        datagram.subarray(DATAGRAM_HEADER_LEN),
        ad,
        this.nonce,
        key,
      );
    } catch {
      return null;
    }
  }
}

class NativeAead implements DatagramAead {
  readonly name = 'native' as const;
  private readonly nonce = Buffer.alloc(NONCE_LEN);

  seal(key: Uint8Array, payload: Uint8Array, out: Uint8Array): void {
    const header = out.subarray(0, DATAGRAM_HEADER_LEN);
    loadNonce(this.nonce, header);
    const c = crypto.createCipheriv('chacha20-poly1305', key, this.nonce, { authTagLength: AEAD_TAG_LEN });
    c.setAAD(header, { plaintextLength: payload.length });
    out.set(c.update(payload), DATAGRAM_HEADER_LEN);
    c.final();
    out.set(c.getAuthTag(), DATAGRAM_HEADER_LEN + payload.length);
  }

  open(key: Uint8Array, datagram: Uint8Array): Uint8Array | null {
    const n = datagram.length - DATAGRAM_OVERHEAD;
    const ad = datagram.subarray(0, DATAGRAM_HEADER_LEN);
    loadNonce(this.nonce, ad);
    const d = crypto.createDecipheriv('chacha20-poly1305', key, this.nonce, { authTagLength: AEAD_TAG_LEN });
    d.setAAD(ad, { plaintextLength: n });
    d.setAuthTag(datagram.subarray(DATAGRAM_HEADER_LEN + n));
    const plain = d.update(datagram.subarray(DATAGRAM_HEADER_LEN, DATAGRAM_HEADER_LEN + n));
    try {
      d.final();
    } catch {
      return null;
    }
    return new Uint8Array(plain.buffer, plain.byteOffset, plain.length);
  }
}

/** UDP-sized datagrams to one backend, relay-sized records to another (see the top of this file). */
class BySizeAead implements DatagramAead {
  readonly name = 'by-size' as const;
  constructor(
    readonly small: DatagramAead,
    readonly large: DatagramAead,
  ) {}

  seal(key: Uint8Array, payload: Uint8Array, out: Uint8Array): void {
    (out.length <= MAX_UDP_DATAGRAM_LEN ? this.small : this.large).seal(key, payload, out);
  }

  open(key: Uint8Array, datagram: Uint8Array, into?: Uint8Array): Uint8Array | null {
    return (datagram.length <= MAX_UDP_DATAGRAM_LEN ? this.small : this.large).open(key, datagram, into);
  }
}

/**
 * `n` uninitialised bytes from Node's small-buffer pool (no zero-fill, no new
 * ArrayBuffer), as a plain Uint8Array: a Buffer's slice() would alias, and
 * callers of this module expect Uint8Array semantics. Callers must overwrite
 * every byte.
 */
export function pooledBytes(n: number): Uint8Array {
  const b = Buffer.allocUnsafe(n);
  return new Uint8Array(b.buffer, b.byteOffset, n);
}

let small: DatagramAead | null = null;
let selected: DatagramAead | null = null;

/** libsodium for UDP-sized datagrams: raw when libsodium exposes it, else the wrappers. */
function smallAead(): DatagramAead {
  if (!small) {
    const raw = rawSodium();
    small = raw ? new RawAead(raw) : new WrapperAead();
  }
  return small;
}

/**
 * The backend datagram sealing uses: by size, sodium-native (else libsodium's
 * WASM build) for UDP datagrams and the in-place OpenSSL addon for relay
 * records (else sodium-native, else node:crypto's OpenSSL).
 */
export function datagramAead(): DatagramAead {
  if (!selected) {
    const lib = nativeSodium();
    const ossl = inPlaceOpenSsl();
    const small = lib ? new SodiumNativeAead(lib) : smallAead();
    const large = ossl ? new OpenSslAead(ossl) : lib ? small : new NativeAead();
    selected = small === large ? small : new BySizeAead(small, large);
  }
  return selected;
}

/** "sodium-native", or for a by-size pair "sodium-native up to 1472 B, openssl above": for logs and tests. */
export function describeAead(a: DatagramAead): string {
  return a instanceof BySizeAead ? `${a.small.name} up to ${MAX_UDP_DATAGRAM_LEN} B, ${a.large.name} above` : a.name;
}

/**
 * Every backend this platform has, for tests that check they agree byte for
 * byte. All take every size but raw, which only takes UDP-sized datagrams.
 */
export function allDatagramAeads(): DatagramAead[] {
  const list: DatagramAead[] = [new WrapperAead(), new NativeAead(), new BySizeAead(smallAead(), new NativeAead())];
  const s = smallAead();
  if (s.name === 'raw') list.push(s);
  const lib = nativeSodium();
  if (lib) list.push(new SodiumNativeAead(lib));
  const ossl = inPlaceOpenSsl();
  if (ossl) list.push(new OpenSslAead(ossl));
  return list;
}
