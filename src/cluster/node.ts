/**
 * `ClusterNode`: this server's replication connections to its peers.
 *
 * - Every peer is dialed (one outbound socket per peer, reconnected with
 *   backoff); every peer dials us (inbound sockets from the listener). Both
 *   kinds run the auth handshake (`auth.ts`) as their first messages and only
 *   then get an `RmiEndpoint` serving the method table: nothing is read as an
 *   RMI frame, and so no replica is accepted, before authentication.
 * - Heartbeats are leases (`membership.ts`): every `heartbeatIntervalMs` each
 *   outbound link sends `ping{incarnation}` in `applied` mode; the answer is a
 *   grant (or `evicted`: this server was declared dead, and starts anew). A
 *   link is `up` only after its first ping was answered, so nothing is sent
 *   to a peer before the peer knows our incarnation.
 * - Failure detection: a closed socket, a failed heartbeat, or a closed
 *   inbound socket (which triggers an immediate heartbeat) marks a peer
 *   `down` (`onPeerDown`). That alone decides nothing: the node then asks
 *   every reachable peer to vote (`suspect{peer, incarnation}`) and, with a
 *   majority of yes votes, the incarnation is certified dead, announced
 *   (`dead{peer, incarnation}`), and `onPeerDead` fires. A peer that comes
 *   back as a new incarnation proves its old one dead the same way.
 * - Before `onPeerDead` fires, every inbound socket of the dead incarnation
 *   is closed and drained: each message it had received (and so had
 *   acknowledged to the sender at the transport level) has been applied.
 * - A malformed frame or failed handshake closes that socket alone.
 *
 * @module
 */

import type { MessageListener, MessageSocket, ReceivedMessage } from "../sdp/types.ts";
import type { ValueCodec } from "../rmi/codec.ts";
import { type MethodTable, RmiEndpoint } from "../rmi/endpoint.ts";
import { emptyRmiStats, type RmiLogger, type RmiStats } from "../rmi/types.ts";
import { authenticateWithKeys, secretBytes } from "./auth.ts";
import { SealedSocket } from "./sealed_socket.ts";
import { Membership, type MembershipStats, type PingAnswer } from "./membership.ts";
import { type PeerConfig, validatePeers } from "./peers.ts";

/** The RMI method every endpoint serves for heartbeats (leases). */
export const PING_METHOD = "ping";
/** Asks for a vote: is `{peer, incarnation}` dead? */
export const SUSPECT_METHOD = "suspect";
/** Announces a certified (or self-announced) dead incarnation. */
export const DEAD_METHOD = "dead";

/** State of a peer as seen from here. */
export type PeerState = "connecting" | "up" | "down" | "closed";

/** Options of `ClusterNode`. */
export interface ClusterNodeOptions {
  /** This server's peer id (must be in `peers`). */
  self: string;
  /** The static list of all servers, this one included. */
  peers: readonly PeerConfig[];
  /** The shared cluster secret (at least 16 bytes). */
  secret: string | Uint8Array;
  /** Where peers connect to us. */
  listener: MessageListener;
  /** Opens a socket to a peer. */
  dial(peer: PeerConfig): Promise<MessageSocket>;
  /** Methods served to authenticated peers (a `ping` is added). */
  methods: MethodTable;
  /** Methods of the table that may wait and must not hold up later frames (see `RmiEndpointOptions.concurrent`). */
  concurrentMethods?: string[];
  /** Codec of RMI arguments and results. @default jsonCodec */
  codec?: ValueCodec;
  /** @default console */
  logger?: RmiLogger;
  /** @default 500 */
  heartbeatIntervalMs?: number;
  /** @default 2000 */
  heartbeatTimeoutMs?: number;
  /** First delay before redialing a peer; doubles up to `maxReconnectDelayMs`. @default 100 */
  reconnectDelayMs?: number;
  /** @default 2000 */
  maxReconnectDelayMs?: number;
  /** @default 5000 */
  handshakeTimeoutMs?: number;
  /** Inbound connections allowed in the handshake at once; more are closed at once (logged). @default 32 */
  maxHandshakes?: number;
  /** Authenticated inbound connections allowed per peer (a peer needs one, plus one while it reconnects). @default 4 */
  maxInboundPerPeer?: number;
  /** How long a heartbeat grant lasts. @default heartbeatTimeoutMs */
  leaseMs?: number;
  /** Extra silence before voting a peer dead (clock-rate allowance). @default max(100, leaseMs / 4) */
  leaseMarginMs?: number;
  onPeerUp?(peer: string): void;
  onPeerDown?(peer: string): void;
  /**
   * `peer`'s `incarnation` is certified dead and its inbound sockets are
   * drained: take over what it held. Called once per incarnation.
   */
  onPeerDead?(peer: string, incarnation: string): void;
  /** This server was declared dead: drop everything it holds (it now runs as a new incarnation). */
  onReincarnate?(): void;
}

/** Counters of a node. */
export interface ClusterNodeStats {
  peers: Record<string, PeerState>;
  /** Sockets closed because the handshake failed (wrong secret, unknown peer, not our protocol, timeout). */
  authRejected: number;
  /** Sockets closed because of a malformed RMI frame. */
  malformedFrames: number;
  inboundConnections: number;
  heartbeatFailures: number;
  /** Peer incarnations this server certified dead (its own majority of votes). */
  certified: number;
  /** Death notices received (a peer's certificate, or a peer leaving). */
  deathNotices: number;
  /** Inbound connections refused over a limit (`maxHandshakes`, `maxInboundPerPeer`). */
  refused: number;
  membership: MembershipStats;
}

class PeerLink {
  state: PeerState = "connecting";
  endpoint: RmiEndpoint | undefined;
  #wake: (() => void) | undefined;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #pinging = false;
  /** Set by `reset()`: the coming disconnection is ours, not a sign of failure. */
  #quiet = false;

  constructor(readonly peer: PeerConfig, readonly node: ClusterNode) {}

  get isClosed(): boolean {
    return this.state === "closed";
  }

  async run(): Promise<void> {
    const o = this.node.options;
    let delay = o.reconnectDelayMs ?? 100;
    let lastError = "";
    while (!this.isClosed) {
      let socket: MessageSocket | undefined;
      try {
        socket = await o.dial(this.peer);
        if (this.isClosed) {
          await socket.close();
          break;
        }
        const messages = socket[Symbol.asyncIterator]();
        const { keys } = await authenticateWithKeys(socket, messages, {
          role: "dialer",
          self: o.self,
          secret: o.secret,
          allowed: (id) => id === this.peer.id,
          timeoutMs: o.handshakeTimeoutMs,
        });
        socket.trust?.(); // authenticated: lift the socket's limits before trust (src/sdp/socket.ts)
        const sealed = new SealedSocket(socket, messages, keys, { name: this.peer.id });
        const endpoint = this.node.makeEndpoint(sealed, sealed[Symbol.asyncIterator](), this.peer.id);
        if (this.isClosed) {
          await endpoint.close();
          break;
        }
        // The first grant before anything else is sent: the peer learns our incarnation.
        await this.#pingOnce(endpoint);
        if (this.isClosed) {
          await endpoint.close();
          break;
        }
        this.endpoint = endpoint;
        delay = o.reconnectDelayMs ?? 100;
        lastError = "";
        this.#setState("up");
        this.#startHeartbeat(endpoint);
        await endpoint.closed;
        this.#stopHeartbeat();
      } catch (error) {
        const text = error instanceof Error ? error.message : String(error);
        if (text !== lastError && !this.isClosed) {
          this.node.logger.warn(`cluster ${o.self}: peer '${this.peer.id}' unreachable: ${text}`);
          if (error instanceof Error && error.name === "AuthError") this.node.counts.authRejected++;
        }
        lastError = text;
        // Whatever failed (handshake, first ping), the connection must not linger on either side.
        await socket?.close().catch(() => {});
      }
      this.endpoint = undefined;
      if (this.isClosed) break;
      this.#setState("down");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
      delay = Math.min(delay * 2, o.maxReconnectDelayMs ?? 2000);
    }
  }

  /** Checks the peer now (after an inbound socket from it closed). */
  probe(): void {
    if (this.endpoint) this.#ping(this.endpoint);
    else this.#wake?.();
  }

  async close(): Promise<void> {
    this.state = "closed";
    this.#stopHeartbeat();
    this.#wake?.();
    await this.endpoint?.close().catch(() => {});
  }

  #setState(state: PeerState): void {
    if (this.state === state || this.state === "closed") return;
    const was = this.state;
    this.state = state;
    if (state === "up") this.node.options.onPeerUp?.(this.peer.id);
    if (state === "down" && was === "up") {
      this.node.options.onPeerDown?.(this.peer.id);
      if (!this.#quiet) this.node.suspect(this.peer.id);
    }
    if (state === "up") this.#quiet = false;
  }

  /** Drops the connection (used when this server starts a new incarnation); the link redials. */
  reset(): void {
    this.#quiet = true;
    const endpoint = this.endpoint;
    this.endpoint = undefined;
    this.#stopHeartbeat();
    endpoint?.close().catch(() => {});
  }

  #startHeartbeat(endpoint: RmiEndpoint): void {
    this.#stopHeartbeat();
    this.#heartbeat = setInterval(() => this.#ping(endpoint), this.node.options.heartbeatIntervalMs ?? 500);
  }

  #stopHeartbeat(): void {
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  /** One heartbeat: a lease from the peer, or an error (timeout, closed, evicted). */
  async #pingOnce(endpoint: RmiEndpoint): Promise<void> {
    const timeoutMs = this.node.options.heartbeatTimeoutMs ?? 2000;
    const m = this.node.membership;
    const sentAt = m.now();
    const answer = await endpoint.call(PING_METHOD, { incarnation: m.incarnation }, { ack: "applied", timeoutMs });
    this.node.onPingAnswer(this.peer.id, sentAt, checkPingAnswer(answer));
  }

  #ping(endpoint: RmiEndpoint): void {
    if (this.#pinging || endpoint.isClosed) return;
    this.#pinging = true;
    this.#pingOnce(endpoint).then(
      () => {
        this.#pinging = false;
      },
      (error) => {
        this.#pinging = false;
        if (endpoint !== this.endpoint || this.state === "closed") return;
        this.node.counts.heartbeatFailures++;
        this.node.logger.warn(`cluster ${this.node.self}: heartbeat to '${this.peer.id}' failed: ${error.message}`);
        this.#stopHeartbeat();
        this.#setState("down");
        endpoint.close().catch(() => {});
      },
    );
  }
}

/**
 * This server's view of the cluster and its replication connections.
 * Usually created by `SessionCluster.start`, which supplies the method table.
 */
export class ClusterNode {
  readonly self: string;
  readonly options: ClusterNodeOptions;
  readonly logger: RmiLogger;
  #peers: Map<string, PeerConfig>;
  readonly counts = { authRejected: 0, malformedFrames: 0, inboundConnections: 0, heartbeatFailures: 0, certified: 0, deathNotices: 0, refused: 0 };
  readonly membership: Membership;
  /** Incarnation shown by each inbound endpoint's pings. */
  #tags = new WeakMap<RmiEndpoint, string>();
  /** Inbound endpoints of dead incarnations, closed and draining: what they received is still applied. */
  #draining = new WeakSet<RmiEndpoint>();
  #drained = new Map<string, Promise<void>>();
  #certifying = new Set<string>();
  #handshaking = 0;
  #links = new Map<string, PeerLink>();
  #inbound = new Map<string, Set<RmiEndpoint>>();
  #drainWaiters = new Map<string, Set<() => void>>();
  #methods: MethodTable;
  #accepting: Promise<void> | undefined;
  #loops: Promise<void>[] = [];
  #closed = false;

  constructor(options: ClusterNodeOptions) {
    this.options = options;
    this.self = options.self;
    this.logger = options.logger ?? console;
    this.#peers = validatePeers(options.self, options.peers);
    secretBytes(options.secret);
    const leaseMs = options.leaseMs ?? options.heartbeatTimeoutMs ?? 2000;
    this.membership = new Membership({
      self: options.self,
      servers: [...this.#peers.keys()],
      leaseMs,
      marginMs: options.leaseMarginMs ?? Math.max(100, leaseMs / 4),
    });
    this.#methods = {
      ...options.methods,
      [PING_METHOD]: (args, ctx) => this.#answerPing(args, ctx.endpoint),
      [SUSPECT_METHOD]: (args) => {
        const { peer, incarnation } = checkIncarnationArgs(args, SUSPECT_METHOD, this.membership.servers);
        const yes = this.membership.vote(peer, incarnation);
        if (yes) this.#drain(peer, incarnation);
        return yes;
      },
      [DEAD_METHOD]: (args) => {
        const { peer, incarnation } = checkIncarnationArgs(args, DEAD_METHOD, this.membership.servers);
        if (peer === this.self) return false;
        this.counts.deathNotices++;
        this.#declareDead(peer, incarnation);
        return true;
      },
    };
  }

  /** True while this server may act: it holds a majority lease (see `membership.ts`). */
  holdsLease(): boolean {
    return this.membership.holdsLease();
  }

  /** The incarnation `endpoint` (an inbound one) showed in its pings, if any. */
  incarnationOf(endpoint: RmiEndpoint): string | undefined {
    return this.#tags.get(endpoint);
  }

  /**
   * True if messages arriving on inbound `endpoint` may be applied: its
   * sender's incarnation is known and not dead, or it died and this socket is
   * draining what it had received before.
   */
  mayApply(endpoint: RmiEndpoint): boolean {
    const incarnation = this.#tags.get(endpoint);
    if (incarnation === undefined) return false;
    return !this.membership.isDead(endpoint.name, incarnation) || this.#draining.has(endpoint);
  }

  /** @internal A link's ping was answered. */
  onPingAnswer(peer: string, sentAt: number, answer: PingAnswer): void {
    const { evicted, replaced } = this.membership.onPingAnswer(peer, sentAt, answer);
    if (evicted) {
      this.#reincarnate(peer);
      throw new Error(`peer '${peer}' says this server's incarnation was declared dead; starting anew`);
    }
    if (!answer.ok) throw new Error(`peer '${peer}' voted this server's incarnation dead; it grants no lease`);
    if (replaced !== undefined) this.#declareDead(peer, replaced);
  }

  /**
   * @internal `peer` looks down: ask for votes until its incarnation is
   * certified dead, or it is back.
   */
  suspect(peer: string): void {
    const incarnation = this.membership.known(peer);
    if (incarnation === undefined || this.#closed) return;
    const key = `${peer}/${incarnation}`;
    if (this.#certifying.has(key) || this.#drained.has(key)) return;
    this.#certifying.add(key);
    void this.#certify(peer, incarnation).finally(() => this.#certifying.delete(key));
  }

  /** Starts accepting peers and dialing every other peer. */
  start(): void {
    if (this.#accepting) return;
    this.#accepting = this.#acceptLoop();
    for (const peer of this.peers.values()) this.#dialPeer(peer);
  }

  /** The current peer list, this server included. */
  get peers(): ReadonlyMap<string, PeerConfig> {
    return this.#peers;
  }

  /**
   * Replaces the peer list (membership from DNS): new peers are dialed and
   * join the lease majority; peers that left (or moved to another address)
   * are dialed no more and are suspected (certified dead once a majority
   * agrees). Throws `RangeError` for an invalid list or one without `self`.
   */
  setPeers(peers: readonly PeerConfig[]): { added: string[]; removed: string[] } {
    const next = validatePeers(this.self, peers);
    const added: string[] = [];
    const removed: string[] = [];
    for (const [id, link] of this.#links) {
      const now = next.get(id);
      if (now !== undefined && now.host === link.peer.host && now.port === link.peer.port && now.transport === link.peer.transport) continue;
      this.#links.delete(id);
      void link.close();
      removed.push(id);
    }
    this.#peers = next;
    this.membership.addServers(next.keys());
    if (this.#accepting) {
      for (const peer of next.values()) {
        if (peer.id !== this.self && !this.#links.has(peer.id)) {
          this.#dialPeer(peer);
          added.push(peer.id);
        }
      }
    }
    for (const id of removed) if (!next.has(id)) this.suspect(id);
    return { added, removed };
  }

  #dialPeer(peer: PeerConfig): void {
    if (peer.id === this.self || this.#closed) return;
    const link = new PeerLink(peer, this);
    this.#links.set(peer.id, link);
    this.#loops.push(link.run());
  }

  /** The open, authenticated outbound endpoint to `peer`, or `undefined` when it is not up. */
  endpoint(peer: string): RmiEndpoint | undefined {
    const link = this.#links.get(peer);
    if (link?.state !== "up" || !link.endpoint || link.endpoint.isClosed || this.membership.isDead(peer)) return undefined;
    return link.endpoint;
  }

  /** True while `peer` is up (this server counts as alive to itself). */
  isAlive(peer: string): boolean {
    return peer === this.self || (this.endpoint(peer) !== undefined && !this.membership.isDead(peer));
  }

  /** Peers that are up, this server included. */
  alivePeers(): PeerConfig[] {
    return [...this.peers.values()].filter((p) => this.isAlive(p.id));
  }

  /** Resolves true once every peer is up, false after `timeoutMs`. */
  async waitForPeers(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ([...this.#links.values()].every((l) => l.state === "up")) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }

  /**
   * Resolves true once no inbound socket from `peer` is open, i.e. every
   * message it sent before it went away has been applied; false after
   * `timeoutMs`. Used before handing out the replica of a dead primary.
   */
  inboundDrained(peer: string, timeoutMs: number): Promise<boolean> {
    if ((this.#inbound.get(peer)?.size ?? 0) === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiters = this.#drainWaiters.get(peer) ?? new Set();
      this.#drainWaiters.set(peer, waiters);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        waiters.delete(wake);
        resolve(ok);
      };
      const wake = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      waiters.add(wake);
    });
  }

  stats(): ClusterNodeStats {
    const peers: Record<string, PeerState> = {};
    for (const [id, link] of this.#links) peers[id] = link.state;
    return { peers, ...this.counts, membership: this.membership.stats() };
  }

  /** RMI counters summed over all open endpoints. */
  rmiStats(): RmiStats {
    const sum = emptyRmiStats();
    const all = [...this.#links.values()].map((l) => l.endpoint).filter((e) => e !== undefined);
    for (const set of this.#inbound.values()) all.push(...set);
    for (const e of all) {
      const s = e.stats();
      for (const k of Object.keys(sum) as (keyof RmiStats)[]) sum[k] += s[k];
    }
    return sum;
  }

  /** Wraps an authenticated socket in an endpoint serving the method table. */
  makeEndpoint(socket: MessageSocket, messages: AsyncIterator<ReceivedMessage>, peer: string): RmiEndpoint {
    const endpoint = new RmiEndpoint(socket, {
      messages,
      methods: this.#methods,
      concurrent: this.options.concurrentMethods,
      codec: this.options.codec,
      logger: this.logger,
      name: peer,
    });
    endpoint.closed.then(() => {
      if (endpoint.stats().malformedFrames > 0) this.counts.malformedFrames++;
    });
    return endpoint;
  }

  /** Closes every connection and the listener. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Leaving: tell every peer this incarnation is over (it has stopped acting), so that they
    // take its sessions over at once instead of after a certification. Best effort, bounded.
    const farewell = [...this.#links.values()].map((l) => l.endpoint)
      .filter((e): e is RmiEndpoint => e !== undefined && !e.isClosed)
      .map((e) => e.call(DEAD_METHOD, { peer: this.self, incarnation: this.membership.incarnation }, { ack: "transport" }).catch(() => {}));
    await Promise.race([Promise.all(farewell), new Promise((r) => setTimeout(r, 200))]);
    // A listener's close may wait for its accepted connections (node:net does), so close those too, then wait.
    const listenerClosed = this.options.listener.close().catch(() => {});
    await Promise.all([...this.#links.values()].map((l) => l.close()));
    await Promise.all([...this.#inbound.values()].flatMap((set) => [...set].map((e) => e.close().catch(() => {}))));
    await listenerClosed;
    await Promise.allSettled([this.#accepting, ...this.#loops]);
  }

  #answerPing(args: unknown, endpoint: RmiEndpoint): PingAnswer {
    const incarnation = (args as { incarnation?: unknown } | null)?.incarnation;
    if (typeof incarnation !== "string" || incarnation.length === 0 || incarnation.length > 64) {
      throw new Error(`ping needs {incarnation}: got ${JSON.stringify(args)}`);
    }
    const peer = endpoint.name;
    const { answer, replaced } = this.membership.answerPing(peer, incarnation);
    if (answer.ok && !this.#tags.has(endpoint)) this.#tags.set(endpoint, incarnation);
    if (replaced !== undefined) this.#declareDead(peer, replaced);
    return answer;
  }

  async #certify(peer: string, incarnation: string): Promise<void> {
    const o = this.options;
    const retryMs = Math.max(50, this.membership.leaseMs / 4);
    const timeoutMs = o.heartbeatTimeoutMs ?? 2000;
    const key = `${peer}/${incarnation}`;
    while (!this.#closed && !this.#drained.has(key)) {
      // Back up with the same incarnation (and we did not vote it dead): nothing to certify.
      if (this.endpoint(peer) !== undefined && this.membership.known(peer) === incarnation) return;
      let yes = this.membership.vote(peer, incarnation) ? 1 : 0;
      if (yes === 1) this.#drain(peer, incarnation);
      const voters = [...this.peers.keys()].filter((p) => p !== this.self && p !== peer);
      const votes = await Promise.all(voters.map(async (voter) => {
        const endpoint = this.endpoint(voter);
        if (endpoint === undefined) return false;
        try {
          return await endpoint.call(SUSPECT_METHOD, { peer, incarnation }, { ack: "applied", timeoutMs }) === true;
        } catch {
          return false;
        }
      }));
      yes += votes.filter(Boolean).length;
      if (yes >= this.membership.majority && !this.#drained.has(key)) {
        this.counts.certified++;
        this.logger.warn(`cluster ${this.self}: peer '${peer}' (incarnation ${incarnation}) certified dead by ${yes} of ${this.peers.size}`);
        for (const voter of voters) {
          void this.endpoint(voter)?.call(DEAD_METHOD, { peer, incarnation }, { ack: "none" });
        }
        this.#declareDead(peer, incarnation);
        return;
      }
      await new Promise((r) => setTimeout(r, retryMs));
    }
  }

  /** Marks `peer`'s `incarnation` dead (certified or announced), drains it, then fires `onPeerDead` once. */
  #declareDead(peer: string, incarnation: string): void {
    this.membership.markDead(peer, incarnation);
    const key = `${peer}/${incarnation}`;
    if (this.#drained.has(key)) return;
    const drained = this.#drain(peer, incarnation);
    this.#drained.set(key, drained);
    void drained.then(() => {
      if (!this.#closed) this.options.onPeerDead?.(peer, incarnation);
    });
  }

  /** Closes the inbound endpoints of `peer`'s dead `incarnation` (and untagged ones); resolves when all are drained. */
  #drain(peer: string, incarnation: string): Promise<void> {
    // Only sockets that showed this incarnation can have carried anything it sent (replicas are
    // applied only from tagged sockets); a socket that has not pinged yet is left alone.
    const endpoints = [...(this.#inbound.get(peer) ?? [])].filter((e) => this.#tags.get(e) === incarnation);
    for (const e of endpoints) {
      this.#draining.add(e);
      void e.close().catch(() => {});
    }
    if (this.membership.known(peer) === incarnation) this.#links.get(peer)?.reset();
    return Promise.all(endpoints.map((e) => e.closed)).then(() => {});
  }

  /** Another server says we were declared dead: drop everything and rejoin as a new incarnation. */
  #reincarnate(by: string): void {
    const old = this.membership.incarnation;
    this.membership.reincarnate();
    this.logger.warn(
      `cluster ${this.self}: '${by}' declared incarnation ${old} dead; dropping every session and rejoining as ${this.membership.incarnation}`,
    );
    this.options.onReincarnate?.();
    for (const set of this.#inbound.values()) for (const e of set) void e.close().catch(() => {});
    for (const link of this.#links.values()) link.reset();
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const socket of this.options.listener) {
        if (this.#closed) {
          await socket.close();
          break;
        }
        this.#acceptOne(socket);
      }
    } catch (error) {
      if (!this.#closed) this.logger.warn(`cluster ${this.self}: listener failed: ${(error as Error).message}`);
    }
  }

  async #acceptOne(socket: MessageSocket): Promise<void> {
    const maxHandshakes = this.options.maxHandshakes ?? 32;
    if (this.#handshaking >= maxHandshakes) {
      this.counts.refused++;
      this.logger.warn(`cluster ${this.self}: refused connection from ${socket.remoteAddress}: ${maxHandshakes} handshakes already in progress (maxHandshakes)`);
      await socket.close().catch(() => {});
      return;
    }
    this.#handshaking++;
    const messages = socket[Symbol.asyncIterator]();
    let peer: string, keys;
    try {
      ({ peer, keys } = await authenticateWithKeys(socket, messages, {
        role: "acceptor",
        self: this.self,
        secret: this.options.secret,
        allowed: (id) => id !== this.self && this.peers.has(id),
        timeoutMs: this.options.handshakeTimeoutMs,
      }));
    } catch (error) {
      this.counts.authRejected++;
      this.logger.warn(`cluster ${this.self}: rejected connection from ${socket.remoteAddress}: ${(error as Error).message}`);
      return;
    } finally {
      this.#handshaking--;
    }
    const maxPerPeer = this.options.maxInboundPerPeer ?? 4;
    if ((this.#inbound.get(peer)?.size ?? 0) >= maxPerPeer) {
      this.counts.refused++;
      this.logger.warn(`cluster ${this.self}: refused another connection from peer '${peer}': it has ${maxPerPeer} open (maxInboundPerPeer)`);
      await socket.close().catch(() => {});
      return;
    }
    if (this.#closed) {
      await socket.close();
      return;
    }
    try {
      socket.trust?.(); // authenticated: lift the socket's limits before trust (src/sdp/socket.ts)
    } catch (error) {
      this.logger.warn(`cluster ${this.self}: connection from peer '${peer}' dropped: ${(error as Error).message}`);
      return;
    }
    this.counts.inboundConnections++;
    const sealed = new SealedSocket(socket, messages, keys, { name: peer });
    const endpoint = this.makeEndpoint(sealed, sealed[Symbol.asyncIterator](), peer);
    const set = this.#inbound.get(peer) ?? new Set();
    this.#inbound.set(peer, set);
    set.add(endpoint);
    await endpoint.closed;
    set.delete(endpoint);
    if (set.size === 0) {
      for (const wake of this.#drainWaiters.get(peer) ?? []) wake();
    }
    if (!this.#closed) this.#links.get(peer)?.probe();
  }
}

function checkPingAnswer(value: unknown): PingAnswer {
  const a = value as { ok?: unknown; incarnation?: unknown; evicted?: unknown } | null;
  if (a?.ok === true && typeof a.incarnation === "string") return { ok: true, incarnation: a.incarnation };
  if (a?.ok === false && a.evicted === true) return { ok: false, evicted: true, certified: (a as { certified?: unknown }).certified === true };
  throw new Error(`ping answer must be {ok, incarnation} or {ok: false, evicted}: got ${JSON.stringify(value)}`);
}

function checkIncarnationArgs(
  args: unknown,
  method: string,
  /** Every server that counts toward the majority (one that left the peer list still does). */
  servers: readonly string[],
): { peer: string; incarnation: string } {
  const a = args as { peer?: unknown; incarnation?: unknown } | null;
  if (typeof a?.peer !== "string" || typeof a.incarnation !== "string" || a.incarnation.length === 0 || a.incarnation.length > 64) {
    throw new Error(`${method} needs {peer, incarnation (1..64 characters)}: got ${JSON.stringify(args)?.slice(0, 200)}`);
  }
  if (!servers.includes(a.peer)) throw new Error(`${method}: '${a.peer.slice(0, 64)}' is not a server of this cluster`);
  return { peer: a.peer, incarnation: a.incarnation };
}
