/**
 * The FFI layer: one symbol table (`symbols.ts`), a Bun and a Deno binding made
 * from it, and a loader that compiles the shim on first use. `loadShim()` is
 * the only entry point; it loads once per process (or per worker).
 *
 * @module
 */
import { loadBinding } from "./loader.ts";
import type { Binding } from "./symbols.ts";

export { ShimLoadError } from "./loader.ts";
export type { Binding, Ptr, ShimFunctions } from "./symbols.ts";
export { SHIM_ABI_VERSION } from "./symbols.ts";
export { CmEventBuffer, type CmEventRecord, CompletionRing, readConnInfo, readDeviceInfo, readMrInfo, RECORD_SIZES } from "./records.ts";

let loading: Promise<Binding> | undefined;

/** Loads (building if needed) and checks the shim; the same binding every call. */
export function loadShim(): Promise<Binding> {
  loading ??= loadBinding().catch((e) => {
    loading = undefined;
    throw e;
  });
  return loading;
}
