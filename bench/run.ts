/**
 * The benchmark runner: `npm run bench` (Bun) or `deno run -A bench/run.ts`.
 *
 *   npm run bench                       host parts: ffi, tcp, http, memory, idle, datapath, replication
 *   npm run bench -- --guest            host parts, then the guest parts inside the
 *                                       Soft-RoCE guest (scripts/guest.sh)
 *   npm run bench -- --guest-only       only the guest parts
 *   npm run bench -- --only=ffi,tcp     a subset of the host parts
 *   npm run bench -- --quick            shorter runs (smoke test; numbers are rougher)
 *   npm run bench -- --report           no measuring: re-print and re-render from bench/results/
 *   npm run bench -- --in-place         measure the working tree (default: a clean export of HEAD,
 *                                       .cache/bench-snapshot/<commit>, results written here)
 *   npm run bench -- --redis            also the Redis comparison (bench/redis.ts; needs redis-server)
 *   npm run bench -- --redis-only       only the Redis comparison
 *   npm run bench -- --guest-only --save-as=guest-x.json   a guest run saved under another name
 *                                       (with its log guest-x.log), not shown in the report
 *   npm run bench -- --uml-only         the same guest parts (bench/guest.ts) inside User-Mode Linux
 *                                       (scripts/uml.sh; perftest skipped there), then one short QEMU
 *                                       guest boot for the system-call part only, so both sides of
 *                                       the syscall/JS comparison come from this run: uml.json, uml.log
 *   npm run bench -- --uml              host parts, then as --uml-only
 *   npm run bench -- --uml-only --no-qemu-syscall   without the QEMU boot
 *
 * Each part runs in child processes under Bun and under Deno (the same script,
 * so the two are compared in one run). Results: a table on stdout,
 * `bench/results/host.json`, `datapath-<runtime>.json` and
 * `replication-<runtime>.json` (before/after against v0.1 `fda7d6b`), `guest.json` (with `guest.log`, the guest's raw
 * output), `redis.json`, `bench/results/chart.svg`, and the figures block of
 * `bench/README.md`. Every JSON is written by the run that measured it, with
 * its commit, runtime versions and settings.
 *
 * @module
 */
import { execFileSync, spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { childResult, exportCommit, progress, ROOT, runChild, type Runtime, runtime } from "./lib.ts";

// deno-lint-ignore no-explicit-any
type Json = any;
import { render } from "./report.ts";

const RUNTIMES: Runtime[] = ["bun", "deno"];
const HOST_PARTS = ["ffi", "tcp", "http", "memory", "idle", "datapath", "replication"] as const;
/** The library before issue 10's work (v0.1): the baseline of the datapath and replication parts. */
const BASELINE = "fda7d6b";
type HostPart = typeof HOST_PARTS[number];

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(`--${name}`);
const only = args.find((a) => a.startsWith("--only="))?.slice(7).split(",") as HostPart[] | undefined;
const quick = flag("quick");
/**
 * Where results go: the checkout the user ran from. A measuring run executes
 * from a clean export of HEAD (see `fromSnapshot`), so this may differ from ROOT.
 */
const OUT = process.env.BENCH_OUT_ROOT ?? ROOT;
const RESULTS = join(OUT, "bench", "results");

function headCommit(dir: string): string {
  try {
    return execFileSync("git", ["rev-parse", "HEAD"], { cwd: dir, encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

function meta(): Record<string, unknown> {
  // From a snapshot the code that runs is exactly the commit; in place, the files that differ from it ran too.
  const snapshot = process.env.BENCH_COMMIT !== undefined;
  let dirty: string[] = [];
  if (!snapshot) {
    try {
      dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], { cwd: ROOT, encoding: "utf8" }).split("\n").filter(Boolean);
    } catch { /* no git */ }
  }
  return {
    date: new Date().toISOString(),
    commit: process.env.BENCH_COMMIT ?? headCommit(ROOT),
    ranFrom: snapshot ? "a clean export of the commit (git archive), not the working tree" : "the working tree",
    uncommittedFiles: dirty,
    host: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? "?"}`,
    loadavgAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
    runner: runtime,
    versions: versions(),
    quick,
  };
}

function versions(): Record<string, string> {
  const v = (cmd: string, args: string[]) => {
    try {
      return execFileSync(join(ROOT, "node_modules", ".bin", cmd), args, { encoding: "utf8" }).split("\n")[0].trim();
    } catch {
      return "unknown";
    }
  };
  return { bun: v("bun", ["--version"]), deno: v("deno", ["--version"]) };
}

function save(name: string, data: unknown): void {
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, name), JSON.stringify(data, null, 2) + "\n");
  progress(`wrote bench/results/${name}`);
}

function load(name: string): Record<string, unknown> | undefined {
  const f = join(RESULTS, name);
  return existsSync(f) ? JSON.parse(readFileSync(f, "utf8")) : undefined;
}

/** Runs one host part under both runtimes, one after the other (never concurrently: 2 noisy cores). */
async function perRuntime(script: string, extra: string[] = []): Promise<Record<Runtime, unknown>> {
  const out = {} as Record<Runtime, unknown>;
  for (const rt of RUNTIMES) {
    progress(`${script} under ${rt}…`);
    out[rt] = await runChild(rt, script, [...extra, ...(quick ? ["--quick"] : [])]);
  }
  return out;
}

async function hostParts(): Promise<Record<string, unknown>> {
  const parts = only ?? [...HOST_PARTS];
  const previous = (load("host.json") ?? {}) as Record<string, unknown>;
  const results: Record<string, unknown> = { ...previous, meta: meta() };
  for (const part of parts) {
    switch (part) {
      case "ffi":
        results.ffi = await perRuntime("bench/ffi.ts");
        break;
      case "tcp":
        results.tcp = await perRuntime("bench/tcp.ts");
        break;
      case "http": {
        const { runHttp } = await import("./http.ts");
        results.http = await runHttp({ quick });
        break;
      }
      case "memory":
        results.memory = await perRuntime("bench/memory.ts");
        break;
      case "idle": {
        // Idle processes barely run: both runtimes at once halve the wall time without disturbing each other.
        progress("idle CPU of a connected TCP pair under bun and deno (10 s each, concurrently)…");
        const secs = quick ? ["--seconds", "2"] : [];
        const [bun, deno] = await Promise.all(RUNTIMES.map((rt) => runChild(rt, "bench/idle.ts", ["--transport", "tcp", ...secs])));
        results.idle = { bun, deno };
        break;
      }
      case "datapath":
      case "replication":
        await beforeAfter(part);
        continue; // a file of their own per runtime
      default:
        throw new Error(`unknown part '${part}': choose among ${HOST_PARTS.join(", ")}`);
    }
    save("host.json", results);
  }
  return results;
}

/**
 * bench/datapath.ts or bench/replication.ts under each runtime: the library of
 * BASELINE (extracted by `git archive`) against the code this run measures (the
 * clean export, or the working tree with --in-place), side by side in one
 * process; saved as `<part>-<runtime>.json` with this run's meta and the sample counts.
 */
async function beforeAfter(part: "datapath" | "replication"): Promise<void> {
  exportCommit(BASELINE); // fails here, naming the ref, when this checkout lacks it
  for (const rt of RUNTIMES) {
    progress(`bench/${part}.ts under ${rt} (before: ${BASELINE}, after: the code of this run)…`);
    const m = meta();
    const t0 = performance.now();
    const r = await runChild<Record<string, Json>>(rt, `bench/${part}.ts`, ["--emit", `--baseline=${BASELINE}`, ...(quick ? ["--quick"] : [])]);
    const samples = part === "datapath"
      ? { roundTripsPerPathLatency: r.iterations.latencyPerPath, roundTripsPerPathAllocation: r.iterations.allocationPerPath, warmupPerPath: r.iterations.warmupPerPath }
      : { updatesPerBatch: r.settings.n, batchesPerPath: r.settings.rounds, updatesPerPathAllocation: r.settings.allocIterations };
    const settings = part === "datapath" ? { messageSize: r.messageSize, allocation: r.allocationMethod } : r.settings;
    save(`${part}-${rt}.json`, { meta: { ...m, part, measuredRuntime: rt, baseline: BASELINE, settings, samples, seconds: Math.round((performance.now() - t0) / 1000) }, ...r });
  }
}

/**
 * Runs bench/guest.ts inside the Soft-RoCE guest and returns its result. The
 * guest's whole output (progress lines and every perftest output) is kept
 * beside the JSON as `<name>.log`; the JSON holds the guest's own meta
 * (commit read when it started) and the host's, taken before the boot.
 */
async function guestParts(name = "guest.json"): Promise<unknown> {
  progress("booting the Soft-RoCE guest (scripts/guest.sh); guest figures are under an emulated CPU: only ratios count");
  const out = await inMachine("scripts/guest.sh", name.replace(/\.json$/, ".log"), quick ? ["--quick"] : []);
  const meta = { ...(out.meta as object), guest: "QEMU TCG, 2 vCPUs, rxe0 on a dummy netdev (scripts/guest.sh)" };
  save(name, { ...out, meta });
  return out;
}

/**
 * bench/guest.ts inside User-Mode Linux (scripts/uml.sh), saved as uml.json with uml.log; then,
 * unless --no-qemu-syscall, the system-call part alone in the QEMU guest (its whole output
 * appended to the same log), kept in uml.json as `qemuSyscall`: the two environments' kernel
 * entry and JS costs measured by one run of one commit.
 */
async function umlParts(): Promise<void> {
  progress("booting User-Mode Linux with Soft-RoCE (scripts/uml.sh): native user code, every system call through ptrace");
  const out: Record<string, unknown> = await inMachine("scripts/uml.sh", "uml.log", quick ? ["--quick"] : []);
  out.meta = { ...(out.meta as object), guest: "User-Mode Linux 6.1 (ARCH=um), 1 CPU, rxe0 on a dummy netdev (scripts/uml.sh)" };
  save("uml.json", out);
  if (!flag("no-qemu-syscall")) {
    progress("the system-call part alone in the QEMU guest, for the comparison");
    const q = await inMachine("scripts/guest.sh", "uml.log", ["--parts=syscall", ...(quick ? ["--quick"] : [])], true);
    out.qemuSyscall = { meta: q.meta, syscall: q.syscall, errors: q.errors };
    save("uml.json", out);
  }
}

/** Runs bench/guest.ts through a machine script (guest.sh or uml.sh), the whole output logged. */
async function inMachine(script: string, logName: string, extra: string[], append = false): Promise<Record<string, unknown>> {
  const hostMeta = meta();
  mkdirSync(RESULTS, { recursive: true });
  const log = createWriteStream(join(RESULTS, logName), { flags: append ? "a" : "w" });
  log.write(`# ${new Date().toISOString()} bash ${script} bun bench/guest.ts ${extra.join(" ")}\n# host meta: ${JSON.stringify(hostMeta)}\n`);
  const cmd = [script, "bun", "bench/guest.ts", ...extra];
  const child = spawn("bash", cmd, {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      RDMA_GUEST_TIMEOUT: process.env.RDMA_GUEST_TIMEOUT ?? "90m",
      RDMA_UML_TIMEOUT: process.env.RDMA_UML_TIMEOUT ?? "90m",
    },
  });
  child.stderr!.on("data", (d: Uint8Array) => {
    log.write(d);
    process.stderr.write(d);
  });
  const result = await childResult<Record<string, unknown>>(child, "the guest benchmark", (line) => {
    log.write(`${line}\n`);
    process.stderr.write(`guest| ${line}\n`);
  }).finally(() => new Promise<void>((r) => log.end(r)));
  return { ...result, meta: { ...(result.meta as object), host: hostMeta, log: `bench/results/${logName}` } };
}

/**
 * Measuring runs execute from a clean export of HEAD in .cache/bench-snapshot/<commit>
 * (node_modules linked): others edit this checkout while a run takes tens of
 * minutes, and a half-written file must not end up in (or break) the run; the
 * commit recorded is then exactly the code that ran. `--in-place` runs the working tree.
 */
async function fromSnapshot(): Promise<never> {
  const commit = headCommit(ROOT);
  if (commit === "unknown") throw new Error("not a git checkout: use --in-place");
  const dir = join(ROOT, ".cache", "bench-snapshot", commit);
  if (!existsSync(join(dir, ".complete"))) {
    mkdirSync(dir, { recursive: true });
    execFileSync("bash", ["-c", `git -C "${ROOT}" archive --format=tar ${commit} | tar -x -C "${dir}"`]);
    writeFileSync(join(dir, ".complete"), `${commit}\n`);
  }
  if (!existsSync(join(dir, "node_modules"))) execFileSync("ln", ["-s", join(ROOT, "node_modules"), join(dir, "node_modules")]);
  // The guest cache of its own: scripts/guest.sh deletes initramfs images of other guest.sh versions
  // when it builds one, and the exported guest.sh may differ from the working tree's. The kernel is shared.
  const guestCache = process.env.RDMA_GUEST_CACHE ?? join(ROOT, ".cache", "bench-guest");
  mkdirSync(guestCache, { recursive: true });
  const kernels = join(ROOT, ".cache", "guest", "kernel");
  if (!process.env.RDMA_GUEST_CACHE && existsSync(kernels) && !existsSync(join(guestCache, "kernel"))) execFileSync("ln", ["-s", kernels, join(guestCache, "kernel")]);
  progress(`running from a clean export of ${commit.slice(0, 10)} in ${dir} (results go to ${RESULTS})`);
  const [cmd, argv] = runtime === "bun" ? [join(ROOT, "node_modules", ".bin", "bun"), [join(dir, "bench", "run.ts")]] : [join(ROOT, "node_modules", ".bin", "deno"), ["run", "-A", join(dir, "bench", "run.ts")]];
  const child = spawn(cmd, [...argv, ...args], {
    cwd: dir,
    stdio: "inherit",
    // The UML kernel (a 25-minute build) is shared with the checkout's cache, keyed by its config.
    env: { ...process.env, BENCH_COMMIT: commit, BENCH_OUT_ROOT: ROOT, RDMA_GUEST_CACHE: guestCache, RDMA_UML_CACHE: process.env.RDMA_UML_CACHE ?? join(ROOT, ".cache", "uml") },
  });
  const code = await new Promise<number>((r) => child.once("exit", (c) => r(c ?? 1)));
  process.exit(code);
}

const saveAs = args.find((a) => a.startsWith("--save-as="))?.slice(10);
if (!flag("report") && !flag("in-place") && process.env.BENCH_COMMIT === undefined) await fromSnapshot();
if (!flag("report")) {
  if (!flag("guest-only") && !flag("redis-only") && !flag("uml-only")) await hostParts();
  if (flag("guest") || flag("guest-only")) await guestParts(saveAs);
  if (flag("uml") || flag("uml-only")) await umlParts();
  if (flag("redis") || flag("redis-only")) await redisPart();
}

/** The Redis comparison (bench/redis.ts), in its own result file. */
async function redisPart(): Promise<void> {
  const m = meta();
  const { runRedisComparison } = await import("./redis.ts");
  const r = await runRedisComparison({ quick });
  save("redis.json", { meta: m, ...r });
}

const perRuntimeFile = (part: string) => ({ bun: load(`${part}-bun.json`), deno: load(`${part}-deno.json`) });
const report = render(load("host.json"), load("guest.json"), load("redis.json"), load("uml.json"), { datapath: perRuntimeFile("datapath"), replication: perRuntimeFile("replication") });
console.log(report.text);
writeFileSync(join(RESULTS, "chart.svg"), report.svg);
progress("wrote bench/results/chart.svg");
/** Replaces the text between two markers of a file (the markers stay); false if they are missing. */
function between(file: string, start: string, end: string, body: string): boolean {
  if (!existsSync(file)) return false;
  const text = readFileSync(file, "utf8");
  const a = text.indexOf(start), b = text.indexOf(end);
  if (a < 0 || b < a) return false;
  writeFileSync(file, `${text.slice(0, a + start.length)}\n${body}\n${text.slice(b)}`);
  return true;
}
if (between(join(OUT, "bench", "README.md"), "<!-- figures:start -->", "<!-- figures:end -->", report.markdown)) {
  progress("updated the figures block of bench/README.md");
}
if (between(join(OUT, "README.md"), "<!-- bench:start -->", "<!-- bench:end -->", report.readme)) {
  progress("updated the generated block of README.md's Benchmarks section");
}
process.exit(0);
