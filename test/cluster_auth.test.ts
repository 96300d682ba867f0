import { test } from "node:test";
import assert from "node:assert/strict";
import { authenticate, AuthError, secretBytes } from "../src/cluster/auth.ts";
import { loopbackPair } from "../src/sdp/links/loopback.ts";

const SECRET = "cluster-auth-test-secret-0123";

async function handshake(dialerSecret: string, acceptorSecret: string, dialerId = "a", members = ["a", "b"]) {
  const [d, a] = await loopbackPair();
  const dialer = authenticate(d, d[Symbol.asyncIterator](), {
    role: "dialer",
    self: dialerId,
    secret: dialerSecret,
    allowed: (id) => id === "b",
    timeoutMs: 2000,
  });
  const acceptor = authenticate(a, a[Symbol.asyncIterator](), {
    role: "acceptor",
    self: "b",
    secret: acceptorSecret,
    allowed: (id) => members.includes(id) && id !== "b",
    timeoutMs: 2000,
  });
  const [dr, ar] = await Promise.allSettled([dialer, acceptor]);
  return { dr, ar, d, a };
}

test("cluster auth: peers with the same secret learn each other's id", async () => {
  const { dr, ar, d, a } = await handshake(SECRET, SECRET);
  assert.deepEqual([dr.status === "fulfilled" && dr.value, ar.status === "fulfilled" && ar.value], ["b", "a"]);
  await d.close();
  await a.close();
});

test("cluster auth: a peer without the secret is rejected by both sides and the socket is closed", async () => {
  const { dr, ar, a } = await handshake("not-the-cluster-secret-999", SECRET);
  assert.equal(ar.status, "rejected");
  assert.ok(ar.status === "rejected" && ar.reason instanceof AuthError && /wrong cluster secret/.test(ar.reason.message), String((ar as PromiseRejectedResult).reason));
  assert.equal(dr.status, "rejected");
  assert.ok(dr.status === "rejected" && dr.reason instanceof AuthError);
  assert.notEqual(await Promise.race([a.closed.then(() => "closed"), new Promise((r) => setTimeout(() => r("open"), 2000))]), "open");
});

test("cluster auth: an id that is not a member is rejected even with the secret", async () => {
  const { ar } = await handshake(SECRET, SECRET, "mallory");
  assert.ok(ar.status === "rejected" && /'mallory' is not a member/.test(ar.reason.message));
});

test("cluster auth: a first message that is not a HELLO is rejected with the reason", async () => {
  const [d, a] = await loopbackPair();
  const acceptor = authenticate(a, a[Symbol.asyncIterator](), { role: "acceptor", self: "b", secret: SECRET, allowed: () => true });
  await d.send(new Uint8Array([0x01, 0x02, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0x70, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00]));
  await assert.rejects(acceptor, /must start with "RSA1"/);
  await d.close();
});

test("cluster auth: a silent peer times out", async () => {
  const [d, a] = await loopbackPair();
  await assert.rejects(
    authenticate(a, a[Symbol.asyncIterator](), { role: "acceptor", self: "b", secret: SECRET, allowed: () => true, timeoutMs: 100 }),
    /timed out after 100 ms/,
  );
  await d.close();
});

test("cluster auth: a secret shorter than 16 bytes is refused up front", () => {
  assert.throws(() => secretBytes("short"), /at least 16 bytes: got 5/);
});
