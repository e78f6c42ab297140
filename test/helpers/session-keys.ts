/** Real handshake keys for a visitor/server Session pair in tests (a fresh PSK each call). */
import { randomBytes } from 'node:crypto';
import { createInitiator, respond, randomIndex, type SessionKeys } from '../../src/crypto/index.js';

export function sessionKeys(context: string): { visitor: SessionKeys; server: SessionKeys } {
  const psk = randomBytes(32);
  const hs = createInitiator(psk, { initiatorIndex: randomIndex(), conv: randomIndex(), context });
  const r = respond(psk, hs.message, { responderIndex: randomIndex(), context });
  return { visitor: hs.finish(r.response), server: r.keys };
}
