import { test } from "node:test";
import assert from "node:assert/strict";
import { SessionCluster, type SessionClusterOptions } from "../src/cluster/session_cluster.ts";
import { parseSessionCookie } from "../src/cluster/cookie.ts";
import type { PeerConfig } from "../src/cluster/peers.ts";
import { connect, listen } from "../src/sdp/mod.ts";
import type { MessageListener } from "../src/sdp/types.ts";

/** In-process listeners (loopback transport) for `ids`, and the peer list naming them. */
async function loopbackPeers(ids: string[]): Promise<{ listeners: Map<string, MessageListener>; peers: PeerConfig[] }> {
  const listeners = new Map<string, MessageListener>();
  for (const id of ids) listeners.set(id, await listen({ transport: "loopback", host: `node-${id}`, port: 0 }));
  const peers = ids.map((id) => ({ id, host: `node-${id}`, port: listeners.get(id)!.address.port, transport: "loopback" as const }));
  return { listeners, peers };
}

const dial = (p: PeerConfig) => connect({ transport: "loopback", host: p.host, port: p.port });

const SECRET = "test-cluster-secret-0123456789";

function quiet() {
  const lines: string[] = [];
  return { lines, warn: (m: string) => void lines.push(m) };
}

async function startCluster(ids: string[], extra: Partial<SessionClusterOptions> = {}) {
  const { listeners, peers } = await loopbackPeers(ids);
  const log = quiet();
  const nodes = new Map<string, SessionCluster>();
  for (const id of ids) {
    nodes.set(
      id,
      new SessionCluster({
        self: id,
        peers,
        secret: SECRET,
        listener: listeners.get(id)!,
        dial,
        logger: log,
        heartbeatIntervalMs: 50,
        heartbeatTimeoutMs: 500,
        ...extra,
      }),
    );
  }
  for (const n of nodes.values()) assert.ok(await n.waitForPeers(5000), "peers up");
  return { nodes, log, peers, close: () => Promise.all([...nodes.values()].map((n) => n.close())) };
}

async function until(check: () => boolean, what: string, ms = 5000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
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

test("cluster failover: a server fetches the session from the secondary and becomes primary with epoch+1", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { user: "ada" }, [], { ack: "transport" });
  await a.commit(s.id, { cart: ["apple"] }, [], { ack: "transport" });
  const cookie = parseSessionCookie(a.cookieFor(s))!;
  await a.close(); // the primary dies
  const other = ["b", "c"].find((id) => id !== cookie.secondary)!;
  const taker = c.nodes.get(other)!;
  await until(() => !taker.node.isAlive("a"), "a seen down");
  const record = await taker.open(cookie);
  assert.ok(record, "session survived");
  assert.deepEqual(record.attributes, { user: "ada", cart: ["apple"] });
  assert.equal(record.epoch, 2);
  assert.equal(record.version, 2);
  assert.equal(record.primary, other);
  assert.equal(record.secondary, cookie.secondary, "the only other live server");
  assert.equal(await taker.commit(record.id, { paid: true }, [], { ack: "applied" }), "applied");
  const replica = c.nodes.get(cookie.secondary!)!.store.get(s.id)!;
  assert.deepEqual([replica.epoch, replica.version, replica.primary], [2, 3, other]);
  assert.equal(taker.stats().failover.promoted, 1);
  await c.close();
});

test("cluster failover on the secondary itself promotes its local replica", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "transport" });
  const cookie = parseSessionCookie(a.cookieFor(s))!;
  await a.close();
  const secondary = c.nodes.get(cookie.secondary!)!;
  await until(() => !secondary.node.isAlive("a"), "a seen down");
  const record = await secondary.open(cookie);
  assert.deepEqual([record?.attributes, record?.epoch, record?.primary], [{ n: 1 }, 2, cookie.secondary]);
  assert.notEqual(record!.secondary, cookie.secondary);
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

test("cluster takes a session over from a live primary, which keeps only a redirect", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "applied" });
  const cookie = parseSessionCookie(a.cookieFor(s))!;
  const b = c.nodes.get("b")!;
  const record = await b.open(cookie);
  assert.deepEqual([record?.attributes, record?.epoch, record?.primary], [{ n: 1 }, 2, "b"]);
  assert.equal(a.store.get(s.id)!.role, "moved");
  // An old cookie arriving at a is redirected to b.
  await b.commit(s.id, { n: 2 }, [], { ack: "applied" });
  const back = await a.open(cookie);
  assert.deepEqual([back?.attributes, back?.epoch, back?.primary], [{ n: 2 }, 3, "a"]);
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

test("cluster replica fences a stale primary after a takeover, which steps down", async () => {
  const c = await startCluster(["a", "b", "c"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "applied" });
  const cookie = parseSessionCookie(a.cookieFor(s))!;
  const sec = c.nodes.get(cookie.secondary!)!;
  // A network partition: the taker cannot see a, so it promotes from the secondary.
  const takerId = ["b", "c"].find((x) => x !== cookie.secondary)!;
  const taker = c.nodes.get(takerId)!;
  const adopted = taker.store.adopt(sec.store.snapshot(s.id) as never, cookie.secondary);
  await taker.commit(adopted.id, { n: "new" }, [], { ack: "applied" });
  // The old primary, unaware, writes at epoch 1: the replica drops it, and the write is not acknowledged.
  assert.equal(await a.commit(s.id, { n: "zombie" }, [], { ack: "applied" }), "failed", "a fenced write is not durable");
  const replica = sec.store.get(s.id)!;
  assert.deepEqual([replica.epoch, replica.attributes.n], [2, "new"]);
  assert.ok(sec.store.stats().stale >= 1);
  // The replica told the old primary where the session lives now: it stepped down to a redirect.
  await until(() => a.store.get(s.id)?.role === "moved", "old primary steps down");
  assert.equal(a.store.get(s.id)!.primary, takerId);
  assert.equal(a.stats().failover.fenced, 1);
  // A request carrying the old cookie at the old primary now follows the redirect: the newest data.
  const back = await a.open(cookie);
  assert.deepEqual([back?.attributes.n, back?.epoch], ["new", 3]);
  await c.close();
});

test("cluster rejects a peer without the secret and closes its connection", async () => {
  const { listeners, peers } = await loopbackPeers(["a", "b"]);
  const logA = quiet();
  const logB = quiet();
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
  const s = b.create();
  assert.equal(s.secondary, undefined, "no authenticated peer to replicate to");
  assert.equal(await b.commit(s.id, { n: 1 }, []), "no-secondary");
  assert.equal(a.store.get(s.id), undefined);
  await a.close();
  await b.close();
});

test("cluster secondary that lost its copy asks the primary (resync) and gets a snapshot, in transport mode", async () => {
  const c = await startCluster(["a", "b"]);
  const a = c.nodes.get("a")!;
  const b = c.nodes.get("b")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "applied" });
  assert.equal(b.store.dropReplica(s.id, 2), true, "the secondary loses its copy");
  assert.equal(await a.commit(s.id, { m: 2 }, [], { ack: "transport" }), "transport", "a delta on the same connection");
  await until(() => b.store.get(s.id)?.version === 2, "resync snapshot applied");
  assert.deepEqual(b.store.get(s.id)!.attributes, { n: 1, m: 2 });
  assert.equal(a.stats().failover.resyncs, 1);
  assert.equal(b.store.stats().needSnapshot, 1);
  // In applied mode the primary learns it from the reply and sends the snapshot itself.
  b.store.dropReplica(s.id, 2);
  assert.equal(await a.commit(s.id, { k: 3 }, [], { ack: "applied" }), "applied");
  assert.deepEqual(b.store.get(s.id)!.attributes, { n: 1, m: 2, k: 3 });
  await c.close();
});

test("cluster finds a session through a stale cookie after its secondary was replaced", async () => {
  const c = await startCluster(["a", "b", "c", "d"]);
  const a = c.nodes.get("a")!;
  const s = a.create();
  await a.commit(s.id, { n: 1 }, [], { ack: "applied" });
  const stale = parseSessionCookie(a.cookieFor(s))!; // names the first secondary
  await c.nodes.get(stale.secondary!)!.close(); // the secondary dies: a re-replicates elsewhere
  await until(() => s.secondary !== stale.secondary, "a new secondary");
  const holder = s.secondary!;
  await until(() => c.nodes.get(holder)!.store.get(s.id)?.version === 1, "snapshot on the new secondary");
  await a.close(); // then the primary dies, before the client ever saw the new cookie
  const asker = ["b", "c", "d"].find((id) => id !== stale.secondary && id !== holder)!;
  const node = c.nodes.get(asker)!;
  await until(() => !node.node.isAlive("a"), "a seen down");
  const record = await node.open(stale);
  assert.deepEqual([record?.attributes, record?.epoch], [{ n: 1 }, 2]);
  await c.close();
});
