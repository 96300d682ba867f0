import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { Buffer } from "node:buffer";
import { connect, listen, ProtocolError } from "../src/sdp/mod.ts";
import type { MessageSocket } from "../src/sdp/types.ts";
import { encode, MID } from "../src/sdp/wire.ts";
import { pattern } from "./fixtures/sdp_engine_sim.ts";
import { currentRuntime, exited, firstLine, killChild, otherRuntime, type Runtime, spawnFixture } from "./fixtures/runtime.ts";

const PEER = "test/fixtures/sdp_peer.ts";
const MIB = 1024 * 1024;

async function collect(s: MessageSocket, n: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const m of s) {
    out.push(m.copy());
    m.release();
    if (out.length === n) break;
  }
  return out;
}

/** Echo server under `server`, client under `client`; returns the client's report. */
async function echoBetween(server: Runtime, client: Runtime, sizes: number[]) {
  const srv = spawnFixture(server, PEER, ["echo-server"]);
  try {
    const { port } = await firstLine<{ port: number }>(srv);
    const cli = spawnFixture(client, PEER, ["client", String(port), sizes.join(",")]);
    const report = await firstLine<{ ok: boolean; count: number; bytes: number; runtime: string }>(cli);
    assert.equal(await exited(cli), 0);
    return report;
  } finally {
    await killChild(srv);
  }
}

describe("tcp transport between processes", () => {
  const sizes = [1, 2, 100, 65519, 65520, 65536, 70000, MIB, 16 * MIB, 3, ...Array.from({ length: 200 }, (_, i) => 1 + ((i * 7919) % 20000))];
  const total = sizes.reduce((a, b) => a + b, 0);

  test(`tcp transport: a ${otherRuntime()} client and a ${currentRuntime} server exchange 1 B to 16 MiB messages, many in flight, intact and in order`, async () => {
    const r = await echoBetween(currentRuntime, otherRuntime(), sizes);
    assert.deepEqual(r, { ok: true, count: sizes.length, bytes: total, sent: sizes.length, runtime: otherRuntime() });
  });

  test("tcp transport: a Bun process and a Deno process interoperate in both roles", async () => {
    const r1 = await echoBetween("bun", "deno", [5, 70000, 300]);
    const r2 = await echoBetween("deno", "bun", [5, 70000, 300]);
    assert.equal(r1.count, 3);
    assert.equal(r2.count, 3);
  });

  test("tcp transport: killing the peer mid-transfer rejects every pending send and resolves closed with the cause", async () => {
    const srv = spawnFixture(otherRuntime(), PEER, ["hold-server"]);
    const { port } = await firstLine<{ port: number }>(srv);
    const s = await connect({ transport: "tcp", host: "127.0.0.1", port, recvBufferCount: 8 });
    const got = firstLine<{ got: number }>(srv);
    const sends = Array.from({ length: 200 }, (_, i) => s.send(pattern(i, 50000)));
    const settled = Promise.allSettled(sends);
    await got; // the peer holds its first message: the rest wait on credits
    srv.kill("SIGKILL");
    const results = await settled;
    const rejected = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    // The held peer grants at most its 64 receive buffers (default) of credit: the rest must be pending.
    assert.ok(rejected.length >= 200 - 64, `most sends were still pending: ${rejected.length} rejected`);
    for (const r of rejected) assert.match(r.reason.message, /^send failed: connection lost: /);
    const cause = await s.closed;
    assert.ok(cause instanceof Error);
    await s.close();
    await exited(srv);
  });
});

describe("tcp transport robustness", () => {
  async function server() {
    const logs: string[] = [];
    const l = await listen({ transport: "tcp", host: "127.0.0.1", port: 0, log: (x) => logs.push(x) });
    const accepted: MessageSocket[] = [];
    const waiters: Array<() => void> = [];
    (async () => {
      for await (const s of l) {
        accepted.push(s);
        waiters.splice(0).forEach((w) => w());
      }
    })();
    const nth = async (n: number) => {
      while (accepted.length < n) await new Promise<void>((r) => waiters.push(r));
      return accepted[n - 1];
    };
    return { l, logs, nth };
  }

  function rawClient(port: number): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const c = net.connect({ host: "127.0.0.1", port }, () => resolve(c));
      c.once("error", reject);
    });
  }

  const hello = encode({ bufs: 8, mseq: 0, mseqAck: -1 }, {
    mid: MID.Hello,
    hello: { version: 1, zcopyRead: false, recvBufferSize: 4096, recvBufferCount: 8, maxMessageSize: 1 << 20 },
  });

  const malformed: Array<[string, Uint8Array, RegExp]> = [
    ["an unknown message id", (() => {
      const f = encode({ bufs: 8, mseq: 1, mseqAck: 0 }, { mid: MID.SendSM });
      f[0] = 0x77;
      return f;
    })(), /unknown message id 0x77/],
    ["a frame longer than the receive buffer", (() => {
      const f = new Uint8Array(16);
      new DataView(f.buffer).setUint32(4, 1 << 24);
      f[0] = MID.Data;
      return f;
    })(), /frame of 16777216 bytes exceeds the receive buffer size 65536/],
    ["a frame shorter than its header", Uint8Array.of(0xff, 0, 0, 8, 0, 0, 0, 4), /frame declares 4 bytes, less than the 16-byte header/],
    ["an out-of-sequence frame", encode({ bufs: 8, mseq: 7, mseqAck: 0 }, { mid: MID.SendSM }), /SendSM mseq 7 out of sequence: expected 1/],
  ];
  for (const [what, bytes, re] of malformed) {
    test(`tcp transport: ${what} from a raw client closes only that connection with a ProtocolError`, async () => {
      const { l, nth } = await server();
      const good = await connect({ transport: "tcp", host: "127.0.0.1", port: l.address.port });
      const goodPeer = await nth(1);
      const raw = await rawClient(l.address.port);
      raw.write(hello);
      const badPeer = await nth(2);
      raw.write(bytes);
      const err = await badPeer.closed;
      assert.ok(err instanceof ProtocolError, `closed with ${err}`);
      assert.match(err.message, re);
      // The other connection is untouched.
      const got = collect(goodPeer, 2);
      await good.send(pattern(1, 10));
      await good.send(pattern(2, 100000));
      assert.deepEqual(await got, [pattern(1, 10), pattern(2, 100000)]);
      raw.destroy();
      await good.close();
      await l.close();
    });
  }

  test("tcp transport: frames split into single bytes and frames coalesced into one write are both cut correctly", async () => {
    const { l, nth } = await server();
    const raw = await rawClient(l.address.port);
    const received: Uint8Array[] = [];
    raw.on("data", (d: Uint8Array) => received.push(d));
    // HELLO one byte at a time.
    for (const byte of hello) {
      raw.write(Uint8Array.of(byte));
      await new Promise((r) => setTimeout(r, 1));
    }
    const s = await nth(1);
    const data = (mseq: number, payload: Uint8Array) =>
      encode({ bufs: 8, mseq, mseqAck: 0 }, { mid: MID.Data, more: false, total: undefined, payload });
    const frames = [data(1, pattern(1, 10)), data(2, pattern(2, 3000)), data(3, pattern(3, 1))];
    const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let o = 0;
    for (const f of frames) all.set(f, (o += f.length) - f.length);
    const got = collect(s, 4);
    raw.write(all); // three frames in one write
    const split = data(4, pattern(4, 500));
    raw.write(split.subarray(0, 7)); // a header cut in the middle of its length field
    await new Promise((r) => setTimeout(r, 5));
    raw.write(split.subarray(7, 300));
    await new Promise((r) => setTimeout(r, 5));
    raw.write(split.subarray(300));
    assert.deepEqual(await got, [pattern(1, 10), pattern(2, 3000), pattern(3, 1), pattern(4, 500)]);
    // The server answered HELLO_ACK and acknowledged the data (the TCP return).
    const back = Buffer.concat(received);
    assert.equal(back[0], MID.HelloAck);
    assert.ok(back.length > 32, "acknowledgements followed the HELLO_ACK");
    raw.destroy();
    await l.close();
  });

  test("tcp transport: garbage instead of HELLO drops that connection, logs why, and the listener keeps serving", async () => {
    const { l, logs, nth } = await server();
    const raw = await rawClient(l.address.port);
    const closedRaw = new Promise((r) => raw.once("close", r));
    raw.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await closedRaw;
    const c = await connect({ transport: "tcp", host: "127.0.0.1", port: l.address.port });
    const s = await nth(1);
    const got = collect(s, 1);
    await c.send(pattern(0, 5));
    assert.deepEqual(await got, [pattern(0, 5)]);
    assert.equal(logs.length, 1);
    assert.match(logs[0], /dropped: protocol error: /);
    await c.close();
    await l.close();
  });

  test("tcp transport: the return waits for the peer's acknowledgement, and close() on both ends is orderly", async () => {
    const { l, nth } = await server();
    const c = await connect({ transport: "tcp", host: "127.0.0.1", port: l.address.port });
    const s = await nth(1);
    const got = collect(s, 3);
    await Promise.all([c.send(pattern(0, 1)), c.send(pattern(1, 200000)), c.send(pattern(2, 3))]);
    // Resolved sends were received (the return is the peer's mseq_ack).
    assert.equal(s.stats().messagesReceived, 3);
    assert.equal((await got).length, 3);
    assert.equal(c.stats().bcopySends, 3);
    assert.equal(c.stats().zcopySends, 0);
    await c.close();
    assert.equal(await s.closed, undefined);
    assert.equal(await c.closed, undefined);
    await l.close();
  });

  test("tcp transport: auto picks tcp on a host without an ACTIVE RDMA port and says so", async () => {
    const logs: string[] = [];
    const l = await listen({ transport: "auto", host: "127.0.0.1", port: 0, log: (x) => logs.push(x) });
    const c = await connect({ transport: "auto", host: "127.0.0.1", port: l.address.port, log: (x) => logs.push(x) });
    assert.equal(l.transport, "tcp");
    assert.equal(c.transport, "tcp");
    assert.equal(logs.length, 2);
    for (const line of logs) assert.match(line, /^transport auto: tcp \(/);
    await c.close();
    await l.close();
  });

  test("tcp transport: bad sizes are refused with the option and value named", async () => {
    await assert.rejects(listen({ transport: "tcp", recvBufferCount: 2 }), /'recvBufferCount' must be an integer in 4..65535: got 2/);
    await assert.rejects(listen({ transport: "tcp", recvBufferSize: 10 }), /'recvBufferSize' must be an integer of at least 64: got 10/);
  });

  test("tcp transport: connecting where nobody listens fails with a clear error", async () => {
    const l = await listen({ transport: "tcp", host: "127.0.0.1", port: 0 });
    const port = l.address.port;
    await l.close();
    await assert.rejects(connect({ transport: "tcp", host: "127.0.0.1", port }), /tcp connect to 127\.0\.0\.1:\d+ failed/);
  });
});
