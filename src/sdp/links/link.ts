/**
 * The interface between an SDP socket and a transport: a **link**.
 *
 * A link moves opaque *frames* (already encoded by `wire.ts`) and, where it
 * can, performs RDMA READs. It knows nothing of credits, sequence numbers or
 * messages: the engine (`../engine.ts`) decides what to send and when, and the
 * socket (`../socket.ts`) drives the engine with the link's events. The same
 * shape is implemented three times: `rdma.ts` (verbs), `tcp.ts`
 * (node:net) and `loopback.ts` (in process, with fault injection).
 *
 * The model is the verbs one, so that the RDMA link maps onto it one to one:
 *
 * 1. **Receive ring.** `recvBufferCount` buffers of `recvBufferSize` bytes each,
 *    all posted by the link before `start()` returns. A frame arrives in one
 *    buffer and is handed over as `events.frame(view, bufferIndex)`; `view`
 *    is a `Uint8Array` over that buffer (`view.length` = bytes received). The
 *    buffer stays owned by the socket until it calls `repost(bufferIndex)`;
 *    until then the link must not reuse it. (A bcopy message delivered to the
 *    application keeps its buffer until the application releases it.)
 * 2. **Send slots.** `sendSlots` slots of `sendSlotSize` bytes. The socket
 *    encodes a frame directly into `sendSlot(i)` and calls
 *    `postSend(i, length)`; the slot is busy until `events.sendDone(i)` or
 *    `events.sendFailed(i, err)`. The socket never posts a busy slot. When
 *    `capabilities.sendCompletionMeansDelivered` is true (RC verbs), a
 *    `sendDone` means the bytes are in the peer's receive buffer; when false
 *    (TCP), it only means the slot may be reused, and delivery is learnt from
 *    the peer's `mseq_ack`.
 * 3. **Zero copy** (only when `capabilities.zcopy`). `source` is a registered
 *    region the peer may RDMA READ (remote read access): the socket copies or
 *    serializes a message into it and advertises `{addr + offset, rkey, len}`
 *    in a SrcAvail. `sink` is a registered region (local write) into which
 *    `postRead(token, sinkOffset, length, remoteAddr, rkey)` reads the peer's
 *    bytes; completion is `events.readDone(token)` or
 *    `events.readFailed(token, err)` where `err.message` names the work
 *    completion status (for example "remote access error"). The socket
 *    allocates space inside both regions itself; the link only exposes them.
 *    Both are at least `maxMessageSize` bytes long.
 *
 * Rules every link obeys:
 * - Events are delivered asynchronously: never from inside a call the socket
 *   made on the link (no re-entrancy). They may arrive batched, and
 *   completions of different kinds may interleave in any order, but frames
 *   arrive in the order the peer posted them, and completions of `postSend`
 *   arrive in posting order (an RC queue pair guarantees both).
 * - `close(err?)` is idempotent. After it, or after the link reports
 *   `closed` by itself (peer gone, transport error), the link delivers no event
 *   other than exactly one `closed(err)`; every operation still outstanding is
 *   implicitly failed. `closed(undefined)` means a local `close()` without an
 *   error; otherwise `err` says what happened (peer disconnected, reset...).
 * - Views of `source`, `sink`, the send slots and the receive buffers are made
 *   once. After `closed`, memory may be freed and views detached (length 0).
 * - No memory registration and no allocation per frame on the data path.
 *
 * **Before trust** (`preAuth` in the connect/listen options): the link starts
 * with the small footprint of `PreAuthSizes` (a few receive buffers and send
 * slots, no `source` or `sink`, `zcopy: false`, a small `maxMessageSize`) and
 * reports it in `capabilities`; `preAuth` is true and `memoryBytes` counts
 * only that. `grow()`, called by the socket once the application has
 * authenticated the peer, allocates (registers) the rest: receive buffers
 * `old count..full count - 1`, which it posts before it returns, send slots
 * `old..full - 1`, and the zcopy arenas; `capabilities`, `source` and `sink`
 * then report the full sizes. Buffer and slot indices keep their meaning.
 *
 * @module
 */
import type { TlsConfig } from "./tls.ts";
import type { TransportKind } from "../types.ts";

/**
 * The footprint of a link before its peer is authenticated (`preAuth`).
 * Every size is at most the full one (`LinkSizes`); `recvBufferSize` is
 * the full one (buffers keep their size when more are added).
 */
export interface PreAuthSizes {
  /** Receive buffers posted before trust (the peer's initial credit). @default 8 */
  recvBufferCount?: number;
  /** Send slots before trust. @default 8 */
  sendSlots?: number;
  /** Largest message received (and sent) before trust; no zcopy before trust. @default 65536 */
  maxMessageSize?: number;
}

/** Defaults of `PreAuthSizes`. */
export const PRE_AUTH_DEFAULTS = { recvBufferCount: 8, sendSlots: 8, maxMessageSize: 65536 } as const;

/**
 * The sizes a link starts with when opened with `preAuth` (`undefined`:
 * none, it starts full), checked against the full `sizes`, with errors that
 * name the option and the bad value. `true` means the defaults.
 */
export function resolvePreAuth(
  sizes: Required<LinkSizes>,
  preAuth: PreAuthSizes | boolean | undefined,
): Required<LinkSizes> | undefined {
  if (preAuth === undefined || preAuth === false) return undefined;
  const p = preAuth === true ? {} : preAuth;
  if (typeof p !== "object" || p === null) throw new TypeError(`'preAuth' must be a boolean or an object of sizes: got ${String(preAuth)}`);
  const small = {
    recvBufferSize: sizes.recvBufferSize,
    recvBufferCount: p.recvBufferCount ?? Math.min(PRE_AUTH_DEFAULTS.recvBufferCount, sizes.recvBufferCount),
    sendSlots: p.sendSlots ?? Math.min(PRE_AUTH_DEFAULTS.sendSlots, sizes.sendSlots),
    maxMessageSize: p.maxMessageSize ?? Math.min(PRE_AUTH_DEFAULTS.maxMessageSize, sizes.maxMessageSize),
  };
  const check = (name: string, v: number, min: number, max: number) => {
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new RangeError(`'preAuth.${name}' must be an integer in ${min}..${max} (the full '${name}'): got ${v}`);
    }
  };
  check("recvBufferCount", small.recvBufferCount, 4, sizes.recvBufferCount);
  check("sendSlots", small.sendSlots, 2, sizes.sendSlots);
  check("maxMessageSize", small.maxMessageSize, 1, sizes.maxMessageSize);
  return small;
}

/** A registered memory region as the socket sees it. */
export interface RegisteredRegion {
  /** View of the whole region, made once at registration. */
  readonly bytes: Uint8Array;
  /** Address of `bytes[0]` as the peer names it in an RDMA READ. */
  readonly addr: bigint;
  /** Remote key the peer presents (source) or local key (sink; informative only). */
  readonly rkey: number;
}

/** What a link can do, fixed at connect time. */
export interface LinkCapabilities {
  /** `source`, `sink` and `postRead` are available (RDMA, loopback). */
  readonly zcopy: boolean;
  /** Bytes in each receive buffer: the largest frame this side can receive. */
  readonly recvBufferSize: number;
  /** Receive buffers posted at start (the initial credit granted to the peer). */
  readonly recvBufferCount: number;
  /** Number of send slots. */
  readonly sendSlots: number;
  /** Bytes in each send slot: the largest frame this side can send. */
  readonly sendSlotSize: number;
  /** Largest message this link can carry in one zcopy transfer (size of `source` and `sink`). */
  readonly maxMessageSize: number;
  /** `sendDone` means the frame is in the peer's memory (RC verbs, loopback), not just handed on (TCP). */
  readonly sendCompletionMeansDelivered: boolean;
}

/** The events a link delivers to its one handler (the socket). */
export interface LinkEvents {
  /** A frame arrived in receive buffer `bufferIndex`; `view` is valid until `repost(bufferIndex)`. */
  frame(view: Uint8Array, bufferIndex: number): void;
  /** The send posted from `slot` completed; the slot is free. */
  sendDone(slot: number): void;
  /** The send posted from `slot` failed; the slot is free; the link will close. */
  sendFailed(slot: number, error: Error): void;
  /** The RDMA READ posted with `token` completed: the bytes are in the sink. */
  readDone(token: number): void;
  /** The RDMA READ posted with `token` failed; `error.message` names the status. */
  readFailed(token: number, error: Error): void;
  /** The link is closed (exactly once); `undefined` for a local orderly close. */
  closed(error: Error | undefined): void;
}

/** One connected link. */
export interface Link {
  readonly transport: TransportKind;
  /** Human-readable peer address, e.g. "192.0.2.1:7471". */
  readonly remoteAddress: string;
  readonly capabilities: LinkCapabilities;
  /** Registered region the peer may READ (zcopy links only). */
  readonly source: RegisteredRegion | undefined;
  /** Registered region RDMA READs land in (zcopy links only). */
  readonly sink: RegisteredRegion | undefined;
  /** Starts event delivery to `events`. Called once, right after connect/accept. */
  start(events: LinkEvents): void;
  /** The writable view of send slot `slot` (`sendSlotSize` bytes), made once. */
  sendSlot(slot: number): Uint8Array;
  /** Posts `length` bytes of send slot `slot` as one frame. */
  postSend(slot: number, length: number): void;
  /** Gives receive buffer `bufferIndex` back to the link (posts it again). */
  repost(bufferIndex: number): void;
  /** RDMA READ of `length` bytes at `remoteAddr`/`rkey` into `sink.bytes[sinkOffset..]`. */
  postRead(token: number, sinkOffset: number, length: number, remoteAddr: bigint, rkey: number): void;
  /** Tears the link down (idempotent); `closed` follows once. */
  close(error?: Error): void;
  /**
   * How far the peer's RDMA READs reach into `source` (zcopy links):
   * `"per-transfer region"`: only the bytes of the SrcAvail outstanding, from
   * `advertise` until `withdraw`; `"whole arena"`: all of `source`, always.
   */
  readonly remoteAccess?: RemoteAccess;
  /**
   * Optional (per-transfer links): opens `source.bytes[offset, offset+length)`
   * to the peer, and only those bytes, for one SrcAvail; returns the rkey the
   * SrcAvail carries instead of `source.rkey`. Throws when it cannot.
   */
  advertise?(offset: number, length: number): number;
  /** Optional: closes what `advertise(offset, …)` opened; from its return the peer's READs of it fail. */
  withdraw?(offset: number): void;
  /** Bytes of buffers this link holds now (registered with the device on rdma): receive ring, send slots, arenas. */
  readonly memoryBytes?: number;
  /** The link still has its footprint before trust (opened with `preAuth`, not grown yet). */
  readonly preAuth?: boolean;
  /**
   * Links opened with `preAuth`: allocates (registers) the full receive ring,
   * send slots and zcopy arenas, posts the new receive buffers, and returns
   * the full capabilities (see the module header). Throws when it cannot
   * (memory); a second call, or one after close, is a no-op returning the
   * current capabilities.
   */
  grow?(): LinkCapabilities;
}

/** See `Link.remoteAccess`. */
export type RemoteAccess = "per-transfer region" | "whole arena";

/** Sizes a socket asks of a link (the link may round them; it reports what it got in `capabilities`). */
export interface LinkSizes {
  /** @default 65536 */
  recvBufferSize?: number;
  /** @default 64 */
  recvBufferCount?: number;
  /** @default 64 */
  sendSlots?: number;
  /** @default 16777216 */
  maxMessageSize?: number;
}

/** Options of `connectLink`. */
export interface LinkConnectOptions extends LinkSizes {
  /** Start with the footprint before trust (`true`: `PRE_AUTH_DEFAULTS`); `grow()` adds the rest. @default full sizes at once */
  preAuth?: PreAuthSizes | boolean;
  host: string;
  port: number;
  /** Connection establishment timeout. @default 5000 */
  timeoutMs?: number;
  /** tcp only: TLS with mutual certificate checks (see `src/sdp/links/tls.ts`). @default plain tcp */
  tls?: TlsConfig;
}

/** Options of `listenLinks`. */
export interface LinkListenOptions extends LinkSizes {
  /** Every accepted link starts with the footprint before trust (see `LinkConnectOptions.preAuth`). @default full sizes at once */
  preAuth?: PreAuthSizes | boolean;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** tcp only: TLS; peers must present a certificate signed by its CA. @default plain tcp */
  tls?: TlsConfig;
}

/** Accepted links, as a listener yields them. */
export interface LinkListener extends AsyncIterable<Link> {
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/**
 * What a transport module (`rdma.ts`, `tcp.ts`) exports, so that
 * `mod.ts` can load it with a dynamic `import()`.
 */
export interface LinkTransportModule {
  connectLink(options: LinkConnectOptions): Promise<Link>;
  listenLinks(options: LinkListenOptions): Promise<LinkListener>;
}

/** Defaults shared by all links. */
export const LINK_DEFAULTS = {
  recvBufferSize: 65536,
  recvBufferCount: 64,
  sendSlots: 64,
  maxMessageSize: 16 * 1024 * 1024,
} as const;

/**
 * Fills in defaults and checks sizes, with errors that name the option and
 * the bad value. Every link uses it so the rules are the same everywhere.
 */
export function resolveSizes(o: LinkSizes): Required<LinkSizes> {
  const s = {
    recvBufferSize: o.recvBufferSize ?? LINK_DEFAULTS.recvBufferSize,
    recvBufferCount: o.recvBufferCount ?? LINK_DEFAULTS.recvBufferCount,
    sendSlots: o.sendSlots ?? LINK_DEFAULTS.sendSlots,
    maxMessageSize: o.maxMessageSize ?? LINK_DEFAULTS.maxMessageSize,
  };
  if (!Number.isInteger(s.recvBufferSize) || s.recvBufferSize < 64) {
    throw new RangeError(`'recvBufferSize' must be an integer of at least 64: got ${s.recvBufferSize}`);
  }
  if (!Number.isInteger(s.recvBufferCount) || s.recvBufferCount < 4 || s.recvBufferCount > 65535) {
    throw new RangeError(`'recvBufferCount' must be an integer in 4..65535: got ${s.recvBufferCount}`);
  }
  if (!Number.isInteger(s.sendSlots) || s.sendSlots < 2) {
    throw new RangeError(`'sendSlots' must be an integer of at least 2: got ${s.sendSlots}`);
  }
  if (!Number.isInteger(s.maxMessageSize) || s.maxMessageSize < 1 || s.maxMessageSize > 0xffffffff) {
    throw new RangeError(`'maxMessageSize' must be an integer in 1..4294967295: got ${s.maxMessageSize}`);
  }
  return s;
}

/** The capabilities of a link with `sizes`: send slots are as large as a receive buffer. */
export function linkCapabilities(
  sizes: Required<LinkSizes>,
  zcopy: boolean,
  sendCompletionMeansDelivered: boolean,
): LinkCapabilities {
  return { ...sizes, zcopy, sendSlotSize: sizes.recvBufferSize, sendCompletionMeansDelivered };
}

/** `count` views of `size` bytes each over one buffer (receive rings, send slots), made once. */
export function carve(buffer: Uint8Array, count: number, size: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => buffer.subarray(i * size, (i + 1) * size));
}

/**
 * The buffers a link adds when it grows to its full sizes (`grow()` after
 * trust): the receive ring and the send slots are extended in place to
 * `full`'s counts, each new buffer `frameSize` bytes, and the new receive
 * buffers' indices are appended to `posted`. Returns the bytes added.
 */
export function growBuffers(
  recv: Uint8Array[],
  slots: Uint8Array[],
  posted: number[],
  full: { recvBufferCount: number; sendSlots: number },
  frameSize: number,
): number {
  const moreRecv = full.recvBufferCount - recv.length;
  const moreSlots = full.sendSlots - slots.length;
  if (moreRecv < 0 || moreSlots < 0) {
    throw new RangeError(`growBuffers: the full sizes (${full.recvBufferCount} buffers, ${full.sendSlots} slots) are below the current ones (${recv.length}, ${slots.length})`);
  }
  for (const b of carve(new Uint8Array(frameSize * moreRecv), moreRecv, frameSize)) posted.push(recv.push(b) - 1);
  for (const s of carve(new Uint8Array(frameSize * moreSlots), moreSlots, frameSize)) slots.push(s);
  return frameSize * (moreRecv + moreSlots);
}
