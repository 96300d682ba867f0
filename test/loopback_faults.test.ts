import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { loopbackPair } from "../src/sdp/links/loopback.ts";
import { connect, listen } from "../src/sdp/mod.ts";
import type { MessageSocket } from "../src/sdp/types.ts";
import { MID } from "../src/sdp/wire.ts";
import { pattern } from "./fixtures/sdp_engine_sim.ts";

/** Reads `n` messages (copies), releasing each. */
async function collect(s: MessageSocket, n: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  if (n === 0) return out;
  for await (const m of s) {
    out.push(m.copy());
    m.release();
    if (out.length === n) break;
  }
  return out;
}

const SMALL = { recvBufferSize: 1024, recvBufferCount: 8, sendSlots: 8, maxMessageSize: 1 << 20, zcopyThreshold: 4096 };

describe("loopback transport", () => {
  test("loopback delivers 1 B to 1 MiB in order, both directions at once, by bcopy below and zcopy above the threshold", async () => {
    const [a, b] = await loopbackPair(SMALL);
    const sizes = [1, 100, 1000, 1008, 1009, 4095, 4096, 5000, 65536, 1 << 20, 3, 70000];
    const msgs = sizes.map((n, i) => pattern(i, n));
    const gotB = collect(b, msgs.length);
    const gotA = collect(a, msgs.length);
    await Promise.all([...msgs.map((m) => a.send(m)), ...msgs.map((m) => b.send(m))]);
    assert.deepEqual(await gotB, msgs);
    assert.deepEqual(await gotA, msgs);
    const st = a.stats();
    assert.equal(st.messagesSent, msgs.length);
    assert.equal(st.zcopySends, sizes.filter((n) => n >= 4096).length);
    assert.equal(st.bcopySends, sizes.filter((n) => n < 4096).length);
    assert.equal(b.stats().bytesReceived, sizes.reduce((x, y) => x + y, 0));
    await a.close();
    assert.equal(await b.closed, undefined);
  });

  test("loopback keeps order under seeded reordering of completion channels", async () => {
    for (const seed of [1, 2, 3, 17, 4242]) {
      const [a, b] = await loopbackPair({ ...SMALL, reorderSeed: seed });
      const msgs = Array.from({ length: 60 }, (_, i) => pattern(i, 1 + ((i * 7919) % 9000)));
      const got = collect(b, msgs.length);
      await Promise.all(msgs.map((m) => a.send(m)));
      assert.deepEqual(await got, msgs, `seed ${seed}`);
      await a.close();
    }
  });

  test("loopback: a dropped send completion is covered by a later one, so both sends resolve", async () => {
    const [a, b, ] = await loopbackPair(SMALL).then((p) => [p[0], p[1], p.faults] as const).then(([a, b, f]) => {
      f.dropNext("sendDone", 0);
      return [a, b];
    });
    const got = collect(b, 2);
    await Promise.all([a.send(pattern(0, 10)), a.send(pattern(1, 10))]);
    assert.equal((await got).length, 2);
    await a.close();
  });

  test("loopback: a send whose completion is lost resolves on the peer's next acknowledgement", async () => {
    const p = await loopbackPair(SMALL);
    const [a, b] = p;
    p.faults.dropNext("sendDone", 0);
    let resolved = false;
    const s = a.send(pattern(0, 10)).then(() => (resolved = true));
    assert.deepEqual(await collect(b, 1), [pattern(0, 10)]);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(resolved, false, "no completion and no ack yet");
    const back = collect(a, 1);
    await b.send(pattern(1, 5)); // carries mseq_ack covering a's message
    await s;
    await back;
    await a.close();
  });

  test("loopback: a READ completion delayed past cancelTimeoutMs is cancelled, then completes normally", async () => {
    const p = await loopbackPair({ ...SMALL, cancelTimeoutMs: 200 });
    const [a, b] = p;
    const sentFrames: number[] = [];
    let held = false;
    // Hold the READ completion until the sender's SrcAvailCancel has reached the reader.
    p.faults.intercept((e) => {
      if (e.kind === "frame" && e.side === 1 && e.mid !== undefined) {
        sentFrames.push(e.mid);
        if (e.mid === MID.SrcAvailCancel) setTimeout(() => p.faults.releaseHeld(), 0);
      }
      if (e.kind === "readDone" && !held) {
        held = true;
        return "hold";
      }
      return undefined;
    });
    const msg = pattern(3, 10000);
    const got = collect(b, 1);
    await a.send(msg);
    assert.deepEqual(await got, [msg]);
    assert.ok(sentFrames.includes(MID.SrcAvailCancel), "the sender cancelled");
    assert.equal(a.stats().cancels, 1);
    assert.equal(a.stats().zcopySends, 1);
    assert.equal(a.stats().zcopyFallbacks, 0);
    await a.close();
  });

  test("loopback: a READ that fails with a remote access error falls back to bcopy and the message arrives", async () => {
    const p = await loopbackPair(SMALL);
    const [a, b] = p;
    p.faults.failNextRead("remote access error", 1);
    const msg = pattern(4, 50000);
    const got = collect(b, 1);
    await a.send(msg);
    assert.deepEqual(await got, [msg]);
    assert.equal(b.stats().readFailures, 1);
    assert.equal(a.stats().zcopyFallbacks, 1);
    assert.equal(a.stats().bcopySends, 1);
    await a.close();
  });

  test("loopback: a READ that never completes ends the connection with an error naming the stuck transfer", async () => {
    const p = await loopbackPair({ ...SMALL, cancelTimeoutMs: 20 });
    const [a, b] = p;
    p.faults.dropNext("readDone", 1);
    const pending = [a.send(pattern(0, 8000)), a.send(pattern(1, 10))];
    const results = await Promise.allSettled(pending);
    for (const r of results) {
      assert.equal(r.status, "rejected");
      assert.match((r as PromiseRejectedResult).reason.message, /zcopy transfer of 8000 bytes stuck/);
    }
    assert.match((await a.closed)!.message, /stuck/);
    assert.ok(await b.closed);
  });

  test("loopback: disconnecting in the middle of a zcopy transfer rejects every pending send and ends iteration", async () => {
    const p = await loopbackPair(SMALL);
    const [a, b] = p;
    p.faults.intercept((e) => {
      if (e.kind === "readDone") {
        p.faults.disconnect(new Error("cable pulled"));
        return "drop";
      }
      return undefined;
    });
    const sends = [a.send(pattern(0, 100000)), a.send(pattern(1, 10)), a.send(pattern(2, 20))];
    const results = await Promise.allSettled(sends);
    for (const r of results) {
      assert.equal(r.status, "rejected");
      assert.match((r as PromiseRejectedResult).reason.message, /send failed: connection lost: cable pulled/);
    }
    // Nothing was delivered: not the half-read zcopy message, nor the two queued behind it.
    const delivered: number[] = [];
    for await (const m of b) {
      delivered.push(m.bytes.length);
      m.release();
    }
    assert.deepEqual(delivered, []);
    assert.equal((await a.closed)?.message, "cable pulled");
    await a.close(); // idempotent after loss
  });

  test("loopback: a receiver that holds its messages stalls the sender on credits, which resumes on release", async () => {
    const [a, b] = await loopbackPair({ ...SMALL, recvBufferCount: 4 });
    const msgs = Array.from({ length: 10 }, (_, i) => pattern(i, 50));
    const sends = Promise.all(msgs.map((m) => a.send(m)));
    const held = [];
    const it = b[Symbol.asyncIterator]();
    held.push((await it.next()).value);
    held.push((await it.next()).value);
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(a.stats().creditStalls >= 1);
    assert.ok(a.stats().messagesSent < 10, "the sender waited");
    const heldBytes = held.map((m) => m.copy());
    for (const m of held) m.release();
    const rest = [];
    for (let i = 2; i < 10; i++) {
      const m = (await it.next()).value;
      rest.push(m.copy());
      m.release();
    }
    await sends;
    assert.deepEqual(heldBytes, msgs.slice(0, 2), "the held messages were the first two, in order");
    assert.deepEqual(rest, msgs.slice(2));
    await a.close();
  });

  test("loopback: reserve() serializes straight into the source arena and commit(n) sends n bytes by zcopy", async () => {
    const [a, b] = await loopbackPair(SMALL);
    const r = await a.reserve(20000);
    r.bytes.fill(0x5a, 0, 12345);
    const got = collect(b, 1);
    await r.commit(12345);
    assert.deepEqual(await got, [new Uint8Array(12345).fill(0x5a)]);
    assert.equal(a.stats().zcopySends, 1);
    await assert.rejects(r.commit(), /already committed/);
    const r2 = await a.reserve(10);
    r2.cancel();
    await a.close();
  });

  test("loopback: send() rejects a message above maxMessageSize with the sizes named", async () => {
    const [a] = await loopbackPair();
    await assert.rejects(a.send(new Uint8Array(20000000)), {
      message: "message of 20000000 bytes exceeds maxMessageSize 16777216",
    });
    await a.close();
  });

  test("loopback: close() is idempotent, rejects pending sends naming the close, and resolves closed without error", async () => {
    const [a, b] = await loopbackPair({ ...SMALL, recvBufferCount: 4 });
    const it = b[Symbol.asyncIterator]();
    const sends = Array.from({ length: 8 }, (_, i) => a.send(pattern(i, 30)));
    const settled = Promise.allSettled(sends);
    await it.next(); // one arrived, not released: later ones stall
    await Promise.all([a.close(), a.close(), a[Symbol.asyncDispose]()]);
    const results = await settled;
    const rejected = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    assert.ok(rejected.length >= 1);
    for (const r of rejected) assert.equal(r.reason.message, "send failed: the socket was closed");
    assert.equal(await a.closed, undefined);
    assert.equal(await b.closed, undefined);
    await assert.rejects(a.send(pattern(0, 1)), /the socket is closed/);
  });

  test("loopback: a received view stays valid until release and copy() owns its bytes", async () => {
    const [a, b] = await loopbackPair(SMALL);
    const it = b[Symbol.asyncIterator]();
    await a.send(pattern(1, 100));
    const m = (await it.next()).value;
    const c = m.copy();
    assert.deepEqual(m.bytes, pattern(1, 100));
    m.release();
    m.release(); // harmless
    await a.send(pattern(2, 100));
    const m2 = (await it.next()).value;
    assert.deepEqual(c, pattern(1, 100));
    m2.release();
    await a.close();
  });

  test("loopback listen/connect by name yields handshaken sockets", async () => {
    const server = await listen({ transport: "loopback", host: "sdp-test", port: 0 });
    assert.equal(server.transport, "loopback");
    const accepted = (async () => {
      for await (const s of server) return s;
    })();
    const c = await connect({ transport: "loopback", host: "sdp-test", port: server.address.port });
    const s = (await accepted)!;
    const got = collect(s, 1);
    await c.send(pattern(9, 77));
    assert.deepEqual(await got, [pattern(9, 77)]);
    assert.equal(c.transport, "loopback");
    await c.close();
    await server.close();
    await assert.rejects(connect({ transport: "loopback", host: "sdp-test", port: server.address.port }), /nobody is listening/);
  });
});
