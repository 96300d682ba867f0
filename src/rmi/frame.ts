/**
 * RMI frames: the bytes of one call or one reply, carried as one socket
 * message (the socket preserves message boundaries, so a frame is never split).
 *
 * Layout, all integers big-endian, a fixed 12-byte header then two fields:
 *
 * ```
 * CALL  (kind 0x01)
 *   off  size  field
 *   0    u8    kind      0x01
 *   1    u8    ack       0 none | 1 transport | 2 applied (2 asks for a REPLY)
 *   2    u16   nameLen   1..255, bytes of the method name
 *   4    u32   callId    chosen by the caller, echoed in the REPLY
 *   8    u32   argsLen   bytes of encoded arguments
 *   12   ..    name      UTF-8, nameLen bytes
 *   12+n ..    args      argsLen bytes (ValueCodec output)
 *
 * REPLY (kind 0x02 ok, 0x03 error)
 *   0    u8    kind      0x02 | 0x03
 *   1    u8    zero
 *   2    u16   zero
 *   4    u32   callId    of the CALL this answers
 *   8    u32   bodyLen
 *   12   ..    body      ok: encoded result; error: UTF-8 error text
 * ```
 *
 * Decoding checks every length against the frame before reading: the frame's
 * total length must be exactly `12 + nameLen + argsLen` (or `12 + bodyLen`).
 *
 * Method names are encoded once (and decoded once) per distinct name: both
 * directions keep a small table, so a call costs no UTF-8 work for its name.
 * Headers are written and read byte by byte, with no `DataView` per frame.
 *
 * @module
 */

import type { AckMode } from "./types.ts";

export const FRAME_HEADER_BYTES = 12;
export const MAX_METHOD_NAME_BYTES = 255;

/** Frame kinds (byte 0). */
export const FrameKind = {
  Call: 0x01,
  ReplyOk: 0x02,
  ReplyError: 0x03,
} as const;

const ACK_CODES: Record<AckMode, number> = { none: 0, transport: 1, applied: 2 };
const ACK_MODES: AckMode[] = ["none", "transport", "applied"];

/** A decoded CALL frame. `args` is a view into the frame bytes. */
export interface CallFrame {
  kind: "call";
  ack: AckMode;
  callId: number;
  method: string;
  args: Uint8Array;
}

/** A decoded REPLY frame. `body` is a view into the frame bytes. */
export interface ReplyFrame {
  kind: "reply";
  ok: boolean;
  callId: number;
  body: Uint8Array;
}

export type Frame = CallFrame | ReplyFrame;

/** A frame that breaks the layout above; the message says which rule and the bad value. */
export class RmiFrameError extends Error {
  override name = "RmiFrameError";
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Names kept per table; a program with more distinct names pays the UTF-8 work for the rest. */
const NAME_TABLE_MAX = 1024;
/** Method name → its UTF-8 bytes, checked once. */
const encodedNames = new Map<string, Uint8Array>();
/** Names decoded from frames, by length then bytes (a short linear scan: names are few). */
const decodedNames: Array<Array<{ bytes: Uint8Array; name: string }> | undefined> = [];
let decodedCount = 0;

function encodeName(method: string): Uint8Array {
  let name = encodedNames.get(method);
  if (name) return name;
  name = encoder.encode(method);
  if (name.byteLength < 1 || name.byteLength > MAX_METHOD_NAME_BYTES) {
    throw new RangeError(
      `RMI method name must be 1..${MAX_METHOD_NAME_BYTES} bytes of UTF-8: got ${name.byteLength} ('${method}')`,
    );
  }
  if (encodedNames.size < NAME_TABLE_MAX) encodedNames.set(method, name);
  return name;
}

function decodeName(bytes: Uint8Array, start: number, len: number): string {
  const list = decodedNames[len];
  if (list) {
    outer: for (const e of list) {
      const b = e.bytes;
      for (let i = 0; i < len; i++) if (b[i] !== bytes[start + i]) continue outer;
      return e.name;
    }
  }
  let name: string;
  try {
    name = decoder.decode(bytes.subarray(start, start + len));
  } catch {
    throw new RmiFrameError("RMI call method name is not valid UTF-8");
  }
  if (decodedCount < NAME_TABLE_MAX) {
    decodedCount++;
    (decodedNames[len] ??= []).push({ bytes: bytes.slice(start, start + len), name });
  }
  return name;
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

function get32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

/** Builds a CALL frame. Throws `RangeError` for a bad method name or call id. */
export function encodeCall(
  callId: number,
  method: string,
  ack: AckMode,
  args: Uint8Array,
): Uint8Array {
  const name = encodeName(method);
  checkU32("callId", callId);
  const n = name.byteLength;
  const frame = new Uint8Array(FRAME_HEADER_BYTES + n + args.byteLength);
  frame[0] = FrameKind.Call;
  frame[1] = ACK_CODES[ack];
  frame[2] = n >>> 8;
  frame[3] = n;
  put32(frame, 4, callId);
  put32(frame, 8, args.byteLength);
  for (let i = 0; i < n; i++) frame[FRAME_HEADER_BYTES + i] = name[i];
  frame.set(args, FRAME_HEADER_BYTES + name.byteLength);
  return frame;
}

/** Scratch for UTF-8 encoding of arguments before the frame's size is known (grown on demand, never shrunk past 64 KiB). */
let scratch = new Uint8Array(4096);

/**
 * Builds a CALL frame whose arguments are `text` as UTF-8 (JSON arguments):
 * the text is encoded once, into a reused scratch buffer, and the frame is
 * the only allocation. Throws `RangeError` like `encodeCall`.
 */
export function encodeCallText(callId: number, method: string, ack: AckMode, text: string): Uint8Array {
  const name = encodeName(method);
  checkU32("callId", callId);
  // UTF-8 takes at most 3 bytes per UTF-16 unit.
  const most = text.length * 3;
  if (scratch.byteLength < most) scratch = new Uint8Array(Math.max(most, scratch.byteLength * 2));
  const argsLen = encoder.encodeInto(text, scratch).written;
  const n = name.byteLength;
  const frame = new Uint8Array(FRAME_HEADER_BYTES + n + argsLen);
  frame[0] = FrameKind.Call;
  frame[1] = ACK_CODES[ack];
  frame[2] = n >>> 8;
  frame[3] = n;
  put32(frame, 4, callId);
  put32(frame, 8, argsLen);
  for (let i = 0; i < n; i++) frame[FRAME_HEADER_BYTES + i] = name[i];
  frame.set(argsLen === scratch.byteLength ? scratch : scratch.subarray(0, argsLen), FRAME_HEADER_BYTES + n);
  if (scratch.byteLength > 1 << 16) scratch = new Uint8Array(4096);
  return frame;
}

/** Builds a REPLY frame: `ok` with an encoded result, or an error with its text. */
export function encodeReply(callId: number, ok: boolean, body: Uint8Array): Uint8Array {
  checkU32("callId", callId);
  const frame = new Uint8Array(FRAME_HEADER_BYTES + body.byteLength);
  frame[0] = ok ? FrameKind.ReplyOk : FrameKind.ReplyError;
  put32(frame, 4, callId);
  put32(frame, 8, body.byteLength);
  frame.set(body, FRAME_HEADER_BYTES);
  return frame;
}

/** Builds an error REPLY from a message text. */
export function encodeErrorReply(callId: number, message: string): Uint8Array {
  return encodeReply(callId, false, encoder.encode(message));
}

/** Decodes the text of an error REPLY body (lenient: bad UTF-8 is replaced). */
export function decodeErrorText(body: Uint8Array): string {
  return new TextDecoder().decode(body);
}

/**
 * Decodes one frame. Every field is bounds-checked; any violation throws
 * `RmiFrameError` naming the rule and the value. Returned byte fields are
 * views into `bytes`: copy or decode them before the message is released.
 */
export function decodeFrame(bytes: Uint8Array): Frame {
  if (bytes.byteLength < FRAME_HEADER_BYTES) {
    throw new RmiFrameError(
      `RMI frame must be at least ${FRAME_HEADER_BYTES} bytes: got ${bytes.byteLength}`,
    );
  }
  const kind = bytes[0];
  const callId = get32(bytes, 4);
  const bodyLen = get32(bytes, 8);
  if (kind === FrameKind.Call) {
    const ackCode = bytes[1];
    const ack = ACK_MODES[ackCode];
    if (ack === undefined) {
      throw new RmiFrameError(`RMI call ack code must be 0, 1 or 2: got ${ackCode}`);
    }
    const nameLen = (bytes[2] << 8) | bytes[3];
    if (nameLen < 1 || nameLen > MAX_METHOD_NAME_BYTES) {
      throw new RmiFrameError(
        `RMI call method name length must be 1..${MAX_METHOD_NAME_BYTES}: got ${nameLen}`,
      );
    }
    const expected = FRAME_HEADER_BYTES + nameLen + bodyLen;
    if (expected !== bytes.byteLength) {
      throw new RmiFrameError(
        `RMI call frame length must be 12 + nameLen ${nameLen} + argsLen ${bodyLen} = ${expected}: got ${bytes.byteLength}`,
      );
    }
    const method = decodeName(bytes, FRAME_HEADER_BYTES, nameLen);
    const args = bytes.subarray(FRAME_HEADER_BYTES + nameLen);
    return { kind: "call", ack, callId, method, args };
  }
  if (kind === FrameKind.ReplyOk || kind === FrameKind.ReplyError) {
    if (bytes[1] !== 0 || bytes[2] !== 0 || bytes[3] !== 0) {
      throw new RmiFrameError("RMI reply reserved bytes 1..3 must be zero");
    }
    const expected = FRAME_HEADER_BYTES + bodyLen;
    if (expected !== bytes.byteLength) {
      throw new RmiFrameError(
        `RMI reply frame length must be 12 + bodyLen ${bodyLen} = ${expected}: got ${bytes.byteLength}`,
      );
    }
    return {
      kind: "reply",
      ok: kind === FrameKind.ReplyOk,
      callId,
      body: bytes.subarray(FRAME_HEADER_BYTES),
    };
  }
  throw new RmiFrameError(
    `RMI frame kind must be 0x01 (call), 0x02 or 0x03 (reply): got 0x${kind.toString(16).padStart(2, "0")}`,
  );
}

function checkU32(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new RangeError(`'${name}' must be an unsigned 32-bit integer: got ${value}`);
  }
}
