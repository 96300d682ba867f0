/**
 * Taking a session over: what a server does when a request names a session
 * it is not the primary of. It asks, in order, the server a local redirect
 * names, the cookie's primary and secondary (hints), then every other live
 * peer, with `handover`; follows `moved` at most 3 hops; adopts the first
 * copy handed over (at the epoch the giver granted). If a holder could not
 * be asked or answered `unavailable`, or this server holds the replica
 * itself (its promotion is pending), the request gets
 * `SessionUnavailableError` (503); only when every holder answered `missing`
 * is the session reported lost. The serving side is `peer_methods.ts`.
 *
 * @module
 */

import type { SessionRecord } from "../session/types.ts";
import { parseUpdate } from "../session/update.ts";
import type { ClusterContext, HandoverReply } from "./context.ts";
import type { SessionLocator } from "./cookie.ts";

export async function takeOver(ctx: ClusterContext, locator: SessionLocator): Promise<SessionRecord | undefined> {
  const { id } = locator;
  ctx.requireLease(`take session '${id}' over`);
  const local = ctx.store.get(id);
  const hints = [
    local?.role === "moved" || local?.role === "replica" ? local.primary : undefined,
    locator.primary,
    locator.secondary,
    ...ctx.node.alivePeers().map((p) => p.id),
  ];
  const asked = new Set<string>([ctx.self]);
  const answers: string[] = [];
  let unavailable: string | undefined;
  for (const hint of hints) {
    let holder = hint;
    for (let hop = 0; hop < 4 && holder !== undefined; hop++) {
      if (asked.has(holder) || !ctx.node.peers.has(holder)) break;
      asked.add(holder);
      if (!ctx.node.isAlive(holder)) {
        // Unreachable but not certified dead: it may hold the session.
        if (!ctx.node.membership.isDead(holder)) unavailable ??= `'${holder}' is unreachable`;
        break;
      }
      const reply = await askHandover(ctx, holder, id);
      answers.push(`${holder}: ${reply?.status ?? "no answer"}`);
      if (reply === undefined) {
        unavailable ??= `'${holder}' did not answer`;
        break;
      }
      switch (reply.status) {
        case "found": {
          ctx.requireLease(`take session '${id}' over`);
          const secondary = reply.secondary ?? undefined;
          const record = ctx.store.adopt(reply.snapshot, secondary === ctx.self ? undefined : secondary);
          ctx.ensureSecondary(record);
          ctx.counts.migrated++;
          return record;
        }
        case "moved":
          holder = reply.to;
          continue;
        case "expired":
          return undefined;
        case "unavailable":
          unavailable ??= `'${holder}': ${reply.reason}`;
          break;
        case "missing":
          break;
      }
      break;
    }
  }
  const held = ctx.store.get(id);
  // Promoted here while we were asking around (its primary was certified dead meanwhile).
  if (held?.role === "primary" && !held.expired) return held;
  if (held?.role === "replica" && !held.expired) {
    // We hold the copy: its primary is alive and did not hand it over, or is dead and the promotion is pending.
    unavailable ??= `this server holds its replica; its primary '${held.primary}' has not handed it over or been promoted from yet`;
  }
  if (unavailable !== undefined) throw ctx.unavailable(`session '${id}' cannot be taken over now (${unavailable}); try again`);
  ctx.counts.lost++;
  ctx.logger.warn(`cluster ${ctx.self}: session '${id}' not found anywhere (${answers.join(", ") || "no holder to ask"})`);
  return undefined;
}

async function askHandover(ctx: ClusterContext, peer: string, id: string): Promise<HandoverReply | undefined> {
  const endpoint = ctx.node.endpoint(peer);
  if (endpoint === undefined) return undefined;
  try {
    const reply = await endpoint.call("handover", { id }, { ack: "applied", timeoutMs: ctx.fetchTimeoutMs });
    return checkHandoverReply(reply, id);
  } catch (error) {
    ctx.logger.warn(`cluster ${ctx.self}: handover of session '${id}' from '${peer}' failed: ${(error as Error).message}`);
    return undefined;
  }
}

function checkHandoverReply(value: unknown, id: string): HandoverReply {
  const reply = value as HandoverReply | null;
  switch (reply?.status) {
    case "found": {
      const snapshot = parseUpdate(reply.snapshot);
      if (snapshot.kind !== "snapshot") throw new Error("handover reply 'snapshot' must be a snapshot");
      if (snapshot.id !== id) throw new Error(`handover reply is for session '${snapshot.id}', not '${id}'`);
      if (reply.secondary !== null && typeof reply.secondary !== "string") throw new Error("handover reply 'secondary' must be a peer id or null");
      return reply;
    }
    case "moved":
      if (typeof reply.to !== "string") throw new Error("handover reply 'to' must be a peer id");
      return reply;
    case "unavailable":
      return { status: "unavailable", reason: String(reply.reason) };
    case "expired":
    case "missing":
      return reply;
    default:
      throw new Error(`handover reply 'status' must be found, expired, missing, unavailable or moved: got ${JSON.stringify(reply)}`);
  }
}
