/**
 * Types of the session layer: the record each server keeps, and the
 * replication updates a primary sends to its secondary (plain data, encoded
 * with the pluggable codec: JSON by default).
 *
 * @module
 */

/** Attribute values must survive the codec (JSON by default). */
export type Attributes = Record<string, unknown>;

/**
 * The role of a record on this server:
 * - `primary`: this server serves the session and replicates it;
 * - `replica`: this server holds the backup copy;
 * - `moved`: this server was primary and handed the session to `primary`
 *   (kept only to redirect a request that carries an old cookie).
 */
export type SessionRole = "primary" | "replica" | "moved";

/** One session as a server holds it. */
export interface SessionRecord {
  readonly id: string;
  /** Incremented each time a new primary takes the session over (each epoch is granted once, see the cluster). */
  epoch: number;
  /** Incremented on every change (including a replicated touch). */
  version: number;
  attributes: Attributes;
  /** Last access, ms since the Unix epoch, by the primary's clock. */
  lastAccess: number;
  /** Idle time after which the primary expires the session. */
  maxIdleMs: number;
  role: SessionRole;
  /** Id of the primary server (for `moved`: where it went). */
  primary: string;
  /**
   * On a replica: the primary's incarnation the copy came from (the
   * replica is promoted only when exactly that incarnation is certified dead).
   */
  primaryIncarnation?: string;
  /** Id of the primary's current secondary (on the primary), if any. */
  secondary: string | undefined;
  /** A tombstone: the session expired or was invalidated; it never comes back. */
  expired: boolean;
  /** `lastAccess` as last replicated (used to decide when a touch must be replicated). */
  replicatedAccess: number;
}

/** The whole session: sent when the secondary lacks the base of a delta, and on takeover. */
export interface SnapshotUpdate {
  kind: "snapshot";
  id: string;
  epoch: number;
  version: number;
  primary: string;
  lastAccess: number;
  maxIdleMs: number;
  attributes: Attributes;
}

/** The change from version `base` to `version`: attributes set and deleted. */
export interface DeltaUpdate {
  kind: "delta";
  id: string;
  epoch: number;
  base: number;
  version: number;
  primary: string;
  lastAccess: number;
  maxIdleMs: number;
  set: Attributes;
  del: string[];
}

/** The session has ended (expired or invalidated); the replica keeps a tombstone. */
export interface TombstoneUpdate {
  kind: "tombstone";
  id: string;
  epoch: number;
  version: number;
  primary: string;
}

export type ReplicationUpdate = SnapshotUpdate | DeltaUpdate | TombstoneUpdate;

/**
 * What a replica did with an update:
 * - `applied`;
 * - `stale`: a version it already holds from the same epoch (so from the same
 *   primary: each epoch is granted once): dropped, and the data is already there;
 * - `fenced`: from an older epoch than the replica knows (or the replica is
 *   itself the primary now): the sender is no longer primary; dropped;
 * - `need-snapshot`: it lacks the base of a delta; the primary must send a snapshot;
 * - `ended`: the session has a tombstone here; the update was dropped (not durable).
 */
export type ApplyResult = "applied" | "stale" | "fenced" | "need-snapshot" | "ended";
