/**
 * One shop server as a child process (used by `demo.ts` and by the cluster
 * tests). It talks to its parent in JSON lines:
 *
 * 1. It listens for peers (replication transport) and for HTTP, both on
 *    `--host` (127.0.0.1) with port 0, and prints
 *    `{"event":"listening","id","host","httpHost","runtime","transport","ack","ackTimeoutMs",
 *    "heartbeatMs","heartbeatTimeoutMs","pid","clusterPort","httpPort"}`.
 * 2. The parent answers on stdin with `{"peers":[{id,host,port,transport},...]}`.
 * 3. It joins the cluster, waits for every peer, and prints `{"event":"ready"}`.
 *
 * Flags: --id ID --secret S [--transport auto|tcp|rdma] [--host 127.0.0.1] [--http-host HOST (default: --host)]
 * [--ack transport|applied|none] [--ack-timeout-ms 1000] [--max-idle-ms N]
 * [--heartbeat-ms 250] [--heartbeat-timeout-ms 1500] [--sweep-ms 1000]
 *
 * Run: `bun examples/shop_server.ts --id a --secret ...` or
 * `deno run -A examples/shop_server.ts --id a --secret ...`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import process from "node:process";
import {
  type AckMode,
  dialPeer,
  listenForPeers,
  type PeerConfig,
  runtimeName,
  serve,
  SessionCluster,
  type TransportChoice,
  withSessions,
} from "../mod.ts";
import { shopHandler } from "./shop.ts";

/** Parsed flags of a shop server. */
export interface ShopServerConfig {
  id: string;
  secret: string;
  transport: TransportChoice;
  host: string;
  /** Address of the HTTP listener. @default host */
  httpHost: string;
  ack: AckMode;
  ackTimeoutMs: number;
  maxIdleMs: number;
  heartbeatMs: number;
  heartbeatTimeoutMs: number;
  sweepMs: number;
}

/** Reads the flags of `args`. */
export function parseShopArgs(args: string[]): ShopServerConfig {
  const { values } = parseArgs({
    args,
    options: {
      id: { type: "string" },
      secret: { type: "string" },
      transport: { type: "string", default: "auto" },
      host: { type: "string", default: "127.0.0.1" },
      "http-host": { type: "string" },
      ack: { type: "string", default: "transport" },
      "ack-timeout-ms": { type: "string", default: "1000" },
      "max-idle-ms": { type: "string", default: String(30 * 60_000) },
      "heartbeat-ms": { type: "string", default: "250" },
      "heartbeat-timeout-ms": { type: "string", default: "1500" },
      "sweep-ms": { type: "string", default: "1000" },
    },
  });
  if (!values.id) throw new Error("--id is required");
  const secret = values.secret ?? process.env.CLUSTER_SECRET;
  if (!secret) throw new Error("--secret (or CLUSTER_SECRET) is required");
  if (!["none", "transport", "applied"].includes(values.ack!)) throw new Error(`--ack must be none, transport or applied: got ${values.ack}`);
  return {
    id: values.id,
    secret,
    transport: values.transport as TransportChoice,
    host: values.host!,
    httpHost: values["http-host"] ?? values.host!,
    ack: values.ack as AckMode,
    ackTimeoutMs: Number(values["ack-timeout-ms"]),
    maxIdleMs: Number(values["max-idle-ms"]),
    heartbeatMs: Number(values["heartbeat-ms"]),
    heartbeatTimeoutMs: Number(values["heartbeat-timeout-ms"]),
    sweepMs: Number(values["sweep-ms"]),
  };
}

function emit(event: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(event) + "\n");
}

/** Runs one server until stdin closes or the process is killed. */
export async function runShopServer(config: ShopServerConfig): Promise<void> {
  const listener = await listenForPeers({ transport: config.transport, host: config.host, port: 0 });
  let resolveCluster!: (c: SessionCluster) => void;
  const clusterReady = new Promise<SessionCluster>((r) => (resolveCluster = r));
  let app: ((request: Request) => Promise<Response>) | undefined;
  const http = await serve(async (request) => {
    if (app === undefined) {
      const cluster = await clusterReady;
      app ??= withSessions(shopHandler(cluster), { cluster, replicationHeader: "x-replication" });
    }
    return app(request);
  }, { hostname: config.httpHost, port: 0 });
  emit({
    event: "listening",
    id: config.id,
    host: config.host,
    httpHost: config.httpHost,
    runtime: runtimeName(),
    transport: listener.transport,
    ack: config.ack,
    ackTimeoutMs: config.ackTimeoutMs,
    heartbeatMs: config.heartbeatMs,
    heartbeatTimeoutMs: config.heartbeatTimeoutMs,
    pid: process.pid,
    clusterPort: listener.address.port,
    httpPort: http.port,
  });
  const lines = createInterface({ input: process.stdin });
  let cluster: SessionCluster | undefined;
  for await (const line of lines) {
    if (!line.trim()) continue;
    const message = JSON.parse(line) as { peers?: PeerConfig[]; command?: string };
    if (message.peers && cluster === undefined) {
      cluster = new SessionCluster({
        self: config.id,
        peers: message.peers,
        secret: config.secret,
        listener,
        dial: (peer) => dialPeer(peer, config.transport),
        ackMode: config.ack,
        ackTimeoutMs: config.ackTimeoutMs,
        maxIdleMs: config.maxIdleMs,
        heartbeatIntervalMs: config.heartbeatMs,
        heartbeatTimeoutMs: config.heartbeatTimeoutMs,
        sweepIntervalMs: config.sweepMs,
        logger: { warn: (m) => process.stderr.write(`[${config.id}] ${m}\n`) },
      });
      resolveCluster(cluster);
      const all = await cluster.waitForPeers(30_000);
      emit({ event: "ready", id: config.id, allPeersUp: all });
    } else if (message.command === "stats" && cluster) {
      emit({ event: "stats", stats: cluster.stats() });
    }
  }
  // stdin closed: the parent is gone or asked us to stop.
  await http.close();
  await cluster?.close();
  await listener.close().catch(() => {});
  process.exit(0);
}

if (import.meta.main) {
  runShopServer(parseShopArgs(process.argv.slice(2))).catch((error) => {
    process.stderr.write(`shop server failed: ${error instanceof Error ? error.stack : error}\n`);
    process.exit(1);
  });
}
