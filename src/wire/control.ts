import { z } from 'zod';
import { FrameKind, encodeFrame } from './frame.js';

/**
 * Control messages: JSON bodies of FrameKind.Control frames, on the TCP
 * connection between a peer and the rendezvous (and the first frame on a relay
 * connection). Every message that crosses the boundary is parsed by `parseControl`,
 * never trusted as-is. Unknown fields are stripped, so a newer minor version can
 * add fields; a change that old peers cannot ignore bumps PROTOCOL_VERSION.
 * docs/PROTOCOL.md describes the exchanges.
 */

/** Service names: DNS-label-like, so they also work as an ssh %h. */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const name = z.string().regex(NAME_RE, 'name must be 1-63 of A-Z a-z 0-9 . _ - and start with a letter or digit');
const b64 = (max: number) =>
  z
    .string()
    .max(max)
    .regex(/^[A-Za-z0-9+/=_-]*$/, 'expected base64');
const reqId = z.string().min(1).max(64);
const sid = z.string().min(1).max(64);
const port = z.number().int().min(0).max(65535);
const byteCount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const Endpoint = z.object({
  address: z.string().min(2).max(64),
  port,
  family: z.enum(['IPv4', 'IPv6']).default('IPv4'),
});
export type Endpoint = z.infer<typeof Endpoint>;

/** A way to reach a peer's data socket; see docs/PROTOCOL.md "Candidates". */
export const Candidate = Endpoint.extend({
  // 'mapped': an external address:port the peer's gateway mapped to its data socket (PCP, NAT-PMP, UPnP IGD).
  // Peers that predate it reject a whole message with an unknown kind, so for now a mapped candidate
  // travels as kind 'srflx' with `portmap` set (older parsers strip the unknown field); `mapped` is
  // accepted on receipt so a later version can send it. See docs/PROTOCOL.md "Mapped candidates".
  kind: z.enum(['host', 'srflx', 'prflx', 'mapped']),
  portmap: z.enum(['pcp', 'nat-pmp', 'upnp']).optional(),
});
export type Candidate = z.infer<typeof Candidate>;

/** Is `c` a port-mapped candidate (kind 'mapped', or 'srflx' carrying `portmap`, as sent today)? */
export function isMappedCandidate(c: Pick<Candidate, 'kind' | 'portmap'>): boolean {
  return c.kind === 'mapped' || c.portmap !== undefined;
}

export const NatInfo = z.object({
  mapping: z.enum(['endpoint-independent', 'address-dependent', 'address-and-port-dependent', 'unknown']),
  filtering: z
    .enum(['endpoint-independent', 'address-dependent', 'address-and-port-dependent', 'unknown'])
    .default('unknown'),
  // Port allocation (issue 21, all optional: older peers send none and, since z.object strips unknown
  // keys, ignore ours). On a `sequential` NAT the next mapping's port is predictable: lastPort + step
  // (plus rate x the observation's age); see docs/PROTOCOL.md "Port prediction".
  allocation: z.enum(['preserving', 'sequential', 'random', 'unknown']).optional(),
  step: z.number().int().min(1).max(1024).optional(),
  lastPort: port.optional(),
  rate: z.number().min(0).max(100_000).optional(),
});
export type NatInfo = z.infer<typeof NatInfo>;

/**
 * What a name carries: TCP connections as mux streams (the default, and what
 * a message without the field means: older peers), or UDP datagrams
 * (DatagramType.UserDatagram). A name is served as one or the other.
 */
export const Proto = z.enum(['tcp', 'udp']);
export type Proto = z.infer<typeof Proto>;

export const Mode = z.enum(['auto', 'direct', 'relay']);
export type Mode = z.infer<typeof Mode>;

export const ErrorCode = z.enum([
  'bad_message',
  'bad_version',
  'frame_too_large',
  'bad_token',
  'unknown_name',
  'name_taken',
  'auth_failed',
  'bad_ticket',
  'timeout',
  'limit',
  'service_unavailable',
  'mode_mismatch',
  'internal',
  // Resuming a session (docs/PROTOCOL.md "Resuming a session").
  'unknown_session',
  'bad_proof',
  // The visitor asked for `proto` udp of a name served as tcp, or the other way round.
  'proto_mismatch',
]);
export type ErrorCode = z.infer<typeof ErrorCode>;

const messages = [
  // peer -> rendezvous: first frame on a control connection.
  z.object({
    type: z.literal('hello'),
    version: z.number().int(),
    software: z.string().max(64),
    token: z.string().max(256).optional(),
  }),
  // rendezvous -> peer. `nonce` is signed by `register`; `relay` null means "same host/port as this connection".
  z.object({
    type: z.literal('welcome'),
    version: z.number().int(),
    nonce: b64(64),
    observed: Endpoint,
    udpPort: port,
    // A second STUN port on the same address as udpPort (absent: none, or an older rendezvous).
    // Peers bind to it from their data socket to see whether their NAT's mapping depends on the
    // destination port (symmetric); see docs/STUN.md "One-address rendezvous".
    altUdpPort: port.optional(),
    relay: z.object({ host: z.string().max(255), port }).nullable(),
    // Optional messages this rendezvous understands (e.g. 'path_report'); a peer sends them only when listed.
    features: z.array(z.string().max(32)).max(32).optional(),
  }),
  // serve -> rendezvous: claim a name. `sig` is Ed25519 over "holepunch-register\0" + nonce + "\0" + name.
  // `proto` (optional, absent: tcp): what the name carries; a visitor asking for the other gets proto_mismatch.
  z.object({
    type: z.literal('register'),
    name,
    key: b64(64),
    sig: b64(128),
    nat: NatInfo.optional(),
    proto: Proto.optional(),
  }),
  z.object({ type: z.literal('registered'), name }),
  // visit -> rendezvous: open a session to `name`. `hs` is the handshake initiation (src/wire/handshake.ts).
  z.object({
    type: z.literal('connect'),
    reqId,
    name,
    hs: b64(1024),
    mode: Mode,
    candidates: z.array(Candidate).max(16).default([]),
    nat: NatInfo.optional(),
    // Optional pinned identity: the visitor's Ed25519 key and its signature over `hs` (src/crypto/identity.ts).
    idKey: b64(64).optional(),
    idSig: b64(128).optional(),
    // What the visitor will carry (absent: tcp, an older visitor).
    proto: Proto.optional(),
  }),
  // rendezvous -> serve: a visitor wants a session. `proto` as the visitor asked (absent: an older rendezvous).
  z.object({
    type: z.literal('incoming'),
    sid,
    hs: b64(1024),
    mode: Mode,
    candidates: z.array(Candidate).max(16),
    nat: NatInfo.optional(),
    ticket: b64(512),
    idKey: b64(64).optional(),
    idSig: b64(128).optional(),
    proto: Proto.optional(),
  }),
  // serve -> rendezvous: handshake response (signed by the server's identity), or a refusal.
  z.object({
    type: z.literal('accept'),
    sid,
    hs: b64(1024),
    candidates: z.array(Candidate).max(16).default([]),
    nat: NatInfo.optional(),
    idKey: b64(64).optional(),
    idSig: b64(128).optional(),
  }),
  z.object({ type: z.literal('reject'), sid, code: ErrorCode, message: z.string().max(512) }),
  // rendezvous -> visit: the session exists; here is the server's handshake response.
  z.object({
    type: z.literal('connected'),
    reqId,
    sid,
    hs: b64(1024),
    candidates: z.array(Candidate).max(16),
    nat: NatInfo.optional(),
    ticket: b64(512),
    idKey: b64(64).optional(),
    idSig: b64(128).optional(),
  }),
  // rendezvous -> both peers of a session: punch now. `delayMs` is chosen from each side's RTT
  // so probes leave together.
  z.object({
    type: z.literal('punch'),
    sid,
    delayMs: z.number().int().min(0).max(10_000),
    candidates: z.array(Candidate).max(16),
    peerNat: NatInfo.optional(),
  }),
  // peer -> rendezvous: my candidates changed / learned for session `sid` (e.g. after STUN on the session socket).
  z.object({ type: z.literal('candidates'), sid, candidates: z.array(Candidate).max(16), nat: NatInfo.optional() }),
  // peer -> rendezvous (only when welcome.features lists it): session `sid` moved to `path`, or
  // ended; feeds status and metrics.
  // Optional (additive, older rendezvous strip them): `remote`, where the reporter's path goes (its direct
  // peer's address, or the relay); `bytes`, the reporter's sealed bytes so far by path kind, both ways.
  // Visitors repeat the report while traffic flows (peer/traffic-report.ts): the dashboard's rates.
  z.object({
    type: z.literal('path_report'),
    sid,
    path: z.enum(['relay', 'direct', 'closed']),
    remote: z.string().max(64).optional(),
    bytes: z.object({ relay: byteCount, direct: byteCount }).optional(),
  }),
  // peer -> rendezvous (only when welcome.features lists it): the NAT this peer measured on its data
  // socket, sent once after `registered`, so that a name's NAT type is known before its first session.
  z.object({ type: z.literal('nat_report'), nat: NatInfo }),
  z.object({ type: z.literal('ping'), t: z.number() }),
  z.object({ type: z.literal('pong'), t: z.number() }),
  // first frame on a relay connection; the relay answers relay_ready once both sides of the session are there.
  // `resume` (optional): the anchor of this side's relay resume chain (src/crypto/resume.ts).
  z.object({ type: z.literal('relay_bind'), ticket: b64(512), resume: b64(64).optional() }),
  // first frame on a relay connection that takes a side of a paired session back (its old leg died).
  z.object({ type: z.literal('relay_resume'), sid, role: z.enum(['visitor', 'server']), token: b64(64) }),
  // peer -> rendezvous (only when welcome.features lists 'resume'): the anchor of this side's rendezvous resume chain.
  z.object({ type: z.literal('session_commit'), sid, anchor: b64(64) }),
  // peer -> rendezvous on a new control connection: this side of session `sid` is here now (proof: `token`).
  z.object({
    type: z.literal('session_resume'),
    sid,
    role: z.enum(['visitor', 'server']),
    token: b64(64),
    candidates: z.array(Candidate).max(16).default([]),
    nat: NatInfo.optional(),
  }),
  z.object({ type: z.literal('session_resumed'), sid }),
  z.object({ type: z.literal('relay_ready') }),
  z.object({
    type: z.literal('error'),
    code: ErrorCode,
    message: z.string().max(512),
    reqId: reqId.optional(),
    sid: sid.optional(),
  }),
] as const;

export const ControlMessage = z.discriminatedUnion('type', messages);
export type ControlMessage = z.infer<typeof ControlMessage>;
export type MessageOf<T extends ControlMessage['type']> = Extract<ControlMessage, { type: T }>;

export type ParseResult = { ok: true; msg: ControlMessage } | { ok: false; error: string };

/** Parses and validates one control frame body. Never throws. */
export function parseControl(body: Uint8Array): ParseResult {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
  } catch {
    return { ok: false, error: 'control frame is not valid JSON' };
  }
  const r = ControlMessage.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue?.path?.length ? ` at ${issue.path.join('.')}` : '';
    return { ok: false, error: `invalid control message${where}: ${issue?.message ?? 'schema mismatch'}` };
  }
  return { ok: true, msg: r.data };
}

export function encodeControl(msg: ControlMessage): Buffer {
  return encodeFrame(FrameKind.Control, Buffer.from(JSON.stringify(msg), 'utf8'));
}
