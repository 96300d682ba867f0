/**
 * The TCP link: SDP frames over a `node:net` stream (works in Bun and Deno),
 * for hosts without RDMA. Same framing and engine as the rdma link, bcopy only
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
 * 2. Send: a slot's bytes are written to the stream; the write callback (the
 *    bytes are in the kernel) is `sendDone`, so a slot is reused only after
 *    the stream is done with it. Writes in one turn are corked together.
 *    Backpressure: at most `sendSlots` frames are in the stream's buffers, and
 *    credits stop the peer before our receive ring overflows.
 * 3. The return: a send completion here does not mean delivery
 *    (`sendCompletionMeansDelivered: false`); the engine resolves a send when
 *    the peer's `mseq_ack` covers its last frame (the peer acknowledges
 *    message frames at once).
 * 4. Close: a local close ends the stream after flushing (so a final DISCONN or
 *    ABORT goes out) and destroys it if the peer does not finish within a
 *    second; the peer's FIN, a reset or an error closes the link with an error
 *    naming it.
 *
 * @module
 */
import * as net from "node:net";
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
  resolveSizes,
} from "../sdp/link.ts";
import { HEADER_SIZE, ProtocolError } from "../sdp/wire.ts";

const DESTROY_AFTER_MS = 1000;

/** One TCP connection as a link. */
export class TcpLink implements Link {
  readonly transport = "tcp" as const;
  readonly remoteAddress: string;
  readonly capabilities: LinkCapabilities;
  readonly source = undefined;
  readonly sink = undefined;
  readonly #socket: net.Socket;
  readonly #recv: Uint8Array[];
  readonly #slots: Uint8Array[];
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
  #corked = false;
  #reportOnStart = false;

  constructor(socket: net.Socket, sizes: Required<LinkSizes>) {
    this.#socket = socket;
    this.remoteAddress = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    const { recvBufferSize, recvBufferCount, sendSlots } = sizes;
    this.capabilities = linkCapabilities(sizes, false, false);
    this.#recv = carve(new Uint8Array(recvBufferSize * recvBufferCount), recvBufferCount, recvBufferSize);
    this.#slots = carve(new Uint8Array(recvBufferSize * sendSlots), sendSlots, recvBufferSize);
    for (let i = 0; i < recvBufferCount; i++) this.#posted.push(i);
    socket.setNoDelay(true);
    socket.pause();
    socket.on("data", (chunk: Uint8Array) => this.#onData(chunk));
    socket.on("error", (e: Error) => this.#fail(new Error(`tcp connection error: ${e.message}`, { cause: e })));
    socket.on("end", () => this.#fail(new Error("the peer disconnected (end of stream)")));
    socket.on("close", () => this.#fail(new Error("the connection closed")));
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
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      queueMicrotask(() => {
        this.#corked = false;
        if (!this.#socket.destroyed) this.#socket.uncork();
      });
    }
    this.#socket.write(this.#slots[slot].subarray(0, length), (err?: Error | null) => {
      if (this.#closing || !this.#events) return;
      if (err) this.#events.sendFailed(slot, err);
      else this.#events.sendDone(slot);
    });
  }

  repost(bufferIndex: number): void {
    if (!this.#closing) this.#posted.push(bufferIndex);
  }

  postRead(): void {
    throw new Error("the tcp link has no zcopy: postRead is not available");
  }

  close(error?: Error): void {
    if (this.#closing) return;
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
    while (i < chunk.length && !this.#closing) {
      if (this.#cur < 0) {
        const n = Math.min(8 - this.#headFill, chunk.length - i);
        this.#head.set(chunk.subarray(i, i + n), this.#headFill);
        this.#headFill += n;
        i += n;
        if (this.#headFill < 8) return;
        const h = this.#head;
        const len = ((h[4] << 24) | (h[5] << 16) | (h[6] << 8) | h[7]) >>> 0;
        if (len < HEADER_SIZE) {
          return this.#protocolError(`frame declares ${len} bytes, less than the ${HEADER_SIZE}-byte header`);
        }
        if (len > this.capabilities.recvBufferSize) {
          return this.#protocolError(
            `frame of ${len} bytes exceeds the receive buffer size ${this.capabilities.recvBufferSize}`,
          );
        }
        const index = this.#posted.shift();
        if (index === undefined) {
          return this.#protocolError(`frame arrived with no receive buffer posted: the peer ignored its credits`);
        }
        this.#cur = index;
        this.#curLen = len;
        this.#recv[index].set(h, 0);
        this.#curFill = 8;
        this.#headFill = 0;
      }
      const buf = this.#recv[this.#cur];
      const n = Math.min(this.#curLen - this.#curFill, chunk.length - i);
      buf.set(chunk.subarray(i, i + n), this.#curFill);
      this.#curFill += n;
      i += n;
      if (this.#curFill === this.#curLen) {
        const index = this.#cur;
        this.#cur = -1;
        this.#events!.frame(buf.subarray(0, this.#curLen), index);
      }
    }
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
  const timeoutMs = options.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: options.host, port: options.port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`tcp connect to ${options.host}:${options.port} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    s.once("error", (e: Error) => {
      clearTimeout(timer);
      reject(new Error(`tcp connect to ${options.host}:${options.port} failed: ${e.message}`, { cause: e }));
    });
    s.once("connect", () => {
      clearTimeout(timer);
      s.removeAllListeners("error");
      resolve(new TcpLink(s, sizes));
    });
  });
}

class TcpLinkListener implements LinkListener {
  readonly address: { host: string; port: number };
  readonly #server: net.Server;
  readonly #accepted = new AcceptQueue<Link>();

  constructor(server: net.Server, host: string, sizes: Required<LinkSizes>) {
    this.#server = server;
    const a = server.address() as net.AddressInfo;
    this.address = { host, port: a.port };
    server.on("connection", (s: net.Socket) => {
      if (this.#accepted.closed) return void s.destroy();
      this.#accepted.push(new TcpLink(s, sizes));
    });
  }

  close(): Promise<void> {
    if (this.#accepted.closed) return Promise.resolve();
    for (const l of this.#accepted.close()) l.close();
    return new Promise((r) => this.#server.close(() => r()));
  }

  [Symbol.asyncIterator](): AsyncIterator<Link> {
    return this.#accepted[Symbol.asyncIterator]();
  }
}

/** Listens for TCP links; port 0 picks a free port (see `address`). */
export function listenLinks(options: LinkListenOptions): Promise<LinkListener> {
  const sizes = resolveSizes(options);
  return new Promise((resolve, reject) => {
    const server = net.createServer({ pauseOnConnect: true });
    server.once("error", (e: Error) =>
      reject(new Error(`tcp listen on ${options.host}:${options.port} failed: ${e.message}`, { cause: e })));
    server.listen(options.port, options.host, () => {
      server.removeAllListeners("error");
      resolve(new TcpLinkListener(server, options.host, sizes));
    });
  });
}
