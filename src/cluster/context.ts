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

/** Failover counters (see `SessionClusterStats.failover`). */
export interface FailoverCounts {
  badCookies: number;
  promoted: number;
  migrated: number;
  lost: number;
  rereplicated: number;
  resyncs: number;
  fenced: number;
  leaseWithheld: number;
  unavailable: number;
  discarded: number;
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
