/**
 * The wire codec: SDP's base header (BSDH) and the bodies (docs/PROTOCOL.md §1-2).
 *
 * Every frame starts with the 16-byte base header, all integers big-endian:
 *
 * ```
 *  0      1      2             4                     8                    12                   16
 *  +------+------+-------------+---------------------+--------------------+--------------------+
 *  | mid  |flags |    bufs     |        len          |       mseq         |     mseq_ack       |
 *  +------+------+-------------+---------------------+--------------------+--------------------+
 *   u8     u8     u16           u32 (whole frame)     u32                  u32
 * ```
 *
 * Bodies (after the header):
 *
 * - HELLO (0x00) / HELLO_ACK (0x01), 16 bytes:
 *   `u16 version; u16 capabilities; u32 recvBufferSize; u32 recvBufferCount; u32 maxMessageSize`.
 *   `capabilities` bit 0 (`CAP_ZCOPY_READ`): this side can RDMA READ a SrcAvail
 *   (it has a registered sink); bit 15 (`CAP_PRE_AUTH`): these are this side's
 *   limits before its peer is authenticated, and a GROW may raise them; other
 *   bits are zero. `recvBufferSize` is the largest frame this side can
 *   receive, `recvBufferCount` its posted buffers (the most `bufs` may say),
 *   `maxMessageSize` the largest message it accepts.
 * - GROW (0x10), 16 bytes, the HELLO body: the side that announced
 *   `CAP_PRE_AUTH` has authenticated its peer and now allows these limits
 *   (more buffers, a larger `maxMessageSize`, zcopy). At most once; same
 *   `recvBufferSize`, no smaller count or size, `CAP_PRE_AUTH` clear. Its
 *   header's `bufs` already counts the new buffers. (A project extension: SDP
 *   has no such message.)
 * - DATA (0xFF): payload bytes. `flags` bit 0 (`DATA_MORE`): more fragments of
 *   this message follow. `flags` bit 1 (`DATA_HEAD`): first fragment of a
 *   message split across frames; the body then starts with `u32 totalLength`.
 *   HEAD requires MORE. A DATA frame with no payload and no flags is a pure
 *   credit update / acknowledgement (as in SDP), so messages are never empty.
 * - SrcAvail (0xFE), 16 bytes: `u32 len; u32 rkey; u64 vaddr`.
 * - RdmaRdCompl (0x06), 4 bytes: `u32 len`.
 * - SendSM (0x04), SrcAvailCancel (0x08), DISCONN (0x02), ABORT (0x03): no body.
 *
 * Flags other than the DATA bits above must be zero. Sequence numbers are
 * checked here too: `mseq` must be exactly the previous one plus one (mod 2^32).
 *
 * The codec reads and writes the bytes directly (no `DataView` or other
 * object per call); the engine decodes into one reusable `RxFrame` record
 * (`decodeInto`), so receiving a frame allocates nothing here but the
 * payload's view. `decodeFrame` builds the object form on top of it.
 *
 * @module
 */

/** Message ids (SDP's numbers). */
export const MID = {
  Hello: 0x00,
  HelloAck: 0x01,
  Disconn: 0x02,
  Abort: 0x03,
  SendSM: 0x04,
  RdmaRdCompl: 0x06,
  SrcAvailCancel: 0x08,
  Grow: 0x10,
  SrcAvail: 0xfe,
  Data: 0xff,
} as const;

export const HEADER_SIZE = 16;
export const HELLO_BODY_SIZE = 16;
export const SRCAVAIL_BODY_SIZE = 16;
export const RDMARDCOMPL_BODY_SIZE = 4;
/** Bytes of the `u32 totalLength` that starts a HEAD fragment's body. */
export const DATA_HEAD_SIZE = 4;
export const PROTOCOL_VERSION = 1;
export const CAP_ZCOPY_READ = 0x0001;
/** HELLO: the limits announced are the ones before authentication; a GROW may follow. */
export const CAP_PRE_AUTH = 0x8000;
export const DATA_MORE = 0x01;
export const DATA_HEAD = 0x02;
/** Smallest receive buffer a peer may announce: a header plus a useful payload. */
export const MIN_RECV_BUFFER_SIZE = 64;
/** Fewest receive buffers a peer may announce: two credits are held back for control frames. */
export const MIN_RECV_BUFFER_COUNT = 4;

const MID_NAMES: Record<number, string> = {
  0x00: "HELLO",
  0x01: "HELLO_ACK",
  0x02: "DISCONN",
  0x03: "ABORT",
  0x04: "SendSM",
  0x06: "RdmaRdCompl",
  0x08: "SrcAvailCancel",
  0x10: "GROW",
  0xfe: "SrcAvail",
  0xff: "DATA",
};

/** Name of a message id, e.g. `midName(0xfe)` is "SrcAvail". */
export function midName(mid: number): string {
  return MID_NAMES[mid] ?? `unknown(0x${hex(mid)})`;
}

function hex(n: number): string {
  return n.toString(16).padStart(2, "0");
}

/** Malformed or out-of-order input from the peer; closes that connection alone. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(`protocol error: ${message}`);
    this.name = "ProtocolError";
  }
}

/** The HELLO / HELLO_ACK body. */
export interface Hello {
  version: number;
  /** The sender can RDMA READ a SrcAvail. */
  zcopyRead: boolean;
  recvBufferSize: number;
  recvBufferCount: number;
  maxMessageSize: number;
  /** The sender's limits are its limits before authentication: a GROW may raise them (never set in a GROW). */
  preAuth?: boolean;
}

/** A decoded frame body, by message id. */
export type Body =
  | { mid: typeof MID.Hello | typeof MID.HelloAck | typeof MID.Grow; hello: Hello }
  | {
    mid: typeof MID.Data;
    /** More fragments of this message follow. */
    more: boolean;
    /** Set on the first fragment of a multi-frame message: the whole message's length. */
    total: number | undefined;
    payload: Uint8Array;
  }
  | { mid: typeof MID.SrcAvail; len: number; rkey: number; vaddr: bigint }
  | { mid: typeof MID.RdmaRdCompl; len: number }
  | {
    mid: typeof MID.SendSM | typeof MID.SrcAvailCancel | typeof MID.Disconn | typeof MID.Abort;
  };

/** The header fields that change from frame to frame. */
export interface HeaderFields {
  bufs: number;
  mseq: number;
  mseqAck: number;
}

/** A whole decoded frame. */
export type Frame = HeaderFields & { body: Body };

/** Reads a big-endian u16 at `o`. */
function get16(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1];
}

/** Reads a big-endian u32 at `o`. */
function get32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

/** Writes `v` (0..65535) big-endian at `o`. */
function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 8;
  b[o + 1] = v;
}

/** Writes `v` modulo 2^32 big-endian at `o` (a typed array keeps the low 8 bits of each store). */
function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

/** The bodies the engine sends without payload, built once. */
export const SEND_SM: Body = Object.freeze({ mid: MID.SendSM });
export const SRCAVAIL_CANCEL: Body = Object.freeze({ mid: MID.SrcAvailCancel });
export const DISCONN: Body = Object.freeze({ mid: MID.Disconn });
export const ABORT: Body = Object.freeze({ mid: MID.Abort });
/** A DATA frame with no payload: a credit update / acknowledgement. */
export const CREDIT_UPDATE: Body = Object.freeze({
  mid: MID.Data,
  more: false,
  total: undefined,
  payload: new Uint8Array(0),
});

/** Encoded size of a frame with this body. */
export function frameSize(body: Body): number {
  switch (body.mid) {
    case MID.Hello:
    case MID.HelloAck:
    case MID.Grow:
      return HEADER_SIZE + HELLO_BODY_SIZE;
    case MID.Data:
      return HEADER_SIZE + (body.total !== undefined ? DATA_HEAD_SIZE : 0) + body.payload.length;
    case MID.SrcAvail:
      return HEADER_SIZE + SRCAVAIL_BODY_SIZE;
    case MID.RdmaRdCompl:
      return HEADER_SIZE + RDMARDCOMPL_BODY_SIZE;
    default:
      return HEADER_SIZE;
  }
}

/**
 * Encodes a frame into `target` (a send slot) and returns its length.
 * Throws a RangeError if it does not fit.
 */
export function encodeFrame(target: Uint8Array, h: HeaderFields, body: Body): number {
  const len = frameSize(body);
  if (len > target.length) {
    throw new RangeError(`${midName(body.mid)} frame of ${len} bytes does not fit a ${target.length}-byte send slot`);
  }
  const mid = body.mid;
  target[0] = mid;
  target[1] = mid === MID.Data ? (body.more ? DATA_MORE : 0) | (body.total !== undefined ? DATA_HEAD : 0) : 0;
  put16(target, 2, h.bufs);
  put32(target, 4, len);
  put32(target, 8, h.mseq);
  put32(target, 12, h.mseqAck);
  const o = HEADER_SIZE;
  switch (body.mid) {
    case MID.Hello:
    case MID.HelloAck:
    case MID.Grow: {
      const m = body.hello;
      put16(target, o, m.version);
      put16(target, o + 2, (m.zcopyRead ? CAP_ZCOPY_READ : 0) | (m.preAuth ? CAP_PRE_AUTH : 0));
      put32(target, o + 4, m.recvBufferSize);
      put32(target, o + 8, m.recvBufferCount);
      put32(target, o + 12, m.maxMessageSize);
      break;
    }
    case MID.Data: {
      const p = body.payload;
      let at = o;
      if (body.total !== undefined) {
        put32(target, o, body.total);
        at += DATA_HEAD_SIZE;
      }
      // Small payloads by hand: cheaper than a typed-array copy call.
      if (p.length <= 64) for (let i = 0; i < p.length; i++) target[at + i] = p[i];
      else target.set(p, at);
      break;
    }
    case MID.SrcAvail:
      put32(target, o, body.len);
      put32(target, o + 4, body.rkey);
      put32(target, o + 8, Number(BigInt.asUintN(32, body.vaddr >> 32n)));
      put32(target, o + 12, Number(BigInt.asUintN(32, body.vaddr)));
      break;
    case MID.RdmaRdCompl:
      put32(target, o, body.len);
      break;
  }
  return len;
}

/** Encodes into a fresh array (tests, tools). */
export function encode(h: HeaderFields, body: Body): Uint8Array {
  const out = new Uint8Array(frameSize(body));
  encodeFrame(out, h, body);
  return out;
}

function bodyLength(mid: number, actual: number, exact: number): void {
  if (actual !== exact) {
    throw new ProtocolError(`${midName(mid)} body of ${actual} bytes: expected exactly ${exact}`);
  }
}

/**
 * A decoded frame as one flat, reusable record (the engine's receive path):
 * `decodeInto` overwrites every field. Fields that a message id does not use
 * keep stale values. DATA payload is `bytes[payloadStart..]` of the decoded
 * frame; `total` is -1 unless the HEAD flag is set.
 */
export interface RxFrame {
  mid: number;
  bufs: number;
  mseq: number;
  mseqAck: number;
  /** DATA: more fragments follow. */
  more: boolean;
  /** DATA HEAD: the whole message's length; otherwise -1. */
  total: number;
  /** DATA: offset of the payload in the frame (16, or 20 after a HEAD's total). */
  payloadStart: number;
  /** SrcAvail, RdmaRdCompl: `len`. */
  len: number;
  /** SrcAvail. */
  rkey: number;
  /** SrcAvail. */
  vaddr: bigint;
  /** HELLO, HELLO_ACK, GROW: a fresh object (kept by the engine as the peer's). */
  hello: Hello | undefined;
}

/** A fresh `RxFrame` for `decodeInto`. */
export function rxFrame(): RxFrame {
  return { mid: 0, bufs: 0, mseq: 0, mseqAck: 0, more: false, total: -1, payloadStart: 0, len: 0, rkey: 0, vaddr: 0n, hello: undefined };
}

/**
 * Decodes and validates one frame into `out`, with the checks of
 * `decodeFrame`; allocates nothing (a HELLO's body excepted).
 */
export function decodeInto(bytes: Uint8Array, expectedMseq: number, out: RxFrame): void {
  const length = bytes.length;
  if (length < HEADER_SIZE) {
    throw new ProtocolError(`frame of ${length} bytes is shorter than the ${HEADER_SIZE}-byte header`);
  }
  const mid = bytes[0];
  const flags = bytes[1];
  const len = get32(bytes, 4);
  const mseq = get32(bytes, 8);
  if (len !== length) {
    throw new ProtocolError(`declared length ${len} does not match the ${length} bytes received`);
  }
  if (MID_NAMES[mid] === undefined) throw new ProtocolError(`unknown message id 0x${hex(mid)}`);
  const allowedFlags = mid === MID.Data ? DATA_MORE | DATA_HEAD : 0;
  if ((flags & ~allowedFlags) !== 0) {
    throw new ProtocolError(`flags 0x${hex(flags)} on ${midName(mid)}: reserved bits must be zero`);
  }
  if (mseq !== (expectedMseq >>> 0)) {
    throw new ProtocolError(`${midName(mid)} mseq ${mseq} out of sequence: expected ${expectedMseq >>> 0}`);
  }
  out.mid = mid;
  out.bufs = get16(bytes, 2);
  out.mseq = mseq;
  out.mseqAck = get32(bytes, 12);
  const o = HEADER_SIZE;
  const n = len - HEADER_SIZE;
  switch (mid) {
    case MID.Data: {
      const more = (flags & DATA_MORE) !== 0;
      const head = (flags & DATA_HEAD) !== 0;
      if (head && !more) throw new ProtocolError(`DATA with HEAD but not MORE: a HEAD fragment must be followed by more`);
      out.more = more;
      if (head) {
        if (n < DATA_HEAD_SIZE) throw new ProtocolError(`DATA HEAD body of ${n} bytes has no room for its 4-byte total length`);
        const total = get32(bytes, o);
        const payload = n - DATA_HEAD_SIZE;
        if (total <= payload) {
          throw new ProtocolError(`DATA HEAD total length ${total} is not larger than its own ${payload}-byte payload`);
        }
        out.total = total;
        out.payloadStart = o + DATA_HEAD_SIZE;
      } else {
        if (more && n === 0) throw new ProtocolError(`DATA fragment with MORE and no payload`);
        out.total = -1;
        out.payloadStart = o;
      }
      return;
    }
    case MID.Hello:
    case MID.HelloAck:
    case MID.Grow: {
      bodyLength(mid, n, HELLO_BODY_SIZE);
      const caps = get16(bytes, o + 2);
      const known = mid === MID.Grow ? CAP_ZCOPY_READ : CAP_ZCOPY_READ | CAP_PRE_AUTH;
      if ((caps & ~known) !== 0) {
        throw new ProtocolError(`${midName(mid)} capabilities 0x${caps.toString(16)}: unknown bits set`);
      }
      const hello: Hello = {
        version: get16(bytes, o),
        zcopyRead: (caps & CAP_ZCOPY_READ) !== 0,
        recvBufferSize: get32(bytes, o + 4),
        recvBufferCount: get32(bytes, o + 8),
        maxMessageSize: get32(bytes, o + 12),
      };
      if ((caps & CAP_PRE_AUTH) !== 0) hello.preAuth = true;
      if (hello.version !== PROTOCOL_VERSION) {
        throw new ProtocolError(`${midName(mid)} version ${hello.version} not supported (this side speaks ${PROTOCOL_VERSION})`);
      }
      if (hello.recvBufferSize < MIN_RECV_BUFFER_SIZE) {
        throw new ProtocolError(`${midName(mid)} recvBufferSize ${hello.recvBufferSize} is below the minimum ${MIN_RECV_BUFFER_SIZE}`);
      }
      if (hello.recvBufferCount < MIN_RECV_BUFFER_COUNT || hello.recvBufferCount > 0xffff) {
        throw new ProtocolError(
          `${midName(mid)} recvBufferCount ${hello.recvBufferCount} is outside ${MIN_RECV_BUFFER_COUNT}..65535`,
        );
      }
      if (hello.maxMessageSize < 1) throw new ProtocolError(`${midName(mid)} maxMessageSize 0: must be at least 1`);
      out.hello = hello;
      return;
    }
    case MID.SrcAvail: {
      bodyLength(mid, n, SRCAVAIL_BODY_SIZE);
      const slen = get32(bytes, o);
      if (slen === 0) throw new ProtocolError(`SrcAvail of 0 bytes`);
      out.len = slen;
      out.rkey = get32(bytes, o + 4);
      out.vaddr = (BigInt(get32(bytes, o + 8)) << 32n) | BigInt(get32(bytes, o + 12));
      return;
    }
    case MID.RdmaRdCompl:
      bodyLength(mid, n, RDMARDCOMPL_BODY_SIZE);
      out.len = get32(bytes, o);
      return;
    default:
      bodyLength(mid, n, 0);
  }
}

/**
 * Decodes and validates one frame. `expectedMseq` is the sequence number the
 * frame must carry (previous + 1). DATA payloads are views into `bytes`.
 * Throws `ProtocolError` naming what was wrong and the bad value.
 */
export function decodeFrame(bytes: Uint8Array, expectedMseq: number): Frame {
  const f = rxFrame();
  decodeInto(bytes, expectedMseq, f);
  let body: Body;
  switch (f.mid) {
    case MID.Hello:
    case MID.HelloAck:
    case MID.Grow:
      body = { mid: f.mid, hello: f.hello! };
      break;
    case MID.Data:
      body = {
        mid: MID.Data,
        more: f.more,
        total: f.total < 0 ? undefined : f.total,
        payload: bytes.subarray(f.payloadStart),
      };
      break;
    case MID.SrcAvail:
      body = { mid: MID.SrcAvail, len: f.len, rkey: f.rkey, vaddr: f.vaddr };
      break;
    case MID.RdmaRdCompl:
      body = { mid: MID.RdmaRdCompl, len: f.len };
      break;
    default:
      body = { mid: f.mid } as Body;
  }
  return { bufs: f.bufs, mseq: f.mseq, mseqAck: f.mseqAck, body };
}
