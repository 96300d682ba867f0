/**
 * The TCP link: SDP frames over a TCP byte stream, for hosts without RDMA:
 * Bun's native sockets under Bun (`bun_tcp.ts`), `node:net` under Deno and
 * for TLS (`node:tls`). Same framing and engine as the rdma link, bcopy only
 * (`zcopy: false`).
 *
 * 1. Receive: the stream is cut into frames by the header's `len`; each frame
 *    is copied into one of `recvBufferCount` receive buffers of
 *    `recvBufferSize` bytes (the same ring the rdma link has), handed to the
 *    socket, and reused after `repost`. Partial and coalesced frames are
 *    handled by a small header scratch and a fill pointer. A frame longer than
 *    a receive buffer, shorter than a header, or arriving with no buffer
 *    posted (the peer ignored its credits) closes this connection alone with a
 *    `ProtocolError`.
 * 2. Send: the frames posted in one turn go to the stream as one contiguous
 *    write (a lone frame straight from its slot, several copied together
 *    into one buffer), flushed once the turn's other work is done; the
 *    write's callback (the bytes are in the kernel) is `sendDone` for each of
 *    its frames, so a slot is reused only after the stream is done with it.
 *    Backpressure: at most `sendSlots` frames are in the stream's buffers, and
 *    credits stop the peer before our receive ring overflows. No closure or
 *    array is made per frame: posted slots wait in fixed rings.
 *
 *    Each receive buffer and send slot holds `recvBufferSize` bytes plus a
 *    frame header, so a message of `recvBufferSize` bytes (64 KiB by
 *    default) travels in one frame; the HELLO announces the whole size.
 * 3. The return: a send completion here does not mean delivery
 *    (`sendCompletionMeansDelivered: false`); the engine resolves a send when
 *    the peer's `mseq_ack` covers its last frame (the peer acknowledges
 *    message frames at once).
 * 4. Before trust (`preAuth`): the link starts with `PreAuthSizes` buffers
 *    and slots (8 + 8 of 64 KiB + a header by default, about 1 MiB rather
 *    than 8 MiB); `grow()` allocates the rest (indices continue) and makes the
 *    new buffers available at once. The rings of slot numbers are sized for
 *    the full count from the start (a few hundred bytes).
 * 5. Close: a local close ends the stream after flushing (so a final DISCONN or
 *    ABORT goes out) and destroys it if the peer does not finish within a
 *    second; the peer's FIN, a reset or an error closes the link with an error
 *    naming it.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import * as net from "node:net";
import * as tls from "node:tls";
import { tlsMaterial } from "./tls.ts";
import { connectNative, listenNative, nativeTcp, type StreamSocket } from "./bun_tcp.ts";
import { setImmediate } from "node:timers";
import { AcceptQueue } from "../../accept_queue.ts";
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
  resolvePreAuth,
  resolveSizes,
} from "./link.ts";
import { HEADER_SIZE, ProtocolError } from "../wire.ts";

const DESTROY_AFTER_MS = 1000;
/** Several frames of one turn up to this many bytes are copied into a reused staging buffer. */
const STAGE_SIZE = 4096;

/**
 * A `Buffer` view of `len` bytes of `b` from `at`: `node:net` turns a plain
 * `Uint8Array` handed to `write` into a `Buffer` first (a new object per
 * write under Deno); a cached `Buffer` view goes through as it is.
 */
function bufferView(b: Uint8Array, at: number, len: number): Uint8Array {
  return Buffer.from(b.buffer, b.byteOffset + at, len);
}

/** A staging buffer and its last exact-length view. */
interface Stage {
  buf: Uint8Array;
  view: Uint8Array | undefined;
}

/** One TCP connection as a link. */
export class TcpLink implements Link {
  readonly transport = "tcp" as const;
  readonly remoteAddress: string;
  capabilities: LinkCapabilities;
  readonly source = undefined;
  readonly sink = undefined;
  readonly #socket: StreamSocket;
  readonly #recv: Uint8Array[];
  readonly #slots: Uint8Array[];
  /** The full sizes, while the link has its footprint before trust. */
  #full: Required<LinkSizes> | undefined;
  #memoryBytes: number;
  /** Per receive buffer and per slot, the last view of a frame: reused for the same length (a view costs ~0.1 µs). */
  readonly #recvViews: (Uint8Array | undefined)[] = [];
  readonly #slotViews: (Uint8Array | undefined)[] = [];
  #posted: number[] = [];
  #events: LinkEvents | undefined;
  #closing = false;
  #reported = false;
  #closeError: Error | undefined;
  // Receive state: header scratch, then the buffer being filled.
  readonly #head = new Uint8Array(8);
  #headFill = 0;
  #cur = -1;
  #curLen = 0;
  #curFill = 0;
  #reportOnStart = false;
  // Send state: frames posted this turn (slot, length), then per write in flight its frame count.
  readonly #batchSlot: Int32Array;
  readonly #batchLen: Int32Array;
  #batchCount = 0;
  #batchBytes = 0;
  #flushQueued = false;
  /** Slots written and not yet completed, in write order (a ring; at most `sendSlots`). */
  readonly #writtenSlots: Int32Array;
  #writtenHead = 0;
  #writtenCount = 0;
  /** Frames per write in flight, in write order (a ring), and the staging buffer each holds (-1: none). */
  readonly #writeFrames: Int32Array;
  readonly #writeStage: Int32Array;
  readonly #stages: Stage[] = [];
  readonly #freeStages: number[] = [];
  #writesHead = 0;
  #writesCount = 0;
  readonly #flushBound = () => this.#flush();
  readonly #writtenBound = (err?: Error | null) => this.#written(err);

  /** `small`: the sizes before trust (`preAuth`), `grow()` goes to `sizes`; undefined: full at once. */
  constructor(socket: StreamSocket, sizes: Required<LinkSizes>, small?: Required<LinkSizes>) {
    this.#socket = socket;
    this.remoteAddress = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    const now = small ?? sizes;
    this.#full = small ? sizes : undefined;
    const { recvBufferCount } = now;
    const sendSlots = sizes.sendSlots; // the slot-number rings: full size from the start
    // A buffer holds recvBufferSize bytes of payload plus a header: a 64 KiB message is one frame.
    const frameSize = sizes.recvBufferSize + HEADER_SIZE;
    this.capabilities = linkCapabilities({ ...now, recvBufferSize: frameSize }, false, false);
    this.#recv = carve(new Uint8Array(frameSize * recvBufferCount), recvBufferCount, frameSize);
    this.#slots = carve(new Uint8Array(frameSize * now.sendSlots), now.sendSlots, frameSize);
    this.#memoryBytes = frameSize * (recvBufferCount + now.sendSlots);
    this.#batchSlot = new Int32Array(sendSlots);
    this.#batchLen = new Int32Array(sendSlots);
    this.#writtenSlots = new Int32Array(sendSlots);
    this.#writeFrames = new Int32Array(sendSlots);
    this.#writeStage = new Int32Array(sendSlots);
    for (let i = 0; i < recvBufferCount; i++) this.#posted.push(i);
    socket.setNoDelay(true);
    socket.pause();
    socket.on("data", (chunk: Uint8Array) => this.#onData(chunk));
    socket.on("error", (e: Error) => this.#fail(new Error(`tcp connection error: ${e.message}`, { cause: e })));
    socket.on("end", () => this.#fail(new Error("the peer disconnected (end of stream)")));
    socket.on("close", () => this.#fail(new Error("the connection closed")));
  }

  get memoryBytes(): number {
    return this.#memoryBytes;
  }

  get preAuth(): boolean {
    return this.#full !== undefined;
  }

  grow(): LinkCapabilities {
    const full = this.#full;
    if (!full || this.#closing) return this.capabilities;
    const frameSize = this.capabilities.recvBufferSize;
    this.#memoryBytes += growBuffers(this.#recv, this.#slots, this.#posted, full, frameSize);
    this.#full = undefined;
    this.capabilities = linkCapabilities({ ...full, recvBufferSize: frameSize }, false, false);
    return this.capabilities;
  }

  start(events: LinkEvents): void {
    this.#events = events;
    if (this.#reportOnStart) return void setImmediate(() => this.#report());
    if (this.#socket.destroyed) return this.#fail(new Error("the connection closed before it started"));
    this.#socket.resume();
  }

  sendSlot(slot: number): Uint8Array {
    return this.#slots[slot];
  }

  postSend(slot: number, length: number): void {
    if (this.#closing) return;
    const n = this.#batchCount++;
    this.#batchSlot[n] = slot;
    this.#batchLen[n] = length;
    this.#batchBytes += length;
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      // After the turn's microtasks, so that an acknowledgement and the next message share
      // a write (measured in bench/datapath.ts: faster than flushing in a microtask).
      setImmediate(this.#flushBound);
    }
  }

  /** Writes the frames posted since the last flush as one buffer. */
  #flush(): void {
    this.#flushQueued = false;
    const n = this.#batchCount;
    if (n === 0 || this.#closing) return;
    const cap = this.#writtenSlots.length;
    let data: Uint8Array;
    let stage = -1;
    const total = this.#batchBytes;
    if (n === 1) {
      const slot = this.#batchSlot[0], len = this.#batchLen[0];
      let v = this.#slotViews[slot];
      if (v === undefined || v.length !== len) v = this.#slotViews[slot] = bufferView(this.#slots[slot], 0, len);
      data = v;
    } else {
      let st: Stage | undefined;
      if (total <= STAGE_SIZE) {
        stage = this.#freeStages.pop() ?? this.#stages.push({ buf: new Uint8Array(STAGE_SIZE), view: undefined }) - 1;
        st = this.#stages[stage];
      }
      const buf = st ? st.buf : new Uint8Array(total);
      let at = 0;
      for (let k = 0; k < n; k++) {
        const len = this.#batchLen[k];
        const from = this.#slots[this.#batchSlot[k]];
        if (len <= 256) for (let i = 0; i < len; i++) buf[at + i] = from[i];
        else buf.set(from.subarray(0, len), at);
        at += len;
      }
      if (st) {
        if (st.view === undefined || st.view.length !== total) st.view = bufferView(buf, 0, total);
        data = st.view;
      } else data = bufferView(buf, 0, total);
    }
    for (let k = 0; k < n; k++) {
      this.#writtenSlots[(this.#writtenHead + this.#writtenCount++) % cap] = this.#batchSlot[k];
    }
    const w = (this.#writesHead + this.#writesCount++) % cap;
    this.#writeFrames[w] = n;
    this.#writeStage[w] = stage;
    this.#batchCount = 0;
    this.#batchBytes = 0;
    this.#socket.write(data, this.#writtenBound);
  }

  /** The oldest write in flight is done (or failed): its frames' slots are free. */
  #written(err: Error | null | undefined): void {
    if (this.#writesCount === 0) return;
    const cap = this.#writtenSlots.length;
    const n = this.#writeFrames[this.#writesHead];
    const stage = this.#writeStage[this.#writesHead];
    if (stage >= 0) this.#freeStages.push(stage); // the stream is done with it
    this.#writesHead = (this.#writesHead + 1) % cap;
    this.#writesCount--;
    for (let k = 0; k < n; k++) {
      const slot = this.#writtenSlots[this.#writtenHead];
      this.#writtenHead = (this.#writtenHead + 1) % cap;
      this.#writtenCount--;
      if (this.#closing || !this.#events) continue;
      if (err) this.#events.sendFailed(slot, err);
      else this.#events.sendDone(slot);
    }
  }

  repost(bufferIndex: number): void {
    if (!this.#closing) this.#posted.push(bufferIndex);
  }

  postRead(): void {
    throw new Error("the tcp link has no zcopy: postRead is not available");
  }

  close(error?: Error): void {
    if (this.#closing) return;
    this.#flush(); // frames posted this turn (a final DISCONN or ABORT) go out before the end
    this.#closing = true;
    this.#closeError = error;
    const s = this.#socket;
    const t = setTimeout(() => s.destroy(), DESTROY_AFTER_MS);
    (t as unknown as { unref?: () => void }).unref?.();
    s.once("close", () => clearTimeout(t));
    if (s.destroyed) this.#report();
    else {
      s.end();
      s.once("close", () => this.#report());
    }
  }

  #onData(chunk: Uint8Array): void {
    let i = 0;
    const end = chunk.length;
    while (i < end && !this.#closing) {
      if (this.#cur < 0) {
        let len: number;
        if (this.#headFill === 0 && end - i >= 8) {
          len = ((chunk[i + 4] << 24) | (chunk[i + 5] << 16) | (chunk[i + 6] << 8) | chunk[i + 7]) >>> 0;
          const index = this.#take(len);
          if (index < 0) return;
          if (end - i >= len) {
            // The whole frame is in this chunk: one copy, straight into the receive buffer.
            const buf = this.#recv[index];
            if (len <= 128) for (let k = 0; k < len; k++) buf[k] = chunk[i + k];
            else buf.set(chunk.subarray(i, i + len));
            i += len;
            this.#events!.frame(this.#view(index, len), index);
            continue;
          }
          this.#cur = index;
          this.#curLen = len;
          this.#curFill = 0;
        } else {
          const n = Math.min(8 - this.#headFill, end - i);
          for (let k = 0; k < n; k++) this.#head[this.#headFill + k] = chunk[i + k];
          this.#headFill += n;
          i += n;
          if (this.#headFill < 8) return;
          const h = this.#head;
          len = ((h[4] << 24) | (h[5] << 16) | (h[6] << 8) | h[7]) >>> 0;
          const index = this.#take(len);
          if (index < 0) return;
          this.#cur = index;
          this.#curLen = len;
          this.#recv[index].set(h, 0);
          this.#curFill = 8;
          this.#headFill = 0;
        }
      }
      const buf = this.#recv[this.#cur];
      const n = Math.min(this.#curLen - this.#curFill, end - i);
      buf.set(chunk.subarray(i, i + n), this.#curFill);
      this.#curFill += n;
      i += n;
      if (this.#curFill === this.#curLen) {
        const index = this.#cur;
        this.#cur = -1;
        this.#events!.frame(this.#view(index, this.#curLen), index);
      }
    }
  }

  /** A view of the first `len` bytes of receive buffer `index` (the buffer is ours again, so is its last view). */
  #view(index: number, len: number): Uint8Array {
    const v = this.#recvViews[index];
    if (v !== undefined && v.length === len) return v;
    return (this.#recvViews[index] = this.#recv[index].subarray(0, len));
  }

  /** Checks a frame's declared length and takes a posted receive buffer for it; -1 after a protocol error. */
  #take(len: number): number {
    if (len < HEADER_SIZE) {
      this.#protocolError(`frame declares ${len} bytes, less than the ${HEADER_SIZE}-byte header`);
      return -1;
    }
    const size = this.capabilities.recvBufferSize;
    if (len > size) {
      this.#protocolError(
        `frame of ${len} bytes exceeds the receive buffer size ${size - HEADER_SIZE} (+ the ${HEADER_SIZE}-byte header)`,
      );
      return -1;
    }
    const index = this.#posted.shift();
    if (index === undefined) {
      this.#protocolError(`frame arrived with no receive buffer posted: the peer ignored its credits`);
      return -1;
    }
    return index;
  }

  #protocolError(message: string): void {
    this.#fail(new ProtocolError(message));
    this.#socket.destroy();
  }

  #fail(error: Error): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#closeError = error;
    this.#socket.destroy();
    setImmediate(() => this.#report());
  }

  #report(): void {
    if (this.#reported) return;
    if (!this.#events) {
      this.#reportOnStart = true; // not started yet: `start` reports
      return;
    }
    this.#reported = true;
    this.#events.closed(this.#closeError);
  }
}

/** Connects a TCP link. */
export function connectLink(options: LinkConnectOptions): Promise<Link> {
  const sizes = resolveSizes(options);
  const small = resolvePreAuth(sizes, options.preAuth);
  const timeoutMs = options.timeoutMs ?? 5000;
  const secure = options.tls === undefined ? undefined : tlsMaterial(options.tls);
  const what = `${secure ? "tls" : "tcp"} connect to ${options.host}:${options.port}`;
  if (nativeTcp && !secure) return connectNativeLink(options.host, options.port, timeoutMs, what, sizes, small);
  return new Promise((resolve, reject) => {
    const s = secure
      ? tls.connect({
        host: options.host,
        port: options.port,
        ...secure,
        // An address is checked against the certificate's IP names; a name goes in SNI.
        servername: secure.servername ?? (net.isIP(options.host) === 0 ? options.host : undefined),
      })
      : net.connect({ host: options.host, port: options.port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`${what} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    s.once("error", (e: Error) => {
      clearTimeout(timer);
      reject(new Error(`${what} failed: ${e.message}`, { cause: e }));
    });
    s.once(secure ? "secureConnect" : "connect", () => {
      clearTimeout(timer);
      s.removeAllListeners("error");
      resolve(new TcpLink(s, sizes, small));
    });
  });
}

/** Bun's native connect, with the same errors and timeout as the `node:net` one. */
function connectNativeLink(
  host: string,
  port: number,
  timeoutMs: number,
  what: string,
  sizes: Required<LinkSizes>,
  small: Required<LinkSizes> | undefined,
): Promise<Link> {
  return new Promise((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      reject(new Error(`${what} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    connectNative(host, port).then((s) => {
      clearTimeout(timer);
      if (timedOut) s.destroy();
      else resolve(new TcpLink(s, sizes, small));
    }, (e: Error) => {
      clearTimeout(timer);
      reject(new Error(`${what} failed: ${e.message}`, { cause: e }));
    });
  });
}

class TcpLinkListener implements LinkListener {
  readonly address: { host: string; port: number };
  readonly #stop: () => Promise<void>;
  readonly #accepted = new AcceptQueue<Link>();
  readonly #sizes: Required<LinkSizes>;
  readonly #small: Required<LinkSizes> | undefined;

  constructor(
    host: string,
    port: number,
    stop: () => Promise<void>,
    sizes: Required<LinkSizes>,
    small: Required<LinkSizes> | undefined,
  ) {
    this.address = { host, port };
    this.#stop = stop;
    this.#sizes = sizes;
    this.#small = small;
  }

  /** An accepted connection (paused until its link starts). */
  accept(s: StreamSocket): void {
    if (this.#accepted.closed) return void s.destroy();
    this.#accepted.push(new TcpLink(s, this.#sizes, this.#small));
  }

  close(): Promise<void> {
    if (this.#accepted.closed) return Promise.resolve();
    for (const l of this.#accepted.close()) l.close();
    return this.#stop();
  }

  [Symbol.asyncIterator](): AsyncIterator<Link> {
    return this.#accepted[Symbol.asyncIterator]();
  }
}

/** Listens for TCP links; port 0 picks a free port (see `address`). */
export function listenLinks(options: LinkListenOptions): Promise<LinkListener> {
  const sizes = resolveSizes(options);
  const small = resolvePreAuth(sizes, options.preAuth);
  const secure = options.tls === undefined ? undefined : tlsMaterial(options.tls);
  if (nativeTcp && !secure) {
    let listener: TcpLinkListener | undefined;
    try {
      const server = listenNative(options.host, options.port, (s) => listener!.accept(s));
      listener = new TcpLinkListener(options.host, server.port, () => Promise.resolve(server.stop(false)), sizes, small);
      return Promise.resolve(listener);
    } catch (e) {
      return Promise.reject(new Error(`tcp listen on ${options.host}:${options.port} failed: ${(e as Error).message}`, { cause: e }));
    }
  }
  return new Promise((resolve, reject) => {
    const server = secure
      ? tls.createServer({ ...secure, requestCert: true, rejectUnauthorized: true, pauseOnConnect: true } as tls.TlsOptions)
      : net.createServer({ pauseOnConnect: true });
    server.once("error", (e: Error) =>
      reject(new Error(`tcp listen on ${options.host}:${options.port} failed: ${e.message}`, { cause: e })));
    server.listen(options.port, options.host, () => {
      server.removeAllListeners("error");
      const port = (server.address() as net.AddressInfo).port;
      const listener = new TcpLinkListener(options.host, port, () => new Promise((r) => server.close(() => r())), sizes, small);
      // A peer that fails the TLS handshake (no certificate, another CA) is dropped by the TLS server itself.
      if (secure) server.on("tlsClientError", () => {});
      server.on(secure ? "secureConnection" : "connection", (s: net.Socket) => listener.accept(s));
      resolve(listener);
    });
  });
}
