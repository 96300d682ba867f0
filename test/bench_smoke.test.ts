import { test } from "node:test";
import assert from "node:assert/strict";
import { batched } from "../bench/lib.ts";
import { runFfi } from "../bench/ffi.ts";
import { FrameReader } from "../bench/peer.ts";
import { render } from "../bench/report.ts";
import { markdownTable, ratio } from "../bench/table.ts";

test("bench batched measures many operations per sample and reports per-operation time", async () => {
  let calls = 0;
  const r = await batched("noop loop", 1000, () => {
    for (let i = 0; i < 1000; i++) calls++;
  }, { timeMs: 20, warmupMs: 5, iterations: 4 });
  assert.equal(r.opsPerSample, 1000);
  assert.ok(r.samples >= 4);
  assert.ok(calls >= 4000);
  assert.ok(r.nsPerOp.p50 > 0 && Number.isFinite(r.nsPerOp.p50));
});

test("bench ffi runs its host cases on this runtime", async () => {
  const r = await runFfi({ quick: true });
  assert.equal(r.part, "ffi");
  assert.ok(r.cases.length >= 5);
  for (const c of r.cases) assert.ok(c.nsPerOp.p50 > 0, c.name);
});

test("bench plain echo framing splits and joins frames across chunks", () => {
  const frames: number[] = [];
  const reader = new FrameReader((f) => frames.push(f.length - 4));
  const frame = (n: number) => {
    const f = new Uint8Array(4 + n);
    new DataView(f.buffer).setUint32(0, n, true);
    return f;
  };
  const all = new Uint8Array([...frame(3), ...frame(0), ...frame(70000)]);
  for (let i = 0; i < all.length; i += 1000) reader.push(all.subarray(i, Math.min(all.length, i + 1000)));
  assert.deepEqual(frames, [3, 0, 70000]);
});

test("bench report renders tables and an SVG chart with or without results", () => {
  const empty = render(undefined, undefined);
  assert.match(empty.svg, /^<svg[^>]*>[\s\S]*<\/svg>\n$/);
  assert.match(empty.text, /Targets of issue 5/);
  assert.equal(ratio(3, 2), "1.50×");
  assert.equal(ratio(1, 0), "–");
  assert.equal(markdownTable(["a", "b"], [["x", 1]]), "| a | b |\n| --- | ---: |\n| x | 1 |");
});
