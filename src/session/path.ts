/**
 * A path carries a session's sealed datagrams to the other peer. The session
 * does not care how: over the relay's TCP connection or a punched UDP hole.
 */
export type PathKind = 'relay' | 'direct';

export interface Path {
  readonly kind: PathKind;
  /** Where the datagrams go, for logs and the `path` event. */
  readonly remote: string;
  /** Best effort, like UDP: may drop when the path is congested or closed. */
  send(datagram: Uint8Array): void;
  readonly closed: boolean;
  close(): void;
}
