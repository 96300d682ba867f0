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
 * @module
 */
import { setImmediate } from "node:timers";
import { AcceptQueue } from "../accept_queue.ts";
import {
  carve,
  type Link,
  type LinkCapabilities,
  type LinkConnectOptions,
  type LinkEvents,
  type LinkListener,
  type LinkListenOptions,
  linkCapabilities,
  type LinkSizes,
  type RegisteredRegion,
  resolveSizes,
} from "./link.ts";
import { type SocketOptions, SdpSocket } from "./socket.ts";

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

interface Scheduled {
  event: LoopbackEvent;
  run: (verdict: LoopbackVerdict) => void;
  notBefore: number;
  verdict: LoopbackVerdict | undefined;
}

/** Runs the events of one pair, channel by channel. */
class Scheduler {
  readonly #channels = new Map<string, Scheduled[]>();
  readonly faults: LoopbackFaults;
  #armed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  stopped = false;

  constructor(faults: LoopbackFaults) {
    this.faults = faults;
    faults._release = () => {
      for (const q of this.#channels.values()) if (q[0]?.notBefore === Infinity) q[0].notBefore = 0;
      this.#arm();
    };
  }

  add(channel: string, event: LoopbackEvent, run: (v: LoopbackVerdict) => void): void {
    if (this.stopped) return;
    let q = this.#channels.get(channel);
    if (!q) this.#channels.set(channel, q = []);
    q.push({ event, run, notBefore: 0, verdict: undefined });
    this.#arm();
  }

  stop(): void {
    this.stopped = true;
    this.#channels.clear();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }

  #arm(): void {
    if (this.#armed || this.stopped) return;
    this.#armed = true;
    setImmediate(() => {
      this.#armed = false;
      this.#runReady();
    });
  }

  #runReady(): void {
    for (let budget = 100000; budget > 0 && !this.stopped; budget--) {
      const t = performance.now();
      const heads: Scheduled[] = [];
      const queues: Scheduled[][] = [];
      let wakeAt = Infinity;
      for (const q of this.#channels.values()) {
        if (q.length === 0) continue;
        const h = q[0];
        if (h.verdict === undefined) {
          h.verdict = this.faults._verdict(h.event);
          if (h.verdict === "hold") {
            h.notBefore = Infinity;
            h.verdict = "deliver";
          } else if (typeof h.verdict === "object" && "delayMs" in h.verdict) {
            h.notBefore = t + h.verdict.delayMs;
            h.verdict = "deliver";
          }
        }
        if (h.notBefore > t) {
          if (h.notBefore !== Infinity) wakeAt = Math.min(wakeAt, h.notBefore);
          continue;
        }
        heads.push(h);
        queues.push(q);
      }
      if (heads.length === 0) {
        if (wakeAt !== Infinity && this.#timer === undefined) {
          this.#timer = setTimeout(() => {
            this.#timer = undefined;
            this.#runReady();
          }, Math.ceil(wakeAt - t));
        }
        return;
      }
      const i = this.faults._pick(heads.length);
      queues[i].shift();
      const h = heads[i];
      if (h.verdict !== "drop") h.run(h.verdict!);
    }
    this.#arm();
  }
}

const BASE_ADDR = [0x7f0000000000n, 0x7e0000000000n];

/** One side of a loopback pair. */
export class LoopbackLink implements Link {
  readonly transport = "loopback" as const;
  readonly remoteAddress: string;
  readonly capabilities: LinkCapabilities;
  readonly source: RegisteredRegion;
  readonly sink: RegisteredRegion;
  readonly #side: 0 | 1;
  readonly #sched: Scheduler;
  peer!: LoopbackLink;
  readonly #recv: Uint8Array[];
  readonly #slots: Uint8Array[];
  #posted: number[] = [];
  #events: LinkEvents | undefined;
  #closed = false;
  #early: Array<() => void> = [];

  constructor(side: 0 | 1, sched: Scheduler, sizes: Required<LinkSizes>, remoteAddress: string) {
    this.#side = side;
    this.#sched = sched;
    this.remoteAddress = remoteAddress;
    const { recvBufferSize, recvBufferCount, sendSlots, maxMessageSize } = sizes;
    this.capabilities = linkCapabilities(sizes, true, true);
    this.#recv = carve(new Uint8Array(recvBufferSize * recvBufferCount), recvBufferCount, recvBufferSize);
    this.#slots = carve(new Uint8Array(recvBufferSize * sendSlots), sendSlots, recvBufferSize);
    for (let i = 0; i < recvBufferCount; i++) this.#posted.push(i);
    this.source = { bytes: new Uint8Array(maxMessageSize), addr: BASE_ADDR[side], rkey: 0x1000 + side * 0x111 };
    this.sink = { bytes: new Uint8Array(maxMessageSize), addr: BASE_ADDR[side] + 0x100000000n, rkey: 0 };
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
    const to = (1 - from) as 0 | 1;
    const event: LoopbackEvent = { side: to, kind: "frame", length, mid: this.#slots[slot][0] };
    this.#sched.add(`frames${from}`, event, () => {
      const peer = this.peer;
      if (peer.#closed || this.#closed) return;
      const index = peer.#posted.shift();
      if (index === undefined) {
        return this.#sched.faults.disconnect(
          new Error("receiver not ready: a frame arrived with no receive buffer posted (credits were ignored)"),
        );
      }
      const buf = peer.#recv[index];
      buf.set(this.#slots[slot].subarray(0, length));
      peer.#deliver((e) => e.frame(buf.subarray(0, length), index));
      this.#sched.add(`sendDone${from}`, { side: from, kind: "sendDone", length, mid: undefined }, () => {
        if (!this.#closed) this.#events!.sendDone(slot);
      });
    });
  }

  #deliver(f: (e: LinkEvents) => void): void {
    if (this.#closed) return;
    if (this.#events) f(this.#events);
    else this.#early.push(() => f(this.#events!));
  }

  repost(bufferIndex: number): void {
    if (!this.#closed) this.#posted.push(bufferIndex);
  }

  postRead(token: number, sinkOffset: number, length: number, remoteAddr: bigint, rkey: number): void {
    if (this.#closed) return;
    const side = this.#side;
    this.#sched.add(`reads${side}`, { side, kind: "readDone", length, mid: undefined }, (verdict) => {
      if (this.#closed) return;
      const src = this.peer.source;
      const off = Number(remoteAddr - src.addr);
      if (typeof verdict === "object" && "fail" in verdict) {
        return this.#events!.readFailed(token, new Error(`RDMA READ failed: ${verdict.fail}`));
      }
      if (rkey !== src.rkey || off < 0 || off + length > src.bytes.length || sinkOffset + length > this.sink.bytes.length) {
        return this.#events!.readFailed(token, new Error("RDMA READ failed: remote access error"));
      }
      this.sink.bytes.set(src.bytes.subarray(off, off + length), sinkOffset);
      this.#events!.readDone(token);
    });
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
}

/** Makes two connected loopback links and their fault controller. */
export function loopbackLinkPair(options: LoopbackOptions = {}): [LoopbackLink, LoopbackLink, LoopbackFaults] {
  const sizes = resolveSizes(options);
  const faults = new LoopbackFaults(options.reorderSeed);
  const sched = new Scheduler(faults);
  const a = new LoopbackLink(0, sched, sizes, "loopback:1");
  const b = new LoopbackLink(1, sched, sizes, "loopback:0");
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
  readonly sizes: LinkSizes;
  readonly #accepted = new AcceptQueue<LoopbackLink>();

  constructor(host: string, port: number, sizes: LinkSizes) {
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
  const [a, b] = loopbackLinkPair({ ...l.sizes, ...options });
  l.accept(b);
  return Promise.resolve(a);
}
