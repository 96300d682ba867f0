/**
 * Bounded before trust (src/sdp/socket.ts, engine.ts, links/*): a socket
 * opened with `preAuth` starts with a small footprint (8 receive buffers and
 * 8 send slots, no zcopy arenas, 64 KiB messages) until `trust()`, which
 * allocates the rest and tells the peer (GROW). Over tcp and loopback, and a
 * cluster over tcp whose listener and dialer use it (src/cluster/transport.ts,
 * node.ts calls trust() after the challenge-response).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { setImmediate } from "node:timers";
import { connect, listen, ProtocolError, type SdpSocket } from "../src/sdp/mod.ts";
import type { MessageListener, MessageSocket, ReceivedMessage } from "../src/sdp/types.ts";
import { encode, HEADER_SIZE, MID } from "../src/sdp/wire.ts";
import { Engine, type EngineOptions } from "../src/sdp/engine.ts";
import { startSessionCluster } from "../src/cluster/start.ts";

const KIB = 1024;
const MIB = 1024 * KIB;
/** A receive buffer or send slot of the tcp and loopback links: 64 KiB of payload and a header. */
const FRAME = 64 * KIB + HEADER_SIZE;
const SMALL_BYTES = (8 + 8) * FRAME;
const FULL_RING_BYTES = (64 + 64) * FRAME;

let nextName = 0;

async function pair(transport: "tcp" | "loopback", preAuth: { server: boolean; client: boolean }) {
  const host = transport === "tcp" ? "127.0.0.1" : `preauth-${nextName++}`;
  const server: MessageListener = await listen({ transport, host, port: 0, preAuth: preAuth.server });
  const accepted = server[Symbol.asyncIterator]().next();
  const client = await connect({ transport, host, port: server.address.port, preAuth: preAuth.client });
  const s = (await accepted).value as SdpSocket;
  return {
    client,
    server: s,
    async close() {
      await Promise.all([client.close(), s.close()]);
      await server.close();
    },
  };
}

/** Waits (event loop turns, then short sleeps) until `cond()`; fails with `what` after `ms`. */
async function until(cond: () => boolean, what: string, ms = 20000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

for (const transport of ["tcp", "loopback"] as const) {
  describe(`sdp before trust over ${transport}`, () => {
    test("the footprint is small before trust() and full after it; without preAuth it is full at once", async () => {
      const p = await pair(transport, { server: true, client: true });
      try {
        for (const s of [p.client, p.server]) {
          const st = s.stats();
          assert.equal(st.preAuth, true);
          assert.equal(st.memoryBytes, SMALL_BYTES, "8 receive buffers + 8 send slots, no arenas");
          assert.equal(s.peer!.preAuth, true);
          assert.equal(s.peer!.recvBufferCount, 8);
          assert.equal(s.peer!.maxMessageSize, 64 * KIB);
          assert.equal(s.peer!.zcopyRead, false);
        }
        p.server.trust();
        const full = FULL_RING_BYTES + (transport === "loopback" ? 2 * 16 * MIB : 0);
        assert.equal(p.server.stats().memoryBytes, full);
        assert.equal(p.server.stats().preAuth, false);
        // The client learns the server's new limits from its GROW.
        await until(() => p.client.peer!.preAuth !== true, "the server's GROW at the client");
        assert.equal(p.client.peer!.recvBufferCount, 64);
        assert.equal(p.client.peer!.maxMessageSize, 16 * MIB);
        assert.equal(p.client.peer!.zcopyRead, transport === "loopback");
        assert.equal(p.client.stats().memoryBytes, SMALL_BYTES, "one side's trust() does not grow the other");
        p.server.trust(); // a second call is a no-op
        assert.equal(p.server.stats().memoryBytes, full);
      } finally {
        await p.close();
      }
      const plain = await pair(transport, { server: false, client: false });
      try {
        const full = FULL_RING_BYTES + (transport === "loopback" ? 2 * 16 * MIB : 0);
        assert.equal(plain.client.stats().memoryBytes, full);
        assert.equal(plain.client.stats().preAuth, false);
        assert.equal(plain.client.peer!.preAuth, undefined);
        plain.client.trust(); // no limits to lift
        assert.equal(plain.client.stats().memoryBytes, full);
      } finally {
        await plain.close();
      }
    });

    test("above 64 KiB: refused before trust(), held for a peer not yet trusting, carried after", async () => {
      const p = await pair(transport, { server: true, client: true });
      try {
        const big = bytes(MIB);
        // Our own limit before trust: refused at once, with the reason.
        await assert.rejects(p.client.send(big), /message of 1048576 bytes exceeds maxMessageSize 65536 \(the limit before trust\(\)/);
        await assert.rejects(p.client.send(bytes(64 * KIB + 1)), /exceeds maxMessageSize 65536/);
        await p.client.send(bytes(64 * KIB)); // at the limit: carried (two fragments on neither link: one frame)
        const inbox = p.server[Symbol.asyncIterator]();
        const first = (await inbox.next()).value as ReceivedMessage;
        assert.equal(first.bytes.length, 64 * KIB);
        first.release();

        // The client trusts; the server does not yet: a large message waits for the server's GROW.
        p.client.trust();
        let settled = false;
        const sent = p.client.send(big).then(() => (settled = true));
        const back = p.client[Symbol.asyncIterator]();
        await p.server.send(bytes(10)); // a round trip: the client has had every chance to send
        ((await back.next()).value as ReceivedMessage).release();
        await turns(20);
        assert.equal(settled, false, "sent before the peer allowed it");
        assert.equal(p.server.stats().messagesReceived, 1);

        p.server.trust();
        await sent;
        const got = (await inbox.next()).value as ReceivedMessage;
        assert.deepEqual(got.copy(), big);
        got.release();
        if (transport === "loopback") assert.equal(p.client.stats().zcopySends, 1, "zcopy once both sides trust");
        await p.server.send(big); // and the other way
        const got2 = (await back.next()).value as ReceivedMessage;
        assert.equal(got2.bytes.length, MIB);
        got2.release();
      } finally {
        await p.close();
      }
    });

    test("credits grow after trust(): more sends in flight while the receiver holds every message", async () => {
      const p = await pair(transport, { server: true, client: true });
      try {
        p.client.trust();
        const n = 40;
        let resolved = 0;
        const sends = Array.from({ length: n }, (_, i) => p.client.send(bytes(100, i)).then(() => resolved++));
        // The server reads nothing: each message keeps its receive buffer, so the client's
        // credit is the 8 buffers of the server's HELLO, less the 2 held back.
        await until(() => p.client.stats().creditStalls >= 1 && p.client.credits < 3, "the client out of credits");
        await turns(50);
        assert.ok(resolved <= 6, `${resolved} sends went out with 8 buffers posted at the peer`);
        assert.ok(p.server.stats().messagesReceived <= 6);
        assert.equal(p.client.peer!.recvBufferCount, 8);

        p.server.trust(); // 56 more buffers, advertised by GROW
        await Promise.all(sends);
        assert.equal(resolved, n);
        assert.equal(p.server.stats().messagesReceived, n, "all held at once, none read");
        assert.equal(p.client.peer!.recvBufferCount, 64);
        let i = 0;
        for await (const m of p.server) {
          assert.deepEqual(m.copy(), bytes(100, i));
          m.release();
          if (++i === n) break;
        }
      } finally {
        await p.close();
      }
    });
  });
}

// ------------------------------------------------------------ a peer that ignores the limits

/** A raw tcp peer: sends HELLO, then `frame`; returns the server socket's close reason. */
async function misbehave(frame: (mseqAck: number) => Uint8Array): Promise<Error | undefined> {
  const server = await listen({ transport: "tcp", host: "127.0.0.1", port: 0, preAuth: true });
  try {
    const accepted = server[Symbol.asyncIterator]().next();
    const raw = net.connect({ host: "127.0.0.1", port: server.address.port });
    await new Promise<void>((r) => raw.once("connect", () => r()));
    raw.on("error", () => {});
    raw.write(encode({ bufs: 8, mseq: 0, mseqAck: 0xffffffff }, {
      mid: MID.Hello,
      hello: { version: 1, zcopyRead: true, recvBufferSize: FRAME, recvBufferCount: 8, maxMessageSize: 16 * MIB },
    }));
    const s = (await accepted).value as MessageSocket;
    raw.write(frame(0));
    const reason = await s.closed;
    raw.destroy();
    return reason;
  } finally {
    await server.close();
  }
}

test("before trust, a fragmented message above 64 KiB from a peer is a protocol error (no 16 MiB reassembly)", async () => {
  const reason = await misbehave((ack) =>
    encode({ bufs: 8, mseq: 1, mseqAck: ack }, { mid: MID.Data, more: true, total: 16 * MIB, payload: bytes(1000) })
  );
  assert.ok(reason instanceof ProtocolError, String(reason));
  assert.match(reason.message, /DATA HEAD total 16777216 exceeds maxMessageSize 65536 \(this side's limit before trust\)/);
});

test("before trust, a SrcAvail (we would READ into a sink) is a protocol error: no zcopy before trust", async () => {
  const reason = await misbehave((ack) => encode({ bufs: 8, mseq: 1, mseqAck: ack }, { mid: MID.SrcAvail, len: MIB, rkey: 7, vaddr: 0x1000n }));
  assert.ok(reason instanceof ProtocolError, String(reason));
  assert.match(reason.message, /SrcAvail received but this side announced no zcopy \(none before trust\)/);
});

// ------------------------------------------------------------ the engine's side of GROW

function engineOptions(role: "active" | "passive", preAuth: boolean, maxMessageSize = 4096): EngineOptions {
  return {
    role,
    recvBufferSize: 1024,
    recvBufferCount: 8,
    sendSlots: 8,
    sendSlotSize: 1024,
    maxMessageSize,
    sendCompletionMeansDelivered: true,
    zcopyThreshold: 1 << 20,
    cancelTimeoutMs: 1000,
    handshakeTimeoutMs: 1000,
    closeTimeoutMs: 1000,
    preAuth,
  };
}

/** Delivers every frame `from` posts to `to` (its buffers by index order), and the send completions. */
function shuttle(from: Engine, to: Engine, frames: { bufs: number; mid: number }[] = []): void {
  let next = 0;
  for (const a of from.takeActions()) {
    if (a.type !== "post") continue;
    const view = encode(a.frame, a.frame.body);
    frames.push({ bufs: a.frame.bufs, mid: a.frame.body.mid });
    to.frame(view, next++ % 8, 0);
    from.sendDone(a.slot, 0);
  }
}

test("engine: grow() sends GROW with the new count and limits, and the peer's credit grows; a GROW not announced is refused", () => {
  const a = new Engine(engineOptions("active", false, 1 << 20));
  const b = new Engine(engineOptions("passive", true));
  a.start(0);
  b.start(0);
  shuttle(a, b);
  shuttle(b, a);
  assert.equal(a.state, "open");
  assert.equal(a.peer!.preAuth, true);
  assert.throws(() => a.grow({ recvBufferCount: 64, sendSlots: 64, maxMessageSize: 1 << 20 }), /opened without preAuth/);
  assert.throws(() => b.grow({ recvBufferCount: 4, sendSlots: 64, maxMessageSize: 1 << 20 }), /'recvBufferCount' 4 is below the current 8/);
  // Above the peer's limit before trust, a's message waits for the GROW.
  a.takeActions(); // the handshake's
  a.send(1, bytes(5000), undefined, false, 0);
  assert.equal(a.takeActions().length, 0, "held for the peer's GROW");
  const creditsBefore = a.credits;
  b.grow({ recvBufferCount: 64, sendSlots: 64, maxMessageSize: 1 << 20 }, 0);
  const frames: { bufs: number; mid: number }[] = [];
  shuttle(b, a, frames);
  assert.equal(frames.length, 1);
  assert.equal(frames[0].mid, MID.Grow);
  assert.ok(frames[0].bufs > 8 && frames[0].bufs <= 64, `GROW bufs ${frames[0].bufs}`);
  assert.equal(a.peer!.recvBufferCount, 64);
  assert.equal(a.peer!.maxMessageSize, 1 << 20);
  assert.equal(a.peer!.preAuth, undefined);
  assert.ok(a.credits > creditsBefore + 50, `credits ${creditsBefore} before GROW, ${a.credits} after`);
  // The held message goes now (5000 bytes in fragments of 1024-byte frames).
  const posts = a.takeActions().filter((x) => x.type === "post");
  assert.equal(posts.length, 5, `the held message's fragments: ${posts.length} frames`);

  // A side whose HELLO announced no limits before trust may not send GROW.
  const c = new Engine(engineOptions("active", true));
  const d = new Engine(engineOptions("passive", false));
  c.start(0);
  d.start(0);
  shuttle(c, d);
  shuttle(d, c);
  const grow = encode({ bufs: 8, mseq: 1, mseqAck: 0 }, {
    mid: MID.Grow,
    hello: { version: 1, zcopyRead: false, recvBufferSize: 1024, recvBufferCount: 64, maxMessageSize: 1 << 20 },
  });
  c.frame(grow, 1, 0);
  const closed = c.takeActions().find((x) => x.type === "close");
  assert.ok(closed && closed.type === "close");
  assert.match(String(closed.error), /GROW received but the peer's HELLO announced no limits before trust/);
});

// ------------------------------------------------------------ a cluster over tcp with preAuth

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test("a cluster whose sockets start before trust replicates, also a session above the 64 KiB limit", async () => {
  const peers = [
    { id: "a", host: "127.0.0.1", port: await freePort(), transport: "tcp" as const },
    { id: "b", host: "127.0.0.1", port: await freePort(), transport: "tcp" as const },
  ];
  const quiet = { info() {}, warn() {}, error() {} };
  const secret = "preauth-test-secret-0123456789abcdef";
  const common = { peers, secret, logger: quiet, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 3000 };
  const a = await startSessionCluster({ self: "a", ...common });
  const b = await startSessionCluster({ self: "b", ...common });
  try {
    await a.waitForPeers();
    await b.waitForPeers();
    const s = a.create();
    assert.equal(s.secondary, "b");
    assert.equal(await a.commit(s.id, { user: "ada" }, [], { ack: "applied" }), "applied");
    const blob = "x".repeat(200 * KIB);
    assert.equal(await a.commit(s.id, { blob }, [], { ack: "applied" }), "applied");
    const replica = b.store.get(s.id)!;
    assert.equal(replica.attributes.user, "ada");
    assert.equal((replica.attributes.blob as string).length, 200 * KIB);
  } finally {
    await a.close();
    await b.close();
  }
});
