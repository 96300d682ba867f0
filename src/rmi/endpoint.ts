/**
 * One-way RMI over a message socket.
 *
 * Protocol, per socket (both ends run an `RmiEndpoint`; either may call):
 *
 * 1. The caller encodes the arguments with the codec and sends one CALL frame
 *    (layout in `frame.ts`) carrying a call id, the method name and the ack mode.
 * 2. Depending on the ack mode, the caller's promise resolves at once (`none`),
 *    on the socket's return (`transport`: the bytes are in the callee's memory),
 *    or on the REPLY frame (`applied`).
 * 3. The callee reads frames in order and runs the method from its table, one
 *    at a time, in arrival order (an async method is awaited before the next
 *    frame is taken), so effects apply in send order. Methods declared
 *    `concurrent` are started in order but not awaited.
 * 4. In `applied` mode the callee answers with a REPLY: ok + encoded result, or
 *    error + text (unknown method, undecodable arguments, the method threw).
 *    In the other modes such failures are counted and logged, never thrown.
 * 5. A frame that breaks the layout is a protocol error: the endpoint logs it
 *    and closes this socket alone; pending calls reject.
 *
 * @module
 */

import type { MessageSocket, ReceivedMessage } from "../sdp/types.ts";
import { jsonCodec, jsonText, type ValueCodec } from "./codec.ts";
import { RemoteError, RmiClosedError, RmiTimeoutError } from "./errors.ts";
import {
  decodeErrorText,
  decodeFrame,
  encodeCall,
  encodeCallText,
  encodeErrorReply,
  encodeReply,
  RmiFrameError,
} from "./frame.ts";
import { type AckMode, emptyRmiStats, type RmiLogger, type RmiStats } from "./types.ts";

/** What a method sees besides its arguments. */
export interface CallContext {
  /** The endpoint the call arrived on (to call back, or to learn the peer). */
  readonly endpoint: RmiEndpoint;
  /** The ack mode the caller asked for. */
  readonly ack: AckMode;
}

/** A method of the table: receives the decoded arguments; its result is returned in `applied` mode. */
export type RmiMethod = (args: unknown, context: CallContext) => unknown;

/** The methods an endpoint exposes to its peer, by name. */
export type MethodTable = Record<string, RmiMethod>;

/** Options of `RmiEndpoint`. */
export interface RmiEndpointOptions {
  /** Methods the peer may call. @default {} */
  methods?: MethodTable;
  /** Codec for arguments and results. @default jsonCodec */
  codec?: ValueCodec;
  /**
   * The socket's message iterator, when the caller already started iterating
   * (for example to run an authentication handshake first). @default socket[Symbol.asyncIterator]()
   */
  messages?: AsyncIterator<ReceivedMessage>;
  /** A name for log lines, e.g. the peer id. @default socket.remoteAddress */
  name?: string;
  /** Diagnostics. @default console */
  logger?: RmiLogger;
  /** Default ack mode of `call`. @default "transport" */
  defaultAck?: AckMode;
  /**
   * Methods whose (async) work does not hold up the frames after them: the
   * next frame is read as soon as the method has started. For request/response
   * methods that may wait (ordering of their effects is not needed), so that a
   * slow one cannot delay, say, a heartbeat on the same connection. @default none
   */
  concurrent?: Iterable<string>;
}

/** Options of one call. */
export interface CallOptions {
  /** @default the endpoint's `defaultAck` ("transport") */
  ack?: AckMode;
  /** `applied` only: reject with `RmiTimeoutError` if no REPLY arrives in time. @default no timeout */
  timeoutMs?: number;
}

interface PendingCall {
  method: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer?: ReturnType<typeof setTimeout>;
}

/**
 * An RMI endpoint over one connected socket.
 *
 * @example
 * ```ts
 * import { loopbackPair } from "../sdp/links/loopback.ts";
 * import { RmiEndpoint } from "./endpoint.ts";
 * const [a, b] = await loopbackPair();
 * const callee = new RmiEndpoint(b, { methods: { add: (args) => (args as number[])[0] + (args as number[])[1] } });
 * const caller = new RmiEndpoint(a);
 * console.log(await caller.call("add", [2, 3], { ack: "applied" })); // 5
 * await caller.close(); await callee.close();
 * ```
 */
export class RmiEndpoint {
  readonly socket: MessageSocket;
  readonly name: string;
  /** Resolves when the receive loop has ended (socket closed): `undefined` or the cause. */
  readonly closed: Promise<Error | undefined>;
  #methods: MethodTable;
  #codec: ValueCodec;
  #logger: RmiLogger;
  #defaultAck: AckMode;
  #concurrent: Set<string>;
  #nextCallId = 1;
  #pending = new Map<number, PendingCall>();
  #closedError: Error | undefined;
  #isClosed = false;
  #stats: RmiStats = emptyRmiStats();

  constructor(socket: MessageSocket, options: RmiEndpointOptions = {}) {
    this.socket = socket;
    this.name = options.name ?? socket.remoteAddress;
    this.#methods = options.methods ?? {};
    this.#codec = options.codec ?? jsonCodec;
    this.#logger = options.logger ?? console;
    this.#defaultAck = options.defaultAck ?? "transport";
    this.#concurrent = new Set(options.concurrent ?? []);
    const messages = options.messages ?? socket[Symbol.asyncIterator]();
    this.closed = this.#receiveLoop(messages);
  }

  /** True once the socket has closed or the endpoint was closed. */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Counters of this endpoint. */
  stats(): RmiStats {
    return { ...this.#stats };
  }

  /** Number of `applied` calls waiting for their REPLY. */
  get pendingCalls(): number {
    return this.#pending.size;
  }

  /**
   * Calls `method` on the peer. Resolves per the ack mode (see `AckMode`):
   * `undefined` for `none` and `transport`, the method's result for `applied`.
   * Rejects with `RemoteError` (applied mode: the remote failure text),
   * `RmiClosedError`, `RmiTimeoutError`, or the socket's send error.
   */
  call(method: string, args?: unknown, options: CallOptions = {}): Promise<unknown> {
    const ack = options.ack ?? this.#defaultAck;
    if (this.#isClosed) return this.#closedCall(method, ack);
    const callId = this.#takeCallId();
    const frame = this.#codec === jsonCodec && args !== undefined
      ? encodeCallText(callId, method, ack, jsonText(args))
      : encodeCall(callId, method, ack, this.#codec.encode(args));
    return this.#post(callId, method, ack, frame, options.timeoutMs);
  }

  /** The codec of arguments and results. */
  get codec(): ValueCodec {
    return this.#codec;
  }

  /**
   * `call` with arguments already encoded as JSON text (`JSON.stringify`
   * output, not empty), for callers that hold the text of most of their
   * arguments already (the replicator). Throws `TypeError` unless the
   * endpoint's codec is `jsonCodec`.
   */
  callJson(method: string, text: string, options: CallOptions = {}): Promise<unknown> {
    if (this.#codec !== jsonCodec) throw new TypeError(`callJson needs the json codec: endpoint '${this.name}' uses ${this.#codec.name}`);
    if (text.length === 0) throw new TypeError("callJson: the JSON text of the arguments must not be empty");
    const ack = options.ack ?? this.#defaultAck;
    if (this.#isClosed) return this.#closedCall(method, ack);
    const callId = this.#takeCallId();
    return this.#post(callId, method, ack, encodeCallText(callId, method, ack, text), options.timeoutMs);
  }

  #takeCallId(): number {
    const callId = this.#nextCallId;
    this.#nextCallId = callId === 0xffff_ffff ? 1 : callId + 1;
    return callId;
  }

  #closedCall(method: string, ack: AckMode): Promise<unknown> {
    if (ack === "none") {
      this.#stats.droppedSends++;
      return RESOLVED;
    }
    return Promise.reject(
      new RmiClosedError(`RMI endpoint '${this.name}' is closed; cannot call '${method}'`, { cause: this.#closedError }),
    );
  }

  #post(callId: number, method: string, ack: AckMode, frame: Uint8Array, timeoutMs: number | undefined): Promise<unknown> {
    this.#stats.callsSent++;
    const sent = this.socket.send(frame);
    if (ack === "none") {
      sent.catch((error) => {
        this.#stats.droppedSends++;
        if (!this.#isClosed) {
          this.#logger.warn(`rmi ${this.name}: one-way call '${method}' was not delivered: ${messageOf(error)}`);
        }
      });
      return RESOLVED;
    }
    // `send` resolves with undefined: what a transport-acknowledged call resolves with.
    if (ack === "transport") return sent;
    return new Promise<unknown>((resolve, reject) => {
      const pending: PendingCall = { method, resolve, reject };
      if (timeoutMs !== undefined) {
        pending.timer = setTimeout(() => {
          this.#pending.delete(callId);
          reject(new RmiTimeoutError(`RMI call '${method}' to '${this.name}' got no reply within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.#pending.set(callId, pending);
      sent.catch((error) => this.#settle(callId, undefined, error instanceof Error ? error : new Error(String(error))));
    });
  }

  /** Closes the socket; pending calls reject with `RmiClosedError`. Idempotent. */
  async close(): Promise<void> {
    this.#markClosed(undefined);
    await this.socket.close();
    await this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #settle(callId: number, value: unknown, error?: Error): void {
    const pending = this.#pending.get(callId);
    if (pending === undefined) return;
    this.#pending.delete(callId);
    if (pending.timer !== undefined) clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(value);
  }

  #markClosed(cause: Error | undefined): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#closedError = cause;
    for (const [callId, pending] of this.#pending) {
      this.#settle(
        callId,
        undefined,
        new RmiClosedError(
          `RMI endpoint '${this.name}' closed before call '${pending.method}' was applied` +
            (cause ? `: ${cause.message}` : ""),
          { cause },
        ),
      );
    }
  }

  async #receiveLoop(messages: AsyncIterator<ReceivedMessage>): Promise<Error | undefined> {
    let cause: Error | undefined;
    try {
      while (true) {
        const next = await messages.next();
        if (next.done) break;
        const message = next.value;
        try {
          await this.#handle(message.bytes);
        } finally {
          message.release();
        }
      }
    } catch (error) {
      cause = error instanceof Error ? error : new Error(String(error));
      if (error instanceof RmiFrameError) {
        this.#stats.malformedFrames++;
        this.#logger.warn(`rmi ${this.name}: closing connection: ${error.message}`);
        await this.socket.close().catch(() => {});
      }
    }
    if (cause === undefined) {
      const socketCause = await Promise.race([this.socket.closed, Promise.resolve(undefined)]);
      cause = socketCause;
    }
    this.#markClosed(cause ?? new RmiClosedError(`connection to '${this.name}' closed`));
    return cause;
  }

  async #handle(bytes: Uint8Array): Promise<void> {
    const frame = decodeFrame(bytes);
    if (frame.kind === "reply") {
      this.#stats.repliesReceived++;
      const pending = this.#pending.get(frame.callId);
      if (pending === undefined) return; // timed out or unknown: nothing waits
      if (!frame.ok) {
        this.#settle(frame.callId, undefined, new RemoteError(pending.method, decodeErrorText(frame.body)));
        return;
      }
      let value: unknown;
      try {
        value = this.#codec.decode(frame.body);
      } catch (error) {
        this.#settle(
          frame.callId,
          undefined,
          new RemoteError(pending.method, `reply could not be decoded with ${this.#codec.name}: ${messageOf(error)}`),
        );
        return;
      }
      this.#settle(frame.callId, value);
      return;
    }
    this.#stats.callsReceived++;
    const { callId, method, ack } = frame;
    const fn = Object.hasOwn(this.#methods, method) ? this.#methods[method] : undefined;
    if (fn === undefined) {
      this.#stats.unknownMethods++;
      this.#fail(callId, method, ack, `unknown method '${method}'`);
      return;
    }
    let args: unknown;
    try {
      args = this.#codec.decode(frame.args);
    } catch (error) {
      this.#stats.failedCalls++;
      this.#fail(callId, method, ack, `bad arguments (${this.#codec.name}): ${messageOf(error)}`);
      return;
    }
    const run = this.#invoke(fn, args, callId, method, ack);
    if (!this.#concurrent.has(method)) await run;
  }

  async #invoke(fn: RmiMethod, args: unknown, callId: number, method: string, ack: AckMode): Promise<void> {
    let result: unknown;
    try {
      result = await fn(args, { endpoint: this, ack });
    } catch (error) {
      this.#stats.failedCalls++;
      this.#fail(callId, method, ack, messageOf(error));
      return;
    }
    if (ack === "applied") {
      let body: Uint8Array;
      try {
        body = this.#codec.encode(result);
      } catch (error) {
        this.#stats.failedCalls++;
        this.#fail(callId, method, ack, `result could not be encoded: ${messageOf(error)}`);
        return;
      }
      this.#reply(encodeReply(callId, true, body), method);
    }
  }

  #fail(callId: number, method: string, ack: AckMode, text: string): void {
    if (ack === "applied") {
      this.#reply(encodeErrorReply(callId, text), method);
    } else {
      this.#logger.warn(`rmi ${this.name}: call '${method}' (${ack}) failed: ${text}`);
    }
  }

  #reply(frame: Uint8Array, method: string): void {
    this.socket.send(frame).catch((error) => {
      this.#stats.droppedSends++;
      // A reply lost because the connection is closing is expected; the caller learns it from the close.
      if (!this.#isClosed) this.#logger.warn(`rmi ${this.name}: reply to '${method}' was not delivered: ${messageOf(error)}`);
    });
  }
}

const RESOLVED: Promise<undefined> = Promise.resolve(undefined);

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
