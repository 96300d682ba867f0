import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Engine } from "../src/sdp/engine.ts";
import { decodeFrame, encode, MID, ProtocolError } from "../src/sdp/wire.ts";
import { BASE_OPTIONS, pattern, Sim } from "./fixtures/sdp_engine_sim.ts";

function mids(frames: { body: { mid: number } }[]): number[] {
  return frames.map((f) => f.body.mid);
}

describe("engine handshake", () => {
  test("engine handshake exchanges HELLO and HELLO_ACK with sizes, then both sides are open", () => {
    const sim = new Sim();
    sim.run();
    assert.deepEqual(mids(sim.a.posted), [MID.Hello]);
    assert.deepEqual(mids(sim.b.posted), [MID.HelloAck]);
    assert.equal(sim.a.posted[0].mseq, 0);
    assert.equal(sim.a.posted[0].mseqAck, -1);
    assert.equal(sim.b.posted[0].mseqAck, 0);
    assert.ok(sim.a.opened && sim.b.opened);
    assert.equal(sim.a.engine.peer?.recvBufferCount, BASE_OPTIONS.recvBufferCount);
    assert.equal(sim.a.engine.peer?.zcopyRead, true);
    // Initial credits: the active side sees all the peer's buffers; the passive one all but the HELLO's.
    assert.equal(sim.a.engine.credits, BASE_OPTIONS.recvBufferCount);
    assert.equal(sim.b.engine.credits, BASE_OPTIONS.recvBufferCount - 1);
  });

  test("engine handshake rejects a DATA frame before HELLO with a ProtocolError", () => {
    const e = new Engine({ ...BASE_OPTIONS, role: "passive" });
    e.start(0);
    e.frame(encode({ bufs: 8, mseq: 0, mseqAck: -1 }, { mid: MID.Data, more: false, total: undefined, payload: new Uint8Array(3) }), 0, 0);
    const close = e.takeActions().find((a) => a.type === "close");
    assert.ok(close && close.type === "close" && close.error instanceof ProtocolError);
    assert.match(close.error!.message, /expected HELLO during the handshake, got DATA/);
  });

  test("engine handshake times out with a clear error when no HELLO comes", () => {
    const e = new Engine({ ...BASE_OPTIONS, role: "passive" });
    e.start(0);
    assert.equal(e.nextDeadline(), BASE_OPTIONS.handshakeTimeoutMs);
    e.tick(BASE_OPTIONS.handshakeTimeoutMs);
    const close = e.takeActions().find((a) => a.type === "close");
    assert.match((close as { error: Error }).error.message, /handshake timed out after 1000 ms/);
  });
});

describe("engine credits", () => {
  test("engine credits hold two back: with 4 peer buffers only 2 message frames go before a credit update", () => {
    const sim = new Sim({ engine: { recvBufferCount: 4 }, lazyRelease: true });
    sim.run();
    for (let i = 0; i < 5; i++) sim.send(0, pattern(i, 10));
    // Nothing delivered yet: exactly two DATA frames are on the wire.
    assert.equal(sim.a.wire.filter((f) => f.bytes[0] === MID.Data).length, 2);
    assert.equal(sim.a.engine.stats.creditStalls, 1);
    sim.run();
    // Messages are held (not released) by the receiver... run released them lazily: all arrive.
    assert.equal(sim.b.delivered.length, 5);
    assert.deepEqual(sim.a.resolved, [1, 2, 3, 4, 5]);
  });

  test("engine credits: a receiver that never releases stops the sender without deadlock or loss", () => {
    const sim = new Sim({ engine: { recvBufferCount: 4 }, lazyRelease: true });
    sim.run();
    for (let i = 0; i < 6; i++) sim.send(0, pattern(i, 10));
    // Step everything except releases.
    for (;;) {
      const before = sim.steps;
      const held = sim.b.held.splice(0);
      const progressed = sim.step();
      sim.b.held.push(...held);
      if (!progressed || sim.steps === before) break;
    }
    assert.ok(sim.b.delivered.length < 6, "the sender must stop when the receiver holds every buffer");
    sim.run(); // now releases happen
    assert.equal(sim.b.delivered.length, 6);
    sim.b.delivered.forEach((m, i) => assert.deepEqual(m, pattern(i, 10)));
  });
});

describe("engine bcopy", () => {
  test("engine bcopy: reassembled messages not yet taken by the application count against the receive ring", () => {
    const sim = new Sim({ zcopy: false, engine: { recvBufferCount: 4 }, lazyRelease: true });
    sim.run();
    for (let i = 0; i < 8; i++) sim.send(0, pattern(i, 1000)); // 5 frames each
    for (let n = 0; n < 10000; n++) {
      const held = sim.b.held.splice(0);
      const ok = sim.step();
      sim.b.held.push(...held);
      if (!ok) break;
    }
    assert.ok(sim.b.delivered.length <= 4, `delivered ${sim.b.delivered.length} while holding every message`);
    sim.run();
    assert.deepEqual(sim.b.delivered, Array.from({ length: 8 }, (_, i) => pattern(i, 1000)));
  });

  test("engine bcopy resolves on the send completion over RC, before any acknowledgement", () => {
    const sim = new Sim();
    sim.run();
    const id = sim.send(0, pattern(0, 100));
    // Deliver the frame (which queues its completion), then the completion.
    const ev = sim.enabled();
    ev[0]();
    sim.flush();
    assert.deepEqual(sim.a.resolved, []);
    sim.a.engine.sendDone(sim.a.sendDones.shift()!, 0);
    sim.flush();
    assert.deepEqual(sim.a.resolved, [id]);
  });

  test("engine bcopy over TCP resolves only when the peer's mseq_ack covers the message", () => {
    const sim = new Sim({ tcp: true, zcopy: false });
    sim.run();
    const id = sim.send(0, pattern(0, 100));
    sim.a.engine.sendDone(sim.a.sendDones.shift()!, 0); // written, not delivered
    sim.flush();
    assert.deepEqual(sim.a.resolved, []);
    sim.run(); // frame arrives, receiver acknowledges at once
    assert.deepEqual(sim.a.resolved, [id]);
    assert.ok(sim.b.engine.stats.creditUpdates >= 1);
  });

  test("engine bcopy fragments a message larger than a receive buffer and reassembles it exactly", () => {
    const sim = new Sim({ zcopy: false });
    sim.run();
    const msg = pattern(7, 3000);
    sim.send(0, msg);
    sim.run();
    const data = sim.a.posted.filter((f) => f.body.mid === MID.Data);
    assert.ok(data.length > 10);
    const first = data[0].body as { more: boolean; total?: number };
    assert.equal(first.more, true);
    assert.equal(first.total, 3000);
    assert.equal((data.at(-1)!.body as { more: boolean }).more, false);
    assert.deepEqual(sim.b.delivered, [msg]);
  });

  test("engine rejects a message larger than maxMessageSize with a clear error", () => {
    const sim = new Sim({ engine: { maxMessageSize: 16777216 } });
    sim.run();
    const id = sim.send(0, new Uint8Array(20000000));
    assert.equal(sim.a.rejected.get(id)?.message, "message of 20000000 bytes exceeds maxMessageSize 16777216");
  });

  test("engine rejects a message larger than the peer's maxMessageSize, naming the peer", () => {
    const sim = new Sim({ zcopy: false, b: { maxMessageSize: 1000 } });
    sim.run();
    const id = sim.send(0, new Uint8Array(2000));
    sim.run();
    assert.equal(sim.a.rejected.get(id)?.message, "message of 2000 bytes exceeds the peer's maxMessageSize 1000");
  });
});

describe("engine zcopy", () => {
  test("engine zcopy advertises SrcAvail with the arena address and resolves on RdmaRdCompl", () => {
    const sim = new Sim();
    sim.run();
    const msg = pattern(1, 2000);
    const id = sim.send(0, msg);
    const sa = sim.a.posted.at(-1)!.body as { mid: number; len: number; rkey: number; vaddr: bigint };
    assert.equal(sa.mid, MID.SrcAvail);
    assert.equal(sa.len, 2000);
    assert.equal(sa.rkey, sim.a.rkey);
    assert.equal(sa.vaddr, sim.a.addr + BigInt(sim.a.arenaOf.get(id)!));
    sim.run();
    assert.deepEqual(sim.b.delivered, [msg]);
    assert.ok(mids(sim.b.posted).includes(MID.RdmaRdCompl));
    assert.deepEqual(sim.a.resolved, [id]);
    assert.equal(sim.a.engine.stats.zcopySends, 1);
  });

  test("engine zcopy: both sides advertising at once do not deadlock", () => {
    const sim = new Sim({ engine: { recvBufferCount: 4 } });
    sim.run();
    const ma = [pattern(1, 1500), pattern(2, 700)];
    const mb = [pattern(3, 1800), pattern(4, 900)];
    for (const m of ma) sim.send(0, m);
    for (const m of mb) sim.send(1, m);
    sim.run();
    assert.deepEqual(sim.b.delivered, ma);
    assert.deepEqual(sim.a.delivered, mb);
    assert.equal(sim.a.resolved.length + sim.b.resolved.length, 4);
  });

  test("engine zcopy: a failed READ is answered with SendSM and the message arrives by bcopy", () => {
    const sim = new Sim({ seed: 1, failReadProb: 1 });
    sim.run();
    const msg = pattern(5, 3000);
    const id = sim.send(0, msg);
    sim.run();
    assert.deepEqual(sim.b.delivered, [msg]);
    assert.deepEqual(sim.a.resolved, [id]);
    assert.equal(sim.b.engine.stats.readFailures, 1);
    assert.equal(sim.a.engine.stats.zcopyFallbacks, 1);
    assert.equal(sim.a.engine.stats.bcopySends, 1);
  });

  test("engine zcopy: a SrcAvail stuck behind a full sink is cancelled and falls back to bcopy", () => {
    // The receiver holds the first zcopy message (sink full); the second times out.
    const sim = new Sim({ engine: { maxMessageSize: 2048 }, lazyRelease: true });
    sim.run();
    const m1 = pattern(1, 2000);
    const m2 = pattern(2, 1500);
    sim.send(0, m1);
    sim.send(0, m2);
    for (let n = 0; n < 1000; n++) {
      const held = sim.b.held.splice(0);
      const ok = sim.step();
      sim.b.held.push(...held);
      if (!ok || sim.b.delivered.length === 2) break;
    }
    assert.equal(sim.a.engine.stats.cancels, 1);
    assert.ok(mids(sim.a.posted).includes(MID.SrcAvailCancel));
    assert.ok(mids(sim.b.posted).includes(MID.SendSM));
    assert.deepEqual(sim.b.delivered, [m1, m2]);
    assert.equal(sim.a.engine.stats.zcopyFallbacks, 1);
  });

  test("engine zcopy: a READ that never completes closes the connection with an error naming the stuck transfer", () => {
    const sim = new Sim({ seed: 3, dropReadProb: 1 });
    sim.run();
    const id = sim.send(0, pattern(1, 1000));
    sim.run();
    assert.ok(sim.a.closed?.error);
    assert.match(sim.a.closed.error.message, /zcopy transfer of 1000 bytes stuck: neither RdmaRdCompl nor SendSM within 100 ms after SrcAvailCancel/);
    assert.match(sim.a.rejected.get(id)!.message, /send failed: connection closed: zcopy transfer of 1000 bytes stuck/);
  });
});

describe("engine closing", () => {
  test("engine close is orderly: DISCONN both ways, closed without error, pending sends rejected", () => {
    const sim = new Sim({ engine: { recvBufferCount: 4 } });
    sim.run();
    const ids = [1, 2, 3, 4, 5].map((i) => sim.send(0, pattern(i, 50)));
    sim.a.engine.close(sim.now);
    sim.flush();
    sim.run();
    assert.deepEqual(sim.a.closed, { error: undefined });
    assert.deepEqual(sim.b.closed, { error: undefined });
    assert.ok(mids(sim.a.posted).includes(MID.Disconn));
    assert.ok(mids(sim.b.posted).includes(MID.Disconn));
    for (const id of ids) {
      assert.ok(sim.a.resolved.includes(id) || sim.a.rejected.get(id)?.message === "send failed: the socket was closed");
    }
  });

  test("engine: the peer's DISCONN rejects every pending send with 'the peer closed the connection'", () => {
    const sim = new Sim({ engine: { recvBufferCount: 4 } });
    sim.run();
    const ids = [1, 2, 3, 4, 5].map((i) => sim.send(0, pattern(i, 50)));
    assert.equal(sim.a.wire.length, 2); // two in flight, three waiting for credits
    sim.b.engine.close(sim.now);
    sim.flush();
    sim.deliver(1); // B's DISCONN reaches A first
    for (const id of ids) assert.equal(sim.a.rejected.get(id)?.message, "send failed: the peer closed the connection");
    sim.run();
    assert.deepEqual(sim.a.closed, { error: undefined });
    assert.deepEqual(sim.b.closed, { error: undefined });
  });

  test("engine: ABORT from the peer closes with an error", () => {
    const sim = new Sim();
    sim.run();
    const f = encode({ bufs: 8, mseq: 1, mseqAck: 0 }, { mid: MID.Abort });
    sim.a.engine.frame(f, sim.a.free.shift()!, 0);
    sim.flush();
    assert.match(sim.a.closed!.error!.message, /peer aborted/);
  });
});

describe("engine protocol errors", () => {
  function openPair(): Sim {
    const sim = new Sim();
    sim.run();
    return sim;
  }
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ["an out-of-sequence mseq", encode({ bufs: 8, mseq: 5, mseqAck: 0 }, { mid: MID.SendSM }), /SendSM mseq 5 out of sequence: expected 1/],
    ["an RdmaRdCompl with no SrcAvail", encode({ bufs: 8, mseq: 1, mseqAck: 0 }, { mid: MID.RdmaRdCompl, len: 4 }), /RdmaRdCompl received with no SrcAvail outstanding/],
    ["a SendSM with no SrcAvail", encode({ bufs: 8, mseq: 1, mseqAck: 0 }, { mid: MID.SendSM }), /SendSM received with no SrcAvail outstanding/],
    ["an ack of a frame never sent", encode({ bufs: 8, mseq: 1, mseqAck: 9 }, { mid: MID.SendSM }), /mseq_ack 9 acknowledges a frame never sent/],
    ["bufs above the peer's ring", encode({ bufs: 99, mseq: 1, mseqAck: 0 }, { mid: MID.SendSM }), /bufs 99 exceeds the peer's announced recvBufferCount 8/],
    ["a second HELLO", encode({ bufs: 8, mseq: 1, mseqAck: 0 }, { mid: MID.Hello, hello: { version: 1, zcopyRead: true, recvBufferSize: 256, recvBufferCount: 8, maxMessageSize: 10 } }), /HELLO received after the handshake/],
    ["a fragment without HEAD", encode({ bufs: 8, mseq: 1, mseqAck: 0 }, { mid: MID.Data, more: true, total: undefined, payload: new Uint8Array(4) }), /MORE but no HEAD/],
    ["a HEAD above maxMessageSize", encode({ bufs: 8, mseq: 1, mseqAck: 0 }, { mid: MID.Data, more: true, total: 1 << 20, payload: new Uint8Array(4) }), /DATA HEAD total 1048576 exceeds maxMessageSize 4096/],
    ["a SrcAvail above maxMessageSize", encode({ bufs: 8, mseq: 1, mseqAck: 0 }, { mid: MID.SrcAvail, len: 5000, rkey: 1, vaddr: 0n }), /SrcAvail of 5000 bytes exceeds maxMessageSize 4096/],
  ];
  for (const [what, bytes, re] of cases) {
    test(`engine closes the connection with a ProtocolError on ${what}, posting ABORT`, () => {
      const sim = openPair();
      const idx = sim.a.free.shift()!;
      sim.a.buffers[idx].set(bytes);
      sim.a.engine.frame(sim.a.buffers[idx].subarray(0, bytes.length), idx, 0);
      sim.flush();
      assert.ok(sim.a.closed?.error instanceof ProtocolError, `closed with ${sim.a.closed?.error}`);
      assert.match(sim.a.closed.error.message, re);
      assert.equal(sim.a.posted.at(-1)!.body.mid, MID.Abort);
      // The peer sees the link go down; the ABORT decodes.
      assert.equal(decodeFrame(sim.a.wire.at(-1)!.bytes, 1).body.mid, MID.Abort);
    });
  }

  test("engine: a second SrcAvail while one is outstanding is a protocol error", () => {
    const sim = openPair();
    const f1 = encode({ bufs: 8, mseq: 1, mseqAck: 0 }, { mid: MID.SrcAvail, len: 600, rkey: sim.b.rkey, vaddr: sim.b.addr });
    const f2 = encode({ bufs: 8, mseq: 2, mseqAck: 0 }, { mid: MID.SrcAvail, len: 600, rkey: sim.b.rkey, vaddr: sim.b.addr });
    sim.a.engine.frame(f1, sim.a.free.shift()!, 0);
    sim.a.engine.frame(f2, sim.a.free.shift()!, 0);
    sim.flush();
    assert.match(sim.a.closed!.error!.message, /SrcAvail received while another SrcAvail is outstanding/);
  });
});
