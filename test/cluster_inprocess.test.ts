import { test } from "node:test";
import assert from "node:assert/strict";
import { SessionCluster } from "../src/cluster/session_cluster.ts";
import { parseSessionCookie } from "../src/cluster/cookie.ts";
import { connect } from "../src/sdp/mod.ts";
import type { SnapshotUpdate } from "../src/session/types.ts";
import { dialer, listenPeers, startCluster as startInProcess, type StartClusterOptions } from "./fixtures/cluster.ts";
import { quietLogger, until } from "./fixtures/wait.ts";

const dial = dialer("loopback");

const SECRET = "test-cluster-secret-0123456789";

async function startCluster(ids: string[], extra: Partial<StartClusterOptions["cluster"]> = {}) {
  const log = quietLogger();
  const cluster = await startInProcess(ids, {
    cluster: {
      secret: SECRET,
      logger: log,
      heartbeatIntervalMs: 50,
      // Also the lease: long enough that a loaded machine's timer delays do not lapse it.
      heartbeatTimeoutMs: 1500,
      ...extra,
    },
  });
  return { ...cluster, log };
}

test("cluster replicates a committed change to the rendezvous-chosen secondary", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  assert.ok(s.secondary === "b" || s.secondary === "c");
  assert.equal(await a.commit(s.id, { user: "ada" }, [], { ack: "applied" }), "applied");
  const replica = c.nodes.get(s.secondary!)!.store.get(s.id)!;
  assert.deepEqual([replica.role, replica.version, replica.attributes], ["replica", 1, { user: "ada" }]);
  assert.equal(await a.commit(s.id, { cart: [1] }, [], { ack: "transport" }), "transport");
  await until(() => replica.version === 2, "delta applied");
  assert.deepEqual(replica.attributes, { user: "ada", cart: [1] });
  const stats = a.stats().replication;
  assert.equal(stats.snapshots, 1, "first replication had no base: a snapshot");
  assert.equal(stats.deltas, 1);
  await c.close();
});

test("cluster failover: the secondary promotes a departed primary's session at once; another server then takes it over", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { user: "ada" }, [], { ack: "transport" });
  await a.commit(s.id, { cart: ["apple"] }, [], { ack: "transport" });
  const cookie = parseSessionCookie(a.cookieFor(s))!;
  await a.close(); // the primary leaves (its farewell is a death notice)
  const secondary = c.nodes.get(cookie.secondary!)!;
  // Eager: no request needed for the replica to become primary, epoch + 1.
  await until(() => secondary.store.get(s.id)?.role === "primary", "replica promoted");
  assert.deepEqual([secondary.store.get(s.id)!.epoch, secondary.stats().failover.promoted], [2, 1]);
  const other = ["b", "c"].find((id) => id !== cookie.secondary)!;
  const taker = c.nodes.get(other)!;
  const record = await taker.open(cookie); // the old cookie: a is gone, its secondary hands the session over
  assert.ok(record, "session survived");
  taker.release(record.id);
  assert.deepEqual(record.attributes, { user: "ada", cart: ["apple"] });
  assert.deepEqual([record.epoch, record.version, record.primary], [3, 2, other]);
  assert.equal(secondary.store.get(s.id)!.role, "moved", "the giver keeps only a redirect");
  assert.equal(await taker.commit(record.id, { paid: true }, [], { ack: "applied" }), "applied");
  assert.equal(record.secondary, cookie.secondary, "the only other live server");
  const replica = c.nodes.get(cookie.secondary!)!.store.get(s.id)!;
  assert.deepEqual([replica.role, replica.epoch, replica.version, replica.primary], ["replica", 3, 3, other]);
  assert.equal(taker.stats().failover.migrated, 1);
  await c.close();
});

test("cluster re-replicates a dead secondary's sessions to another peer", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const sessions = Array.from({ length: 20 }, () => a.create());
  for (const s of sessions) await a.commit(s.id, { v: s.id }, [], { ack: "applied" });
  const onB = sessions.filter((s) => s.secondary === "b");
  assert.ok(onB.length > 0);
  await c.nodes.get("b")!.close();
  await until(() => onB.every((s) => s.secondary === "c"), "new secondary c");
  const cStore = c.nodes.get("c")!.store;
  await until(() => onB.every((s) => cStore.get(s.id)?.attributes.v === s.id), "snapshots on c");
  assert.equal(a.stats().failover.rereplicated, onB.length);
  await c.close();
});

test("cluster takes a session over from a live primary, which rebinds its secondary and keeps only a redirect", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "applied" });
  const cookie = parseSessionCookie(a.cookieFor(s))!;
  const b = c.nodes.get("b")!;
  const record = await b.open(cookie);
  b.release(s.id);
  assert.deepEqual([record?.attributes, record?.epoch, record?.primary], [{ n: 1 }, 2, "b"]);
  assert.equal(a.store.get(s.id)!.role, "moved");
  if (cookie.secondary === "c") {
    // The secondary recorded the new primary before the session moved: it will never promote it for a.
    assert.deepEqual([c.nodes.get("c")!.store.get(s.id)!.primary, c.nodes.get("c")!.store.get(s.id)!.epoch], ["b", 2]);
  }
  // An old cookie arriving at a is redirected to b.
  await b.commit(s.id, { n: 2 }, [], { ack: "applied" });
  const back = await a.open(cookie);
  a.release(s.id);
  assert.deepEqual([back?.attributes, back?.epoch, back?.primary], [{ n: 2 }, 3, "a"]);
  await c.close();
});

test("cluster: two servers taking one session over at once get different epochs, and only one holds it", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "applied" });
  const cookie = parseSessionCookie(a.cookieFor(s))!;
  const results = await Promise.allSettled(["b", "c"].map((id) => c.nodes.get(id)!.open(cookie)));
  const won = results.filter((r) => r.status === "fulfilled" && r.value !== undefined);
  const refused = results.filter((r) => r.status === "rejected");
  assert.ok(won.length >= 1, "at least one taker got it");
  for (const r of refused) assert.equal((r as PromiseRejectedResult).reason.name, "SessionUnavailableError");
  const primaries = ["a", "b", "c"].filter((id) => c.nodes.get(id)!.store.get(s.id)?.role === "primary");
  assert.equal(primaries.length, 1, `exactly one primary (${primaries})`);
  const epochs = won.map((r) => (r as PromiseFulfilledResult<{ epoch: number }>).value.epoch);
  assert.equal(new Set(epochs).size, epochs.length, `epochs are unique per grant (${epochs})`);
  await c.close();
});

test("cluster: a primary without a majority lease neither serves nor acknowledges", async () => {
  const c = await startCluster(["a", "b", "c"], { heartbeatTimeoutMs: 300 });
  const a = c.nodes.get("a")!;
  const s = a.create();
  assert.equal(await a.commit(s.id, { n: 1 }, [], { ack: "applied" }), "applied");
  const cookie = parseSessionCookie(a.cookieFor(s))!;
  await Promise.all(["b", "c"].map((id) => c.nodes.get(id)!.close()));
  await until(() => !a.node.holdsLease(), "a's lease runs out", 2000);
  await assert.rejects(a.open(cookie), { name: "SessionUnavailableError" });
  await assert.rejects(a.commit(s.id, { n: 2 }, [], { ack: "transport" }), { name: "SessionUnavailableError" });
  assert.throws(() => a.create(), { name: "SessionUnavailableError" });
  assert.ok(a.stats().failover.unavailable >= 3);
  await c.close();
});

test("cluster expiry is decided by the primary and honoured on the secondary", async () => {
  let now = 1_000_000;
  const c = await startCluster(["a", "b"], { maxIdleMs: 1000, now: () => now, sweepIntervalMs: 20 });
  const a = c.nodes.get("a")!;
  const b = c.nodes.get("b")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "applied" });
  const cookie = parseSessionCookie(a.cookieFor(s))!;
  now += 1500;
  await until(() => b.store.get(s.id)?.expired === true, "tombstone replicated");
  assert.equal(await b.open(cookie), undefined, "the secondary does not hand out an expired session");
  assert.equal(await a.open(cookie), undefined);
  await c.close();
});

test("cluster replica fences an update from an older epoch; a fenced write is not acknowledged and its sender steps down", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "applied" });
  const cookie = parseSessionCookie(a.cookieFor(s))!;
  const sec = c.nodes.get(cookie.secondary!)!;
  // Forced by hand (the protocol never grants this while a holds its lease): another server holds epoch 2.
  const takerId = ["b", "c"].find((x) => x !== cookie.secondary)!;
  const taker = c.nodes.get(takerId)!;
  const snapshot = sec.store.snapshot(s.id) as SnapshotUpdate;
  const adopted = taker.store.adopt({ ...snapshot, epoch: 2, primary: takerId }, cookie.secondary);
  assert.equal(await taker.commit(adopted.id, { n: "new" }, [], { ack: "applied" }), "applied");
  for (const ack of ["applied", "transport"] as const) {
    if (a.store.get(s.id)?.role !== "primary") break;
    const outcome = await a.commit(s.id, { n: "zombie" }, [], { ack });
    if (ack === "applied") assert.equal(outcome, "failed", "a fenced write is not durable");
  }
  const replica = sec.store.get(s.id)!;
  assert.deepEqual([replica.epoch, replica.attributes.n], [2, "new"]);
  assert.ok(sec.store.stats().stale >= 1);
  // The replica told the old primary where the session lives now: it stepped down to a redirect (a fence).
  await until(() => a.store.get(s.id)?.role === "moved", "old primary steps down");
  assert.deepEqual([a.store.get(s.id)!.primary, a.store.get(s.id)!.epoch], [takerId, 2]);
  assert.equal(a.stats().failover.fenced, 1);
  // A request carrying the old cookie at the old primary now follows the redirect: the newest data.
  const back = await a.open(cookie);
  a.release(s.id);
  assert.deepEqual([back?.attributes.n, back?.epoch], ["new", 3]);
  await c.close();
});

test("cluster rejects a peer without the secret and closes its connection", async () => {
  const { listeners, peers } = await listenPeers(["a", "b"]);
  const logA = quietLogger();
  const logB = quietLogger();
  const a = new SessionCluster({ self: "a", peers, secret: SECRET, listener: listeners.get("a")!, dial, logger: logA });
  const b = new SessionCluster({
    self: "b",
    peers,
    secret: "the-wrong-secret-for-this-cluster",
    listener: listeners.get("b")!,
    dial,
    logger: logB,
  });
  assert.equal(await a.waitForPeers(500), false);
  assert.ok(a.stats().node.authRejected > 0 && b.stats().node.authRejected > 0);
  assert.ok(logA.lines.some((l) => /wrong cluster secret/.test(l)), logA.lines.join("\n"));
  // Without an authenticated majority, b may not even create a session.
  assert.throws(() => b.create(), /holds no majority lease/);
  assert.equal(a.store.stats().replicas, 0);
  await a.close();
  await b.close();
});

test("cluster secondary that lost its copy asks the primary (resync) and gets a snapshot, in transport mode", async () => {
  const c = await startCluster(["a", "b"]);
  const a = c.nodes.get("a")!;
  const b = c.nodes.get("b")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "applied" });
  b.store.clear(); // the secondary loses its copy
  assert.equal(await a.commit(s.id, { m: 2 }, [], { ack: "transport" }), "transport", "a delta on the same connection");
  await until(() => b.store.get(s.id)?.version === 2, "resync snapshot applied");
  assert.deepEqual(b.store.get(s.id)!.attributes, { n: 1, m: 2 });
  assert.equal(a.stats().failover.resyncs, 1);
  assert.equal(b.store.stats().needSnapshot, 1);
  // In applied mode the primary learns it from the reply and sends the snapshot itself.
  b.store.clear();
  assert.equal(await a.commit(s.id, { k: 3 }, [], { ack: "applied" }), "applied");
  assert.deepEqual(b.store.get(s.id)!.attributes, { n: 1, m: 2, k: 3 });
  await c.close();
});

test("cluster finds a session through a stale cookie after its secondary was replaced and its primary left", async () => {
  const c = await startCluster(["a", "b", "c", "d", "e"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "applied" });
  const stale = parseSessionCookie(a.cookieFor(s))!; // names the first secondary
  await c.nodes.get(stale.secondary!)!.close(); // the secondary leaves: a re-replicates elsewhere
  await until(() => s.secondary !== undefined && s.secondary !== stale.secondary, "a new secondary");
  const holder = s.secondary!;
  await until(() => c.nodes.get(holder)!.store.get(s.id)?.version === 1, "snapshot on the new secondary");
  await a.close(); // then the primary leaves, before the client ever saw the new cookie
  await until(() => c.nodes.get(holder)!.store.get(s.id)?.role === "primary", "the new secondary promoted it");
  const asker = ["b", "c", "d", "e"].find((id) => id !== stale.secondary && id !== holder)!;
  const record = await c.nodes.get(asker)!.open(stale);
  assert.deepEqual([record?.attributes, record?.epoch, record?.primary], [{ n: 1 }, 3, asker]);
  await c.close();
});

test("cluster: a random or forged session id starts nothing and reads nothing", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { secret: "alice's" }, [], { ack: "applied" });
  const forged = { id: "AAAAAAAAAAAAAAAAAAAAAA", primary: "a", secondary: "b" };
  assert.equal(await c.nodes.get("b")!.open(forged), undefined);
  assert.equal(await c.nodes.get("c")!.open({ ...forged, primary: "zzz" }), undefined);
  assert.equal(c.nodes.get("c")!.stats().failover.lost, 1);
  await c.close();
});

test("cluster bounds connections before trust: handshakes beyond maxHandshakes are refused at once, and replication goes on", async () => {
  const c = await startCluster(["a", "b", "c"], { handshakeTimeoutMs: 3000 });
  const a = c.nodes.get("a")!;
  const port = c.peers.find((p) => p.id === "a")!.port;
  // 40 peers that connect and never authenticate: 32 wait out the handshake deadline, 8 are refused.
  const silent = await Promise.all(Array.from({ length: 40 }, () => connect({ transport: "loopback", host: "node-a", port })));
  await until(() => a.stats().node.refused >= 8, "refusals", 3000);
  assert.equal(a.stats().node.refused, 8);
  assert.ok(c.log.lines.some((l) => /maxHandshakes/.test(l)), "the refusal is logged with the limit");
  // (On a loaded machine the heartbeats may fall behind for a moment; a lease comes back with the next answer.)
  await until(() => a.node.holdsLease(), "a's lease", 5000);
  const s = a.create();
  assert.equal(await a.commit(s.id, { n: 1 }, [], { ack: "applied" }), "applied", "peers still replicate");
  await Promise.all(silent.map((sock) => sock.close().catch(() => {})));
  await c.close();
});
