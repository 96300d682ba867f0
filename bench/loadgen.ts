/**
 * A small closed-loop HTTP load generator (its own process, so it does not
 * share an event loop with the server it measures).
 *
 *   bun bench/loadgen.ts <url> <concurrency> <durationMs> <warmupMs>
 *
 * `concurrency` virtual users each loop: request, read the whole body, keep
 * the session cookie the server set (so every user has one session and every
 * request after its first updates it). Latency is measured per request from
 * just before `fetch` to the end of the body. Requests that complete during
 * the warm-up are not counted. Prints one `BENCH_JSON` line: p50, p99, mean
 * (ms), requests/s, and counts of statuses and `x-replication` values.
 *
 * @module
 */
import { emit, summarize } from "./lib.ts";

const [url, conc = "8", dur = "4000", warm = "1000"] = process.argv.slice(2);
const concurrency = Number(conc), durationMs = Number(dur), warmupMs = Number(warm);

const latencies: number[] = [];
const statuses: Record<string, number> = {};
const replication: Record<string, number> = {};
let errors = 0;
const start = performance.now();
const measureFrom = start + warmupMs;
const end = measureFrom + durationMs;

async function user(): Promise<void> {
  let cookie = "";
  while (performance.now() < end) {
    const t0 = performance.now();
    try {
      const res = await fetch(url, { headers: cookie ? { cookie } : {} });
      await res.text();
      const t1 = performance.now();
      const set = res.headers.get("set-cookie");
      if (set) cookie = set.split(";")[0];
      if (t0 >= measureFrom && t1 <= end) {
        latencies.push(t1 - t0);
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        const r = res.headers.get("x-replication") ?? "absent";
        replication[r] = (replication[r] ?? 0) + 1;
      }
    } catch {
      errors++;
    }
  }
}

await Promise.all(Array.from({ length: concurrency }, user));
const s = summarize(latencies);
emit({
  url,
  concurrency,
  durationMs,
  requests: s.n,
  rps: Math.round(s.n / (durationMs / 1000)),
  p50Ms: s.p50,
  p99Ms: s.p99,
  meanMs: s.mean,
  errors,
  statuses,
  replication,
  loadgen: "Bun" in globalThis ? "bun" : "deno",
});
process.exit(0);
