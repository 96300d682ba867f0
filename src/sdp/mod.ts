/**
 * The SDP-like socket: `connect` and `listen` over `rdma`, `tcp`, `loopback`
 * or `auto` (rdma where a device port is ACTIVE, else tcp).
 *
 * @example
 * ```ts
 * import { connect, listen } from "./mod.ts";
 * const server = await listen({ transport: "tcp", host: "127.0.0.1", port: 0 });
 * (async () => {
 *   for await (const s of server) {
 *     for await (const m of s) { console.log(new TextDecoder().decode(m.bytes)); m.release(); }
 *   }
 * })();
 * const c = await connect({ transport: "tcp", host: "127.0.0.1", port: server.address.port });
 * await c.send(new TextEncoder().encode("hello")); // resolves once the peer has the bytes
 * await c.close();
 * await server.close();
 * ```
 *
 * @module
 */
export type { MessageListener, MessageSocket, ReceivedMessage, SocketStats, TransportChoice, TransportKind } from "./types.ts";
export type { Link, LinkCapabilities, LinkEvents, LinkListener, LinkSizes, PreAuthSizes, RegisteredRegion } from "./links/link.ts";
export type { TlsConfig } from "./links/tls.ts";
export { type Reservation, SdpSocket, SOCKET_DEFAULTS, type SocketOptions } from "./socket.ts";
export { ProtocolError } from "./wire.ts";
export { LoopbackFaults, loopbackPair } from "./links/loopback.ts";
export {
  chooseTransport,
  connect,
  type ConnectOptions,
  linkModule,
  listen,
  type ListenOptions,
  type TransportOptions,
} from "./transport.ts";
