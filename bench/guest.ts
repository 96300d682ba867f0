/**
 * The guest half of the benchmarks: run inside the Soft-RoCE guest by
 * `npm run bench -- --guest` (through scripts/guest.sh), under Bun.
 *
 *   bash scripts/guest.sh bun bench/guest.ts [--quick] [--parts=ffi,perftest,transport,idle]
 *
 * In one run, on rxe0 (192.0.2.1):
 * 1. FFI and verbs overhead under Bun and under Deno on a real connection (`ffi.ts --rdma`).
 * 2. perftest: `ib_send_lat` (64 B), `ib_read_lat` and `ib_read_bw` by size (rdma_cm, `-R`).
 * 3. Our SDP socket over rdma against a peer process (`peer.ts rdma`): latency
 *    (send → return, and half the echo round trip) and throughput (16 in
 *    flight to a sink) by size, each by forced bcopy and forced zcopy.
 * 4. The zcopy threshold chosen from 3, with the evidence.
 * 5. Registered memory of one socket, before and after traffic; idle CPU of a
 *    connected rdma pair (10 s) under Bun and Deno.
 *
 * The guest CPU is emulated (QEMU TCG): absolute figures are meaningless;
 * only ratios between figures of this same run count. Iteration counts are
 * small so that the whole run stays within about ten minutes.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { registeredBytes } from "../src/verbs/mod.ts";
import { FORCE_BCOPY, FORCE_ZCOPY } from "./peer.ts";
import { chooseThreshold } from "./threshold.ts";
import {
  emit,
  firstJsonLine,
  fmtBytes,
  progress,
  round,
  runChild,
  sleep,
  spawnRuntime,
  stopChild,
} from "./lib.ts";
import {
  type LatencyPoint,
  sdpConnect,
  sdpLatency,
  sdpThroughput,
  type ThroughputPoint,
} from "./transport.ts";

const HOST = process.env.BENCH_RDMA_HOST ?? "192.0.2.1";
const DEV = process.env.BENCH_RDMA_DEVICE ?? "rxe0";
const quick = process.argv.includes("--quick");
const parts = new Set(
  (process.argv.find((a) => a.startsWith("--parts="))?.slice(8) ??
    "ffi,perftest,transport,idle").split(","),
);
const MAX = 16 << 20; // the default maxMessageSize: what users get
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
  const server = start("stdbuf", ["-oL", tool, ...common], 240_000);
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
    const out = await start(tool, [...common, HOST], 240_000).done;
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
  /** How perftest waits for completions: busy polling (its default) or CQ events (`-e`). */
  completion: "poll" | "events";
  iterations: number;
  /** t_typical (perftest's median), µs */
  us: number;
  avgUs: number;
  p99Us: number;
}

async function perfLat(
  tool: string,
  size: number,
  iters: number,
  completion: "poll" | "events" = "poll",
): Promise<PerfLat> {
  // #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9% (fewer with -e)
  const col = await perftest(tool, size, iters, completion === "events" ? ["-e"] : []);
  const typical = col("t_typical"), avg = col("t_avg");
  // Without t_typical (the median) the average stands in.
  const us = Number.isFinite(typical) ? typical : avg;
  progress(`${tool} ${fmtBytes(size)} (${completion}): ${us} µs ${Number.isFinite(typical) ? "typical" : "average"} (${elapsed()})`);
  return { size, completion, iterations: iters, us, avgUs: avg, p99Us: col("99%") };
}

async function perfBw(
  size: number,
  iters: number,
): Promise<
  { size: number; iterations: number; MBps: number; peakMBps: number }
> {
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
    iterations: iters,
    MBps,
    peakMBps: round((col("BW_peak") * 1048576) / 1e6),
  };
}

// ---- the run ------------------------------------------------------------------

const result: Record<string, unknown> = {
  part: "guest",
  quick,
  parts: [...parts],
  // The progress engine's spin before it sleeps (verbs/progress.ts) shapes every latency here.
  rdmaSpinUs: Number(process.env.RDMA_SPIN_US ?? 500),
};
// An error escaping the library (a bug outside the benchmark) is recorded and
// the run goes on, so that one fault does not cost the whole guest run.
const warnings: string[] = [];
result.warnings = warnings;
process.on("uncaughtException", (e) => {
  warnings.push(String((e as Error)?.stack ?? e).split("\n").slice(0, 6).join("\n"));
  progress(`uncaught (recorded in warnings): ${(e as Error)?.message}`);
});
const q = quick ? 0.4 : 1;
const n = (k: number, min = 2) => Math.max(min, Math.round(k * q));

if (parts.has("ffi")) {
  progress(
    `FFI and verbs overhead on ${DEV} under bun and deno (${elapsed()})`,
  );
  result.ffi = {
    bun: await runChild("bun", "bench/ffi.ts", ["--rdma", HOST, "--quick"]),
    deno: await runChild("deno", "bench/ffi.ts", ["--rdma", HOST, "--quick"]),
  };
}

if (parts.has("perftest")) await runPerftest();
if (parts.has("transport")) await runTransport();
if (parts.has("idle")) await runIdleRdma();
result.seconds = Math.round((performance.now() - t0) / 1000);
progress(`guest benchmark done in ${elapsed()}`);
emit(result);
process.exit(0);

async function runPerftest(): Promise<void> {
  progress(`perftest (${elapsed()})`);
  const LAT_SIZES: [number, number][] = [[64, 200], [4096, 100], [65536, 50], [
    1 << 20,
    10,
  ], [4 << 20, 5]];
  const BW_SIZES: [number, number][] = [[4096, 200], [65536, 100], [
    1 << 20,
    20,
  ], [4 << 20, 10]];
  const perf = {
    // Both ways: with two busy-polling processes on the guest's 2 vCPUs, rxe's
    // own work can wait for a scheduler tick; the better figure is the reference.
    sendLat: [
      await perfLat("ib_send_lat", 64, n(200, 20)),
      await perfLat("ib_send_lat", 64, n(200, 20), "events"),
    ],
    readLat: [] as PerfLat[],
    readBw: [] as Awaited<ReturnType<typeof perfBw>>[],
  };
  for (const [size, iters] of LAT_SIZES) {
    perf.readLat.push(await perfLat("ib_read_lat", size, n(iters, 5)));
  }
  for (const [size, iters] of BW_SIZES) {
    perf.readBw.push(await perfBw(size, n(iters, 10)));
  }
  result.perftest = perf;
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

    const SIZES: [number, number][] = [
      [64, 40],
      [1024, 30],
      [4096, 30],
      [16384, 20],
      [65536, 15],
      [262144, 8],
      [1 << 20, 4],
      [4 << 20, 3],
    ];
    const latency: LatencyPoint[] = [];
    for (const [size, k] of SIZES) {
      const b = await sdpLatency(echoB, size, n(k), "bcopy", 2);
      const z = await sdpLatency(echoZ, size, n(k), "zcopy", 2);
      latency.push(b, z);
      progress(
        `rdma latency ${
          fmtBytes(size)
        }: send→return bcopy ${b.sendReturnUs} µs, zcopy ${z.sendReturnUs} µs; half RTT bcopy ${b.halfRttUs}, zcopy ${z.halfRttUs} (${elapsed()})`,
      );
    }
    const throughput: ThroughputPoint[] = [];
    for (const size of [4096, 16384, 65536, 262144, 1 << 20, 4 << 20]) {
      const count = n(
        Math.min(200, Math.max(12, Math.ceil((6 << 20) / size))),
        6,
      );
      const b = await sdpThroughput(sinkB, size, count, 16, "bcopy", false);
      const z = await sdpThroughput(sinkZ, size, count, 16, "zcopy", false);
      throughput.push(b, z);
      progress(
        `rdma throughput ${
          fmtBytes(size)
        } ×${count}: bcopy ${b.MBps} MB/s, zcopy ${z.MBps} MB/s (${elapsed()})`,
      );
    }
    result.transport = { maxMessageSize: MAX, window: 16, latency, throughput };

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
