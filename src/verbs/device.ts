/**
 * Devices and their ports, read through the shim's 256-byte device record.
 *
 * @module
 */
import { loadShim, readDeviceInfo, RECORD_SIZES } from "../../ffi/mod.ts";
import { errnoName, unwrap } from "./errors.ts";
import { fromCString } from "./native.ts";

export type PortState = "down" | "init" | "armed" | "active" | "active_defer" | "nop";
const PORT_STATES: PortState[] = ["nop", "down", "init", "armed", "active", "active_defer"];

export interface PortInfo {
  /** 1-based port number. */
  port: number;
  state: PortState;
  /** Active MTU in bytes. */
  activeMtu: number;
  maxMtu: number;
  linkLayer: "infiniband" | "ethernet" | "unspecified";
}

export interface DeviceInfo {
  name: string;
  nodeGuid: string;
  maxMrSize: bigint;
  maxQpWr: number;
  maxSge: number;
  maxCqe: number;
  /** RDMA READs a queue pair may have outstanding as responder. */
  maxQpRdAtom: number;
  /** Largest inline send a reliable-connected queue pair accepts (probed). */
  maxInlineData: number;
  ports: PortInfo[];
}

/**
 * Lists RDMA devices. An empty list, not an exception, where there is none.
 * Throws `ShimLoadError` when the shim itself cannot be built or loaded.
 */
export async function devices(): Promise<DeviceInfo[]> {
  const shim = await loadShim();
  const n = unwrap("ibv_get_device_list", shim.fn.shim_device_count());
  const out: DeviceInfo[] = [];
  const rec = new Uint8Array(RECORD_SIZES.deviceInfo);
  for (let i = 0; i < n; i++) {
    unwrap("ibv_query_device", shim.fn.shim_device_info(i, rec));
    const d = readDeviceInfo(rec);
    out.push({
      name: fromCString(d.name),
      nodeGuid: d.nodeGuid.toString(16).padStart(16, "0"),
      maxMrSize: d.maxMrSize,
      maxQpWr: d.maxQpWr,
      maxSge: d.maxSge,
      maxCqe: d.maxCqe,
      maxQpRdAtom: d.maxQpRdAtom,
      maxInlineData: d.maxInlineData,
      ports: d.ports.map((p, j) => ({
        port: j + 1,
        state: PORT_STATES[p.state] ?? "nop",
        activeMtu: p.activeMtu,
        maxMtu: p.maxMtu,
        linkLayer: p.linkLayer === 1 ? "infiniband" : p.linkLayer === 2 ? "ethernet" : "unspecified",
      })),
    });
  }
  return out;
}

/**
 * How the rdma link scopes the peer's access to its zcopy source on device
 * `index`: `"per-transfer region"` when a byte range of a registered buffer
 * can be registered again on its own with remote read (each SrcAvail's bytes
 * are, until RdmaRdCompl or SendSM: src/sdp/links/rdma.ts), else `"whole
 * arena"` with the errno that said no. Each link probes again when it
 * connects and reports what it got in `stats().remoteAccess`.
 */
export async function remoteAccessProbe(index: number): Promise<{ remoteAccess: "per-transfer region" | "whole arena"; reason?: string }> {
  const shim = await loadShim();
  const rc = shim.fn.shim_device_range_probe(index);
  if (rc === 0) return { remoteAccess: "per-transfer region" };
  return { remoteAccess: "whole arena", reason: `registering a byte range again with remote read failed: ${errnoName(rc)} (${-rc})` };
}

/** True when some device has an active port. */
export async function hasActiveDevice(): Promise<boolean> {
  try {
    return (await devices()).some((d) => d.ports.some((p) => p.state === "active"));
  } catch {
    return false;
  }
}
