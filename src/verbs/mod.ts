/**
 * Verbs objects over the shim: devices, connections through rdma_cm,
 * registered memory regions, post operations and completion polling.
 *
 * @module
 */
export { devices, hasActiveDevice, remoteAccessProbe } from "./device.ts";
export type { DeviceInfo, PortInfo, PortState } from "./device.ts";
export { connect, ConnectionRequest, listen, RdmaListener } from "./cm.ts";
export type { ConnectOptions, ListenOptions } from "./cm.ts";
export { OPCODE, RdmaConnection } from "./connection.ts";
export type { Completion, ConnectionOptions } from "./connection.ts";
export { MemoryRegion, registeredBytes } from "./memory.ts";
export { RemoteRange } from "./remote_range.ts";
export type { Access } from "./memory.ts";
export { ConnectionClosedError, errnoName, RdmaError, WC_STATUS_NAMES, WorkCompletionError } from "./errors.ts";
