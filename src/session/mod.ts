/**
 * Sessions: the store (ids, versions, epochs, tombstones, size limit), the
 * replication updates, and the `Replicator` that sends them over one-way RMI.
 *
 * @module
 */
export { SessionTooLargeError, SessionUpdateError } from "./errors.ts";
export { isValidSessionId, newSessionId } from "./ids.ts";
export { LatencyRecorder, type LatencySummary } from "./latency.ts";
export {
  REPLICATE_METHOD,
  type ReplicationOutcome,
  Replicator,
  type ReplicatorOptions,
  type ReplicatorStats,
} from "./replicator.ts";
export { SessionStore, type SessionStoreOptions, type SessionStoreStats } from "./store.ts";
export type {
  ApplyResult,
  Attributes,
  DeltaUpdate,
  ReplicationUpdate,
  SessionRecord,
  SessionRole,
  SnapshotUpdate,
  TombstoneUpdate,
} from "./types.ts";
export { parseUpdate } from "./update.ts";
