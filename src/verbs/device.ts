/**
 * Devices and their ports, read through the shim's 256-byte device record.
 *
 * @module
 */
import { loadShim, RECORD_SIZES } from "../../ffi/mod.ts";
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
  const dv = new DataView(rec.buffer);
  for (let i = 0; i < n; i++) {
    unwrap("ibv_query_device", shim.fn.shim_device_info(i, rec));
    const u32 = (off: number) => dv.getUint32(off, true);
    const ports: PortInfo[] = [];
    for (let p = 0; p < u32(100); p++) {
      const base = 104 + p * 16;
      const ll = u32(base + 12);
      ports.push({
        port: p + 1,
        state: PORT_STATES[u32(base)] ?? "nop",
        activeMtu: u32(base + 4),
        maxMtu: u32(base + 8),
        linkLayer: ll === 1 ? "infiniband" : ll === 2 ? "ethernet" : "unspecified",
      });
    }
    out.push({
      name: fromCString(rec.subarray(0, 64)),
      nodeGuid: dv.getBigUint64(64, true).toString(16).padStart(16, "0"),
      maxMrSize: dv.getBigUint64(72, true),
      maxQpWr: u32(80),
      maxSge: u32(84),
      maxCqe: u32(88),
      maxQpRdAtom: u32(92),
      maxInlineData: u32(96),
      ports,
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
