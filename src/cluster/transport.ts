/**
 * The cluster's use of the socket layer: listen for peers and dial a peer,
 * over the transport named in the peer list (`auto` by default: rdma where a
 * device is up, else tcp).
 *
 * @module
 */

import { connect, listen } from "../sdp/mod.ts";
import type { MessageListener, MessageSocket, TransportChoice } from "../sdp/types.ts";
import type { PeerConfig } from "./peers.ts";
import type { TlsConfig } from "../sdp/links/tls.ts";

/** Where this server listens for peers. */
export interface PeerListenOptions {
  /** @default "auto" */
  transport?: TransportChoice;
  /** @default "127.0.0.1" */
  host?: string;
  /** 0 picks a free port (read it from `listener.address.port`). @default 0 */
  port?: number;
  /** TLS for tcp peers (mutual certificates; the cluster secret still authenticates peers). @default plain tcp */
  tls?: TlsConfig;
}

/** Listens for peer connections. */
export function listenForPeers(options: PeerListenOptions = {}): Promise<MessageListener> {
  // preAuth: small buffers until the peer authenticates (ClusterNode calls socket.trust()).
  return listen({ transport: options.transport ?? "auto", host: options.host ?? "127.0.0.1", port: options.port ?? 0, tls: options.tls, preAuth: true });
}

/** Opens a socket to `peer` with its transport, else `fallback` (with TLS over tcp when `tls` is given). */
export function dialPeer(peer: PeerConfig, fallback: TransportChoice = "auto", tls?: TlsConfig): Promise<MessageSocket> {
  return connect({ transport: peer.transport ?? fallback, host: peer.host, port: peer.port, tls, preAuth: true });
}
