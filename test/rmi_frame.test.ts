import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeFrame, encodeCall, encodeReply, RmiFrameError } from "../src/rmi/frame.ts";
import { encodeErrorReply } from "../src/rmi/frame.ts";
import { jsonCodec } from "../src/rmi/codec.ts";

test("rmi frame round-trips a call with its id, method, ack mode and arguments", () => {
  const args = jsonCodec.encode({ id: "s1", set: { cart: [1, 2] } });
  const frame = decodeFrame(encodeCall(0xfffffffe, "replicate", "applied", args));
  assert.equal(frame.kind, "call");
  if (frame.kind !== "call") return;
  assert.equal(frame.callId, 0xfffffffe);
  assert.equal(frame.method, "replicate");
  assert.equal(frame.ack, "applied");
  assert.deepEqual(jsonCodec.decode(frame.args), { id: "s1", set: { cart: [1, 2] } });
});

test("rmi frame round-trips ok and error replies", () => {
  const ok = decodeFrame(encodeReply(7, true, jsonCodec.encode("applied")));
  assert.deepEqual(ok.kind === "reply" && [ok.ok, ok.callId, jsonCodec.decode(ok.body)], [true, 7, "applied"]);
  const err = decodeFrame(encodeErrorReply(8, "unknown method 'x'"));
  assert.deepEqual(err.kind === "reply" && [err.ok, new TextDecoder().decode(err.body)], [false, "unknown method 'x'"]);
});

test("rmi frame decode rejects truncated, padded and unknown frames with a clear error", () => {
  const good = encodeCall(1, "ping", "transport", new Uint8Array([1, 2, 3]));
  assert.throws(() => decodeFrame(good.subarray(0, 11)), /at least 12 bytes: got 11/);
  assert.throws(() => decodeFrame(good.subarray(0, good.length - 1)), /length must be 12 \+ nameLen 4 \+ argsLen 3 = 19: got 18/);
  const padded = new Uint8Array(good.length + 1);
  padded.set(good);
  assert.throws(() => decodeFrame(padded), RmiFrameError);
  const kind = good.slice();
  kind[0] = 0x09;
  assert.throws(() => decodeFrame(kind), /kind must be 0x01 \(call\), 0x02 or 0x03 \(reply\): got 0x09/);
  const ack = good.slice();
  ack[1] = 3;
  assert.throws(() => decodeFrame(ack), /ack code must be 0, 1 or 2: got 3/);
  const noName = good.slice();
  noName[2] = 0;
  noName[3] = 0;
  assert.throws(() => decodeFrame(noName), /method name length must be 1..255: got 0/);
  const hugeArgs = good.slice();
  new DataView(hugeArgs.buffer).setUint32(8, 0xffffffff);
  assert.throws(() => decodeFrame(hugeArgs), RmiFrameError);
});

test("rmi frame encode refuses empty or over-long method names", () => {
  assert.throws(() => encodeCall(1, "", "none", new Uint8Array()), /1..255 bytes/);
  assert.throws(() => encodeCall(1, "x".repeat(256), "none", new Uint8Array()), /got 256/);
  assert.throws(() => encodeCall(-1, "x", "none", new Uint8Array()), /unsigned 32-bit/);
});

test("rmi frame decode never throws anything but RmiFrameError on random bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        decodeFrame(bytes);
      } catch (error) {
        assert.ok(error instanceof RmiFrameError, String(error));
      }
    }),
    { numRuns: 2000 },
  );
});

test("rmi frame decode of any valid call returns exactly what was encoded", () => {
  fc.assert(
    fc.property(
      fc.nat({ max: 0xffffffff }),
      fc.string({ minLength: 1, maxLength: 60 }),
      fc.constantFrom("none" as const, "transport" as const, "applied" as const),
      fc.uint8Array({ maxLength: 300 }),
      (callId, method, ack, args) => {
        const frame = decodeFrame(encodeCall(callId, method, ack, args));
        assert.deepEqual(frame, { kind: "call", callId, method, ack, args });
      },
    ),
  );
});

test("rmi json codec encodes undefined as no bytes and refuses functions", () => {
  assert.equal(jsonCodec.encode(undefined).byteLength, 0);
  assert.equal(jsonCodec.decode(new Uint8Array()), undefined);
  assert.throws(() => jsonCodec.encode(() => 1), /cannot encode a function/);
  assert.throws(() => jsonCodec.decode(new TextEncoder().encode("{")), SyntaxError);
});
