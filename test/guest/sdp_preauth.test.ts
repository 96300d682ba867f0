/**
 * Bounded before trust over rdma (src/sdp/links/rdma.ts): a connection opened
 * with `preAuth` registers 8 receive buffers and 8 send slots (1 MiB with the
 * default 64 KiB buffers) and no zcopy arenas, instead of about 40 MiB;
 * `trust()` registers the rest, and zcopy works from then on. Registered
 * bytes are read from the verbs layer (`registeredBytes()`, every region this
 * process has registered) and from each socket's `stats().memoryBytes`.
 *
 * On a host without an active RDMA port the test skips; inside the guest
 * (RDMA_IN_GUEST=1) a missing device fails it.
 */
import assert from "node:assert/strict";
import process from "node:process";
import { test } from "node:test";
import { connect, listen, type SdpSocket } from "../../src/sdp/mod.ts";
import type { ReceivedMessage } from "../../src/sdp/types.ts";
import { hasActiveDevice, registeredBytes } from "../../src/verbs/mod.ts";

const HOST = process.env.RDMA_TEST_HOST ?? "192.0.2.1";
const IN_GUEST = process.env.RDMA_IN_GUEST === "1";
const ACTIVE = await hasActiveDevice();
const skip = ACTIVE || IN_GUEST ? false : "no active RDMA device (run inside the guest: npm run guest -- …)";
const KIB = 1024;
const MIB = 1024 * KIB;
/** 8 receive buffers + 8 send slots of 64 KiB. */
const SMALL = 16 * 64 * KIB;
/** 64 + 64 of 64 KiB, and the 16 MiB source and sink arenas. */
const FULL = 128 * 64 * KIB + 2 * 16 * MIB;

test("sdp over rdma: 1 MiB registered per connection before trust(), 40 MiB after; zcopy only after", { skip }, async () => {
  assert.ok(ACTIVE, "no ACTIVE RDMA port inside the guest: rxe0 is not up, this test cannot run");
  const base = registeredBytes();
  const server = await listen({ transport: "rdma", host: HOST, port: 0, preAuth: true });
  const accepted = server[Symbol.asyncIterator]().next();
  const client = await connect({ transport: "rdma", host: HOST, port: server.address.port, preAuth: true });
  const peer = (await accepted).value as SdpSocket;
  try {
    const before = registeredBytes() - base;
    console.log(`registered before trust: ${before} bytes for two connections (client and server side)`);
    assert.equal(client.stats().memoryBytes, SMALL);
    assert.equal(peer.stats().memoryBytes, SMALL);
    assert.equal(before, 2 * SMALL, "the verbs layer agrees: nothing else is registered");
    assert.equal(client.peer!.zcopyRead, false);
    assert.equal(client.peer!.maxMessageSize, 64 * KIB);

    const big = new Uint8Array(MIB).map((_, i) => (i * 7) & 0xff);
    await assert.rejects(client.send(big), /exceeds maxMessageSize 65536 \(the limit before trust\(\)/);
    const inbox = peer[Symbol.asyncIterator]();
    await client.send(big.subarray(0, 64 * KIB)); // at the limit: two fragments, bcopy
    const m0 = (await inbox.next()).value as ReceivedMessage;
    assert.equal(m0.bytes.length, 64 * KIB);
    m0.release();

    peer.trust();
    assert.equal(peer.stats().memoryBytes, FULL);
    assert.equal(registeredBytes() - base, SMALL + FULL);
    client.trust();
    assert.equal(client.stats().memoryBytes, FULL);
    const after = registeredBytes() - base;
    console.log(`registered after trust: ${after} bytes for the two`);
    assert.equal(after, 2 * FULL);

    await client.send(big); // by zcopy now: the peer's GROW said it can READ
    const m1 = (await inbox.next()).value as ReceivedMessage;
    assert.deepEqual(m1.copy(), big);
    m1.release();
    assert.equal(client.stats().zcopySends, 1);
    assert.equal(client.stats().bcopySends, 1);
  } finally {
    await client.close();
    await peer.close();
    await server.close();
  }
  assert.equal(registeredBytes(), base, "everything deregistered after close");
});
