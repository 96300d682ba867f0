/**
 * The benchmark runner: `npm run bench` (Bun) or `deno run -A bench/run.ts`.
 *
 *   npm run bench                       host parts: ffi, tcp, http, memory, idle
 *   npm run bench -- --guest            host parts, then the guest parts inside the
 *                                       Soft-RoCE guest (scripts/guest.sh)
 *   npm run bench -- --guest-only       only the guest parts
 *   npm run bench -- --only=ffi,tcp     a subset of the host parts
 *   npm run bench -- --quick            shorter runs (smoke test; numbers are rougher)
 *   npm run bench -- --report           no measuring: re-print and re-render from bench/results/
 *   npm run bench -- --guest-log=FILE   take the guest result from the saved output of a
 *                                       `bun bench/guest.ts` run inside a guest
 *                   [--save-as=guest-spin.json]  ...as a supplementary guest run (the spin
 *                                       experiment: `RDMA_SPIN_US=20000`) or guest-repeat.json (the same
 *                                       run repeated, for run-to-run variance), shown beside the main one
 *
 * Each part runs in child processes under Bun and under Deno (the same script,
 * so the two are compared in one run). Results: a table on stdout,
 * `bench/results/host.json` and `guest.json`, `bench/results/chart.svg`, and
 * the figures block of `bench/README.md`.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { childResult, progress, ROOT, runChild, type Runtime, runtime } from "./lib.ts";
import { render } from "./report.ts";
import { chooseThreshold } from "./threshold.ts";

const RUNTIMES: Runtime[] = ["bun", "deno"];
const HOST_PARTS = ["ffi", "tcp", "http", "memory", "idle"] as const;
type HostPart = typeof HOST_PARTS[number];

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(`--${name}`);
const only = args.find((a) => a.startsWith("--only="))?.slice(7).split(",") as HostPart[] | undefined;
const quick = flag("quick");
const RESULTS = join(ROOT, "bench", "results");

function meta(): Record<string, unknown> {
  let commit = "unknown";
  try {
    commit = readFileSync(join(ROOT, ".git", "HEAD"), "utf8").trim();
    if (commit.startsWith("ref: ")) commit = readFileSync(join(ROOT, ".git", commit.slice(5)), "utf8").trim();
  } catch { /* not a checkout */ }
  return {
    date: new Date().toISOString(),
    commit,
    host: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? "?"}`,
    runner: runtime,
    quick,
  };
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
      default:
        throw new Error(`unknown part '${part}': choose among ${HOST_PARTS.join(", ")}`);
    }
    save("host.json", results);
  }
  return results;
}

/** Runs bench/guest.ts inside the Soft-RoCE guest and returns its result. */
async function guestParts(): Promise<unknown> {
  progress("booting the Soft-RoCE guest (scripts/guest.sh); guest figures are under an emulated CPU: only ratios count");
  const cmd = ["scripts/guest.sh", "bun", "bench/guest.ts", ...(quick ? ["--quick"] : [])];
  const child = spawn("bash", cmd, { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"], env: process.env });
  const result = await childResult<Record<string, unknown>>(child, "the guest benchmark", (line) => process.stderr.write(`guest| ${line}\n`));
  const out = { meta: { ...meta(), guest: "QEMU TCG, 2 vCPUs, rxe0 on a dummy netdev (scripts/guest.sh)" }, ...result };
  save("guest.json", withThreshold(out));
  return out;
}

/** (Re)computes the threshold from the measured points, with the current rule. */
// deno-lint-ignore no-explicit-any
function withThreshold(g: any): unknown {
  if (g.transport) g.threshold = chooseThreshold(g.transport.latency, g.transport.throughput);
  return g;
}

/** Reads the `BENCH_JSON` line of a saved guest run. */
function guestFromLog(file: string, name = "guest.json"): void {
  const line = readFileSync(file, "utf8").split("\n").find((l) => l.startsWith("BENCH_JSON "));
  if (!line) throw new Error(`${file} holds no BENCH_JSON line: did the guest run finish?`);
  save(name, withThreshold({ meta: { ...meta(), guest: "QEMU TCG, 2 vCPUs, rxe0 on a dummy netdev", from: "saved guest output" }, ...JSON.parse(line.slice(11)) }));
}

const guestLog = args.find((a) => a.startsWith("--guest-log="))?.slice(12);
const saveAs = args.find((a) => a.startsWith("--save-as="))?.slice(10);
if (guestLog) guestFromLog(guestLog, saveAs);
else if (!flag("report")) {
  if (!flag("guest-only")) await hostParts();
  if (flag("guest") || flag("guest-only")) await guestParts();
}
const report = render(load("host.json"), load("guest.json"), load("guest-spin.json"), load("guest-repeat.json"));
console.log(report.text);
writeFileSync(join(RESULTS, "chart.svg"), report.svg);
progress("wrote bench/results/chart.svg");
const readme = join(ROOT, "bench", "README.md");
if (existsSync(readme)) {
  const text = readFileSync(readme, "utf8");
  const start = "<!-- figures:start -->";
  const end = "<!-- figures:end -->";
  const a = text.indexOf(start), b = text.indexOf(end);
  if (a >= 0 && b > a) {
    writeFileSync(readme, `${text.slice(0, a + start.length)}\n${report.markdown}\n${text.slice(b)}`);
    progress("updated the figures block of bench/README.md");
  }
}
process.exit(0);
