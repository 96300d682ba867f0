/**
 * Memory on the data path, under the running runtime.
 *
 *   bun bench/memory.ts [--quick]
 *   deno run -A --v8-flags=--expose-gc bench/memory.ts [--quick]
 *
 * What is measured (JS heap only; the runtimes expose no allocation counter
 * common to both, so allocation is estimated from the heap). Allocation is
 * estimated under Deno only: V8's `heapUsed` rises with every allocation
 * until a scavenge, but JSC's (Bun) stays flat across event-loop turns (it
 * is brought up to date by collections), so under Bun the sum of rises reads
 * 0 and is reported as `null`; retained bytes are measured under both.
 *
 * - **Allocated bytes per replicated update, steady state.** The primary of a
 *   two-server session cluster (TCP on loopback; the secondary is another
 *   process, so only the primary's side is counted) commits N updates of one
 *   session (two attributes, ack mode `transport`, awaited one by one) after
 *   a warm-up. `heapUsed` is read after every update; the sum of its rises
 *   (a fall is a collection) estimates what was allocated. The same loop with
 *   no update (only the await and the reading) is the baseline subtracted.
 * - **Allocated bytes per message** on a bare SDP socket over TCP (1 KiB
 *   messages to a sink), same method.
 * - **Retained bytes per update**: heap after a full collection, after minus
 *   before, divided by N (a leak shows here; steady state should be ~0).
 *
 * @module
 */
import { startSessionCluster } from "../src/cluster/start.ts";
import { FORCE_BCOPY } from "./peer.ts";
import { emit, firstJsonLine, freePort, fullGc, isMain, progress, round, runtime, sleep, spawnRuntime, stopChild } from "./lib.ts";
import { sdpConnect } from "./transport.ts";

const SECRET = "bench-http-cluster-secret-0123456789"; // the one http_server.ts uses
const VALUE = "v".repeat(100);

function heap(): number {
  return process.memoryUsage().heapUsed;
}

/** Sum of rises of heapUsed over `n` awaited calls of `step`. */
async function allocated(n: number, step: (i: number) => Promise<unknown>): Promise<number> {
  let total = 0;
  let last = heap();
  for (let i = 0; i < n; i++) {
    await step(i);
    const h = heap();
    if (h > last) total += h - last;
    last = h;
  }
  return total;
}

async function retained(n: number, step: (i: number) => Promise<unknown>): Promise<number | undefined> {
  if (!fullGc()) return undefined;
  await sleep(50);
  fullGc();
  const before = heap();
  for (let i = 0; i < n; i++) await step(i);
  await sleep(50);
  fullGc();
  return heap() - before;
}

/** Whether `heapUsed` follows allocation between collections (V8 yes, JSC no). */
const HEAP_TRACKS_ALLOCATION = runtime === "deno";
const perOp = (bytes: number, n: number, baseline: number) => (HEAP_TRACKS_ALLOCATION ? round(bytes / n - baseline) : null);

export async function runMemory(quick: boolean) {
  const N = quick ? 2000 : 20000;
  const baseline = (await allocated(N, () => Promise.resolve())) / N;
  progress(`memory: baseline (await + heap reading) ${round(baseline)} B/iteration`);

  // Replicated updates: this process is the primary "a"; the secondary "b" is a child.
  const [pa, pb] = [await freePort(), await freePort()];
  const secondary = spawnRuntime(runtime, "bench/http_server.ts", ["secondary", String(pa), String(pb)]);
  const peers = [
    { id: "a", host: "127.0.0.1", port: pa, transport: "tcp" as const },
    { id: "b", host: "127.0.0.1", port: pb, transport: "tcp" as const },
  ];
  const quiet = { warn: () => {}, error: () => {}, info: () => {}, log: () => {} } as unknown as Console;
  const cluster = await startSessionCluster({ self: "a", peers, secret: SECRET, transport: "tcp", logger: quiet });
  let update: Record<string, unknown>;
  let perMessage: Record<string, unknown>;
  try {
    await firstJsonLine(secondary, "secondary");
    if (!(await cluster.waitForPeers(30_000))) throw new Error("the secondary never connected");
    const record = cluster.create();
    const commit = async (i: number) => {
      const outcome = await cluster.commit(record.id, { n: i, last: VALUE }, [], { ack: "transport" });
      if (outcome !== "transport") throw new Error(`update ${i} ended '${outcome}'`);
    };
    for (let i = 0; i < 2000; i++) await commit(i);
    const bytes = await allocated(N, commit);
    const kept = await retained(N, commit);
    update = {
      updates: N,
      allocatedBytesPerUpdate: perOp(bytes, N, baseline),
      retainedBytesPerUpdate: kept === undefined ? null : round(kept / N),
      ackMode: "transport",
      secondary: `another ${runtime} process, TCP on loopback`,
    };
    progress(`memory: replicated update ≈ ${update.allocatedBytesPerUpdate} B allocated, ${update.retainedBytesPerUpdate} B retained per update`);
  } finally {
    await cluster.close();
    await stopChild(secondary);
  }

  // A bare SDP socket over TCP: 1 KiB messages to a sink, one at a time.
  const peer = spawnRuntime(runtime, "bench/peer.ts", ["tcp", "127.0.0.1", String(1 << 20)]);
  try {
    const ports = await firstJsonLine<{ sink: number }>(peer, "peer.ts tcp");
    const s = await sdpConnect({ transport: "tcp", host: "127.0.0.1", port: ports.sink, zcopyThreshold: FORCE_BCOPY, maxMessageSize: 1 << 20 });
    const msg = new Uint8Array(1024);
    const send = () => s.send(msg);
    for (let i = 0; i < 2000; i++) await send();
    const bytes = await allocated(N, send);
    const kept = await retained(N, send);
    perMessage = {
      messages: N,
      size: 1024,
      allocatedBytesPerMessage: perOp(bytes, N, baseline),
      retainedBytesPerMessage: kept === undefined ? null : round(kept / N),
    };
    progress(`memory: SDP/tcp 1 KiB send ≈ ${perMessage.allocatedBytesPerMessage} B allocated per message`);
    await s.close();
  } finally {
    await stopChild(peer);
  }
  return {
    part: "memory",
    runtime,
    allocationMeasurable: HEAP_TRACKS_ALLOCATION,
    method: "sum of rises of process.memoryUsage().heapUsed read after every awaited operation, minus the same loop without the operation; retained = heap after full GC, after minus before",
    baselineBytesPerIteration: round(baseline),
    replicatedUpdate: update,
    sdpTcpMessage: perMessage,
  };
}

if (isMain(import.meta)) {
  emit(await runMemory(process.argv.includes("--quick")));
  process.exit(0);
}
