/**
 * Our SDP socket over TCP against a plain node:net echo on loopback, under
 * the running runtime (run.ts runs it under Bun and under Deno). Both echo
 * servers live in one child process (`peer.ts tcp`) under the same runtime,
 * so the two paths share everything but the protocol.
 *
 *   bun bench/tcp.ts [--quick]
 *   deno run -A bench/tcp.ts [--quick]
 *
 * @module
 */
import { FORCE_BCOPY } from "./peer.ts";
import { emit, firstJsonLine, fmtBytes, isMain, progress, runtime, spawnRuntime, stopChild } from "./lib.ts";
import { type LatencyPoint, PlainClient, plainLatency, plainThroughput, sdpConnect, sdpLatency, sdpThroughput, type ThroughputPoint } from "./transport.ts";

export interface TcpResult {
  part: "tcp";
  runtime: string;
  latency: { size: number; sdp: LatencyPoint; plain: LatencyPoint }[];
  throughput: { size: number; sdp: ThroughputPoint; plain: ThroughputPoint }[];
}

const MAX = 4 << 20;

export async function runTcp(quick: boolean): Promise<TcpResult> {
  const peer = spawnRuntime(runtime, "bench/peer.ts", ["tcp", "127.0.0.1", String(MAX)]);
  try {
    const ports = await firstJsonLine<{ echoBcopy: number; plainEcho: number }>(peer, "peer.ts tcp");
    const sdp = await sdpConnect({ transport: "tcp", host: "127.0.0.1", port: ports.echoBcopy, zcopyThreshold: FORCE_BCOPY, maxMessageSize: MAX });
    const plain = await PlainClient.connect("127.0.0.1", ports.plainEcho);
    const q = quick ? 0.2 : 1;
    const latency: TcpResult["latency"] = [];
    for (const [size, n] of [[64, 2000], [1024, 2000], [16384, 1000], [65536, 500], [1 << 20, 60], [4 << 20, 20]]) {
      const count = Math.max(5, Math.round(n * q));
      // Alternate the two paths so that drifting machine noise hits both alike.
      const s = await sdpLatency(sdp, size, count, "sdp-tcp");
      const p = await plainLatency(plain, size, count);
      latency.push({ size, sdp: s, plain: p });
      progress(`tcp latency ${fmtBytes(size)}: sdp ${s.halfRttUs} µs, plain ${p.halfRttUs} µs (half round trip, p50 of ${count})`);
    }
    const throughput: TcpResult["throughput"] = [];
    for (const [size, count] of [[1024, 40000], [65536, 2000], [1 << 20, 128]]) {
      const c = Math.max(16, Math.round(count * q));
      const s = await sdpThroughput(sdp, size, c, 16, "sdp-tcp", true);
      const p = await plainThroughput(plain, size, c, 16);
      throughput.push({ size, sdp: s, plain: p });
      progress(`tcp echo throughput ${fmtBytes(size)} ×${c}, 16 in flight: sdp ${s.MBps} MB/s, plain ${p.MBps} MB/s`);
    }
    await sdp.close();
    plain.close();
    return { part: "tcp", runtime, latency, throughput };
  } finally {
    await stopChild(peer);
  }
}

if (isMain(import.meta)) {
  emit(await runTcp(process.argv.includes("--quick")));
  process.exit(0);
}
