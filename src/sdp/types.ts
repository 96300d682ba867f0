/**
 * The socket contract shared by every transport (docs/ARCHITECTURE.md, docs/PROTOCOL.md §4).
 *
 * A socket carries whole messages (not a byte stream), in order, in both
 * directions. `send` resolves with the *return*: the moment the transport
 * guarantees the bytes are in the peer's memory (RdmaRdCompl for zcopy, the
 * reliable-connection send completion for bcopy, a transport-level
 * acknowledgement on TCP). Upper layers (rmi, session) depend only on this file.
 *
 * @module
 */

/** Which transport a socket runs on. `auto` is resolved to one of these. */
export type TransportKind = "rdma" | "tcp" | "loopback";

/** What `listen`/`connect` accept: a concrete transport, or `auto` (rdma where a device is up, else tcp). */
export type TransportChoice = TransportKind | "auto";

/** Counters of one socket; all monotonic. */
export interface SocketStats {
  bytesSent: number;
  bytesReceived: number;
  messagesSent: number;
  messagesReceived: number;
  /** Messages sent by copy through posted receive buffers (DATA). */
  bcopySends: number;
  /** Messages sent by SrcAvail → RDMA READ → RdmaRdCompl. */
  zcopySends: number;
  /** Times a send had to wait for credits. */
  creditStalls: number;
  /** SrcAvailCancel frames sent: zcopy transfers that timed out waiting for RdmaRdCompl. */
  cancels: number;
  /** zcopy messages re-sent by bcopy after the peer answered SendSM (cancel accepted or READ failed). */
  zcopyFallbacks: number;
  /** RDMA READs (of the peer's SrcAvail) that failed on this side. */
  readFailures: number;
  /** Pure credit updates / acknowledgements sent (DATA without payload). */
  creditUpdates: number;
  /**
   * zcopy links: how far the peer's RDMA READs reach into our source arena:
   * only the bytes of the message advertised, until its RdmaRdCompl or SendSM
   * (`"per-transfer region"`), or the whole arena for the connection's life
   * (`"whole arena"`: the fallback where per-transfer registration failed).
   */
  remoteAccess?: "per-transfer region" | "whole arena";
  /**
   * Bytes of buffers the connection's link holds now (on rdma: registered
   * with the device, so pinned): receive ring, send slots, zcopy arenas.
   * Small before trust on a socket opened with `preAuth`.
   */
  memoryBytes?: number;
  /** The socket still has its limits before trust (`preAuth`, no `trust()` yet). */
  preAuth?: boolean;
}

/**
 * One received message. `bytes` may be a view into registered memory that is
 * valid only until `release()`; `copy()` returns bytes the caller owns.
 * Releasing twice is harmless.
 *
 * A message is never taken away under the application: if the connection
 * closes (either side, or the peer dies) while the message is held, read or
 * not yet read, `bytes` is replaced by a copy before the transport's memory is
 * freed, so `message.bytes` stays readable, with the same content, until
 * `release()` (and after). Keep the message rather than an earlier
 * `bytes` (or a subarray of it) across an `await`: only `message.bytes` is
 * swapped for the copy.
 */
export interface ReceivedMessage {
  readonly bytes: Uint8Array;
  copy(): Uint8Array;
  release(): void;
}

/**
 * A connected message socket (any transport).
 *
 * Iterating it yields every received message, in order. **No received
 * message is discarded at the end of a connection**: when the local side
 * calls `close()`, or the connection drops (the peer closed, crashed or was
 * killed, or the transport failed), every message that was already received
 * is still yielded, in order and intact, before the iterator ends. "Received"
 * means the transport acknowledged it to the sender, so that the sender's
 * `send` may have resolved:
 *
 * - rdma: its receive completed in the completion queue, including
 *   completions first polled during the close itself (the connection's final
 *   poll), and messages that arrive after a local `close()` until the peer
 *   answers it;
 * - tcp: the frame was taken from the stream (the sender's return is our
 *   acknowledgement, sent only for frames taken);
 * - loopback: the frame landed in the receive buffer.
 *
 * The iterator ends after the transport reported its end, and `closed`
 * resolves at the same time. Messages the application does not want after a
 * close are simply released (or never read: they are garbage once copied
 * out). What was still in flight and not acknowledged (a zcopy message whose
 * READ had not completed, bytes the transport never took) is not received:
 * its `send` rejects on the sender.
 */
export interface MessageSocket extends AsyncIterable<ReceivedMessage> {
  readonly transport: TransportKind;
  /** Human-readable peer address, e.g. "192.0.2.1:7471". */
  readonly remoteAddress: string;
  /**
   * Sends one message. Resolves on the return (bytes are in the peer's memory);
   * rejects with a clear error if the connection dies first. Order is preserved.
   */
  send(bytes: Uint8Array): Promise<void>;
  /**
   * Closes the socket; pending sends reject; idempotent. Messages already
   * received (and those arriving until the peer answers the close) are still
   * yielded by the iterator before it ends (see above).
   */
  close(): Promise<void>;
  /** Resolves when the socket has closed: `undefined` for an orderly close, else the cause. */
  readonly closed: Promise<Error | undefined>;
  stats(): SocketStats;
  /**
   * The peer is authenticated: lift the limits the socket started with
   * (`preAuth` in the listen/connect options). A no-op when there are none.
   * Optional: wrappers and test doubles need not have it.
   */
  trust?(): void;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A listening endpoint that yields accepted sockets. */
export interface MessageListener extends AsyncIterable<MessageSocket> {
  readonly transport: TransportKind;
  /** The bound address (host and actual port). */
  readonly address: { host: string; port: number };
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
