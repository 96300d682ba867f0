/**
 * The guest half of the benchmarks: run inside the Soft-RoCE guest by
 * `npm run bench -- --guest` (through scripts/guest.sh), under Bun.
 *
 *   bash scripts/guest.sh bun bench/guest.ts [--quick] [--parts=ffi,perftest,transport,idle]
 *
 * In one run, on rxe0 (192.0.2.1), one part after the other:
 * 1. perftest first, alone in the guest (no other process of ours started
 *    yet): `ib_send_lat` (64 B, busy polling and CQ events), `ib_read_lat`
 *    and `ib_read_bw` by size (rdma_cm, `-R`), 1,000 iterations, fewer only
 *    where a probe run says 1,000 would exceed the time budget (recorded).
 *    Every perftest output is printed whole to stderr (the raw log).
 * 2. FFI and verbs overhead under Bun and under Deno on a real connection (`ffi.ts --rdma`).
 * 3. Our SDP socket over rdma against a peer process (`peer.ts rdma`): latency
 *    (send → return, and half the echo round trip; warm-up, then 1,000
 *    samples, fewer only where the budget says so, recorded) and throughput
 *    (16 in flight to a sink, at least 10 × 16 messages after a warm-up) by
 *    size, each by forced bcopy and forced zcopy.
 * 4. The zcopy threshold chosen from 3 by the rule of threshold.ts, with the evidence.
 * 5. Registered memory of one socket, before and after traffic; idle CPU of a
 *    connected rdma pair (10 s) under Bun and Deno.
 *
 * 6. System-call, timer, page-fault and pure-JS costs of this environment (part `syscall`):
 *    what separates kernel-entry cost from JS cost when two environments are compared.
 *
 * The result carries its own `meta` (commit read at the start, runtime
 * versions, kernel, settings, load average), so it is never stamped later.
 * The guest CPU is emulated (QEMU TCG): absolute figures are meaningless;
 * only ratios between figures of this same run count.
 *
 * The same script runs inside User-Mode Linux (`bash scripts/uml.sh bun bench/guest.ts`,
 * `npm run bench -- --uml-only`; RDMA_IN_UML=1 there): user code runs natively on the host
 * CPU, and every system call and page fault goes through ptrace. There perftest is skipped by
 * default (it prints `inf` latencies: it reads the CPU frequency from /proc/cpuinfo, which UML
 * leaves out; `--parts=` can still ask for it), and `meta.environment` says `uml`.
 *
 * @module
 */
import { execFileSync, spawn } from "node:child_process";
import { closeSync, fstatSync, openSync, readFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { registeredBytes } from "../src/verbs/mod.ts";
import { FORCE_BCOPY, FORCE_ZCOPY } from "./peer.ts";
import { chooseThreshold } from "./threshold.ts";
import {
  emit,
  firstJsonLine,
  fmtBytes,
  progress,
  ROOT,
  round,
  runChild,
  sleep,
  spawnRuntime,
  stopChild,
} from "./lib.ts";
import {
  type LatencyPoint,
  sdpConnect,
  sdpLatencyTimed,
  sdpThroughput,
  type ThroughputPoint,
} from "./transport.ts";

const HOST = process.env.BENCH_RDMA_HOST ?? "192.0.2.1";
const DEV = process.env.BENCH_RDMA_DEVICE ?? "rxe0";
const quick = process.argv.includes("--quick");
/** Which machine this is: the QEMU guest (scripts/guest.sh) or User-Mode Linux (scripts/uml.sh). */
const ENVIRONMENT = process.env.RDMA_IN_UML === "1" ? "uml" : "qemu";
const ALL_PARTS = ["ffi", "perftest", "transport", "idle", "syscall"];
// perftest's latencies are `inf` in UML (no CPU MHz in /proc/cpuinfo for its cycle counter).
const DEFAULT_PARTS = ENVIRONMENT === "uml" ? ALL_PARTS.filter((p) => p !== "perftest") : ALL_PARTS;
const parts = new Set(
  process.argv.find((a) => a.startsWith("--parts="))?.slice(8).split(",") ?? DEFAULT_PARTS,
);
for (const p of parts) {
  if (!ALL_PARTS.includes(p)) throw new Error(`--parts: unknown part '${p}': choose among ${ALL_PARTS.join(", ")}`);
}
const MAX = 16 << 20; // the default maxMessageSize: what users get
/** Target sample and iteration count, and the time one measurement may take before it is cut (recorded). */
const TARGET = quick ? 100 : 1000;
const BUDGET_MS = quick ? 5_000 : 60_000;
const WINDOW = 16;
const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;

// ---- perftest ---------------------------------------------------------------

interface Proc {
  /** Everything printed so far (stdout and stderr). */
  output(): string;
  /** Resolves with the output on exit 0, rejects otherwise. */
  done: Promise<string>;
  kill(): void;
}

function start(cmd: string, args: string[], timeoutMs: number): Proc {
  const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  p.stdout.on("data", (d: Uint8Array) => (out += new TextDecoder().decode(d)));
  p.stderr.on("data", (d: Uint8Array) => (out += new TextDecoder().decode(d)));
  const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  const done = new Promise<string>((resolve, reject) => {
    p.once("error", reject);
    p.once("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else {reject(
          new Error(
            `${cmd} ${args.join(" ")} exited with ${code}:\n${out.slice(-800)}`,
          ),
        );}
    });
  });
  return { output: () => out, done, kill: () => p.kill("SIGKILL") };
}

/**
 * Runs a perftest server and its client in this guest; returns the client's
 * result row. The client starts once the server says it is waiting (a client
 * that comes too early is rejected; `stdbuf -oL` so that the server's line
 * is not stuck in a pipe buffer); one retry with a fresh server.
 */
async function perftest(
  tool: string,
  size: number,
  iters: number,
  extra: string[] = [],
  attempt = 1,
): Promise<(column: string) => number> {
  const common = [
    ...extra,
    "-d",
    DEV,
    "-R",
    "-F",
    "-s",
    String(size),
    "-n",
    String(iters),
  ];
  const server = start("stdbuf", ["-oL", tool, ...common], 900_000);
  server.done.catch(() => {});
  try {
    for (
      let waited = 0;
      !server.output().includes("Waiting for client");
      waited += 100
    ) {
      if (waited > 60_000) {
        throw new Error(`${tool} server did not start:\n${server.output()}`);
      }
      await sleep(100);
    }
    await sleep(300);
    const c0 = performance.now();
    const out = await start(tool, [...common, HOST], 900_000).done;
    const wallUs = (performance.now() - c0) * 1000;
    process.stderr.write(`---- raw: ${tool} ${common.join(" ")} ${HOST}\n${out}---- end raw\n`);
    // Header names made single tokens: "BW average[MB/sec]", "99% percentile[usec]".
    const lines = out.split("\n").map((l) =>
      l.replace(/BW (peak|average)/g, "BW_$1").replace(/% percentile/g, "%_percentile").trim().split(/\s+/)
    );
    const at = lines.findIndex((c) => c[0] === String(size) && c.length >= 4);
    const header = lines.slice(0, Math.max(0, at)).reverse().find((c) => c[0] === "#bytes");
    if (at < 0 || !header) {
      throw new Error(`no result row in ${tool} output:\n${out.slice(-800)}`);
    }
    await Promise.race([server.done.catch(() => {}), sleep(5000)]);
    // Columns by header name: the event mode (-e) prints fewer of them.
    const row = lines[at];
    return (name: string) => {
      // The client's wall time (µs), connection set-up included: what a probe falls back on.
      if (name === "wall") return wallUs;
      const i = header.findIndex((h) => h.startsWith(name));
      return i >= 0 && i < row.length ? Number(row[i]) : NaN;
    };
  } catch (e) {
    if (attempt >= 2) throw e;
    progress(
      `${tool} ${size}: ${
        (e as Error).message.split("\n").slice(0, 3).join(" / ")
      }; retrying`,
    );
    await sleep(2000);
    return await perftest(tool, size, iters, extra, attempt + 1);
  } finally {
    server.kill();
  }
}

interface PerfLat {
  size: number;
  /** The perftest command line (client side; the server has the same minus the host). */
  command?: string;
  /** Iterations of the probe run that chose `iterations` (only where 1,000 might exceed the budget). */
  probeIterations?: number;
  /** How perftest waits for completions: busy polling (its default) or CQ events (`-e`). */
  completion: "poll" | "events";
  iterations: number;
  /** t_typical (perftest's median), µs */
  us: number;
  avgUs: number;
  p99Us: number;
}

/** Iterations within the budget, from a probe's time per iteration (µs); at least `min`. */
function itersFor(usPerIter: number, min: number): number {
  if (!Number.isFinite(usPerIter) || usPerIter <= 0) return TARGET;
  return Math.max(min, Math.min(TARGET, Math.floor((BUDGET_MS * 1000) / usPerIter)));
}

async function perfLat(
  tool: string,
  size: number,
  completion: "poll" | "events" = "poll",
  probe = false,
): Promise<PerfLat> {
  const extra = completion === "events" ? ["-e"] : [];
  let iters = TARGET, probeIterations: number | undefined;
  if (probe) {
    probeIterations = 20;
    const p = await perftest(tool, size, probeIterations, extra);
    // perftest prints inf when its cycle-counter calibration fails (it does under TCG): then the
    // probe's wall time per iteration stands in (connection set-up included: errs low).
    const avg = Number.isFinite(p("t_avg")) ? p("t_avg") : p("wall") / probeIterations;
    iters = itersFor(avg, 100);
    progress(`${tool} ${fmtBytes(size)}: probe ${p("t_avg")} µs average: ${iters} iterations`);
  }
  // #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9% (fewer with -e)
  const col = await perftest(tool, size, iters, extra);
  const typical = col("t_typical"), avg = col("t_avg");
  // Without t_typical (the median) the average stands in.
  const us = Number.isFinite(typical) ? typical : avg;
  progress(`${tool} ${fmtBytes(size)} (${completion}) ×${iters}: ${us} µs ${Number.isFinite(typical) ? "typical" : "average"} (${elapsed()})`);
  return {
    size,
    command: `${tool} ${extra.join(" ")} -d ${DEV} -R -F -s ${size} -n ${iters} ${HOST}`.replace(/ +/g, " "),
    probeIterations,
    completion,
    iterations: iters,
    us,
    avgUs: avg,
    p99Us: col("99%"),
  };
}

async function perfBw(
  size: number,
  probe = false,
): Promise<
  { size: number; command: string; probeIterations?: number; probeMBps?: number; iterations: number; MBps: number; peakMBps: number }
> {
  let iters = TARGET, probeIterations: number | undefined, probeMBps: number | undefined;
  if (probe) {
    probeIterations = 40;
    const p = await perftest("ib_read_bw", size, probeIterations);
    const MBps = (p("BW_average") * 1048576) / 1e6;
    iters = itersFor(Number.isFinite(MBps) && MBps > 0 ? size / MBps : p("wall") / probeIterations, 10 * WINDOW);
    probeMBps = round(MBps);
    progress(`ib_read_bw ${fmtBytes(size)}: probe ${round(MBps)} MB/s: ${iters} iterations`);
  }
  // #bytes #iterations BW_peak BW_average MsgRate  (MB/sec = 2^20 bytes/s)
  const col = await perftest("ib_read_bw", size, iters);
  const MBps = round((col("BW_average") * 1048576) / 1e6);
  progress(
    `ib_read_bw ${
      fmtBytes(size)
    }: ${MBps} MB/s (10^6 B/s) average (${elapsed()})`,
  );
  return {
    size,
    command: `ib_read_bw -d ${DEV} -R -F -s ${size} -n ${iters} ${HOST}`,
    probeIterations,
    probeMBps,
    iterations: iters,
    MBps,
    peakMBps: round((col("BW_peak") * 1048576) / 1e6),
  };
}

// ---- the run ------------------------------------------------------------------

function headCommit(): string {
  // run.ts runs from a clean export of the commit and says which.
  if (process.env.BENCH_COMMIT) return process.env.BENCH_COMMIT;
  try {
    let c = readFileSync(join(ROOT, ".git", "HEAD"), "utf8").trim();
    if (c.startsWith("ref: ")) {
      const ref = c.slice(5);
      try {
        c = readFileSync(join(ROOT, ".git", ref), "utf8").trim();
      } catch {
        const packed = readFileSync(join(ROOT, ".git", "packed-refs"), "utf8").split("\n").find((l) => l.endsWith(` ${ref}`));
        c = packed?.split(" ")[0] ?? "unknown";
      }
    }
    return c;
  } catch {
    return "unknown";
  }
}

function denoVersion(): string {
  try {
    const [cmd, argv] = [join(ROOT, "node_modules", ".bin", "deno"), ["--version"]];
    return execFileSync(cmd, argv, { encoding: "utf8", timeout: 120_000 }).split("\n")[0].replace(/^deno /, "").split(" ")[0];
  } catch {
    return "unknown";
  }
}

const result: Record<string, unknown> = {
  part: "guest",
  meta: {
    // Read here, when the run starts (the checkout is shared: files may change under a run; the run.ts log lists the dirty ones).
    date: new Date().toISOString(),
    environment: ENVIRONMENT,
    commit: headCommit(),
    ranFrom: process.env.BENCH_COMMIT ? "a clean export of the commit (git archive), not the working tree" : "the working tree",
    bun: (globalThis as { Bun?: { version: string } }).Bun?.version ?? "not bun",
    deno: denoVersion(),
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? "?"}`,
    loadavgAtStart: readFileSync("/proc/loadavg", "utf8").trim(),
    settings: {
      rdmaSpinUs: Number(process.env.RDMA_SPIN_US ?? 500),
      forcedThresholds: { bcopy: FORCE_BCOPY, zcopy: FORCE_ZCOPY },
      maxMessageSize: MAX,
      targetIterations: TARGET,
      budgetMsPerMeasurement: BUDGET_MS,
      window: WINDOW,
      minThroughputMessages: 10 * WINDOW,
    },
  },
  quick,
  parts: [...parts],
  ...(ENVIRONMENT === "uml" && !parts.has("perftest")
    ? { perftestSkipped: "UML: perftest prints inf latencies (its cycle counter needs the CPU MHz that UML leaves out of /proc/cpuinfo)" }
    : {}),
  // The progress engine's spin before it sleeps (verbs/progress.ts) shapes every latency here.
  rdmaSpinUs: Number(process.env.RDMA_SPIN_US ?? 500),
};
progress(`meta: ${JSON.stringify(result.meta)}`);
// An error escaping the library (a bug outside the benchmark) is recorded and
// the run goes on, so that one fault does not cost the whole guest run.
const warnings: string[] = [];
result.warnings = warnings;
process.on("uncaughtException", (e) => {
  warnings.push(String((e as Error)?.stack ?? e).split("\n").slice(0, 6).join("\n"));
  progress(`uncaught (recorded in warnings): ${(e as Error)?.message}`);
});

/** Runs one part; a failure is recorded in `errors` and the run goes on (one fault must not cost the whole guest run). */
const errors: Record<string, string> = {};
result.errors = errors;
async function part(name: string, fn: () => Promise<void>): Promise<void> {
  if (!parts.has(name)) return;
  try {
    await fn();
  } catch (e) {
    errors[name] = String((e as Error)?.stack ?? e).slice(0, 2000);
    progress(`part ${name} failed (recorded in errors): ${(e as Error)?.message}`);
  }
}
// perftest first: nothing of ours runs in the guest yet.
await part("perftest", runPerftest);
await part("ffi", async () => {
  progress(
    `FFI and verbs overhead on ${DEV} under bun and deno (${elapsed()})`,
  );
  result.ffi = {
    bun: await runChild("bun", "bench/ffi.ts", ["--rdma", HOST, "--quick"]),
    deno: await runChild("deno", "bench/ffi.ts", ["--rdma", HOST, "--quick"]),
  };
});
await part("transport", runTransport);
await part("idle", runIdleRdma);
await part("syscall", runSyscall);
result.seconds = Math.round((performance.now() - t0) / 1000);
progress(`guest benchmark done in ${elapsed()}`);
emit(result);
process.exit(0);

async function runPerftest(): Promise<void> {
  progress(`perftest, alone in the guest; load average ${readFileSync("/proc/loadavg", "utf8").trim()} (${elapsed()})`);
  // Sizes from 256 KiB up are probed first: 1,000 iterations of them may exceed the budget.
  const probe = (size: number) => size >= 262144;
  const perf = {
    sendLat: [] as PerfLat[],
    readLat: [] as PerfLat[],
    readBw: [] as Awaited<ReturnType<typeof perfBw>>[],
    failed: [] as string[],
  };
  result.perftest = perf;
  const keep = async <T>(what: string, list: T[], f: () => Promise<T>) => {
    try {
      list.push(await f());
    } catch (e) {
      perf.failed.push(`${what}: ${(e as Error).message.slice(0, 400)}`);
      progress(`${what} failed (recorded): ${(e as Error).message.split("\n")[0]}`);
    }
  };
  // ib_send_lat both ways: with two busy-polling processes on the guest's 2 vCPUs, rxe's
  // own work can wait for a scheduler tick; the better figure is the reference.
  await keep("ib_send_lat 64 poll", perf.sendLat, () => perfLat("ib_send_lat", 64));
  await keep("ib_send_lat 64 events", perf.sendLat, () => perfLat("ib_send_lat", 64, "events"));
  for (const size of [64, 4096, 65536, 262144, 1 << 20, 4 << 20]) {
    await keep(`ib_read_lat ${size}`, perf.readLat, () => perfLat("ib_read_lat", size, "poll", probe(size)));
  }
  for (const size of [4096, 65536, 262144, 1 << 20, 4 << 20]) {
    await keep(`ib_read_bw ${size}`, perf.readBw, () => perfBw(size, probe(size)));
  }
  progress(`perftest done; load average ${readFileSync("/proc/loadavg", "utf8").trim()} (${elapsed()})`);
}

async function runTransport(): Promise<void> {
  progress(`our SDP socket over rdma against a peer process (${elapsed()})`);
  const peer = spawnRuntime("bun", "bench/peer.ts", [
    "rdma",
    HOST,
    String(MAX),
  ]);
  try {
    const ports = await firstJsonLine<
      { echoBcopy: number; echoZcopy: number; sink: number }
    >(peer, "peer.ts rdma");
    const before = registeredBytes();
    const opts = (port: number, zcopyThreshold: number) => ({
      transport: "rdma" as const,
      host: HOST,
      port,
      zcopyThreshold,
      maxMessageSize: MAX,
    });
    const echoB = await sdpConnect(opts(ports.echoBcopy, FORCE_BCOPY));
    const oneSocket = registeredBytes() - before;
    const echoZ = await sdpConnect(opts(ports.echoZcopy, FORCE_ZCOPY));
    const sinkB = await sdpConnect(opts(ports.sink, FORCE_BCOPY));
    const sinkZ = await sdpConnect(opts(ports.sink, FORCE_ZCOPY));
    const afterConnect = registeredBytes();
    progress(
      `4 sockets connected; one socket registers ${
        fmtBytes(oneSocket)
      } (${elapsed()})`,
    );

    const SIZES = [64, 1024, 4096, 16384, 65536, 262144, 1 << 20, 4 << 20];
    // Warm-up: up to 200 round trips or 10 s (at least 10); then TARGET samples, fewer only past the budget (at least 50).
    const lo = { samples: TARGET, minSamples: quick ? 20 : 50, budgetMs: BUDGET_MS, warmup: { min: quick ? 5 : 10, max: quick ? 50 : 200, ms: quick ? 2000 : 10_000 } };
    const latency: LatencyPoint[] = [];
    const throughput: ThroughputPoint[] = [];
    // Filled as it goes: a part that fails later keeps what was measured.
    result.transport = { maxMessageSize: MAX, window: WINDOW, latency, throughput };
    for (const size of SIZES) {
      const b = await sdpLatencyTimed(echoB, size, "bcopy", lo);
      const z = await sdpLatencyTimed(echoZ, size, "zcopy", lo);
      latency.push(b, z);
      progress(
        `rdma latency ${
          fmtBytes(size)
        } (bcopy n=${b.n} after ${b.warmup}, zcopy n=${z.n} after ${z.warmup}): send→return p50/p99 bcopy ${b.sendReturnUs}/${b.sendReturnP99Us} µs, zcopy ${z.sendReturnUs}/${z.sendReturnP99Us} µs; half RTT bcopy ${b.halfRttUs}, zcopy ${z.halfRttUs} (${elapsed()})`,
      );
    }
    for (const size of [4096, 16384, 65536, 262144, 1 << 20, 4 << 20]) {
      // At least 10 windows; small sizes up to 32 MiB in all (at most 2,000 messages).
      const count = Math.max(10 * WINDOW, Math.min(quick ? 200 : 2000, Math.ceil((quick ? 4 << 20 : 32 << 20) / size)));
      // Warm-up: two windows, not counted.
      await sdpThroughput(sinkB, size, 2 * WINDOW, WINDOW, "bcopy", false);
      const b = await sdpThroughput(sinkB, size, count, WINDOW, "bcopy", false);
      await sdpThroughput(sinkZ, size, 2 * WINDOW, WINDOW, "zcopy", false);
      const z = await sdpThroughput(sinkZ, size, count, WINDOW, "zcopy", false);
      throughput.push(b, z);
      progress(
        `rdma throughput ${
          fmtBytes(size)
        } ×${count}: bcopy ${b.MBps} MB/s, zcopy ${z.MBps} MB/s (${elapsed()})`,
      );
    }

    // Registered memory: constant across all that traffic means no registration on the data path.
    const stats = [echoB, echoZ, sinkB, sinkZ].map((s) => s.stats());
    result.registered = {
      oneSocketBytes: oneSocket,
      fourSocketsBytes: afterConnect - before,
      afterTrafficBytes: registeredBytes() - before,
      messagesSent: stats.reduce((a, s) => a + s.messagesSent, 0),
      zcopySends: stats.reduce((a, s) => a + s.zcopySends, 0),
      bcopySends: stats.reduce((a, s) => a + s.bcopySends, 0),
      maxMessageSize: MAX,
      note:
        "registeredBytes() of this process (client side only); one socket = recv ring + send slots + source + sink at their defaults",
    };
    result.threshold = chooseThreshold(latency, throughput);
    progress(`zcopy threshold: ${JSON.stringify(result.threshold)}`);
    // A close must not hang the run: give each 10 s.
    for (const s of [echoB, echoZ, sinkB, sinkZ]) {
      await Promise.race([s.close().catch(() => {}), sleep(10_000)]);
    }
  } finally {
    await stopChild(peer);
  }
}

async function runIdleRdma(): Promise<void> {
  progress(
    `idle CPU of a connected rdma pair, bun and deno concurrently (${elapsed()})`,
  );
  const secs = quick ? "3" : "10";
  const [ib, id] = await Promise.all(
    (["bun", "deno"] as const).map((rt) => runChild(rt, "bench/idle.ts", ["--transport", "rdma", "--host", HOST, "--seconds", secs])),
  );
  result.idle = { bun: ib, deno: id };
}

/**
 * What one kernel entry, one timer read, one page fault and some pure-JS work cost here
 * (Bun, this process; batches timed by performance.now(), median per operation). A round
 * trip of our socket is JS work plus system calls (rxe's post is one, the wake-up of a
 * sleeping progress engine more), so these separate an environment's syscall cost from its
 * CPU speed: in UML each system call and page fault is a ptrace round trip to the host while
 * user code runs natively; in QEMU TCG every instruction is emulated, kernel entries too.
 */
function runSyscall(): Promise<void> {
  progress(`system call, timer, page fault and JS costs (${elapsed()})`);
  const median = (xs: number[]) => {
    const a = [...xs].sort((x, y) => x - y);
    return a[Math.floor(a.length / 2)];
  };
  /** ns per operation: `samples` batches of `ops`, median; warm-up one batch. */
  const time = (name: string, ops: number, samples: number, batch: () => void, what: string) => {
    batch();
    const per: number[] = [];
    for (let i = 0; i < samples; i++) {
      const a = performance.now();
      batch();
      per.push(((performance.now() - a) * 1e6) / ops);
    }
    const c = { name, what, opsPerSample: ops, samples, nsPerOp: { p50: round(median(per)), min: round(Math.min(...per)) } };
    progress(`${name}: ${c.nsPerOp.p50} ns per operation (p50 of ${samples} × ${ops})`);
    return c;
  };
  const fd = openSync("/proc/self/stat", "r");
  const copySrc = new Uint8Array(65536).fill(3);
  const copyDst = new Uint8Array(65536);
  let sink = 0;
  const n = quick ? 5 : 21;
  const cases = [
    time("fstat", 2000, n, () => {
      for (let i = 0; i < 2000; i++) sink += fstatSync(fd).size;
    }, "fs.fstatSync(fd): one fstat system call plus the runtime's JS wrapper"),
    time("performance.now", 20000, n, () => {
      for (let i = 0; i < 20000; i++) sink += performance.now();
    }, "one timer read (clock_gettime: a vDSO call without kernel entry where the kernel offers a vDSO)"),
    time("page fault", 2048, n, () => {
      // 8 MiB fresh from the allocator (mmap): the first write to each 4 KiB page faults.
      const b = new Uint8Array(8 << 20);
      for (let i = 0; i < b.length; i += 4096) b[i] = 1;
      sink += b[4096];
    }, "first write to a fresh 4 KiB page of a new 8 MiB buffer (allocation included)"),
    time("JS loop", 1 << 20, n, () => {
      let x = 1;
      for (let i = 0; i < 1 << 20; i++) x = (x * 1103515245 + 12345) | 0;
      sink += x;
    }, "one iteration of an integer loop in JS (pure CPU, no kernel entry)"),
    time("64 KiB copy", 256, n, () => {
      for (let r = 0; r < 256; r++) copyDst.set(copySrc, 0);
      sink += copyDst[7];
    }, "Uint8Array.set of 64 KiB (memcpy: CPU and memory, no kernel entry)"),
  ];
  closeSync(fd);
  if (sink === 0.5) console.log(sink);
  result.syscall = { runtime: "bun", cases };
  return Promise.resolve();
}
