/**
 * End-to-end security for tunnel sessions: PSK derivation, the two-message
 * handshake, and datagram sealing. See docs/CRYPTO.md.
 *
 *   await cryptoReady();
 *   const psk = await deriveSecretKey(secret);             // once at startup
 *   // visitor                                  // serving peer
 *   const hs = createInitiator(psk, {...});     const r = respond(psk, hs.message, {...});
 *   const keys = hs.finish(r.response);         // r.keys
 *   new DatagramSealer(keys).seal(DatagramType.Data, kcpBytes)  ->  path.send(...)
 *   new DatagramOpener(keys).open(datagram)  ->  { type, payload, counter } | null
 */
export { cryptoReady, isCryptoReady } from './sodium.js';
export { deriveSecretKey, generateSecret, PSK_SALT, PSK_SCRYPT } from './psk.js';
export { PSK_LEN, SESSION_KEY_LEN } from './kdf.js';
export {
  HandshakeError,
  createInitiator,
  randomIndex,
  respond,
  type HandshakeErrorCode,
  type Initiator,
  type InitiatorOptions,
  type RespondResult,
  type ResponderOptions,
  type SessionKeys,
} from './handshake.js';
export {
  DatagramOpener,
  DatagramSealer,
  RekeyNeededError,
  type OpenedDatagram,
  type OpenerStats,
  type SealerOptions,
} from './datagram.js';
export { MAX_COUNTER, REPLAY_WINDOW, ReplayWindow } from './replay.js';
export {
  DATAGRAM_OVERHEAD,
  MAX_DATAGRAM_LEN,
  MAX_DATAGRAM_PAYLOAD,
  readReceiverIndex,
  sealedLength,
} from '../wire/datagram.js';
export { HANDSHAKE_INIT_LEN, HANDSHAKE_RESPONSE_LEN, peekHandshake } from '../wire/handshake.js';
