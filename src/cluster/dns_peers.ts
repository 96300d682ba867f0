/**
 * Cluster membership from DNS, as a Kubernetes headless Service publishes it.
 *
 * - **SRV** (`_port._proto.service…`, one record per pod, for a named port):
 *   each target is a peer; its id is the target's first label (a
 *   StatefulSet's stable pod name, `sessions-0`), its address the target's A
 *   record, its port the record's. This is the mode to use on Kubernetes:
 *   ids survive restarts and rescheduling.
 * - **A / AAAA** (one record per ready pod) with a configured port: each
 *   address is a peer whose id is the address itself.
 *
 * Identity never depends on record order: peers are sorted by id. Set
 * `publishNotReadyAddresses: true` on the Service so peers find each other
 * before they are ready (readiness should follow `waitForPeers`).
 *
 * Membership changes are not a consensus reconfiguration: a peer that
 * appears joins the lease majority at once, and one that vanishes is treated
 * as down (it is dialed no more, and certified dead once a majority agrees)
 * but still counts toward the majority. Grow a cluster one server at a time.
 *
 * @module
 */

import { Resolver } from "node:dns/promises";
import type { TransportChoice } from "../sdp/types.ts";
import { isValidPeerId, type PeerConfig } from "./peers.ts";

/** Where the peer list comes from. */
export interface DnsPeersOptions {
  /** The name to look up: an SRV name (`_sessions._tcp.sessions.default.svc.cluster.local`) or a headless Service name. */
  name: string;
  /** @default "SRV" */
  record?: "SRV" | "A" | "AAAA";
  /** Port of every peer (A/AAAA only; SRV records carry their own). */
  port?: number;
  /** Transport of the peers found. @default the cluster's */
  transport?: TransportChoice;
  /** Name servers as `host:port`. @default the system's */
  nameServers?: string[];
  /** How often to look again (also after a peer goes down). @default 5000 */
  refreshMs?: number;
}

/** Looks the peers up once; sorted by id. Rejects naming the name and record type when the lookup fails. */
export async function resolvePeers(options: DnsPeersOptions): Promise<PeerConfig[]> {
  const resolver = new Resolver();
  if (options.nameServers?.length) resolver.setServers(options.nameServers);
  const record = options.record ?? "SRV";
  const peers: PeerConfig[] = [];
  try {
    if (record === "SRV") {
      const targets = await resolver.resolveSrv(options.name);
      for (const t of targets) {
        const name = t.name.replace(/\.$/, "");
        const id = name.split(".")[0];
        if (!isValidPeerId(id)) throw new Error(`SRV target '${t.name}' does not start with a valid peer id`);
        const [host] = await resolver.resolve4(name).catch(() => resolver.resolve6(name));
        peers.push({ id, host, port: t.port, transport: options.transport });
      }
    } else {
      if (options.port === undefined) throw new TypeError(`dns peers: 'port' is required with ${record} records`);
      const addresses = record === "A" ? await resolver.resolve4(options.name) : await resolver.resolve6(options.name);
      for (const host of addresses) {
        const id = host.replaceAll(":", "-");
        peers.push({ id, host, port: options.port, transport: options.transport });
      }
    }
  } catch (error) {
    throw new Error(`dns peers: ${record} lookup of '${options.name}' failed: ${(error as Error).message}`, { cause: error });
  }
  const byId = new Map(peers.map((p) => [p.id, p]));
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
