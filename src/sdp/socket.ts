/**
 * The MessageSocket implementation: drives one `Engine` with one `Link`.
 *
 * Every link event becomes one engine input; the engine's actions are then
 * carried out in order (encode a frame into a send slot and post it, post a
 * READ, repost a buffer, deliver a message, settle a send, close the link).
 * Progress is driven by the link's completions alone; the only timer is the
 * engine's next deadline (handshake, cancel, close). It exists only while
 * such work is pending (an idle open socket has none) and is cleared on
 * close, so it never keeps an idle process alive; while it exists it is
 * ref'd, because an awaited send or close depends on it.
 *
 * Memory: `send(bytes)` copies once: into the registered source arena when
 * the message goes by zcopy (waiting, in order, for arena space), otherwise
 * straight into send slots (a bcopy send that must wait for credits is copied
 * aside first, so the caller may reuse its buffer as soon as `send` returns).
 * `reserve(len)` hands out a view of the source arena itself, so a message can
 * be serialized straight into registered memory and sent with no copy.
 *
 * Received messages are views of link memory (a receive buffer, or the sink
 * for zcopy) until `release()`: that memory is the peer's credit. An
 * application that holds received messages while it waits for more must keep
 * fewer than `recvBufferCount - 2` of them (two credits are the control
 * reserve), or `copy()` and `release()` them; otherwise the peer runs out of
 * credits and both wait. A held zcopy message keeps its sink space; the next
 * zcopy transfer that does not fit waits, then is cancelled after
 * `cancelTimeoutMs` and re-sent by bcopy. Messages reassembled from fragments
 * live in a buffer of their own and keep their last receive buffer until released.
 *
 * Before trust: on a link opened with `preAuth` (the cluster's listener and
 * dialer set it), the socket starts with the link's small footprint: few
 * buffers, a small `maxMessageSize` for what it receives and sends, bcopy
 * only. The application calls `trust()` once it has authenticated the peer:
 * the link allocates (registers) the rest and posts the new buffers, and the
 * engine announces the new limits to the peer (GROW, docs/PROTOCOL.md §4).
 * A peer's message above its limit before trust waits in our queue until its
 * GROW; our own above ours is refused at once.
 *
 * Closing never loses a received message (the contract is in `types.ts`): a
 * local `close()` keeps what is unread and what still arrives before the
 * peer's DISCONN, and the iterator ends only after the link's `closed` event,
 * which comes after the link's last frame (for rdma: after the final poll of
 * the completion queue) and before its memory is freed. At that event every
 * message that still holds link memory, read or unread, is copied out.
 *
 * @module
 */
import { Engine, type EngineAction, type ReleaseHandle } from "./engine.ts";
import type { Link, LinkEvents } from "./links/link.ts";
import { RingAllocator } from "./ring_allocator.ts";
import { Fifo } from "../fifo.ts";
import type { MessageSocket, ReceivedMessage, SocketStats, TransportKind } from "./types.ts";
import { encodeFrame, type Hello, MID } from "./wire.ts";

/** Per-socket protocol options (every transport). */
export interface SocketOptions {
  /** Messages of at least this many bytes go by zcopy (SrcAvail → RDMA READ) where the link can. @default 262144 (bench/README.md: where zcopy overtakes bcopy) */
  zcopyThreshold?: number;
  /** How long a SrcAvail may wait for RdmaRdCompl before SrcAvailCancel, and the cancel for its answer. @default 10000 */
  cancelTimeoutMs?: number;
  /** How long to wait for the peer's HELLO / HELLO_ACK. @default 10000 */
  handshakeTimeoutMs?: number;
  /** How long `close()` waits for the peer's DISCONN before closing the link anyway. @default 2000 */
  closeTimeoutMs?: number;
}

export const SOCKET_DEFAULTS = {
  zcopyThreshold: 262144,
  cancelTimeoutMs: 10000,
  handshakeTimeoutMs: 10000,
  closeTimeoutMs: 2000,
} as const;

/** Space in the source arena, from `socket.reserve(len)`. */
export interface Reservation {
  /** Writable view of the reserved space (registered memory on zcopy links). */
  readonly bytes: Uint8Array;
  /** Sends the first `length` bytes (default all); resolves on the return, like `send`. */
  commit(length?: number): Promise<void>;
  /** Gives the space back without sending. */
  cancel(): void;
}

type Waiter =
  | { kind: "send"; id: number; bytes: Uint8Array }
  | { kind: "commit"; id: number; bytes: Uint8Array; offset: number }
  | { kind: "reserve"; length: number; resolve: (r: Reservation) => void; reject: (e: Error) => void };

interface PendingSend {
  id: number;
  resolve: () => void;
  reject: (e: Error) => void;
  arenaOffset: number | undefined;
}

/**
 * Pending sends by id: a table indexed by the id's low bits (ids are
 * consecutive, so the live ones rarely collide; a collision doubles the
 * table), instead of a Map entry per send.
 */
class PendingTable {
  #recs: (PendingSend | undefined)[] = new Array(16).fill(undefined);
  #mask = 15;

  get(id: number): PendingSend | undefined {
    const r = this.#recs[(id >>> 0) & this.#mask];
    return r !== undefined && r.id === id ? r : undefined;
  }

  /** Adds `rec` under `rec.id` (not present yet). */
  add(rec: PendingSend): void {
    for (;;) {
      const i = (rec.id >>> 0) & this.#mask;
      if (this.#recs[i] === undefined) {
        this.#recs[i] = rec;
        return;
      }
      this.#grow();
    }
  }

  delete(id: number): void {
    const i = (id >>> 0) & this.#mask;
    if (this.#recs[i]?.id === id) this.#recs[i] = undefined;
  }

  /** Doubles the table until every live record has a place of its own. */
  #grow(): void {
    const old = this.#recs;
    for (let size = old.length * 2;; size *= 2) {
      const recs: (PendingSend | undefined)[] = new Array(size).fill(undefined);
      const mask = size - 1;
      let ok = true;
      for (const r of old) {
        if (r === undefined) continue;
        const i = (r.id >>> 0) & mask;
        if (recs[i] !== undefined) {
          ok = false;
          break;
        }
        recs[i] = r;
      }
      if (ok) {
        this.#recs = recs;
        this.#mask = mask;
        return;
      }
    }
  }
}

const noop = (): void => {};

function now(): number {
  return performance.now();
}

class Message implements ReceivedMessage {
  bytes: Uint8Array;
  handle: ReleaseHandle | undefined;
  /** Index in the socket's held messages, -1 when not held. */
  heldAt = -1;
  /** The bytes are not in link memory: the handle goes back once the application takes the message. */
  readonly owned: boolean;
  readonly #socket: SdpSocket;
  constructor(socket: SdpSocket, bytes: Uint8Array, handle: ReleaseHandle, owned: boolean) {
    this.#socket = socket;
    this.bytes = bytes;
    this.owned = owned;
    this.handle = handle.kind === "owned" ? undefined : handle;
  }
  copy(): Uint8Array {
    return this.bytes.slice();
  }
  release(): void {
    const h = this.handle;
    if (!h) return;
    this.handle = undefined;
    this.#socket._release(h, this);
  }
  /** Called when the application takes the message from the socket. */
  taken(): this {
    if (this.owned) this.release();
    return this;
  }
  /**
   * Makes the message own its bytes, before the link's memory goes away: bytes
   * in a receive buffer or the sink are copied (a reassembled message already
   * lives in memory of its own, which the closed engine no longer reuses).
   */
  detach(): void {
    const h = this.handle;
    if (!h) return;
    if (!this.owned && (h.kind === "buffer" || h.kind === "sink")) this.bytes = this.bytes.slice();
    this.handle = undefined;
  }
}

/**
 * How far a socket is in closing (one field, so that no two flags can
 * disagree): open; closing (`close()` called, engine and link still up);
 * link closed (the link's `closed` event came, the engine is closing in the
 * same turn); engine closed (its `close` action came, the link's `closed`
 * event has not); ended (both: link memory copied out, `closed` resolved).
 */
const LIFE = { Open: 0, Closing: 1, LinkClosed: 2, EngineClosed: 3, Ended: 4 } as const;
type Life = typeof LIFE[keyof typeof LIFE];

/** A connected SDP socket over any link. Create with `SdpSocket.open`, or `connect`/`listen` in `mod.ts`. */
export class SdpSocket implements MessageSocket {
  readonly transport: TransportKind;
  readonly remoteAddress: string;
  readonly closed: Promise<Error | undefined>;
  readonly #link: Link;
  readonly #engine: Engine;
  readonly #zcopyThreshold: number;
  #maxMessageSize: number;
  #arena: RingAllocator | undefined;
  readonly #pending = new PendingTable();
  /** Settled records, for reuse (no record per send on the data path). */
  readonly #freePending: PendingSend[] = [];
  /** What the executor below took from the promise it ran for (no closure per send). */
  #newResolve: (() => void) | undefined;
  #newReject: ((e: Error) => void) | undefined;
  readonly #executor = (resolve: () => void, reject: (e: Error) => void): void => {
    this.#newResolve = resolve;
    this.#newReject = reject;
  };
  readonly #addReader = (r: (r: IteratorResult<ReceivedMessage>) => void): void => void this.#readers.push(r);
  readonly #waiting = new Fifo<Waiter>();
  #nextId = 0;
  readonly #inbox = new Fifo<Message>();
  /** Delivered messages still holding link memory (read or not): copied out when the link closes. */
  /** (An array with each message's index in it, `heldAt`: no hash table churn per message.) */
  readonly #held: Message[] = [];
  readonly #readers = new Fifo<(r: IteratorResult<ReceivedMessage>) => void>();
  #life: Life = LIFE.Open;
  #finalError: Error | undefined;
  #resolveClosed!: (e: Error | undefined) => void;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #open!: { resolve: (h: Hello) => void; reject: (e: Error) => void };
  readonly #ready: Promise<Hello>;
  #draining = false;
  #ackQueued = false;
  #ackBlocked = false;

  private constructor(link: Link, role: "active" | "passive", options: SocketOptions) {
    const caps = link.capabilities;
    const zcopyThreshold = options.zcopyThreshold ?? SOCKET_DEFAULTS.zcopyThreshold;
    if (!Number.isInteger(zcopyThreshold) || zcopyThreshold < 1) {
      throw new RangeError(`'zcopyThreshold' must be a positive integer: got ${zcopyThreshold}`);
    }
    this.transport = link.transport;
    this.remoteAddress = link.remoteAddress;
    this.#link = link;
    this.#zcopyThreshold = zcopyThreshold;
    this.#maxMessageSize = caps.maxMessageSize;
    const zcopy = caps.zcopy && link.source !== undefined && link.sink !== undefined;
    this.#arena = zcopy ? new RingAllocator(link.source!.bytes.length) : undefined;
    this.#engine = new Engine({
      role,
      recvBufferSize: caps.recvBufferSize,
      recvBufferCount: caps.recvBufferCount,
      sendSlots: caps.sendSlots,
      sendSlotSize: caps.sendSlotSize,
      maxMessageSize: caps.maxMessageSize,
      sendCompletionMeansDelivered: caps.sendCompletionMeansDelivered,
      batchAcks: !caps.sendCompletionMeansDelivered,
      sink: zcopy ? link.sink!.bytes : undefined,
      source: zcopy ? { addr: link.source!.addr, rkey: link.source!.rkey } : undefined,
      zcopyThreshold,
      cancelTimeoutMs: options.cancelTimeoutMs ?? SOCKET_DEFAULTS.cancelTimeoutMs,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? SOCKET_DEFAULTS.handshakeTimeoutMs,
      closeTimeoutMs: options.closeTimeoutMs ?? SOCKET_DEFAULTS.closeTimeoutMs,
      clock: now, // read only where a deadline is armed: data-path inputs pass no time
      preAuth: link.preAuth === true && link.grow !== undefined,
    });
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    this.#ready = new Promise((resolve, reject) => (this.#open = { resolve, reject }));
    this.#ready.catch(() => {});
  }

  /**
   * Starts the SDP handshake on a connected link and resolves once it is done
   * (`role` "active" on the connecting side, "passive" on the accepting side).
   * Rejects, with the link closed, if the handshake fails.
   */
  static async open(link: Link, role: "active" | "passive", options: SocketOptions = {}): Promise<SdpSocket> {
    let s: SdpSocket;
    try {
      s = new SdpSocket(link, role, options);
    } catch (e) {
      link.close(e as Error);
      throw e;
    }
    link.start(s.#events());
    s.#engine.start(now());
    s.#drain();
    await s.#ready;
    return s;
  }

  /** The peer's HELLO (its sizes and capabilities). */
  get peer(): Hello | undefined {
    return this.#engine.peer;
  }

  /** The socket still has its limits before trust (opened with `preAuth`, `trust()` not called yet). */
  get preAuth(): boolean {
    return this.#engine.preAuth;
  }

  /** Current credits toward the peer (frames it has room for). */
  get credits(): number {
    return this.#engine.credits;
  }

  /**
   * The peer is authenticated: lift the limits before trust. The link
   * allocates (on rdma: registers) the full receive ring, send slots and zcopy
   * arenas and posts the new buffers; the engine announces the new limits to
   * the peer (GROW) and raises its own `maxMessageSize`. A no-op on a socket
   * opened without `preAuth`, after a first `trust()`, or once closing.
   * Throws if the link cannot allocate (the socket is then closed with that
   * error).
   */
  trust(): void {
    if (!this.#engine.preAuth || this.#life !== LIFE.Open) return;
    const link = this.#link;
    let caps;
    try {
      caps = link.grow!();
    } catch (e) {
      const err = new Error(`trust(): allocating the connection's full buffers failed: ${(e as Error).message}`, { cause: e });
      link.close(err);
      throw err;
    }
    const zcopy = caps.zcopy && link.source !== undefined && link.sink !== undefined;
    if (zcopy) this.#arena = new RingAllocator(link.source!.bytes.length);
    this.#maxMessageSize = caps.maxMessageSize;
    this.#input(() =>
      this.#engine.grow({
        recvBufferCount: caps.recvBufferCount,
        sendSlots: caps.sendSlots,
        maxMessageSize: caps.maxMessageSize,
        sink: zcopy ? link.sink!.bytes : undefined,
        source: zcopy ? { addr: link.source!.addr, rkey: link.source!.rkey } : undefined,
      })
    );
  }

  /** The threshold at and above which messages go by zcopy (when both sides can). */
  get zcopyThreshold(): number {
    return this.#zcopyThreshold;
  }

  #events(): LinkEvents {
    return {
      // The data-path events call the engine directly: no closure per event.
      frame: (view, index) => {
        this.#ackBlocked = false;
        this.#engine.frame(view, index);
        this.#drain();
      },
      sendDone: (slot) => {
        this.#ackBlocked = false;
        this.#engine.sendDone(slot);
        this.#drain();
      },
      sendFailed: (slot, err) => this.#input(() => this.#engine.sendFailed(slot, err)),
      readDone: (token) => {
        this.#ackBlocked = false;
        this.#engine.readDone(token);
        this.#drain();
      },
      readFailed: (token, err) => this.#input(() => this.#engine.readFailed(token, err)),
      closed: (err) => {
        const engineDone = this.#life === LIFE.EngineClosed || this.#life === LIFE.Ended;
        if (!engineDone) this.#life = LIFE.LinkClosed;
        this.#input(() => this.#engine.linkClosed(err)); // the engine's close action settles the socket then
        if (engineDone) this.#settleClosed();
      },
    };
  }

  #input(fn: () => void): void {
    this.#ackBlocked = false;
    fn();
    this.#drain();
  }

  send(bytes: Uint8Array): Promise<void> {
    if (this.#life !== LIFE.Open) {
      return Promise.reject(new Error("send failed: the socket is closed"));
    }
    if (bytes.length === 0) return Promise.reject(new RangeError("message of 0 bytes: a message must carry at least 1 byte"));
    if (bytes.length > this.#maxMessageSize) {
      const before = this.#engine.preAuth ? " (the limit before trust(): the peer is not authenticated yet)" : "";
      return Promise.reject(
        new RangeError(`message of ${bytes.length} bytes exceeds maxMessageSize ${this.#maxMessageSize}${before}`),
      );
    }
    const id = ++this.#nextId;
    const p = this.#newPending(id, undefined);
    if (this.#waiting.length > 0 || !this.#admit(id, bytes, true)) {
      this.#waiting.push({ kind: "send", id, bytes: bytes.slice() });
    }
    this.#drain();
    return p;
  }

  /**
   * Reserves `length` bytes of the registered source arena (waiting, in order,
   * for space), for serializing a message straight into registered memory:
   *
   * ```ts
   * const r = await socket.reserve(1024);
   * const n = new TextEncoder().encodeInto("hello", r.bytes).written;
   * await r.commit(n);
   * ```
   *
   * On links without zcopy the space is an ordinary buffer.
   */
  reserve(length: number): Promise<Reservation> {
    if (this.#life !== LIFE.Open) return Promise.reject(new Error("reserve failed: the socket is closed"));
    if (!Number.isInteger(length) || length < 1 || length > this.#maxMessageSize) {
      return Promise.reject(
        new RangeError(`reserve of ${length} bytes: must be an integer in 1..maxMessageSize ${this.#maxMessageSize}`),
      );
    }
    if (!this.#arena) return Promise.resolve(this.#reservation(new Uint8Array(length), undefined));
    return new Promise((resolve, reject) => {
      this.#waiting.push({ kind: "reserve", length, resolve, reject });
      this.#admitWaiting();
    });
  }

  #reservation(bytes: Uint8Array, offset: number | undefined): Reservation {
    let used = false;
    const take = (): boolean => {
      if (used) return false;
      used = true;
      return true;
    };
    return {
      bytes,
      commit: (length = bytes.length) => {
        if (!take()) return Promise.reject(new Error("reservation already committed or cancelled"));
        if (!Number.isInteger(length) || length < 1 || length > bytes.length) {
          if (offset !== undefined) this.#freeArena(offset);
          return Promise.reject(new RangeError(`commit of ${length} bytes: must be in 1..${bytes.length}`));
        }
        if (this.#life !== LIFE.Open) {
          if (offset !== undefined) this.#freeArena(offset);
          return Promise.reject(new Error("send failed: the socket is closed"));
        }
        const id = ++this.#nextId;
        const p = this.#newPending(id, offset);
        const view = bytes.subarray(0, length);
        if (offset === undefined) {
          if (this.#waiting.length > 0) this.#waiting.push({ kind: "send", id, bytes: view });
          else this.#engine.send(id, view, undefined, false);
        } else if (this.#waiting.length > 0) this.#waiting.push({ kind: "commit", id, bytes: view, offset });
        else this.#engine.send(id, view, offset, false);
        this.#drain();
        return p;
      },
      cancel: () => {
        if (!take()) return;
        if (offset !== undefined) this.#freeArena(offset);
      },
    };
  }

  /** The promise of send `id`, its resolvers kept in a (reused) record under `id`. */
  #newPending(id: number, arenaOffset: number | undefined): Promise<void> {
    const p = new Promise<void>(this.#executor);
    const resolve = this.#newResolve!, reject = this.#newReject!;
    this.#newResolve = this.#newReject = undefined;
    let rec = this.#freePending.pop();
    if (rec) {
      rec.id = id;
      rec.resolve = resolve;
      rec.reject = reject;
      rec.arenaOffset = arenaOffset;
    } else rec = { id, resolve, reject, arenaOffset };
    this.#pending.add(rec);
    return p;
  }

  /** Gives a settled send's record back for reuse (the caller took what it needs). */
  #recycle(p: PendingSend): void {
    p.id = -1;
    p.resolve = p.reject = noop;
    p.arenaOffset = undefined;
    if (this.#freePending.length < 64) this.#freePending.push(p);
  }

  #freeArena(offset: number): void {
    if (this.#life === LIFE.LinkClosed || this.#life === LIFE.Ended) return;
    this.#arena!.free(offset);
    this.#admitWaiting();
    this.#drain();
  }

  /** Hands a message to the engine now if it can be; false if it must wait for arena space. */
  #admit(id: number, bytes: Uint8Array, borrowed: boolean): boolean {
    if (this.#arena && bytes.length >= this.#zcopyThreshold) {
      const off = this.#arena.alloc(bytes.length);
      if (off < 0) return false;
      const view = this.#link.source!.bytes.subarray(off, off + bytes.length);
      view.set(bytes);
      this.#pending.get(id)!.arenaOffset = off;
      this.#engine.send(id, view, off, false);
      return true;
    }
    this.#engine.send(id, bytes, undefined, borrowed);
    return true;
  }

  #admitWaiting(): void {
    while (this.#waiting.length > 0 && this.#life !== LIFE.EngineClosed && this.#life !== LIFE.Ended) {
      const w = this.#waiting.peek()!;
      if (w.kind === "send") {
        if (!this.#admit(w.id, w.bytes, false)) return;
      } else if (w.kind === "commit") {
        this.#engine.send(w.id, w.bytes, w.offset, false);
      } else {
        const off = this.#arena!.alloc(w.length);
        if (off < 0) return;
        w.resolve(this.#reservation(this.#link.source!.bytes.subarray(off, off + w.length), off));
      }
      this.#waiting.shift();
    }
  }

  /** Takes `m` out of the held messages (swap with the last one). */
  #unhold(m: Message): void {
    const i = m.heldAt;
    if (i < 0) return;
    m.heldAt = -1;
    const held = this.#held;
    const last = held.pop()!;
    if (last !== m) {
      held[i] = last;
      last.heldAt = i;
    }
  }

  /** @internal called by a received message's `release()`. */
  _release(handle: ReleaseHandle, m: Message): void {
    this.#unhold(m);
    if (this.#life === LIFE.EngineClosed || this.#life === LIFE.Ended) return;
    this.#engine.release(handle);
    this.#drain();
  }

  #drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    let done = false;
    try {
      // The engine's queue is carried out in place, actions queued meanwhile included, then
      // emptied: no array per batch.
      const engine = this.#engine;
      const actions = engine.queuedActions;
      while (actions.length > 0) {
        for (let i = 0; i < actions.length; i++) this.#carryOut(actions[i]);
        engine.clearActions();
        this.#admitWaiting();
      }
      done = true;
    } finally {
      // An action that threw: the rest of its batch is dropped, never carried out twice.
      if (!done) this.#engine.clearActions();
      this.#draining = false;
    }
    if (this.#engine.ackOwed && !this.#ackQueued && !this.#ackBlocked) {
      // Acknowledge everything that arrived in this turn with one frame. If it
      // cannot go now (no credit or slot), the next event retries it.
      this.#ackQueued = true;
      queueMicrotask(() => {
        this.#ackQueued = false;
        this.#engine.flushAcks();
        this.#ackBlocked = this.#engine.ackOwed;
        this.#drain();
      });
    }
    this.#schedule();
  }

  #carryOut(a: EngineAction): void {
    switch (a.type) {
      case "post": {
        const body = a.frame.body;
        if (body.mid === MID.SrcAvail && this.#link.advertise) {
          // Per-transfer remote access: the SrcAvail carries a key to exactly its bytes.
          try {
            body.rkey = this.#link.advertise(Number(body.vaddr - this.#link.source!.addr), body.len);
          } catch (e) {
            this.#link.close(new Error(`opening ${body.len} source bytes to the peer for a zcopy transfer failed: ${(e as Error).message}`, { cause: e }));
            return;
          }
        }
        const len = encodeFrame(this.#link.sendSlot(a.slot), a.frame, body);
        this.#link.postSend(a.slot, len);
        return;
      }
      case "read":
        this.#link.postRead(a.token, a.sinkOffset, a.length, a.vaddr, a.rkey);
        return;
      case "withdraw":
        // Before the resolve or the bcopy re-send that follow it: the space is not reused before this.
        if (this.#life !== LIFE.LinkClosed && this.#life !== LIFE.Ended) this.#link.withdraw?.(a.sourceOffset);
        return;
      case "repost":
        this.#link.repost(a.bufferIndex);
        return;
      case "deliver": {
        // Delivered even after close(): the peer may already have its return for it (the
        // iterator hands out every message received before it ends; see types.ts).
        const m = new Message(this, a.bytes, a.release, a.owned);
        if (m.handle) {
          m.heldAt = this.#held.length;
          this.#held.push(m);
        }
        const reader = this.#readers.shift();
        if (reader) reader({ value: m.taken(), done: false });
        else this.#inbox.push(m);
        return;
      }
      case "resolve":
      case "reject": {
        const p = this.#pending.get(a.id);
        if (!p) return;
        this.#pending.delete(a.id);
        const { resolve, reject, arenaOffset } = p;
        this.#recycle(p);
        if (arenaOffset !== undefined && this.#life <= LIFE.Closing) this.#arena!.free(arenaOffset);
        if (a.type === "resolve") resolve();
        else reject(a.error);
        return;
      }
      case "open":
        this.#open.resolve(a.peer);
        return;
      case "close": {
        const linkDone = this.#life === LIFE.LinkClosed;
        this.#life = LIFE.EngineClosed;
        this.#finalError = a.error;
        this.#open.reject(a.error ?? new Error("the connection closed during the handshake"));
        for (const w of this.#waiting.drain()) {
          const err = new Error(`send failed: ${a.error ? `connection closed: ${a.error.message}` : "the socket is closed"}`);
          if (w.kind === "reserve") w.reject(err);
          else {
            const p = this.#pending.get(w.id);
            if (!p) continue;
            this.#pending.delete(w.id);
            const reject = p.reject;
            this.#recycle(p);
            reject(err);
          }
        }
        this.#link.close(a.error); // a link may emit its closed event in here: that settles the socket
        if (linkDone) this.#settleClosed();
        return;
      }
    }
  }

  /**
   * The engine and the link are both closed. The link's `closed` event comes
   * after its last frame (the rdma link's final poll) and while its memory is
   * still valid: every message still holding link memory, read or unread, is
   * copied out now, then the iterator ends once the inbox is empty.
   */
  #settleClosed(): void {
    if (this.#life !== LIFE.Ended) {
      this.#life = LIFE.Ended;
      const held = this.#held;
      while (held.length > 0) {
        const m = held.pop()!;
        m.heldAt = -1;
        m.detach();
      }
      for (const r of this.#readers.drain()) r({ value: undefined, done: true });
    }
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.#resolveClosed(this.#finalError);
  }

  #schedule(): void {
    const at = this.#life === LIFE.EngineClosed || this.#life === LIFE.Ended ? Infinity : this.#engine.nextDeadline();
    if (at === this.#timerAt) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = at;
    if (at === Infinity) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.#input(() => this.#engine.tick(now()));
    }, Math.max(0, Math.ceil(at - now())));
  }

  [Symbol.asyncIterator](): AsyncIterator<ReceivedMessage> {
    return {
      next: () => {
        const m = this.#inbox.shift();
        if (m) return Promise.resolve({ value: m.taken(), done: false });
        if (this.#life === LIFE.Ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise(this.#addReader);
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }

  /**
   * Closes the socket: pending sends reject, DISCONN is exchanged, the link is
   * released. Messages already received, and those that arrive until the peer
   * answers, are still handed out by the iterator (copied out of link memory if
   * need be) before it ends. Idempotent.
   */
  close(): Promise<void> {
    if (this.#life === LIFE.Open) {
      this.#life = LIFE.Closing;
      this.#input(() => this.#engine.close(now()));
    }
    return this.closed.then(() => {});
  }

  stats(): SocketStats {
    const remoteAccess = this.#arena ? this.#link.remoteAccess : undefined;
    const s: SocketStats = { ...this.#engine.stats, preAuth: this.#engine.preAuth };
    if (remoteAccess) s.remoteAccess = remoteAccess;
    if (this.#link.memoryBytes !== undefined) s.memoryBytes = this.#link.memoryBytes;
    return s;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
