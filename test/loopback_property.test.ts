import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { loopbackPair } from "../src/sdp/links/loopback.ts";
import { pattern } from "./fixtures/sdp_engine_sim.ts";

const RUNS = Number(process.env.SDP_PROPERTY_RUNS ?? 150) / 5;

describe("loopback property", () => {
  test("loopback property: sockets deliver every message intact and in order, with send and reserve mixed, under reordered completions and late releases", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 0x7fffffff }),
        fc.array(fc.tuple(fc.integer({ min: 1, max: 40000 }), fc.boolean(), fc.constantFrom<0 | 1>(0, 1)), {
          minLength: 1,
          maxLength: 40,
        }),
        fc.integer({ min: 4, max: 12 }),
        fc.constantFrom(512, 4096, 20000),
        async (seed, plan, count, threshold) => {
          const [a, b] = await loopbackPair({
            reorderSeed: seed,
            recvBufferSize: 1024,
            recvBufferCount: count,
            sendSlots: 4,
            maxMessageSize: 65536,
            zcopyThreshold: threshold,
            // Late releases can keep the sink full; the cancel path (SrcAvailCancel → SendSM → bcopy)
            // is the way out, kept short here.
            cancelTimeoutMs: 30,
          });
          // Hold a few messages at a time (late releases), within the ring's limit.
          const hold = Math.max(1, Math.min(3, count - 3));
          const read = async (s: typeof a, n: number) => {
            const got: Uint8Array[] = [];
            if (n === 0) return got;
            const held = [];
            for await (const m of s) {
              got.push(m.copy());
              held.push(m);
              if (held.length >= hold || got.length === n) for (const h of held.splice(0)) h.release(); // late releases
              if (got.length === n) break;
            }
            return got;
          };
          const sent: [Uint8Array[], Uint8Array[]] = [[], []];
          for (let i = 0; i < plan.length; i++) sent[plan[i][2]].push(pattern(i, plan[i][0]));
          // Readers run while the senders send, as an application would.
          const reading = Promise.all([read(b, sent[0].length), read(a, sent[1].length)]);
          const sends: Promise<void>[] = [];
          for (let i = 0; i < plan.length; i++) {
            const [size, viaReserve, side] = plan[i];
            const s = side === 0 ? a : b;
            const m = pattern(i, size);
            if (viaReserve) {
              // Serialize straight into the reservation; the commit keeps send order.
              const r = await s.reserve(size + 7);
              r.bytes.set(m);
              sends.push(r.commit(size));
            } else sends.push(s.send(m));
          }
          const [gotB, gotA] = await reading;
          await Promise.all(sends);
          assert.deepEqual(gotB, sent[0]);
          assert.deepEqual(gotA, sent[1]);
          await a.close();
          assert.equal(await b.closed, undefined);
        },
      ),
      { numRuns: RUNS },
    );
  });
});
