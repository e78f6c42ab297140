/**
 * Resume proofs (docs/PROTOCOL.md "Resuming a session"): how a peer proves to
 * the rendezvous or the relay that it holds a session's keys, without telling
 * them anything about the keys, so that it can take its side of the session
 * back from a new address.
 *
 * Each peer derives, per verifier ("relay", "rendezvous") and per role, a
 * secret seed from the session keys, and from it a hash chain (Lamport,
 * S/KEY): x[0] = seed, x[i+1] = H(x[i]), for i < CHAIN_LEN. The anchor
 * x[CHAIN_LEN] is handed to the verifier when the session is set up. The n-th
 * resume reveals x[CHAIN_LEN - n]; the verifier checks that hashing it k times
 * (1 <= k <= MAX_SKIP) gives the value it holds, then holds the revealed value
 * instead. So:
 *  - a token proves knowledge of the seed, hence of the session keys (the
 *    seed is a keyed hash of them), and reveals nothing about either;
 *  - a token is good once: the verifier moves past it, and the next token is
 *    a preimage nobody but the key holders can compute;
 *  - no new commitment travels with a resume, so a man in the middle of a
 *    resume cannot plant one of its own;
 *  - MAX_SKIP lets a resume whose answer was lost (the token went out, the
 *    connection died) be followed by the next token;
 *  - the hash input names the session id, role and verifier, so a token of
 *    one session, role or verifier is worthless for another.
 */
import { sodium } from './sodium.js';
import { concat } from './kdf.js';
import type { SessionKeys } from './handshake.js';

/** Resumes one side of a session can make against one verifier. */
export const CHAIN_LEN = 1024;
/** Tokens a verifier lets a resume skip (earlier tokens sent but never answered). */
export const MAX_SKIP = 16;
export const RESUME_TOKEN_LEN = 32;

export type ResumeRole = 'visitor' | 'server';
export type ResumeVerifier = 'relay' | 'rendezvous';

const enc = new TextEncoder();
const LABEL_SEED = enc.encode('holepunch/resume/v1 seed');
const LABEL_STEP = enc.encode('holepunch/resume/v1 step');

/** The context every hash of a chain is bound to: session id, role and verifier. */
function domain(sid: string, role: ResumeRole, verifier: ResumeVerifier): Uint8Array {
  return enc.encode(`${sid}\0${role}\0${verifier}\0`);
}

/** One chain step: H(label || domain || x). */
function step(dom: Uint8Array, x: Uint8Array): Uint8Array {
  return sodium().crypto_generichash(RESUME_TOKEN_LEN, concat([LABEL_STEP, dom, x]), null);
}

/**
 * The secret chain of one side of a session for one verifier. Both peers can
 * build both roles' chains (they hold the same keys); a peer only ever uses
 * its own.
 */
export class ResumeChain {
  private readonly seed: Uint8Array;
  private readonly dom: Uint8Array;
  /** Tokens revealed so far. */
  private used = 0;
  readonly anchor: Uint8Array;

  constructor(keys: SessionKeys, sid: string, role: ResumeRole, verifier: ResumeVerifier) {
    const s = sodium();
    // The initiator-to-responder and responder-to-initiator keys, the same on both peers.
    const i2r = keys.isInitiator ? keys.sendKey : keys.recvKey;
    const r2i = keys.isInitiator ? keys.recvKey : keys.sendKey;
    this.dom = domain(sid, role, verifier);
    this.seed = s.crypto_generichash(RESUME_TOKEN_LEN, concat([LABEL_SEED, this.dom]), concat([i2r, r2i]));
    this.anchor = this.at(CHAIN_LEN);
  }

  /** How many more resumes this chain allows. */
  get remaining(): number {
    return CHAIN_LEN - this.used;
  }

  /** The next token, base64url; null when the chain is used up. Each call uses one up. */
  next(): string | null {
    if (this.used >= CHAIN_LEN) return null;
    this.used++;
    return Buffer.from(this.at(CHAIN_LEN - this.used)).toString('base64url');
  }

  /** The anchor, base64url: what the verifier holds at first. */
  get anchorText(): string {
    return Buffer.from(this.anchor).toString('base64url');
  }

  private at(i: number): Uint8Array {
    let x = this.seed;
    for (let k = 0; k < i; k++) x = step(this.dom, x);
    return x;
  }
}

export type ResumeCheck = { ok: true; next: Uint8Array } | { ok: false; reason: string };

/**
 * The verifier's side: does `token` chain to `held` (the anchor, or the last
 * token accepted) in 1..MAX_SKIP steps? On success, `next` is what to hold
 * from now on (the token itself). Constant work per call, bounded by MAX_SKIP.
 */
export function checkResumeToken(
  held: Uint8Array,
  token: string,
  sid: string,
  role: ResumeRole,
  verifier: ResumeVerifier,
): ResumeCheck {
  const x = Buffer.from(token, 'base64url');
  if (x.length !== RESUME_TOKEN_LEN) return { ok: false, reason: 'malformed resume token' };
  const dom = domain(sid, role, verifier);
  let y: Uint8Array = x;
  for (let k = 1; k <= MAX_SKIP; k++) {
    y = step(dom, y);
    if (Buffer.from(y).equals(held)) return { ok: true, next: new Uint8Array(x) };
  }
  return { ok: false, reason: 'the resume proof does not verify (wrong keys, or a token already used)' };
}

/** Parses a base64url anchor; null unless it is RESUME_TOKEN_LEN bytes. */
export function parseAnchor(text: string | undefined): Uint8Array | null {
  if (!text) return null;
  const b = Buffer.from(text, 'base64url');
  return b.length === RESUME_TOKEN_LEN ? new Uint8Array(b) : null;
}
