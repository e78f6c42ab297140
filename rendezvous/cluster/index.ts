/**
 * Several rendezvous nodes sharing one registry on Redis (docs/CLUSTER.md).
 * The server depends only on the `Cluster` interface; `RedisCluster` is the
 * one implementation, used with `rendezvous --registry redis://HOST:PORT/DB`.
 */
export type {
  Cluster,
  ClusterHost,
  ClusterStatus,
  PeerLink,
  ClaimOutcome,
  RemoteConnect,
  VisitorSessionMessage,
} from './types.js';
export { RedisCluster, type RedisClusterOptions } from './node.js';
export { checkRegistryUrl, defaultNodeId, NODE_ID_RE, redactUrl } from './records.js';
