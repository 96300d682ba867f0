/**
 * Errors of the cluster layer.
 *
 * @module
 */

/** The session exists but cannot be served right now (no lease, its holder is unreachable, or it is moving); retry. */
export class SessionUnavailableError extends Error {
  override name = "SessionUnavailableError";
}
