/**
 * Payload of Probe and ProbeAck datagrams (inside the seal, see datagram.ts):
 *
 *   offset  size  field
 *   0       4     probe id (big-endian), echoed by the ack
 *   4       1     n = length of the address text
 *   5       n     Probe: the address the sender sent to; ProbeAck: the address the probe came from
 *
 * The ack's address tells the prober how the peer sees it (its peer-reflexive address).
 */
export function encodeProbe(id: number, addr: string): Uint8Array {
  const text = Buffer.from(addr.slice(0, 200), 'utf8');
  const out = Buffer.allocUnsafe(5 + text.length);
  out.writeUInt32BE(id >>> 0, 0);
  out[4] = text.length;
  text.copy(out, 5);
  return out;
}

export function decodeProbe(buf: Uint8Array): { id: number; addr: string } | null {
  if (buf.length < 5) return null;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = b[4];
  if (5 + n !== b.length) return null;
  return { id: b.readUInt32BE(0), addr: b.toString('utf8', 5) };
}
