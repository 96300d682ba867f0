/**
 * The one place that turns shim return codes and completion statuses into errors.
 *
 * @module
 */
/** Errno names for the codes rdma_cm and verbs commonly return (Linux x86-64). */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM", 2: "ENOENT", 4: "EINTR", 5: "EIO", 11: "EAGAIN", 12: "ENOMEM", 13: "EACCES", 14: "EFAULT",
  16: "EBUSY", 19: "ENODEV", 22: "EINVAL", 28: "ENOSPC", 34: "ERANGE", 38: "ENOSYS", 90: "EMSGSIZE",
  95: "EOPNOTSUPP", 98: "EADDRINUSE", 99: "EADDRNOTAVAIL", 101: "ENETUNREACH", 103: "ECONNABORTED",
  104: "ECONNRESET", 107: "ENOTCONN", 110: "ETIMEDOUT", 111: "ECONNREFUSED", 113: "EHOSTUNREACH",
};

/** Name of an errno value, e.g. `ETIMEDOUT`. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[Math.abs(errno)] ?? `errno ${Math.abs(errno)}`;
}

/** A shim call failed: names the operation and the errno, e.g. `rdma_resolve_addr failed: ETIMEDOUT (110)`. */
export class RdmaError extends Error {
  /** Positive errno. */
  readonly errno: number;
  readonly code: string;
  constructor(readonly op: string, errno: number, detail?: string) {
    const e = Math.abs(errno);
    super(`${op} failed: ${errnoName(e)} (${e})${detail ? `: ${detail}` : ""}`);
    this.name = e === 95 || e === 38 ? "RdmaNotSupportedError" : "RdmaError";
    this.errno = e;
    this.code = errnoName(e);
  }
}

/** ibv_wc_status names (verbs.h order). */
export const WC_STATUS_NAMES = [
  "IBV_WC_SUCCESS", "IBV_WC_LOC_LEN_ERR", "IBV_WC_LOC_QP_OP_ERR", "IBV_WC_LOC_EEC_OP_ERR",
  "IBV_WC_LOC_PROT_ERR", "IBV_WC_WR_FLUSH_ERR", "IBV_WC_MW_BIND_ERR", "IBV_WC_BAD_RESP_ERR",
  "IBV_WC_LOC_ACCESS_ERR", "IBV_WC_REM_INV_REQ_ERR", "IBV_WC_REM_ACCESS_ERR", "IBV_WC_REM_OP_ERR",
  "IBV_WC_RETRY_EXC_ERR", "IBV_WC_RNR_RETRY_EXC_ERR", "IBV_WC_LOC_RDD_VIOL_ERR",
  "IBV_WC_REM_INV_RD_REQ_ERR", "IBV_WC_REM_ABORT_ERR", "IBV_WC_INV_EECN_ERR", "IBV_WC_INV_EEC_STATE_ERR",
  "IBV_WC_FATAL_ERR", "IBV_WC_RESP_TIMEOUT_ERR", "IBV_WC_GENERAL_ERR",
] as const;

/** A work request completed with an error status; `status` is the ibv_wc_status name. */
export class WorkCompletionError extends Error {
  readonly status: string;
  constructor(readonly op: string, readonly statusCode: number, readonly vendorErr = 0) {
    const name = WC_STATUS_NAMES[statusCode] ?? `status ${statusCode}`;
    super(`${op} completed with ${name} (${statusCode})${statusCode === 10 ? ": remote access error (wrong rkey, address or access rights)" : ""}`);
    this.name = "WorkCompletionError";
    this.status = name;
  }
}

/** The connection closed (locally or by the peer) before the operation completed. */
export class ConnectionClosedError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConnectionClosedError";
  }
}

/** Throws an RdmaError for a negative return code; returns non-negative codes. */
export function unwrap(op: string, rc: number): number {
  if (rc < 0) throw new RdmaError(op, rc);
  return rc;
}
