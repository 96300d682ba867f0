/**
 * CPU time of an idle connected SDP pair (both ends in this process), against
 * the same process holding an idle plain `node:net` pair first (the reference:
 * what the runtime itself costs while idle).
 *
 *   bun bench/idle.ts --transport tcp|rdma [--host 127.0.0.1] [--seconds 10]
 *
 * The pair exchanges 100 messages first, so credits, acknowledgements and the
 * completion path have all run before the window starts. CPU is
 * `process.cpuUsage()` (user + system) over the window.
 *
 * @module
 */
import * as net from "node:net";
import { parseArgs } from "node:util";
import { connect, listen } from "../src/sdp/mod.ts";
import { emit, isMain, progress, round, runtime, sleep } from "./lib.ts";

export interface IdleResult {
  part: "idle";
  runtime: string;
  transport: string;
  seconds: number;
  plainTcpCpuMs: number;
  sdpCpuMs: number;
  /** The SDP pair's CPU as a percentage of one core. */
  sdpPercentOfCore: number;
  /** Pure acknowledgement frames sent during the idle window (both ends). */
  ackFramesWhileIdle: number;
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

async function window(seconds: number): Promise<number> {
  const before = cpuMs();
  await sleep(seconds * 1000);
  return cpuMs() - before;
}

export async function runIdle(transport: "tcp" | "rdma", host: string, seconds: number): Promise<IdleResult> {
  const server = net.createServer(() => {});
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const plain = await new Promise<net.Socket>((r) => {
    const c = net.connect({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port }, () => r(c));
  });
  progress(`idle: plain TCP pair for ${seconds} s…`);
  const plainMs = await window(seconds);
  plain.destroy();
  server.close();

  const l = await listen({ transport, host, port: 0 });
  const accepted = (async () => {
    for await (const s of l) return s;
  })();
  const c = await connect({ transport, host, port: l.address.port, timeoutMs: 60_000 });
  const s = (await accepted)!;
  const drained = (async () => {
    let n = 0;
    for await (const m of s) {
      m.release();
      if (++n === 100) return;
    }
  })();
  await Promise.all(Array.from({ length: 100 }, () => c.send(new Uint8Array(1000))));
  await drained;
  await sleep(200);
  const acksBefore = c.stats().creditUpdates + s.stats().creditUpdates;
  progress(`idle: connected SDP pair over ${transport} for ${seconds} s…`);
  const sdpMs = await window(seconds);
  const acks = c.stats().creditUpdates + s.stats().creditUpdates - acksBefore;
  await c.close();
  await l.close();
  return {
    part: "idle",
    runtime,
    transport,
    seconds,
    plainTcpCpuMs: round(plainMs),
    sdpCpuMs: round(sdpMs),
    sdpPercentOfCore: round(sdpMs / (seconds * 10)),
    ackFramesWhileIdle: acks,
  };
}

if (isMain(import.meta)) {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { transport: { type: "string", default: "tcp" }, host: { type: "string", default: "127.0.0.1" }, seconds: { type: "string", default: "10" } },
  });
  emit(await runIdle(values.transport as "tcp" | "rdma", values.host!, Number(values.seconds)));
  process.exit(0);
}
