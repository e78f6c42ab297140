/**
 * Error codes returned (never thrown) by Kcp methods. All are negative so a
 * caller can test `rc < 0`; 0 means success.
 */
export enum KcpError {
  /** input(): datagram shorter than one 24-byte segment header. */
  TooShort = -1,
  /** input(): a segment's conv differs from this session's conv. */
  WrongConv = -2,
  /** input(): a segment's `len` runs past the end of the datagram. */
  LenBeyondDatagram = -3,
  /** input(): a segment's cmd is not PUSH/ACK/WASK/WINS (81..84). */
  UnknownCmd = -4,
  /** input(): bytes left after the last whole segment that cannot hold another header. */
  Truncated = -5,
  /** send(): the message needs too many fragments (message mode allows at most 127). */
  MessageTooLarge = -10,
  /** setMtu(): MTU below 50 bytes. */
  InvalidMtu = -20,
}

/** Human-readable name for a KcpError value (for logs). */
export function kcpErrorName(code: number): string {
  return KcpError[code] ?? `KcpError(${code})`;
}
