/**
 * Errors of the session layer.
 *
 * @module
 */

/** A session would exceed `maxSessionBytes` once encoded. */
export class SessionTooLargeError extends Error {
  override name = "SessionTooLargeError";
  constructor(readonly sessionId: string, readonly bytes: number, readonly limit: number) {
    super(
      `session '${sessionId}' would be ${bytes} bytes encoded, over the limit 'maxSessionBytes' = ${limit}`,
    );
  }
}

/** An update or option broke a rule of the session layer (bad shape, bad value). */
export class SessionUpdateError extends Error {
  override name = "SessionUpdateError";
}
