/**
 * `SealedSocket`: integrity for every frame after the peer handshake.
 *
 * `auth.ts` proves both peers know the cluster secret, but on its own it
 * protects only its own four messages: on tcp an on-path attacker or a relay
 * could let the handshake through and then inject, alter, replay, reorder or
 * drop RMI frames (`replicate`, `handover`, `rebind`, `fenced`, `ping`,
 * `suspect`, `dead`...). A `SealedSocket` wraps the authenticated socket with
 * the same `MessageSocket` interface, so the RMI layer is unchanged, and
 * binds every later frame to the handshake:
 *
 * ```
 * sealed frame (big-endian)
 *   0      u32   seq, high 32 bits   frames sent on this connection in this direction
 *   4      u32   seq, low 32 bits    before this one: 0, 1, 2, ...
 *   8      ..    payload             the message (at least 1 byte)
 *   8+n    16    mac                 HMAC-SHA256(key, bytes 0 .. 8+n) truncated to 16 bytes
 * ```
 *
 * `key` is this direction's key from `authenticateWithKeys` (HKDF of the
 * secret over both nonces and both ids: fresh per connection, one per
 * direction, so a frame can be neither replayed from another connection nor
 * reflected back to its sender). A received frame is checked before anything
 * else sees it: its length (at least 25 bytes), then its MAC (constant-time
 * comparison), then its sequence number (exactly the next one expected). The
 * first frame that fails closes the connection: the iterator throws a
 * `SealError` (an `RmiFrameError`, so an `RmiEndpoint` logs it, counts it in
 * `malformedFrames` and closes that connection alone), it is counted in
 * `sealStats()` and the process-wide `sealCounters()`, and `closed` resolves
 * with it. Confidentiality is not a goal: payloads travel in the clear.
 *
 * Cost: 24 bytes and one HMAC per frame each way. Bun computes it natively
 * (`Bun.CryptoHasher`); elsewhere frames up to `JS_MAC_MAX_BYTES` use the
 * SHA-256 below, with the key's inner and outer pad blocks hashed once per
 * connection (Deno's `node:crypto` HMAC has a fixed cost of tens of µs per
 * call), and larger ones `node:crypto`. Figures: `bench/sealed.ts`.
 *
 * @module
 */

import { createHmac } from "node:crypto";
import type { Reservation } from "../sdp/socket.ts";
import type { MessageSocket, ReceivedMessage, SocketStats, TransportKind } from "../sdp/types.ts";
import { RmiFrameError } from "../rmi/frame.ts";
import type { SessionKeys } from "./auth.ts";

/** Bytes a seal adds to a message: 8 of sequence number, 16 of MAC. */
export const SEAL_OVERHEAD = 24;
const SEQ_BYTES = 8;
const MAC_BYTES = 16;
/** Frames up to this many bytes are MACed by the JavaScript SHA-256 where there is no `Bun.CryptoHasher`. */
export const JS_MAC_MAX_BYTES = 1024;
const DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024;

/** Why a sealed frame was refused. */
export type SealFailure = "truncated" | "mac" | "sequence";

/** A received frame failed its seal; the connection has been closed. */
export class SealError extends RmiFrameError {
  override name = "SealError";
  constructor(readonly reason: SealFailure, message: string) {
    super(message);
  }
}

/** Counters of sealed sockets; all monotonic. */
export interface SealStats {
  framesSealed: number;
  framesOpened: number;
  /** Connections closed because a frame was shorter than a seal. */
  rejectedTruncated: number;
  /** Connections closed because a frame's MAC did not match (altered, truncated, forged, wrong key). */
  rejectedMac: number;
  /** Connections closed because a frame with a good MAC had the wrong sequence number (replayed, reordered, dropped). */
  rejectedSequence: number;
}

function emptySealStats(): SealStats {
  return { framesSealed: 0, framesOpened: 0, rejectedTruncated: 0, rejectedMac: 0, rejectedSequence: 0 };
}

const totals = emptySealStats();

/** Sums over every sealed socket of this process. */
export function sealCounters(): SealStats {
  return { ...totals };
}

/** Options of `SealedSocket`. */
export interface SealedSocketOptions {
  /** Names the peer in error texts. @default socket.remoteAddress */
  name?: string;
  /** Where a refused frame is logged (an `RmiEndpoint` on top logs it as well). @default not logged here */
  logger?: { warn(line: string): void };
  /** The wrapped socket's `maxMessageSize`: messages may be `SEAL_OVERHEAD` bytes shorter. @default 16777216 */
  maxMessageSize?: number;
}

/** Writes HMAC-SHA256(key, data[0, end)) truncated to 16 bytes at out[at, at + 16). */
export type Mac16 = (data: Uint8Array, end: number, out: Uint8Array, at: number) => void;

interface BunHasher {
  update(data: Uint8Array): BunHasher;
  digest(into: Uint8Array): unknown;
}
type BunHasherClass = new (algorithm: string, key: Uint8Array) => BunHasher;
const BunCryptoHasher = (globalThis as { Bun?: { CryptoHasher?: BunHasherClass } }).Bun?.CryptoHasher;

/**
 * The MAC of one key. `engine`: `native` (Bun's hasher, else `node:crypto`),
 * `js` (the SHA-256 below), or `auto` (what `SealedSocket` uses; module notes).
 */
export function mac16(key: Uint8Array, engine: "auto" | "native" | "js" = "auto"): Mac16 {
  const digest = new Uint8Array(64); // Bun's digest(into) wants room for any hash
  const nodeMac: Mac16 = (data, end, out, at) => {
    const d = createHmac("sha256", key).update(data.subarray(0, end)).digest();
    for (let i = 0; i < MAC_BYTES; i++) out[at + i] = d[i];
  };
  if (BunCryptoHasher !== undefined && engine !== "js") {
    const Hasher = BunCryptoHasher;
    return (data, end, out, at) => {
      new Hasher("sha256", key).update(data.subarray(0, end)).digest(digest);
      for (let i = 0; i < MAC_BYTES; i++) out[at + i] = digest[i];
    };
  }
  if (engine === "native") return nodeMac;
  const js = jsMac16(key);
  if (engine === "js") return js;
  return (data, end, out, at) => (end <= JS_MAC_MAX_BYTES ? js : nodeMac)(data, end, out, at);
}

/**
 * A connected socket whose frames are numbered and MACed (module notes). Takes
 * the inner socket's iterator already in use (the handshake read from it).
 */
export class SealedSocket implements MessageSocket {
  readonly transport: TransportKind;
  readonly remoteAddress: string;
  readonly closed: Promise<Error | undefined>;
  readonly #inner: MessageSocket;
  readonly #messages: AsyncIterator<ReceivedMessage>;
  readonly #sendMac: Mac16;
  readonly #recvMac: Mac16;
  readonly #name: string;
  readonly #logger: { warn(line: string): void } | undefined;
  readonly #maxPayload: number;
  readonly #scratch = new Uint8Array(MAC_BYTES);
  readonly #stats = emptySealStats();
  #sendSeq = 0;
  #recvSeq = 0;
  #failure: SealError | undefined;

  constructor(inner: MessageSocket, messages: AsyncIterator<ReceivedMessage>, keys: SessionKeys, options: SealedSocketOptions = {}) {
    if (keys.send.byteLength < 32 || keys.receive.byteLength < 32) {
      throw new RangeError(`sealed socket keys must be 32 bytes each: got ${keys.send.byteLength} and ${keys.receive.byteLength}`);
    }
    this.#inner = inner;
    this.#messages = messages;
    this.#sendMac = mac16(keys.send);
    this.#recvMac = mac16(keys.receive);
    this.transport = inner.transport;
    this.remoteAddress = inner.remoteAddress;
    this.#name = options.name ?? inner.remoteAddress;
    this.#logger = options.logger;
    this.#maxPayload = (options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE) - SEAL_OVERHEAD;
    this.closed = inner.closed.then((cause) => this.#failure ?? cause);
  }

  /** This socket's seal counters. */
  sealStats(): SealStats {
    return { ...this.#stats };
  }

  send(bytes: Uint8Array): Promise<void> {
    const checked = this.#checkSend(bytes.byteLength);
    if (checked) return Promise.reject(checked);
    const frame = new Uint8Array(bytes.byteLength + SEAL_OVERHEAD);
    frame.set(bytes, SEQ_BYTES);
    return this.#post(frame, bytes.byteLength);
  }

  /** Space for a message of up to `length` bytes, sealed in place on `commit` (no copy of the payload). */
  reserve(length: number): Promise<Reservation> {
    if (!Number.isInteger(length)) return Promise.reject(new RangeError(`reserve of ${length} bytes: must be an integer`));
    const checked = this.#checkSend(length);
    if (checked) return Promise.reject(checked);
    const frame = new Uint8Array(length + SEAL_OVERHEAD);
    let used = false;
    return Promise.resolve({
      bytes: frame.subarray(SEQ_BYTES, SEQ_BYTES + length),
      commit: (n = length) => {
        if (used) return Promise.reject(new Error("reservation already committed or cancelled"));
        used = true;
        if (!Number.isInteger(n) || n < 1 || n > length) return Promise.reject(new RangeError(`commit of ${n} bytes: must be in 1..${length}`));
        return this.#post(frame.subarray(0, n + SEAL_OVERHEAD), n);
      },
      cancel: () => {
        used = true;
      },
    });
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  stats(): SocketStats {
    return this.#inner.stats();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<ReceivedMessage> {
    return {
      next: () => {
        if (this.#failure) return Promise.resolve({ value: undefined, done: true });
        return this.#messages.next().then((r) => (r.done ? r : { value: this.#open(r.value), done: false }));
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }

  #checkSend(n: number): Error | undefined {
    if (this.#failure) return new Error(`send failed: the sealed connection to '${this.#name}' was closed: ${this.#failure.message}`);
    if (n < 1) return new RangeError(`message of ${n} bytes: a message must carry at least 1 byte`);
    if (n > this.#maxPayload) {
      return new RangeError(`message of ${n} bytes exceeds the sealed maxMessageSize ${this.#maxPayload} (the socket's less the ${SEAL_OVERHEAD}-byte seal)`);
    }
    if (this.#sendSeq >= Number.MAX_SAFE_INTEGER) return new RangeError("sealed connection ran out of sequence numbers; reconnect");
    return undefined;
  }

  /** Numbers and MACs `frame` (payload of `n` bytes at 8) and sends it. */
  #post(frame: Uint8Array, n: number): Promise<void> {
    const seq = this.#sendSeq++;
    const hi = Math.floor(seq / 0x1_0000_0000);
    frame[0] = hi >>> 24;
    frame[1] = hi >>> 16;
    frame[2] = hi >>> 8;
    frame[3] = hi;
    frame[4] = seq >>> 24;
    frame[5] = seq >>> 16;
    frame[6] = seq >>> 8;
    frame[7] = seq;
    this.#sendMac(frame, SEQ_BYTES + n, frame, SEQ_BYTES + n);
    this.#stats.framesSealed++;
    totals.framesSealed++;
    return this.#inner.send(frame);
  }

  /** Checks one received frame: length, MAC, sequence number, in that order; throws `SealError`. */
  #open(message: ReceivedMessage): ReceivedMessage {
    const b = message.bytes;
    const n = b.byteLength;
    const expected = this.#recvSeq;
    if (n < SEAL_OVERHEAD + 1) {
      throw this.#fail(message, "truncated", `sealed frame ${expected} is ${n} bytes, shorter than a ${SEAL_OVERHEAD}-byte seal and 1 byte of payload: truncated, or not sealed`);
    }
    const end = n - MAC_BYTES;
    const want = this.#scratch;
    this.#recvMac(b, end, want, 0);
    let diff = 0;
    for (let i = 0; i < MAC_BYTES; i++) diff |= want[i] ^ b[end + i];
    if (diff !== 0) {
      throw this.#fail(message, "mac", `sealed frame ${expected} (${n} bytes) failed its MAC: altered, truncated, or not sent by the authenticated peer`);
    }
    const seq = (((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0) * 0x1_0000_0000 +
      (((b[4] << 24) | (b[5] << 16) | (b[6] << 8) | b[7]) >>> 0);
    if (seq !== expected) {
      const what = seq < expected ? "replayed or reordered" : "frames before it dropped, or reordered";
      throw this.#fail(message, "sequence", `sealed frame has sequence number ${seq} where ${expected} was expected: ${what}`);
    }
    this.#recvSeq++;
    this.#stats.framesOpened++;
    totals.framesOpened++;
    return new OpenedMessage(message);
  }

  #fail(message: ReceivedMessage, reason: SealFailure, text: string): SealError {
    message.release();
    const error = new SealError(reason, `${text} (from '${this.#name}' at ${this.remoteAddress}); connection closed`);
    this.#failure = error;
    const key = reason === "truncated" ? "rejectedTruncated" : reason === "mac" ? "rejectedMac" : "rejectedSequence";
    this.#stats[key]++;
    totals[key]++;
    this.#logger?.warn(`sealed socket: ${error.message}`);
    void this.#inner.close().catch(() => {});
    return error;
  }
}

/** A checked frame's payload: a view of the inner message (taken anew, since a closing socket may copy it out). */
class OpenedMessage implements ReceivedMessage {
  readonly #inner: ReceivedMessage;
  constructor(inner: ReceivedMessage) {
    this.#inner = inner;
  }
  get bytes(): Uint8Array {
    const b = this.#inner.bytes;
    return b.subarray(SEQ_BYTES, b.byteLength - MAC_BYTES);
  }
  copy(): Uint8Array {
    return this.bytes.slice();
  }
  release(): void {
    this.#inner.release();
  }
}

// ---- HMAC-SHA256 in JavaScript, with the key's pad blocks hashed once (FIPS 180-4, RFC 2104) ----

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
const W = new Int32Array(64);
const TAIL = new Uint8Array(128);

function compress(h: Int32Array, b: Uint8Array, o: number): void {
  for (let i = 0; i < 16; i++, o += 4) W[i] = (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
  for (let i = 16; i < 64; i++) {
    const x = W[i - 15];
    const y = W[i - 2];
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
  }
  let a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (hh + s1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & bb) ^ (a & c) ^ (bb & c))) | 0;
    hh = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = bb;
    bb = a;
    a = (t1 + t2) | 0;
  }
  h[0] = (h[0] + a) | 0;
  h[1] = (h[1] + bb) | 0;
  h[2] = (h[2] + c) | 0;
  h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0;
  h[5] = (h[5] + f) | 0;
  h[6] = (h[6] + g) | 0;
  h[7] = (h[7] + hh) | 0;
}

/** Finishes a hash whose state `h` already covers one 64-byte block, over data[0, end). */
function finish(h: Int32Array, data: Uint8Array, end: number): void {
  let o = 0;
  for (; end - o >= 64; o += 64) compress(h, data, o);
  const r = end - o;
  TAIL.fill(0);
  for (let i = 0; i < r; i++) TAIL[i] = data[o + i];
  TAIL[r] = 0x80;
  const bits = (64 + end) * 8;
  const blocks = r + 9 <= 64 ? 64 : 128;
  const hi = Math.floor(bits / 0x1_0000_0000);
  TAIL[blocks - 8] = hi >>> 24;
  TAIL[blocks - 7] = hi >>> 16;
  TAIL[blocks - 6] = hi >>> 8;
  TAIL[blocks - 5] = hi;
  TAIL[blocks - 4] = bits >>> 24;
  TAIL[blocks - 3] = bits >>> 16;
  TAIL[blocks - 2] = bits >>> 8;
  TAIL[blocks - 1] = bits;
  compress(h, TAIL, 0);
  if (blocks === 128) compress(h, TAIL, 64);
}

function jsMac16(key: Uint8Array): Mac16 {
  if (key.byteLength > 64) throw new RangeError(`MAC key must be at most 64 bytes: got ${key.byteLength}`);
  const pad = new Uint8Array(64);
  const inner = Int32Array.from(IV);
  const outer = Int32Array.from(IV);
  for (let i = 0; i < 64; i++) pad[i] = (key[i] ?? 0) ^ 0x36;
  compress(inner, pad, 0);
  for (let i = 0; i < 64; i++) pad[i] = (key[i] ?? 0) ^ 0x5c;
  compress(outer, pad, 0);
  const h = new Int32Array(8);
  const innerDigest = new Uint8Array(32);
  return (data, end, out, at) => {
    h.set(inner);
    finish(h, data, end);
    for (let i = 0; i < 8; i++) {
      innerDigest[i * 4] = h[i] >>> 24;
      innerDigest[i * 4 + 1] = h[i] >>> 16;
      innerDigest[i * 4 + 2] = h[i] >>> 8;
      innerDigest[i * 4 + 3] = h[i];
    }
    h.set(outer);
    finish(h, innerDigest, 32);
    for (let i = 0; i < MAC_BYTES / 4; i++) {
      out[at + i * 4] = h[i] >>> 24;
      out[at + i * 4 + 1] = h[i] >>> 16;
      out[at + i * 4 + 2] = h[i] >>> 8;
      out[at + i * 4 + 3] = h[i];
    }
  };
}
