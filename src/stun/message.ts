/**
 * STUN message codec (RFC 5389 with the RFC 5780 attributes). Pure functions:
 * no sockets, no clocks. decodeStun() sees raw network data and therefore
 * never throws: anything malformed comes back as null.
 *
 * Only what endpoint discovery and NAT classification need is decoded into
 * fields; every attribute is also kept raw, in order, so callers can inspect
 * the rest.
 */
import { randomBytes } from 'node:crypto';
import { bytesToIp, familyOf, ipToBytes, unmapIPv4, type Endpoint } from './address.js';

export const MAGIC_COOKIE = 0x2112a442;
export const STUN_HEADER_LEN = 20;
export const TRANSACTION_ID_LEN = 12;
/**
 * Largest message we accept. Ordinary Binding traffic is far smaller (RFC 5389
 * asks for < 548 bytes without path MTU knowledge), but the RFC 5780 PADDING
 * test (coturn's turnutils_stunclient sends it) pads a request past 1500
 * bytes on purpose. 2048 admits that and still bounds the work per datagram.
 */
export const MAX_STUN_LEN = 2048;
const FINGERPRINT_XOR = 0x5354554e;

export const StunClass = {
  Request: 0,
  Indication: 1,
  SuccessResponse: 2,
  ErrorResponse: 3,
} as const;
export type StunClass = (typeof StunClass)[keyof typeof StunClass];

export const StunMethod = { Binding: 0x001 } as const;

export const StunAttr = {
  MappedAddress: 0x0001,
  ChangeRequest: 0x0003, // RFC 5780
  Username: 0x0006,
  MessageIntegrity: 0x0008,
  ErrorCode: 0x0009,
  UnknownAttributes: 0x000a,
  XorMappedAddress: 0x0020,
  Padding: 0x0026, // RFC 5780
  ResponsePort: 0x0027, // RFC 5780
  Software: 0x8022,
  Fingerprint: 0x8028,
  ResponseOrigin: 0x802b, // RFC 5780
  OtherAddress: 0x802c, // RFC 5780
} as const;

export interface RawAttribute {
  type: number;
  value: Buffer;
}

export interface ChangeRequest {
  changeIp: boolean;
  changePort: boolean;
}

export interface ErrorCode {
  code: number; // 300..699
  reason: string;
}

/**
 * A STUN message. For encoding, set the fields you want; they are written in
 * a fixed order (see encodeStun). Decoding fills the fields it recognises and
 * lists every attribute in `attributes`.
 */
export interface StunMessage {
  cls: StunClass;
  method: number;
  transactionId: Buffer;
  mappedAddress?: Endpoint;
  xorMappedAddress?: Endpoint;
  responseOrigin?: Endpoint;
  otherAddress?: Endpoint;
  changeRequest?: ChangeRequest;
  /** RFC 5780 RESPONSE-PORT: send the response to the client's IP at this port. */
  responsePort?: number;
  software?: string;
  errorCode?: ErrorCode;
  unknownAttributes?: number[];
  /** Encode: append FINGERPRINT. Decode: a FINGERPRINT was present (and correct, or the message would be null). */
  fingerprint?: boolean;
  /** Decode only: every attribute in wire order. Encode: extra attributes appended before FINGERPRINT. */
  attributes?: RawAttribute[];
}

// ---------------------------------------------------------------- header bits

/** Message type field from method and class (RFC 5389 §6: class bits are interleaved into the method). */
export function messageType(method: number, cls: StunClass): number {
  return ((method & 0xf80) << 2) | ((method & 0x070) << 1) | (method & 0x00f) | ((cls & 2) << 7) | ((cls & 1) << 4);
}

function splitType(type: number): { method: number; cls: StunClass } {
  const method = ((type >> 2) & 0xf80) | ((type >> 1) & 0x070) | (type & 0x00f);
  const cls = (((type >> 7) & 2) | ((type >> 4) & 1)) as StunClass;
  return { method, cls };
}

/**
 * Cheap test that a datagram is STUN and not one of our sealed datagrams
 * (first byte 0xA1..0xA5) or junk: top two bits zero, magic cookie, length
 * field a multiple of 4 that matches the datagram.
 */
export function isStunPacket(buf: Uint8Array): boolean {
  if (buf.length < STUN_HEADER_LEN || buf.length > MAX_STUN_LEN) return false;
  if ((buf[0] & 0xc0) !== 0) return false;
  if (buf[4] !== 0x21 || buf[5] !== 0x12 || buf[6] !== 0xa4 || buf[7] !== 0x42) return false;
  const len = (buf[2] << 8) | buf[3];
  return (len & 3) === 0 && len + STUN_HEADER_LEN === buf.length;
}

// ---------------------------------------------------------------- CRC-32

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** CRC-32 as used by FINGERPRINT (ISO-HDLC, the zlib one). Own implementation: zlib.crc32 needs Node >= 20.15. */
export function crc32(data: Uint8Array): number {
  let c = -1;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

// ---------------------------------------------------------------- addresses

function encodeAddress(e: Endpoint, xorKey: Buffer | null): Buffer {
  const ip = ipToBytes(unmapIPv4(e.address));
  if (ip === null) throw new Error(`not an IP address: ${e.address}`);
  if (!Number.isInteger(e.port) || e.port < 0 || e.port > 0xffff) throw new Error(`bad port: ${e.port}`);
  const out = Buffer.alloc(4 + ip.length);
  out[1] = ip.length === 4 ? 0x01 : 0x02;
  out.writeUInt16BE(xorKey ? e.port ^ (MAGIC_COOKIE >>> 16) : e.port, 2);
  for (let i = 0; i < ip.length; i++) out[4 + i] = xorKey ? ip[i] ^ xorKey[i] : ip[i];
  return out;
}

function decodeAddress(v: Buffer, xorKey: Buffer | null): Endpoint | null {
  if (v.length < 4) return null;
  const fam = v[1];
  const ipLen = fam === 0x01 ? 4 : fam === 0x02 ? 16 : 0;
  if (ipLen === 0 || v.length !== 4 + ipLen) return null;
  let port = v.readUInt16BE(2);
  const ip = Buffer.from(v.subarray(4));
  if (xorKey) {
    port ^= MAGIC_COOKIE >>> 16;
    for (let i = 0; i < ipLen; i++) ip[i] ^= xorKey[i];
  }
  return { address: bytesToIp(ip), port, family: ipLen === 4 ? 'IPv4' : 'IPv6' };
}

/** Magic cookie followed by the transaction id: the XOR key for X-ADDRESS (IPv4 uses the first 4 bytes). */
function xorKeyFor(transactionId: Buffer): Buffer {
  const key = Buffer.alloc(16);
  key.writeUInt32BE(MAGIC_COOKIE, 0);
  transactionId.copy(key, 4, 0, TRANSACTION_ID_LEN);
  return key;
}

// ---------------------------------------------------------------- encode

/**
 * Serialises a message. Attribute order: XOR-MAPPED-ADDRESS, MAPPED-ADDRESS,
 * RESPONSE-ORIGIN, OTHER-ADDRESS, CHANGE-REQUEST, RESPONSE-PORT, ERROR-CODE,
 * UNKNOWN-ATTRIBUTES, SOFTWARE, extra raw attributes, FINGERPRINT.
 * Throws on programming errors (bad transaction id, non-IP address): this
 * encodes our own values, never network input.
 */
export function encodeStun(msg: StunMessage): Buffer {
  if (msg.transactionId.length !== TRANSACTION_ID_LEN) throw new Error('transaction id must be 12 bytes');
  const xorKey = xorKeyFor(msg.transactionId);
  const attrs: RawAttribute[] = [];
  if (msg.xorMappedAddress)
    attrs.push({ type: StunAttr.XorMappedAddress, value: encodeAddress(msg.xorMappedAddress, xorKey) });
  if (msg.mappedAddress) attrs.push({ type: StunAttr.MappedAddress, value: encodeAddress(msg.mappedAddress, null) });
  if (msg.responseOrigin) attrs.push({ type: StunAttr.ResponseOrigin, value: encodeAddress(msg.responseOrigin, null) });
  if (msg.otherAddress) attrs.push({ type: StunAttr.OtherAddress, value: encodeAddress(msg.otherAddress, null) });
  if (msg.changeRequest) {
    const v = Buffer.alloc(4);
    v[3] = (msg.changeRequest.changeIp ? 0x04 : 0) | (msg.changeRequest.changePort ? 0x02 : 0);
    attrs.push({ type: StunAttr.ChangeRequest, value: v });
  }
  if (msg.responsePort !== undefined) {
    const v = Buffer.alloc(4);
    v.writeUInt16BE(msg.responsePort, 0);
    attrs.push({ type: StunAttr.ResponsePort, value: v });
  }
  if (msg.errorCode) {
    const { code, reason } = msg.errorCode;
    if (!Number.isInteger(code) || code < 300 || code > 699) throw new Error(`bad STUN error code ${code}`);
    const r = Buffer.from(reason, 'utf8');
    const v = Buffer.alloc(4 + r.length);
    v[2] = Math.floor(code / 100);
    v[3] = code % 100;
    r.copy(v, 4);
    attrs.push({ type: StunAttr.ErrorCode, value: v });
  }
  if (msg.unknownAttributes) {
    const v = Buffer.alloc(msg.unknownAttributes.length * 2);
    msg.unknownAttributes.forEach((t, i) => v.writeUInt16BE(t, i * 2));
    attrs.push({ type: StunAttr.UnknownAttributes, value: v });
  }
  if (msg.software !== undefined) attrs.push({ type: StunAttr.Software, value: Buffer.from(msg.software, 'utf8') });
  if (msg.attributes) attrs.push(...msg.attributes);

  const bodyLen = attrs.reduce((n, a) => n + 4 + pad4(a.value.length), 0) + (msg.fingerprint ? 8 : 0);
  const out = Buffer.alloc(STUN_HEADER_LEN + bodyLen);
  out.writeUInt16BE(messageType(msg.method, msg.cls), 0);
  out.writeUInt16BE(bodyLen, 2);
  out.writeUInt32BE(MAGIC_COOKIE, 4);
  msg.transactionId.copy(out, 8);
  let off = STUN_HEADER_LEN;
  for (const a of attrs) {
    out.writeUInt16BE(a.type, off);
    out.writeUInt16BE(a.value.length, off + 2);
    a.value.copy(out, off + 4);
    off += 4 + pad4(a.value.length); // padding bytes stay zero
  }
  if (msg.fingerprint) {
    // The length field already counts the FINGERPRINT, as RFC 5389 §15.5 requires.
    out.writeUInt16BE(StunAttr.Fingerprint, off);
    out.writeUInt16BE(4, off + 2);
    out.writeUInt32BE((crc32(out.subarray(0, off)) ^ FINGERPRINT_XOR) >>> 0, off + 4);
  }
  if (out.length > MAX_STUN_LEN) throw new Error(`STUN message too long (${out.length} bytes)`);
  return out;
}

function pad4(n: number): number {
  return (n + 3) & ~3;
}

// ---------------------------------------------------------------- decode

/**
 * Parses one STUN message occupying the whole datagram. Returns null for
 * anything that is not a well-formed RFC 5389 message: wrong leading bits or
 * cookie, length mismatch, attribute overrun, malformed known attribute,
 * attributes after FINGERPRINT, or a FINGERPRINT that does not match.
 * Of repeated attributes the first one counts (RFC 5389 §15).
 */
export function decodeStun(buf: Uint8Array): StunMessage | null {
  if (!isStunPacket(buf)) return null;
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const { method, cls } = splitType(b.readUInt16BE(0));
  const transactionId = Buffer.from(b.subarray(8, STUN_HEADER_LEN));
  const msg: StunMessage = { cls, method, transactionId, attributes: [] };
  const attributes = msg.attributes!;
  const xorKey = xorKeyFor(transactionId);

  let off = STUN_HEADER_LEN;
  while (off < b.length) {
    if (off + 4 > b.length) return null;
    const type = b.readUInt16BE(off);
    const len = b.readUInt16BE(off + 2);
    // Padding is part of the message length (RFC 5389 §15), so the padded value must fit.
    if (off + 4 + pad4(len) > b.length) return null;
    const value = b.subarray(off + 4, off + 4 + len);

    if (msg.fingerprint) return null; // FINGERPRINT must be last
    attributes.push({ type, value: Buffer.from(value) });
    if (!applyAttribute(msg, type, value, xorKey)) return null;
    if (type === StunAttr.Fingerprint) {
      const expected = (crc32(b.subarray(0, off)) ^ FINGERPRINT_XOR) >>> 0;
      if (value.readUInt32BE(0) !== expected) return null;
    }
    off += 4 + pad4(len);
  }
  return msg;
}

/** Fills the decoded field for a known attribute; false when its value is malformed. */
function applyAttribute(msg: StunMessage, type: number, v: Buffer, xorKey: Buffer): boolean {
  switch (type) {
    case StunAttr.MappedAddress:
    case StunAttr.XorMappedAddress:
    case StunAttr.ResponseOrigin:
    case StunAttr.OtherAddress: {
      const e = decodeAddress(v, type === StunAttr.XorMappedAddress ? xorKey : null);
      if (e === null) return false;
      const field =
        type === StunAttr.MappedAddress
          ? 'mappedAddress'
          : type === StunAttr.XorMappedAddress
            ? 'xorMappedAddress'
            : type === StunAttr.ResponseOrigin
              ? 'responseOrigin'
              : 'otherAddress';
      msg[field] ??= e;
      return true;
    }
    case StunAttr.ChangeRequest:
      if (v.length !== 4) return false;
      msg.changeRequest ??= { changeIp: (v[3] & 0x04) !== 0, changePort: (v[3] & 0x02) !== 0 };
      return true;
    case StunAttr.ResponsePort:
      if (v.length !== 4) return false;
      msg.responsePort ??= v.readUInt16BE(0);
      return true;
    case StunAttr.ErrorCode: {
      if (v.length < 4) return false;
      const code = (v[2] & 0x07) * 100 + v[3];
      if (v[3] > 99 || code < 300 || code > 699) return false;
      msg.errorCode ??= { code, reason: v.subarray(4).toString('utf8') };
      return true;
    }
    case StunAttr.UnknownAttributes: {
      if (v.length % 2 !== 0) return false;
      const types: number[] = [];
      for (let i = 0; i < v.length; i += 2) types.push(v.readUInt16BE(i));
      msg.unknownAttributes ??= types;
      return true;
    }
    case StunAttr.Software:
      msg.software ??= v.toString('utf8');
      return true;
    case StunAttr.Fingerprint:
      if (v.length !== 4) return false;
      msg.fingerprint = true;
      return true;
    default:
      return true;
  }
}

// ---------------------------------------------------------------- helpers

/** The address the server saw us at: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS (RFC 3489-era servers). */
export function mappedAddressOf(msg: StunMessage): Endpoint | undefined {
  return msg.xorMappedAddress ?? msg.mappedAddress;
}

/** True for an IP literal the codec can carry (IPv4, IPv6, v4-mapped IPv6). */
export function isEncodableAddress(address: string): boolean {
  return familyOf(unmapIPv4(address)) !== null;
}

/** A fresh transaction id; RFC 5389 §6 wants it cryptographically random. */
export function newTransactionId(): Buffer {
  return randomBytes(TRANSACTION_ID_LEN);
}
