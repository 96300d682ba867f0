import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { pattern, Sim } from "./fixtures/sdp_engine_sim.ts";

const RUNS = Number(process.env.SDP_PROPERTY_RUNS ?? 150);

interface Plan {
  seed: number;
  zcopy: boolean;
  tcp: boolean;
  batchAcks: boolean;
  count: number;
  /** Receive buffer size and send slots of each side (they may differ). */
  countB: number;
  bufA: number;
  bufB: number;
  slotsA: number;
  slotsB: number;
  threshold: number;
  failReadProb: number;
  /** [side, size, steps to run before this send] */
  sends: Array<[0 | 1, number, number]>;
}

const plan: fc.Arbitrary<Plan> = fc.record({
  seed: fc.integer({ min: 1, max: 0x7fffffff }),
  zcopy: fc.boolean(),
  tcp: fc.boolean(),
  batchAcks: fc.boolean(),
  count: fc.integer({ min: 4, max: 10 }),
  countB: fc.integer({ min: 4, max: 10 }),
  bufA: fc.constantFrom(64, 100, 256),
  bufB: fc.constantFrom(64, 100, 256),
  slotsA: fc.integer({ min: 2, max: 9 }),
  slotsB: fc.integer({ min: 2, max: 9 }),
  threshold: fc.constantFrom(64, 200, 512, 5000),
  failReadProb: fc.constantFrom(0, 0, 0.3, 1),
  sends: fc.array(
    fc.tuple(
      fc.constantFrom<0 | 1>(0, 1),
      fc.oneof(fc.integer({ min: 1, max: 240 }), fc.integer({ min: 241, max: 4096 })),
      fc.integer({ min: 0, max: 6 }),
    ),
    { minLength: 1, maxLength: 60, size: "medium" },
  ),
});

function build(p: Plan, extra: { dropReadProb?: number; timeJumps?: boolean } = {}): Sim {
  return new Sim({
    seed: p.seed,
    zcopy: p.zcopy && !p.tcp,
    tcp: p.tcp,
    batchAcks: p.batchAcks,
    failReadProb: p.failReadProb,
    dropReadProb: extra.dropReadProb,
    timeJumps: extra.timeJumps,
    engine: { recvBufferCount: p.count, zcopyThreshold: p.threshold },
    a: { recvBufferSize: p.bufA, sendSlotSize: p.bufA, sendSlots: p.slotsA },
    b: { recvBufferSize: p.bufB, sendSlotSize: p.bufB, sendSlots: p.slotsB, recvBufferCount: p.countB },
  });
}

/** Sends the plan's messages interleaved with random steps; returns what each side sent, in order. */
function drive(sim: Sim, p: Plan): [Uint8Array[], Uint8Array[]] {
  const sent: [Uint8Array[], Uint8Array[]] = [[], []];
  for (let i = 0; i < p.sends.length; i++) {
    const [side, size, steps] = p.sends[i];
    for (let k = 0; k < steps; k++) sim.step();
    const m = pattern(i, size);
    sent[side].push(m);
    sim.send(side, m);
  }
  return sent;
}

function assertPrefix(delivered: Uint8Array[], sent: Uint8Array[], what: string): void {
  assert.ok(delivered.length <= sent.length, `${what}: more delivered (${delivered.length}) than sent (${sent.length})`);
  for (let i = 0; i < delivered.length; i++) {
    assert.deepEqual(delivered[i], sent[i], `${what}: message ${i} lost, duplicated, reordered or corrupted`);
  }
}

describe("engine property", () => {
  test("engine property: random interleavings of completions, credit updates and READ failures never lose, duplicate, reorder or corrupt a message, and never deadlock", () => {
    fc.assert(
      fc.property(plan, (p) => {
        const sim = build(p);
        const sent = drive(sim, p);
        sim.run();
        assert.equal(sim.a.closed, undefined, `side a closed: ${sim.a.closed?.error?.message}`);
        assert.equal(sim.b.closed, undefined, `side b closed: ${sim.b.closed?.error?.message}`);
        assert.deepEqual(sim.b.delivered.length, sent[0].length, "a→b: not everything arrived (deadlock?)");
        assert.deepEqual(sim.a.delivered.length, sent[1].length, "b→a: not everything arrived (deadlock?)");
        assertPrefix(sim.b.delivered, sent[0], "a→b");
        assertPrefix(sim.a.delivered, sent[1], "b→a");
        assert.equal(sim.a.resolved.length, sent[0].length, "a: every send resolves");
        assert.equal(sim.b.resolved.length, sent[1].length, "b: every send resolves");
        assert.deepEqual(sim.a.resolved, [...sim.a.resolved].sort((x, y) => x - y), "a: sends resolve in order");
        assert.deepEqual(sim.b.resolved, [...sim.b.resolved].sort((x, y) => x - y), "b: sends resolve in order");
        assert.equal(sim.a.engine.pendingSends + sim.b.engine.pendingSends, 0);
        // Idle: no timer is needed once everything settled.
        assert.equal(sim.a.engine.nextDeadline(), Infinity);
        assert.equal(sim.b.engine.nextDeadline(), Infinity);
        // Every receive buffer is back and no credit is lost for good.
        assert.equal(sim.a.engine.posted, sim.a.buffers.length);
        assert.equal(sim.b.engine.posted, sim.b.buffers.length);
      }),
      { numRuns: RUNS },
    );
  });

  test("engine property: READ completions that are lost end in an error, and what arrived is an intact prefix; every send settles", () => {
    fc.assert(
      fc.property(plan, fc.constantFrom(0.2, 0.5, 1), (p, drop) => {
        const sim = build({ ...p, zcopy: true, tcp: false }, { dropReadProb: drop });
        const sent = drive(sim, p);
        sim.run();
        assertPrefix(sim.b.delivered, sent[0], "a→b");
        assertPrefix(sim.a.delivered, sent[1], "b→a");
        for (const [side, s] of [[0, sim.a], [1, sim.b]] as const) {
          assert.equal(s.resolved.length + s.rejected.size, sent[side].length, `side ${side}: every send settles`);
          // A resolved send was delivered (the return's promise).
          const peerDelivered = side === 0 ? sim.b.delivered.length : sim.a.delivered.length;
          assert.ok(s.resolved.length <= peerDelivered, `side ${side}: resolved ${s.resolved.length} > delivered ${peerDelivered}`);
        }
        if (sim.a.closed?.error) assert.match(sim.a.closed.error.message, /stuck|disconnected/);
      }),
      { numRuns: Math.ceil(RUNS / 2) },
    );
  });

  test("engine property: timers that fire early (slow peers) cancel transfers without losing, duplicating, reordering or corrupting a message", () => {
    let cancels = 0;
    fc.assert(
      fc.property(plan, (p) => {
        const sim = build({ ...p, zcopy: true, tcp: false }, { timeJumps: true });
        const sent = drive(sim, p);
        sim.run();
        cancels += sim.a.engine.stats.cancels + sim.b.engine.stats.cancels;
        assertPrefix(sim.b.delivered, sent[0], "a→b");
        assertPrefix(sim.a.delivered, sent[1], "b→a");
        if (!sim.a.closed && !sim.b.closed) {
          assert.equal(sim.b.delivered.length, sent[0].length, "a→b: not everything arrived (deadlock?)");
          assert.equal(sim.a.delivered.length, sent[1].length, "b→a: not everything arrived (deadlock?)");
        } else {
          // Only a transfer stuck past its second timeout may end the connection.
          const why = [sim.a.closed?.error?.message, sim.b.closed?.error?.message].join(" | ");
          assert.match(why, /stuck|disconnected|handshake timed out/);
        }
        for (const [side, s] of [[0, sim.a], [1, sim.b]] as const) {
          assert.equal(s.resolved.length + s.rejected.size, sent[side].length, `side ${side}: every send settles`);
          const peerDelivered = side === 0 ? sim.b.delivered.length : sim.a.delivered.length;
          assert.ok(s.resolved.length <= peerDelivered, `side ${side}: resolved ${s.resolved.length} > delivered ${peerDelivered}`);
        }
      }),
      { numRuns: RUNS },
    );
    assert.ok(cancels > 0, "the cancel path was exercised");
  });

  test("engine property: closing at a random moment settles every send and leaves an intact prefix on both sides", () => {
    fc.assert(
      fc.property(plan, fc.nat({ max: 200 }), fc.constantFrom<0 | 1>(0, 1), (p, at, closer) => {
        const sim = build(p);
        const sent = drive(sim, p);
        for (let k = 0; k < at; k++) sim.step();
        sim.sides[closer].engine.close(sim.now);
        sim.flush();
        sim.run();
        assert.ok(sim.a.closed && sim.b.closed, "both sides end closed");
        assertPrefix(sim.b.delivered, sent[0], "a→b");
        assertPrefix(sim.a.delivered, sent[1], "b→a");
        assert.equal(sim.a.resolved.length + sim.a.rejected.size, sent[0].length);
        assert.equal(sim.b.resolved.length + sim.b.rejected.size, sent[1].length);
      }),
      { numRuns: RUNS },
    );
  });
});
