import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  type Body,
  CREDIT_UPDATE,
  decodeFrame,
  DISCONN,
  encode,
  encodeFrame,
  MID,
  ProtocolError,
  SEND_SM,
  SRCAVAIL_CANCEL,
  ABORT,
} from "../src/sdp/wire.ts";

const H = { bufs: 513, mseq: 0x01020304, mseqAck: 0xfffffffe };
const hello = { version: 1, zcopyRead: true, recvBufferSize: 65536, recvBufferCount: 64, maxMessageSize: 16777216 };

describe("wire codec", () => {
  const bodies: Array<[string, Body]> = [
    ["HELLO", { mid: MID.Hello, hello }],
    ["HELLO_ACK", { mid: MID.HelloAck, hello: { ...hello, zcopyRead: false } }],
    ["DATA", { mid: MID.Data, more: false, total: undefined, payload: Uint8Array.of(1, 2, 3) }],
    ["DATA HEAD", { mid: MID.Data, more: true, total: 100000, payload: new Uint8Array(40).fill(9) }],
    ["DATA MORE", { mid: MID.Data, more: true, total: undefined, payload: new Uint8Array(7).fill(5) }],
    ["credit update", CREDIT_UPDATE],
    ["SrcAvail", { mid: MID.SrcAvail, len: 1 << 20, rkey: 0xdeadbeef, vaddr: 0x7f1234567000n }],
    ["RdmaRdCompl", { mid: MID.RdmaRdCompl, len: 65536 }],
    ["SendSM", SEND_SM],
    ["SrcAvailCancel", SRCAVAIL_CANCEL],
    ["DISCONN", DISCONN],
    ["ABORT", ABORT],
  ];
  for (const [name, body] of bodies) {
    test(`wire codec round-trips ${name} with every header field`, () => {
      const bytes = encode(H, body);
      const f = decodeFrame(bytes, H.mseq);
      assert.equal(f.bufs, H.bufs);
      assert.equal(f.mseq, H.mseq);
      assert.equal(f.mseqAck, H.mseqAck);
      assert.deepEqual(f.body, body);
    });
  }

  test("wire codec lays the base header out big-endian as in SDP's BSDH", () => {
    const bytes = encode({ bufs: 0x0102, mseq: 0x03040506, mseqAck: 0x0708090a }, { mid: MID.RdmaRdCompl, len: 0x0b0c0d0e });
    assert.deepEqual([...bytes], [0x06, 0, 1, 2, 0, 0, 0, 20, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
  });

  test("wire codec puts the SrcAvail body as u32 len, u32 rkey, u64 vaddr", () => {
    const bytes = encode(H, { mid: MID.SrcAvail, len: 0x10, rkey: 0x20, vaddr: 0x0102030405060708n });
    assert.deepEqual([...bytes.subarray(16)], [0, 0, 0, 0x10, 0, 0, 0, 0x20, 1, 2, 3, 4, 5, 6, 7, 8]);
  });

  test("wire codec encodes a negative internal mseq_ack as its 32-bit value", () => {
    const f = decodeFrame(encode({ bufs: 1, mseq: 0, mseqAck: -1 }, DISCONN), 0);
    assert.equal(f.mseqAck, 0xffffffff);
  });

  test("wire codec accepts the mseq that wraps from 2^32-1 to 0", () => {
    assert.equal(decodeFrame(encode({ bufs: 1, mseq: 0, mseqAck: 0 }, SEND_SM), 0x100000000).mseq, 0);
  });

  test("wire codec refuses to encode a frame larger than its send slot", () => {
    assert.throws(
      () => encodeFrame(new Uint8Array(32), H, { mid: MID.Data, more: false, total: undefined, payload: new Uint8Array(17) }),
      /DATA frame of 33 bytes does not fit a 32-byte send slot/,
    );
  });
});

describe("wire codec validation", () => {
  function bad(name: string, bytes: Uint8Array, re: RegExp, expected = 0): void {
    test(`wire codec rejects ${name} with a ProtocolError naming it`, () => {
      assert.throws(() => decodeFrame(bytes, expected), (e: unknown) => e instanceof ProtocolError && re.test(e.message));
    });
  }
  const ok = encode({ bufs: 1, mseq: 0, mseqAck: 0 }, { mid: MID.RdmaRdCompl, len: 1 });
  const patch = (b: Uint8Array, at: number, ...v: number[]): Uint8Array => {
    const c = b.slice();
    c.set(v, at);
    return c;
  };
  bad("a frame shorter than the header", new Uint8Array(7), /frame of 7 bytes is shorter than the 16-byte header/);
  bad("a declared length that does not match", patch(ok, 7, 30), /declared length 30 does not match the 20 bytes received/);
  bad("a truncated frame", ok.subarray(0, 18), /declared length 20 does not match the 18 bytes received/);
  bad("an unknown message id", patch(ok, 0, 0x42), /unknown message id 0x42/);
  bad("reserved flags", patch(ok, 1, 0x80), /flags 0x80 on RdmaRdCompl: reserved bits must be zero/);
  bad(
    "an unknown DATA flag",
    patch(encode(H, { mid: MID.Data, more: false, total: undefined, payload: new Uint8Array(2) }), 1, 0x04),
    /flags 0x04 on DATA/,
    H.mseq,
  );
  bad("an out-of-sequence mseq", ok, /RdmaRdCompl mseq 0 out of sequence: expected 5/, 5);
  bad("an RdmaRdCompl with a short body", patch(encode(H, SEND_SM), 0, MID.RdmaRdCompl), /RdmaRdCompl body of 0 bytes: expected exactly 4/, H.mseq);
  bad("a SendSM with a body", patch(ok, 0, MID.SendSM), /SendSM body of 4 bytes: expected exactly 0/);
  bad(
    "a SrcAvail with a short body",
    patch(ok, 0, MID.SrcAvail),
    /SrcAvail body of 4 bytes: expected exactly 16/,
  );
  bad("a SrcAvail of 0 bytes", encode(H, { mid: MID.SrcAvail, len: 0, rkey: 1, vaddr: 1n }), /SrcAvail of 0 bytes/, H.mseq);
  bad("a HELLO of another version", patch(encode(H, { mid: MID.Hello, hello }), 17, 2), /HELLO version 2 not supported \(this side speaks 1\)/, H.mseq);
  bad("a HELLO with unknown capabilities", patch(encode(H, { mid: MID.Hello, hello }), 19, 0x03), /HELLO capabilities 0x3: unknown bits set/, H.mseq);
  bad(
    "a HELLO with a tiny receive buffer",
    encode(H, { mid: MID.Hello, hello: { ...hello, recvBufferSize: 32 } }),
    /HELLO recvBufferSize 32 is below the minimum 64/,
    H.mseq,
  );
  bad(
    "a HELLO with too few receive buffers",
    encode(H, { mid: MID.HelloAck, hello: { ...hello, recvBufferCount: 3 } }),
    /HELLO_ACK recvBufferCount 3 is outside 4..65535/,
    H.mseq,
  );
  bad(
    "a HELLO with maxMessageSize 0",
    encode(H, { mid: MID.Hello, hello: { ...hello, maxMessageSize: 0 } }),
    /HELLO maxMessageSize 0: must be at least 1/,
    H.mseq,
  );
  bad(
    "a DATA HEAD without MORE",
    patch(encode(H, { mid: MID.Data, more: true, total: 100, payload: new Uint8Array(4) }), 1, 0x02),
    /DATA with HEAD but not MORE/,
    H.mseq,
  );
  bad(
    "a DATA HEAD with no room for its total",
    patch(encode(H, { mid: MID.Data, more: true, total: undefined, payload: new Uint8Array(2) }), 1, 0x03),
    /DATA HEAD body of 2 bytes has no room for its 4-byte total length/,
    H.mseq,
  );
  bad(
    "a DATA HEAD whose total is not larger than its payload",
    encode(H, { mid: MID.Data, more: true, total: 4, payload: new Uint8Array(8) }),
    /DATA HEAD total length 4 is not larger than its own 8-byte payload/,
    H.mseq,
  );
  bad(
    "a DATA fragment with MORE and no payload",
    encode(H, { mid: MID.Data, more: true, total: undefined, payload: new Uint8Array(0) }),
    /DATA fragment with MORE and no payload/,
    H.mseq,
  );
});
