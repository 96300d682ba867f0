/**
 * Over real RDMA (Soft-RoCE in the guest): a message whose send completed at
 * the sender (the transport acknowledged it) is never lost when the
 * connection ends, and a message handed out during the end is never read as
 * a view of freed memory.
 *
 * The receiver blocks its own event loop while the peer (a child process in
 * the other runtime) sends N messages, waits for every send completion and
 * then dies. So when the receiver runs again, all N messages sit unpolled in
 * its completion queue and the connection manager has DISCONNECTED queued:
 * the progress pass takes the CM event first, so the messages come out of
 * the connection's final poll in `close()`, to a reader already waiting,
 * right before the receive region is deregistered. In the second test a
 * local `close()` is called before any of that is polled.
 *
 * On a host without an active RDMA port the tests skip; inside the guest
 * (RDMA_IN_GUEST=1) a missing device fails them.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import { listen, type MessageSocket } from "../../src/sdp/mod.ts";
import { hasActiveDevice, registeredBytes } from "../../src/verbs/mod.ts";
import { closeMessageSize } from "../fixtures/sdp_close_peer.ts";
import { pattern } from "../fixtures/sdp_engine_sim.ts";
import { exited, firstLine, otherRuntime, spawnFixture } from "../fixtures/runtime.ts";

const HOST = process.env.RDMA_TEST_HOST ?? "192.0.2.1";
const IN_GUEST = process.env.RDMA_IN_GUEST === "1";
const ACTIVE = await hasActiveDevice();
const skip = ACTIVE || IN_GUEST ? false : "no active RDMA device (run inside the guest: npm run guest -- …)";
const N = 30;

function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return false;
  return true;
}

/** Blocks this thread (and so the event loop: nothing is polled) until `file` exists, then `extraMs` more. */
function blockUntil(file: string, limitMs: number, extraMs: number): boolean {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const end = Date.now() + limitMs;
  while (!existsSync(file)) {
    if (Date.now() > end) return false;
    Atomics.wait(cell, 0, 0, 20);
  }
  Atomics.wait(cell, 0, 0, extraMs);
  return true;
}

async function scenario(mode: "kill" | "exit", localClose: boolean): Promise<void> {
  assert.ok(ACTIVE, "no ACTIVE RDMA port inside the guest: rxe0 is not up, these tests cannot run");
  const before = registeredBytes();
  const dir = mkdtempSync(join(tmpdir(), "sdp-close-"));
  const marker = join(dir, "completed.json");
  const server = await listen({ transport: "rdma", host: HOST, port: 0 });
  try {
    const accepted = (async () => {
      for await (const s of server) return s as MessageSocket;
    })();
    const child = spawnFixture(otherRuntime(), "test/fixtures/sdp_close_peer.ts", [HOST, String(server.address.port), String(N), marker, mode]);
    const hello = firstLine<{ runtime: string }>(child);
    const s = (await accepted)!;
    await hello;
    // A reader waits before anything arrives; it reads each message's bytes when it gets it.
    const got: Uint8Array[] = [];
    const reading = (async () => {
      for await (const m of s) {
        got.push(m.bytes.slice());
        m.release();
      }
    })();
    await new Promise((r) => setTimeout(r, 50)); // the reader is parked in next()
    writeFileSync(`${marker}.go`, "go"); // synchronous: a pipe write would wait for the event loop
    // From here on nothing runs in this process until the peer has all its returns and is gone.
    assert.ok(blockUntil(marker, 120_000, 1500), "the peer did not report its send completions within 120 s");
    if (localClose) void s.close(); // before the event loop polls anything
    await reading;
    const { completed } = JSON.parse(readFileSync(marker, "utf8")) as { completed: number };
    assert.equal(completed, N);
    assert.equal(got.length, completed, `the peer had ${completed} send completions; ${got.length} messages were read`);
    for (let i = 0; i < N; i++) {
      const want = pattern(i, closeMessageSize(i));
      assert.ok(same(got[i], want), `message ${i} (${want.length} B) read as ${got[i].length} B with other bytes`);
    }
    const cause = await s.closed;
    if (!localClose) assert.ok(cause instanceof Error, "the socket closed with the peer's disconnect as its cause");
    await exited(child);
    assert.equal(registeredBytes() - before, 0, "the connection's regions are deregistered");
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test("sdp over rdma: the peer is SIGKILLed after its sends completed; every message comes out of the final poll intact", { skip }, async () => {
  await scenario("kill", false);
});

test("sdp over rdma: a local close races the final poll of a peer that exited; every completed message is read intact", { skip }, async () => {
  await scenario("exit", true);
});
