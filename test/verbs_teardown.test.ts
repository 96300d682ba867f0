/**
 * Teardown paths of the verbs layer that need no device: a fake shim binding
 * (memory regions) and a fake progress (rdma_cm steps). The same paths on a
 * real device are in test/guest/verbs_teardown.test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Binding, Ptr } from "../ffi/mod.ts";
import { cmStep, type CmStepProgress } from "../src/verbs/connection.ts";
import { RdmaError } from "../src/verbs/errors.ts";
import { MemoryRegion, registeredBytes } from "../src/verbs/memory.ts";
import type { CmEvent } from "../src/verbs/progress.ts";

/** A binding with just what `MemoryRegion` calls; `destroyResults` are shim_mr_destroy's return codes in turn. */
function fakeShim(destroyResults: number[]) {
  const calls = { destroy: 0 };
  const fn = {
    shim_mr_create: (_conn: unknown, _len: number, _access: number, out: BigUint64Array) => {
      out[0] = 0x1000n;
      return 0;
    },
    shim_mr_info: (_mr: unknown, info: Uint8Array) => {
      const dv = new DataView(info.buffer);
      dv.setBigUint64(0, 0x7000_0000n, true);
      dv.setUint32(16, 11, true);
      dv.setUint32(20, 22, true);
      return 0;
    },
    shim_mr_destroy: () => {
      calls.destroy++;
      return destroyResults.shift() ?? 0;
    },
  };
  const shim = {
    runtime: "bun",
    fn,
    pointer: (a: bigint) => a as unknown as Ptr,
    view: (_a: bigint, length: number) => new ArrayBuffer(length),
    close: () => {},
  } as unknown as Binding;
  return { shim, calls };
}

test("a memory region whose deregistration fails stays registered, readable, counted and known; a retry frees it", () => {
  const { shim, calls } = fakeShim([-16, 0]); // EBUSY, then success
  const before = registeredBytes();
  let forgotten = 0;
  const mr = new MemoryRegion(shim, 0 as unknown as Ptr, 4096, { localWrite: true }, () => forgotten++);
  mr.bytes.set([1, 2, 3]);
  assert.equal(registeredBytes() - before, 4096);
  assert.throws(() => mr.close(), (e: unknown) => e instanceof RdmaError && /ibv_dereg_mr/.test(e.message) && e.errno === 16);
  assert.equal(mr.closed, false, "the region is still open");
  assert.deepEqual([...mr.bytes.subarray(0, 3)], [1, 2, 3], "its bytes are still readable (not detached)");
  assert.equal(registeredBytes() - before, 4096, "still counted as registered");
  assert.equal(forgotten, 0, "its connection still knows it");
  mr.close();
  assert.equal(mr.closed, true);
  assert.equal(mr.bytes.length, 0, "the view is detached once the memory is freed");
  assert.equal(registeredBytes() - before, 0);
  assert.equal(forgotten, 1);
  mr.close(); // idempotent
  assert.equal(calls.destroy, 2);
});

/** A progress that records CM handlers (no device). */
function fakeProgress() {
  const handlers = new Map<bigint, (ev: CmEvent) => void>();
  const p: CmStepProgress & { handlers: typeof handlers } = {
    handlers,
    onCmEvent: (id, h) => void handlers.set(id, h),
    offCmEvent: (id) => void handlers.delete(id),
    kick: () => {},
  };
  return p;
}

test("an rdma_cm step whose call fails at once rejects with that error and leaves no timer behind", async () => {
  const progress = fakeProgress();
  const boom = new RdmaError("rdma_resolve_addr(no.such.host.invalid:7471)", 99, "name does not resolve");
  const timeoutMs = 40;
  await assert.rejects(cmStep(progress, { address: 7n }, "rdma_resolve_addr", timeoutMs, () => {
    throw boom;
  }), (e: unknown) => e === boom);
  assert.equal(progress.handlers.size, 0, "the CM handler is gone");
  // Past the step's timer: a timer left armed would reject now, with nobody listening
  // (an unhandled rejection, which fails this test file under both runtimes).
  await new Promise((r) => setTimeout(r, timeoutMs * 4));
});

test("an rdma_cm step resolves with its event and clears its timer; one with no answer times out naming the step", async () => {
  const progress = fakeProgress();
  const ev: CmEvent = { type: 1, status: 0, id: 9n, listenId: 0n, privateData: new Uint8Array(0) };
  const step = cmStep(progress, { address: 9n }, "rdma_resolve_route", 40, () => {
    queueMicrotask(() => progress.handlers.get(9n)!(ev));
  });
  assert.equal(await step, ev);
  assert.equal(progress.handlers.size, 0);
  await new Promise((r) => setTimeout(r, 160)); // its timer would have fired by now
  const t0 = performance.now();
  await assert.rejects(cmStep(progress, { address: 10n }, "rdma_connect", 30, () => {}), /rdma_connect.*no answer within 30 ms/);
  assert.ok(performance.now() - t0 >= 25);
  assert.equal(progress.handlers.size, 0);
});
