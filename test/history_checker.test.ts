/**
 * The fault suite's history checker (test/fixtures/history.ts) on synthetic
 * histories: it must see a lost acknowledgement, a stale read, overlapping
 * primaries, a session that came back new and a leak, and report nothing on a
 * clean history.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkHistory, type Op } from "./fixtures/history.ts";

let clock = 1000;
function put(client: string, n: number, server: string, o: Partial<Op> = {}): Op {
  const start = clock++;
  return {
    client,
    kind: "put",
    key: `u:${client}:${n}`,
    server,
    servedBy: server,
    status: 200,
    replication: "transport",
    sessionId: `s-${client}`,
    epoch: 1,
    version: n,
    start,
    end: clock++,
    ...o,
  };
}
function read(client: string, keys: string[], server: string, o: Partial<Op> = {}): Op {
  const start = clock++;
  return {
    client,
    kind: "read",
    server,
    servedBy: server,
    status: 200,
    replication: null,
    sessionId: `s-${client}`,
    epoch: 1,
    keys,
    start,
    end: clock++,
    ...o,
  };
}

/** Two clients, a failover of c1's session from a to b (epoch 2), final reads with everything. */
function cleanHistory(): Op[] {
  clock = 1000;
  return [
    put("c1", 0, "a", { isNew: true }),
    put("c2", 0, "b", { isNew: true }),
    put("c1", 1, "a"),
    read("c1", ["u:c1:0", "u:c1:1"], "a"),
    put("c1", 2, "b", { status: 0, replication: null, sessionId: undefined, epoch: undefined, error: "refused" }),
    put("c1", 3, "b", { epoch: 2 }),
    put("c2", 1, "b", { replication: "timeout" }), // not acknowledged: may be missing
    read("c1", ["u:c1:0", "u:c1:1", "u:c1:3"], "b", { epoch: 2 }),
    read("c1", ["u:c1:0", "u:c1:1", "u:c1:3"], "b", { epoch: 2, final: true }),
    read("c2", ["u:c2:0"], "c", { epoch: 2, final: true }),
  ];
}

test("history checker: a clean history with a failover reports 0 of everything", () => {
  const r = checkHistory({ ops: cleanHistory(), survivors: ["b", "c"] });
  assert.equal(r.acked, 4);
  assert.deepEqual(
    [r.lost, r.stale, r.overlap, r.sessionsLost, r.leaks, r.unreadable, r.finalFromDead],
    [0, 0, 0, 0, 0, 0, 0],
    JSON.stringify(r.findings),
  );
  assert.equal(r.failedRequests, 1);
  assert.deepEqual(r.ackedByHeader, { transport: 4 });
});

test("history checker: an acknowledged update missing from the final read is lost", () => {
  const ops = cleanHistory();
  const final = ops.find((o) => o.client === "c1" && o.final)!;
  final.keys = ["u:c1:0", "u:c1:3"]; // u:c1:1 was acked, then lost
  const r = checkHistory({ ops, survivors: ["b", "c"] });
  assert.equal(r.lost, 1);
  assert.deepEqual(r.lostByHeader, { transport: 1 });
  assert.equal(r.stale, 0);
  assert.ok(r.findings.some((f) => f.kind === "lost" && f.key === "u:c1:1"));
});

test("history checker: an applied-acknowledged update is checked too; an unacknowledged one is not", () => {
  const ops = cleanHistory();
  ops.find((o) => o.key === "u:c2:0")!.replication = "applied";
  ops.find((o) => o.client === "c2" && o.final)!.keys = [];
  const r = checkHistory({ ops });
  assert.equal(r.lost, 1);
  assert.deepEqual(r.lostByHeader, { applied: 1 });
});

test("history checker: a client whose final read failed is unreadable, its acknowledged updates unverified", () => {
  const ops = cleanHistory();
  const final = ops.find((o) => o.client === "c2" && o.final)!;
  Object.assign(final, { status: 503, keys: undefined });
  const r = checkHistory({ ops });
  assert.equal(r.unreadable, 1);
  assert.equal(r.unverified, 1);
  assert.equal(r.lost, 0);
  // No final read attempted at all counts too.
  const none = cleanHistory().filter((o) => !(o.client === "c2" && o.final));
  assert.equal(checkHistory({ ops: none }).unreadable, 1);
});

test("history checker: a read missing a key acknowledged earlier to the same client is stale", () => {
  const ops = cleanHistory();
  // After the failover, a read from the old primary's view misses u:c1:3.
  ops.splice(ops.length - 2, 0, read("c1", ["u:c1:0", "u:c1:1"], "c", { epoch: 2 }));
  const r = checkHistory({ ops });
  assert.equal(r.stale, 1);
  assert.equal(r.lost, 0);
  // A read that started before the ack came back is not stale.
  const concurrent = cleanHistory();
  const w = concurrent.find((o) => o.key === "u:c1:3")!;
  concurrent.push(read("c1", ["u:c1:0", "u:c1:1"], "b", { epoch: 2, start: w.end - 1, end: w.end + 5 }));
  assert.equal(checkHistory({ ops: concurrent }).stale, 0);
});

test("history checker: one epoch acknowledged by two servers is an overlap", () => {
  const ops = cleanHistory();
  ops.push(put("c1", 4, "c", { epoch: 2 })); // b and c both primary at epoch 2
  const r = checkHistory({ ops });
  assert.equal(r.overlap, 1);
  assert.ok(r.findings.some((f) => f.kind === "overlap" && /epoch 2 acknowledged by b and c/.test(f.detail)));
});

test("history checker: an old epoch acknowledged after a newer one was is an overlap", () => {
  const ops = cleanHistory();
  ops.push(put("c1", 4, "a", { epoch: 1 })); // a, deposed, still acknowledges
  const r = checkHistory({ ops });
  assert.equal(r.overlap, 1);
  // A write at the old epoch that started before the newer ack was seen is not proof of two primaries.
  const early = cleanHistory();
  const w = early.find((o) => o.key === "u:c1:3")!;
  early.push(put("c1", 5, "a", { epoch: 1, start: w.end - 2, end: w.end + 10 }));
  assert.equal(checkHistory({ ops: early }).overlap, 0);
});

test("history checker: a session that comes back new after an acknowledged update is a lost session", () => {
  const ops = cleanHistory();
  ops.splice(ops.length - 2, 0, put("c2", 2, "c", { isNew: true, sessionId: "s-c2-new", epoch: 1 }));
  const r = checkHistory({ ops });
  assert.equal(r.sessionsLost, 1);
  const absent = cleanHistory();
  const final = absent.find((o) => o.client === "c2" && o.final)!;
  Object.assign(final, { sessionId: undefined, keys: [] });
  const r2 = checkHistory({ ops: absent });
  assert.equal(r2.sessionsLost, 1);
  assert.equal(r2.lost, 1);
});

test("history checker: a forger that sees another client's keys or session is a leak; its own losses do not count", () => {
  const ops = cleanHistory();
  ops.push(put("f1", 0, "a", { sessionId: "s-f1", isNew: true }));
  ops.push(read("f1", ["u:f1:0", "u:c2:0"], "b", { sessionId: "s-f1" }));
  ops.push(read("f1", [], "b", { sessionId: "s-c1" }));
  ops.push(read("f1", [], "c", { sessionId: "s-f1", final: true })); // its own session gone: not counted
  const r = checkHistory({ ops, forgers: ["f1"] });
  assert.equal(r.leaks, 2);
  assert.equal(r.lost, 0);
  assert.equal(r.sessionsLost, 0);
  assert.equal(r.acked, 4);
  // The forger's writes still count for overlapping primaries.
  ops.push(put("f1", 1, "c", { sessionId: "s-c1", epoch: 2 }));
  assert.equal(checkHistory({ ops, forgers: ["f1"] }).overlap, 1);
});

test("history checker: a final read from a server that is not a survivor is flagged", () => {
  const r = checkHistory({ ops: cleanHistory(), survivors: ["c"] });
  assert.equal(r.finalFromDead, 1);
});
