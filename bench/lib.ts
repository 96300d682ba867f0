/**
 * What every benchmark module shares: the runtime it runs on, progress lines,
 * batched tinybench measurements, percentiles, and the protocol between
 * `run.ts` and the child processes it starts.
 *
 * Child protocol: a benchmark module run as a script writes progress to
 * stderr and exactly one line `BENCH_JSON <json>` to stdout; `runChild`
 * spawns it under Bun or Deno, forwards its stderr live and returns the JSON.
 * Spawning, announcing, stopping and free ports come from
 * `scripts/lib/child.ts`, which the tests use too.
 *
 * @module
 */
import { type ChildProcess, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Bench } from "tinybench";
import { currentRuntime, ROOT, type Runtime, spawnRuntime as spawnChild } from "../scripts/lib/child.ts";

export { collectOutput, firstJsonLine, freePort, killChild, ROOT, type Runtime, runtimeArgv, stopChild } from "../scripts/lib/child.ts";

export const runtime: Runtime = currentRuntime;

/** One progress line on stderr, prefixed with the runtime. */
export function progress(line: string): void {
  process.stderr.write(`bench[${runtime}] ${line}\n`);
}

/** A batched measurement: tinybench times one sample of `opsPerSample` operations. */
export interface BatchedResult {
  name: string;
  opsPerSample: number;
  samples: number;
  /** Nanoseconds per operation: median, mean and 99th percentile over samples. */
  nsPerOp: { p50: number; mean: number; p99: number };
  /** Operations per second (from the mean). */
  opsPerSecond: number;
}

/**
 * Measures `fn`, which must perform `opsPerSample` operations per call, with
 * tinybench. One FFI call per sample would measure only the timer: batching
 * makes the timer's cost negligible.
 */
export async function batched(
  name: string,
  opsPerSample: number,
  fn: () => void | Promise<void>,
  options: { timeMs?: number; warmupMs?: number; iterations?: number } = {},
): Promise<BatchedResult> {
  const bench = new Bench({
    time: options.timeMs ?? 500,
    warmupTime: options.warmupMs ?? 100,
    iterations: options.iterations ?? 16,
    throws: true,
  });
  bench.add(name, fn);
  await bench.run();
  const r = bench.tasks[0].result as unknown as {
    state: string;
    latency?: { p50: number; mean: number; p99: number; samplesCount?: number };
    error?: Error;
  };
  if (!r.latency) throw new Error(`benchmark ${name} did not complete (${r.state}): ${r.error?.message ?? ""}`);
  const toNs = (ms: number) => (ms * 1e6) / opsPerSample;
  const res: BatchedResult = {
    name,
    opsPerSample,
    samples: bench.tasks[0].runs,
    nsPerOp: { p50: round(toNs(r.latency.p50)), mean: round(toNs(r.latency.mean)), p99: round(toNs(r.latency.p99)) },
    opsPerSecond: Math.round(1e9 / toNs(r.latency.mean)),
  };
  progress(`${name}: ${fmtNs(res.nsPerOp.p50)}/op (p50 of ${res.samples} samples × ${opsPerSample} ops)`);
  return res;
}

/** Rounds to 3 significant digits (measurements carry no more). */
export function round(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const d = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(x))));
  return Number(x.toFixed(Math.min(d, 6)));
}

export function fmtNs(ns: number): string {
  if (ns < 1000) return `${round(ns)} ns`;
  if (ns < 1e6) return `${round(ns / 1000)} µs`;
  return `${round(ns / 1e6)} ms`;
}

export function fmtBytes(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}

/** Percentile (0..100) of already sorted numbers, nearest rank. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** p50/p99/mean of latencies in ms, sorted in place. */
export function summarize(ms: number[]): { p50: number; p99: number; mean: number; n: number } {
  ms.sort((a, b) => a - b);
  const mean = ms.reduce((a, b) => a + b, 0) / Math.max(1, ms.length);
  return { p50: round(percentile(ms, 50)), p99: round(percentile(ms, 99)), mean: round(mean), n: ms.length };
}

/** Writes the result line of a child benchmark. */
export function emit(result: unknown): void {
  process.stdout.write(`BENCH_JSON ${JSON.stringify(result)}\n`);
}

/** Spawns a benchmark module under `rt` (Deno with `--expose-gc`; stdout piped, stderr live). */
export function spawnRuntime(rt: Runtime, script: string, args: string[] = [], stdin: "pipe" | "ignore" = "ignore"): ChildProcess {
  return spawnChild(rt, script, args, { stdin, exposeGc: true });
}

/** Collects a child's stdout lines; resolves the `BENCH_JSON` payload when it exits 0. */
export function childResult<T>(child: ChildProcess, what: string, onLine?: (line: string) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    let buf = "";
    let result: T | undefined;
    child.stdout!.on("data", (d: Uint8Array) => {
      buf += new TextDecoder().decode(d);
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith("BENCH_JSON ")) result = JSON.parse(line.slice(11)) as T;
        else onLine?.(line);
      }
    });
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      if (code === 0 && result !== undefined) resolve(result);
      else reject(new Error(`${what} exited with ${code ?? signal} ${result === undefined ? "without a result" : ""}`));
    });
  });
}

/** Runs a benchmark module under `rt` and returns its result. */
export function runChild<T>(rt: Runtime, script: string, args: string[] = []): Promise<T> {
  return childResult<T>(spawnRuntime(rt, script, args), `${script} under ${rt}`);
}

/** What `bench/loadgen.ts` measured: latencies in ms, requests/s, and counts of statuses and `x-replication` values. */
export interface LoadResult {
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  rps: number;
  requests: number;
  errors: number;
  statuses: Record<string, number>;
  replication: Record<string, number>;
}

/** How the load is generated, for the result files. */
export const LOADGEN = "bun (bench/loadgen.ts, fetch, closed loop, one session per user)";

/**
 * Runs `bench/loadgen.ts` against `url` in its own process, always under Bun
 * (so that Bun's and Deno's servers face the same client), and returns what it measured.
 */
export async function runLoad(url: string, concurrency: number, durationMs: number, warmupMs: number): Promise<LoadResult> {
  const load = spawnRuntime("bun", "bench/loadgen.ts", [url, String(concurrency), String(durationMs), String(warmupMs)]);
  const r = await childResult<LoadResult>(load, "loadgen");
  return { p50Ms: r.p50Ms, p99Ms: r.p99Ms, meanMs: r.meanMs, rps: r.rps, requests: r.requests, errors: r.errors, statuses: r.statuses, replication: r.replication };
}

/** Forces a full garbage collection where the runtime allows it; false if it cannot. */
export function fullGc(): boolean {
  const g = globalThis as { Bun?: { gc(sync: boolean): void }; gc?: () => void };
  if (g.Bun) {
    g.Bun.gc(true);
    return true;
  }
  if (typeof g.gc === "function") {
    g.gc();
    return true;
  }
  return false;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Is this module the entry point? (`import.meta.main` on both runtimes.) */
export function isMain(meta: ImportMeta): boolean {
  return (meta as ImportMeta & { main?: boolean }).main === true;
}

/**
 * The git checkout the benchmarks belong to: the one the user ran from (a
 * measuring run executes from a clean export under .cache/bench-snapshot/, which
 * has no .git of its own; bench/run.ts passes the checkout as BENCH_OUT_ROOT).
 */
export const GIT_ROOT: string = process.env.BENCH_OUT_ROOT ?? ROOT;

/**
 * `src/` and `mod.ts` of commit `ref` (`git archive`), extracted once per commit
 * into `$TMPDIR/bench-lib-<sha>`: the library of another version, to load side by
 * side with the current one. Throws naming the ref when it is not a commit of
 * this checkout (a shallow clone lacks old commits: `git fetch --unshallow`).
 */
export function exportCommit(ref: string): { dir: string; sha: string } {
  let sha: string;
  try {
    sha = execFileSync("git", ["rev-parse", "--verify", "--quiet", `${ref}^{commit}`], { cwd: GIT_ROOT, stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  } catch {
    throw new Error(`bench: '${ref}' is not a commit of the git checkout ${GIT_ROOT} (needed as a baseline; a shallow clone lacks it: git fetch --unshallow)`);
  }
  const dir = join(process.env.TMPDIR ?? "/tmp", `bench-lib-${sha.slice(0, 12)}`);
  if (!existsSync(join(dir, ".complete"))) {
    mkdirSync(dir, { recursive: true });
    const tar = execFileSync("git", ["archive", sha, "src", "mod.ts"], { cwd: GIT_ROOT, maxBuffer: 1 << 28 });
    execFileSync("tar", ["-x", "-C", dir], { input: tar });
    writeFileSync(join(dir, ".complete"), `${sha}\n`);
  }
  return { dir, sha };
}
