/**
 * The session cluster: static peers, rendezvous-chosen secondaries, the
 * `id!primary!secondary` cookie, authenticated replication connections,
 * failure detection and failover.
 *
 * @module
 */
export { authenticate, AuthError, type AuthOptions } from "./auth.ts";
export { formatSessionCookie, parseSessionCookie, readCookie, SessionCookieSigner, type SessionLocator } from "./cookie.ts";
export { ClusterNode, type ClusterNodeOptions, type ClusterNodeStats, type PeerState } from "./node.ts";
export { Membership, type MembershipOptions, type MembershipStats } from "./membership.ts";
export { isValidPeerId, type PeerConfig, validatePeers } from "./peers.ts";
export { chooseSecondary, hash53, type RendezvousCandidate, rendezvousScore } from "./rendezvous.ts";
export {
  type HandoverReply,
  type ReplicateOptions,
  SessionCluster,
  type SessionClusterOptions,
  type SessionClusterStats,
  SessionUnavailableError,
} from "./session_cluster.ts";
export { startSessionCluster, type StartSessionClusterOptions } from "./start.ts";
export { type DnsPeersOptions, resolvePeers } from "./dns_peers.ts";
export { dialPeer, listenForPeers, type PeerListenOptions } from "./transport.ts";
