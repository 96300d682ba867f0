/**
 * Session ids: 128 random bits, base64url without padding (22 characters).
 * They contain no `!`, so they fit the `id!primary!secondary` cookie.
 *
 * @module
 */

/** A new random session id. */
export function newSessionId(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
}

const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** True for strings usable as session ids (1..64 base64url characters). */
export function isValidSessionId(id: unknown): id is string {
  return typeof id === "string" && ID_PATTERN.test(id);
}
