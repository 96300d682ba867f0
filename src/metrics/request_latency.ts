/**
 * Replication latency as HTTP requests see it: the time `withSessions` and the
 * Hono middleware spend committing a request's changes (waiting per the ack
 * mode), one histogram per cluster and ack mode. The replicator's own stats
 * keep percentiles of a reservoir; a Prometheus histogram needs every
 * observation counted into buckets, so they are counted here, on the request
 * path that both adapters share.
 *
 * @module
 */
import type { SessionCluster } from "../cluster/session_cluster.ts";
import type { AckMode } from "../rmi/types.ts";
import type { ReplicationOutcome } from "../session/replicator.ts";
import { Histogram } from "./exposition.ts";

/**
 * Bucket upper bounds in seconds. From the measurements in README.md: the
 * demo's replication latency over tcp was p50 1.35 ms and p99 23 ms with
 * `transport`, p99 160 ms with `applied`; the default ack bound is 1 s and the
 * guest's scaled one 30 s. So: 100 µs (well under loopback/RDMA round trips)
 * up to 30 s, about three buckets per decade.
 */
export const LATENCY_BUCKETS_S: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** What the request path recorded for one cluster. */
export interface RequestReplicationStats {
  /** Per requested ack mode: the time to the commit's outcome. */
  latency: Map<AckMode, Histogram>;
  /** Per requested ack mode and outcome: how many requests replicated something. */
  outcomes: Map<string, { ack: AckMode; outcome: ReplicationOutcome; count: number }>;
}

const byCluster = new WeakMap<SessionCluster, RequestReplicationStats>();

/** @internal Called by the shared request steps after a commit that replicated something. */
export function observeRequestReplication(cluster: SessionCluster, ack: AckMode, outcome: ReplicationOutcome, ms: number): void {
  let stats = byCluster.get(cluster);
  if (stats === undefined) byCluster.set(cluster, stats = { latency: new Map(), outcomes: new Map() });
  let h = stats.latency.get(ack);
  if (h === undefined) stats.latency.set(ack, h = new Histogram(LATENCY_BUCKETS_S));
  h.observe(ms / 1000);
  const key = `${ack}\u0000${outcome}`;
  const entry = stats.outcomes.get(key);
  if (entry) entry.count++;
  else stats.outcomes.set(key, { ack, outcome, count: 1 });
}

/** The request-path stats of `cluster` (empty until a request replicated something). */
export function requestReplicationStats(cluster: SessionCluster): RequestReplicationStats {
  return byCluster.get(cluster) ?? { latency: new Map(), outcomes: new Map() };
}
