/**
 * Registered memory regions. C allocates the memory (page aligned) and
 * registers it with exactly the access asked for; JS gets one view, made once
 * at registration. `close()` detaches the view in the same synchronous step
 * that deregisters and frees the memory (no JS runs in between), so a late
 * access reads `undefined` instead of freed memory; a region whose
 * deregistration fails stays registered, readable and counted.
 *
 * Memory the NIC or the peer writes: read it only after the completion that
 * announced the write was polled (a shim call), or with `Atomics.load` on
 * `u32` when spinning on it (Bun's JIT may hoist plain reads out of a loop).
 *
 * @module
 */
import type { Binding, Ptr } from "../../ffi/mod.ts";
import { readMrInfo, RECORD_SIZES } from "../../ffi/mod.ts";
import { unwrap } from "./errors.ts";
import { create, type Handle } from "./native.ts";

/** Access a region is registered with. Remote write implies local write (a verbs rule). */
export interface Access {
  localWrite?: boolean;
  remoteRead?: boolean;
  remoteWrite?: boolean;
}

export function accessBits(a: Access): number {
  return (a.localWrite ? 1 : 0) | (a.remoteWrite ? 2 : 0) | (a.remoteRead ? 4 : 0);
}

let registered = 0;

/** Bytes of memory registered by this process (in regions not yet closed). */
export function registeredBytes(): number {
  return registered;
}

export class MemoryRegion {
  readonly #shim: Binding;
  #handle: Handle | undefined;
  #buffer: ArrayBuffer;
  #onClose: (mr: MemoryRegion) => void;
  /** The region's bytes (valid until `close()`). */
  readonly bytes: Uint8Array;
  /** A 32-bit view of the same bytes, for `Atomics.load`. */
  readonly u32: Uint32Array;
  /** Virtual address the peer uses in RDMA READ/WRITE. */
  readonly address: bigint;
  readonly length: number;
  readonly lkey: number;
  /** Key the peer needs for remote access (only meaningful with remote access). */
  readonly rkey: number;
  readonly access: Readonly<Access>;

  /** @internal use `RdmaConnection.registerMemory`. */
  constructor(shim: Binding, conn: Ptr, length: number, access: Access, onClose: (mr: MemoryRegion) => void) {
    if (!Number.isInteger(length) || length <= 0 || length > 0xffffffff) {
      throw new RangeError(`'length' must be an integer in 1..4294967295: got ${length}`);
    }
    this.#shim = shim;
    this.#onClose = onClose;
    this.access = { ...access };
    this.#handle = create(shim, `ibv_reg_mr(${length} bytes)`, (o) => shim.fn.shim_mr_create(conn, length, accessBits(access), o));
    const info = new Uint8Array(RECORD_SIZES.mrInfo);
    unwrap("shim_mr_info", shim.fn.shim_mr_info(this.#handle.ptr, info));
    const rec = readMrInfo(info);
    this.address = rec.address;
    this.length = length;
    this.lkey = rec.lkey;
    this.rkey = rec.rkey;
    this.#buffer = shim.view(this.address, length);
    registered += length;
    this.bytes = new Uint8Array(this.#buffer);
    this.u32 = new Uint32Array(this.#buffer, 0, length >>> 2);
  }

  /** Unsafe: the native handle, valid until `close()`. */
  get unsafeHandle(): Ptr {
    if (!this.#handle) throw new Error("memory region is closed");
    return this.#handle.ptr;
  }

  get closed(): boolean {
    return this.#handle === undefined;
  }

  /**
   * Deregisters and frees, then detaches the view. Idempotent. If the
   * deregistration fails, it throws and nothing changes: the memory stays
   * registered (the device may still use it), allocated, readable, counted in
   * `registeredBytes()` and known to its connection; `close()` may be retried.
   */
  close(): void {
    const h = this.#handle;
    if (!h) return;
    unwrap("ibv_dereg_mr", this.#shim.fn.shim_mr_destroy(h.ptr));
    // Freed in C; no JS ran since, and the view goes before any can.
    this.#handle = undefined;
    this.#buffer = this.#buffer.transfer(0);
    registered -= this.length;
    this.#onClose(this);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
