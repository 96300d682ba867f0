/**
 * The SDP engine: one state machine per connection, with no I/O.
 *
 * It takes received frames, send and READ completions, application sends and
 * releases, and timer ticks (with `now` passed in), and queues actions that
 * the socket carries out on the link (`takeActions()`). Tests drive it with
 * bytes and events alone.
 *
 * The protocol, step by step:
 *
 * 1. **Handshake.** The active side posts HELLO (mseq 0, mseq_ack 2^32-1,
 *    bufs = its posted receive buffers); the passive side answers HELLO_ACK
 *    (mseq 0, mseq_ack 0). Each body carries version, receive buffer size and
 *    count, max message size and whether the side can RDMA READ (zcopy).
 * 2. **Credits.** Every frame carries `bufs` (receive buffers the sender has
 *    posted) and `mseq_ack` (last frame it received). A side's credit toward
 *    its peer is `mseq_ack - tx_head + 1 + bufs` (tx_head = next mseq to use).
 *    Message frames (DATA with payload, SrcAvail) need 3 credits, so two stay
 *    back; RdmaRdCompl, SendSM and SrcAvailCancel need 2, so one always stays
 *    back for a credit update; a credit update (DATA without payload), DISCONN,
 *    ABORT and GROW need 1. A side sends a credit update when it has reposted at
 *    least two buffers the peer does not know of and the peer is down to two
 *    credits or fewer (it cannot send messages), or when the unadvertised
 *    buffers reach half the ring; and, on links whose send completion does not
 *    mean delivery (TCP), as soon as it owes an acknowledgement for a message
 *    frame (that acknowledgement is the sender's return).
 * 3. **BCopy.** Messages below `zcopyThreshold` (or when either side lacks
 *    zcopy) travel in DATA frames. A message that does not fit one frame is
 *    fragmented: the first frame has flags HEAD|MORE and a u32 total length,
 *    the middle ones MORE, the last none; the receiver reassembles into one
 *    buffer of exactly the total length. The return: on RC links the send
 *    completion of the last frame, on TCP the peer's mseq_ack covering it.
 * 4. **ZCopy.** A message at or above the threshold, already in the
 *    registered source arena, is advertised with SrcAvail {len, rkey, vaddr}.
 *    The receiver allocates sink space (waiting for releases if the sink is
 *    full), posts an RDMA READ, delivers the message when the READ completes
 *    and answers RdmaRdCompl {len}: that is the sender's return. While a
 *    SrcAvail is outstanding the sender posts no other message frame, so
 *    delivery order is the send order; control frames still flow, and each
 *    direction's SrcAvail is served independently, so two sides that advertise
 *    at once do not deadlock (READs need no credits; replies use the reserve).
 * 5. **The way out of a stuck transfer.** If no RdmaRdCompl arrives within
 *    `cancelTimeoutMs`, the sender posts SrcAvailCancel. A receiver that has
 *    not started the READ drops it and answers SendSM; one whose READ is in
 *    flight answers when it completes (RdmaRdCompl on success). A READ that
 *    fails is answered with SendSM too. On SendSM the sender re-sends the
 *    message by bcopy fragments from the same arena bytes (counted as a
 *    fallback). If neither answer comes within another `cancelTimeoutMs` after
 *    the cancel, the connection is closed with an error naming the stuck
 *    transfer, and every pending send rejects with it.
 * 6. **Before trust.** A side opened with `preAuth` announces small limits
 *    in its HELLO (few buffers, a small `maxMessageSize`, no zcopy) and the
 *    HELLO's `CAP_PRE_AUTH` bit. The peer keeps to them: it sends at most
 *    that much (a larger message waits in its queue, in order, until the
 *    GROW), and the side refuses more with a `ProtocolError` (a DATA HEAD
 *    above its `maxMessageSize`, a SrcAvail without zcopy). Once the
 *    application has authenticated the peer it calls `grow()` with the link's
 *    full sizes (the link has posted the new receive buffers): the new send
 *    slots are free at once, the new buffers count as posted, and a GROW
 *    (needing 1 credit, put before every other control frame) announces the
 *    new limits; no frame before it advertises more buffers than the peer
 *    knows of (`bufs` is capped at the count last announced), so the peer's
 *    check `bufs <= recvBufferCount` always holds.
 * 7. **Closing.** `close()` rejects pending sends, posts DISCONN and waits for
 *    the peer's DISCONN (or `closeTimeoutMs`), then closes the link. A side
 *    that receives DISCONN rejects its pending sends, answers DISCONN and
 *    closes the link once that frame's send completes. Messages keep being
 *    delivered while closing, and also from frames the link reports after the
 *    engine closed (its final poll): their senders may have their returns.
 *    ABORT closes at once
 *    with an error. A protocol error posts ABORT (best effort) and closes that
 *    connection with the `ProtocolError`.
 *
 * Sequence numbers are kept internally as unbounded integers and put on the
 * wire modulo 2^32. READ tokens run from 1 to `MAX_READ_TOKEN` and wrap (one
 * incoming READ is outstanding at a time, so a wrapped token is never
 * confused with a live one).
 *
 * Time: every input takes an optional `now`; when it is left out, the engine
 * reads `options.clock` only where it arms a deadline (handshake, close,
 * cancel), so the data path never reads the clock.
 *
 * @module
 */
import { RingAllocator } from "./ring_allocator.ts";
import { Fifo } from "../fifo.ts";
import {
  ABORT,
  type Body,
  CREDIT_UPDATE,
  DATA_HEAD_SIZE,
  decodeInto,
  DISCONN,
  HEADER_SIZE,
  type Hello,
  MID,
  midName,
  PROTOCOL_VERSION,
  ProtocolError,
  type RxFrame,
  rxFrame,
  SEND_SM,
  SRCAVAIL_CANCEL,
} from "./wire.ts";
import type { Frame } from "./wire.ts";
import type { SocketStats } from "./types.ts";

/**
 * The largest READ token: tokens run 1..2^29-1 and wrap, so that a link can
 * put a token and a flag bit in a 30-bit work-request id (the rdma link does).
 */
export const MAX_READ_TOKEN = 2 ** 29 - 1;

/** Reassembly buffers up to this size are kept for the next fragmented message once released. */
const SPARE_REASSEMBLY_MAX = 1 << 20;

/** What to give back when a delivered message is released. */
export type ReleaseHandle =
  | { kind: "buffer"; index: number }
  /** A reassembled message: its last fragment's receive buffer, and the buffer it was reassembled in (reused). */
  | { kind: "reassembly"; index: number; store: Uint8Array }
  | { kind: "sink"; offset: number }
  | { kind: "owned" };

/** Actions for the socket, in the order they must be carried out. */
export type EngineAction =
  /** Encode `frame` into send slot `slot` and post it. */
  | { type: "post"; slot: number; frame: Frame }
  /** RDMA READ `length` bytes at `vaddr`/`rkey` into the sink at `sinkOffset`. */
  | { type: "read"; token: number; sinkOffset: number; length: number; vaddr: bigint; rkey: number }
  /**
   * A message for the application, in order; give `release` back to
   * `engine.release()`. `owned`: the bytes are not in link memory (a
   * reassembled message), so the handle may be given back as soon as the
   * application has taken the message, before it releases it.
   */
  | { type: "deliver"; bytes: Uint8Array; release: ReleaseHandle; owned: boolean }
  /** Post receive buffer `bufferIndex` again. */
  | { type: "repost"; bufferIndex: number }
  /**
   * The peer is done with the zcopy source bytes at `sourceOffset` (RdmaRdCompl
   * or SendSM arrived): close its access to them before the space is reused
   * (links that scope remote access per transfer; others ignore it).
   */
  | { type: "withdraw"; sourceOffset: number }
  /** Send `id` has its return. */
  | { type: "resolve"; id: number }
  /** Send `id` failed. */
  | { type: "reject"; id: number; error: Error }
  /** The handshake completed. */
  | { type: "open"; peer: Hello }
  /** Close the link (after carrying out the actions before this one). `undefined` = orderly. */
  | { type: "close"; error: Error | undefined };

export type EngineState = "handshake" | "open" | "closing" | "closed";

/** Configuration of one engine; sizes are the local link's capabilities. */
export interface EngineOptions {
  role: "active" | "passive";
  recvBufferSize: number;
  recvBufferCount: number;
  sendSlots: number;
  sendSlotSize: number;
  maxMessageSize: number;
  sendCompletionMeansDelivered: boolean;
  /** The sink the peer's bytes are READ into (zcopy links); enables zcopy receive. */
  sink?: Uint8Array;
  /** Address and rkey of the source arena (zcopy links); enables zcopy send. */
  source?: { addr: bigint; rkey: number };
  /** Messages of at least this many bytes go by zcopy when both sides can. */
  zcopyThreshold: number;
  /**
   * When acknowledgements are owed (links whose send completion is not
   * delivery), send them only on `flushAcks()` rather than after every frame,
   * so the socket can acknowledge a whole batch of frames with one update.
   */
  batchAcks?: boolean;
  cancelTimeoutMs: number;
  handshakeTimeoutMs: number;
  closeTimeoutMs: number;
  /** The clock (ms) read when an input comes without `now` and a deadline is armed. @default performance.now */
  clock?: () => number;
  /** @internal The first READ token (tests of the wrap). @default 1 */
  firstReadToken?: number;
  /**
   * The sizes above are the limits before the peer is authenticated (HELLO
   * says so with `CAP_PRE_AUTH`); `grow()` raises them once. @default false
   */
  preAuth?: boolean;
}

/** What `Engine.grow` raises the limits to (the link's full sizes, already allocated and posted). */
export interface EngineGrowth {
  /** Receive buffers now posted in all (the new ones are indices old count..this - 1). */
  recvBufferCount: number;
  /** Send slots in all (the new ones are indices old count..this - 1). */
  sendSlots: number;
  maxMessageSize: number;
  sink?: Uint8Array;
  source?: { addr: bigint; rkey: number };
}

/**
 * Where an outgoing message is in its life (one field, so that no two flags can
 * disagree): queued (in the send queue, perhaps partly posted), posted (bcopy:
 * every frame posted, waiting for its ack), advertised (zcopy: SrcAvail out),
 * cancelling (zcopy: SrcAvailCancel out), read (zcopy: RdmaRdCompl received),
 * free (settled, rejected, or in the reuse pool).
 */
const OUT = { Free: 0, Queued: 1, Posted: 2, Advertised: 3, Cancelling: 4, Read: 5 } as const;
type OutState = typeof OUT[keyof typeof OUT];

interface OutMessage {
  id: number;
  state: OutState;
  bytes: Uint8Array;
  sourceOffset: number | undefined;
  mode: "bcopy" | "zcopy" | undefined;
  /** Payload bytes already put in DATA frames. */
  sent: number;
  /** mseq of the last frame of this message (bcopy), once fully posted. */
  lastMseq: number;
  deadline: number;
}

interface IncomingZcopy {
  len: number;
  rkey: number;
  vaddr: bigint;
  state: "waiting" | "reading";
  sinkOffset: number;
  token: number;
  cancelRequested: boolean;
}

/** A post action that is its own frame (`frame === this`). */
interface PostRecord extends Frame {
  type: "post";
  slot: number;
  frame: Frame;
}

/** A DATA post action that is its own frame and body. */
interface DataPostRecord extends PostRecord {
  mid: typeof MID.Data;
  more: boolean;
  total: number | undefined;
  payload: Uint8Array;
}

const CONTROL_CREDITS = 2;
const DATA_CREDITS = CONTROL_CREDITS + 1;
/** Returned by `takeActions` when there is nothing to do (callers only read it). */
const NO_ACTIONS: EngineAction[] = [];
const NO_BYTES = new Uint8Array(0);
const defaultClock = () => performance.now();

export class Engine {
  readonly options: EngineOptions;
  #state: EngineState = "handshake";
  readonly #actions: EngineAction[] = [];
  #peer: Hello | undefined;

  // Transmit side.
  #txNext = 0;
  #peerAck = -1;
  #peerBufs = 0;
  #delivered = -1;
  readonly #freeSlots: number[] = [];
  readonly #slotMseq: number[] = [];
  readonly #control = new Fifo<Body>();
  readonly #sendQueue = new Fifo<OutMessage>();
  readonly #inflight = new Fifo<OutMessage>();
  #outgoingZ: OutMessage | undefined;
  #stalled = false;
  #disconnMseq = -1;

  // Receive side.
  #rxNext = 0;
  #posted: number;
  #lastSentAck = -1;
  #lastSentBufs = 0;
  #ackOwed = false;
  #flushingAcks = false;
  /** The message being reassembled (undefined when none), the buffer under it, and bytes filled. */
  #rBuf: Uint8Array | undefined;
  #rStore: Uint8Array | undefined;
  #rFilled = 0;
  /** A released reassembly buffer, for the next fragmented message. */
  #spare: Uint8Array | undefined;
  readonly #rx: RxFrame = rxFrame();
  /** Per receive buffer, made once: its release handle and its repost action (both immutable). */
  readonly #bufferHandles: ReleaseHandle[] = [];
  readonly #repostActions: EngineAction[] = [];
  /** Per receive buffer, the last payload view delivered from it: reused for the same range (a view costs ~0.1 µs). */
  readonly #payloadViews: (Uint8Array | undefined)[] = [];
  /** Per send slot, its DATA post record (action, frame and body in one), reused for the slot's next DATA frame. */
  readonly #dataPosts: (DataPostRecord | undefined)[] = [];
  /** Per receive buffer, its deliver action for a message in the buffer itself, reused. */
  readonly #bufferDelivers: ({ type: "deliver"; bytes: Uint8Array; release: ReleaseHandle; owned: boolean } | undefined)[] = [];
  /** Resolve actions carried out through `queuedActions`/`clearActions`, for reuse. */
  readonly #resolvePool: { type: "resolve"; id: number }[] = [];
  /** Settled messages, for reuse (no object per send on the data path). */
  readonly #freeMessages: OutMessage[] = [];
  readonly #clock: () => number;
  #incomingZ: IncomingZcopy | undefined;
  #readToken: number;
  #sinkRing: RingAllocator | undefined;
  /** The receive buffer count the peer knows of (HELLO, then GROW): `bufs` never says more. */
  #announced: number;
  /** This side still has its pre-authentication limits (a `grow()` is to come). */
  #preAuth: boolean;
  /** The peer announced pre-authentication limits and has not sent its GROW yet. */
  #peerMayGrow = false;
  #peerGrew = false;
  #peerClosed = false;
  /** A protocol error closed the engine: frames reported after it are not decoded. */
  #broken = false;

  #handshakeDeadline = Infinity;
  #closeDeadline = Infinity;

  readonly stats: SocketStats = {
    bytesSent: 0,
    bytesReceived: 0,
    messagesSent: 0,
    messagesReceived: 0,
    bcopySends: 0,
    zcopySends: 0,
    creditStalls: 0,
    cancels: 0,
    zcopyFallbacks: 0,
    readFailures: 0,
    creditUpdates: 0,
  };

  constructor(options: EngineOptions) {
    this.options = { ...options }; // a copy: grow() raises its sizes
    this.#posted = options.recvBufferCount;
    this.#announced = options.recvBufferCount;
    this.#preAuth = options.preAuth === true;
    for (let i = options.sendSlots - 1; i >= 0; i--) this.#freeSlots.push(i);
    this.#sinkRing = options.sink ? new RingAllocator(options.sink.length) : undefined;
    for (let i = 0; i < options.recvBufferCount; i++) {
      this.#bufferHandles.push(Object.freeze({ kind: "buffer", index: i }));
      this.#repostActions.push(Object.freeze({ type: "repost", bufferIndex: i }));
    }
    this.#clock = options.clock ?? defaultClock;
    const first = options.firstReadToken ?? 1;
    if (!Number.isInteger(first) || first < 1 || first > MAX_READ_TOKEN) {
      throw new RangeError(`'firstReadToken' must be an integer in 1..${MAX_READ_TOKEN}: got ${first}`);
    }
    this.#readToken = first - 1;
  }

  /** `now` as given, else the clock. */
  #now(now: number | undefined): number {
    return now ?? this.#clock();
  }

  get state(): EngineState {
    return this.#state;
  }

  /** The peer's HELLO, once the handshake is done. */
  get peer(): Hello | undefined {
    return this.#peer;
  }

  /** Current credits toward the peer. */
  get credits(): number {
    return this.#peerAck - this.#txNext + 1 + this.#peerBufs;
  }

  /** This side still has its limits before trust (`preAuth` and no `grow()` yet). */
  get preAuth(): boolean {
    return this.#preAuth;
  }

  /** The peer announced limits before trust and has not raised them (GROW) yet. */
  get peerPreAuth(): boolean {
    return this.#peerMayGrow;
  }

  /**
   * Raises this side's limits from the pre-authentication ones to `g` (call
   * once, after the application authenticated the peer, with the link's
   * buffers already posted): new send slots are free, new receive buffers
   * count as posted, and GROW tells the peer (before every other control
   * frame). Throws when the engine started without `preAuth`, grew already,
   * or a size would shrink; a no-op once closing or closed.
   */
  grow(g: EngineGrowth, now?: number): void {
    if (!this.#preAuth) throw new Error("grow(): this connection has no limits before trust (opened without preAuth) or grew already");
    if (this.#state === "closing" || this.#state === "closed") return;
    if (this.#state !== "open") throw new Error("grow(): the SDP handshake is not done yet");
    const o = this.options;
    for (const [name, cur, next] of [
      ["recvBufferCount", o.recvBufferCount, g.recvBufferCount],
      ["sendSlots", o.sendSlots, g.sendSlots],
      ["maxMessageSize", o.maxMessageSize, g.maxMessageSize],
    ] as const) {
      if (!Number.isInteger(next) || next < cur) throw new RangeError(`grow(): '${name}' ${next} is below the current ${cur}`);
    }
    if (g.recvBufferCount > 0xffff) throw new RangeError(`grow(): 'recvBufferCount' ${g.recvBufferCount} exceeds 65535`);
    this.#preAuth = false;
    for (let i = o.recvBufferCount; i < g.recvBufferCount; i++) {
      this.#bufferHandles.push(Object.freeze({ kind: "buffer", index: i }));
      this.#repostActions.push(Object.freeze({ type: "repost", bufferIndex: i }));
    }
    this.#posted += g.recvBufferCount - o.recvBufferCount;
    for (let i = g.sendSlots - 1; i >= o.sendSlots; i--) this.#freeSlots.push(i);
    o.recvBufferCount = g.recvBufferCount;
    o.sendSlots = g.sendSlots;
    o.maxMessageSize = g.maxMessageSize;
    if (g.sink) {
      o.sink = g.sink;
      this.#sinkRing = new RingAllocator(g.sink.length);
    }
    if (g.source) o.source = g.source;
    this.#control.unshift({ mid: MID.Grow, hello: this.#hello() });
    this.#pump(now);
  }

  /** Receive buffers currently posted. */
  get posted(): number {
    return this.#posted;
  }

  /** Sends accepted but not yet resolved or rejected. */
  get pendingSends(): number {
    return this.#sendQueue.length + this.#inflight.length;
  }

  /** An acknowledgement is owed and waits for `flushAcks()` (with `batchAcks`). */
  get ackOwed(): boolean {
    return this.#ackOwed && this.#state !== "closed" && !this.options.sendCompletionMeansDelivered &&
      this.options.batchAcks === true;
  }

  /** Sends the acknowledgement owed, if any (with `batchAcks`). */
  flushAcks(now?: number): void {
    if (this.#state === "closed" || !this.#ackOwed) return;
    this.#flushingAcks = true;
    this.#pump(now);
    this.#flushingAcks = false;
  }

  /**
   * @internal The queue of actions itself, for a driver that carries them out
   * in place (by index, actions queued meanwhile included) and then calls
   * `clearActions()`: no array per batch on the data path (the socket does).
   */
  get queuedActions(): readonly EngineAction[] {
    return this.#actions;
  }

  /** @internal Empties the queue `queuedActions` returned (its actions all carried out). */
  clearActions(): void {
    // pop() keeps the array's store (length = 0 gives it up under V8, the next push allocates
    // again). The resolve records, carried out, are reused for the next returns.
    const a = this.#actions, pool = this.#resolvePool;
    while (a.length > 0) {
      const x = a.pop()!;
      if (x.type === "resolve" && pool.length < 64) pool.push(x);
    }
  }

  /** Returns and clears the queued actions. */
  takeActions(): EngineAction[] {
    const a = this.#actions;
    if (a.length === 0) return NO_ACTIONS;
    const taken = a.slice(); // the queue itself stays (see queuedActions); its records escape (none reused)
    while (a.length > 0) a.pop();
    return taken;
  }

  /** The earliest time `tick` has work to do, or `Infinity`. */
  nextDeadline(): number {
    if (this.#state === "closed") return Infinity;
    let d = Math.min(this.#handshakeDeadline, this.#closeDeadline);
    if (this.#outgoingZ) d = Math.min(d, this.#outgoingZ.deadline);
    return d;
  }

  /** Begins the connection: the active side posts HELLO. */
  start(now?: number): void {
    this.#handshakeDeadline = this.#now(now) + this.options.handshakeTimeoutMs;
    if (this.options.role === "active") this.#postHello(MID.Hello);
  }

  // ---------------------------------------------------------------- inputs

  /**
   * Queues a message. `bytes` stays referenced until the message is fully
   * posted; when `borrowed` (the caller may reuse it once `send` returns) and
   * it cannot be posted at once, the engine copies it aside. `sourceOffset`
   * says the bytes are in the registered source arena at that offset, which
   * makes the message eligible for zcopy.
   */
  send(id: number, bytes: Uint8Array, sourceOffset: number | undefined, borrowed: boolean, now?: number): void {
    if (this.#state === "closing" || this.#state === "closed") {
      this.#actions.push({ type: "reject", id, error: new Error("send failed: the socket is closed") });
      return;
    }
    // Above the peer's limit before trust, a message waits for its GROW (the peer checks it again then).
    const err = this.#sizeError(bytes.length, this.options.maxMessageSize, this.#preAuth ? "the limit before trust, " : "") ??
      (this.#peer && !this.#peerMayGrow ? this.#sizeError(bytes.length, this.#peer.maxMessageSize, "the peer's ") : undefined);
    if (err) {
      this.#actions.push({ type: "reject", id, error: err });
      return;
    }
    let m = this.#freeMessages.pop();
    if (m) {
      m.id = id;
      m.state = OUT.Queued;
      m.bytes = bytes;
      m.sourceOffset = sourceOffset;
      m.mode = undefined;
      m.sent = 0;
      m.lastMseq = -1;
      m.deadline = Infinity;
    } else {
      m = {
        id,
        state: OUT.Queued,
        bytes,
        sourceOffset,
        mode: undefined,
        sent: 0,
        lastMseq: -1,
        deadline: Infinity,
      };
    }
    this.#sendQueue.push(m);
    this.#pump(now);
    if (borrowed && m.state === OUT.Queued) m.bytes = m.bytes.slice();
  }

  /** A frame arrived in receive buffer `bufferIndex`. */
  frame(view: Uint8Array, bufferIndex: number, now?: number): void {
    if (this.#state === "closed") return this.#lateFrame(view, bufferIndex);
    if (this.#posted <= 0) {
      return this.#fail(new ProtocolError(`frame arrived with no receive buffer posted: the peer ignored its credits`));
    }
    this.#posted--;
    const f = this.#rx;
    try {
      decodeInto(view, this.#rxNext, f);
    } catch (e) {
      return this.#fail(e as Error);
    }
    this.#rxNext++;
    try {
      this.#receive(f, view, bufferIndex, now);
    } catch (e) {
      if (e instanceof ProtocolError) return this.#fail(e);
      throw e;
    }
    this.#pump(now);
  }

  /**
   * A frame the link reports after the engine closed (the rdma link's final
   * poll after a close timeout, say). Its sender may have had its send
   * completion, its return, so a message in it is still delivered; nothing is
   * posted any more. After a protocol error, or any frame that does not
   * decode, later frames are ignored.
   */
  #lateFrame(view: Uint8Array, index: number): void {
    if (this.#broken) return;
    const f = this.#rx;
    try {
      decodeInto(view, this.#rxNext, f);
      this.#rxNext++;
      const message = f.mid === MID.Data && !(f.payloadStart === view.length && f.total < 0);
      if (message && !this.#peerClosed) this.#receiveData(f.more, f.total, view, f.payloadStart, index);
    } catch {
      this.#broken = true;
    }
  }

  /** The send posted from `slot` completed. */
  sendDone(slot: number, now?: number): void {
    if (this.#state === "closed") return;
    const mseq = this.#slotMseq[slot];
    this.#freeSlots.push(slot);
    const rec = this.#dataPosts[slot];
    if (rec) rec.payload = NO_BYTES; // nothing of the caller's is kept
    if (this.options.sendCompletionMeansDelivered && mseq > this.#delivered) this.#delivered = mseq;
    if (mseq === this.#disconnMseq && this.#peerClosed) return this.#finish(undefined);
    this.#resolveReady();
    this.#pump(now);
  }

  /** The send posted from `slot` failed: the connection is lost. */
  sendFailed(_slot: number, error: Error): void {
    if (this.#state === "closed") return;
    const e = new Error(`frame send failed: ${error.message}`, { cause: error });
    this.#finish(e, `connection lost: ${e.message}`);
  }

  /** The RDMA READ with `token` completed. */
  readDone(token: number, now?: number): void {
    const z = this.#incomingZ;
    if (this.#state === "closed" || !z || z.token !== token || z.state !== "reading") return;
    this.#incomingZ = undefined;
    this.#deliver(this.options.sink!.subarray(z.sinkOffset, z.sinkOffset + z.len), {
      kind: "sink",
      offset: z.sinkOffset,
    });
    this.#control.push({ mid: MID.RdmaRdCompl, len: z.len });
    this.#pump(now);
  }

  /** The RDMA READ with `token` failed: ask the sender to fall back to bcopy. */
  readFailed(token: number, _error: Error, now?: number): void {
    const z = this.#incomingZ;
    if (this.#state === "closed" || !z || z.token !== token || z.state !== "reading") return;
    this.#incomingZ = undefined;
    this.#sinkRing!.free(z.sinkOffset);
    this.stats.readFailures++;
    this.#control.push(SEND_SM);
    this.#pump(now);
  }

  /** The application released a delivered message. */
  release(handle: ReleaseHandle, now?: number): void {
    if (this.#state === "closed") return;
    if (handle.kind === "buffer") this.#repost(handle.index);
    else if (handle.kind === "reassembly") {
      this.#repost(handle.index);
      const store = handle.store;
      if (store.length <= SPARE_REASSEMBLY_MAX && (!this.#spare || store.length > this.#spare.length)) this.#spare = store;
    } else if (handle.kind === "sink") {
      this.#sinkRing!.free(handle.offset);
      this.#startRead();
    }
    this.#pump(now);
  }

  /** Timers: handshake, close and cancel deadlines. */
  tick(now: number): void {
    if (this.#state === "closed") return;
    if (now >= this.#handshakeDeadline) {
      return this.#finish(
        new Error(`handshake timed out after ${this.options.handshakeTimeoutMs} ms: no HELLO from the peer`),
      );
    }
    if (now >= this.#closeDeadline) return this.#finish(undefined);
    const z = this.#outgoingZ;
    if (z && now >= z.deadline) {
      if (z.state === OUT.Advertised) {
        z.state = OUT.Cancelling;
        z.deadline = now + this.options.cancelTimeoutMs;
        this.stats.cancels++;
        this.#control.push(SRCAVAIL_CANCEL);
      } else {
        return this.#finish(
          new Error(
            `zcopy transfer of ${z.bytes.length} bytes stuck: neither RdmaRdCompl nor SendSM within ${this.options.cancelTimeoutMs} ms after SrcAvailCancel`,
          ),
        );
      }
    }
    this.#pump(now);
  }

  /** Local close: pending sends reject, DISCONN goes out, the link closes on the peer's DISCONN. */
  close(now?: number): void {
    if (this.#state === "closing" || this.#state === "closed") return;
    if (this.#state === "handshake") return this.#finish(undefined, "the socket was closed");
    this.#rejectAll("the socket was closed");
    this.#state = "closing";
    this.#closeDeadline = this.#now(now) + this.options.closeTimeoutMs;
    this.#control.push(DISCONN);
    this.#pump(now);
  }

  /** The link closed by itself (peer gone, transport error). */
  linkClosed(error: Error | undefined): void {
    if (this.#state === "closed") return;
    if (this.#peerClosed) return this.#finish(undefined);
    this.#finish(error ?? new Error("the link closed"), error ? `connection lost: ${error.message}` : "connection lost");
  }

  // ---------------------------------------------------------------- receive

  #receive(b: RxFrame, view: Uint8Array, index: number, now: number | undefined): void {
    const f = b;
    if (this.#state === "handshake") {
      const expected = this.options.role === "passive" ? MID.Hello : MID.HelloAck;
      if (b.mid !== expected) {
        throw new ProtocolError(`expected ${midName(expected)} during the handshake, got ${midName(b.mid)}`);
      }
      const hello = b.hello!;
      this.#peer = hello;
      this.#peerMayGrow = hello.preAuth === true;
      this.#takeHeader(f);
      this.#repost(index);
      if (this.options.role === "passive") this.#postHello(MID.HelloAck);
      this.#state = "open";
      this.#handshakeDeadline = Infinity;
      this.#actions.push({ type: "open", peer: hello });
      // Sends queued before the handshake may now be too large for the peer (or wait for its GROW).
      if (!this.#peerMayGrow) this.#rejectTooLarge(hello.maxMessageSize);
      return;
    }
    if (b.mid === MID.Grow) {
      this.#receiveGrow(b, index);
      return;
    }
    this.#takeHeader(f);
    const closingLocally = this.#state === "closing" && !this.#peerClosed;
    switch (b.mid) {
      case MID.Hello:
      case MID.HelloAck:
        throw new ProtocolError(`${midName(b.mid)} received after the handshake`);
      case MID.Grow:
        return; // handled before the header
      case MID.Data: {
        if (b.payloadStart === view.length && b.total < 0) {
          this.#repost(index); // credit update
          return;
        }
        if (this.#peerClosed) throw new ProtocolError(`DATA received after the peer's DISCONN`);
        this.#ackOwed = true;
        // Delivered also while closing locally: the peer may already have its return.
        this.#receiveData(b.more, b.total, view, b.payloadStart, index);
        return;
      }
      case MID.SrcAvail: {
        if (this.#peerClosed) throw new ProtocolError(`SrcAvail received after the peer's DISCONN`);
        if (!this.options.sink) {
          throw new ProtocolError(
            `SrcAvail received but this side announced no zcopy${this.#preAuth ? " (none before trust)" : ""}`,
          );
        }
        if (this.#incomingZ) throw new ProtocolError(`SrcAvail received while another SrcAvail is outstanding`);
        if (this.#rBuf) throw new ProtocolError(`SrcAvail received in the middle of a fragmented message`);
        if (b.len > this.options.maxMessageSize) {
          throw new ProtocolError(`SrcAvail of ${b.len} bytes exceeds maxMessageSize ${this.options.maxMessageSize}`);
        }
        this.#repost(index);
        if (closingLocally) {
          this.#control.push(SEND_SM); // refuse politely; the peer is about to see our DISCONN
          return;
        }
        this.#incomingZ = {
          len: b.len,
          rkey: b.rkey,
          vaddr: b.vaddr,
          state: "waiting",
          sinkOffset: -1,
          token: 0,
          cancelRequested: false,
        };
        this.#startRead();
        return;
      }
      case MID.SrcAvailCancel: {
        this.#repost(index);
        const z = this.#incomingZ;
        if (!z) return; // crossed with our RdmaRdCompl or SendSM: that answer stands
        if (z.state === "waiting") {
          this.#incomingZ = undefined;
          this.#control.push(SEND_SM);
        } else {
          z.cancelRequested = true; // answered when the READ completes
        }
        return;
      }
      case MID.SendSM: {
        this.#repost(index);
        const m = this.#outgoingZ;
        if (!m && this.#state === "closing") return; // answer to a transfer abandoned by close()
        if (!m) throw new ProtocolError(`SendSM received with no SrcAvail outstanding`);
        this.#outgoingZ = undefined;
        this.#actions.push({ type: "withdraw", sourceOffset: m.sourceOffset! });
        this.#inflight.remove(m);
        m.mode = "bcopy";
        m.deadline = Infinity;
        m.sent = 0;
        this.stats.zcopyFallbacks++;
        if (this.#state === "open") {
          m.state = OUT.Queued;
          this.#sendQueue.unshift(m);
        } else {
          m.state = OUT.Free;
        }
        return;
      }
      case MID.RdmaRdCompl: {
        this.#repost(index);
        const m = this.#outgoingZ;
        if (!m && this.#state === "closing") return; // answer to a transfer abandoned by close()
        if (!m) throw new ProtocolError(`RdmaRdCompl received with no SrcAvail outstanding`);
        if (b.len !== m.bytes.length) {
          throw new ProtocolError(`RdmaRdCompl for ${b.len} bytes: the outstanding SrcAvail is ${m.bytes.length}`);
        }
        this.#outgoingZ = undefined;
        this.#actions.push({ type: "withdraw", sourceOffset: m.sourceOffset! });
        m.state = OUT.Read;
        this.#resolveReady();
        return;
      }
      case MID.Disconn: {
        this.#repost(index);
        if (this.#peerClosed) throw new ProtocolError(`second DISCONN received`);
        this.#peerClosed = true;
        if (this.#state === "closing") return this.#finish(undefined);
        this.#rejectAll("the peer closed the connection");
        this.#state = "closing";
        this.#closeDeadline = this.#now(now) + this.options.closeTimeoutMs;
        this.#control.push(DISCONN);
        return;
      }
      case MID.Abort:
        this.#repost(index);
        return this.#finish(new Error("the peer aborted the connection (ABORT)"));
    }
  }

  /** Rejects the queued sends larger than `max` (the peer's limit). */
  #rejectTooLarge(max: number): void {
    for (const m of this.#sendQueue.drain()) {
      const err = this.#sizeError(m.bytes.length, max, "the peer's ");
      if (err) {
        m.state = OUT.Free;
        this.#actions.push({ type: "reject", id: m.id, error: err });
      } else {
        this.#sendQueue.push(m);
      }
    }
  }

  /** The peer's GROW: its limits after trust (checked against its HELLO), then the header with them. */
  #receiveGrow(b: RxFrame, index: number): void {
    const peer = this.#peer!;
    const g = b.hello!;
    if (!this.#peerMayGrow) {
      throw new ProtocolError(this.#peerGrew ? `second GROW received` : `GROW received but the peer's HELLO announced no limits before trust`);
    }
    if (g.recvBufferSize !== peer.recvBufferSize) {
      throw new ProtocolError(`GROW recvBufferSize ${g.recvBufferSize} differs from the HELLO's ${peer.recvBufferSize}`);
    }
    if (g.recvBufferCount < peer.recvBufferCount) {
      throw new ProtocolError(`GROW recvBufferCount ${g.recvBufferCount} is below the HELLO's ${peer.recvBufferCount}`);
    }
    if (g.maxMessageSize < peer.maxMessageSize) {
      throw new ProtocolError(`GROW maxMessageSize ${g.maxMessageSize} is below the HELLO's ${peer.maxMessageSize}`);
    }
    this.#peer = g;
    this.#peerMayGrow = false;
    this.#peerGrew = true;
    this.#takeHeader(b);
    this.#repost(index);
    // Messages that waited for the peer's larger limit go now, or are refused if still too large.
    this.#rejectTooLarge(g.maxMessageSize);
  }

  #receiveData(more: boolean, total: number, view: Uint8Array, start: number, index: number): void {
    if (this.#incomingZ) throw new ProtocolError(`DATA received while a SrcAvail is outstanding`);
    const n = view.length - start;
    const r = this.#rBuf;
    if (r) {
      if (total >= 0) throw new ProtocolError(`DATA HEAD received while a fragmented message is incomplete`);
      if (this.#rFilled + n > r.length) {
        throw new ProtocolError(
          `DATA fragments exceed the declared total ${r.length}: ${this.#rFilled + n} bytes`,
        );
      }
      r.set(view.subarray(start), this.#rFilled);
      this.#rFilled += n;
      if (!more) {
        if (this.#rFilled !== r.length) {
          throw new ProtocolError(`fragmented message ended at ${this.#rFilled} bytes of a declared ${r.length}`);
        }
        const store = this.#rStore!;
        this.#rBuf = this.#rStore = undefined;
        // The last fragment's buffer stays with the message until the application releases
        // it, so messages waiting to be read are bounded by the receive ring; the buffer it
        // was reassembled in is kept for the next fragmented message.
        this.#deliver(r, { kind: "reassembly", index, store });
      } else {
        this.#repost(index);
      }
      return;
    }
    if (total >= 0) {
      if (total > this.options.maxMessageSize) {
        throw new ProtocolError(
          `DATA HEAD total ${total} exceeds maxMessageSize ${this.options.maxMessageSize}${
            this.#preAuth ? " (this side's limit before trust)" : ""
          }`,
        );
      }
      let store = this.#spare;
      if (store && store.length >= total) this.#spare = undefined;
      else store = new Uint8Array(total);
      const buf = store.length === total ? store : store.subarray(0, total);
      buf.set(view.subarray(start), 0);
      this.#rBuf = buf;
      this.#rStore = store;
      this.#rFilled = n;
      this.#repost(index);
      return;
    }
    if (more) throw new ProtocolError(`DATA fragment with MORE but no HEAD outside a fragmented message`);
    // The buffer was released before it could carry this frame, so its last view is free to reuse.
    let p = this.#payloadViews[index];
    // (A link's buffer `index` is always the same memory, so offset and length identify the range.)
    if (p === undefined || p.length !== n || p.byteOffset !== view.byteOffset + start) {
      p = view.subarray(start);
      if (index < this.options.recvBufferCount) this.#payloadViews[index] = p;
    }
    if (index >= this.options.recvBufferCount) return this.#deliver(p, { kind: "buffer", index });
    // The buffer's deliver action is reused: the previous one was carried out before the
    // buffer could be released, reposted and filled again.
    let d = this.#bufferDelivers[index];
    if (d) d.bytes = p;
    else d = this.#bufferDelivers[index] = { type: "deliver", bytes: p, release: this.#bufferHandles[index], owned: false };
    this.stats.messagesReceived++;
    this.stats.bytesReceived += n;
    this.#actions.push(d);
  }

  /** Takes mseq_ack and bufs from a valid frame. */
  #takeHeader(f: RxFrame): void {
    const last = this.#txNext - 1;
    const behind = (last - f.mseqAck) >>> 0;
    const ack = last - behind;
    if (ack < this.#peerAck) {
      throw new ProtocolError(
        `mseq_ack ${f.mseqAck} acknowledges a frame never sent or goes backwards (last sent ${last >>> 0}, last ack ${
          this.#peerAck >>> 0
        })`,
      );
    }
    const peerCount = this.#peer?.recvBufferCount ?? 0xffff;
    if (f.bufs > peerCount) {
      throw new ProtocolError(`bufs ${f.bufs} exceeds the peer's announced recvBufferCount ${peerCount}`);
    }
    this.#peerAck = ack;
    this.#peerBufs = f.bufs;
    if (ack > this.#delivered) {
      this.#delivered = ack;
      this.#resolveReady();
    }
  }

  #deliver(bytes: Uint8Array, release: ReleaseHandle, owned = false): void {
    this.stats.messagesReceived++;
    this.stats.bytesReceived += bytes.length;
    this.#actions.push({ type: "deliver", bytes, release, owned });
  }

  #repost(index: number): void {
    this.#posted++;
    this.#actions.push(this.#repostActions[index] ?? { type: "repost", bufferIndex: index });
  }

  #startRead(): void {
    const z = this.#incomingZ;
    if (!z || z.state !== "waiting" || this.#state !== "open") return;
    const off = this.#sinkRing!.alloc(z.len);
    if (off < 0) return; // wait for the application to release sink space
    z.state = "reading";
    z.sinkOffset = off;
    z.token = this.#readToken = this.#readToken >= MAX_READ_TOKEN ? 1 : this.#readToken + 1;
    this.#actions.push({ type: "read", token: z.token, sinkOffset: off, length: z.len, vaddr: z.vaddr, rkey: z.rkey });
  }

  // ---------------------------------------------------------------- transmit

  #sizeError(len: number, max: number, whose = ""): Error | undefined {
    if (len === 0) return new RangeError("message of 0 bytes: a message must carry at least 1 byte");
    if (len > max) return new RangeError(`message of ${len} bytes exceeds ${whose}maxMessageSize ${max}`);
    return undefined;
  }

  #postHello(mid: typeof MID.Hello | typeof MID.HelloAck): void {
    this.#post({ mid, hello: this.#hello() });
  }

  /** This side's limits as HELLO and GROW announce them. */
  #hello(): Hello {
    const o = this.options;
    const h: Hello = {
      version: PROTOCOL_VERSION,
      zcopyRead: o.sink !== undefined,
      recvBufferSize: o.recvBufferSize,
      recvBufferCount: o.recvBufferCount,
      maxMessageSize: o.maxMessageSize,
    };
    if (this.#preAuth) h.preAuth = true;
    return h;
  }

  #post(body: Body): number {
    if (body.mid === MID.Grow) this.#announced = body.hello.recvBufferCount;
    const slot = this.#freeSlots.pop()!;
    const mseq = this.#txNext++;
    this.#slotMseq[slot] = mseq;
    this.#lastSentAck = this.#rxNext - 1;
    // Buffers posted by grow() are advertised only from the GROW on.
    const bufs = this.#posted <= this.#announced ? this.#posted : this.#announced;
    this.#lastSentBufs = bufs;
    this.#ackOwed = false;
    // One record is the action and its frame (`frame` points back at it).
    const a: PostRecord = { type: "post", slot, frame: undefined!, bufs, mseq, mseqAck: this.#rxNext - 1, body };
    a.frame = a;
    this.#actions.push(a);
    return mseq;
  }

  /** Posts a DATA frame: one record is the action, its frame and its body. */
  #postData(more: boolean, total: number | undefined, payload: Uint8Array): number {
    const slot = this.#freeSlots.pop()!;
    const mseq = this.#txNext++;
    this.#slotMseq[slot] = mseq;
    this.#lastSentAck = this.#rxNext - 1;
    const bufs = this.#posted <= this.#announced ? this.#posted : this.#announced;
    this.#lastSentBufs = bufs;
    this.#ackOwed = false;
    // The slot's record is reused: the socket encodes it before the slot can be posted again.
    let a = this.#dataPosts[slot];
    if (a) {
      a.bufs = bufs;
      a.mseq = mseq;
      a.mseqAck = this.#rxNext - 1;
      a.more = more;
      a.total = total;
      a.payload = payload;
    } else {
      a = {
        type: "post",
        slot,
        frame: undefined!,
        bufs,
        mseq,
        mseqAck: this.#rxNext - 1,
        body: undefined!,
        mid: MID.Data,
        more,
        total,
        payload,
      };
      a.frame = a;
      a.body = a;
      this.#dataPosts[slot] = a;
    }
    this.#actions.push(a);
    return mseq;
  }

  #updateNeeded(): boolean {
    if (this.#state === "handshake" || this.#peerClosed) return false;
    if (this.#ackOwed && !this.options.sendCompletionMeansDelivered && (!this.options.batchAcks || this.#flushingAcks)) {
      return true;
    }
    const estimate = this.#lastSentBufs - (this.#rxNext - 1 - this.#lastSentAck);
    const gap = this.#posted - estimate;
    return (gap >= 2 && estimate <= CONTROL_CREDITS) || gap >= Math.max(2, this.options.recvBufferCount >> 1);
  }

  #pump(now: number | undefined): void {
    while (this.#state === "open" || this.#state === "closing") {
      if (this.#freeSlots.length === 0) return;
      const credits = this.credits;
      if (this.#control.length > 0) {
        const c = this.#control.peek()!;
        // GROW is a credit update with new limits: like one, it needs a single credit.
        const need = c.mid === MID.Disconn || c.mid === MID.Abort || c.mid === MID.Grow ? 1 : CONTROL_CREDITS;
        if (credits < need) break;
        this.#control.shift();
        const mseq = this.#post(c);
        if (c.mid === MID.Disconn) {
          this.#disconnMseq = mseq;
          this.#control.drain();
        }
        continue;
      }
      if (this.#state !== "open" || this.#outgoingZ || this.#sendQueue.length === 0) break;
      // Larger than the peer allows before trust: waits (in order) for the peer's GROW.
      const head = this.#sendQueue.peek()!;
      if (this.#peerMayGrow && head.sent === 0 && head.bytes.length > this.#peer!.maxMessageSize) break;
      if (credits < DATA_CREDITS) {
        if (!this.#stalled) {
          this.#stalled = true;
          this.stats.creditStalls++;
        }
        break;
      }
      this.#stalled = false;
      this.#postMessageFrame(head, now);
    }
    if (this.#freeSlots.length > 0 && this.credits >= 1 && this.#updateNeeded()) {
      this.stats.creditUpdates++;
      this.#post(CREDIT_UPDATE);
    }
  }

  #postMessageFrame(m: OutMessage, now: number | undefined): void {
    const peer = this.#peer!;
    const len = m.bytes.length;
    if (m.mode === undefined) {
      const zcopy = this.options.source !== undefined && peer.zcopyRead && m.sourceOffset !== undefined &&
        len >= this.options.zcopyThreshold;
      m.mode = zcopy ? "zcopy" : "bcopy";
    }
    if (m.mode === "zcopy") {
      const src = this.options.source!;
      this.#post({ mid: MID.SrcAvail, len, rkey: src.rkey, vaddr: src.addr + BigInt(m.sourceOffset!) });
      this.#sendQueue.shift();
      m.state = OUT.Advertised;
      m.deadline = this.#now(now) + this.options.cancelTimeoutMs;
      this.#outgoingZ = m;
      this.#inflight.push(m);
      return;
    }
    const maxPayload = Math.min(this.options.sendSlotSize, peer.recvBufferSize) - HEADER_SIZE;
    let mseq: number;
    if (m.sent === 0 && len <= maxPayload) {
      m.sent = len;
      mseq = this.#postData(false, undefined, m.bytes);
    } else if (m.sent === 0) {
      const n = maxPayload - DATA_HEAD_SIZE;
      m.sent = n;
      mseq = this.#postData(true, len, m.bytes.subarray(0, n));
    } else {
      const n = Math.min(maxPayload, len - m.sent);
      const from = m.sent;
      m.sent += n;
      mseq = this.#postData(m.sent < len, undefined, m.bytes.subarray(from, from + n));
    }
    if (m.sent === len) {
      m.lastMseq = mseq;
      m.state = OUT.Posted;
      this.#sendQueue.shift();
      this.#inflight.push(m);
    }
  }

  #resolveReady(): void {
    while (this.#inflight.length > 0) {
      const m = this.#inflight.peek()!;
      const ready = m.mode === "zcopy" ? m.state === OUT.Read : m.lastMseq <= this.#delivered;
      if (!ready) return;
      this.#inflight.shift();
      this.stats.messagesSent++;
      this.stats.bytesSent += m.bytes.length;
      if (m.mode === "zcopy") this.stats.zcopySends++;
      else this.stats.bcopySends++;
      const r = this.#resolvePool.pop();
      if (r) {
        r.id = m.id;
        this.#actions.push(r);
      } else this.#actions.push({ type: "resolve", id: m.id });
      m.state = OUT.Free;
      m.bytes = NO_BYTES; // nothing of the caller's is kept
      if (this.#freeMessages.length < 64) this.#freeMessages.push(m);
    }
  }

  #rejectAll(reason: string, cause?: Error): void {
    const all = [...this.#inflight.drain(), ...this.#sendQueue.drain()];
    this.#outgoingZ = undefined;
    for (const m of all) {
      m.state = OUT.Free;
      this.#actions.push({
        type: "reject",
        id: m.id,
        error: new Error(`send failed: ${reason}`, cause ? { cause } : undefined),
      });
    }
  }

  #fail(error: Error): void {
    if (this.#state === "closed") return;
    this.#broken = true;
    if (this.#freeSlots.length > 0 && this.#state !== "handshake" && this.credits >= 1) this.#post(ABORT);
    this.#finish(error);
  }

  #finish(error: Error | undefined, reason?: string): void {
    if (this.#state === "closed") return;
    this.#rejectAll(reason ?? (error ? `connection closed: ${error.message}` : "the connection closed"), error);
    this.#state = "closed";
    this.#handshakeDeadline = Infinity;
    this.#closeDeadline = Infinity;
    this.#actions.push({ type: "close", error });
  }
}
