import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { authenticateWithKeys, type SessionKeys } from "../src/cluster/auth.ts";
import { mac16, SEAL_OVERHEAD, sealCounters, SealedSocket, SealError } from "../src/cluster/sealed_socket.ts";
import { RmiEndpoint } from "../src/rmi/endpoint.ts";
import { RmiFrameError } from "../src/rmi/frame.ts";
import { loopbackPair } from "../src/sdp/links/loopback.ts";
import type { MessageSocket, ReceivedMessage } from "../src/sdp/types.ts";

const SECRET = "sealed-socket-test-secret-0123456789";

function keys(): { d: SessionKeys; a: SessionKeys } {
  const d2a = new Uint8Array(randomBytes(32));
  const a2d = new Uint8Array(randomBytes(32));
  return { d: { send: d2a, receive: a2d }, a: { send: a2d, receive: d2a } };
}

/** A socket that records what is sent on it (the wire, as an attacker on it sees it). */
function tap(): { socket: MessageSocket; frames: Uint8Array[] } {
  const frames: Uint8Array[] = [];
  const socket = {
    transport: "tcp",
    remoteAddress: "tap",
    closed: new Promise<Error | undefined>(() => {}),
    send: (bytes: Uint8Array) => {
      frames.push(bytes.slice());
      return Promise.resolve();
    },
    close: () => Promise.resolve(),
    stats: () => ({}),
    [Symbol.asyncDispose]: () => Promise.resolve(),
    [Symbol.asyncIterator]: () => ({ next: () => new Promise<IteratorResult<ReceivedMessage>>(() => {}) }),
  } as unknown as MessageSocket;
  return { socket, frames };
}

/** Frames a well-behaved sender with `k` would put on the wire for `payloads`. */
async function sealedFrames(k: SessionKeys, payloads: string[]): Promise<Uint8Array[]> {
  const t = tap();
  const s = new SealedSocket(t.socket, t.socket[Symbol.asyncIterator](), k);
  for (const p of payloads) await s.send(new TextEncoder().encode(p));
  return t.frames;
}

/** A receiver with `k` behind a raw loopback socket the test writes frames into; returns what it read, or the error. */
async function receive(k: SessionKeys, frames: Uint8Array[]) {
  const [raw, peer] = await loopbackPair();
  const lines: string[] = [];
  const sealed = new SealedSocket(peer, peer[Symbol.asyncIterator](), k, { name: "b", logger: { warn: (l) => void lines.push(l) } });
  for (const f of frames) await raw.send(f);
  const got: string[] = [];
  let error: unknown;
  try {
    for await (const m of sealed) {
      got.push(new TextDecoder().decode(m.bytes));
      m.release();
      if (got.length === frames.length) break;
    }
  } catch (e) {
    error = e;
  }
  const closed = error === undefined ? "open" : await Promise.race([sealed.closed.then((c) => c ?? "closed"), new Promise((r) => setTimeout(() => r("open"), 2000))]);
  await raw.close();
  await peer.close();
  return { got, error, closed, lines, stats: sealed.sealStats() };
}

test("sealed: the JavaScript and native MACs equal HMAC-SHA256 truncated to 16 bytes, at every length around block edges", () => {
  for (let trial = 0; trial < 4; trial++) {
    const key = new Uint8Array(randomBytes(32));
    const engines = [mac16(key, "js"), mac16(key, "native"), mac16(key)];
    for (const len of [1, 2, 31, 47, 55, 56, 57, 63, 64, 65, 119, 120, 128, 200, 1023, 1024, 1025, 4096, 4120, 70_000]) {
      const data = new Uint8Array(randomBytes(len + 5));
      const want = createHmac("sha256", key).update(data.subarray(0, len)).digest().subarray(0, 16);
      for (const [i, mac] of engines.entries()) {
        const out = new Uint8Array(20);
        mac(data, len, out, 2);
        assert.deepEqual([...out.subarray(2, 18)], [...want], `engine ${i} length ${len}`);
      }
    }
  }
});

test("sealed: a handshake gives both sides the same keys, one per direction, new for every connection", async () => {
  const run = async () => {
    const [d, a] = await loopbackPair();
    const opts = { secret: SECRET, allowed: () => true, timeoutMs: 2000 };
    const [dr, ar] = await Promise.all([
      authenticateWithKeys(d, d[Symbol.asyncIterator](), { ...opts, role: "dialer", self: "a" }),
      authenticateWithKeys(a, a[Symbol.asyncIterator](), { ...opts, role: "acceptor", self: "b" }),
    ]);
    await d.close();
    await a.close();
    return { dr, ar };
  };
  const one = await run();
  const two = await run();
  assert.deepEqual([one.dr.peer, one.ar.peer], ["b", "a"]);
  assert.deepEqual(one.dr.keys.send, one.ar.keys.receive);
  assert.deepEqual(one.dr.keys.receive, one.ar.keys.send);
  assert.notDeepEqual(one.dr.keys.send, one.dr.keys.receive);
  assert.notDeepEqual(one.dr.keys.send, two.dr.keys.send);
  assert.equal(one.dr.keys.send.byteLength, 32);
});

test("sealed: messages go through in order, by send and by reserve, 24 bytes longer on the wire", async () => {
  const k = keys();
  const [x, y] = await loopbackPair();
  const sx = new SealedSocket(x, x[Symbol.asyncIterator](), k.d);
  const sy = new SealedSocket(y, y[Symbol.asyncIterator](), k.a);
  const before = y.stats().bytesReceived;
  await sx.send(new TextEncoder().encode("one"));
  const r = await sx.reserve(16);
  r.bytes.set(new TextEncoder().encode("two"));
  await r.commit(3);
  await sx.send(new Uint8Array(5000).fill(7));
  const got: Uint8Array[] = [];
  for await (const m of sy) {
    got.push(m.copy());
    m.release();
    if (got.length === 3) break;
  }
  assert.deepEqual(got.slice(0, 2).map((b) => new TextDecoder().decode(b)), ["one", "two"]);
  assert.deepEqual(got[2], new Uint8Array(5000).fill(7));
  assert.equal(y.stats().bytesReceived - before, 3 + 3 + 5000 + 3 * SEAL_OVERHEAD);
  assert.deepEqual([sx.sealStats().framesSealed, sy.sealStats().framesOpened], [3, 3]);
  await assert.rejects(sx.send(new Uint8Array(0)), /at least 1 byte/);
  const small = new SealedSocket(x, x[Symbol.asyncIterator](), k.d, { maxMessageSize: 100 });
  await assert.rejects(small.send(new Uint8Array(77)), /77 bytes exceeds the sealed maxMessageSize 76/);
  await sx.close();
  await sy.close();
});

test("sealed: good frames pass (the control for the tampering tests below)", async () => {
  const k = keys();
  const r = await receive(k.a, await sealedFrames(k.d, ["f0", "f1", "f2"]));
  assert.deepEqual(r.got, ["f0", "f1", "f2"]);
  assert.equal(r.error, undefined);
});

test("sealed: a flipped bit anywhere in a frame (seq, payload, MAC) closes the connection before the frame is seen", async () => {
  const k = keys();
  const frames = await sealedFrames(k.d, ["hello, replica"]);
  const totalBefore = sealCounters().rejectedMac;
  for (let at = 0; at < frames[0].byteLength; at += 3) {
    const bad = frames[0].slice();
    bad[at] ^= 1 << (at % 8);
    const r = await receive(k.a, [bad]);
    assert.deepEqual(r.got, [], `byte ${at}`);
    assert.ok(r.error instanceof SealError && r.error.reason === "mac", `byte ${at}: ${r.error}`);
    assert.ok(r.error instanceof RmiFrameError);
    assert.match(r.error.message, /sealed frame 0 \(38 bytes\) failed its MAC: altered, truncated, or not sent by the authenticated peer \(from 'b'/);
    assert.ok(r.closed instanceof SealError, "closed resolves with the reason");
    assert.equal(r.stats.rejectedMac, 1);
    assert.equal(r.lines.length, 1);
  }
  assert.ok(sealCounters().rejectedMac > totalBefore);
});

test("sealed: a replayed frame, a dropped frame and a reordered pair are refused by sequence number", async () => {
  const k = keys();
  const [f0, f1, f2] = await sealedFrames(k.d, ["f0", "f1", "f2"]);
  const replay = await receive(k.a, [f0, f1, f1, f2]);
  assert.deepEqual(replay.got, ["f0", "f1"]);
  assert.ok(replay.error instanceof SealError && replay.error.reason === "sequence");
  assert.match(replay.error.message, /sequence number 1 where 2 was expected: replayed or reordered/);

  const dropped = await receive(k.a, [f0, f2]);
  assert.deepEqual(dropped.got, ["f0"]);
  assert.match(String(dropped.error), /sequence number 2 where 1 was expected: frames before it dropped/);
  assert.equal(dropped.stats.rejectedSequence, 1);

  const reordered = await receive(k.a, [f1, f0]);
  assert.deepEqual(reordered.got, []);
  assert.match(String(reordered.error), /sequence number 1 where 0 was expected/);
});

test("sealed: truncated frames, unsealed frames, reflected frames and frames from another connection are refused", async () => {
  const k = keys();
  const [f0] = await sealedFrames(k.d, ["a longer payload"]);
  const short = await receive(k.a, [f0.subarray(0, 20)]);
  assert.ok(short.error instanceof SealError && short.error.reason === "truncated");
  assert.match(short.error.message, /is 20 bytes, shorter than a 24-byte seal and 1 byte of payload/);

  const cut = await receive(k.a, [f0.subarray(0, f0.byteLength - 1)]);
  assert.ok(cut.error instanceof SealError && cut.error.reason === "mac");

  const unsealed = await receive(k.a, [new Uint8Array([1, 2, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2, 112, 105, 110, 103, 123, 125, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]);
  assert.ok(unsealed.error instanceof SealError && unsealed.error.reason === "mac");

  // The dialer's own frame bounced back to it: the other direction's key.
  const reflected = await receive(k.d, [f0]);
  assert.ok(reflected.error instanceof SealError && reflected.error.reason === "mac");

  const other = keys();
  const foreign = await receive(other.a, [f0]);
  assert.ok(foreign.error instanceof SealError && foreign.error.reason === "mac");
});

test("sealed: under an RMI endpoint a tampered frame is a malformed frame: logged, counted, that connection closed, the method never run", async () => {
  const k = keys();
  const [raw, peer] = await loopbackPair();
  const sealed = new SealedSocket(peer, peer[Symbol.asyncIterator](), k.a, { name: "a" });
  const lines: string[] = [];
  let ran = 0;
  const endpoint = new RmiEndpoint(sealed, {
    methods: { replicate: () => void ran++ },
    logger: { warn: (l: string) => void lines.push(l) },
    name: "a",
  });
  // A well-behaved caller's frames, captured, then one altered.
  const t = tap();
  const caller = new RmiEndpoint(new SealedSocket(t.socket, t.socket[Symbol.asyncIterator](), k.d));
  await caller.call("replicate", { v: 1 }, { ack: "transport" });
  await caller.call("replicate", { v: 2 }, { ack: "transport" });
  await raw.send(t.frames[0]);
  const bad = t.frames[1].slice();
  bad[20] ^= 0x20;
  await raw.send(bad);
  const cause = await endpoint.closed;
  assert.equal(ran, 1, "the good frame ran, the altered one did not");
  assert.ok(cause instanceof SealError);
  assert.equal(endpoint.stats().malformedFrames, 1);
  assert.ok(lines.some((l) => /rmi a: closing connection: sealed frame 1 .* failed its MAC/.test(l)), lines.join("\n"));
  await raw.close();
});
