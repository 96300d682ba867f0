/**
 * The SDP-like socket on real RDMA (Soft-RoCE in the test guest). The echo
 * peer runs in a child process under the *other* runtime: every test here is
 * also a Bun ↔ Deno test. On a host without an active RDMA port they skip; inside the
 * guest (RDMA_IN_GUEST=1) a missing device fails instead (test/fixtures/guest_device.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, listen, type MessageSocket } from "../../src/sdp/mod.ts";
import { registeredBytes } from "../../src/verbs/mod.ts";
import { rdmaSkip } from "../fixtures/guest_device.ts";
import { exited, firstLine, otherRuntime, spawnFixture } from "../fixtures/runtime.ts";

const HOST = process.env.RDMA_TEST_HOST ?? "192.0.2.1";
const skip = await rdmaSkip(test); // fails instead inside the guest (RDMA_IN_GUEST=1)
const MiB = 1024 * 1024;

/** Message i of n bytes: a pattern that shows loss, duplication, reordering and corruption. */
function message(i: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let k = 0; k < Math.min(n, 4096); k++) b[k] = (i * 31 + k * 7) & 255;
  for (let k = 4096; k < n; k *= 2) b.copyWithin(k, 0, Math.min(k, n - k));
  return b;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return false;
  return true;
}

async function echoPeer(maxMessageSize = 16 * MiB) {
  const child = spawnFixture(otherRuntime(), "test/fixtures/sdp_rdma_peer.ts", [HOST, String(maxMessageSize)]);
  const { port, runtime } = await firstLine<{ port: number; runtime: string }>(child);
  return { child, port, runtime };
}

/** Sends every message at once and checks the echoes in order. */
async function roundTrip(s: MessageSocket, msgs: Uint8Array[]): Promise<void> {
  const echoes = (async () => {
    let i = 0;
    for await (const m of s) {
      if (!sameBytes(m.bytes, msgs[i])) assert.fail(`echo ${i} (${msgs[i].length} B) differs: got ${m.bytes.length} B`);
      m.release();
      if (++i === msgs.length) return i;
    }
    return i;
  })();
  await Promise.all(msgs.map((m) => s.send(m)));
  assert.equal(await echoes, msgs.length);
}

test("sdp over rdma carries 1 B to 16 MiB across the zcopy threshold, in order, between Bun and Deno", { skip }, async () => {
  const peer = await echoPeer();
  const s = await connect({ transport: "rdma", host: HOST, port: peer.port });
  assert.equal(s.transport, "rdma");
  const sizes = [1, 2, 63, 64, 1000, 4095, 4096, 65535, 65536, 65537, 262_143, 262_144, MiB - 1, MiB, 4 * MiB + 3, 16 * MiB];
  await roundTrip(s, sizes.map((n, i) => message(i, n)));
  const st = s.stats();
  // The default threshold (256 KiB) splits these 11 by bcopy, 5 by zcopy.
  assert.equal(st.bcopySends, 11, `bcopy ${st.bcopySends}`);
  assert.equal(st.zcopySends, 5, `zcopy ${st.zcopySends}`);
  assert.equal(st.messagesReceived, sizes.length);
  await s.close();
  peer.child.kill("SIGTERM");
  await exited(peer.child);
});

test("sdp over rdma keeps many messages in flight in both directions at once", { skip }, async () => {
  const peer = await echoPeer(MiB);
  const s = await connect({ transport: "rdma", host: HOST, port: peer.port, maxMessageSize: MiB, zcopyThreshold: 16 * 1024 });
  // 200 messages mixing bcopy and zcopy; the echoes flow back while we still send.
  const msgs = Array.from({ length: 200 }, (_, i) => message(i, i % 5 === 0 ? 64 * 1024 + i : 1 + ((i * 97) % 3000)));
  await roundTrip(s, msgs);
  const st = s.stats();
  assert.equal(st.messagesSent, 200);
  assert.ok(st.zcopySends === 40, `zcopy ${st.zcopySends}`);
  await s.close();
  peer.child.kill("SIGTERM");
  await exited(peer.child);
});

test("sdp over rdma: a peer killed mid-transfer rejects every pending send and frees registered memory", { skip }, async () => {
  const before = registeredBytes();
  const peer = await echoPeer(4 * MiB);
  const s = await connect({ transport: "rdma", host: HOST, port: peer.port, maxMessageSize: 4 * MiB });
  assert.ok(registeredBytes() > before, "the socket registered its regions");
  // Nobody reads the echoes: the peer stalls on credits while we keep sending.
  const sends = Array.from({ length: 40 }, (_, i) => s.send(message(i, i % 2 ? 4 * MiB : 3000)));
  await sends[0];
  peer.child.kill("SIGKILL");
  const settled = await Promise.allSettled(sends);
  const rejected = settled.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
  assert.ok(rejected.length > 0, "some sends were still pending when the peer died");
  for (const r of rejected) assert.ok(r.reason instanceof Error && r.reason.message.length > 0);
  const cause = await s.closed;
  assert.ok(cause instanceof Error, "the socket closed with a cause");
  assert.equal(registeredBytes(), before, "all registered memory freed");
  await exited(peer.child);
});

test("sdp over rdma: a receiver that holds its sink makes the sender cancel (SrcAvailCancel → SendSM) and fall back to bcopy", { skip }, async () => {
  const size = 256 * 1024;
  const opts = { transport: "rdma" as const, maxMessageSize: size, zcopyThreshold: 16 * 1024, cancelTimeoutMs: 1500 };
  const server = await listen({ ...opts, host: HOST, port: 0 });
  const accepted = (async () => {
    for await (const s of server) return s;
  })();
  const a = await connect({ ...opts, host: HOST, port: server.address.port });
  const b = (await accepted)!;
  const first = message(1, size), second = message(2, size);
  const it = b[Symbol.asyncIterator]();
  const sent1 = a.send(first);
  const m1 = (await it.next()).value!; // held: the whole sink stays in use
  await sent1;
  const sent2 = a.send(second); // zcopy: the receiver cannot READ it while m1 is held
  const m2 = (await it.next()).value!;
  await sent2;
  assert.ok(sameBytes(m1.bytes, first), "first message intact");
  assert.ok(sameBytes(m2.bytes, second), "second message intact after the fallback");
  m1.release();
  m2.release();
  const st = a.stats() as ReturnType<MessageSocket["stats"]> & { zcopyFallbacks?: number };
  assert.ok(st.cancels >= 1, `cancels ${st.cancels}`);
  assert.ok((st.zcopyFallbacks ?? 0) >= 1, `fallbacks ${st.zcopyFallbacks}`);
  await a.close();
  await b.close();
  await server.close();
});
