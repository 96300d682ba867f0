/**
 * `SessionStore`: the sessions one server holds, as primary or as replica, and
 * the rules that keep replicas from going backwards.
 *
 * Rules a replica applies to an update (`applyReplica`):
 * 1. A tombstone is final: once a session id is tombstoned, every later update
 *    for it is `ended` (ids are 128 random bits, never reused), so an expired
 *    session never comes back.
 * 2. Epoch first: an update from an older epoch (a primary that has been
 *    replaced) is `fenced`; a delta from a newer epoch is `need-snapshot`.
 * 3. Then version: an update at or below the held version is `stale`.
 * 4. A delta applies only on top of exactly its `base` version; otherwise
 *    `need-snapshot` (the replica lacks the base).
 * 5. A snapshot replaces whatever the replica held (subject to 1-3).
 * 6. Redirects (`moved`) are fences too: they keep the epoch at which the
 *    session left, and outlive the replica they replaced until `tombstoneTtlMs`.
 *
 * Expiry is decided by the primary (`expireIdle`), which turns the record into
 * a tombstone and returns the update to replicate. A replica never expires a
 * session on its own while the primary lives; it refuses to hand out a copy
 * whose idle time has passed (`isIdleExpired`), and it forgets replicas and
 * tombstones after a grace period (`sweep`).
 *
 * @module
 */

import { jsonCodec, type ValueCodec } from "../rmi/codec.ts";
import { SessionTooLargeError } from "./errors.ts";
import { jsonString, SizeBook } from "./size.ts";
import { newSessionId } from "./ids.ts";
import type {
  ApplyResult,
  Attributes,
  DeltaUpdate,
  ReplicationUpdate,
  SessionRecord,
  SnapshotUpdate,
  TombstoneUpdate,
} from "./types.ts";

/** Options of `SessionStore`. */
export interface SessionStoreOptions {
  /** Id of this server (becomes `primary` of the sessions it creates). */
  self: string;
  /** Largest encoded size of a session's attributes. @default 1048576 (1 MiB) */
  maxSessionBytes?: number;
  /** Idle time after which the primary expires a session. @default 1800000 (30 min) */
  maxIdleMs?: number;
  /** How long tombstones (and `moved` markers) are kept. @default 2 × maxIdleMs */
  tombstoneTtlMs?: number;
  /** Extra time a replica keeps an idle copy beyond `maxIdleMs` before forgetting it. @default maxIdleMs */
  replicaGraceMs?: number;
  /** Codec used to measure sessions (the one replication uses). @default jsonCodec */
  codec?: ValueCodec;
  /** Clock, ms since the Unix epoch. @default Date.now */
  now?: () => number;
}

/** Counters of a store; all monotonic except the two sizes. */
export interface SessionStoreStats {
  primaries: number;
  replicas: number;
  applied: number;
  /** Updates dropped as stale or fenced (older version or epoch). */
  stale: number;
  needSnapshot: number;
  expired: number;
}

/**
 * The sessions of one server.
 *
 * @example
 * ```ts
 * import { SessionStore } from "./store.ts";
 * const primary = new SessionStore({ self: "a" });
 * const replica = new SessionStore({ self: "b" });
 * const s = primary.create();
 * const delta = primary.commit(s.id, { user: "ada" }, []);
 * console.log(replica.applyReplica(delta)); // "need-snapshot": b lacks the base
 * console.log(replica.applyReplica(primary.snapshot(s.id)!)); // "applied"
 * ```
 */
export class SessionStore {
  readonly self: string;
  readonly maxSessionBytes: number;
  readonly maxIdleMs: number;
  readonly codec: ValueCodec;
  readonly now: () => number;
  #tombstoneTtlMs: number;
  #replicaGraceMs: number;
  #records = new Map<string, SessionRecord>();
  /** Running sizes of primaries' attributes (JSON codec), dropped whenever attributes change another way. */
  #books = new WeakMap<SessionRecord, SizeBook>();
  #counts = { applied: 0, stale: 0, needSnapshot: 0, expired: 0 };
  #setJson = new WeakMap<DeltaUpdate, string>();

  constructor(options: SessionStoreOptions) {
    this.self = options.self;
    this.maxSessionBytes = positive("maxSessionBytes", options.maxSessionBytes ?? 1 << 20);
    this.maxIdleMs = positive("maxIdleMs", options.maxIdleMs ?? 30 * 60_000);
    this.#tombstoneTtlMs = positive("tombstoneTtlMs", options.tombstoneTtlMs ?? 2 * this.maxIdleMs);
    this.#replicaGraceMs = positive("replicaGraceMs", options.replicaGraceMs ?? this.maxIdleMs);
    this.codec = options.codec ?? jsonCodec;
    this.now = options.now ?? Date.now;
  }

  /** The record of `id` (any role, tombstones included), or `undefined`. */
  get(id: string): SessionRecord | undefined {
    return this.#records.get(id);
  }

  /** All records (any role). */
  records(): IterableIterator<SessionRecord> {
    return this.#records.values();
  }

  stats(): SessionStoreStats {
    let primaries = 0;
    let replicas = 0;
    for (const r of this.#records.values()) {
      if (r.expired) continue;
      if (r.role === "primary") primaries++;
      else if (r.role === "replica") replicas++;
    }
    return { primaries, replicas, ...this.#counts };
  }

  /** Creates a new, empty session with this server as primary (epoch 1, version 0). */
  create(secondary?: string): SessionRecord {
    const now = this.now();
    const record: SessionRecord = {
      id: newSessionId(),
      epoch: 1,
      version: 0,
      attributes: {},
      lastAccess: now,
      maxIdleMs: this.maxIdleMs,
      role: "primary",
      primary: this.self,
      secondary,
      expired: false,
      replicatedAccess: 0,
    };
    this.#records.set(record.id, record);
    return record;
  }

  /** Encoded size of `attributes` with the store's codec. */
  measure(attributes: Attributes): number {
    return this.codec.encode(attributes).byteLength;
  }

  /**
   * Throws `SessionTooLargeError` if `attributes` would exceed `maxSessionBytes`.
   * Returns the encoded size.
   */
  checkSize(id: string, attributes: Attributes): number {
    const bytes = this.measure(attributes);
    if (bytes > this.maxSessionBytes) throw new SessionTooLargeError(id, bytes, this.maxSessionBytes);
    return bytes;
  }

  /**
   * The encoded size primary `id` would have after setting `set` and deleting
   * `del`; throws `SessionTooLargeError` past `maxSessionBytes`, `TypeError`
   * for a value the codec cannot encode. With the JSON codec only the changed
   * values are encoded (`size.ts`); other codecs measure the whole session.
   */
  checkChange(id: string, set: Attributes, del: Iterable<string>): number {
    const record = this.#livePrimary(id);
    let bytes: number;
    if (this.codec === jsonCodec) bytes = this.#book(record).after(set, del);
    else {
      const next: Attributes = { ...record.attributes };
      for (const key of del) delete next[key];
      Object.assign(next, set);
      bytes = this.measure(next);
    }
    if (bytes > this.maxSessionBytes) throw new SessionTooLargeError(id, bytes, this.maxSessionBytes);
    return bytes;
  }

  #book(record: SessionRecord): SizeBook {
    let book = this.#books.get(record);
    if (book === undefined) this.#books.set(record, book = new SizeBook(record.attributes));
    return book;
  }

  /**
   * Applies a change on the primary: sets and deletes attributes, bumps the
   * version, refreshes the access time. Returns the delta to replicate.
   * Throws if the session is not a live primary here, or would be too large.
   */
  commit(id: string, set: Attributes, del: readonly string[]): DeltaUpdate {
    const record = this.#livePrimary(id);
    this.checkChange(id, set, del);
    // Nothing below throws: the change applies whole, in place (readers copy what they keep: snapshot, Session.get).
    const attributes = record.attributes;
    const copy: Attributes = {};
    const book = this.codec === jsonCodec ? this.#book(record) : undefined;
    // The JSON text of `set`, from the values' texts the size check just made (none made again).
    let setJson: string | undefined = book === undefined ? undefined : "{";
    for (const key of del) delete attributes[key];
    for (const key in set) {
      if (!Object.hasOwn(set, key)) continue;
      const value = set[key];
      attributes[key] = value;
      copy[key] = value;
      if (setJson !== undefined) {
        const text = book!.encodedValue(key, value);
        setJson = text === undefined ? undefined : `${setJson}${setJson.length > 1 ? "," : ""}${jsonString(key)}:${text}`;
      }
    }
    book?.apply(set, del);
    const base = record.version;
    record.version = base + 1;
    record.lastAccess = this.now();
    record.replicatedAccess = record.lastAccess;
    const delta: DeltaUpdate = {
      kind: "delta",
      id,
      epoch: record.epoch,
      base,
      version: record.version,
      primary: record.primary,
      lastAccess: record.lastAccess,
      maxIdleMs: record.maxIdleMs,
      set: copy,
      del: [...del],
    };
    if (setJson !== undefined) this.#setJson.set(delta, setJson + "}");
    return delta;
  }

  /**
   * The JSON text of `delta.set` as `commit` made it (JSON codec only), so
   * that replication need not encode the values again; `undefined` for
   * anything else. Valid while `delta` is unchanged (updates are not edited).
   */
  setJson(delta: DeltaUpdate): string | undefined {
    return this.#setJson.get(delta);
  }

  /** Marks the start of a request on primary `id`: its access time is now (replicated lazily by `touch`). */
  access(id: string): void {
    this.#livePrimary(id).lastAccess = this.now();
  }

  /** Forgets every session (this server was declared dead and starts anew). */
  clear(): void {
    this.#records.clear();
  }

  /**
   * Records an access on the primary. Returns a delta (no attribute changes)
   * when the replica's view of the access time has fallen more than a quarter
   * of `maxIdleMs` behind (or always, with `force`), so the replica would not
   * think the session idle; otherwise `undefined` (nothing to replicate).
   */
  touch(id: string, force = false): DeltaUpdate | undefined {
    const record = this.#livePrimary(id);
    record.lastAccess = this.now();
    if (!force && record.lastAccess - record.replicatedAccess < record.maxIdleMs / 4) return undefined;
    return this.commit(id, {}, []);
  }

  /** The whole session as an update (a tombstone if it has ended), or `undefined` if unknown. */
  snapshot(id: string): SnapshotUpdate | TombstoneUpdate | undefined {
    const r = this.#records.get(id);
    if (r === undefined || r.role === "moved") return undefined;
    if (r.expired) return { kind: "tombstone", id, epoch: r.epoch, version: r.version, primary: r.primary };
    return {
      kind: "snapshot",
      id,
      epoch: r.epoch,
      version: r.version,
      primary: r.primary,
      lastAccess: r.lastAccess,
      maxIdleMs: r.maxIdleMs,
      attributes: { ...r.attributes },
    };
  }

  /** Ends a session on the primary (invalidate or expiry). Returns the tombstone to replicate. */
  invalidate(id: string): TombstoneUpdate {
    const record = this.#livePrimary(id);
    return this.#bury(record);
  }

  /** True if the session's idle time has passed by its recorded last access. */
  isIdleExpired(record: SessionRecord, now: number = this.now()): boolean {
    return now - record.lastAccess > record.maxIdleMs;
  }

  /** Primary only: expires idle sessions (except those `busy` says are in use); returns the tombstones to replicate. */
  expireIdle(now: number = this.now(), busy: (id: string) => boolean = () => false): TombstoneUpdate[] {
    const tombstones: TombstoneUpdate[] = [];
    for (const r of this.#records.values()) {
      if (r.role === "primary" && !r.expired && this.isIdleExpired(r, now) && !busy(r.id)) tombstones.push(this.#bury(r));
    }
    return tombstones;
  }

  /**
   * Replica side: turns an idle-expired replica into a tombstone (used when a
   * peer asks for a copy whose primary is gone). Returns true if it did.
   */
  expireReplicaIfIdle(id: string, now: number = this.now()): boolean {
    const r = this.#records.get(id);
    if (r === undefined || r.role !== "replica" || r.expired || !this.isIdleExpired(r, now)) return false;
    this.#bury(r);
    return true;
  }

  /**
   * Applies an update received from a primary, by the rules at the top of
   * this file. `incarnation` is the sending primary's (kept on the replica).
   */
  applyReplica(update: ReplicationUpdate, incarnation?: string): ApplyResult {
    const held = this.#records.get(update.id);
    if (held !== undefined) this.#books.delete(held);
    const result = this.#apply(update);
    if (result === "applied") {
      this.#counts.applied++;
      const r = this.#records.get(update.id);
      if (r !== undefined && r.role === "replica") r.primaryIncarnation = incarnation;
    } else if (result === "need-snapshot") this.#counts.needSnapshot++;
    else this.#counts.stale++;
    return result;
  }

  /**
   * Makes this server the primary of a session handed to it: the epoch is
   * the one the giver granted (`snapshot.epoch`), version and attributes as given.
   */
  adopt(snapshot: SnapshotUpdate, secondary: string | undefined): SessionRecord {
    const existing = this.#records.get(snapshot.id);
    if (existing?.expired) throw new Error(`session '${snapshot.id}' has ended here; it cannot be adopted`);
    if (existing !== undefined && existing.epoch > snapshot.epoch) {
      throw new Error(`session '${snapshot.id}' is at epoch ${existing.epoch} here; epoch ${snapshot.epoch} cannot be adopted`);
    }
    const record: SessionRecord = {
      id: snapshot.id,
      epoch: snapshot.epoch,
      version: snapshot.version,
      attributes: { ...snapshot.attributes },
      lastAccess: this.now(),
      maxIdleMs: snapshot.maxIdleMs,
      role: "primary",
      primary: this.self,
      secondary,
      expired: false,
      replicatedAccess: 0,
    };
    this.#records.set(record.id, record);
    return record;
  }

  /**
   * Promotes the replica of `id` (its primary was certified dead): this
   * server becomes primary at epoch + 1. Returns the record, or `undefined`
   * if `id` is not a live replica here.
   */
  promote(id: string, secondary: string | undefined): SessionRecord | undefined {
    const r = this.#records.get(id);
    if (r === undefined || r.role !== "replica" || r.expired) return undefined;
    this.#books.delete(r);
    r.role = "primary";
    r.epoch++;
    r.primary = this.self;
    r.primaryIncarnation = undefined;
    r.secondary = secondary;
    r.replicatedAccess = 0;
    return r;
  }

  /** The primary handed the session to `newPrimary` at `epoch`: keep only a redirect (a fence). */
  markMoved(id: string, newPrimary: string, epoch?: number): void {
    const r = this.#records.get(id);
    if (r === undefined) return;
    this.#books.delete(r);
    r.role = "moved";
    r.primary = newPrimary;
    if (epoch !== undefined && epoch > r.epoch) r.epoch = epoch;
    r.secondary = undefined;
    r.attributes = {};
    r.lastAccess = this.now();
  }

  /**
   * Housekeeping: forgets tombstones and redirects older than `tombstoneTtlMs`
   * and replicas idle beyond `maxIdleMs + replicaGraceMs`. Returns how many.
   */
  sweep(now: number = this.now()): number {
    let removed = 0;
    for (const [id, r] of this.#records) {
      const age = now - r.lastAccess;
      const forget = r.expired || r.role === "moved"
        ? age > this.#tombstoneTtlMs
        : r.role === "replica" && age > r.maxIdleMs + this.#replicaGraceMs;
      if (forget) {
        this.#records.delete(id);
        removed++;
      }
    }
    return removed;
  }

  #apply(u: ReplicationUpdate): ApplyResult {
    const held = this.#records.get(u.id);
    if (held !== undefined) {
      if (held.expired) return "ended"; // rule 1
      if (held.role === "primary" && u.epoch <= held.epoch) return "fenced";
      if (u.epoch < held.epoch) return "fenced"; // rule 2
      // A redirect keeps no data: a newer-or-equal epoch installs a copy over it (rule 6).
      if (held.role !== "moved" && u.epoch === held.epoch && u.version <= held.version) return "stale"; // rule 3
    }
    switch (u.kind) {
      case "tombstone": {
        const record = held ?? this.#replicaFrom(u.id, u.primary);
        record.epoch = u.epoch;
        record.version = u.version;
        record.primary = u.primary;
        record.role = "replica";
        this.#bury(record);
        this.#records.set(u.id, record);
        return "applied";
      }
      case "snapshot": {
        const record = held ?? this.#replicaFrom(u.id, u.primary);
        record.role = "replica";
        record.epoch = u.epoch;
        record.version = u.version;
        record.primary = u.primary;
        record.secondary = undefined;
        record.attributes = { ...u.attributes };
        record.lastAccess = u.lastAccess;
        record.maxIdleMs = u.maxIdleMs;
        this.#records.set(u.id, record);
        return "applied";
      }
      case "delta": {
        if (held === undefined || held.role !== "replica") return "need-snapshot";
        if (u.epoch > held.epoch || u.base !== held.version) return "need-snapshot"; // rules 2, 4
        for (const key of u.del) delete held.attributes[key];
        for (const [key, value] of Object.entries(u.set)) held.attributes[key] = value;
        held.version = u.version;
        held.lastAccess = u.lastAccess;
        held.maxIdleMs = u.maxIdleMs;
        return "applied";
      }
    }
  }

  #replicaFrom(id: string, primary: string): SessionRecord {
    return {
      id,
      epoch: 1,
      version: 0,
      attributes: {},
      lastAccess: this.now(),
      maxIdleMs: this.maxIdleMs,
      role: "replica",
      primary,
      secondary: undefined,
      expired: false,
      replicatedAccess: 0,
    };
  }

  #bury(record: SessionRecord): TombstoneUpdate {
    if (!record.expired) {
      record.expired = true;
      this.#counts.expired++;
    }
    if (record.role === "primary") record.version++;
    this.#books.delete(record);
    record.attributes = {};
    record.lastAccess = this.now();
    return { kind: "tombstone", id: record.id, epoch: record.epoch, version: record.version, primary: record.primary };
  }

  #livePrimary(id: string): SessionRecord {
    const record = this.#records.get(id);
    if (record === undefined || record.role !== "primary" || record.expired) {
      throw new Error(`session '${id}' is not a live primary on '${this.self}'`);
    }
    return record;
  }
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`'${name}' must be a positive number: got ${value}`);
  return value;
}
