/**
 * `Session`: what a request handler sees of its session. Changes are staged
 * during the request and committed (one version, one replicated delta) when
 * the handler returns.
 *
 * Values are copied in on `set` and out on `get` (`structuredClone`), so a
 * handler mutating an object it read does not change the session behind the
 * replicator's back: call `set` to change it.
 *
 * @module
 */

import type { SessionCluster } from "../cluster/session_cluster.ts";
import type { ReplicationOutcome } from "../session/replicator.ts";
import type { Attributes, SessionRecord } from "../session/types.ts";
import type { AckMode } from "../rmi/types.ts";

/** The session of one request. */
export class Session {
  #cluster: SessionCluster;
  #record: SessionRecord | undefined;
  #set: Attributes = {};
  #del = new Set<string>();
  #touched = false;
  #invalidated: SessionRecord | undefined;
  #created = false;
  /** The session `SessionCluster.open` returned, until `end()` releases it. */
  #opened: string | undefined;

  /** @internal Made by `withSessions`, with the record `SessionCluster.open` returned. */
  constructor(cluster: SessionCluster, record: SessionRecord | undefined) {
    this.#cluster = cluster;
    this.#record = record;
    this.#opened = record?.id;
  }

  /** @internal The request is over (committed or failed): the cluster may hand the session over or expire it. Idempotent. */
  end(): void {
    if (this.#opened === undefined) return;
    this.#cluster.release(this.#opened);
    this.#opened = undefined;
  }

  /** The session id, or `undefined` while the request has no session (one is made by the first `set`). */
  get id(): string | undefined {
    return this.#record?.id;
  }

  /** True if this request created the session. */
  get isNew(): boolean {
    return this.#created;
  }

  /** The committed version (changes of this request are not counted until it returns). */
  get version(): number {
    return this.#record?.version ?? 0;
  }

  /** The epoch: how many primaries this session has had. */
  get epoch(): number {
    return this.#record?.epoch ?? 0;
  }

  /** The value of attribute `key` (a copy), or `undefined`. */
  get<T = unknown>(key: string): T | undefined {
    if (Object.hasOwn(this.#set, key)) return structuredClone(this.#set[key]) as T;
    if (this.#del.has(key) || this.#record === undefined) return undefined;
    return Object.hasOwn(this.#record.attributes, key)
      ? structuredClone(this.#record.attributes[key]) as T
      : undefined;
  }

  /** True if attribute `key` is set. */
  has(key: string): boolean {
    if (Object.hasOwn(this.#set, key)) return true;
    if (this.#del.has(key) || this.#record === undefined) return false;
    return Object.hasOwn(this.#record.attributes, key);
  }

  /** Names of all attributes. */
  keys(): string[] {
    const keys = new Set(this.#record ? Object.keys(this.#record.attributes) : []);
    for (const k of this.#del) keys.delete(k);
    for (const k of Object.keys(this.#set)) keys.add(k);
    return [...keys];
  }

  /**
   * Sets attribute `key` (creating the session if there is none). Throws
   * `SessionTooLargeError` if the session would exceed `maxSessionBytes`, and
   * `TypeError` if the codec cannot encode the value; the session is then unchanged.
   */
  set(key: string, value: unknown): void {
    if (value === undefined) throw new TypeError(`session attribute '${key}' cannot be undefined: use delete()`);
    const copy = structuredClone(value);
    const record = this.#ensure();
    // Size-checked as the commit will apply it: deletes, then the staged sets with this one.
    this.#cluster.store.checkChange(record.id, { ...this.#set, [key]: copy }, this.#del);
    this.#set[key] = copy;
    this.#del.delete(key);
  }

  /** Deletes attribute `key`; returns whether it was set. */
  delete(key: string): boolean {
    const had = this.has(key);
    delete this.#set[key];
    if (this.#record && Object.hasOwn(this.#record.attributes, key)) this.#del.add(key);
    return had;
  }

  /**
   * Replicates this access now, so that the secondary's idle clock restarts
   * too. (Every request that carries the session already counts as an access
   * on the primary; without `touch()`, the access time is replicated lazily,
   * once it is a quarter of `maxIdleMs` old.)
   */
  touch(): void {
    this.#touched = true;
  }

  /** Ends the session everywhere (a replicated tombstone). A later `set` starts a new one. */
  invalidate(): void {
    if (this.#record && !this.#created) this.#invalidated = this.#record;
    this.#record = undefined;
    this.#set = {};
    this.#del.clear();
    this.#touched = false;
    this.#created = false;
  }

  /** @internal The record after the request, if the session lives on. */
  get record(): SessionRecord | undefined {
    return this.#record;
  }

  /** @internal True if `invalidate()` ended a session that existed before this request. */
  get invalidated(): boolean {
    return this.#invalidated !== undefined;
  }

  /**
   * @internal Commits the request's changes and replicates them (waiting per
   * `ack`, at most `boundMs`). `undefined` when there was nothing to replicate.
   */
  async commit(ack: AckMode, boundMs: number): Promise<ReplicationOutcome | undefined> {
    const options = { ack, boundMs };
    const work: Promise<ReplicationOutcome | undefined>[] = [];
    if (this.#invalidated) work.push(this.#cluster.invalidate(this.#invalidated.id, options));
    const record = this.#record;
    if (record !== undefined) {
      const changed = this.#created || this.#del.size > 0 || Object.keys(this.#set).length > 0;
      if (changed) work.push(this.#cluster.commit(record.id, this.#set, [...this.#del], options));
      else work.push(this.#cluster.touch(record.id, { ...options, force: this.#touched }));
    }
    this.#set = {};
    this.#del.clear();
    const outcomes = await Promise.all(work);
    return worst(outcomes);
  }

  #ensure(): SessionRecord {
    if (this.#record === undefined) {
      this.#record = this.#cluster.create();
      this.#created = true;
    }
    return this.#record;
  }
}

const RANK: Record<ReplicationOutcome, number> = {
  applied: 0,
  transport: 1,
  none: 2,
  timeout: 3,
  "no-secondary": 4,
  failed: 5,
};

function worst(outcomes: (ReplicationOutcome | undefined)[]): ReplicationOutcome | undefined {
  let result: ReplicationOutcome | undefined;
  for (const o of outcomes) {
    if (o !== undefined && (result === undefined || RANK[o] > RANK[result])) result = o;
  }
  return result;
}
