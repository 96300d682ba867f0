/**
 * Validation of replication updates received from a peer. An update arrives
 * as whatever the codec decoded; nothing is trusted until it has the shape of
 * `ReplicationUpdate`.
 *
 * @module
 */

import { SessionUpdateError } from "./errors.ts";
import { isValidSessionId } from "./ids.ts";
import type { Attributes, ReplicationUpdate } from "./types.ts";

/** Checks that `value` is a well-formed update; throws `SessionUpdateError` naming the broken rule. */
export function parseUpdate(value: unknown): ReplicationUpdate {
  if (typeof value !== "object" || value === null) {
    throw new SessionUpdateError(`replication update must be an object: got ${typeof value}`);
  }
  const u = value as Record<string, unknown>;
  if (!isValidSessionId(u.id)) throw new SessionUpdateError(`update 'id' must be a session id: got ${show(u.id)}`);
  counter(u, "epoch", 1);
  counter(u, "version", 0);
  if (typeof u.primary !== "string" || u.primary.length === 0) {
    throw new SessionUpdateError(`update 'primary' must be a peer id: got ${show(u.primary)}`);
  }
  switch (u.kind) {
    case "tombstone":
      return value as ReplicationUpdate;
    case "snapshot":
      timing(u);
      attributes(u, "attributes");
      return value as ReplicationUpdate;
    case "delta": {
      timing(u);
      counter(u, "base", 0);
      if ((u.base as number) >= (u.version as number)) {
        throw new SessionUpdateError(`delta 'base' must be below 'version': got ${u.base} >= ${u.version}`);
      }
      attributes(u, "set");
      if (!Array.isArray(u.del) || !u.del.every((k) => typeof k === "string")) {
        throw new SessionUpdateError(`delta 'del' must be an array of strings: got ${show(u.del)}`);
      }
      return value as ReplicationUpdate;
    }
    default:
      throw new SessionUpdateError(`update 'kind' must be snapshot, delta or tombstone: got ${show(u.kind)}`);
  }
}

function counter(u: Record<string, unknown>, field: string, min: number): void {
  const v = u[field];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    throw new SessionUpdateError(`update '${field}' must be an integer >= ${min}: got ${show(v)}`);
  }
}

function timing(u: Record<string, unknown>): void {
  for (const field of ["lastAccess", "maxIdleMs"]) {
    const v = u[field];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new SessionUpdateError(`update '${field}' must be a non-negative number: got ${show(v)}`);
    }
  }
}

function attributes(u: Record<string, unknown>, field: string): void {
  const v = u[field];
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new SessionUpdateError(`update '${field}' must be an object of attributes: got ${show(v)}`);
  }
  void (v as Attributes);
}

function show(v: unknown): string {
  try {
    const text = JSON.stringify(v);
    return text === undefined ? String(v) : text.length > 60 ? text.slice(0, 57) + "..." : text;
  } catch {
    return String(v);
  }
}
