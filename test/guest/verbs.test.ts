/**
 * Verbs on a real device (Soft-RoCE in the test guest: `npm run guest -- …`).
 * On a host without an active RDMA port every test here skips, saying why; inside the
 * guest (RDMA_IN_GUEST=1) a missing device fails instead (test/fixtures/guest_device.ts).
 * The peer runs in a child process under the *other* runtime, so these tests
 * also show Bun and Deno talking over real verbs.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  connect,
  ConnectionClosedError,
  devices,
  type MemoryRegion,
  type RdmaConnection,
  RdmaError,
  WorkCompletionError,
} from "../../src/verbs/mod.ts";
import { rdmaSkip } from "../fixtures/guest_device.ts";
import { exited, firstLine, otherRuntime, spawnFixture } from "../fixtures/runtime.ts";
import { pattern, SOURCE_LEN } from "../fixtures/verbs_peer.ts";

const HOST = process.env.RDMA_TEST_HOST ?? "192.0.2.1";
const skip = await rdmaSkip(test); // fails instead inside the guest (RDMA_IN_GUEST=1)

interface Remote {
  address: bigint;
  rkey: number;
  length: number;
}

async function startPeer() {
  const child = spawnFixture(otherRuntime(), "test/fixtures/verbs_peer.ts", [HOST]);
  const { port } = await firstLine<{ port: number }>(child);
  return { child, port };
}

async function connectTo(port: number, extra: (c: RdmaConnection) => void = () => {}) {
  const conn = await connect({ host: HOST, port, prepare: extra });
  const dv = new DataView(conn.privateData.buffer, conn.privateData.byteOffset, 16);
  const remote: Remote = { address: dv.getBigUint64(0, true), rkey: dv.getUint32(8, true), length: dv.getUint32(12, true) };
  return { conn, remote };
}

async function quit(conn: RdmaConnection, out: MemoryRegion) {
  const n = out.bytes.length >= 4 ? 4 : 0;
  out.bytes.set(new TextEncoder().encode("quit"));
  // The peer exits as soon as it has the message (its exit status, checked by the caller, says
  // it did): its DISCONNECTED may overtake our send's completion, which then reads "did not complete".
  await conn.send(out, 0, n).catch((e) => {
    if (!(e instanceof ConnectionClosedError)) throw e;
  });
}

test("devices lists the rxe device with an active port and its limits", { skip }, async () => {
  const list = await devices();
  const rxe = list.find((d) => d.ports.some((p) => p.state === "active"));
  assert.ok(rxe, `no active device in ${JSON.stringify(list.map((d) => d.name))}`);
  assert.ok(rxe.maxQpWr > 0 && rxe.maxSge > 0 && rxe.maxMrSize > 0n);
  assert.ok(rxe.maxInlineData > 0, "max inline data probed");
  assert.ok([256, 512, 1024, 2048, 4096].includes(rxe.ports[0].activeMtu));
});

test("RDMA READ across processes returns the exact bytes from 1 B to 4 MiB", { skip }, async () => {
  const { child, port } = await startPeer();
  let sink!: MemoryRegion, out!: MemoryRegion;
  const { conn, remote } = await connectTo(port, (c) => {
    sink = c.registerMemory(SOURCE_LEN, { localWrite: true });
    out = c.registerMemory(64, { localWrite: true });
  });
  assert.equal(remote.length, SOURCE_LEN);
  // Sizes around the MTU (1024 on rxe here) and page boundaries, plus odd offsets.
  const cases = [[0, 1], [3, 7], [0, 1023], [0, 1024], [5, 1025], [0, 4095], [1, 4097], [100, 65537], [7, 1048577], [0, SOURCE_LEN]];
  for (const [off, len] of cases) {
    sink.bytes.fill(0, 0, len);
    await conn.read(sink, 0, len, remote.address + BigInt(off), remote.rkey);
    for (let i = 0; i < len; i++) {
      if (sink.bytes[i] !== pattern(off + i)) assert.fail(`READ of ${len} B at ${off}: byte ${i} is ${sink.bytes[i]}, want ${pattern(off + i)}`);
    }
  }
  await quit(conn, out);
  assert.equal(await exited(child), 0);
  await conn.close();
});

test("send and receive carry messages both ways", { skip }, async () => {
  const { child, port } = await startPeer();
  let inbox!: MemoryRegion, out!: MemoryRegion;
  const { conn } = await connectTo(port, (c) => {
    inbox = c.registerMemory(8192, { localWrite: true });
    out = c.registerMemory(4096, { localWrite: true });
  });
  const enc = new TextEncoder();
  for (const text of ["a", "hello over rxe", "x".repeat(3000)]) {
    const echoed = conn.receive(inbox, 0, 8192);
    out.bytes.set(enc.encode(text));
    await conn.send(out, 0, text.length);
    const n = await echoed;
    assert.equal(new TextDecoder().decode(inbox.bytes.subarray(0, n)), `echo:${text}`);
  }
  await quit(conn, out);
  assert.equal(await exited(child), 0);
  await conn.close();
});

test("a wrong rkey rejects that READ with its status named, and the process stays usable", { skip }, async () => {
  const { child, port } = await startPeer();
  let sink!: MemoryRegion;
  const first = await connectTo(port, (c) => (sink = c.registerMemory(4096, { localWrite: true })));
  await assert.rejects(
    first.conn.read(sink, 0, 64, first.remote.address, (first.remote.rkey ^ 0x5a5a) >>> 0),
    (e: unknown) => e instanceof WorkCompletionError && e.status === "IBV_WC_REM_ACCESS_ERR",
  );
  // The queue pair is in the error state now: the connection closes, with the cause.
  const cause = await first.conn.closed;
  assert.ok(cause instanceof ConnectionClosedError && /REM_ACCESS_ERR/.test(cause.message), String(cause));
  assert.ok(sink.closed, "the region was freed with the connection");
  // A new connection in the same process works.
  let sink2!: MemoryRegion, out2!: MemoryRegion;
  const second = await connectTo(port, (c) => {
    sink2 = c.registerMemory(4096, { localWrite: true });
    out2 = c.registerMemory(8, { localWrite: true });
  });
  await second.conn.read(sink2, 0, 100, second.remote.address, second.remote.rkey);
  assert.equal(sink2.bytes[99], pattern(99));
  await quit(second.conn, out2);
  assert.equal(await exited(child), 0);
  await second.conn.close();
});

test("connecting where nobody listens fails with a clear error", { skip }, async () => {
  await assert.rejects(connect({ host: HOST, port: 1, timeoutMs: 20000 }), (e: unknown) => {
    assert.ok(e instanceof RdmaError, String(e));
    assert.match(e.message, /rdma_connect\(192\.0\.2\.1:1\).*(rejected|UNREACHABLE)/);
    return true;
  });
});

test("closing with operations in flight settles every promise and frees registered memory", { skip }, async () => {
  const { child, port } = await startPeer();
  let inbox!: MemoryRegion, sink!: MemoryRegion;
  const { conn, remote } = await connectTo(port, (c) => {
    inbox = c.registerMemory(64 * 1024, { localWrite: true });
    sink = c.registerMemory(SOURCE_LEN, { localWrite: true });
  });
  const receives = Array.from({ length: 16 }, (_, i) => conn.receive(inbox, i * 4096, 4096));
  const reads = Array.from({ length: 4 }, () => conn.read(sink, 0, SOURCE_LEN, remote.address, remote.rkey));
  await conn.close();
  const settled = await Promise.allSettled([...receives, ...reads]);
  assert.equal(settled.length, 20);
  for (const s of settled.slice(0, 16)) {
    assert.equal(s.status, "rejected");
    assert.ok((s as PromiseRejectedResult).reason instanceof ConnectionClosedError);
  }
  // Reads may have finished before the close; none may hang.
  assert.ok(inbox.closed && sink.closed, "regions freed");
  assert.equal(inbox.bytes.length, 0, "view detached before free");
  assert.throws(() => conn.registerMemory(10, { localWrite: true }), ConnectionClosedError);
  child.kill("SIGTERM");
  await exited(child);
});
