/**
 * The static list of cluster peers and its validation.
 *
 * @module
 */

import type { TransportChoice } from "../sdp/types.ts";

/** One server of the cluster. */
export interface PeerConfig {
  /** Unique id: 1..64 of `A-Z a-z 0-9 . _ -` (it appears in cookies). */
  id: string;
  /** Address the peer listens on for replication, e.g. "127.0.0.1". */
  host: string;
  /** Port the peer listens on for replication. */
  port: number;
  /** Transport to reach it. @default the cluster's transport ("auto") */
  transport?: TransportChoice;
  /** Failure domain (machine, rack). A secondary in another group is preferred. */
  group?: string;
}

const PEER_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** True for a valid peer id. */
export function isValidPeerId(id: unknown): id is string {
  return typeof id === "string" && PEER_ID.test(id);
}

/** Checks the peer list and that it contains `self`; throws `RangeError` naming the bad entry. */
export function validatePeers(self: string, peers: readonly PeerConfig[]): Map<string, PeerConfig> {
  const byId = new Map<string, PeerConfig>();
  for (const peer of peers) {
    if (!isValidPeerId(peer.id)) {
      throw new RangeError(`peer 'id' must be 1..64 of A-Z a-z 0-9 . _ -: got '${peer.id}'`);
    }
    if (byId.has(peer.id)) throw new RangeError(`peer ids must be unique: '${peer.id}' appears twice`);
    if (!Number.isInteger(peer.port) || peer.port < 0 || peer.port > 65535) {
      throw new RangeError(`peer '${peer.id}' 'port' must be 0..65535: got ${peer.port}`);
    }
    byId.set(peer.id, peer);
  }
  if (!byId.has(self)) throw new RangeError(`'self' must be one of the peers: '${self}' is not in the list`);
  return byId;
}
