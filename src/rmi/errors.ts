/**
 * Errors of the RMI layer.
 *
 * @module
 */

/** The remote method failed (unknown method, bad arguments, or it threw); `message` is the remote text. */
export class RemoteError extends Error {
  override name = "RemoteError";
  constructor(readonly method: string, remoteMessage: string) {
    super(`remote call '${method}' failed: ${remoteMessage}`);
  }
}

/** The endpoint closed before the call was acknowledged. */
export class RmiClosedError extends Error {
  override name = "RmiClosedError";
}

/** An `applied` call got no REPLY within its timeout. */
export class RmiTimeoutError extends Error {
  override name = "RmiTimeoutError";
}
