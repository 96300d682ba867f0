/**
 * Small helpers shared by the verbs objects: handles from out-parameters and C strings.
 *
 * @module
 */
import type { Binding, Ptr } from "../../ffi/mod.ts";
import { unwrap } from "./errors.ts";

/** A native handle with its address (addresses identify ids in CM events). */
export interface Handle {
  readonly ptr: Ptr;
  readonly address: bigint;
}

/** Calls a shim constructor that writes a pointer into `out`, and returns the handle. */
export function create(shim: Binding, op: string, call: (out: BigUint64Array) => number): Handle {
  const out = new BigUint64Array(1);
  unwrap(op, call(out));
  return { ptr: shim.pointer(out[0]), address: out[0] };
}

const encoder = new TextEncoder();
/** A NUL-terminated copy of `s` for `const char *` parameters. */
export function cString(s: string): Uint8Array {
  const b = new Uint8Array(s.length * 3 + 1);
  const { written } = encoder.encodeInto(s, b);
  return b.subarray(0, written + 1);
}

/** Reads a NUL-terminated string out of `buf`. */
export function fromCString(buf: Uint8Array): string {
  const end = buf.indexOf(0);
  return new TextDecoder().decode(end < 0 ? buf : buf.subarray(0, end));
}
