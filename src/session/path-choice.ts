/**
 * Which path a datagram takes: the one place that decides it (like
 * `addrForSendLocked` in Tailscale's magicsock). Pure: the session reports
 * what is available and calls these; the path managers only report.
 *
 *   active path   = the confirmed direct path (unless stalled), else the open relay,
 *                   else the path used last (it may be closed: sends drop)
 *   datagram      = the active path if it fits there,
 *                   else the open relay if it fits there (segments cut for the
 *                   relay's 64 KiB records before a move to UDP finish on it),
 *                   else none: 'too-large' (the session fails with the reason)
 *   segment size  = the active path's largest datagram, but never above the
 *                   direct path's (its path MTU) once the session has been direct
 */
import { MAX_DATAGRAM_LEN } from '../wire/datagram.js';
import type { Path } from './path.js';

/** The paths a session has, as their managers report them. */
export interface PathSet {
  /** The relay connection, from when it is paired until it closes. */
  relay: Path | null;
  /** The confirmed direct path, from its first answered probe until its heartbeats stop. */
  direct: Path | null;
  /**
   * The path that carried data last. With neither of the above it stays in
   * use: a direct path that stopped answering with no relay to fall back to
   * (`--mode direct`) may still come back; a closed one drops what it is given.
   */
  current: Path | null;
  /**
   * The direct path while it is stalled: it answers heartbeats but stopped
   * delivering data (KCP gave up on it, or its path MTU search found nothing
   * passes). Data goes on the relay meanwhile; the session retries it later.
   */
  stalled?: Path | null;
}

/** Why a datagram has no path: nothing was ever available, or it is larger than every open path carries. */
export type NoPath = 'no-path' | 'too-large';

/**
 * The path that carries data (and sets the segment size): direct (not
 * stalled) beats relay; with neither, the last one.
 */
export function activePath(paths: PathSet): Path | null {
  if (paths.direct && !paths.direct.closed && paths.direct !== paths.stalled) return paths.direct;
  if (paths.relay && !paths.relay.closed) return paths.relay;
  return paths.current;
}

/**
 * The path for one sealed datagram of `size` bytes, or why there is none.
 * Returns a string rather than an object for "none": this runs for every
 * datagram of the bulk path, which allocates nothing.
 */
export function choosePath(paths: PathSet, size: number): Path | NoPath {
  const active = activePath(paths);
  if (!active) return 'no-path';
  if (size <= active.maxDatagram) return active;
  const relay = paths.relay;
  if (relay && !relay.closed && size <= relay.maxDatagram) return relay;
  return 'too-large';
}

/**
 * The datagram size KCP segments are cut for on `active`. `udpMax` is the
 * direct path's size (its path MTU, MAX_DATAGRAM_LEN before any search). Relay-sized only
 * until the session has been direct: a session that falls back to the relay
 * expects to punch again, and if the relay then breaks too (a NAT that forgot
 * everything), UDP-sized segments are what can still move. Sessions that never
 * go direct (--mode relay, both NATs symmetric, UDP blocked) keep the fast relay.
 */
export function segmentSizeFor(active: Path, beenDirect: boolean, udpMax = MAX_DATAGRAM_LEN): number {
  return beenDirect ? Math.min(active.maxDatagram, udpMax) : active.maxDatagram;
}
