/**
 * A path carries a session's sealed datagrams to the other peer. The session
 * does not care how: over the relay's TCP connection or a punched UDP hole.
 */
export type PathKind = 'relay' | 'direct';

export interface Path {
  readonly kind: PathKind;
  /** Where the datagrams go, for logs and the `path` event. */
  readonly remote: string;
  /**
   * Largest sealed datagram to send on this path: over UDP the path MTU in
   * use (1452 before a search, then what the search found), 64 KiB over the relay.
   */
  readonly maxDatagram: number;
  /**
   * Largest sealed datagram accepted from this path, when it differs from
   * maxDatagram: UDP takes MAX_UDP_DATAGRAM_LEN whatever we send (the two
   * directions of a path have their own MTU, and probes go above it).
   */
  readonly maxReceive?: number;
  /** Best effort, like UDP: may drop when the path is congested or closed. */
  send(datagram: Uint8Array): void;
  /**
   * Optional: one datagram of `length` bytes that `fill` seals straight into
   * the path's send buffer (relay records: no allocation per record). `fill`
   * runs before sendRecord() returns, or not at all if the path drops the
   * datagram as send() may.
   */
  sendRecord?(length: number, fill: (out: Uint8Array) => void): void;
  readonly closed: boolean;
  close(): void;
}

/**
 * Where a path hands every datagram it receives: the session's `receive`.
 * True when the datagram was authentic and taken in. Every kind of path (the
 * relay connection, the direct paths of the UDP socket, and any future kind)
 * is wired to its session the same way: `source.deliverTo(session.deliver)`.
 */
export type PathReceiver = (datagram: Uint8Array, from: Path) => boolean;

/** Something that receives datagrams on a session's behalf: a relay connection, the direct path manager. */
export interface PathSource {
  deliverTo(receiver: PathReceiver): void;
}
