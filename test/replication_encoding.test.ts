/**
 * The replication path's shortcuts change no byte: a delta's JSON text built
 * from the values' texts the size check made (store.setJson, the replicator's
 * callJson) is exactly `JSON.stringify` of the delta, the secondary decodes
 * the same update, the running size equals the measured one, and ack bounds
 * on the shared timer still fire.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { SessionStore } from "../src/session/store.ts";
import { Replicator } from "../src/session/replicator.ts";
import { Deadlines } from "../src/session/deadlines.ts";
import { jsonNumber, jsonString } from "../src/session/size.ts";
import { RmiEndpoint } from "../src/rmi/endpoint.ts";
import { decodeFrame, encodeCall, encodeCallText } from "../src/rmi/frame.ts";
import { jsonCodec } from "../src/rmi/codec.ts";
import { loopbackPair } from "../src/sdp/links/loopback.ts";
import type { Attributes, ReplicationUpdate } from "../src/session/types.ts";

const key = fc.oneof(fc.constantFrom("a", "b", "0", "7", "k\"q", "é", "\u2028", "x\\y", "\ud83d\ude00"), fc.string({ maxLength: 6 }));
const value = fc.jsonValue({ maxDepth: 2 });
const change = fc.record({ set: fc.dictionary(key, value, { maxKeys: 4 }), del: fc.array(key, { maxLength: 2 }) });

test("store.setJson(delta) is JSON.stringify(delta.set), and the size book matches the encoded size", () => {
  fc.assert(
    fc.property(fc.array(change, { minLength: 1, maxLength: 8 }), (changes) => {
      const store = new SessionStore({ self: "a" });
      const s = store.create("b");
      for (const c of changes) {
        const set = c.set as Attributes;
        const d = store.commit(s.id, set, c.del);
        assert.equal(store.setJson(d), JSON.stringify(d.set));
        assert.equal(store.checkChange(s.id, {}, []), store.measure(store.get(s.id)!.attributes));
      }
    }),
    { numRuns: 300 },
  );
});

test("encodeCallText makes the bytes encodeCall makes", () => {
  fc.assert(
    fc.property(fc.jsonValue(), fc.integer({ min: 0, max: 0xffff_ffff }), (v, id) => {
      const text = JSON.stringify(v);
      const a = encodeCallText(id, "replicate", "transport", text);
      const b = encodeCall(id, "replicate", "transport", jsonCodec.encode(v));
      assert.deepEqual(a, b);
      const f = decodeFrame(a);
      assert.equal(f.kind, "call");
    }),
    { numRuns: 300 },
  );
});

test("a replicated delta arrives as the update JSON.stringify would have sent (ack transport and applied)", async () => {
  const [x, y] = await loopbackPair();
  const got: ReplicationUpdate[] = [];
  const replica = new SessionStore({ self: "b" });
  const callee = new RmiEndpoint(y, {
    methods: {
      replicate: (u) => {
        got.push(u as ReplicationUpdate);
        return replica.applyReplica(u as ReplicationUpdate);
      },
    },
    logger: { warn: () => {} },
  });
  const caller = new RmiEndpoint(x, { logger: { warn: () => {} } });
  const store = new SessionStore({ self: "a" });
  const replicator = new Replicator({ store, endpointFor: () => caller, logger: { warn: () => {} } });
  const s = store.create("b");
  const sent: ReplicationUpdate[] = [];
  for (const [i, ack] of (["applied", "transport", "applied", "none", "applied"] as const).entries()) {
    const set = { [`k${i}`]: { n: i, text: "é\u2028\"" }, shared: [i] };
    store.checkChange(s.id, set, []);
    const d = store.commit(s.id, set, i === 2 ? ["k0"] : []);
    sent.push(JSON.parse(JSON.stringify(i === 0 ? store.snapshot(s.id) : d)));
    const outcome = await replicator.replicate(d, "b", ack, 5000);
    assert.equal(outcome, ack);
  }
  // As text: same fields, same order, same values.
  assert.deepEqual(got.map((u) => JSON.stringify(u)), sent.map((u) => JSON.stringify(u)));
  assert.deepEqual(replica.get(s.id)!.attributes, store.get(s.id)!.attributes);
  assert.deepEqual(replicator.stats().outcomes, { none: 1, transport: 1, applied: 3, timeout: 0, failed: 0, "no-secondary": 0 });
  await caller.close();
  await callee.close();
});

test("deadlines fire once, in order, and cancelled ones never", async () => {
  const d = new Deadlines();
  const fired: number[] = [];
  const t0 = performance.now();
  d.add(30, t0, () => fired.push(30));
  const c = d.add(10, t0, () => fired.push(-1));
  d.add(10, t0, () => fired.push(10));
  c.cancel();
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(fired, [10, 30]);
  assert.equal(d.pending, 0);
});

test("deadlines: settled ones are let go as acks come back, not held for the whole bound", async () => {
  const d = new Deadlines();
  let fired = 0;
  const inFlight: { cancel(): void }[] = [];
  // 20,000 updates with a 5 s bound, at most 8 in flight, acknowledged in send order.
  for (let i = 0; i < 20_000; i++) {
    inFlight.push(d.add(5000, performance.now(), () => fired++));
    if (inFlight.length > 8) inFlight.shift()!.cancel();
    assert.ok(d.pending <= 10, `after ${i + 1} adds ${d.pending} deadlines are held`);
  }
  // An early deadline not settled holds the later settled ones behind it until it settles.
  const slow = d.add(5000, performance.now(), () => fired++);
  for (let i = 0; i < 100; i++) d.add(5000, performance.now(), () => fired++).cancel();
  assert.ok(d.pending >= 100);
  slow.cancel();
  for (const e of inFlight.splice(0)) e.cancel();
  d.add(5000, performance.now(), () => fired++).cancel();
  assert.ok(d.pending <= 1, `${d.pending} held after everything settled`);
  // Still a working timer: a short bound fires, once.
  await new Promise<void>((resolve) => d.add(5, performance.now(), () => resolve()));
  assert.equal(fired, 0);
});

test("jsonString and jsonNumber write what JSON.stringify writes", () => {
  fc.assert(
    fc.property(fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.constantFrom("\ud800", "a\"b", "\u0000", "\u2028")), fc.double(), (t, n) => {
      assert.equal(jsonString(t), JSON.stringify(t));
      assert.equal(jsonNumber(n), JSON.stringify(n));
    }),
    { numRuns: 1000 },
  );
});
