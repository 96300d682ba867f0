/**
 * The FFI layer: one symbol table (`symbols.ts`), a Bun and a Deno binding made
 * from it, and a loader that compiles the shim on first use. `loadShim()` is
 * the only entry point; it loads once per process (or per worker).
 *
 * @module
 */
import { loadBinding } from "./loader.ts";
import type { Binding } from "./symbols.ts";

export { buildShim, cacheDir, ShimLoadError, shimHash } from "./loader.ts";
export type { Binding, Ptr, ShimFunctions } from "./symbols.ts";
export { RECORD_SIZES, SHIM_ABI_VERSION, symbols } from "./symbols.ts";
export { CmEventBuffer, CompletionRing, LAYOUTS, readConnInfo, readDeviceInfo, readMrInfo } from "./records.ts";
export type { CmEventRecord, ConnInfoRecord, DeviceInfoRecord, MrInfoRecord, PortInfoRecord, RecordLayout } from "./records.ts";

let loading: Promise<Binding> | undefined;

/** Loads (building if needed) and checks the shim; the same binding every call. */
export function loadShim(): Promise<Binding> {
  loading ??= loadBinding().catch((e) => {
    loading = undefined;
    throw e;
  });
  return loading;
}
