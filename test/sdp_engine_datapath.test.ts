import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { MAX_READ_TOKEN } from "../src/sdp/engine.ts";
import { pattern, Sim } from "./fixtures/sdp_engine_sim.ts";

describe("engine data path", () => {
  test("engine READ tokens wrap from 2^29-1 back to 1 and every zcopy message still arrives", () => {
    const sim = new Sim({ engine: { firstReadToken: MAX_READ_TOKEN - 2 } });
    const tokens: number[] = [];
    const orig = sim.b.engine.takeActions.bind(sim.b.engine);
    sim.b.engine.takeActions = () => {
      const acts = orig();
      for (const a of acts) if (a.type === "read") tokens.push(a.token);
      return acts;
    };
    sim.run();
    const msgs = Array.from({ length: 6 }, (_, i) => pattern(i, 600)); // above the 512 B threshold
    for (const m of msgs) sim.send(0, m);
    sim.run();
    assert.deepEqual(tokens, [MAX_READ_TOKEN - 2, MAX_READ_TOKEN - 1, MAX_READ_TOKEN, 1, 2, 3]);
    assert.deepEqual(sim.b.delivered, msgs);
    assert.equal(sim.a.engine.stats.zcopySends, 6);
    assert.equal(sim.a.resolved.length, 6);
  });

  test("engine rejects a first READ token outside 1..2^29-1", () => {
    assert.throws(() => new Sim({ engine: { firstReadToken: MAX_READ_TOKEN + 1 } }), /firstReadToken/);
    assert.throws(() => new Sim({ engine: { firstReadToken: 0 } }), /firstReadToken/);
  });

  test("engine reuses a released reassembly buffer for the next fragmented message, and not one still held", () => {
    const sim = new Sim({ zcopy: false, lazyRelease: true });
    sim.run();
    const views: Uint8Array[] = [];
    const orig = sim.b.engine.takeActions.bind(sim.b.engine);
    sim.b.engine.takeActions = () => {
      const acts = orig();
      for (const a of acts) if (a.type === "deliver") views.push(a.bytes);
      return acts;
    };
    const runHolding = () => {
      for (let n = 0; n < 10000; n++) {
        const held = sim.b.held.splice(0);
        const ok = sim.step();
        sim.b.held.push(...held);
        if (!ok) return;
      }
    };
    sim.send(0, pattern(1, 1000)); // 256-byte buffers: fragmented
    runHolding();
    sim.send(0, pattern(2, 900));
    runHolding();
    assert.equal(views.length, 2);
    assert.notEqual(views[1].buffer, views[0].buffer, "a held message's buffer must not be reused");
    sim.run(); // releases both
    assert.equal(sim.b.held.length, 0);
    sim.send(0, pattern(3, 800));
    sim.run();
    assert.equal(views.length, 3);
    assert.equal(views[2].buffer, views[0].buffer, "the largest released buffer is reused");
    assert.equal(views[2].length, 800);
    assert.deepEqual(sim.b.delivered, [pattern(1, 1000), pattern(2, 900), pattern(3, 800)]);
  });
});
