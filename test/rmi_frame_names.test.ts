import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { decodeFrame, encodeCall, RmiFrameError } from "../src/rmi/frame.ts";

describe("rmi frame method names", () => {
  test("rmi frame: names of the same length stay distinct through the name tables, call after call", () => {
    const names = ["put", "get", "del", "pút", "session.put", "session.get"];
    for (let round = 0; round < 3; round++) {
      for (const [i, name] of names.entries()) {
        const f = decodeFrame(encodeCall(i, name, "transport", Uint8Array.of(i)));
        assert.equal(f.kind, "call");
        if (f.kind !== "call") return;
        assert.equal(f.method, name);
        assert.equal(f.callId, i);
        assert.deepEqual([...f.args], [i]);
      }
    }
  });

  test("rmi frame: a bad name is rejected every time, not only the first", () => {
    for (let i = 0; i < 3; i++) {
      assert.throws(() => encodeCall(1, "", "none", new Uint8Array(0)), RangeError);
      assert.throws(() => encodeCall(1, "x".repeat(256), "none", new Uint8Array(0)), RangeError);
      const f = encodeCall(1, "ab", "none", new Uint8Array(0));
      f[12] = 0xff; // invalid UTF-8
      f[13] = 0xfe;
      assert.throws(() => decodeFrame(f), RmiFrameError);
    }
  });

  test("rmi frame: a decoded name does not alias the frame it came from", () => {
    const f = encodeCall(7, "alpha", "applied", new Uint8Array(0));
    assert.equal((decodeFrame(f) as { method: string }).method, "alpha");
    f.set(new TextEncoder().encode("omega"), 12); // the same frame buffer reused for another name
    assert.equal((decodeFrame(f) as { method: string }).method, "omega");
  });
});
