/**
 * `SessionCluster`: sessions replicated across a static cluster. It joins the
 * store (`SessionStore`), the replication path (`Replicator`) and the
 * connections (`ClusterNode`), serves the replication methods to peers, and
 * runs failover.
 *
 * Methods served to authenticated peers (one-way RMI):
 * - `replicate(update)` → ApplyResult. A delta without its base on a
 *   non-`applied` call makes this server call `resync` back on the primary.
 * - `resync({id})`: the primary re-sends the whole session to the caller.
 * - `fetch({id, primaryGone})` → FetchReply: a copy for a server that is taking
 *   the session over. A replica asked because the primary is gone first waits
 *   until every message that primary sent has been applied (its inbound socket
 *   has drained). A primary always hands the session over and keeps a redirect
 *   (`moved`), so there is one primary at a time.
 * - `fenced({id, epoch, primary})`: a replica saw an update from an older epoch;
 *   the sender steps down and keeps a redirect to the newer primary.
 * - `drop({id, epoch})`: forget a replica superseded by a newer epoch.
 *
 * Failover, when a request names a session this server is not primary of:
 * 1. If the session's primary is up (as named by a local replica or redirect,
 *    else by the cookie), take the session over from it.
 * 2. Else, if this server holds the replica, promote it (after draining).
 * 3. Else fetch it from the cookie's secondary (`fetch` in `applied` mode).
 * 4. Else ask every other live peer (the cookie may name a secondary that has
 *    since been replaced). `moved` redirects are followed (at most 3 hops).
 * 5. Adopt it: epoch + 1, a new secondary by rendezvous hashing; the next
 *    replication sends a full snapshot; the old secondary gets `drop`.
 * When a secondary goes down, every session it backed gets a new secondary
 * and a snapshot; when a peer comes up, sessions without a secondary get one.
 * Expiry runs on the primary every `sweepIntervalMs` and replicates tombstones.
 *
 * @module
 */

import type { MessageListener, MessageSocket } from "../sdp/types.ts";
import type { ValueCodec } from "../rmi/codec.ts";
import type { CallContext, MethodTable } from "../rmi/endpoint.ts";
import type { AckMode, RmiLogger, RmiStats } from "../rmi/types.ts";
import { isValidSessionId } from "../session/ids.ts";
import { REPLICATE_METHOD, type ReplicationOutcome, Replicator, type ReplicatorStats } from "../session/replicator.ts";
import { SessionStore, type SessionStoreStats } from "../session/store.ts";
import type { Attributes, SessionRecord, SnapshotUpdate } from "../session/types.ts";
import { parseUpdate } from "../session/update.ts";
import { formatSessionCookie, type SessionLocator } from "./cookie.ts";
import { ClusterNode, type ClusterNodeStats } from "./node.ts";
import type { PeerConfig } from "./peers.ts";
import { chooseSecondary } from "./rendezvous.ts";

/** Options of `SessionCluster`. */
export interface SessionClusterOptions {
  /** This server's peer id. */
  self: string;
  /** Every server of the cluster, this one included. */
  peers: readonly PeerConfig[];
  /** Shared cluster secret, at least 16 bytes. */
  secret: string | Uint8Array;
  /** Where peers connect to us. */
  listener: MessageListener;
  /** Opens a socket to a peer. */
  dial(peer: PeerConfig): Promise<MessageSocket>;
  /** Default ack mode of the request path. @default "transport" */
  ackMode?: AckMode;
  /** Longest the request path waits for the ack (any mode). @default 1000 */
  ackTimeoutMs?: number;
  /** Codec of replication messages (and of session size). @default jsonCodec */
  codec?: ValueCodec;
  /** @default 1048576 */
  maxSessionBytes?: number;
  /** @default 1800000 (30 min) */
  maxIdleMs?: number;
  /** How often the primary expires idle sessions and old tombstones are swept. @default 1000 */
  sweepIntervalMs?: number;
  /** Longest a takeover waits for a peer's `fetch` reply. @default 5000 */
  fetchTimeoutMs?: number;
  /** Longest a replica waits for a dead primary's socket to drain before answering `fetch`. @default 2 × heartbeatTimeoutMs */
  drainTimeoutMs?: number;
  /** @default 500 */
  heartbeatIntervalMs?: number;
  /** @default 2000 */
  heartbeatTimeoutMs?: number;
  /** @default 5000 */
  handshakeTimeoutMs?: number;
  /** @default console */
  logger?: RmiLogger;
  /** Clock for sessions (ms since the Unix epoch). @default Date.now */
  now?: () => number;
}

/** Reply of the `fetch` method. */
export type FetchReply =
  | { status: "found"; snapshot: SnapshotUpdate }
  | { status: "expired" }
  | { status: "missing" }
  | { status: "moved"; to: string };

/** Everything a cluster counts. */
export interface SessionClusterStats {
  self: string;
  store: SessionStoreStats;
  replication: ReplicatorStats;
  node: ClusterNodeStats;
  rmi: RmiStats;
  failover: {
    /** Sessions taken over from a dead primary (local replica or fetched from the secondary). */
    promoted: number;
    /** Sessions taken over from a live primary. */
    migrated: number;
    /** Sessions named by a cookie that no server could supply. */
    lost: number;
    /** Snapshots sent to a new secondary after the old one went down. */
    rereplicated: number;
    resyncs: number;
    /** Sessions this server stepped down from because a replica knew a newer primary. */
    fenced: number;
  };
}

/** The session exists but cannot be served right now (its primary is up yet unreachable for a takeover). */
export class SessionUnavailableError extends Error {
  override name = "SessionUnavailableError";
}

/** Per-call replication options of the request path. */
export interface ReplicateOptions {
  /** @default the cluster's `ackMode` */
  ack?: AckMode;
  /** @default the cluster's `ackTimeoutMs` */
  boundMs?: number;
}

export class SessionCluster {
  readonly self: string;
  readonly store: SessionStore;
  readonly replicator: Replicator;
  readonly node: ClusterNode;
  readonly ackMode: AckMode;
  readonly ackTimeoutMs: number;
  #logger: RmiLogger;
  #fetchTimeoutMs: number;
  #heartbeatTimeoutMs: number;
  #drainTimeoutMs: number;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #takeovers = new Map<string, Promise<SessionRecord | undefined>>();
  /** Sessions adopted here whose new secondary has not yet got a snapshot; value: the old holder to `drop`. */
  #unreplicated = new Map<string, string | undefined>();
  #counts = { promoted: 0, migrated: 0, lost: 0, rereplicated: 0, resyncs: 0, fenced: 0 };

  constructor(options: SessionClusterOptions) {
    this.self = options.self;
    this.ackMode = options.ackMode ?? "transport";
    this.ackTimeoutMs = options.ackTimeoutMs ?? 1000;
    this.#logger = options.logger ?? console;
    this.#fetchTimeoutMs = options.fetchTimeoutMs ?? 5000;
    this.#heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? 2000;
    this.#drainTimeoutMs = options.drainTimeoutMs ?? 2 * (options.heartbeatTimeoutMs ?? 2000);
    this.store = new SessionStore({
      self: options.self,
      codec: options.codec,
      maxSessionBytes: options.maxSessionBytes,
      maxIdleMs: options.maxIdleMs,
      now: options.now,
    });
    this.node = new ClusterNode({
      self: options.self,
      peers: options.peers,
      secret: options.secret,
      listener: options.listener,
      dial: options.dial,
      methods: this.#methods(),
      // `fetch` may wait for a dead primary's socket to drain: it must not delay heartbeats.
      concurrentMethods: ["fetch"],
      codec: options.codec,
      logger: this.#logger,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs,
      handshakeTimeoutMs: options.handshakeTimeoutMs,
      onPeerDown: (peer) => this.#onPeerDown(peer),
      onPeerUp: (peer) => this.#onPeerUp(peer),
    });
    this.replicator = new Replicator({
      store: this.store,
      endpointFor: (peer) => this.node.endpoint(peer),
      logger: this.#logger,
    });
    this.node.start();
    const sweepMs = options.sweepIntervalMs ?? 1000;
    this.#sweeper = setInterval(() => this.sweep(), sweepMs);
  }

  /** Resolves true once every peer is connected, false after `timeoutMs`. */
  waitForPeers(timeoutMs = 10_000): Promise<boolean> {
    return this.node.waitForPeers(timeoutMs);
  }

  /** The cookie value naming where session `record` lives. */
  cookieFor(record: SessionRecord): string {
    return formatSessionCookie({ id: record.id, primary: record.primary, secondary: record.secondary });
  }

  /** Creates a session with this server as primary and a secondary chosen by rendezvous hashing. */
  create(): SessionRecord {
    const record = this.store.create();
    record.secondary = this.#chooseSecondary(record.id);
    return record;
  }

  /**
   * The live session named by `locator`, taken over from another server if
   * this one is not its primary (see failover at the top). `undefined` when it
   * does not exist anywhere, has expired, or could not be reached. Rejects
   * with `SessionUnavailableError` when taking it over would risk two primaries.
   */
  open(locator: SessionLocator | undefined): Promise<SessionRecord | undefined> {
    if (locator === undefined || !isValidSessionId(locator.id)) return Promise.resolve(undefined);
    const record = this.store.get(locator.id);
    if (record?.expired) return Promise.resolve(undefined);
    if (record?.role === "primary") {
      if (this.store.isIdleExpired(record)) {
        this.#replicateNow(this.store.invalidate(record.id), record.secondary);
        return Promise.resolve(undefined);
      }
      return Promise.resolve(record);
    }
    let pending = this.#takeovers.get(locator.id);
    if (pending === undefined) {
      pending = this.#takeOver(locator).finally(() => this.#takeovers.delete(locator.id));
      this.#takeovers.set(locator.id, pending);
    }
    return pending;
  }

  /**
   * Commits a request's changes on the primary and replicates them: waits per
   * the ack mode, at most `boundMs`. Throws `SessionTooLargeError` (nothing
   * changed) if the session would exceed the size limit.
   */
  commit(id: string, set: Attributes, del: readonly string[], options: ReplicateOptions = {}): Promise<ReplicationOutcome> {
    const delta = this.store.commit(id, set, del);
    const record = this.store.get(id)!;
    this.#ensureSecondary(record);
    const [ack, bound] = this.#mode(options);
    const started = performance.now();
    const secondary = record.secondary;
    const first = this.replicator.replicate(delta, secondary, ack, bound);
    return this.#afterAdopt(id, this.#retryElsewhere(record, secondary, first, ack, bound, started));
  }

  /**
   * If the secondary's connection failed under this replication (it died),
   * picks another secondary at once and sends it the whole session, within
   * what is left of the bound, instead of leaving the change unreplicated
   * until failure detection catches up.
   */
  async #retryElsewhere(
    record: SessionRecord,
    failed: string | undefined,
    work: Promise<ReplicationOutcome>,
    ack: AckMode,
    bound: number,
    started: number,
  ): Promise<ReplicationOutcome> {
    const outcome = await work;
    if (outcome !== "failed" || ack === "none" || record.expired || record.role !== "primary") return outcome;
    // Failure detection may already have moved the session to a new secondary; else choose one now.
    let next = record.secondary;
    if (next === failed || next === undefined || !this.node.isAlive(next)) {
      const self = this.node.peers.get(this.self)!;
      next = chooseSecondary(record.id, self, this.node.alivePeers().filter((p) => p.id !== failed));
    }
    const left = bound - (performance.now() - started);
    if (next === undefined || left <= 0) return outcome;
    if (record.secondary !== next) {
      record.secondary = next;
      this.#counts.rereplicated++;
    }
    return this.replicator.replicateSnapshot(record.id, next, ack, left);
  }

  /**
   * Records an access; replicates it only when the replica's access time would
   * fall a quarter of `maxIdleMs` behind, or always with `force`.
   */
  touch(id: string, options: ReplicateOptions & { force?: boolean } = {}): Promise<ReplicationOutcome | undefined> {
    const delta = this.store.touch(id, options.force);
    const record = this.store.get(id)!;
    if (delta === undefined && !this.#unreplicated.has(id)) return Promise.resolve(undefined);
    this.#ensureSecondary(record);
    const [ack, bound] = this.#mode(options);
    const work = delta === undefined
      ? this.replicator.replicateSnapshot(id, record.secondary, ack, bound)
      : this.replicator.replicate(delta, record.secondary, ack, bound);
    return this.#afterAdopt(id, work);
  }

  /** Ends a session on the primary and replicates its tombstone. */
  invalidate(id: string, options: ReplicateOptions = {}): Promise<ReplicationOutcome> {
    const record = this.store.get(id)!;
    const tombstone = this.store.invalidate(id);
    this.#unreplicated.delete(id);
    return this.replicator.replicate(tombstone, record.secondary, ...this.#mode(options));
  }

  /** Expires idle sessions (replicating tombstones) and forgets old tombstones. */
  sweep(): void {
    for (const tombstone of this.store.expireIdle()) {
      this.#replicateNow(tombstone, this.store.get(tombstone.id)?.secondary);
    }
    this.store.sweep();
    const live = (id: string) => {
      const r = this.store.get(id);
      return r !== undefined && r.role === "primary" && !r.expired;
    };
    this.replicator.prune(live);
    for (const id of this.#unreplicated.keys()) if (!live(id)) this.#unreplicated.delete(id);
  }

  stats(): SessionClusterStats {
    return {
      self: this.self,
      store: this.store.stats(),
      replication: this.replicator.stats(),
      node: this.node.stats(),
      rmi: this.node.rmiStats(),
      failover: { ...this.#counts },
    };
  }

  /** Stops the sweeper and closes every connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    await this.node.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #mode(options: ReplicateOptions): [AckMode, number] {
    return [options.ack ?? this.ackMode, options.boundMs ?? this.ackTimeoutMs];
  }

  #replicateNow(update: Parameters<Replicator["replicate"]>[0], secondary: string | undefined): void {
    void this.replicator.replicate(update, secondary, "transport", this.ackTimeoutMs);
  }

  /** After an adopted session's first replication succeeds, tell the old holder to drop its copy. */
  async #afterAdopt(id: string, work: Promise<ReplicationOutcome>): Promise<ReplicationOutcome> {
    const outcome = await work;
    if (this.#unreplicated.has(id) && outcome !== "failed" && outcome !== "no-secondary" && outcome !== "timeout") {
      const old = this.#unreplicated.get(id);
      this.#unreplicated.delete(id);
      const record = this.store.get(id);
      if (old !== undefined && record && old !== record.secondary && old !== this.self) {
        void this.node.endpoint(old)?.call("drop", { id, epoch: record.epoch }, { ack: "none" });
      }
    }
    return outcome;
  }

  #chooseSecondary(id: string): string | undefined {
    const self = this.node.peers.get(this.self)!;
    return chooseSecondary(id, self, this.node.alivePeers());
  }

  #ensureSecondary(record: SessionRecord): void {
    if (record.secondary === undefined || !this.node.isAlive(record.secondary)) {
      record.secondary = this.#chooseSecondary(record.id);
    }
  }

  async #takeOver(locator: SessionLocator): Promise<SessionRecord | undefined> {
    const { id } = locator;
    const local = this.store.get(id);
    const tried = new Set<string>();
    let reply: FetchReply | undefined;
    let oldHolder: string | undefined;
    let migrated = false;
    // 1. A live primary hands the session over: the one a local redirect or
    //    replica names (it is the most recent), then the cookie's.
    const sources = [
      local?.role === "moved" || local?.role === "replica" ? local.primary : undefined,
      locator.primary,
    ].filter((p): p is string => p !== undefined);
    for (let source of sources) {
      for (let hop = 0; hop < 4 && reply === undefined; hop++) {
        if (source === this.self || tried.has(source) || !this.node.isAlive(source)) break;
        tried.add(source);
        reply = await this.#fetch(source, id, false);
        if (reply?.status === "moved") {
          source = reply.to;
          reply = undefined;
          continue;
        }
        if (reply?.status === "found") {
          migrated = true;
          oldHolder = this.store.get(id)?.role === "replica" ? undefined : locator.secondary;
        }
        if (reply?.status === "missing") reply = undefined;
      }
      if (reply !== undefined) break;
    }
    if (reply === undefined || reply.status === "missing") {
      // 2. Promote the local replica of a dead primary.
      const replica = this.store.get(id);
      if (replica?.role === "replica" && !replica.expired) {
        // A primary that did not answer the takeover may be dying: give failure detection its time.
        if (this.node.isAlive(replica.primary)) await this.#awaitDown(replica.primary, this.#heartbeatTimeoutMs + 500);
        if (this.node.isAlive(replica.primary)) {
          // Its primary lives but did not hand it over: promoting the copy would make two primaries.
          throw new SessionUnavailableError(
            `session '${id}': its primary '${replica.primary}' is up but did not hand it over; try again`,
          );
        }
        await this.node.inboundDrained(replica.primary, this.#drainTimeoutMs);
        if (this.store.expireReplicaIfIdle(id)) reply = { status: "expired" };
        else {
          const snapshot = this.store.snapshot(id);
          reply = snapshot?.kind === "snapshot" ? { status: "found", snapshot } : { status: "expired" };
        }
      } else if (replica?.expired) {
        reply = { status: "expired" };
      }
    }
    if (reply === undefined || reply.status === "missing") {
      // 3. Fetch from the cookie's secondary.
      const secondary = locator.secondary;
      if (secondary !== undefined && secondary !== this.self && !tried.has(secondary) && this.node.isAlive(secondary)) {
        reply = await this.#fetch(secondary, id, true);
        if (reply?.status === "found") oldHolder = secondary;
      }
    }
    if (reply === undefined || reply.status === "missing") {
      // 4. The cookie may be stale (the session moved to another secondary after
      //    the client's last response): ask every other live peer.
      for (const peer of this.node.alivePeers()) {
        if (peer.id === this.self || tried.has(peer.id) || peer.id === locator.secondary) continue;
        const found = await this.#fetch(peer.id, id, !this.node.isAlive(locator.primary));
        if (found !== undefined && found.status !== "missing" && found.status !== "moved") {
          reply = found;
          if (found.status === "found") oldHolder = peer.id;
          break;
        }
      }
    }
    if (reply?.status !== "found") {
      if (reply === undefined || reply.status === "missing" || reply.status === "moved") this.#counts.lost++;
      return undefined;
    }
    if (migrated) this.#counts.migrated++;
    else this.#counts.promoted++;
    const record = this.store.adopt(reply.snapshot, this.#chooseSecondary(id));
    this.#unreplicated.set(id, oldHolder);
    return record;
  }

  async #awaitDown(peer: string, timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (this.node.isAlive(peer) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  async #fetch(peer: string, id: string, primaryGone: boolean): Promise<FetchReply | undefined> {
    const endpoint = this.node.endpoint(peer);
    if (endpoint === undefined) return undefined;
    try {
      const reply = await endpoint.call("fetch", { id, primaryGone }, {
        ack: "applied",
        timeoutMs: this.#fetchTimeoutMs,
      });
      return checkFetchReply(reply);
    } catch (error) {
      this.#logger.warn(`cluster ${this.self}: fetch of session '${id}' from '${peer}' failed: ${(error as Error).message}`);
      return undefined;
    }
  }

  #onPeerDown(peer: string): void {
    for (const record of this.store.records()) {
      if (record.role !== "primary" || record.expired || record.secondary !== peer) continue;
      record.secondary = this.#chooseSecondary(record.id);
      if (record.secondary === undefined) continue;
      this.#counts.rereplicated++;
      void this.replicator.replicateSnapshot(record.id, record.secondary, "transport", this.ackTimeoutMs);
    }
  }

  #onPeerUp(_peer: string): void {
    for (const record of this.store.records()) {
      if (record.role !== "primary" || record.expired || record.secondary !== undefined) continue;
      record.secondary = this.#chooseSecondary(record.id);
      if (record.secondary === undefined) continue;
      this.#counts.rereplicated++;
      void this.replicator.replicateSnapshot(record.id, record.secondary, "transport", this.ackTimeoutMs);
    }
  }

  #methods(): MethodTable {
    return {
      [REPLICATE_METHOD]: (args: unknown, ctx: CallContext) => {
        const update = parseUpdate(args);
        if (update.primary !== ctx.endpoint.name) {
          throw new Error(`update names primary '${update.primary}' but came from '${ctx.endpoint.name}'`);
        }
        const result = this.store.applyReplica(update);
        if (result === "need-snapshot" && ctx.ack !== "applied") {
          void this.node.endpoint(update.primary)?.call("resync", { id: update.id }, { ack: "none" });
        }
        if (result === "fenced") {
          // Tell the old primary where the session lives now, so it steps down.
          const held = this.store.get(update.id)!;
          void this.node.endpoint(update.primary)?.call("fenced", {
            id: update.id,
            epoch: held.epoch,
            primary: held.role === "primary" ? this.self : held.primary,
          }, { ack: "none" });
        }
        return result;
      },
      resync: (args: unknown, ctx: CallContext) => {
        const id = (args as { id?: unknown } | null)?.id;
        if (!isValidSessionId(id)) throw new Error(`resync 'id' must be a session id: got ${JSON.stringify(id)}`);
        const record = this.store.get(id);
        if (record?.role !== "primary" || record.expired || record.secondary !== ctx.endpoint.name) return false;
        this.#counts.resyncs++;
        void this.replicator.replicateSnapshot(id, record.secondary, "transport", this.ackTimeoutMs);
        return true;
      },
      fetch: async (args: unknown, ctx: CallContext): Promise<FetchReply> => {
        const a = args as { id?: unknown; primaryGone?: unknown } | null;
        if (!isValidSessionId(a?.id)) throw new Error(`fetch 'id' must be a session id: got ${JSON.stringify(a?.id)}`);
        const id = a.id;
        let record = this.store.get(id);
        if (record === undefined) return { status: "missing" };
        if (record.role === "moved") return { status: "moved", to: record.primary };
        if (record.role === "replica" && !record.expired && a.primaryGone === true) {
          await this.node.inboundDrained(record.primary, this.#drainTimeoutMs);
          record = this.store.get(id);
          if (record === undefined) return { status: "missing" };
        }
        if (record.expired || this.store.expireReplicaIfIdle(id)) return { status: "expired" };
        if (record.role === "primary" && this.store.isIdleExpired(record)) {
          this.#replicateNow(this.store.invalidate(id), record.secondary);
          return { status: "expired" };
        }
        const snapshot = this.store.snapshot(id);
        if (snapshot?.kind !== "snapshot") return { status: "expired" };
        if (record.role === "primary") {
          // Whoever fetches a session adopts it: a primary always hands it over (one primary at a time).
          this.store.markMoved(id, ctx.endpoint.name);
          this.#unreplicated.delete(id);
        }
        return { status: "found", snapshot };
      },
      fenced: (args: unknown) => {
        const a = args as { id?: unknown; epoch?: unknown; primary?: unknown } | null;
        if (!isValidSessionId(a?.id) || typeof a.epoch !== "number" || typeof a.primary !== "string") {
          throw new Error("fenced needs {id, epoch, primary}");
        }
        const record = this.store.get(a.id);
        if (record?.role !== "primary" || record.expired || record.epoch >= a.epoch || a.primary === this.self) return false;
        this.#counts.fenced++;
        this.#logger.warn(`cluster ${this.self}: session '${a.id}' has a newer primary '${a.primary}' (epoch ${a.epoch}); stepping down`);
        this.store.markMoved(a.id, a.primary);
        this.#unreplicated.delete(a.id);
        return true;
      },
      drop: (args: unknown) => {
        const a = args as { id?: unknown; epoch?: unknown } | null;
        if (!isValidSessionId(a?.id) || typeof a.epoch !== "number") throw new Error("drop needs {id, epoch}");
        return this.store.dropReplica(a.id, a.epoch);
      },
    };
  }
}

function checkFetchReply(value: unknown): FetchReply {
  const reply = value as FetchReply | null;
  switch (reply?.status) {
    case "found":
      parseUpdate(reply.snapshot);
      if (reply.snapshot.kind !== "snapshot") throw new Error("fetch reply 'snapshot' must be a snapshot");
      return reply;
    case "moved":
      if (typeof reply.to !== "string") throw new Error("fetch reply 'to' must be a peer id");
      return reply;
    case "expired":
    case "missing":
      return reply;
    default:
      throw new Error(`fetch reply 'status' must be found, expired, missing or moved: got ${JSON.stringify(reply)}`);
  }
}
