/**
 * The host fault suite: a cluster of Bun and Deno shop servers over tcp, many
 * concurrent clients in this process, one seeded fault per test (SIGKILL of a
 * primary, SIGSTOP past the failure timeout, a network partition between
 * namespaces, two kills in a row, cookie forgers), in both `transport` and
 * `applied` ack modes; the history is checked for lost acknowledged updates,
 * stale reads, overlapping primaries, lost sessions and leaks
 * (test/fixtures/history.ts). Each test prints one summary line and appends it
 * as JSON to .cache/fault-results/results.jsonl. FAULT_SEED=N replays a run.
 * The partition tests need root (network namespaces) and fail without it.
 */
import { test } from "node:test";
import { assertScenario, chooseSeed, type FaultKind, runScenario, type Runtime, type ScenarioOptions, timings } from "./fixtures/fault_driver.ts";

const HEARTBEAT_TIMEOUT_MS = 1000;
const ACK_TIMEOUT_MS = 1000;
const BASE_SEED = chooseSeed();
console.log(`fault suite (tcp): base seed ${BASE_SEED} (FAULT_SEED=${BASE_SEED} replays it)`);

const T = timings(HEARTBEAT_TIMEOUT_MS, ACK_TIMEOUT_MS);
// A scenario: start (a few s), warmup, fault, after-load, final reads, stop.
const TEST_TIMEOUT_MS = 30_000 + T.warmupMs + 2 * T.faultMs + T.afterMs + 4 * T.requestTimeoutMs;

const faults: FaultKind[] = ["kill", "stop", "partition", "double-kill", "forge"];
let index = 0;
for (const ack of ["transport", "applied"] as const) {
  for (const fault of faults) {
    const seed = (BASE_SEED + index++) >>> 0;
    // Alternate which runtime is in the majority. double-kill: 5 servers (two dead still leave a
    // majority of the five; with 4, two dead leave none and the survivors rightly answer 503).
    const three: Runtime[] = ack === "transport" ? ["bun", "deno", "bun"] : ["deno", "bun", "deno"];
    const more: Runtime[] = ack === "transport" ? ["bun", "deno", "bun", "deno", "bun"] : ["deno", "bun", "deno", "bun", "deno"];
    const runtimes: Runtime[] = fault === "double-kill" ? more : three;
    test(`fault suite over tcp: ${fault}, ack ${ack}, ${runtimes.join("+")} servers: no acknowledged update lost, no stale read, one primary (seed ${seed})`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const options: ScenarioOptions = {
        fault,
        ack,
        runtimes,
        clients: 16,
        seed,
        transport: "tcp",
        host: "127.0.0.1",
        heartbeatMs: 100,
        heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
        ackTimeoutMs: ACK_TIMEOUT_MS,
        startTimeoutMs: 60_000,
      };
      const result = await runScenario(options);
      // Floors: 16 clients for ~10 s on a 2-core machine give thousands; a few hundred is still load.
      assertScenario(result, options, { acked: 200, afterFault: 50 });
    });
  }
}
