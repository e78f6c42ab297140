import type { FramedSocket } from '../../src/transport/framed-socket.js';
import type { ControlMessage, ErrorCode, MessageOf } from '../../src/wire/control.js';

/**
 * The contract between a rendezvous node and a cluster. Without a cluster the
 * node is alone and its in-memory Registry is the whole truth (the default);
 * with one, name ownership is shared (Redis) and sessions are brokered across
 * nodes. docs/CLUSTER.md describes the model.
 */

/**
 * One side of a brokered session as the node that brokers it sees it: a local
 * control connection (the server's Conn satisfies this), or a stand-in for a
 * visitor whose control connection lives on another node, whose `send` goes
 * over the cluster bus.
 */
export interface PeerLink {
  fs: {
    send(m: ControlMessage): boolean;
    /** Sends an error; a stand-in cannot close the remote connection, so it only sends. */
    fail(code: ErrorCode, message: string, extra?: { reqId?: string; sid?: string }): void;
    readonly remote: string;
  };
  rttMs: number | null;
}

export type ClaimOutcome = { ok: true } | { ok: false; code: 'name_taken' | 'service_unavailable'; message: string };

/** What became of a visitor's `connect` for a name this node does not hold. */
export type RemoteConnect = { ok: true } | { ok: false; code: 'unknown_name' | 'service_unavailable'; message: string };

export type VisitorSessionMessage = MessageOf<'candidates'> | MessageOf<'path_report'>;

/** What the rendezvous asks of its cluster. */
export interface Cluster {
  /** Joins the cluster once the node listens on `listening` (its relay's address unless --advertise says otherwise). */
  start(host: ClusterHost, listening: { host: string; port: number }): Promise<void>;
  close(): Promise<void>;
  /** Claims `name` for `key` across the cluster, on behalf of the local connection `owner`. */
  claim(name: string, key: string, owner: PeerLink): Promise<ClaimOutcome>;
  /** `owner` no longer holds `name` here (disconnected): give it up unless someone else has taken it since. */
  release(name: string, owner: PeerLink): void;
  /** A local visitor asks for a name no local connection holds: have the owning node broker it. */
  connect(visitor: PeerLink, m: MessageOf<'connect'>): Promise<RemoteConnect>;
  /** A local visitor's message about a session another node brokers; false when it is not one. */
  fromVisitor(visitor: PeerLink, m: VisitorSessionMessage): boolean;
  /** A local control connection closed. */
  connectionClosed(conn: PeerLink): void;
  /** A relay leg whose session another node brokers: piped to that node's relay; false when it is not one. */
  takeRelayLeg(fs: FramedSocket, ticket: string): boolean;
  status(): ClusterStatus;
}

/** What the cluster asks of the rendezvous node it belongs to. */
export interface ClusterHost {
  /** Broker a session for a visitor connected to another node, exactly as for a local one. */
  brokerFor(visitor: PeerLink, m: MessageOf<'connect'>): void;
  /** A remote visitor's candidates / path_report for a session this node brokers. */
  visitorMessage(visitor: PeerLink, m: VisitorSessionMessage): void;
  /** A remote visitor is gone (its connection closed or its node died): end its sessions. */
  visitorGone(visitor: PeerLink): void;
  /**
   * The cluster gave `name` to another registration: forget it here. `conflict`
   * when a different key holds it now (not merely our serve having moved nodes).
   */
  nameLost(name: string, conflict: boolean): void;
}

export interface ClusterStatus {
  node: string;
  advertise: string;
  registry: 'up' | 'down';
  /** Names this node holds in the shared registry. */
  names: number;
  /** Visitors on other nodes with sessions brokered here. */
  remoteVisitors: number;
  /** Sessions of local visitors brokered by other nodes. */
  forwardedSessions: number;
  /** Round trip to Redis, ms (last heartbeat). */
  registryRttMs: number | null;
}
