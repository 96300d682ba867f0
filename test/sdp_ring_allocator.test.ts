import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { RingAllocator } from "../src/sdp/ring_allocator.ts";

describe("ring allocator", () => {
  test("ring allocator never hands out overlapping or out-of-bounds ranges under random alloc/free", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4096 }),
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 2000 }), fc.nat()), { maxLength: 200 }),
        (size, ops) => {
          const r = new RingAllocator(size);
          const live: Array<[number, number]> = [];
          for (const [alloc, len, pick] of ops) {
            if (alloc || live.length === 0) {
              const off = r.alloc(len);
              if (off < 0) continue;
              assert.ok(off >= 0 && off + len <= size, `range ${off}+${len} outside ${size}`);
              for (const [o, l] of live) assert.ok(off + len <= o || o + l <= off, `overlap ${off}+${len} with ${o}+${l}`);
              live.push([off, len]);
            } else {
              const [o] = live.splice(pick % live.length, 1)[0];
              r.free(o);
            }
          }
          for (const [o] of live.splice(0)) r.free(o);
          assert.equal(r.count, 0);
          assert.equal(r.alloc(size), 0, "everything freed: the whole ring is available again");
        },
      ),
      { numRuns: 300 },
    );
  });

  test("ring allocator refuses zero, oversized and unavailable requests with -1", () => {
    const r = new RingAllocator(100);
    assert.equal(r.alloc(0), -1);
    assert.equal(r.alloc(101), -1);
    assert.equal(r.alloc(60), 0);
    assert.equal(r.alloc(60), -1);
    assert.equal(r.alloc(40), 60);
  });

  test("ring allocator wraps around once the oldest range is freed", () => {
    const r = new RingAllocator(100);
    const a = r.alloc(40);
    const b = r.alloc(40);
    assert.equal(r.alloc(30), -1);
    r.free(a);
    assert.equal(r.alloc(30), 0);
    r.free(b);
    assert.throws(() => r.free(b), /no live allocation there/);
  });
});
