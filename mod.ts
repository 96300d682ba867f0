/**
 * RDMA for Bun and Deno, and one-way session replication on top of it.
 *
 * Layers, bottom to top (each importable on its own):
 * - `verbs`: devices, rdma_cm connections, registered memory regions, RDMA
 *   READ/WRITE and send/receive as promises, completion polling
 *   (`src/verbs/mod.ts`, over the C shim in `c_shim/` loaded by `ffi/`);
 * - the SDP-like message socket: `connect`/`listen` over `rdma`, `tcp`,
 *   `loopback` or `auto`, where `send` resolves on the *return* (the bytes are
 *   in the peer's memory: SrcAvail → RDMA READ → RdmaRdCompl for large
 *   messages);
 * - one-way RMI, sessions, the cluster (peers, rendezvous-hashed secondaries,
 *   failover) and `withSessions` for fetch-style HTTP handlers (Hono
 *   middleware: the `./hono` export, `src/http/hono.ts`);
 * - Prometheus metrics of a cluster: `metricsHandler(cluster)`.
 *
 * @example
 * ```ts
 * import { connect, listen } from "./mod.ts";
 *
 * const server = await listen({ transport: "auto", host: "127.0.0.1", port: 0 });
 * const echoed = (async () => {
 *   for await (const socket of server) {
 *     for await (const m of socket) {
 *       const text = new TextDecoder().decode(m.bytes);
 *       m.release();
 *       return text;
 *     }
 *   }
 * })();
 * const client = await connect({ transport: "auto", host: "127.0.0.1", port: server.address.port });
 * await client.send(new TextEncoder().encode("session bytes")); // the return: the peer has them
 * console.log(client.transport, await echoed);
 * await client.close();
 * await server.close();
 * ```
 *
 * @module
 */
export * from "./src/sdp/mod.ts";
export * from "./src/rmi/mod.ts";
export * from "./src/session/mod.ts";
export * from "./src/cluster/mod.ts";
export * from "./src/http/mod.ts";
export * from "./src/metrics/mod.ts";
/** The verbs layer (devices, connections, memory regions), as a namespace: its `connect`/`listen` are rdma_cm's. */
export * as verbs from "./src/verbs/mod.ts";
export { devices } from "./src/verbs/mod.ts";
export type { DeviceInfo, PortInfo } from "./src/verbs/mod.ts";
export { ShimLoadError } from "./ffi/mod.ts";
