/**
 * Per-update cost of replication, in process (three SessionClusters over the
 * loopback transport, so it measures our JavaScript, not a network): µs per
 * committed update of a 10-attribute session, per ack mode, beside the same
 * commit with no replication (the floor). Medians of `--rounds` batches of
 * `--n` updates, side by side in one run.
 *
 *   bun bench/replication.ts [--n 2000] [--rounds 5] [--json out.json]
 *   deno run -A bench/replication.ts
 *
 * @module
 */
import { parseArgs } from "node:util";
import { writeFileSync } from "node:fs";
import process from "node:process";
import { SessionCluster } from "../src/cluster/session_cluster.ts";
import type { PeerConfig } from "../src/cluster/peers.ts";
import { connect, listen } from "../src/sdp/mod.ts";
import type { AckMode } from "../src/rmi/types.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { n: { type: "string", default: "2000" }, rounds: { type: "string", default: "5" }, json: { type: "string" } },
});
const N = Number(values.n);
const ROUNDS = Number(values.rounds);

const ids = ["a", "b", "c"];
const listeners = new Map(await Promise.all(ids.map(async (id) => [id, await listen({ transport: "loopback", host: `bench-${id}`, port: 0 })] as const)));
const peers: PeerConfig[] = ids.map((id) => ({ id, host: `bench-${id}`, port: listeners.get(id)!.address.port, transport: "loopback" }));
const nodes = ids.map((id) =>
  new SessionCluster({
    self: id,
    peers,
    secret: "bench-secret-0123456789abcdef",
    listener: listeners.get(id)!,
    dial: (p) => connect({ transport: "loopback", host: p.host, port: p.port }),
    heartbeatIntervalMs: 200,
    heartbeatTimeoutMs: 5000,
    logger: { warn: () => {} },
  })
);
for (const n of nodes) if (!(await n.waitForPeers(10_000))) throw new Error("peers did not connect");
const a = nodes[0];

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

async function batch(ack: AckMode | "floor"): Promise<number> {
  const s = a.create();
  const attrs: Record<string, unknown> = {};
  for (let i = 0; i < 10; i++) attrs[`k${i}`] = { item: `sku-${i}`, qty: i, note: "x".repeat(40) };
  if (ack === "floor") a.store.commit(s.id, attrs, []);
  else await a.commit(s.id, attrs, [], { ack: "applied" });
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const change = { [`k${i % 10}`]: { item: `sku-${i}`, qty: i, note: "y".repeat(40) } };
    if (ack === "floor") a.store.commit(s.id, change, []);
    else await a.commit(s.id, change, [], { ack });
  }
  return ((performance.now() - t0) * 1000) / N;
}

const modes: (AckMode | "floor")[] = ["floor", "none", "transport", "applied"];
const results: Record<string, number[]> = Object.fromEntries(modes.map((m) => [m, []]));
for (let r = 0; r < ROUNDS; r++) for (const m of modes) results[m].push(await batch(m));
const runtime = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? "bun" : "deno";
console.log(`replication per update, ${runtime}, n=${N} x ${ROUNDS} rounds (median µs)`);
const floor = median(results.floor);
for (const m of modes) {
  const med = median(results[m]);
  console.log(`${m.padEnd(10)} ${med.toFixed(2).padStart(9)} µs   floor + ${(med - floor).toFixed(2)} µs`);
}
if (values.json) {
  writeFileSync(values.json, JSON.stringify({ runtime, n: N, rounds: ROUNDS, medians: Object.fromEntries(modes.map((m) => [m, median(results[m])])), samples: results }, null, 2));
}
await Promise.all(nodes.map((n) => n.close()));
process.exit(0);
