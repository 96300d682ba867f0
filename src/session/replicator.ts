/**
 * `Replicator`: sends a primary's updates to the session's secondary over
 * one-way RMI (method `replicate`) and says how far each got.
 *
 * Delta or snapshot: the replicator remembers, per connection, the version of
 * each session it last sent. A delta goes out only if its base is exactly
 * that version on that same connection (the socket keeps order and a broken
 * connection is a new endpoint, so the secondary then holds the base);
 * otherwise it sends the whole session. As a second line, the secondary
 * answers `need-snapshot` (in `applied` mode, to this replicator; in the other
 * modes by calling `resync` back on the primary, see the cluster).
 *
 * The request path waits at most `boundMs` for the chosen ack mode: a stalled
 * secondary cannot hold a response longer than that. The bounds of all
 * replications in flight share one timer (`deadlines.ts`).
 *
 * @module
 */

import { jsonCodec } from "../rmi/codec.ts";
import type { RmiEndpoint } from "../rmi/endpoint.ts";
import type { AckMode, RmiLogger } from "../rmi/types.ts";
import { Deadlines } from "./deadlines.ts";
import { jsonNumber, jsonString } from "./size.ts";
import { LatencyRecorder, type LatencySummary } from "./latency.ts";
import type { SessionStore } from "./store.ts";
import type { ApplyResult, DeltaUpdate, ReplicationUpdate } from "./types.ts";

/** The RMI method a secondary exposes for updates. */
export const REPLICATE_METHOD = "replicate";

/**
 * How far a replication got before the request path stopped waiting:
 * - `none`: sent, not waited for (ack mode `none`);
 * - `transport`: the bytes are in the secondary's memory;
 * - `applied`: the secondary applied it;
 * - `timeout`: the bound passed first (the send goes on in the background);
 * - `failed`: the connection failed or the secondary refused it;
 * - `no-secondary`: no live peer to replicate to.
 */
export type ReplicationOutcome = "none" | "transport" | "applied" | "timeout" | "failed" | "no-secondary";

/** Counters and latencies of a replicator. */
export interface ReplicatorStats {
  outcomes: Record<ReplicationOutcome, number>;
  deltas: number;
  snapshots: number;
  tombstones: number;
  /** Latency to the ack, per ack mode (`transport` and `applied`). */
  latency: Partial<Record<AckMode, LatencySummary>>;
}

/** Options of `Replicator`. */
export interface ReplicatorOptions {
  store: SessionStore;
  /** The live RMI endpoint to a peer, or `undefined` when it is down. */
  endpointFor(peer: string): RmiEndpoint | undefined;
  /** @default console */
  logger?: RmiLogger;
}

type Sent = Map<string, { epoch: number; version: number }>;

export class Replicator {
  #store: SessionStore;
  #endpointFor: (peer: string) => RmiEndpoint | undefined;
  #logger: RmiLogger;
  #sent = new Map<RmiEndpoint, Sent>();
  #latency = new Map<AckMode, LatencyRecorder>();
  /** The ack bounds of every replication in flight, on one timer. */
  #deadlines = new Deadlines();
  #stats = {
    outcomes: { none: 0, transport: 0, applied: 0, timeout: 0, failed: 0, "no-secondary": 0 } as Record<
      ReplicationOutcome,
      number
    >,
    deltas: 0,
    snapshots: 0,
    tombstones: 0,
  };

  constructor(options: ReplicatorOptions) {
    this.#store = options.store;
    this.#endpointFor = options.endpointFor;
    this.#logger = options.logger ?? console;
  }

  stats(): ReplicatorStats {
    const latency: Partial<Record<AckMode, LatencySummary>> = {};
    for (const [mode, recorder] of this.#latency) latency[mode] = recorder.summary();
    return { ...this.#stats, outcomes: { ...this.#stats.outcomes }, latency };
  }

  /**
   * Sends `update` to `secondary` and waits per `ack`, at most `boundMs`.
   * Must be called in the same turn as the store change that produced the
   * update (the snapshot fallback reads the store). Never rejects.
   */
  replicate(
    update: ReplicationUpdate,
    secondary: string | undefined,
    ack: AckMode,
    boundMs: number,
  ): Promise<ReplicationOutcome> {
    const endpoint = secondary === undefined ? undefined : this.#endpointFor(secondary);
    if (endpoint === undefined || endpoint.isClosed) return Promise.resolve(this.#count("no-secondary"));
    const started = performance.now();
    let call: Promise<unknown>;
    let message: ReplicationUpdate;
    try {
      message = this.#message(endpoint, update);
      call = this.#call(endpoint, message, ack);
    } catch (error) {
      // Nothing was sent (the update could not be encoded): as a failed send.
      this.#failed(endpoint, update.id, secondary!, error);
      const failed = this.#count("failed");
      // `none` answers at once whatever happens to the send (the failure is counted all the same).
      return Promise.resolve(ack === "none" ? this.#count("none") : failed);
    }
    // `none`: the call has resolved already and cannot fail any more (the endpoint counts lost sends).
    if (ack === "none") return Promise.resolve(this.#count("none"));
    return new Promise<ReplicationOutcome>((resolve) => {
      let settled = false;
      const deadline = this.#deadlines.add(boundMs, started, () => {
        if (settled) return;
        settled = true;
        resolve(this.#count("timeout"));
      });
      const settle = (outcome: ReplicationOutcome) => {
        if (outcome === "transport" || outcome === "applied") this.#recorder(ack).record(performance.now() - started);
        if (settled) return;
        settled = true;
        deadline.cancel();
        resolve(this.#count(outcome));
      };
      const failed = (error: unknown) => {
        this.#failed(endpoint, update.id, secondary!, error);
        settle("failed");
      };
      if (ack === "transport") call.then(() => settle("transport"), failed);
      else call.then((result) => this.#applied(endpoint, update, message, result)).then(settle, failed);
    });
  }

  /** Sends the whole session (used on takeover, re-replication and `resync`). */
  replicateSnapshot(id: string, secondary: string | undefined, ack: AckMode, boundMs: number): Promise<ReplicationOutcome> {
    const snapshot = this.#store.snapshot(id);
    if (snapshot === undefined) return Promise.resolve(this.#count("failed"));
    if (secondary !== undefined) {
      const endpoint = this.#endpointFor(secondary);
      if (endpoint) this.#forget(endpoint, id);
    }
    return this.replicate(snapshot, secondary, ack, boundMs);
  }

  /** What goes out for `update` on `endpoint` (a delta, or the snapshot when its base is not what was sent there), recorded as sent. */
  #message(endpoint: RmiEndpoint, update: ReplicationUpdate): ReplicationUpdate {
    const sent = this.#sentOn(endpoint);
    let message: ReplicationUpdate = update;
    if (update.kind === "delta") {
      const last = sent.get(update.id);
      if (last === undefined || last.epoch !== update.epoch || last.version !== update.base) {
        message = this.#store.snapshot(update.id) ?? update;
      }
    }
    if (message.kind === "tombstone") sent.delete(message.id);
    else {
      const last = sent.get(message.id);
      if (last === undefined) sent.set(message.id, { epoch: message.epoch, version: message.version });
      else {
        last.epoch = message.epoch;
        last.version = message.version;
      }
    }
    this.#stats[message.kind === "delta" ? "deltas" : message.kind === "snapshot" ? "snapshots" : "tombstones"]++;
    return message;
  }

  /** Calls `replicate`; a delta the store encoded goes out as JSON text built from the values' texts (no second encoding). */
  #call(endpoint: RmiEndpoint, message: ReplicationUpdate, ack: AckMode): Promise<unknown> {
    if (message.kind === "delta" && endpoint.codec === jsonCodec) {
      const setJson = this.#store.setJson(message);
      if (setJson !== undefined) return endpoint.callJson(REPLICATE_METHOD, deltaJson(message, setJson), { ack });
    }
    return endpoint.call(REPLICATE_METHOD, message, { ack });
  }

  /** `applied` mode: the secondary's answer as an outcome (one snapshot retry on `need-snapshot`). */
  async #applied(endpoint: RmiEndpoint, update: ReplicationUpdate, message: ReplicationUpdate, result: unknown): Promise<ReplicationOutcome> {
    if (result === "need-snapshot" && message.kind === "delta") {
      const snapshot = this.#store.snapshot(update.id);
      if (snapshot === undefined) return "failed";
      this.#sentOn(endpoint).set(snapshot.id, { epoch: snapshot.epoch, version: snapshot.version });
      this.#stats.snapshots++;
      const second = await endpoint.call(REPLICATE_METHOD, snapshot, { ack: "applied" });
      return second === "applied" || second === "stale" ? "applied" : "failed";
    }
    // `stale` means the secondary already holds this version: the data is there.
    // `fenced` means a newer primary exists: this update is not durable.
    return (result as ApplyResult) === "applied" || result === "stale" ? "applied" : "failed";
  }

  #failed(endpoint: RmiEndpoint, id: string, secondary: string, error: unknown): void {
    this.#forget(endpoint, id);
    this.#logger.warn(`replication of session '${id}' to '${secondary}' failed: ${messageOf(error)}`);
  }

  #sentOn(endpoint: RmiEndpoint): Sent {
    let sent = this.#sent.get(endpoint);
    if (sent === undefined) {
      sent = new Map();
      this.#sent.set(endpoint, sent);
      endpoint.closed.finally(() => this.#sent.delete(endpoint));
    }
    return sent;
  }

  /** Forgets what was sent of sessions that are no longer live primaries here (housekeeping). */
  prune(isLivePrimary: (id: string) => boolean): void {
    for (const sent of this.#sent.values()) {
      for (const id of sent.keys()) if (!isLivePrimary(id)) sent.delete(id);
    }
  }

  #forget(endpoint: RmiEndpoint, id: string): void {
    this.#sent.get(endpoint)?.delete(id);
  }

  #recorder(ack: AckMode): LatencyRecorder {
    let recorder = this.#latency.get(ack);
    if (recorder === undefined) {
      recorder = new LatencyRecorder();
      this.#latency.set(ack, recorder);
    }
    return recorder;
  }

  #count(outcome: ReplicationOutcome): ReplicationOutcome {
    this.#stats.outcomes[outcome]++;
    return outcome;
  }
}

/** `JSON.stringify(delta)`, with the text of `delta.set` given (same fields in the same order). */
function deltaJson(d: DeltaUpdate, setJson: string): string {
  const del = d.del.length === 0 ? "[]" : JSON.stringify(d.del);
  return `{"kind":"delta","id":${jsonString(d.id)},"epoch":${jsonNumber(d.epoch)},"base":${jsonNumber(d.base)},"version":${
    jsonNumber(d.version)
  },"primary":${jsonString(d.primary)},"lastAccess":${jsonNumber(d.lastAccess)},"maxIdleMs":${jsonNumber(d.maxIdleMs)},"set":${setJson},"del":${del}}`;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
