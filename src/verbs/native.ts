/**
 * Small helpers shared by the verbs objects: handles from out-parameters, C
 * strings, and the cm id's address and destruction (used by cm.ts and
 * connection.ts both).
 *
 * @module
 */
import type { Binding, Ptr } from "../../ffi/mod.ts";
import { unwrap } from "./errors.ts";
import type { Progress } from "./progress.ts";

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

/** The local or remote address of a cm id, `host:port`. */
export function idAddress(shim: Binding, id: Ptr, remote: boolean): string {
  const b = new Uint8Array(80);
  shim.fn.shim_id_address(id, remote ? 1 : 0, b, b.length);
  return fromCString(b);
}

/** Forgets the id's CM event handler and destroys the id. */
export function destroyId(shim: Binding, progress: Pick<Progress, "offCmEvent">, id: Handle): void {
  progress.offCmEvent(id.address);
  shim.fn.shim_id_destroy(id.ptr);
}
