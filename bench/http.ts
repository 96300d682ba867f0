/**
 * HTTP end to end: p50, p99 and requests/s of `Bun.serve` and `Deno.serve`
 * servers, with no sessions (`plain`), with sessions but no replication
 * (`sessions`: a one-server cluster), and with replication to a secondary
 * process over TCP on loopback in ack modes `none`, `transport`, `applied`.
 * The load comes from `loadgen.ts` in its own process (always under Bun, so
 * that both servers face the same client).
 *
 * Configurations run one after the other (2 noisy cores), each server and
 * secondary started fresh.
 *
 * @module
 */
import { type ChildProcess } from "node:child_process";
import {
  firstJsonLine,
  freePort,
  LOADGEN,
  type LoadResult,
  progress,
  runLoad,
  type Runtime,
  spawnRuntime,
  stopChild,
} from "./lib.ts";

export const HTTP_MODES = [
  "plain",
  "sessions",
  "none",
  "transport",
  "applied",
] as const;

export interface HttpRun extends LoadResult {
  runtime: Runtime;
  /** Virtual users of the load generator: 1 shows the latency a request adds, 8 saturates the 2 cores. */
  concurrency: number;
  mode: typeof HTTP_MODES[number];
}

export async function runHttp(
  opts: { quick?: boolean } = {},
): Promise<
  {
    concurrencies: number[];
    durationMs: number;
    loadgen: string;
    runs: HttpRun[];
  }
> {
  const concurrencies = [1, 8];
  const durationMs = opts.quick ? 1500 : 5000;
  const warmupMs = opts.quick ? 500 : 1000;
  const runs: HttpRun[] = [];
  for (const concurrency of concurrencies) {
    for (const rt of ["bun", "deno"] as Runtime[]) {
      for (const mode of HTTP_MODES) {
        const children: ChildProcess[] = [];
        try {
          const [pa, pb] = [await freePort(), await freePort()];
          const start = (role: string) => {
            const child = spawnRuntime(rt, "bench/http_server.ts", [role, String(pa), String(pb)]);
            children.push(child);
            return child;
          };
          // The replicating modes have a secondary; it starts first.
          const secondary = mode !== "plain" && mode !== "sessions" ? start("secondary") : undefined;
          const server = start(mode);
          if (secondary) await firstJsonLine(secondary, "secondary");
          const port = (await firstJsonLine<{ httpPort: number }>(server, `http server ${mode}`)).httpPort;
          progress(`http ${rt} ${mode}: ${concurrency} users for ${durationMs} ms…`);
          const r = await runLoad(`http://127.0.0.1:${port}/`, concurrency, durationMs, warmupMs);
          runs.push({ runtime: rt, concurrency, mode, ...r });
          progress(
            `http ${rt} ${mode} ×${concurrency}: p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, ${r.rps} req/s, replication ${
              JSON.stringify(r.replication)
            }`,
          );
        } finally {
          for (const c of children.reverse()) await stopChild(c);
        }
      }
    }
  }
  return {
    concurrencies,
    durationMs,
    loadgen: LOADGEN,
    runs,
  };
}
