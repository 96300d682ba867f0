/**
 * The session cookie value `id!primary!secondary` (WebLogic's convention): it
 * names where the session lives, so any server can find it after a failure.
 * `secondary` is empty when the session has no backup.
 *
 * @module
 */

import { isValidSessionId } from "../session/ids.ts";
import { isValidPeerId } from "./peers.ts";

/** Where a session lives. */
export interface SessionLocator {
  id: string;
  primary: string;
  secondary: string | undefined;
}

/** Formats a locator as a cookie value. */
export function formatSessionCookie(locator: SessionLocator): string {
  return `${locator.id}!${locator.primary}!${locator.secondary ?? ""}`;
}

/**
 * Parses a cookie value; `undefined` for anything that is not exactly
 * `id!primary!secondary` with a valid id and peer ids (a client-controlled
 * value is never trusted).
 */
export function parseSessionCookie(value: string | undefined | null): SessionLocator | undefined {
  if (!value) return undefined;
  const parts = value.split("!");
  if (parts.length !== 3) return undefined;
  const [id, primary, secondary] = parts;
  if (!isValidSessionId(id) || !isValidPeerId(primary)) return undefined;
  if (secondary !== "" && !isValidPeerId(secondary)) return undefined;
  return { id, primary, secondary: secondary === "" ? undefined : secondary };
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
