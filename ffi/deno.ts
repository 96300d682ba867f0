/**
 * Deno binding of the shim's symbol table (`Deno.dlopen`).
 *
 * @module
 */
import type { Binding, ParamKind, Ptr, ShimFunctions } from "./symbols.ts";
import { symbols } from "./symbols.ts";

const kinds: Record<ParamKind, Deno.NativeType> = {
  ptr: "pointer",
  buf: "buffer",
  u32: "u32",
  i32: "i32",
};

export function bindDeno(path: string): Binding {
  const table = Object.fromEntries(
    Object.entries(symbols).map(([name, spec]) => [
      name,
      { parameters: spec.parameters.map((k) => kinds[k]), result: "i32" as const },
    ]),
  );
  const lib = Deno.dlopen(path, table);
  return {
    runtime: "deno",
    fn: lib.symbols as unknown as ShimFunctions,
    pointer: (address) => Deno.UnsafePointer.create(address) as unknown as Ptr,
    view: (address, length) => {
      const p = Deno.UnsafePointer.create(address);
      if (p === null) throw new TypeError("view of a null address");
      return Deno.UnsafePointerView.getArrayBuffer(p, length);
    },
    close: () => lib.close(),
  };
}
