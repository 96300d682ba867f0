/**
 * `startSessionCluster`: the one call a server makes to join its cluster. It
 * listens for peers on its own entry of the peer list (over that entry's
 * transport, `auto` by default) and dials the others the same way.
 *
 * @module
 */

import type { TransportChoice } from "../sdp/types.ts";
import type { TlsConfig } from "../tcp/tls.ts";
import { SessionCluster, type SessionClusterOptions } from "./session_cluster.ts";
import { dialPeer, listenForPeers } from "./transport.ts";

/** Options of `startSessionCluster`: those of `SessionCluster` without the listener and dialer. */
export interface StartSessionClusterOptions extends Omit<SessionClusterOptions, "listener" | "dial"> {
  /** Transport for peers whose entry names none. @default "auto" (rdma where a device is up, else tcp) */
  transport?: TransportChoice;
  /** TLS for tcp peers: this server's certificate and key, and the CA that signs every peer's. @default plain tcp */
  tls?: TlsConfig;
}

/**
 * Joins the cluster as `self`: listens on `self`'s host and port and connects
 * to every other peer (reconnecting as they come and go).
 *
 * @example
 * ```ts
 * import { startSessionCluster } from "./start.ts";
 * // Two servers of one cluster in one process, for the example; normally one per process or machine.
 * const secret = "an-example-secret-of-32-bytes!!!";
 * const peers = [
 *   { id: "a", host: "127.0.0.1", port: 7301, transport: "tcp" as const },
 *   { id: "b", host: "127.0.0.1", port: 7302, transport: "tcp" as const },
 * ];
 * const a = await startSessionCluster({ self: "a", peers, secret });
 * const b = await startSessionCluster({ self: "b", peers, secret });
 * await a.waitForPeers();
 * const session = a.create(); // secondary: "b"
 * console.log(await a.commit(session.id, { user: "ada" }, [], { ack: "applied" })); // "applied"
 * console.log(b.store.get(session.id)?.attributes); // { user: "ada" }
 * await a.close();
 * await b.close();
 * ```
 */
export async function startSessionCluster(options: StartSessionClusterOptions): Promise<SessionCluster> {
  const self = options.peers.find((p) => p.id === options.self);
  if (self === undefined) throw new RangeError(`'self' must be one of the peers: '${options.self}' is not in the list`);
  const fallback = options.transport ?? "auto";
  const listener = await listenForPeers({ transport: self.transport ?? fallback, host: self.host, port: self.port, tls: options.tls });
  return new SessionCluster({ ...options, listener, dial: (peer) => dialPeer(peer, fallback, options.tls) });
}
