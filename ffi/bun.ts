/**
 * Bun binding of the shim's symbol table. Loaded only through a dynamic
 * `import()` in the Bun branch of the loader: a static `bun:ffi` import breaks Deno.
 *
 * @module
 */
import { dlopen, FFIType, toArrayBuffer } from "bun:ffi";
import type { Binding, ParamKind, Ptr, ShimFunctions } from "./symbols.ts";
import { symbols } from "./symbols.ts";

const kinds: Record<ParamKind, FFIType> = {
  ptr: FFIType.ptr,
  buf: FFIType.ptr,
  u32: FFIType.u32,
  i32: FFIType.i32,
};

export function bindBun(path: string): Binding {
  const table = Object.fromEntries(
    Object.entries(symbols).map(([name, spec]) => [
      name,
      { args: spec.parameters.map((k) => kinds[k]), returns: FFIType.i32 },
    ]),
  );
  const lib = dlopen(path, table);
  return {
    runtime: "bun",
    fn: lib.symbols as unknown as ShimFunctions,
    pointer: (address) => Number(address) as unknown as Ptr,
    view: (address, length) => toArrayBuffer(Number(address) as never, 0, length),
    close: () => lib.close(),
  };
}
