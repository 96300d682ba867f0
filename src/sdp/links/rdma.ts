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
 * † Remote access is scoped per transfer: each SrcAvail's bytes, and no
 * others, are registered on their own with remote read (`advertise`, one
 * ibv_reg_mr of exactly the message) and the SrcAvail carries that range's
 * rkey; the range is deregistered (`withdraw`) when RdmaRdCompl or SendSM
 * arrives, before the arena space can be reused, so the peer can read
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
  type RegisteredRegion,
  type RemoteAccess,
  resolveSizes,
} from "./link.ts";

const READ_BIT = 1 << 29;
const TOKEN_MASK = READ_BIT - 1;
const WR_FLUSH_ERR = 5;

interface Regions {
  recv: MemoryRegion;
  send: MemoryRegion;
  source: MemoryRegion;
  sink: MemoryRegion;
}

function capabilitiesOf(options: LinkSizes): LinkCapabilities {
  const sizes = resolveSizes(options);
  if (sizes.recvBufferCount * sizes.recvBufferSize > 0xffffffff) {
    throw new RangeError(`receive ring of ${sizes.recvBufferCount} × ${sizes.recvBufferSize} bytes exceeds 4 GiB`);
  }
  return linkCapabilities(sizes, true, true);
}

function region(mr: MemoryRegion): RegisteredRegion {
  return { bytes: mr.bytes, addr: mr.address, rkey: mr.rkey };
}

/**
 * Registers the four regions and posts the receive ring; meant to run in
 * `prepare`, before the peer can send. Completions are queued until `start()`.
 */
class RdmaLink implements Link {
  readonly transport = "rdma" as const;
  readonly capabilities: LinkCapabilities;
  readonly #conn: RdmaConnection;
  readonly #mr: Regions;
  readonly #slots: Uint8Array[];
  #events: LinkEvents | undefined;
  readonly #early: Completion[] = [];
  #closing = false;
  #closedSent = false;
  #closeReason: { error: Error | undefined } | undefined;
  readonly source: RegisteredRegion;
  readonly sink: RegisteredRegion;
  readonly remoteAccess: RemoteAccess;
  /** The source range open to the peer (per-transfer access), if any. */
  #open: RemoteRange | undefined;

  constructor(conn: RdmaConnection, caps: LinkCapabilities) {
    this.#conn = conn;
    this.capabilities = caps;
    const { recvBufferSize, recvBufferCount, sendSlots, sendSlotSize, maxMessageSize } = caps;
    const regs: MemoryRegion[] = [];
    try {
      const reg = (len: number, access: Parameters<RdmaConnection["registerMemory"]>[1]) => {
        const mr = conn.registerMemory(len, access);
        regs.push(mr);
        return mr;
      };
      this.#mr = {
        recv: reg(recvBufferCount * recvBufferSize, { localWrite: true }),
        send: reg(sendSlots * sendSlotSize, {}),
        source: perTransferWanted() ? reg(maxMessageSize, {}) : reg(maxMessageSize, { remoteRead: true }),
        sink: reg(maxMessageSize, { localWrite: true }),
      };
      if (!this.#mr.source.access.remoteRead && !canRegisterRanges(conn, this.#mr.source)) {
        this.#mr.source.close();
        regs.splice(regs.indexOf(this.#mr.source), 1);
        this.#mr.source = reg(maxMessageSize, { remoteRead: true });
      }
    } catch (e) {
      for (const mr of regs) mr.close();
      throw e;
    }
    this.#slots = carve(this.#mr.send.bytes, sendSlots, sendSlotSize);
    this.source = region(this.#mr.source);
    this.sink = region(this.#mr.sink);
    this.remoteAccess = this.#mr.source.access.remoteRead ? "whole arena" : "per-transfer region";
    if (this.remoteAccess === "per-transfer region") {
      this.advertise = (offset, length) => {
        this.#open?.close(); // one SrcAvail is outstanding at a time: never reached by the engine
        this.#open = this.#conn.registerRange(this.#mr.source, offset, length, { remoteRead: true });
        return this.#open.rkey;
      };
      this.withdraw = (offset) => {
        if (this.#open?.offset !== offset) return;
        const r = this.#open;
        this.#open = undefined;
        r.close();
      };
    }
    conn.onCompletion = (c) => (this.#events ? this.#dispatch(c) : this.#early.push(c));
    for (let i = 0; i < recvBufferCount; i++) this.repost(i);
    conn.onClosing = (err) => this.#finish(err);
  }

  get remoteAddress(): string {
    return this.#conn.remoteAddress;
  }

  /** Per-transfer access only (see the header); absent on a whole-arena link. */
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
    this.#conn.postSend(this.#mr.send, slot * this.capabilities.sendSlotSize, length, slot);
  }

  repost(bufferIndex: number): void {
    if (this.#gone()) return;
    const size = this.capabilities.recvBufferSize;
    this.#conn.postRecv(this.#mr.recv, bufferIndex * size, size, bufferIndex);
  }

  postRead(token: number, sinkOffset: number, length: number, remoteAddr: bigint, rkey: number): void {
    if (token > TOKEN_MASK) throw new RangeError(`read token must be below 2^29: got ${token}`);
    if (this.#gone()) return;
    this.#conn.postRead(this.#mr.sink, sinkOffset, length, remoteAddr, rkey, token | READ_BIT);
  }

  /** Closing, or the connection is already tearing down (a completion seen during its last poll). */
  #gone(): boolean {
    return this.#closing || this.#conn.isClosed;
  }

  close(error?: Error): void {
    if (this.#closing) return;
    this.#closing = true;
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
      const size = this.capabilities.recvBufferSize;
      const start = c.token * size;
      ev.frame(this.#mr.recv.bytes.subarray(start, start + c.byteLength), c.token);
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
  let link: RdmaLink | undefined;
  await connect({
    host: options.host,
    port: options.port,
    timeoutMs: options.timeoutMs,
    sendDepth: caps.sendSlots + 16,
    recvDepth: caps.recvBufferCount,
    prepare: (conn) => {
      link = new RdmaLink(conn, caps);
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
 * registered (with default sizes about 40 MiB: see the table above), so the
 * cap also bounds the memory that unauthenticated peers can make this side
 * register: `maxHandshakes` × that.
 */
class RdmaLinkListener implements LinkListener {
  readonly #listener: RdmaListener;
  readonly #accepting: { queue: AcceptQueue<RdmaLink>; close(): RdmaLink[] };
  readonly address: { host: string; port: number };

  constructor(listener: RdmaListener, caps: LinkCapabilities, limits: HandshakeLimits) {
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
            link = new RdmaLink(conn, caps);
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
  const limits = handshakeLimits(options);
  return new RdmaLinkListener(await listen({ host: options.host, port: options.port }), caps, limits);
}
