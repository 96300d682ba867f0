/**
 * The rdma link listener accepts concurrently with a cap on connections in
 * handshake (src/sdp/links/rdma.ts): connects beyond `maxHandshakes` are
 * refused at once rather than queued behind a slow handshake, every connect
 * settles, and the listener goes on accepting. Soft-RoCE in the guest; the
 * cap's logic itself is tested on the host (test/accept_concurrent.test.ts).
 *
 * On a host without an active RDMA port the test skips; inside the guest
 * (RDMA_IN_GUEST=1) a missing device fails it.
 */
import assert from "node:assert/strict";
import process from "node:process";
import { test } from "node:test";
import { connect, listen, type MessageSocket } from "../../src/sdp/mod.ts";
import { hasActiveDevice } from "../../src/verbs/mod.ts";

const HOST = process.env.RDMA_TEST_HOST ?? "192.0.2.1";
const IN_GUEST = process.env.RDMA_IN_GUEST === "1";
const ACTIVE = await hasActiveDevice();
const skip = ACTIVE || IN_GUEST ? false : "no active RDMA device (run inside the guest: npm run guest -- …)";
const SMALL = { recvBufferCount: 8, sendSlots: 8, maxMessageSize: 1 << 20 };

test("sdp over rdma: with maxHandshakes 1, simultaneous connects each settle (accepted or refused at once) and the listener goes on", { skip }, async () => {
  assert.ok(ACTIVE, "no ACTIVE RDMA port inside the guest: rxe0 is not up, this test cannot run");
  const server = await listen({ transport: "rdma", host: HOST, port: 0, ...SMALL, maxHandshakes: 1 } as Parameters<typeof listen>[0]);
  const accepted: MessageSocket[] = [];
  const serving = (async () => {
    for await (const s of server) accepted.push(s);
  })();
  const n = 5;
  const results = await Promise.allSettled(
    Array.from({ length: n }, () => connect({ transport: "rdma", host: HOST, port: server.address.port, ...SMALL })),
  );
  const ok = results.filter((r) => r.status === "fulfilled").map((r) => (r as PromiseFulfilledResult<MessageSocket>).value);
  const refused = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
  console.log(`${ok.length} of ${n} simultaneous connects accepted, ${refused.length} refused`);
  assert.ok(ok.length >= 1, "at least one connect was accepted");
  // Five requests arrive within one accept's time (measured in the guest: 4 of 5 refused in both runtimes).
  assert.ok(refused.length >= 1, "connects beyond the cap were refused, not queued");
  for (const r of refused) assert.match(String(r.reason), /rejected the connection|REJECTED/);
  // The listener still accepts, one at a time.
  const late = await connect({ transport: "rdma", host: HOST, port: server.address.port, ...SMALL });
  await late.send(new Uint8Array([1, 2, 3]));
  for (const s of [...ok, late]) await s.close();
  await server.close();
  await serving;
  for (const s of accepted) await s.close();
  assert.equal(accepted.length, ok.length + 1, "every accepted connect became a socket");
});
