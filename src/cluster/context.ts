/**
 * What the cluster's parts share: `SessionCluster` holds the state, and
 * hands this view of it to the takeover (`takeover.ts`) and to the methods
 * served to peers (`peer_methods.ts`).
 *
 * @module
 */

import type { RmiLogger } from "../rmi/types.ts";
import type { Replicator } from "../session/replicator.ts";
import type { SessionStore } from "../session/store.ts";
import type { ReplicationUpdate, SessionRecord, SnapshotUpdate } from "../session/types.ts";
import type { SessionUnavailableError } from "./errors.ts";
import type { ClusterNode } from "./node.ts";

/** Reply of the `handover` method. */
export type HandoverReply =
  | { status: "found"; snapshot: SnapshotUpdate; secondary: string | null }
  | { status: "expired" }
  | { status: "missing" }
  | { status: "unavailable"; reason: string }
  | { status: "moved"; to: string };

/** Failover counters of a cluster (`SessionClusterStats.failover`). */
export interface FailoverCounts {
  /** Replicas promoted here because their primary was certified dead. */
  promoted: number;
  /** Sessions handed over to this server by a live primary (or a rebound replica). */
  migrated: number;
  /** Sessions named by a cookie that every holder said it does not have. */
  lost: number;
  /** Snapshots sent to a new secondary after the old one was certified dead (or when one became available). */
  rereplicated: number;
  resyncs: number;
  /** Sessions this server stepped down from because a replica knew a newer primary. */
  fenced: number;
  /** Acknowledgements withheld because this server did not hold a majority lease at that moment. */
  leaseWithheld: number;
  /** Requests answered "unavailable" (no lease, a holder unreachable, a handover in progress). */
  unavailable: number;
  /** Sessions dropped because this server was declared dead and started a new incarnation. */
  discarded: number;
  /** Cookies whose MAC did not match (edited or made up): a fresh session, nothing looked up. */
  badCookies: number;
}

/** The cluster's state and helpers, as its parts see them. */
export interface ClusterContext {
  readonly self: string;
  readonly store: SessionStore;
  readonly node: ClusterNode;
  readonly replicator: Replicator;
  readonly logger: RmiLogger;
  /** Longest a handover (and its rebind) may take. */
  readonly fetchTimeoutMs: number;
  readonly ackTimeoutMs: number;
  readonly counts: FailoverCounts;
  /** Sessions being handed over: their requests get 503 meanwhile. */
  readonly handing: Set<string>;
  /** True once the cluster is closing. */
  readonly closed: boolean;
  /** Counts and makes the error a request gets when its session cannot be served now. */
  unavailable(text: string): SessionUnavailableError;
  /** Throws `SessionUnavailableError` unless this server holds its majority lease. */
  requireLease(what: string): void;
  /** Gives a session without a secondary one. */
  ensureSecondary(record: SessionRecord): void;
  /** Sends an update in the background (ack `transport`, the cluster's bound). */
  replicateNow(update: ReplicationUpdate, secondary: string | undefined): void;
  /** Resolves true once no request uses session `id`; false after `timeoutMs`. */
  quiesce(id: string, timeoutMs: number): Promise<boolean>;
}
