/**
 * Choosing the default zcopy threshold from measured bcopy and zcopy figures.
 *
 * The crossover of a metric is the smallest measured size from which zcopy is
 * at least as good as bcopy at that size and at every larger one. The
 * proposal is the crossover of throughput (16 messages in flight), never
 * below 4 KiB; the crossover of send→return latency is recorded beside it.
 * Throughput, not single-message latency, decides because in the guest the
 * latency of one message is dominated by a per-hop software cost (zcopy has
 * three hops, bcopy one) that varies from run to run (bench/README.md: the
 * latency crossover moved between 1 and 4 MiB over three runs, the throughput
 * crossover stayed at 256 KiB).
 *
 * @module
 */
import type { LatencyPoint, ThroughputPoint } from "./transport.ts";

export const THRESHOLD_RULE =
  "crossover = smallest measured size from which zcopy is at least as good as bcopy at that size and every larger one; proposal = the throughput crossover (16 in flight), at least 4 KiB; the send→return latency crossover is recorded beside it";

function crossover<T extends { size: number; mode: string }>(rows: T[], better: (z: T, b: T) => boolean): number | undefined {
  const sizes = [...new Set(rows.map((r) => r.size))].sort((a, b) => a - b);
  let from: number | undefined;
  for (let i = sizes.length - 1; i >= 0; i--) {
    const z = rows.find((r) => r.size === sizes[i] && r.mode === "zcopy");
    const b = rows.find((r) => r.size === sizes[i] && r.mode === "bcopy");
    if (z && b && better(z, b)) from = sizes[i];
    else break;
  }
  return from;
}

export function chooseThreshold(lat: LatencyPoint[], bw: ThroughputPoint[]) {
  const latencyFrom = crossover(lat, (z, b) => z.sendReturnUs! <= b.sendReturnUs!);
  const throughputFrom = crossover(bw, (z, b) => z.MBps >= b.MBps);
  return {
    latencyCrossover: latencyFrom ?? null,
    throughputCrossover: throughputFrom ?? null,
    proposed: throughputFrom === undefined ? null : Math.max(4096, throughputFrom),
    rule: THRESHOLD_RULE,
    evidence: [...new Set(lat.map((r) => r.size))].sort((a, b) => a - b).map((size) => ({
      size,
      bcopyUs: lat.find((r) => r.size === size && r.mode === "bcopy")?.sendReturnUs,
      zcopyUs: lat.find((r) => r.size === size && r.mode === "zcopy")?.sendReturnUs,
      bcopyMBps: bw.find((r) => r.size === size && r.mode === "bcopy")?.MBps,
      zcopyMBps: bw.find((r) => r.size === size && r.mode === "zcopy")?.MBps,
    })),
  };
}
