/**
 * A byte range of a registered region, registered again on its own so that a
 * peer can be given a key to exactly those bytes, for as long as the range
 * lives: `close()` deregisters it, and from its return the peer's RDMA
 * operations with that key fail (IBV_WC_REM_ACCESS_ERR on the peer). The
 * memory stays the parent region's (nothing is allocated or freed here, no
 * view is made).
 *
 * This is how the SDP link scopes a zcopy source to one transfer (see
 * `src/sdp/links/rdma.ts`). Memory windows (type 2, IBV_WR_BIND_MW) would be
 * the lighter mechanism, but rxe's responder (Linux 6.1, rxe_resp.c
 * `check_rkey`) checks an access through a window against the range of the
 * window's *memory region*, not the window's own: on Soft-RoCE a window
 * scopes access in time but not in space. A registration of exactly the
 * range is enforced by every device, rxe included.
 *
 * @module
 */
import type { Binding, Ptr } from "../../ffi/mod.ts";
import { readMrInfo, RECORD_SIZES } from "../../ffi/mod.ts";
import { unwrap } from "./errors.ts";
import { type Access, accessBits, type MemoryRegion } from "./memory.ts";
import { create, type Handle } from "./native.ts";

export class RemoteRange {
  readonly #shim: Binding;
  #handle: Handle | undefined;
  readonly #onClose: (r: RemoteRange) => void;
  /** The peer's address of the range's first byte (the parent's address + offset). */
  readonly address: bigint;
  readonly offset: number;
  readonly length: number;
  /** The key that opens exactly these bytes. */
  readonly rkey: number;

  /** @internal use `RdmaConnection.registerRange`. */
  constructor(shim: Binding, conn: Ptr, parent: MemoryRegion, offset: number, length: number, access: Access, onClose: (r: RemoteRange) => void) {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 1 || offset + length > parent.length) {
      throw new RangeError(`range [${offset}, ${offset}+${length}) must lie inside the region's ${parent.length} bytes`);
    }
    this.#shim = shim;
    this.#onClose = onClose;
    this.#handle = create(shim, `ibv_reg_mr(${length} bytes of a region)`, (o) =>
      shim.fn.shim_mr_sub_create(conn, parent.unsafeHandle, offset, length, accessBits(access), o));
    const info = new Uint8Array(RECORD_SIZES.mrInfo);
    unwrap("shim_mr_info", shim.fn.shim_mr_info(this.#handle.ptr, info));
    const rec = readMrInfo(info);
    this.address = rec.address;
    this.rkey = rec.rkey;
    this.offset = offset;
    this.length = length;
  }

  get closed(): boolean {
    return this.#handle === undefined;
  }

  /** Deregisters: the key opens nothing from here on. Idempotent; throws (and stays open) if ibv_dereg_mr fails. */
  close(): void {
    const h = this.#handle;
    if (!h) return;
    unwrap("ibv_dereg_mr", this.#shim.fn.shim_mr_destroy(h.ptr));
    this.#handle = undefined;
    this.#onClose(this);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
