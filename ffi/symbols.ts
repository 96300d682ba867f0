/**
 * The one symbol table of the C shim (c_shim/shim.h), with the C prototype
 * beside every parameter. The Bun and Deno bindings are both made from it.
 *
 * Parameter kinds:
 * - `ptr`: an opaque handle made by the shim (a `struct shim_*` or `rdma_cm_id` pointer);
 * - `buf`: a typed array the call reads or writes during the call only;
 * - `u32` / `i32`: 32-bit integers (hot-path arguments are all 32-bit: Deno's
 *   64-bit number path was measured about 10× slower when this table was written).
 *
 * @module
 */

export type ParamKind = "ptr" | "buf" | "u32" | "i32";

export interface SymbolSpec {
  readonly parameters: readonly ParamKind[];
  /** Every shim function returns an i32: 0 or a count on success, -errno on failure. */
  readonly result: "i32";
}

/** ABI version the loader requires (`SHIM_ABI_VERSION` in shim.h). */
export const SHIM_ABI_VERSION = 2;

export const symbols = {
  // int shim_abi_version(void)
  shim_abi_version: { parameters: [], result: "i32" },
  shim_record_sizes: {
    parameters: [
      "buf", // uint32_t *out4
    ],
    result: "i32",
  },

  // int shim_device_count(void)
  shim_device_count: { parameters: [], result: "i32" },
  shim_device_info: {
    parameters: [
      "u32", // uint32_t index
      "buf", // struct shim_device_info *out
    ],
    result: "i32",
  },

  // ABI 2: 0 when a byte range of a registered buffer can be registered again with remote read, else -errno
  shim_device_range_probe: {
    parameters: [
      "u32", // uint32_t index
    ],
    result: "i32",
  },

  shim_channel_create: {
    parameters: [
      "buf", // struct shim_channel **out
    ],
    result: "i32",
  },
  shim_channel_fd: {
    parameters: [
      "ptr", // struct shim_channel *ch
    ],
    result: "i32",
  },
  shim_channel_get_event: {
    parameters: [
      "ptr", // struct shim_channel *ch
      "buf", // struct shim_cm_event *out
    ],
    result: "i32",
  },
  shim_id_create: {
    parameters: [
      "ptr", // struct shim_channel *ch
      "buf", // struct rdma_cm_id **out
    ],
    result: "i32",
  },
  shim_id_bind_listen: {
    parameters: [
      "ptr", // struct rdma_cm_id *id
      "buf", // const char *host (NUL-terminated)
      "u32", // uint32_t port
      "i32", // int32_t backlog
    ],
    result: "i32",
  },
  shim_id_resolve_addr: {
    parameters: [
      "ptr", // struct rdma_cm_id *id
      "buf", // const char *host (NUL-terminated)
      "u32", // uint32_t port
      "u32", // uint32_t timeout_ms
    ],
    result: "i32",
  },
  shim_id_resolve_route: {
    parameters: [
      "ptr", // struct rdma_cm_id *id
      "u32", // uint32_t timeout_ms
    ],
    result: "i32",
  },
  shim_id_connect: {
    parameters: [
      "ptr", // struct rdma_cm_id *id
      "buf", // const uint8_t *pdata
      "u32", // uint32_t pdata_len (<= 56)
    ],
    result: "i32",
  },
  shim_id_accept: {
    parameters: [
      "ptr", // struct rdma_cm_id *id
      "buf", // const uint8_t *pdata
      "u32", // uint32_t pdata_len (<= 196)
    ],
    result: "i32",
  },
  shim_id_reject: {
    parameters: [
      "ptr", // struct rdma_cm_id *id
      "buf", // const uint8_t *pdata
      "u32", // uint32_t pdata_len (<= 148)
    ],
    result: "i32",
  },
  shim_id_disconnect: {
    parameters: [
      "ptr", // struct rdma_cm_id *id
    ],
    result: "i32",
  },
  shim_id_address: {
    parameters: [
      "ptr", // struct rdma_cm_id *id
      "u32", // uint32_t remote (0 local, 1 remote)
      "buf", // char *buf
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  shim_id_destroy: {
    parameters: [
      "ptr", // struct rdma_cm_id *id
    ],
    result: "i32",
  },

  shim_conn_create: {
    parameters: [
      "ptr", // struct rdma_cm_id *id
      "u32", // uint32_t send_depth
      "u32", // uint32_t recv_depth
      "u32", // uint32_t max_inline
      "buf", // struct shim_conn **out
    ],
    result: "i32",
  },
  shim_conn_info: {
    parameters: [
      "ptr", // struct shim_conn *c
      "buf", // struct shim_conn_info *out
    ],
    result: "i32",
  },
  shim_conn_destroy: {
    parameters: [
      "ptr", // struct shim_conn *c
    ],
    result: "i32",
  },

  shim_mr_create: {
    parameters: [
      "ptr", // struct shim_conn *c
      "u32", // uint32_t length
      "u32", // uint32_t access (SHIM_ACCESS_*)
      "buf", // struct shim_mr **out
    ],
    result: "i32",
  },
  shim_mr_info: {
    parameters: [
      "ptr", // struct shim_mr *mr
      "buf", // struct shim_mr_info *out
    ],
    result: "i32",
  },
  shim_mr_destroy: {
    parameters: [
      "ptr", // struct shim_mr *mr
    ],
    result: "i32",
  },
  // ABI 2: exactly parent[off, off+len) registered on its own (a per-transfer remote key)
  shim_mr_sub_create: {
    parameters: [
      "ptr", // struct shim_conn *c
      "ptr", // struct shim_mr *parent
      "u32", // uint32_t off
      "u32", // uint32_t len
      "u32", // uint32_t access (SHIM_ACCESS_*)
      "buf", // struct shim_mr **out
    ],
    result: "i32",
  },

  shim_post_send: {
    parameters: [
      "ptr", // struct shim_conn *c
      "ptr", // struct shim_mr *mr
      "u32", // uint32_t off
      "u32", // uint32_t len
      "u32", // uint32_t wr_id
      "u32", // uint32_t flags (SHIM_SEND_*)
    ],
    result: "i32",
  },
  shim_post_recv: {
    parameters: [
      "ptr", // struct shim_conn *c
      "ptr", // struct shim_mr *mr
      "u32", // uint32_t off
      "u32", // uint32_t len
      "u32", // uint32_t wr_id
    ],
    result: "i32",
  },
  shim_post_read: {
    parameters: [
      "ptr", // struct shim_conn *c
      "ptr", // struct shim_mr *mr (local sink)
      "u32", // uint32_t off
      "u32", // uint32_t len
      "u32", // uint32_t raddr_hi
      "u32", // uint32_t raddr_lo
      "u32", // uint32_t rkey
      "u32", // uint32_t wr_id
      "u32", // uint32_t flags
    ],
    result: "i32",
  },
  shim_post_write: {
    parameters: [
      "ptr", // struct shim_conn *c
      "ptr", // struct shim_mr *mr (local source)
      "u32", // uint32_t off
      "u32", // uint32_t len
      "u32", // uint32_t raddr_hi
      "u32", // uint32_t raddr_lo
      "u32", // uint32_t rkey
      "u32", // uint32_t wr_id
      "u32", // uint32_t flags
    ],
    result: "i32",
  },
  shim_poll: {
    parameters: [
      "ptr", // struct shim_conn *c
      "u32", // uint32_t max
    ],
    result: "i32",
  },
  shim_arm: {
    parameters: [
      "ptr", // struct shim_conn *c
    ],
    result: "i32",
  },
  shim_ack_events: {
    parameters: [
      "ptr", // struct shim_conn *c
    ],
    result: "i32",
  },

  shim_waitset_create: {
    parameters: [
      "buf", // struct shim_waitset **out
    ],
    result: "i32",
  },
  shim_waitset_add: {
    parameters: [
      "ptr", // struct shim_waitset *ws
      "i32", // int32_t fd
    ],
    result: "i32",
  },
  shim_waitset_remove: {
    parameters: [
      "ptr", // struct shim_waitset *ws
      "i32", // int32_t fd
    ],
    result: "i32",
  },
  shim_waitset_wait: {
    parameters: [
      "ptr", // struct shim_waitset *ws
      "i32", // int32_t timeout_ms (blocking: call it off the main thread)
    ],
    result: "i32",
  },
  shim_waitset_wake: {
    parameters: [
      "ptr", // struct shim_waitset *ws
    ],
    result: "i32",
  },
} as const satisfies Record<string, SymbolSpec>;

export type SymbolTable = typeof symbols;

/** An opaque native handle. Its representation differs per runtime; never inspect it. */
export type Ptr = { readonly __nativeHandle: unique symbol };

type ArgOf<K extends ParamKind> = K extends "ptr" ? Ptr : K extends "buf" ? ArrayBufferView : number;
type ArgsOf<P extends readonly ParamKind[]> = { -readonly [I in keyof P]: ArgOf<P[I]> };

/** The shim's functions, typed from the table. */
export type ShimFunctions = {
  [K in keyof SymbolTable]: (...args: ArgsOf<SymbolTable[K]["parameters"]>) => number;
};

/** What each runtime binding provides. */
export interface Binding {
  readonly runtime: "bun" | "deno";
  readonly fn: ShimFunctions;
  /** A handle from an address the shim wrote into an out-parameter. */
  pointer(address: bigint): Ptr;
  /** A zero-copy view of `length` bytes of C memory at `address`. Make it once per region. */
  view(address: bigint, length: number): ArrayBuffer;
  close(): void;
}
