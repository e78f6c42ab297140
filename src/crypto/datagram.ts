/**
 * Sealing and opening of session datagrams (layout: src/wire/datagram.ts).
 * One sealer and one opener per session, each holding one direction's key.
 * This is the per-packet hot path: a seal costs one output allocation (none
 * with sealInto), an open one plaintext allocation plus the small result object.
 */
import { CodedError } from '../util/errors.js';
import {
  DATAGRAM_OVERHEAD,
  MAX_DATAGRAM_LEN,
  MAX_RELAY_DATAGRAM_LEN,
  MAX_RELAY_DATAGRAM_PAYLOAD,
  isDatagramType,
  type DatagramType,
} from '../wire/datagram.js';
import { AEAD_KEY_LEN, datagramAead, pooledBytes, type DatagramAead } from './aead.js';
import type { SessionKeys } from './handshake.js';
import { MAX_COUNTER, ReplayWindow } from './replay.js';
import { readU32BE, writeU32BE } from '../wire/bytes.js';

const TWO_POW_32 = 0x1_0000_0000;
/** Counter high words above this exceed MAX_COUNTER (2^53 - 1). */
const MAX_COUNTER_HI = Math.floor(MAX_COUNTER / TWO_POW_32);

/** Thrown by seal() when the counter space is used up; the session must handshake again. */
export class RekeyNeededError extends CodedError {
  override readonly name = 'RekeyNeededError';
  constructor() {
    super('rekey_needed', 'datagram counter exhausted: a new handshake is needed');
  }
}

function checkKey(name: string, key: Uint8Array): Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== AEAD_KEY_LEN)
    throw new TypeError(`${name} must be ${AEAD_KEY_LEN} bytes`);
  // A private copy (also when given a Buffer, whose slice() would alias), so
  // the caller wiping or reusing its key object cannot affect us.
  return new Uint8Array(key);
}

export interface SealerOptions {
  /**
   * First counter to use (default 0). Only for tests of the counter limit:
   * a counter must never be used twice under one key.
   */
  initialCounter?: number;
}

export class DatagramSealer {
  private readonly key: Uint8Array;
  private readonly receiver: number;
  private readonly aead: DatagramAead;
  private counter: number;

  constructor(keys: SessionKeys, opts: SealerOptions = {}) {
    this.key = checkKey('sendKey', keys.sendKey);
    this.receiver = keys.remoteIndex >>> 0;
    this.aead = datagramAead();
    const start = opts.initialCounter ?? 0;
    if (!Number.isSafeInteger(start) || start < 0)
      throw new TypeError('initialCounter must be a non-negative safe integer');
    this.counter = start;
  }

  /** Counter the next seal() will use. */
  get nextCounter(): number {
    return this.counter;
  }

  /**
   * Returns a new Uint8Array holding the sealed datagram (socket.send takes it
   * as is). Payloads up to MAX_RELAY_DATAGRAM_PAYLOAD: the caller keeps
   * anything above MAX_DATAGRAM_PAYLOAD off UDP paths. Throws on local misuse
   * (unknown type, oversized payload), and
   * RekeyNeededError once the counter would pass MAX_COUNTER.
   */
  seal(type: DatagramType, payload: Uint8Array): Uint8Array {
    // Pooled and not zero-filled: header, ciphertext and tag overwrite every byte.
    const out = pooledBytes(DATAGRAM_OVERHEAD + payload.length);
    this.sealInto(type, payload, out);
    return out;
  }

  /**
   * seal() into memory the caller owns, exactly sealedLength(payload.length)
   * bytes: a relay record goes straight into the connection's send buffer.
   */
  sealInto(type: DatagramType, payload: Uint8Array, out: Uint8Array): void {
    const c = this.claimCounter(type, payload);
    if (out.length !== DATAGRAM_OVERHEAD + payload.length)
      throw new RangeError(`output must be ${DATAGRAM_OVERHEAD + payload.length} bytes, not ${out.length}`);
    this.writeHeader(out, type, c);
    this.aead.seal(this.key, payload, out);
    // Only advance once the packet exists: a throw above must not burn a
    // counter, and nothing here can hand out the same counter twice.
    this.counter = c + 1;
  }

  /** The counter for the next datagram, after checking the call; does not advance it. */
  private claimCounter(type: DatagramType, payload: Uint8Array): number {
    if (!isDatagramType(type)) throw new TypeError(`not a datagram type: ${type}`);
    const n = payload.length;
    if (n > MAX_RELAY_DATAGRAM_PAYLOAD)
      throw new RangeError(`payload ${n} bytes exceeds ${MAX_RELAY_DATAGRAM_PAYLOAD}`);
    const c = this.counter;
    if (c > MAX_COUNTER) throw new RekeyNeededError();
    return c;
  }

  private writeHeader(out: Uint8Array, type: DatagramType, c: number): void {
    out[0] = type;
    writeU32BE(out, 1, this.receiver);
    writeU32BE(out, 5, Math.floor(c / TWO_POW_32));
    writeU32BE(out, 9, c >>> 0);
  }

  /** Wipes the key; the sealer is unusable afterwards. */
  destroy(): void {
    this.key.fill(0);
    this.counter = MAX_COUNTER + 1;
  }
}

export interface OpenedDatagram {
  type: DatagramType;
  payload: Uint8Array;
  counter: bigint;
}

/** Why datagrams were dropped; cheap counters for metrics and debugging. */
export interface OpenerStats {
  accepted: number;
  malformed: number;
  wrongReceiver: number;
  replayed: number;
  badTag: number;
}

export class DatagramOpener {
  private readonly key: Uint8Array;
  private readonly local: number;
  private readonly aead: DatagramAead;
  private readonly window = new ReplayWindow();
  readonly stats: OpenerStats = { accepted: 0, malformed: 0, wrongReceiver: 0, replayed: 0, badTag: 0 };

  constructor(keys: SessionKeys) {
    this.key = checkKey('recvKey', keys.recvKey);
    this.local = keys.localIndex >>> 0;
    this.aead = datagramAead();
  }

  /**
   * Authenticates and decrypts one datagram from the network. Returns null,
   * never throws, for anything that is not a fresh datagram sealed for us; the
   * replay window only moves after the tag verifies, so forgeries change nothing.
   * `maxLen` is the largest datagram the arriving path carries: a UDP-sized
   * datagram by default, MAX_RELAY_DATAGRAM_LEN for the relay. `into`, when
   * given, is where the backend may write the plaintext (see DatagramAead.open).
   */
  open(datagram: Uint8Array, maxLen = MAX_DATAGRAM_LEN, into?: Uint8Array): OpenedDatagram | null {
    if (!(datagram instanceof Uint8Array)) {
      this.stats.malformed++;
      return null;
    }
    const len = datagram.length;
    const type = datagram[0];
    if (len < DATAGRAM_OVERHEAD || len > Math.min(maxLen, MAX_RELAY_DATAGRAM_LEN) || !isDatagramType(type)) {
      this.stats.malformed++;
      return null;
    }
    if (readU32BE(datagram, 1) !== this.local) {
      this.stats.wrongReceiver++;
      return null;
    }
    const hi = readU32BE(datagram, 5);
    const counter = hi * TWO_POW_32 + readU32BE(datagram, 9);
    // Beyond MAX_COUNTER no honest sender goes; rejecting here keeps every
    // counter exact as a number.
    if (hi > MAX_COUNTER_HI || !this.window.check(counter)) {
      this.stats.replayed++;
      return null;
    }
    const payload = this.aead.open(this.key, datagram, into);
    if (!payload) {
      this.stats.badTag++;
      return null;
    }
    this.window.update(counter);
    this.stats.accepted++;
    return { type, payload, counter: BigInt(counter) };
  }

  /** Highest counter accepted so far, -1 before any: lets a session notice a stalled peer. */
  get highestCounter(): number {
    return this.window.highest;
  }

  destroy(): void {
    this.key.fill(0);
  }
}
