/**
 * Prometheus metrics of a session cluster, read from `cluster.stats()` (and
 * the request path's latency histograms) at scrape time: nothing is counted
 * twice and nothing runs between scrapes.
 *
 * `stats()` grows fields over time, so it is read defensively: a counter
 * whose field is missing (or not a number) is left out rather than reported
 * as 0, and unknown keys of the keyed counters (outcomes, peer states) come
 * out as label values.
 *
 * ```ts
 * app.get("/metrics", () => metricsHandler(cluster)()); // or mount metricsHandler(cluster) as a fetch handler
 * ```
 *
 * @module
 */
import type { SessionCluster } from "../cluster/session_cluster.ts";
import { registeredBytes } from "../verbs/memory.ts";
import { Exposition, type Labels, PROMETHEUS_CONTENT_TYPE } from "./exposition.ts";
import { requestReplicationStats } from "./request_latency.ts";

/** Options of `clusterMetrics` and `metricsHandler`. */
export interface MetricsOptions {
  /** Prefix of every metric name. @default "rdma_sessions" */
  prefix?: string;
}

type Json = Record<string, unknown>;

function obj(v: unknown): Json | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? v as Json : undefined;
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** `[labels, value]` for every numeric field of `o` named in `keys` (all numeric fields when `keys` is omitted). */
function keyed(o: Json | undefined, label: string, keys?: readonly string[]): [Labels, number][] {
  if (o === undefined) return [];
  const out: [Labels, number][] = [];
  for (const k of keys ?? Object.keys(o)) {
    const v = num(o[k]);
    if (v !== undefined) out.push([{ [label]: k }, v]);
  }
  return out;
}

function single(v: unknown): [Labels, number][] {
  const n = num(v);
  return n === undefined ? [] : [[{}, n]];
}

/** The metrics of `cluster` in the Prometheus text format (version 0.0.4). */
export function clusterMetrics(cluster: SessionCluster, options: MetricsOptions = {}): string {
  const p = options.prefix ?? "rdma_sessions";
  const stats = obj(cluster.stats()) ?? {};
  const store = obj(stats.store);
  const replication = obj(stats.replication);
  const node = obj(stats.node);
  const rmi = obj(stats.rmi);
  const failover = obj(stats.failover);
  const out = new Exposition();
  const self = typeof stats.self === "string" ? stats.self : cluster.self;
  out.gauge(`${p}_info`, "This server's peer id (value always 1).", [[{ self }, 1]]);

  // Replication latency per ack mode: a histogram from the request path, and the replicator's percentiles.
  const request = requestReplicationStats(cluster);
  out.histogram(
    `${p}_replication_latency_seconds`,
    "Time an HTTP request spent committing and replicating its session changes, by requested ack mode.",
    [...request.latency].map(([ack, h]) => [{ ack }, h.snapshot()] as const),
  );
  out.counter(
    `${p}_request_replications_total`,
    "HTTP requests that replicated session changes, by requested ack mode and outcome.",
    [...request.outcomes.values()].map((e) => [{ ack: e.ack, outcome: e.outcome }, e.count] as const),
  );
  const latency = obj(replication?.latency) ?? {};
  out.summary(
    `${p}_replicator_latency_seconds`,
    "Replicator's latency to the ack (every replication, not only requests), by ack mode; quantiles of a bounded reservoir.",
    Object.entries(latency).flatMap(([ack, raw]) => {
      const s = obj(raw);
      const count = num(s?.count);
      if (s === undefined || count === undefined) return [];
      const quantiles: [number, number][] = [];
      for (const [q, key] of [[0.5, "p50"], [0.9, "p90"], [0.99, "p99"]] as const) {
        const v = num(s[key]);
        if (v !== undefined) quantiles.push([q, v / 1000]);
      }
      return [[{ ack }, { quantiles, count, sum: num(s.sumMs) !== undefined ? num(s.sumMs)! / 1000 : undefined }] as const];
    }),
  );

  // Updates and bytes.
  out.counter(`${p}_replicated_updates_total`, "Session updates sent to a secondary, by kind.", [
    ...(num(replication?.deltas) !== undefined ? [[{ kind: "delta" }, num(replication!.deltas)!] as const] : []),
    ...(num(replication?.snapshots) !== undefined ? [[{ kind: "snapshot" }, num(replication!.snapshots)!] as const] : []),
    ...(num(replication?.tombstones) !== undefined ? [[{ kind: "tombstone" }, num(replication!.tombstones)!] as const] : []),
  ]);
  out.counter(`${p}_replication_outcomes_total`, "Replications by outcome.", keyed(obj(replication?.outcomes), "outcome"));
  const bytes = num(replication?.bytes) ?? num(replication?.bytesSent);
  if (bytes !== undefined) out.counter(`${p}_replicated_bytes_total`, "Bytes of session updates sent to secondaries.", single(bytes));
  out.counter(`${p}_applied_updates_total`, "Replicated updates this server applied as a secondary.", single(store?.applied));
  out.counter(`${p}_stale_updates_total`, "Replicated updates dropped as stale or fenced (older version or epoch).", single(store?.stale));
  out.counter(`${p}_expired_sessions_total`, "Sessions expired on this server.", single(store?.expired));
  out.gauge(`${p}_sessions`, "Sessions held on this server, by role.", [
    ...(num(store?.primaries) !== undefined ? [[{ role: "primary" }, num(store!.primaries)!] as const] : []),
    ...(num(store?.replicas) !== undefined ? [[{ role: "replica" }, num(store!.replicas)!] as const] : []),
  ]);

  // Failover, fences, lost sessions.
  out.counter(
    `${p}_failovers_total`,
    "Sessions taken over or re-homed, by kind (promoted: from a dead primary; migrated: from a live one; rereplicated: to a new secondary; resync).",
    keyed(failover, "kind", ["promoted", "migrated", "rereplicated", "resyncs"]),
  );
  out.counter(`${p}_fenced_total`, "Sessions this server stepped down from because a replica knew a newer primary.", single(failover?.fenced));
  out.counter(`${p}_lost_sessions_total`, "Sessions named by a cookie that no server could supply.", single(failover?.lost));

  // Connections and peers.
  const peerStates = obj(node?.peers) ?? {};
  const byTransport = new Map<string, number>();
  const states = new Map<string, number>();
  for (const [id, state] of Object.entries(peerStates)) {
    const s = String(state);
    states.set(s, (states.get(s) ?? 0) + 1);
    if (s === "up") {
      const transport = String(cluster.node.peers.get(id)?.transport ?? "auto");
      byTransport.set(transport, (byTransport.get(transport) ?? 0) + 1);
    }
  }
  const reported = obj(node?.connections); // a future per-transport count in stats() wins over the peer list
  out.gauge(
    `${p}_peer_connections`,
    "Outgoing peer connections that are up, by configured transport.",
    reported ? keyed(reported, "transport") : [...byTransport].map(([transport, n]) => [{ transport }, n] as const),
  );
  out.gauge(`${p}_peers`, "Peers by connection state.", [...states].map(([state, n]) => [{ state }, n] as const));
  out.counter(`${p}_inbound_connections_total`, "Peer connections accepted.", single(node?.inboundConnections));
  out.counter(`${p}_auth_rejected_total`, "Sockets closed because the peer handshake failed.", single(node?.authRejected));
  out.counter(`${p}_heartbeat_failures_total`, "Heartbeats to peers that failed.", single(node?.heartbeatFailures));
  out.counter(`${p}_certified_dead_total`, "Peer incarnations this server certified dead.", single(node?.certified));
  out.counter(`${p}_malformed_frames_total`, "Sockets closed because of a malformed RMI frame.", single(node?.malformedFrames));
  out.counter(`${p}_rmi_calls_total`, "One-way RMI calls, by direction.", [
    ...(num(rmi?.callsSent) !== undefined ? [[{ direction: "sent" }, num(rmi!.callsSent)!] as const] : []),
    ...(num(rmi?.callsReceived) !== undefined ? [[{ direction: "received" }, num(rmi!.callsReceived)!] as const] : []),
  ]);

  // Memory registered with the RDMA device by this process (0 without rdma connections).
  out.gauge(`${p}_registered_memory_bytes`, "Bytes of memory this process has registered with RDMA devices.", [[{}, registeredBytes()]]);
  return out.text();
}

/**
 * A fetch-style handler that answers every request with `clusterMetrics(cluster)`
 * as `text/plain; version=0.0.4`. Mount it where the app serves `/metrics`.
 */
export function metricsHandler(cluster: SessionCluster, options: MetricsOptions = {}): (request?: Request) => Response {
  return () => new Response(clusterMetrics(cluster, options), { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } });
}
