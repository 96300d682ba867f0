/**
 * `ClusterNode`: this server's replication connections to its peers.
 *
 * - Every peer is dialed (one outbound socket per peer, reconnected with
 *   backoff); every peer dials us (inbound sockets from the listener). Both
 *   kinds run the auth handshake (`auth.ts`) as their first messages and only
 *   then get an `RmiEndpoint` serving the method table: nothing is read as an
 *   RMI frame, and so no replica is accepted, before authentication.
 * - Failure detection: a peer is `up` while its outbound socket is open and
 *   answers heartbeats (`ping` in `applied` mode every `heartbeatIntervalMs`,
 *   each allowed `heartbeatTimeoutMs`). A closed socket, a failed heartbeat,
 *   or a closed inbound socket (which triggers an immediate heartbeat) marks it
 *   `down` and fires `onPeerDown`.
 * - A malformed frame or failed handshake closes that socket alone.
 *
 * @module
 */

import type { MessageListener, MessageSocket, ReceivedMessage } from "../sdp/types.ts";
import type { ValueCodec } from "../rmi/codec.ts";
import { type MethodTable, RmiEndpoint } from "../rmi/endpoint.ts";
import { emptyRmiStats, type RmiLogger, type RmiStats } from "../rmi/types.ts";
import { authenticate, secretBytes } from "./auth.ts";
import { type PeerConfig, validatePeers } from "./peers.ts";

/** The RMI method every endpoint serves for heartbeats. */
export const PING_METHOD = "ping";

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
  onPeerUp?(peer: string): void;
  onPeerDown?(peer: string): void;
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
}

class PeerLink {
  state: PeerState = "connecting";
  endpoint: RmiEndpoint | undefined;
  #wake: (() => void) | undefined;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #pinging = false;

  constructor(readonly peer: PeerConfig, readonly node: ClusterNode) {}

  get isClosed(): boolean {
    return this.state === "closed";
  }

  async run(): Promise<void> {
    const o = this.node.options;
    let delay = o.reconnectDelayMs ?? 100;
    let lastError = "";
    while (!this.isClosed) {
      try {
        const socket = await o.dial(this.peer);
        if (this.isClosed) {
          await socket.close();
          break;
        }
        const messages = socket[Symbol.asyncIterator]();
        await authenticate(socket, messages, {
          role: "dialer",
          self: o.self,
          secret: o.secret,
          allowed: (id) => id === this.peer.id,
          timeoutMs: o.handshakeTimeoutMs,
        });
        const endpoint = this.node.makeEndpoint(socket, messages, this.peer.id);
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
    if (state === "down" && was === "up") this.node.options.onPeerDown?.(this.peer.id);
  }

  #startHeartbeat(endpoint: RmiEndpoint): void {
    this.#stopHeartbeat();
    this.#heartbeat = setInterval(() => this.#ping(endpoint), this.node.options.heartbeatIntervalMs ?? 500);
  }

  #stopHeartbeat(): void {
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  #ping(endpoint: RmiEndpoint): void {
    if (this.#pinging || endpoint.isClosed) return;
    this.#pinging = true;
    const timeoutMs = this.node.options.heartbeatTimeoutMs ?? 2000;
    endpoint.call(PING_METHOD, undefined, { ack: "applied", timeoutMs }).then(
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
  readonly peers: ReadonlyMap<string, PeerConfig>;
  readonly counts = { authRejected: 0, malformedFrames: 0, inboundConnections: 0, heartbeatFailures: 0 };
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
    this.peers = validatePeers(options.self, options.peers);
    secretBytes(options.secret);
    this.#methods = { ...options.methods, [PING_METHOD]: () => "pong" };
  }

  /** Starts accepting peers and dialing every other peer. */
  start(): void {
    if (this.#accepting) return;
    this.#accepting = this.#acceptLoop();
    for (const peer of this.peers.values()) {
      if (peer.id === this.self) continue;
      const link = new PeerLink(peer, this);
      this.#links.set(peer.id, link);
      this.#loops.push(link.run());
    }
  }

  /** The open, authenticated outbound endpoint to `peer`, or `undefined` when it is not up. */
  endpoint(peer: string): RmiEndpoint | undefined {
    const link = this.#links.get(peer);
    return link?.state === "up" && link.endpoint && !link.endpoint.isClosed ? link.endpoint : undefined;
  }

  /** True while `peer` is up (this server counts as alive to itself). */
  isAlive(peer: string): boolean {
    return peer === this.self || this.endpoint(peer) !== undefined;
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
    return { peers, ...this.counts };
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
    // A listener's close may wait for its accepted connections (node:net does), so close those too, then wait.
    const listenerClosed = this.options.listener.close().catch(() => {});
    await Promise.all([...this.#links.values()].map((l) => l.close()));
    await Promise.all([...this.#inbound.values()].flatMap((set) => [...set].map((e) => e.close().catch(() => {}))));
    await listenerClosed;
    await Promise.allSettled([this.#accepting, ...this.#loops]);
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
    const messages = socket[Symbol.asyncIterator]();
    let peer: string;
    try {
      peer = await authenticate(socket, messages, {
        role: "acceptor",
        self: this.self,
        secret: this.options.secret,
        allowed: (id) => id !== this.self && this.peers.has(id),
        timeoutMs: this.options.handshakeTimeoutMs,
      });
    } catch (error) {
      this.counts.authRejected++;
      this.logger.warn(`cluster ${this.self}: rejected connection from ${socket.remoteAddress}: ${(error as Error).message}`);
      return;
    }
    if (this.#closed) {
      await socket.close();
      return;
    }
    this.counts.inboundConnections++;
    const endpoint = this.makeEndpoint(socket, messages, peer);
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
