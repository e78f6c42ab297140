import crypto from 'node:crypto';

/**
 * Relay tickets: the rendezvous hands one to each side of a session; the relay
 * pairs the two connections that present tickets for the same session.
 * A standalone relay shares `relayKey` with the rendezvous and needs no other state.
 *
 *   offset  size  field
 *   0       8     session id (random)
 *   8       1     role: 1 visitor, 2 server
 *   9       4     expiry, unix seconds (big-endian)
 *   13      16    HMAC-SHA256(relayKey, bytes 0..12), truncated
 *
 * Encoded as base64url. The relay sees only sealed datagrams, so a ticket
 * grants bandwidth, never access to data.
 */
export type TicketRole = 'visitor' | 'server';
const TICKET_LEN = 29;

export interface Ticket {
  sid: string;
  role: TicketRole;
  expires: number;
}

export function issueTicket(key: Uint8Array, sid: string, role: TicketRole, ttlSeconds = 60, now = Date.now()): string {
  const b = Buffer.alloc(TICKET_LEN);
  Buffer.from(sid, 'hex').copy(b, 0, 0, 8);
  b[8] = role === 'visitor' ? 1 : 2;
  b.writeUInt32BE(Math.floor(now / 1000) + ttlSeconds, 9);
  mac(key, b.subarray(0, 13)).copy(b, 13);
  return b.toString('base64url');
}

export type TicketCheck = { ok: true; ticket: Ticket } | { ok: false; error: string };

export function verifyTicket(key: Uint8Array, encoded: string, now = Date.now()): TicketCheck {
  const b = Buffer.from(encoded, 'base64url');
  if (b.length !== TICKET_LEN || (b[8] !== 1 && b[8] !== 2)) return { ok: false, error: 'malformed relay ticket' };
  if (!crypto.timingSafeEqual(mac(key, b.subarray(0, 13)), b.subarray(13)))
    return { ok: false, error: "relay ticket was not issued by this relay's rendezvous" };
  const expires = b.readUInt32BE(9);
  if (expires * 1000 < now) return { ok: false, error: 'relay ticket expired' };
  return {
    ok: true,
    ticket: { sid: b.subarray(0, 8).toString('hex'), role: b[8] === 1 ? 'visitor' : 'server', expires },
  };
}

export function newSessionId(): string {
  return crypto.randomBytes(8).toString('hex');
}

/** Turns an operator-supplied relay key (any string) into HMAC key bytes. */
export function relayKeyFrom(secret: string): Uint8Array {
  return crypto.createHash('sha256').update('holepunch/relay-key/v1\0').update(secret).digest();
}

function mac(key: Uint8Array, data: Uint8Array): Buffer {
  return crypto.createHmac('sha256', key).update(data).digest().subarray(0, 16);
}
