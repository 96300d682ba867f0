/**
 * `startSessionCluster`: the one call a server makes to join its cluster. It
 * listens for peers on its own entry of the peer list (over that entry's
 * transport, `auto` by default) and dials the others the same way.
 *
 * @module
 */

import type { TransportChoice } from "../sdp/types.ts";
import type { TlsConfig } from "../sdp/links/tls.ts";
import { SessionCluster, type SessionClusterOptions } from "./session_cluster.ts";
import { dialPeer, listenForPeers } from "./transport.ts";
import { type DnsPeersOptions, resolvePeers } from "./dns_peers.ts";
import type { PeerConfig } from "./peers.ts";

/** Options of `startSessionCluster`: those of `SessionCluster` without the listener and dialer. */
export interface StartSessionClusterOptions extends Omit<SessionClusterOptions, "listener" | "dial" | "peers" | "peerSource"> {
  /** Every server of the cluster, this one included (or use `dns`). */
  peers?: readonly PeerConfig[];
  /**
   * Membership from DNS instead of `peers` (a Kubernetes headless Service; see
   * `dns_peers.ts`): looked up until this server's own entry appears (at most
   * `dnsWaitMs`), then every `dns.refreshMs`.
   */
  dns?: DnsPeersOptions;
  /** @default 30000 */
  dnsWaitMs?: number;
  /** Address to listen on. @default this server's entry's host */
  listenHost?: string;
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
  const dns = options.dns;
  const peers = dns === undefined ? options.peers : await waitForSelf(options.self, dns, options.dnsWaitMs ?? 30_000);
  if (peers === undefined) throw new TypeError("startSessionCluster needs 'peers' or 'dns'");
  const self = peers.find((p) => p.id === options.self);
  if (self === undefined) throw new RangeError(`'self' must be one of the peers: '${options.self}' is not in the list`);
  const fallback = options.transport ?? "auto";
  const listener = await listenForPeers({
    transport: self.transport ?? fallback,
    host: options.listenHost ?? self.host,
    port: self.port,
    tls: options.tls,
  });
  return new SessionCluster({
    ...options,
    peers,
    listener,
    dial: (peer) => dialPeer(peer, fallback, options.tls),
    peerSource: dns === undefined ? undefined : () => resolvePeers(dns),
    peerRefreshMs: dns?.refreshMs,
  });
}

/** Looks the peers up until this server's own entry is published. */
async function waitForSelf(self: string, dns: DnsPeersOptions, waitMs: number): Promise<PeerConfig[]> {
  const deadline = Date.now() + waitMs;
  let last = "";
  for (;;) {
    try {
      const peers = await resolvePeers(dns);
      if (peers.some((p) => p.id === self)) return peers;
      last = `'${self}' is not among ${peers.map((p) => p.id).join(", ") || "no peers"}`;
    } catch (error) {
      last = (error as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`dns peers: gave up after ${waitMs} ms: ${last}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
