/**
 * An HTTP server for the end-to-end benchmark, under Bun (`Bun.serve`) or
 * Deno (`Deno.serve`) through `serve()`; or, with `secondary`, the second
 * cluster node (no HTTP) that receives the replicated sessions.
 *
 *   http_server.ts <mode> <primaryPort> <secondaryPort>
 *     mode plain       no sessions at all: the handler alone
 *     mode sessions    withSessions on a one-server cluster: sessions, no replication
 *     mode none|transport|applied
 *                      withSessions on a two-server cluster (TCP on loopback), this ack mode
 *     mode secondary   the other server of that cluster
 *
 * Prints `{"httpPort"}` (or `{"ready":true}` for the secondary) once the
 * cluster has all its peers, then serves until killed.
 *
 * Every request runs the same handler: it reads a counter from the session,
 * increments it and stores it with a 100-byte value, so each request commits
 * one delta of two attributes (a steady-state replicated update).
 *
 * @module
 */
import { startSessionCluster } from "../src/cluster/start.ts";
import type { PeerConfig } from "../src/cluster/peers.ts";
import { serve } from "../src/http/serve.ts";
import { withSessions } from "../src/http/with_sessions.ts";
import type { Session } from "../src/http/session.ts";
import type { AckMode } from "../src/rmi/types.ts";

const SECRET = "bench-http-cluster-secret-0123456789";
const VALUE = "v".repeat(100);

const [mode, primaryPort, secondaryPort] = process.argv.slice(2);
const quiet = { warn: () => {}, error: (...a: unknown[]) => console.error(...a), info: () => {}, log: () => {} };

function counter(_request: Request, session: Session): Response {
  const n = (session.get<number>("n") ?? 0) + 1;
  session.set("n", n);
  session.set("last", VALUE);
  return new Response(String(n));
}

let plainCount = 0;
function plain(_request: Request): Response {
  return new Response(String(++plainCount));
}

const peers: PeerConfig[] = [
  { id: "a", host: "127.0.0.1", port: Number(primaryPort), transport: "tcp" },
  { id: "b", host: "127.0.0.1", port: Number(secondaryPort), transport: "tcp" },
];

process.on("SIGTERM", () => process.exit(0));

if (mode === "plain") {
  const server = await serve(plain);
  console.log(JSON.stringify({ httpPort: server.port }));
} else if (mode === "secondary") {
  const cluster = await startSessionCluster({ self: "b", peers, secret: SECRET, transport: "tcp", logger: quiet as unknown as Console });
  if (!(await cluster.waitForPeers(30_000))) throw new Error("secondary: the primary never connected");
  console.log(JSON.stringify({ ready: true }));
} else if (["sessions", "none", "transport", "applied"].includes(mode)) {
  const solo = mode === "sessions";
  const cluster = await startSessionCluster({
    self: "a",
    peers: solo ? [peers[0]] : peers,
    secret: SECRET,
    transport: "tcp",
    ackMode: solo ? "transport" : mode as AckMode,
    logger: quiet as unknown as Console,
  });
  if (!solo && !(await cluster.waitForPeers(30_000))) throw new Error("primary: the secondary never connected");
  const server = await serve(withSessions(counter, { cluster, replicationHeader: "x-replication" }));
  console.log(JSON.stringify({ httpPort: server.port }));
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
