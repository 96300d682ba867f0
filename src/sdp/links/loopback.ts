/**
 * The loopback transport: two links in one process, joined by a deterministic
 * scheduler, with simulated registered memory and fault injection.
 *
 * It models an RC queue pair: a posted frame is copied into the peer's oldest
 * posted receive buffer, then the sender gets `sendDone` (so a send completion
 * means delivery, as on RC); an RDMA READ copies from the peer's source arena
 * into the local sink after checking the rkey and bounds (a mismatch fails the
 * READ with "remote access error", as a real HCA would). Frames stay in order
 * per direction, send completions in posting order per side, READ completions
 * in posting order per side; across these channels the scheduler runs events
 * in FIFO order, or in a seeded random order (`reorderSeed`) that interleaves
 * the channels differently while respecting each channel's order.
 *
 * Faults (`LoopbackFaults`): drop a completion (it never arrives), delay an
 * event, fail a READ with a status, disconnect at any moment (both sides see
 * `closed`), or decide per event with `intercept`.
 *
 * The data path allocates little: channels are fixed records (no string
 * keys), scheduled events are pooled records (no closure per event), the
 * `LoopbackEvent` a fault hook sees is built only when a hook is set, and
 * the clock is read only when an event is delayed. Each receive buffer and
 * send slot holds `recvBufferSize` bytes plus a frame header, so a message
 * of exactly `recvBufferSize` bytes (64 KiB by default) travels in one frame.
 *
 * Before trust (`preAuth`), a side has the small footprint and no source or
 * sink (its `memoryBytes` says so); `grow()` allocates the rest.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import { AcceptQueue } from "../../accept_queue.ts";
import { Fifo } from "../../fifo.ts";
import {
  carve,
  growBuffers,
  type Link,
  type LinkCapabilities,
  type LinkConnectOptions,
  type LinkEvents,
  type LinkListener,
  type LinkListenOptions,
  linkCapabilities,
  type LinkSizes,
  type PreAuthSizes,
  type RegisteredRegion,
  resolvePreAuth,
  resolveSizes,
} from "./link.ts";
import { type SocketOptions, SdpSocket } from "../socket.ts";
import { HEADER_SIZE } from "../wire.ts";

/** One scheduled event, as `intercept` sees it. */
export interface LoopbackEvent {
  /** The side whose handler receives the event (0 = first link / connecting side, 1 = second). */
  side: 0 | 1;
  kind: "frame" | "sendDone" | "readDone";
  /** Frame length, or READ length. */
  length: number;
  /** Frame: first byte (message id); otherwise undefined. */
  mid: number | undefined;
}

/** What to do with an event. */
export type LoopbackVerdict = "deliver" | "drop" | "hold" | { delayMs: number } | { fail: string };

/** Fault injection and scheduling control for one loopback pair. */
export class LoopbackFaults {
  #rng: (() => number) | undefined;
  #intercept: ((e: LoopbackEvent) => LoopbackVerdict | undefined) | undefined;
  readonly #once: Array<{ side: 0 | 1 | undefined; kind: LoopbackEvent["kind"]; verdict: LoopbackVerdict }> = [];
  /** @internal */ _disconnect: ((error: Error) => void) | undefined;

  constructor(reorderSeed?: number) {
    if (reorderSeed !== undefined) this.reorder(reorderSeed);
  }

  /** Interleave channels in a seeded random order (each channel keeps its own order). */
  reorder(seed: number): void {
    let s = seed >>> 0 || 1;
    this.#rng = () => {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      return s / 0x100000000;
    };
  }

  /** Decide every event with `fn` (return undefined to fall through to the one-shot faults). */
  intercept(fn: ((e: LoopbackEvent) => LoopbackVerdict | undefined) | undefined): void {
    this.#intercept = fn;
  }

  /** The next completion of `kind` for `side` (any side if omitted) never arrives. */
  dropNext(kind: "sendDone" | "readDone", side?: 0 | 1): void {
    this.#once.push({ side, kind, verdict: "drop" });
  }

  /** The next event of `kind` for `side` is delayed by `ms` (and its channel behind it). */
  delayNext(kind: LoopbackEvent["kind"], ms: number, side?: 0 | 1): void {
    this.#once.push({ side, kind, verdict: { delayMs: ms } });
  }

  /** The next RDMA READ posted by `side` fails with `status`. */
  failNextRead(status = "remote access error", side?: 0 | 1): void {
    this.#once.push({ side, kind: "readDone", verdict: { fail: status } });
  }

  /** Lets every event held by a "hold" verdict run (in its channel's order). */
  releaseHeld(): void {
    this._release?.();
  }

  /** @internal */ _release: (() => void) | undefined;

  /** Disconnects the pair now: both sides see `closed` with this error. */
  disconnect(error: Error = new Error("loopback disconnected")): void {
    this._disconnect?.(error);
  }

  /** @internal Whether any event can get another verdict than "deliver" (a hook or a one-shot fault is set). */
  _active(): boolean {
    return this.#intercept !== undefined || this.#once.length > 0;
  }

  /** @internal Whether channels are interleaved at random. */
  _reordering(): boolean {
    return this.#rng !== undefined;
  }

  /** @internal */
  _verdict(e: LoopbackEvent): LoopbackVerdict {
    const v = this.#intercept?.(e);
    if (v !== undefined) return v;
    const i = this.#once.findIndex((o) => o.kind === e.kind && (o.side === undefined || o.side === e.side));
    if (i >= 0) return this.#once.splice(i, 1)[0].verdict;
    return "deliver";
  }

  /** @internal */
  _pick(n: number): number {
    return this.#rng ? Math.floor(this.#rng() * n) : 0;
  }
}

const OP_FRAME = 0, OP_SEND_DONE = 1, OP_READ = 2;
const KINDS: LoopbackEvent["kind"][] = ["frame", "sendDone", "readDone"];

/** One scheduled event: a pooled record, run by `LoopbackLink._run`. */
interface Scheduled {
  op: number;
  /** The link that posted the operation (frames: the sender). */
  link: LoopbackLink;
  /** The side whose handler receives the event. */
  side: 0 | 1;
  slot: number;
  length: number;
  mid: number | undefined;
  token: number;
  sinkOffset: number;
  remoteAddr: bigint;
  rkey: number;
  notBefore: number;
  verdict: LoopbackVerdict | undefined;
}

/** One channel: events that keep their order among themselves. */
interface Channel {
  q: Fifo<Scheduled>;
}

/** Runs the events of one pair, channel by channel. */
class Scheduler {
  /** Channels in the order of their first use (the order a FIFO run visits them). */
  readonly #order: Channel[] = [];
  /** Channel by `op * 2 + side of the posting link`. */
  readonly #byKey: (Channel | undefined)[] = [undefined, undefined, undefined, undefined, undefined, undefined];
  readonly #pool: Scheduled[] = [];
  /** Ready heads and their queues (scratch of `#runReady`; at most one per channel). */
  readonly #heads: (Scheduled | undefined)[] = [undefined, undefined, undefined, undefined, undefined, undefined];
  readonly #queues: (Fifo<Scheduled> | undefined)[] = [undefined, undefined, undefined, undefined, undefined, undefined];
  readonly faults: LoopbackFaults;
  #armed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #runBound = () => {
    this.#armed = false;
    this.#runReady();
  };
  stopped = false;

  constructor(faults: LoopbackFaults) {
    this.faults = faults;
    faults._release = () => {
      for (const c of this.#order) {
        const h = c.q.peek();
        if (h?.notBefore === Infinity) h.notBefore = 0;
      }
      this.#arm();
    };
  }

  /** A record to fill and `add` (from the pool). */
  take(op: number, link: LoopbackLink, side: 0 | 1, length: number): Scheduled {
    const e = this.#pool.pop();
    if (e) {
      e.op = op;
      e.link = link;
      e.side = side;
      e.length = length;
      e.mid = undefined;
      e.notBefore = 0;
      e.verdict = undefined;
      return e;
    }
    return { op, link, side, slot: 0, length, mid: undefined, token: 0, sinkOffset: 0, remoteAddr: 0n, rkey: 0, notBefore: 0, verdict: undefined };
  }

  /** Queues `e` on the channel of its kind and posting side `from`. */
  add(from: 0 | 1, e: Scheduled): void {
    if (this.stopped) return;
    const key = e.op * 2 + from;
    let c = this.#byKey[key];
    if (!c) {
      c = { q: new Fifo() };
      this.#byKey[key] = c;
      this.#order.push(c);
    }
    c.q.push(e);
    this.#arm();
  }

  stop(): void {
    this.stopped = true;
    for (const c of this.#order) c.q.drain();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }

  #arm(): void {
    if (this.#armed || this.stopped) return;
    this.#armed = true;
    setImmediate(this.#runBound);
  }

  #event(h: Scheduled): LoopbackEvent {
    return { side: h.side, kind: KINDS[h.op], length: h.length, mid: h.mid };
  }

  #runReady(): void {
    const faults = this.faults;
    const heads = this.#heads, queues = this.#queues;
    for (let budget = 100000; budget > 0 && !this.stopped; budget--) {
      let t = -1; // the clock, read only if an event is delayed
      let ready = 0;
      // With no hook, no one-shot fault and no reordering, the first ready channel runs and
      // the others need not be looked at; otherwise every head gets its verdict, in channel order.
      const active = faults._active();
      const pickFirst = !active && !faults._reordering();
      let wakeAt = Infinity;
      const order = this.#order;
      for (let ci = 0; ci < order.length; ci++) {
        const q = order[ci].q;
        const h = q.peek();
        if (h === undefined) continue;
        if (h.verdict === undefined) {
          h.verdict = active ? faults._verdict(this.#event(h)) : "deliver";
          if (h.verdict === "hold") {
            h.notBefore = Infinity;
            h.verdict = "deliver";
          } else if (typeof h.verdict === "object" && "delayMs" in h.verdict) {
            if (t < 0) t = performance.now();
            h.notBefore = t + h.verdict.delayMs;
            h.verdict = "deliver";
          }
        }
        if (h.notBefore !== 0) {
          if (h.notBefore === Infinity) continue;
          if (t < 0) t = performance.now();
          if (h.notBefore > t) {
            wakeAt = Math.min(wakeAt, h.notBefore);
            continue;
          }
        }
        heads[ready] = h;
        queues[ready++] = q;
        if (pickFirst) break;
      }
      if (ready === 0) {
        if (wakeAt !== Infinity && this.#timer === undefined) {
          this.#timer = setTimeout(() => {
            this.#timer = undefined;
            this.#runReady();
          }, Math.ceil(wakeAt - (t < 0 ? performance.now() : t)));
        }
        return;
      }
      const i = faults._pick(ready);
      queues[i]!.shift();
      const h = heads[i]!;
      for (let k = 0; k < ready; k++) heads[k] = queues[k] = undefined;
      if (h.verdict !== "drop") h.link._run(h);
      this.#pool.push(h);
    }
    this.#arm();
  }
}

const BASE_ADDR = [0x7f0000000000n, 0x7e0000000000n];

/** One side of a loopback pair. */
export class LoopbackLink implements Link {
  readonly transport = "loopback" as const;
  readonly remoteAddress: string;
  capabilities: LinkCapabilities;
  /** Undefined before trust (`preAuth`): created by `grow()`. */
  source: RegisteredRegion | undefined;
  sink: RegisteredRegion | undefined;
  /** The full sizes, while the link has its footprint before trust. */
  #full: Required<LinkSizes> | undefined;
  #memoryBytes = 0;
  readonly #side: 0 | 1;
  readonly #sched: Scheduler;
  peer!: LoopbackLink;
  readonly #recv: Uint8Array[];
  readonly #slots: Uint8Array[];
  /** Per receive buffer, the last frame view handed out: reused for a frame of the same length. */
  readonly #views: (Uint8Array | undefined)[] = [];
  #posted: number[] = [];
  #events: LinkEvents | undefined;
  #closed = false;
  #early: Array<() => void> = [];

  /** `small`: the sizes before trust (`preAuth`), `grow()` goes to `sizes`; undefined: full at once. */
  constructor(side: 0 | 1, sched: Scheduler, sizes: Required<LinkSizes>, remoteAddress: string, small?: Required<LinkSizes>) {
    this.#side = side;
    this.#sched = sched;
    this.remoteAddress = remoteAddress;
    const now = small ?? sizes;
    this.#full = small ? sizes : undefined;
    const { recvBufferCount, sendSlots } = now;
    // A buffer holds recvBufferSize bytes of payload plus a header: a 64 KiB message is one frame.
    const frameSize = sizes.recvBufferSize + HEADER_SIZE;
    this.capabilities = linkCapabilities({ ...now, recvBufferSize: frameSize }, !small, true);
    this.#recv = carve(new Uint8Array(frameSize * recvBufferCount), recvBufferCount, frameSize);
    this.#slots = carve(new Uint8Array(frameSize * sendSlots), sendSlots, frameSize);
    this.#memoryBytes = frameSize * (recvBufferCount + sendSlots);
    for (let i = 0; i < recvBufferCount; i++) this.#posted.push(i);
    if (!small) this.#arenas(sizes.maxMessageSize);
  }

  #arenas(maxMessageSize: number): void {
    const side = this.#side;
    this.source = { bytes: new Uint8Array(maxMessageSize), addr: BASE_ADDR[side], rkey: 0x1000 + side * 0x111 };
    this.sink = { bytes: new Uint8Array(maxMessageSize), addr: BASE_ADDR[side] + 0x100000000n, rkey: 0 };
    this.#memoryBytes += 2 * maxMessageSize;
  }

  get memoryBytes(): number {
    return this.#memoryBytes;
  }

  get preAuth(): boolean {
    return this.#full !== undefined;
  }

  grow(): LinkCapabilities {
    const full = this.#full;
    if (!full || this.#closed) return this.capabilities;
    const frameSize = this.capabilities.recvBufferSize;
    this.#memoryBytes += growBuffers(this.#recv, this.#slots, this.#posted, full, frameSize);
    this.#arenas(full.maxMessageSize);
    this.#full = undefined;
    this.capabilities = linkCapabilities({ ...full, recvBufferSize: frameSize }, true, true);
    return this.capabilities;
  }

  start(events: LinkEvents): void {
    this.#events = events;
    for (const f of this.#early.splice(0)) f();
  }

  sendSlot(slot: number): Uint8Array {
    return this.#slots[slot];
  }

  postSend(slot: number, length: number): void {
    if (this.#closed) return;
    const from = this.#side;
    const e = this.#sched.take(OP_FRAME, this, (1 - from) as 0 | 1, length);
    e.slot = slot;
    e.mid = this.#slots[slot][0];
    this.#sched.add(from, e);
  }

  repost(bufferIndex: number): void {
    if (!this.#closed) this.#posted.push(bufferIndex);
  }

  postRead(token: number, sinkOffset: number, length: number, remoteAddr: bigint, rkey: number): void {
    if (this.#closed) return;
    const side = this.#side;
    const e = this.#sched.take(OP_READ, this, side, length);
    e.token = token;
    e.sinkOffset = sinkOffset;
    e.remoteAddr = remoteAddr;
    e.rkey = rkey;
    this.#sched.add(side, e);
  }

  /** @internal Runs a scheduled event posted by this link. */
  _run(e: Scheduled): void {
    if (this.#closed) return;
    if (e.op === OP_FRAME) return this.#arrive(e.slot, e.length);
    if (e.op === OP_SEND_DONE) return this.#events!.sendDone(e.slot);
    const verdict = e.verdict;
    const { token, sinkOffset, length, remoteAddr, rkey } = e;
    const src = this.peer.source;
    const sink = this.sink;
    if (typeof verdict === "object" && "fail" in verdict) {
      return this.#events!.readFailed(token, new Error(`RDMA READ failed: ${verdict.fail}`));
    }
    const off = src ? Number(remoteAddr - src.addr) : -1;
    if (!src || !sink || rkey !== src.rkey || off < 0 || off + length > src.bytes.length || sinkOffset + length > sink.bytes.length) {
      return this.#events!.readFailed(token, new Error("RDMA READ failed: remote access error"));
    }
    sink.bytes.set(src.bytes.subarray(off, off + length), sinkOffset);
    this.#events!.readDone(token);
  }

  /** A frame posted from `slot` lands in the peer's oldest posted buffer; then this side's send completes. */
  #arrive(slot: number, length: number): void {
    const peer = this.peer;
    if (peer.#closed) return;
    const index = peer.#posted.shift();
    if (index === undefined) {
      return this.#sched.faults.disconnect(
        new Error("receiver not ready: a frame arrived with no receive buffer posted (credits were ignored)"),
      );
    }
    const buf = peer.#recv[index];
    const from = this.#slots[slot];
    if (length <= 128) for (let i = 0; i < length; i++) buf[i] = from[i];
    else buf.set(from.subarray(0, length));
    let view = peer.#views[index];
    if (view === undefined || view.length !== length) view = peer.#views[index] = buf.subarray(0, length);
    if (peer.#events) peer.#events.frame(view, index);
    else peer.#early.push(() => peer.#events!.frame(view, index));
    const side = this.#side;
    const done = this.#sched.take(OP_SEND_DONE, this, side, length);
    done.slot = slot;
    this.#sched.add(side, done);
  }

  /** @internal set by the pair: closes both sides. */
  _onClose: (error: Error | undefined) => void = () => {};

  close(error?: Error): void {
    this._onClose(error);
  }

  /** @internal marks closed and reports `closed` asynchronously. */
  _shut(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#posted = [];
    setImmediate(() => this.#deliverClosed(error));
  }

  #deliverClosed(error: Error | undefined): void {
    if (this.#events) this.#events.closed(error);
    else this.#early.push(() => this.#events!.closed(error));
  }
}

/** Options of a loopback pair. */
export interface LoopbackOptions extends LinkSizes {
  /** Interleave completion channels in a seeded random order. */
  reorderSeed?: number;
  /**
   * Both sides start with the footprint before trust (`true`: the defaults),
   * or `[first, second]` per side. @default full sizes at once
   */
  preAuth?: PreAuthSizes | boolean | [PreAuthSizes | boolean | undefined, PreAuthSizes | boolean | undefined];
}

/** Makes two connected loopback links and their fault controller. */
export function loopbackLinkPair(options: LoopbackOptions = {}): [LoopbackLink, LoopbackLink, LoopbackFaults] {
  const sizes = resolveSizes(options);
  const p = options.preAuth;
  const [pa, pb] = Array.isArray(p) ? p : [p, p];
  const faults = new LoopbackFaults(options.reorderSeed);
  const sched = new Scheduler(faults);
  const a = new LoopbackLink(0, sched, sizes, "loopback:1", resolvePreAuth(sizes, pa));
  const b = new LoopbackLink(1, sched, sizes, "loopback:0", resolvePreAuth(sizes, pb));
  a.peer = b;
  b.peer = a;
  let down = false;
  // A local close reports `closed(undefined)` locally and "peer disconnected" to the other side.
  a._onClose = (e) => shut(0, e);
  b._onClose = (e) => shut(1, e);
  function shut(by: 0 | 1 | undefined, e: Error | undefined): void {
    if (down) return;
    down = true;
    sched.stop();
    const peerErr = new Error("the peer disconnected");
    if (by === undefined) {
      a._shut(e);
      b._shut(e);
    } else {
      (by === 0 ? a : b)._shut(e);
      (by === 0 ? b : a)._shut(peerErr);
    }
  }
  faults._disconnect = (e) => shut(undefined, e);
  return [a, b, faults];
}

/** A connected pair of sockets plus the pair's fault controller. */
export type LoopbackSocketPair = [SdpSocket, SdpSocket] & { faults: LoopbackFaults };

/**
 * Two connected loopback sockets (the first one connected actively).
 *
 * @example
 * ```ts
 * import { loopbackPair } from "./loopback.ts";
 * const [a, b] = await loopbackPair();
 * const got = (async () => { for await (const m of b) { const t = new TextDecoder().decode(m.bytes); m.release(); return t; } })();
 * await a.send(new TextEncoder().encode("hello"));
 * console.log(await got); // "hello"
 * await a.close(); await b.close();
 * ```
 */
export async function loopbackPair(options: LoopbackOptions & SocketOptions = {}): Promise<LoopbackSocketPair> {
  const [la, lb, faults] = loopbackLinkPair(options);
  const [a, b] = await Promise.all([SdpSocket.open(la, "active", options), SdpSocket.open(lb, "passive", options)]);
  return Object.assign([a, b] as [SdpSocket, SdpSocket], { faults });
}

// ------------------------------------------------------------ listen/connect by name

const listeners = new Map<string, LoopbackLinkListener>();
let nextPort = 40000;

class LoopbackLinkListener implements LinkListener {
  readonly address: { host: string; port: number };
  readonly sizes: LinkListenOptions;
  readonly #accepted = new AcceptQueue<LoopbackLink>();

  constructor(host: string, port: number, sizes: LinkListenOptions) {
    this.address = { host, port };
    this.sizes = sizes;
  }

  accept(link: LoopbackLink): void {
    if (!this.#accepted.push(link)) link.close();
  }

  close(): Promise<void> {
    if (!this.#accepted.closed) {
      listeners.delete(`${this.address.host}:${this.address.port}`);
      for (const l of this.#accepted.close()) l.close();
    }
    return Promise.resolve();
  }

  [Symbol.asyncIterator](): AsyncIterator<Link> {
    return this.#accepted[Symbol.asyncIterator]();
  }
}

/** Listens on an in-process name `host:port` (port 0 picks a free one). */
export function listenLinks(options: LinkListenOptions): Promise<LinkListener> {
  const port = options.port || nextPort++;
  const key = `${options.host}:${port}`;
  if (listeners.has(key)) return Promise.reject(new Error(`loopback address ${key} is already in use`));
  const l = new LoopbackLinkListener(options.host, port, options);
  listeners.set(key, l);
  return Promise.resolve(l);
}

/** Connects to an in-process listener. */
export function connectLink(options: LinkConnectOptions): Promise<Link> {
  const l = listeners.get(`${options.host}:${options.port}`);
  if (!l) return Promise.reject(new Error(`loopback connect to ${options.host}:${options.port}: nobody is listening`));
  // Each side has its own footprint before trust: the connector's, the listener's.
  const [a, b] = loopbackLinkPair({ ...l.sizes, ...options, preAuth: [options.preAuth, l.sizes.preAuth] });
  l.accept(b);
  return Promise.resolve(a);
}
