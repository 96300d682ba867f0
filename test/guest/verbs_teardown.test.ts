/**
 * Teardown on a real device (Soft-RoCE in the guest): an rdma_cm step whose
 * call fails at once leaves no timer behind (a timer left armed rejects with
 * nobody listening once it fires: fatal in Bun and Deno). Each runtime runs
 * the fixture in its own process, past the step timeout.
 *
 * On a host without an active RDMA port the test skips; inside the guest
 * (RDMA_IN_GUEST=1) a missing device fails it.
 */
import assert from "node:assert/strict";
import process from "node:process";
import { test } from "node:test";
import { hasActiveDevice } from "../../src/verbs/mod.ts";
import { exited, firstLine, type Runtime, spawnFixture } from "../fixtures/runtime.ts";

const IN_GUEST = process.env.RDMA_IN_GUEST === "1";
const ACTIVE = await hasActiveDevice();
const skip = ACTIVE || IN_GUEST ? false : "no active RDMA device (run inside the guest: npm run guest -- …)";

for (const runtime of ["bun", "deno"] as Runtime[]) {
  test(`verbs over rdma (${runtime}): connecting to a name that does not resolve fails at once and leaves no timer to reject later`, { skip }, async () => {
    assert.ok(ACTIVE, "no ACTIVE RDMA port inside the guest: rxe0 is not up, this test cannot run");
    const child = spawnFixture(runtime, "test/fixtures/verbs_resolve_fail.ts", ["no-such-host.invalid", "300"]);
    const out = await firstLine<{ runtime: string; error: string }>(child);
    assert.equal(out.runtime, runtime);
    assert.match(out.error, /rdma_resolve_addr\(no-such-host\.invalid:7471\) failed: EADDRNOTAVAIL/);
    assert.equal(await exited(child), 0, "the process survived past the step timeout");
  });
}
