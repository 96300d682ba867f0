/**
 * `Membership`: who may act in the cluster, decided without I/O (the node
 * feeds it pings, replies and votes; it answers yes or no).
 *
 * The rule it enforces: **a server acts (serves a session, acknowledges a
 * write, hands a session over, promotes a replica) only while it holds a
 * majority lease, and a server is declared dead only by a majority whose
 * leases to it have run out.** Two servers can then never both act on the
 * same session: the new primary acts only after the old one's death was
 * certified, and by then the old one has stopped.
 *
 * - **Incarnations.** Each run of a server has a random incarnation id. A
 *   dead incarnation never comes back: a server that learns it was declared
 *   dead discards every session it holds and starts a new incarnation. A new
 *   incarnation of a peer also proves its old one dead (it stopped first).
 * - **Leases.** Every heartbeat `ping` to a peer that the peer answers is a
 *   grant: the pinger holds a lease from that peer until *its own* send time +
 *   `leaseMs` (the grant was made after the send, so this errs on the short
 *   side). A server holds a majority lease while itself plus the peers whose
 *   lease has not run out make a majority of the configured servers.
 * - **Votes.** Asked "is Y (incarnation i) dead?", a server votes yes only if
 *   it holds a majority lease itself (a server that was paused or cut off
 *   does not vote) and has not granted Y(i) anything for `leaseMs + marginMs`
 *   by its own clock; a yes is final: it never grants Y(i) again. A death
 *   certificate is a majority of yes votes (the asker's own included).
 * - **Learning one's death.** A server starts a new incarnation when a peer
 *   that knows of a certificate refuses it, or when so many peers refuse it
 *   that no majority could ever grant it a lease again.
 * - **Why that is safe.** Say Y acknowledged at time t while holding a
 *   majority lease M, and a certificate V for Y exists. Y is not in V, so
 *   `V ∩ (M \ {Y})` is not empty (|V| ≥ m, |M \ {Y}| ≥ m − 1, and both lie in
 *   the other n − 1 servers with 2m − 1 ≥ n). A voter R in both granted Y a
 *   lease valid past t and votes only `leaseMs + marginMs` after its last
 *   grant, so the certificate was completed after t. The margin covers clock
 *   rate differences between servers (monotonic clocks; a paused process's
 *   clock keeps running, so SIGSTOP or a GC pause cannot stretch a lease).
 *
 * With two servers a majority is both: a lone survivor cannot certify its
 * peer's death (it cannot tell a crash from a partition), so failover then
 * waits until the peer returns as a new incarnation. Use three or more.
 *
 * @module
 */

/** Options of `Membership`. */
export interface MembershipOptions {
  /** This server's id. */
  self: string;
  /** Every configured server id, `self` included. */
  servers: readonly string[];
  /** How long a grant lasts, from the pinger's send time. */
  leaseMs: number;
  /** Extra silence a voter waits beyond `leaseMs` before it votes a peer dead. */
  marginMs: number;
  /** Monotonic clock in ms. @default performance.now */
  now?: () => number;
  /** This run's incarnation id. @default random */
  incarnation?: string;
}

/**
 * A peer's answer to our ping: a grant, or a refusal (the peer voted our
 * incarnation dead; `certified` when it knows a majority did).
 */
export type PingAnswer = { ok: true; incarnation: string } | { ok: false; evicted: true; certified: boolean };

/** Counters of a membership. */
export interface MembershipStats {
  incarnation: string;
  /** True while this server holds a majority lease. */
  leased: boolean;
  /** Peer incarnations known dead (certified, announced, or replaced by a newer one). */
  deadIncarnations: number;
  /** Times this server learned it had been declared dead and started anew. */
  reincarnations: number;
  /** Yes votes this server gave. */
  votesGiven: number;
}

/** Dead incarnations remembered per peer. */
const MAX_DEAD_PER_PEER = 64;

/** A random incarnation id (64 bits, hex). */
export function newIncarnation(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Membership {
  readonly self: string;
  servers: readonly string[];
  majority: number;
  readonly leaseMs: number;
  readonly marginMs: number;
  readonly now: () => number;
  #incarnation: string;
  /** Leases we hold: peer → expiry (our clock). */
  #leaseUntil = new Map<string, number>();
  /** The (majority - 1)-th latest lease end, cached between changes of `#leaseUntil`. */
  #kthLease: number | undefined;
  /** Grants we gave: peer → incarnation and time of the last grant (our clock). */
  #heard = new Map<string, { incarnation: string; at: number }>();
  /** The incarnation each peer last showed us. */
  #known = new Map<string, string>();
  /** Dead incarnations per peer (voted dead here, certified, announced, or replaced). */
  #dead = new Map<string, Set<string>>();
  /** Of those, the ones known dead to a majority (certified, announced, or replaced). */
  #certified = new Set<string>();
  /** Peers that refused our current incarnation. */
  #refusedBy = new Set<string>();
  #counts = { reincarnations: 0, votesGiven: 0, deadIncarnations: 0 };

  constructor(options: MembershipOptions) {
    if (!(options.leaseMs > 0)) throw new RangeError(`'leaseMs' must be positive: got ${options.leaseMs}`);
    if (!(options.marginMs >= 0)) throw new RangeError(`'marginMs' must be >= 0: got ${options.marginMs}`);
    this.self = options.self;
    this.servers = [...new Set(options.servers)];
    if (!this.servers.includes(this.self)) throw new RangeError(`'${this.self}' is not one of the servers`);
    this.majority = Math.floor(this.servers.length / 2) + 1;
    this.leaseMs = options.leaseMs;
    this.marginMs = options.marginMs;
    this.now = options.now ?? (() => performance.now());
    this.#incarnation = options.incarnation ?? newIncarnation();
  }

  /**
   * Servers joined (from a changing peer list): they count toward the
   * majority from now on. Servers are never removed: one that left still
   * counts until the cluster restarts (a shrinking majority could let two
   * sides of a partition both act).
   */
  addServers(ids: Iterable<string>): void {
    this.servers = [...new Set([...this.servers, ...ids])];
    this.majority = Math.floor(this.servers.length / 2) + 1;
  }

  get incarnation(): string {
    return this.#incarnation;
  }

  /** The incarnation `peer` last showed us, if any. */
  known(peer: string): string | undefined {
    return this.#known.get(peer);
  }

  /** True if `peer`'s `incarnation` (default: the one we know) is dead. */
  isDead(peer: string, incarnation: string | undefined = this.#known.get(peer)): boolean {
    return incarnation !== undefined && (this.#dead.get(peer)?.has(incarnation) ?? false);
  }

  /**
   * Records that `peer`'s `incarnation` is dead. Returns true if this is news.
   * Callers: a certificate, the peer's own announcement, or a newer incarnation.
   */
  markDead(peer: string, incarnation: string, certified: boolean = true): boolean {
    if (peer === this.self) return false;
    if (certified) this.#certified.add(`${peer}/${incarnation}`);
    let set = this.#dead.get(peer);
    if (set === undefined) this.#dead.set(peer, set = new Set());
    if (set.has(incarnation)) return false;
    set.add(incarnation);
    this.#counts.deadIncarnations++;
    // Bounded: the oldest dead incarnations of a peer are forgotten (they are long gone: every
    // restart replaces one), so a peer naming made-up incarnations cannot grow this without end.
    for (const old of set) {
      if (set.size <= MAX_DEAD_PER_PEER) break;
      if (old === this.#known.get(peer)) continue;
      set.delete(old);
      this.#certified.delete(`${peer}/${old}`);
    }
    if (this.#known.get(peer) === incarnation) this.#dropLease(peer);
    return true;
  }

  /**
   * We answer `peer`'s ping: a grant, unless that incarnation is dead.
   * Returns the incarnation it replaced, if the peer restarted (now dead).
   */
  answerPing(peer: string, incarnation: string): { answer: PingAnswer; replaced?: string } {
    if (this.isDead(peer, incarnation)) {
      return { answer: { ok: false, evicted: true, certified: this.#certified.has(`${peer}/${incarnation}`) } };
    }
    const replaced = this.#noteIncarnation(peer, incarnation);
    this.#heard.set(peer, { incarnation, at: this.now() });
    return { answer: { ok: true, incarnation: this.#incarnation }, replaced };
  }

  /**
   * `peer` answered the ping we sent at `sentAt` (our clock). Returns what
   * the answer means for us: `evicted` (we were declared dead: start anew),
   * or the peer incarnation it replaced, if the peer restarted.
   */
  onPingAnswer(peer: string, sentAt: number, answer: PingAnswer): { evicted: boolean; replaced?: string } {
    if (!answer.ok) {
      this.#refusedBy.add(peer);
      this.#dropLease(peer);
      // Evicted for sure, or for good: no majority could grant us a lease any more.
      const others = this.servers.length - 1;
      return { evicted: answer.certified || others - this.#refusedBy.size < this.majority - 1 };
    }
    this.#refusedBy.delete(peer);
    const replaced = this.#noteIncarnation(peer, answer.incarnation);
    if (this.isDead(peer, answer.incarnation)) return { evicted: false, replaced };
    this.#heard.set(peer, { incarnation: answer.incarnation, at: this.now() });
    const until = sentAt + this.leaseMs;
    if (until > (this.#leaseUntil.get(peer) ?? -Infinity)) {
      this.#leaseUntil.set(peer, until);
      this.#kthLease = undefined;
    }
    return { evicted: false, replaced };
  }

  #dropLease(peer: string): void {
    this.#leaseUntil.delete(peer);
    this.#kthLease = undefined;
  }

  /** True while this server holds a majority lease. */
  holdsLease(now: number = this.now()): boolean {
    return this.leaseExpiry(now) > now;
  }

  /** When the majority lease runs out (our clock); `-Infinity` if it has. Single-server clusters: `Infinity`. */
  leaseExpiry(now: number = this.now()): number {
    const needed = this.majority - 1; // we count for ourselves
    if (needed <= 0) return Infinity;
    // The needed-th latest end of all leases: if it is past, fewer than `needed` are valid.
    // Read on every request, so cached until a lease changes (no array per call).
    if (this.#kthLease === undefined) {
      const ends = [...this.#leaseUntil.values()].sort((a, b) => b - a);
      this.#kthLease = ends.length >= needed ? ends[needed - 1] : -Infinity;
    }
    return this.#kthLease > now ? this.#kthLease : -Infinity;
  }

  /**
   * Asked whether `peer`'s `incarnation` is dead: yes if we have heard
   * nothing from it (no ping we granted, no answer to ours) for `leaseMs +
   * marginMs`; a yes is final (it is marked dead). An incarnation we never
   * heard of gets a no: it may be new and on its way (voting it dead would be
   * safe, since we never granted it anything, but would evict a live server).
   */
  vote(peer: string, incarnation: string, now: number = this.now()): boolean {
    if (peer === this.self) return false;
    if (this.isDead(peer, incarnation)) return true;
    if (!this.holdsLease(now)) return false;
    const h = this.#heard.get(peer);
    if (h === undefined || h.incarnation !== incarnation) return false;
    if (now - h.at <= this.leaseMs + this.marginMs) return false;
    this.#counts.votesGiven++;
    this.markDead(peer, incarnation, false);
    return true;
  }

  /** We were declared dead: forget every lease and grant and take a new incarnation. */
  reincarnate(incarnation: string = newIncarnation()): void {
    this.#incarnation = incarnation;
    this.#leaseUntil.clear();
    this.#kthLease = undefined;
    this.#heard.clear();
    this.#refusedBy.clear();
    this.#counts.reincarnations++;
  }

  stats(): MembershipStats {
    return {
      incarnation: this.#incarnation,
      leased: this.holdsLease(),
      deadIncarnations: this.#counts.deadIncarnations,
      reincarnations: this.#counts.reincarnations,
      votesGiven: this.#counts.votesGiven,
    };
  }

  #noteIncarnation(peer: string, incarnation: string): string | undefined {
    const old = this.#known.get(peer);
    if (old === incarnation) return undefined;
    this.#known.set(peer, incarnation);
    this.#dropLease(peer);
    if (old === undefined) return undefined;
    this.markDead(peer, old);
    return old;
  }
}
