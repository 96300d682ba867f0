import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { SessionStore } from "../src/session/store.ts";
import { SessionTooLargeError, SessionUpdateError } from "../src/session/errors.ts";
import { parseUpdate } from "../src/session/update.ts";
import { isValidSessionId, newSessionId } from "../src/session/ids.ts";
import { LatencyRecorder } from "../src/session/latency.ts";
import type { ReplicationUpdate } from "../src/session/types.ts";

function pair(now = () => 1_000_000) {
  return {
    primary: new SessionStore({ self: "a", now, maxIdleMs: 1000 }),
    replica: new SessionStore({ self: "b", now, maxIdleMs: 1000 }),
  };
}

test("session ids are 22 url-safe characters and unique", () => {
  const ids = new Set(Array.from({ length: 1000 }, newSessionId));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.ok(isValidSessionId(id) && id.length === 22 && !id.includes("!"), id);
  assert.equal(isValidSessionId("a!b"), false);
});

test("session store commit bumps the version by one per change and returns the delta", () => {
  const { primary } = pair();
  const s = primary.create("b");
  const d1 = primary.commit(s.id, { user: "ada" }, []);
  const d2 = primary.commit(s.id, { cart: ["x"] }, ["user"]);
  assert.deepEqual([d1.base, d1.version, d2.base, d2.version], [0, 1, 1, 2]);
  assert.deepEqual(primary.get(s.id)!.attributes, { cart: ["x"] });
  assert.deepEqual(d2.del, ["user"]);
});

test("session replica applies deltas on their base and asks for a snapshot without it", () => {
  const { primary, replica } = pair();
  const s = primary.create("b");
  const d1 = primary.commit(s.id, { user: "ada" }, []);
  assert.equal(replica.applyReplica(d1), "need-snapshot");
  assert.equal(replica.applyReplica(primary.snapshot(s.id)!), "applied");
  const d2 = primary.commit(s.id, { n: 2 }, []);
  const d3 = primary.commit(s.id, { n: 3 }, ["user"]);
  assert.equal(replica.applyReplica(d3), "need-snapshot", "gap: d2 missing");
  assert.equal(replica.applyReplica(d2), "applied");
  assert.equal(replica.applyReplica(d3), "applied");
  assert.deepEqual(replica.get(s.id)!.attributes, { n: 3 });
  assert.equal(replica.get(s.id)!.version, 3);
});

test("session replica drops stale versions and fences stale epochs", () => {
  const { primary, replica } = pair();
  const s = primary.create("b");
  const d1 = primary.commit(s.id, { v: 1 }, []);
  const snap1 = primary.snapshot(s.id)!;
  replica.applyReplica(snap1);
  assert.equal(replica.applyReplica(d1), "stale", "same version again");
  assert.equal(replica.applyReplica(snap1), "stale", "same snapshot again");
  const d2 = primary.commit(s.id, { v: 2 }, []);
  assert.equal(replica.applyReplica(d2), "applied");
  // A new primary takes over at epoch 2; the old primary (epoch 1) keeps writing.
  const newPrimary = new SessionStore({ self: "c", now: () => 1_000_000 });
  // The giver grants the new epoch; adopt takes it as given.
  const adopted = newPrimary.adopt({ ...primary.snapshot(s.id), epoch: 2, primary: "c" } as never, "b");
  assert.equal(adopted.epoch, 2);
  assert.equal(replica.applyReplica(newPrimary.snapshot(s.id)!), "applied");
  const zombie = primary.commit(s.id, { v: "zombie" }, []);
  assert.equal(zombie.version, 3);
  assert.equal(replica.applyReplica(zombie), "fenced", "epoch 1 after epoch 2");
  assert.equal(replica.applyReplica(primary.snapshot(s.id)!), "fenced", "epoch-1 snapshot after epoch 2");
  assert.deepEqual(replica.get(s.id)!.attributes, { v: 2 });
  assert.equal(replica.stats().stale, 4);
});

test("session tombstones are final: a replica never resurrects an expired session", () => {
  let now = 1_000_000;
  const { primary, replica } = pair(() => now);
  const s = primary.create("b");
  primary.commit(s.id, { v: 1 }, []);
  const before = primary.snapshot(s.id)!;
  replica.applyReplica(before);
  now += 1001;
  const tombstones = primary.expireIdle();
  assert.equal(tombstones.length, 1);
  assert.equal(tombstones[0].kind, "tombstone");
  assert.equal(replica.applyReplica(tombstones[0]), "applied");
  assert.equal(replica.get(s.id)!.expired, true);
  assert.equal(replica.applyReplica(before), "ended", "older snapshot after the tombstone");
  const later = { ...before, epoch: 5, version: 99 } as ReplicationUpdate;
  assert.equal(replica.applyReplica(later), "ended", "even a newer epoch cannot revive it");
  assert.equal(primary.snapshot(s.id)!.kind, "tombstone");
  assert.throws(() => primary.commit(s.id, { v: 2 }, []), /not a live primary/);
});

test("session tombstone reaching a replica before any snapshot still blocks the session", () => {
  const { primary, replica } = pair();
  const s = primary.create("b");
  primary.commit(s.id, { v: 1 }, []);
  const snap = primary.snapshot(s.id)!;
  const tomb = primary.invalidate(s.id);
  assert.equal(replica.applyReplica(tomb), "applied");
  assert.equal(replica.applyReplica(snap), "ended");
});

test("session redirects are fences: an older epoch is fenced, a newer copy installs over the redirect", () => {
  const { primary, replica } = pair();
  const s = primary.create("b");
  const d1 = primary.commit(s.id, { v: 1 }, []);
  primary.markMoved(s.id, "c", 2);
  assert.deepEqual([primary.get(s.id)!.role, primary.get(s.id)!.epoch], ["moved", 2]);
  // An epoch-1 update (from a zombie) is refused by the redirect; an epoch-2 copy from the new primary is kept.
  assert.equal(primary.applyReplica({ ...d1, primary: "x" }), "fenced");
  const fromNew = { ...replica.get(s.id) ?? {}, kind: "snapshot", id: s.id, epoch: 2, version: 1, primary: "c", lastAccess: 1_000_000, maxIdleMs: 1000, attributes: { v: 1 } } as ReplicationUpdate;
  assert.equal(primary.applyReplica(fromNew, "inc-c"), "applied");
  assert.deepEqual([primary.get(s.id)!.role, primary.get(s.id)!.primaryIncarnation], ["replica", "inc-c"]);
});

test("session promotion: a live replica becomes primary at epoch + 1; nothing else can be promoted", () => {
  const { primary, replica } = pair();
  const s = primary.create("b");
  primary.commit(s.id, { v: 1 }, []);
  replica.applyReplica(primary.snapshot(s.id)!, "inc-a");
  const promoted = replica.promote(s.id, "c")!;
  assert.deepEqual([promoted.role, promoted.epoch, promoted.primary, promoted.secondary, promoted.attributes], ["primary", 2, replica.self, "c", { v: 1 }]);
  assert.equal(replica.promote(s.id, "c"), undefined, "already primary");
  assert.equal(replica.promote("AAAAAAAAAAAAAAAAAAAAAA", "c"), undefined, "unknown");
});

test("session replica refuses to hand out a copy idle beyond maxIdle", () => {
  let now = 1_000_000;
  const { primary, replica } = pair(() => now);
  const s = primary.create("b");
  primary.commit(s.id, { v: 1 }, []);
  replica.applyReplica(primary.snapshot(s.id)!);
  now += 500;
  assert.equal(replica.expireReplicaIfIdle(s.id), false);
  now += 501;
  assert.equal(replica.expireReplicaIfIdle(s.id), true);
  assert.equal(replica.snapshot(s.id)!.kind, "tombstone");
});

test("session touch is replicated only when the replica's access time falls a quarter of maxIdle behind", () => {
  let now = 1_000_000;
  const { primary } = pair(() => now);
  const s = primary.create("b");
  primary.commit(s.id, { v: 1 }, []);
  now += 100;
  assert.equal(primary.touch(s.id), undefined);
  now += 200;
  const d = primary.touch(s.id);
  assert.ok(d && d.kind === "delta" && Object.keys(d.set).length === 0 && d.lastAccess === now);
});

test("session store enforces maxSessionBytes with a clear error and leaves the session unchanged", () => {
  const store = new SessionStore({ self: "a", maxSessionBytes: 100 });
  const s = store.create();
  store.commit(s.id, { small: "x" }, []);
  assert.throws(
    () => store.commit(s.id, { big: "y".repeat(200) }, []),
    (e: unknown) =>
      e instanceof SessionTooLargeError && /over the limit 'maxSessionBytes' = 100/.test(e.message) && e.bytes > 100,
  );
  assert.deepEqual(store.get(s.id)!.attributes, { small: "x" });
  assert.equal(store.get(s.id)!.version, 1);
});

test("session store sweep forgets old tombstones and long-idle replicas but keeps live ones", () => {
  let now = 1_000_000;
  const store = new SessionStore({ self: "b", now: () => now, maxIdleMs: 1000, tombstoneTtlMs: 5000, replicaGraceMs: 1000 });
  const primary = new SessionStore({ self: "a", now: () => now, maxIdleMs: 1000 });
  const keep = primary.create("b");
  const old = primary.create("b");
  primary.commit(old.id, { k: 1 }, []);
  store.applyReplica(primary.snapshot(old.id)!);
  now += 2500;
  primary.commit(keep.id, { k: 1 }, []);
  store.applyReplica(primary.snapshot(keep.id)!);
  assert.equal(store.sweep(), 1);
  assert.equal(store.get(old.id), undefined);
  assert.ok(store.get(keep.id));
});

test("session update validation rejects malformed updates naming the field", () => {
  const id = newSessionId();
  assert.throws(() => parseUpdate(null), SessionUpdateError);
  assert.throws(() => parseUpdate({ kind: "delta", id: "bad id!", epoch: 1, version: 1, primary: "a" }), /'id'/);
  assert.throws(() => parseUpdate({ kind: "snapshot", id, epoch: 0, version: 1, primary: "a" }), /'epoch' must be an integer >= 1/);
  assert.throws(
    () => parseUpdate({ kind: "delta", id, epoch: 1, version: 2, base: 2, primary: "a", lastAccess: 0, maxIdleMs: 1, set: {}, del: [] }),
    /'base' must be below 'version'/,
  );
  assert.throws(
    () => parseUpdate({ kind: "delta", id, epoch: 1, version: 2, base: 1, primary: "a", lastAccess: 0, maxIdleMs: 1, set: [], del: [] }),
    /'set' must be an object/,
  );
  assert.throws(() => parseUpdate({ kind: "other", id, epoch: 1, version: 1, primary: "a" }), /'kind'/);
  assert.ok(parseUpdate({ kind: "tombstone", id, epoch: 1, version: 1, primary: "a" }));
});

test("session replica converges to the primary under any order of delivery with snapshots on demand", () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ key: fc.constantFrom("a", "b", "c"), value: fc.integer(), del: fc.boolean() }), { minLength: 1, maxLength: 30 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      (changes, shuffle) => {
        const { primary, replica } = pair();
        const s = primary.create("b");
        const updates: ReplicationUpdate[] = changes.map((c) =>
          c.del ? primary.commit(s.id, {}, [c.key]) : primary.commit(s.id, { [c.key]: c.value }, [])
        );
        // Deliver in a scrambled order; whenever the replica lacks a base, it gets a snapshot (as resync does).
        const order = updates.map((u, i) => ({ u, k: shuffle[i] ?? i }));
        order.sort((x, y) => x.k - y.k);
        for (const { u } of order) {
          if (replica.applyReplica(u) === "need-snapshot") replica.applyReplica(primary.snapshot(s.id)!);
        }
        const last = updates[updates.length - 1];
        if (replica.get(s.id)?.version !== last.version) replica.applyReplica(primary.snapshot(s.id)!);
        assert.deepEqual(replica.get(s.id)!.attributes, primary.get(s.id)!.attributes);
        assert.equal(replica.get(s.id)!.version, primary.get(s.id)!.version);
      },
    ),
  );
});

test("latency recorder reports nearest-rank percentiles", () => {
  const r = new LatencyRecorder();
  for (let i = 1; i <= 100; i++) r.record(i);
  assert.deepEqual(r.summary(), { count: 100, p50: 50, p90: 90, p99: 99, max: 100 });
  assert.deepEqual(new LatencyRecorder().summary(), { count: 0, p50: 0, p90: 0, p99: 0, max: 0 });
});

test("session size is kept change by change and always equals the JSON encoding's length (any values, any order of sets and deletes)", async () => {
  const fc = (await import("fast-check")).default;
  const { SizeBook, utf8Length } = await import("../src/session/size.ts");
  const key = fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom("a", "b", "é", "😀", "\u0000", '"q"'));
  const value = fc.jsonValue({ maxDepth: 2 });
  const change = fc.record({ set: fc.dictionary(key, value, { maxKeys: 4 }), del: fc.array(key, { maxLength: 3 }) });
  fc.assert(
    fc.property(fc.dictionary(key, value, { maxKeys: 5 }), fc.array(change, { maxLength: 8 }), (start, changes) => {
      const attrs: Record<string, unknown> = JSON.parse(JSON.stringify(start));
      const book = new SizeBook(attrs);
      const size = (o: unknown) => new TextEncoder().encode(JSON.stringify(o)).byteLength;
      if (book.total !== size(attrs)) return false;
      for (const { set, del } of changes) {
        const clean = JSON.parse(JSON.stringify(set)) as Record<string, unknown>;
        const next = { ...attrs };
        for (const k of del) delete next[k];
        Object.assign(next, clean);
        if (book.after(clean, del) !== size(next)) return false;
        book.apply(clean, del);
        for (const k of del) delete attrs[k];
        Object.assign(attrs, clean);
        if (book.total !== size(attrs)) return false;
      }
      return true;
    }),
    { numRuns: 500, seed: 42 },
  );
  for (const text of ["", "abc", "é", "€", "😀", "a😀b", "\ud800"]) {
    assert.equal(utf8Length(text), new TextEncoder().encode(text).byteLength, JSON.stringify(text));
  }
});

test("deadlines: one timer fires each bound in order, never a cancelled one, and goes away when nothing is pending", async () => {
  const { Deadlines } = await import("../src/session/deadlines.ts");
  const d = new Deadlines();
  const fired: string[] = [];
  const t0 = performance.now();
  d.add(60, t0, () => fired.push("60"));
  const cancelled = d.add(20, t0, () => fired.push("20-cancelled"));
  d.add(20, t0 + 1, () => fired.push("20"));
  d.add(5, t0, () => fired.push("5"));
  cancelled.cancel();
  await new Promise((r) => setTimeout(r, 120));
  assert.deepEqual(fired, ["5", "20", "60"]);
  assert.equal(d.pending, 0);
  // Many at once on one bound: all fire, once each.
  let n = 0;
  for (let i = 0; i < 2000; i++) d.add(10, performance.now(), () => n++);
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(n, 2000);
});
