/**
 * `SessionCluster`: sessions replicated across a static cluster. It joins the
 * store (`SessionStore`), the replication path (`Replicator`) and the
 * connections and membership (`ClusterNode`), serves the replication methods
 * to peers, and runs failover.
 *
 * ## The guarantee, and how it is kept
 *
 * An update acknowledged to a client (ack `transport` or `applied`) survives
 * the failure of any one server, and nobody is served an older copy after
 * it. Two servers never both act as the primary of a session:
 *
 * 1. **Nothing acts without a majority lease** (`membership.ts`): a server
 *    serves a session, acknowledges a write (checked after the secondary's
 *    ack arrives, before the response), hands a session over, or promotes a
 *    replica only while it holds leases from a majority of the servers.
 * 2. **Death is certified by a majority** whose leases to the dead server
 *    have run out (by each voter's own clock plus a margin). A paused or
 *    partitioned primary has therefore stopped acting before anyone promotes
 *    its sessions; when it comes back it learns it was declared dead, drops
 *    every session and rejoins as a new incarnation.
 * 3. **The replica holder is the authority of each epoch change.** The
 *    secondary promotes its copy (epoch + 1) only when exactly the primary
 *    incarnation it got the copy from is certified dead, and only after every
 *    message that incarnation had sent it was applied (its sockets drained).
 *    A live primary hands a session over (epoch + 1) only after its secondary
 *    has recorded the new primary (`rebind`); the secondary does one or the
 *    other, never both, so each epoch is granted once.
 * 4. **Fences outlive everything**: the old primary keeps a redirect with the
 *    new epoch, a replica answers `fenced` to an older epoch, and `stale`
 *    (same epoch, a version already held) is the only refusal reported as
 *    acknowledged. The cookie's routing fields are hints: servers ask the
 *    named holders, which answer from their own records.
 * 5. **Eager re-protection**: when an incarnation is certified dead, each
 *    server promotes the replicas it held for it and gives every session whose
 *    secondary it was a new secondary, without waiting for a request.
 *
 * Ack `none` promises nothing: an update not yet sent when the primary dies
 * is lost (no one is served an older copy than what was acknowledged, since
 * nothing was). With two servers a majority is both, so a survivor cannot
 * certify its peer: failover waits until the peer restarts (a new
 * incarnation proves the old one dead). Partitions that cut a server off are
 * survived by the majority side; the minority side answers 503.
 *
 * ## Methods served to authenticated peers (one-way RMI; `peer_methods.ts`)
 * - `replicate(update)` → ApplyResult. A delta without its base on a
 *   non-`applied` call makes this server call `resync` back on the primary.
 * - `resync({id})`: the primary re-sends the whole session to the caller.
 * - `handover({id})` → HandoverReply: a server taking a session over asks
 *   the holder. A primary rebinds its secondary, keeps a redirect and returns
 *   the session at the new epoch; a replica already rebound to the asker
 *   returns its copy; otherwise `unavailable`, `moved`, `expired` or `missing`.
 * - `rebind({snapshot, epoch, primary, incarnation})`: the primary tells its
 *   secondary that the session now belongs to `primary` at `epoch`.
 * - `fenced({id, epoch, primary})`: a replica saw an update from an older
 *   epoch; the sender steps down and keeps a redirect to the newer primary.
 * (Heartbeats, votes and death notices are the node's: see `node.ts`.)
 *
 * ## Taking a session over (`takeover.ts`; a request names a session this server is not primary of)
 * Ask, in order, the server a local redirect names, the cookie's primary, the
 * cookie's secondary, then every other live peer; follow `moved` (at most 3
 * hops). Adopt the first copy handed over. If a holder could not be asked or
 * answered `unavailable`, the request gets `SessionUnavailableError` (HTTP
 * 503, retry); only when every holder answered that it has no such session is
 * it reported lost.
 *
 * @module
 */

import type { MessageListener, MessageSocket } from "../sdp/types.ts";
import type { ValueCodec } from "../rmi/codec.ts";
import type { AckMode, RmiLogger, RmiStats } from "../rmi/types.ts";
import { isValidSessionId } from "../session/ids.ts";
import { type ReplicationOutcome, Replicator, type ReplicatorStats } from "../session/replicator.ts";
import { SessionStore, type SessionStoreStats } from "../session/store.ts";
import type { Attributes, SessionRecord } from "../session/types.ts";
import type { ClusterContext, FailoverCounts } from "./context.ts";
import { SessionUnavailableError } from "./errors.ts";
import { peerMethods } from "./peer_methods.ts";
import { takeOver } from "./takeover.ts";
import { SessionCookieSigner, type SessionLocator } from "./cookie.ts";
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
  /** Longest a takeover waits for a holder's `handover` reply (and a handover for its `rebind`). @default 5000 */
  fetchTimeoutMs?: number;
  /** @default 500 */
  heartbeatIntervalMs?: number;
  /** How long a heartbeat may take; also the lease length. @default 2000 */
  heartbeatTimeoutMs?: number;
  /** Lease length (see `membership.ts`). @default heartbeatTimeoutMs */
  leaseMs?: number;
  /** Extra silence before a server votes a peer dead. @default max(100, leaseMs / 4) */
  leaseMarginMs?: number;
  /** @default 5000 */
  handshakeTimeoutMs?: number;
  /** @default console */
  logger?: RmiLogger;
  /** Clock for sessions (ms since the Unix epoch). @default Date.now */
  now?: () => number;
  /**
   * Where a changing peer list comes from (membership from DNS: `dns_peers.ts`):
   * asked every `peerRefreshMs` and soon after a peer goes down. @default the static `peers`
   */
  peerSource?: () => Promise<readonly PeerConfig[]>;
  /** @default 5000 */
  peerRefreshMs?: number;
}

/** Everything a cluster counts. */
export interface SessionClusterStats {
  self: string;
  store: SessionStoreStats;
  replication: ReplicatorStats;
  node: ClusterNodeStats;
  rmi: RmiStats;
  failover: FailoverCounts;
}

/** Per-call replication options of the request path. */
export interface ReplicateOptions {
  /** @default the cluster's `ackMode` */
  ack?: AckMode;
  /** @default the cluster's `ackTimeoutMs` */
  boundMs?: number;
}

const ACKED: ReadonlySet<ReplicationOutcome> = new Set(["transport", "applied"]);

/** Genuine cookie values remembered (each under 200 bytes): about a megabyte at most. */
const VERIFIED_COOKIES_MAX = 4096;

/** A map that forgets everything once it holds `max` entries (a cache of pure results: a miss only costs a recomputation). */
class BoundedMap<K, V> {
  #map = new Map<K, V>();
  constructor(readonly max: number) {}
  get(key: K): V | undefined {
    return this.#map.get(key);
  }
  set(key: K, value: V): void {
    if (this.#map.size >= this.max && !this.#map.has(key)) this.#map.clear();
    this.#map.set(key, value);
  }
}

export type { HandoverReply } from "./context.ts";
export { SessionUnavailableError } from "./errors.ts";

export class SessionCluster {
  readonly self: string;
  readonly store: SessionStore;
  readonly replicator: Replicator;
  readonly node: ClusterNode;
  readonly ackMode: AckMode;
  readonly ackTimeoutMs: number;
  #logger: RmiLogger;
  #fetchTimeoutMs: number;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #takeovers = new Map<string, Promise<SessionRecord | undefined>>();
  /** Requests in progress per session (a handover waits for them; expiry skips them). */
  #inflight = new Map<string, number>();
  #quiet = new Map<string, Set<() => void>>();
  /** Sessions being handed over: new requests wait (503). */
  #handing = new Set<string>();
  #closed = false;
  #peerSource: (() => Promise<readonly PeerConfig[]>) | undefined;
  #refresher: ReturnType<typeof setInterval> | undefined;
  #refreshSoon: ReturnType<typeof setTimeout> | undefined;
  #cookies: SessionCookieSigner;
  /** The last cookie value signed per record (request path: no HMAC when the placement did not change). */
  #signed = new WeakMap<SessionRecord, SessionLocator & { value: string }>();
  /** Cookie values known genuine (signed or verified here), bounded: no HMAC for a cookie seen before. */
  #verified = new BoundedMap<string, SessionLocator>(VERIFIED_COOKIES_MAX);
  #ctx: ClusterContext | undefined;
  #counts: FailoverCounts = {
    badCookies: 0,
    promoted: 0,
    migrated: 0,
    lost: 0,
    rereplicated: 0,
    resyncs: 0,
    fenced: 0,
    leaseWithheld: 0,
    unavailable: 0,
    discarded: 0,
  };

  constructor(options: SessionClusterOptions) {
    this.self = options.self;
    this.ackMode = options.ackMode ?? "transport";
    this.ackTimeoutMs = options.ackTimeoutMs ?? 1000;
    this.#logger = options.logger ?? console;
    this.#fetchTimeoutMs = options.fetchTimeoutMs ?? 5000;
    this.#cookies = new SessionCookieSigner(options.secret);
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
      methods: peerMethods(this.#context),
      // A handover waits for in-flight requests and for its rebind: it must not delay heartbeats.
      concurrentMethods: ["handover"],
      codec: options.codec,
      logger: this.#logger,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs,
      leaseMs: options.leaseMs,
      leaseMarginMs: options.leaseMarginMs,
      handshakeTimeoutMs: options.handshakeTimeoutMs,
      onPeerUp: () => this.#protectUnprotected(),
      onPeerDown: () => {
        // A peer that went away may have left the peer list too (DNS): look again soon, once.
        if (this.#peerSource !== undefined && this.#refreshSoon === undefined) {
          this.#refreshSoon = setTimeout(() => {
            this.#refreshSoon = undefined;
            void this.refreshPeers();
          }, 200);
        }
      },
      onPeerDead: (peer, incarnation) => this.#onPeerDead(peer, incarnation),
      onReincarnate: () => this.#discardAll(),
    });
    this.replicator = new Replicator({
      store: this.store,
      endpointFor: (peer) => this.node.endpoint(peer),
      logger: this.#logger,
    });
    this.node.start();
    const sweepMs = options.sweepIntervalMs ?? 1000;
    this.#sweeper = setInterval(() => this.sweep(), sweepMs);
    if (options.peerSource !== undefined) {
      this.#peerSource = options.peerSource;
      this.#refresher = setInterval(() => void this.refreshPeers(), options.peerRefreshMs ?? 5000);
    }
  }

  /**
   * Asks the peer source (DNS) again and applies the list: new peers are
   * dialed (new sessions may pick them as secondaries; existing sessions stay
   * where rendezvous hashing put them), vanished ones are treated as down.
   * Never rejects: a failed lookup keeps the current list and is logged.
   */
  async refreshPeers(): Promise<void> {
    if (this.#peerSource === undefined || this.#closed) return;
    try {
      const peers = await this.#peerSource();
      if (this.#closed) return;
      if (!peers.some((p) => p.id === this.self)) {
        this.#logger.warn(`cluster ${this.self}: the peer list has no entry for this server; keeping the current one`);
        return;
      }
      const { added, removed } = this.node.setPeers(peers);
      if (added.length || removed.length) {
        this.#logger.warn(`cluster ${this.self}: peers changed: +[${added.join(",")}] -[${removed.join(",")}]`);
      }
    } catch (error) {
      this.#logger.warn(`cluster ${this.self}: peer refresh failed, keeping the current list: ${(error as Error).message}`);
    }
  }

  /** Resolves true once every peer is connected, false after `timeoutMs`. */
  waitForPeers(timeoutMs = 10_000): Promise<boolean> {
    return this.node.waitForPeers(timeoutMs);
  }

  /** The signed cookie value naming where session `record` lives (see `cookie.ts`). */
  cookieFor(record: SessionRecord): string {
    // The value is a pure function of (id, primary, secondary) under a fixed key: signed once per placement.
    const last = this.#signed.get(record);
    if (last !== undefined && last.id === record.id && last.primary === record.primary && last.secondary === record.secondary) {
      return last.value;
    }
    const value = this.#cookies.format({ id: record.id, primary: record.primary, secondary: record.secondary });
    this.#signed.set(record, { id: record.id, primary: record.primary, secondary: record.secondary, value });
    this.#verified.set(value, { id: record.id, primary: record.primary, secondary: record.secondary });
    return value;
  }

  /** The locator of a cookie value this cluster signed; `undefined` if it was edited, made up or malformed. */
  verifyCookie(value: string | undefined | null): SessionLocator | undefined {
    if (value) {
      // A value that verified once always verifies (same key): only genuine values are remembered.
      const known = this.#verified.get(value);
      if (known !== undefined) return { id: known.id, primary: known.primary, secondary: known.secondary };
    }
    const locator = this.#cookies.verify(value);
    if (value && locator === undefined) this.#counts.badCookies++;
    if (value && locator !== undefined) this.#verified.set(value, { id: locator.id, primary: locator.primary, secondary: locator.secondary });
    return locator;
  }

  /** Creates a session with this server as primary and a secondary chosen by rendezvous hashing. */
  create(): SessionRecord {
    this.#requireLease("create a session");
    const record = this.store.create();
    record.secondary = this.#chooseSecondary(record.id);
    return record;
  }

  /**
   * The live session named by `locator`, taken over from another server if
   * this one is not its primary (see the top of this file). `undefined` when
   * it does not exist anywhere or has expired. Rejects with
   * `SessionUnavailableError` when it cannot be served safely right now.
   * Every session returned counts as in use until `release(id)`.
   */
  async open(locator: SessionLocator | undefined): Promise<SessionRecord | undefined> {
    if (locator === undefined || !isValidSessionId(locator.id)) return undefined;
    const { id } = locator;
    let record = this.store.get(id);
    if (record?.expired) return undefined;
    if (record?.role !== "primary") {
      let pending = this.#takeovers.get(id);
      if (pending === undefined) {
        pending = takeOver(this.#context, locator).finally(() => this.#takeovers.delete(id));
        this.#takeovers.set(id, pending);
      }
      record = await pending;
      if (record === undefined) return undefined;
    }
    this.#requireLease(`serve session '${id}'`);
    if (this.#handing.has(id) || record.role !== "primary") {
      throw this.#unavailable(`session '${id}' is being handed over; try again`);
    }
    if (this.store.isIdleExpired(record)) {
      this.#replicateNow(this.store.invalidate(id), record.secondary);
      return undefined;
    }
    this.store.access(id);
    this.#inflight.set(id, (this.#inflight.get(id) ?? 0) + 1);
    return record;
  }

  /** Ends the request that `open` (or `create`) began on session `id`. */
  release(id: string): void {
    const n = (this.#inflight.get(id) ?? 0) - 1;
    if (n > 0) {
      this.#inflight.set(id, n);
      return;
    }
    this.#inflight.delete(id);
    for (const wake of this.#quiet.get(id) ?? []) wake();
    this.#quiet.delete(id);
  }

  /**
   * Commits a request's changes on the primary and replicates them: waits per
   * the ack mode, at most `boundMs`. Throws `SessionTooLargeError` (nothing
   * changed) if the session would exceed the size limit, and
   * `SessionUnavailableError` if this server may not act on it now.
   */
  async commit(id: string, set: Attributes, del: readonly string[], options: ReplicateOptions = {}): Promise<ReplicationOutcome> {
    this.#requireLease(`commit session '${id}'`);
    const delta = this.store.commit(id, set, del);
    const record = this.store.get(id)!;
    this.#ensureSecondary(record);
    const [ack, bound] = this.#mode(options);
    return this.#leased(await this.replicator.replicate(delta, record.secondary, ack, bound));
  }

  /**
   * Records an access; replicates it only when the replica's access time would
   * fall a quarter of `maxIdleMs` behind, or always with `force`.
   */
  async touch(id: string, options: ReplicateOptions & { force?: boolean } = {}): Promise<ReplicationOutcome | undefined> {
    this.#requireLease(`touch session '${id}'`);
    const delta = this.store.touch(id, options.force);
    if (delta === undefined) return undefined;
    const record = this.store.get(id)!;
    this.#ensureSecondary(record);
    const [ack, bound] = this.#mode(options);
    return this.#leased(await this.replicator.replicate(delta, record.secondary, ack, bound));
  }

  /** Ends a session on the primary and replicates its tombstone. */
  async invalidate(id: string, options: ReplicateOptions = {}): Promise<ReplicationOutcome> {
    this.#requireLease(`invalidate session '${id}'`);
    const record = this.store.get(id)!;
    const tombstone = this.store.invalidate(id);
    return this.#leased(await this.replicator.replicate(tombstone, record.secondary, ...this.#mode(options)));
  }

  /** Expires idle sessions (replicating tombstones) and forgets old tombstones. */
  sweep(): void {
    if (this.node.holdsLease()) {
      for (const tombstone of this.store.expireIdle(undefined, (id) => this.#inflight.has(id))) {
        this.#replicateNow(tombstone, this.store.get(tombstone.id)?.secondary);
      }
    }
    this.store.sweep();
    this.replicator.prune((id) => {
      const r = this.store.get(id);
      return r !== undefined && r.role === "primary" && !r.expired;
    });
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
    this.#closed = true;
    if (this.#refresher !== undefined) clearInterval(this.#refresher);
    if (this.#refreshSoon !== undefined) clearTimeout(this.#refreshSoon);
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    await this.node.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The view of this cluster that `takeover.ts` and `peer_methods.ts` work on (made once). */
  get #context(): ClusterContext {
    if (this.#ctx !== undefined) return this.#ctx;
    const cluster = () => this; // node and replicator are made after the methods that use them
    this.#ctx = {
      self: this.self,
      get store() {
        return cluster().store;
      },
      get node() {
        return cluster().node;
      },
      get replicator() {
        return cluster().replicator;
      },
      logger: this.#logger,
      fetchTimeoutMs: this.#fetchTimeoutMs,
      ackTimeoutMs: this.ackTimeoutMs,
      counts: this.#counts,
      handing: this.#handing,
      get closed() {
        return cluster().#closed;
      },
      unavailable: (text) => this.#unavailable(text),
      requireLease: (what) => this.#requireLease(what),
      ensureSecondary: (record) => this.#ensureSecondary(record),
      replicateNow: (update, secondary) => this.#replicateNow(update, secondary),
      quiesce: (id, timeoutMs) => this.#quiesce(id, timeoutMs),
    };
    return this.#ctx;
  }

  #mode(options: ReplicateOptions): [AckMode, number] {
    return [options.ack ?? this.ackMode, options.boundMs ?? this.ackTimeoutMs];
  }

  /** An acknowledgement counts only if this server still holds its lease now (see the top of this file). */
  #leased(outcome: ReplicationOutcome): ReplicationOutcome {
    if (!ACKED.has(outcome) || this.node.holdsLease()) return outcome;
    this.#counts.leaseWithheld++;
    return "failed";
  }

  #requireLease(what: string): void {
    if (this.#closed) throw this.#unavailable(`cannot ${what}: the cluster is closing`);
    if (!this.node.holdsLease()) throw this.#unavailable(`cannot ${what}: '${this.self}' holds no majority lease`);
  }

  #unavailable(text: string): SessionUnavailableError {
    this.#counts.unavailable++;
    return new SessionUnavailableError(text);
  }

  #replicateNow(update: Parameters<Replicator["replicate"]>[0], secondary: string | undefined): void {
    void this.replicator.replicate(update, secondary, "transport", this.ackTimeoutMs);
  }

  #chooseSecondary(id: string, exclude?: string): string | undefined {
    const self = this.node.peers.get(this.self)!;
    return chooseSecondary(id, self, this.node.alivePeers().filter((p) => p.id !== exclude));
  }

  /**
   * A session without a secondary gets one. A secondary that is merely
   * unreachable is kept (it still holds the copy and could be promoted); it is
   * replaced only once certified dead (`#onPeerDead`).
   */
  #ensureSecondary(record: SessionRecord): void {
    if (record.secondary === undefined) record.secondary = this.#chooseSecondary(record.id);
  }

  /** Sessions without a secondary get one when a peer comes up. */
  #protectUnprotected(): void {
    for (const record of this.store.records()) {
      if (record.role !== "primary" || record.expired || record.secondary !== undefined) continue;
      record.secondary = this.#chooseSecondary(record.id);
      if (record.secondary === undefined) continue;
      this.#counts.rereplicated++;
      void this.replicator.replicateSnapshot(record.id, record.secondary, "transport", this.ackTimeoutMs);
    }
  }

  /** `peer`'s `incarnation` is certified dead and drained: promote its replicas, re-protect its primaries' copies. */
  #onPeerDead(peer: string, incarnation: string): void {
    if (this.#closed) return;
    if (!this.node.holdsLease()) {
      // Promotion is an action: wait for the lease (or for being declared dead ourselves).
      setTimeout(() => this.#onPeerDead(peer, incarnation), 50);
      return;
    }
    for (const record of [...this.store.records()]) {
      if (record.expired) continue;
      if (record.role === "replica" && record.primary === peer && record.primaryIncarnation === incarnation) {
        const promoted = this.store.promote(record.id, this.#chooseSecondary(record.id, peer));
        if (promoted === undefined) continue;
        this.#counts.promoted++;
        void this.replicator.replicateSnapshot(record.id, promoted.secondary, "transport", this.ackTimeoutMs);
      } else if (record.role === "primary" && record.secondary === peer) {
        record.secondary = this.#chooseSecondary(record.id, peer);
        if (record.secondary === undefined) continue;
        this.#counts.rereplicated++;
        void this.replicator.replicateSnapshot(record.id, record.secondary, "transport", this.ackTimeoutMs);
      }
    }
  }

  /** We were declared dead: every session we hold may have a newer primary elsewhere. */
  #discardAll(): void {
    let n = 0;
    for (const r of this.store.records()) if (!r.expired && r.role !== "moved") n++;
    this.#counts.discarded += n;
    this.store.clear();
  }

  /** Waits until no request is using session `id`; false after `timeoutMs`. */
  #quiesce(id: string, timeoutMs: number): Promise<boolean> {
    if (!this.#inflight.has(id)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiters = this.#quiet.get(id) ?? new Set();
      this.#quiet.set(id, waiters);
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        waiters.delete(wake);
        resolve(false);
      }, timeoutMs);
      waiters.add(wake);
    });
  }
}
