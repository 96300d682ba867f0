/**
 * The fault suite over real RDMA, inside the Soft-RoCE guest (RDMA_IN_GUEST=1:
 * transport rdma on the guest's rxe address): SIGKILL of a primary and SIGSTOP
 * past the failure timeout, Bun and Deno servers mixed, with the history
 * checked as on the host (test/fault_tcp.test.ts). The guest's CPU is emulated,
 * so the failure and ack timeouts are the scaled ones of the cluster tests
 * (test/fixtures/cluster_env.ts) and every timing of the scenario derives
 * from them; fewer clients, each pausing longer. On the host the same tests
 * run over tcp with the host's timeouts.
 */
import { test } from "node:test";
import { HOST, IN_GUEST, START_TIMEOUT_MS, TRANSPORT } from "../fixtures/cluster_env.ts";
import { assertScenario, chooseSeed, runScenario, type ScenarioOptions, timings } from "../fixtures/fault_driver.ts";

const HEARTBEAT_TIMEOUT_MS = IN_GUEST ? 10_000 : 1000;
const ACK_TIMEOUT_MS = IN_GUEST ? 30_000 : 1000;
const BASE_SEED = chooseSeed();
console.log(`fault suite (${TRANSPORT}): base seed ${BASE_SEED} (FAULT_SEED=${BASE_SEED} replays it)`);
const T = timings(HEARTBEAT_TIMEOUT_MS, ACK_TIMEOUT_MS);
const TEST_TIMEOUT_MS = START_TIMEOUT_MS + T.warmupMs + 2 * T.faultMs + T.afterMs + 4 * T.requestTimeoutMs;

const scenarios = [
  { fault: "kill", ack: "transport", runtimes: ["bun", "deno", "bun"] },
  { fault: "stop", ack: "applied", runtimes: ["deno", "bun", "deno"] },
] as const;

scenarios.forEach((s, i) => {
  const seed = (BASE_SEED + i) >>> 0;
  test(`fault suite over ${TRANSPORT}: ${s.fault}, ack ${s.ack}, ${s.runtimes.join("+")} servers: no acknowledged update lost, no stale read, one primary (seed ${seed})`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const options: ScenarioOptions = {
      fault: s.fault,
      ack: s.ack,
      runtimes: s.runtimes,
      clients: IN_GUEST ? 8 : 16,
      thinkMs: IN_GUEST ? 20 : 5,
      seed,
      transport: TRANSPORT,
      host: HOST,
      heartbeatMs: 100,
      heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
      ackTimeoutMs: ACK_TIMEOUT_MS,
      startTimeoutMs: START_TIMEOUT_MS,
    };
    const result = await runScenario(options);
    assertScenario(result, options, IN_GUEST ? { acked: 40, afterFault: 10 } : { acked: 200, afterFault: 50 });
  });
});
