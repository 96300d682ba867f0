/**
 * The RDMA link: the `Link` of `link.ts` over one rdma_cm reliable connection.
 *
 * Registered at connect/accept time, before the peer can send, and never on
 * the data path except for the one range each zcopy transfer exposes (below;
 * SDP registered whole send buffers on every send):
 *
 * | region | access       | size                              | job                          |
 * | ------ | ------------ | --------------------------------- | ---------------------------- |
 * | recv   | local write  | recvBufferCount × recvBufferSize  | the posted receive ring      |
 * | send   | local only   | sendSlots × sendSlotSize          | frames being sent (bcopy)    |
 * | source | local only † | maxMessageSize                    | zcopy messages the peer READs|
 * | sink   | local write  | maxMessageSize                    | where our RDMA READs land    |
 *
 * Before trust (`preAuth`): only `PreAuthSizes` receive buffers and send
 * slots are registered (8 + 8 of 64 KiB by default: 1 MiB instead of
 * 40 MiB), with no source or sink (`zcopy: false`, so the peer is told no
 * zcopy and a SrcAvail is a protocol error); `grow()` registers a second
 * receive segment and a second send segment for the remaining indices, and
 * the arenas, and posts the new buffers. The queue pair is created with the
 * full depths from the start.
 *
 * † Remote access is scoped per transfer: each SrcAvail's bytes, and no
 * others, are registered on their own with remote read (`advertise`, one
 * ibv_reg_mr of exactly the message) and the SrcAvail carries that range's
 * rkey; the range is deregistered (`withdraw`) when RdmaRdCompl or SendSM
 * arrives, before the arena space can be reused, or when the link closes, so the peer can read
 * exactly the bytes advertised to it and only until the transfer ends.
 * Where that registration cannot be made (probed at connect time with one
 * byte), or with `SDP_RDMA_REMOTE_ACCESS=whole-arena`, the source is
 * registered with remote read as a whole instead, for the connection's life
 * (`remoteAccess: "whole arena"` in the link and in the socket's `stats()`).
 * Why not memory windows: see src/verbs/remote_range.ts.
 *
 * Work-request tokens (30 bits, see verbs/connection.ts): receives carry the
 * buffer index; sends carry the slot; READs carry `READ_BIT | token`.
 *
 * Events reach the socket only from a progress pass (never from inside a call
 * the socket made); completions that arrive before `start()` are queued.
 * `closed` is delivered after the connection's final poll (every frame whose
 * receive completed is reported first, also after a local `close()`) and
 * while the regions are still registered and readable (the socket copies out
 * messages the application still holds); the connection frees them right
 * after.
 * Flush completions after a failure or a close are not reported: the single
 * `closed(err)` event stands for every operation still outstanding.
 *
 * @module
 */
import { type AcceptQueue, acceptConcurrently, type HandshakeLimits, handshakeLimits } from "../../accept_queue.ts";
import {
  connect,
  type ConnectionRequest,
  type Completion,
  ConnectionClosedError,
  listen,
  type MemoryRegion,
  type RdmaConnection,
  type RdmaListener,
  type RemoteRange,
  WorkCompletionError,
} from "../../verbs/mod.ts";
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
  type PreAuthSizes,
  type RegisteredRegion,
  type RemoteAccess,
  resolvePreAuth,
  resolveSizes,
} from "./link.ts";

const READ_BIT = 1 << 29;
const TOKEN_MASK = READ_BIT - 1;
const WR_FLUSH_ERR = 5;

function capabilitiesOf(options: LinkSizes): LinkCapabilities {
  const sizes = resolveSizes(options);
  if (sizes.recvBufferCount * sizes.recvBufferSize > 0xffffffff) {
    throw new RangeError(`receive ring of ${sizes.recvBufferCount} × ${sizes.recvBufferSize} bytes exceeds 4 GiB`);
  }
  return linkCapabilities(sizes, true, true);
}

/** The capabilities before trust (`preAuth`), or undefined: the link starts full. */
function preAuthOf(options: LinkSizes & { preAuth?: PreAuthSizes | boolean }): LinkCapabilities | undefined {
  const small = resolvePreAuth(resolveSizes(options), options.preAuth);
  return small ? linkCapabilities(small, false, true) : undefined;
}

function region(mr: MemoryRegion): RegisteredRegion {
  return { bytes: mr.bytes, addr: mr.address, rkey: mr.rkey };
}

/**
 * Registers the regions and posts the receive ring; meant to run in
 * `prepare`, before the peer can send. Completions are queued until `start()`.
 * With `small` (before trust) only the receive buffers and send slots of
 * `small` are registered; `grow()` registers the rest.
 */
class RdmaLink implements Link {
  readonly transport = "rdma" as const;
  capabilities: LinkCapabilities;
  readonly #conn: RdmaConnection;
  /** Every region this link registered (receive and send segments, arenas). */
  readonly #regions: MemoryRegion[] = [];
  /** Per receive buffer: its region and offset there (buffers added by `grow()` live in a second region). */
  readonly #recvMr: MemoryRegion[] = [];
  readonly #recvOff: number[] = [];
  /** Per send slot: its region, offset and view. */
  readonly #slotMr: MemoryRegion[] = [];
  readonly #slotOff: number[] = [];
  readonly #slots: Uint8Array[] = [];
  #sourceMr: MemoryRegion | undefined;
  #sinkMr: MemoryRegion | undefined;
  /** The full capabilities while the link has its footprint before trust. */
  #full: LinkCapabilities | undefined;
  #events: LinkEvents | undefined;
  readonly #early: Completion[] = [];
  #closing = false;
  #closedSent = false;
  #closeReason: { error: Error | undefined } | undefined;
  source: RegisteredRegion | undefined;
  sink: RegisteredRegion | undefined;
  remoteAccess: RemoteAccess | undefined;
  /** The source range open to the peer (per-transfer access), if any. */
  #open: RemoteRange | undefined;

  constructor(conn: RdmaConnection, caps: LinkCapabilities, small?: LinkCapabilities) {
    this.#conn = conn;
    this.capabilities = small ?? caps;
    this.#full = small ? caps : undefined;
    const now = small ?? caps;
    try {
      this.#addBuffers(now.recvBufferCount, now.sendSlots);
      if (!small) this.#addArenas(caps.maxMessageSize);
    } catch (e) {
      this.#deregisterAll();
      throw e;
    }
    conn.onCompletion = (c) => (this.#events ? this.#dispatch(c) : this.#early.push(c));
    for (let i = 0; i < now.recvBufferCount; i++) this.repost(i);
    conn.onClosing = (err) => this.#finish(err);
  }

  #reg(len: number, access: Parameters<RdmaConnection["registerMemory"]>[1]): MemoryRegion {
    const mr = this.#conn.registerMemory(len, access);
    this.#regions.push(mr);
    return mr;
  }

  #deregisterAll(): void {
    for (const mr of this.#regions.splice(0)) {
      try {
        mr.close();
      } catch { /* the connection's close retries what is left */ }
    }
  }

  /** Registers receive buffers and send slots up to these counts (new indices follow the old). */
  #addBuffers(recvCount: number, slotCount: number): void {
    const { recvBufferSize, sendSlotSize } = this.capabilities;
    const moreRecv = recvCount - this.#recvMr.length;
    const moreSlots = slotCount - this.#slots.length;
    const recv = moreRecv > 0 ? this.#reg(moreRecv * recvBufferSize, { localWrite: true }) : undefined;
    const send = moreSlots > 0 ? this.#reg(moreSlots * sendSlotSize, {}) : undefined;
    for (let i = 0; i < moreRecv; i++) {
      this.#recvMr.push(recv!);
      this.#recvOff.push(i * recvBufferSize);
    }
    if (send) {
      const views = carve(send.bytes, moreSlots, sendSlotSize);
      for (let i = 0; i < moreSlots; i++) {
        this.#slotMr.push(send);
        this.#slotOff.push(i * sendSlotSize);
        this.#slots.push(views[i]);
      }
    }
  }

  /** Registers the zcopy source and sink and sets up per-transfer access (see the header). */
  #addArenas(maxMessageSize: number): void {
    let source = perTransferWanted() ? this.#reg(maxMessageSize, {}) : this.#reg(maxMessageSize, { remoteRead: true });
    const sink = this.#reg(maxMessageSize, { localWrite: true });
    if (!source.access.remoteRead && !canRegisterRanges(this.#conn, source)) {
      source.close();
      this.#regions.splice(this.#regions.indexOf(source), 1);
      source = this.#reg(maxMessageSize, { remoteRead: true });
    }
    this.#sourceMr = source;
    this.#sinkMr = sink;
    this.source = region(source);
    this.sink = region(sink);
    this.remoteAccess = source.access.remoteRead ? "whole arena" : "per-transfer region";
    if (this.remoteAccess === "per-transfer region") {
      this.advertise = (offset, length) => {
        this.#open?.close(); // one SrcAvail is outstanding at a time: never reached by the engine
        this.#open = this.#conn.registerRange(source, offset, length, { remoteRead: true });
        return this.#open.rkey;
      };
      this.withdraw = (offset) => {
        if (this.#open?.offset !== offset) return;
        this.#closeOpen();
      };
    }
  }

  /** Deregisters the source range open to the peer, if any: from here its READs fail. */
  #closeOpen(): void {
    const r = this.#open;
    if (!r) return;
    this.#open = undefined;
    try {
      r.close();
    } catch (e) {
      // The connection's close tries again (it closes every range before any region).
      console.warn(`rdma: withdrawing the peer's access to ${r.length} source bytes failed: ${(e as Error).message}`);
    }
  }

  get remoteAddress(): string {
    return this.#conn.remoteAddress;
  }

  get memoryBytes(): number {
    let n = 0;
    for (const mr of this.#regions) n += mr.length;
    return n;
  }

  get preAuth(): boolean {
    return this.#full !== undefined;
  }

  grow(): LinkCapabilities {
    const full = this.#full;
    if (!full || this.#gone()) return this.capabilities;
    const before = this.#regions.length;
    const oldRecv = this.#recvMr.length;
    try {
      this.#addBuffers(full.recvBufferCount, full.sendSlots);
      this.#addArenas(full.maxMessageSize);
    } catch (e) {
      for (const mr of this.#regions.splice(before)) {
        try {
          mr.close();
        } catch { /* the connection's close retries it */ }
      }
      throw e;
    }
    this.#full = undefined;
    this.capabilities = full;
    for (let i = oldRecv; i < full.recvBufferCount; i++) this.repost(i);
    return full;
  }

  /** Per-transfer access only (see the header); absent on a whole-arena link and before trust. */
  advertise?: (offset: number, length: number) => number;
  withdraw?: (offset: number) => void;

  start(events: LinkEvents): void {
    if (this.#events) throw new Error("link already started");
    this.#events = events;
    // Deliver what happened before start() asynchronously, as every other event.
    queueMicrotask(() => {
      for (const c of this.#early.splice(0)) this.#dispatch(c);
      if (this.#closeReason) this.#emitClosed(this.#closeReason.error);
    });
  }

  sendSlot(slot: number): Uint8Array {
    return this.#slots[slot];
  }

  postSend(slot: number, length: number): void {
    if (this.#gone()) return; // `closed` follows and fails what is outstanding
    this.#conn.postSend(this.#slotMr[slot], this.#slotOff[slot], length, slot);
  }

  repost(bufferIndex: number): void {
    if (this.#gone()) return;
    this.#conn.postRecv(this.#recvMr[bufferIndex], this.#recvOff[bufferIndex], this.capabilities.recvBufferSize, bufferIndex);
  }

  postRead(token: number, sinkOffset: number, length: number, remoteAddr: bigint, rkey: number): void {
    if (token > TOKEN_MASK) throw new RangeError(`read token must be below 2^29: got ${token}`);
    if (this.#gone()) return;
    if (!this.#sinkMr) throw new Error("postRead before trust: this link has no sink yet (grow() registers it)");
    this.#conn.postRead(this.#sinkMr, sinkOffset, length, remoteAddr, rkey, token | READ_BIT);
  }

  /** Closing, or the connection is already tearing down (a completion seen during its last poll). */
  #gone(): boolean {
    return this.#closing || this.#conn.isClosed;
  }

  close(error?: Error): void {
    if (this.#closing) return;
    this.#closing = true;
    // The peer's access to a source range still open ends with the socket, now.
    this.#closeOpen();
    // Not from inside the socket's call. The connection disconnects, polls what the queue
    // already holds (frames among it reach the socket: their senders have their send
    // completions), then calls `onClosing` → `closed` (memory still readable), then frees.
    queueMicrotask(() => void this.#conn.close(error));
  }

  #dispatch(c: Completion): void {
    const ev = this.#events!;
    if (this.#closedSent || (this.#closing && c.status !== 0) || c.status === WR_FLUSH_ERR) return;
    if (c.recv) {
      if (c.status !== 0) return; // a failed receive is the connection failing: `closed` reports it
      const start = this.#recvOff[c.token];
      ev.frame(this.#recvMr[c.token].bytes.subarray(start, start + c.byteLength), c.token);
    } else if (c.token & READ_BIT) {
      if (c.status === 0) ev.readDone(c.token & TOKEN_MASK);
      else ev.readFailed(c.token & TOKEN_MASK, new WorkCompletionError("RDMA READ", c.status, c.vendorErr));
    } else {
      if (c.status === 0) ev.sendDone(c.token);
      else ev.sendFailed(c.token, new WorkCompletionError("send", c.status, c.vendorErr));
    }
  }

  /** The connection is going (peer gone, failure, or our close): memory is still valid here. */
  #finish(error: Error | undefined): void {
    this.#closing = true;
    this.#closeOpen();
    this.#closeReason = { error };
    if (this.#events) this.#emitClosed(error);
  }

  #emitClosed(error: Error | undefined): void {
    if (this.#closedSent) return;
    this.#closedSent = true;
    this.#events!.closed(error);
  }
}

/** Connects an RDMA link to `host:port`. */
export async function connectLink(options: LinkConnectOptions): Promise<Link> {
  const caps = capabilitiesOf(options);
  const small = preAuthOf(options);
  let link: RdmaLink | undefined;
  await connect({
    host: options.host,
    port: options.port,
    timeoutMs: options.timeoutMs,
    sendDepth: caps.sendSlots + 16,
    recvDepth: caps.recvBufferCount,
    prepare: (conn) => {
      link = new RdmaLink(conn, caps, small);
    },
  });
  return link!;
}

/**
 * Accepted rdma links. Connection requests are accepted concurrently, at most
 * `maxHandshakes` at once (default 8; a request beyond that is rejected at
 * once), each within `handshakeTimeoutMs` (default 10000) for the rdma_cm
 * exchange: a peer that never completes it holds its place no longer, and
 * one slow peer delays no other. Each connection in handshake has its regions
 * registered (with default sizes about 40 MiB: see the table above; with
 * `preAuth`, 8 + 8 buffers of 64 KiB, 1 MiB, until `grow()`), so the cap also
 * bounds the memory that unauthenticated peers can make this side register:
 * `maxHandshakes` × that.
 */
class RdmaLinkListener implements LinkListener {
  readonly #listener: RdmaListener;
  readonly #accepting: { queue: AcceptQueue<RdmaLink>; close(): RdmaLink[] };
  readonly address: { host: string; port: number };

  constructor(listener: RdmaListener, caps: LinkCapabilities, small: LinkCapabilities | undefined, limits: HandshakeLimits) {
    this.#listener = listener;
    this.address = listener.address;
    this.#accepting = acceptConcurrently<ConnectionRequest, RdmaLink>(listener, {
      accept: async (req, timeoutMs) => {
        let link: RdmaLink | undefined;
        await req.accept({
          timeoutMs,
          sendDepth: caps.sendSlots + 16,
          recvDepth: caps.recvBufferCount,
          prepare: (conn) => {
            link = new RdmaLink(conn, caps, small);
          },
        });
        return link!;
      },
      refuse: (req) => req.reject(),
      dispose: (link) => link.close(),
      // One failed accept (peer gone mid-handshake, out of memory, too slow) does not stop the listener.
      failed: (req, e) => {
        if (!(e instanceof ConnectionClosedError)) console.warn(`rdma: accept from ${safe(() => req.remoteAddress)} failed: ${e.message}`);
      },
    }, limits);
  }

  [Symbol.asyncIterator](): AsyncIterator<Link> {
    return this.#accepting.queue[Symbol.asyncIterator]();
  }

  close(): Promise<void> {
    for (const link of this.#accepting.close()) link.close();
    return this.#listener.close();
  }
}

/** Per-transfer remote access unless `SDP_RDMA_REMOTE_ACCESS=whole-arena` (for comparisons and as an escape hatch). */
function perTransferWanted(): boolean {
  let v: string | undefined;
  try {
    v = process.env.SDP_RDMA_REMOTE_ACCESS;
  } catch {
    v = undefined; // Deno without --allow-env: the default
  }
  return v !== "whole-arena";
}

/** Whether a byte range of `mr` can be registered on its own (the per-transfer mechanism works here). */
function canRegisterRanges(conn: RdmaConnection, mr: MemoryRegion): boolean {
  try {
    conn.registerRange(mr, 0, 1, { remoteRead: true }).close();
    return true;
  } catch (e) {
    console.warn(`rdma: registering a byte range of the zcopy source on its own failed (${(e as Error).message}): the peer may READ the whole source arena for the connection's life`);
    return false;
  }
}

function safe(f: () => string): string {
  try {
    return f();
  } catch {
    return "?";
  }
}

/**
 * Listens for RDMA links on `host:port`. `maxHandshakes` (default 8) and
 * `handshakeTimeoutMs` (default 10000) bound the connections in handshake
 * (see `RdmaLinkListener`).
 */
export async function listenLinks(options: LinkListenOptions & HandshakeLimits): Promise<LinkListener> {
  const caps = capabilitiesOf(options);
  const small = preAuthOf(options);
  const limits = handshakeLimits(options);
  return new RdmaLinkListener(await listen({ host: options.host, port: options.port }), caps, small, limits);
}
