/**
 * The session cookie value `id!primary!secondary!mac` (WebLogic's routing
 * convention, signed): it names where the session lives, so any server can
 * find it after a failure, and a load balancer can route on it. `secondary`
 * is empty when the session has no backup.
 *
 * The routing fields are hints, never authority: servers ask the holders they
 * name, which answer from their own records. The MAC (HMAC-SHA256 with a key
 * derived from the cluster secret, over `id!primary!secondary`, 128 bits,
 * base64url) makes a cookie that a client edited or made up start a fresh
 * session: nothing is looked up or fetched for it. Session ids are 128
 * random bits, so a valid id cannot be guessed either.
 *
 * @module
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import { isValidSessionId } from "../session/ids.ts";
import { isValidPeerId } from "./peers.ts";

/** Where a session lives. */
export interface SessionLocator {
  id: string;
  primary: string;
  secondary: string | undefined;
}

/** Formats a locator's routing fields (`id!primary!secondary`, no MAC). */
export function formatSessionCookie(locator: SessionLocator): string {
  return `${locator.id}!${locator.primary}!${locator.secondary ?? ""}`;
}

/**
 * Reads the routing fields of a cookie value (`id!primary!secondary`, with or
 * without the MAC), without checking the MAC: for load balancers, logs and
 * tests. `undefined` for anything malformed. Servers use `SessionCookieSigner.verify`.
 */
export function parseSessionCookie(value: string | undefined | null): SessionLocator | undefined {
  if (!value) return undefined;
  const parts = value.split("!");
  if (parts.length !== 3 && parts.length !== 4) return undefined;
  const [id, primary, secondary] = parts;
  if (!isValidSessionId(id) || !isValidPeerId(primary)) return undefined;
  if (secondary !== "" && !isValidPeerId(secondary)) return undefined;
  return { id, primary, secondary: secondary === "" ? undefined : secondary };
}

const MAC_BYTES = 16;

/** Signs and verifies session cookies with a key derived from the cluster secret. */
export class SessionCookieSigner {
  #key: Buffer;

  constructor(secret: string | Uint8Array) {
    this.#key = createHmac("sha256", secret).update("rdma-sessions/cookie-key/v1").digest();
  }

  /** The signed cookie value `id!primary!secondary!mac`. */
  format(locator: SessionLocator): string {
    const fields = formatSessionCookie(locator);
    return `${fields}!${this.#mac(fields).toString("base64url")}`;
  }

  /** The locator of a signed cookie value, or `undefined` if it is malformed or its MAC does not match. */
  verify(value: string | undefined | null): SessionLocator | undefined {
    if (!value) return undefined;
    const cut = value.lastIndexOf("!");
    if (cut < 0 || value.split("!").length !== 4) return undefined;
    const locator = parseSessionCookie(value.slice(0, cut));
    if (locator === undefined) return undefined;
    // Compared as text: base64url decoding ignores the unused bits of the last character, so
    // comparing decoded bytes would accept several spellings of one MAC.
    const given = Buffer.from(value.slice(cut + 1));
    const expected = Buffer.from(this.#mac(value.slice(0, cut)).toString("base64url"));
    if (given.byteLength !== expected.byteLength || !timingSafeEqual(given, expected)) return undefined;
    return locator;
  }

  #mac(fields: string): Buffer {
    return createHmac("sha256", this.#key).update(fields).digest().subarray(0, MAC_BYTES);
  }
}

/** Reads cookie `name` from a `Cookie` request header. */
export function readCookie(header: string | null, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
