/**
 * The session methods a server serves to its authenticated peers (one-way
 * RMI): `replicate`, `resync`, `handover`, `rebind`, `fenced`. The rules
 * they keep are at the top of `session_cluster.ts`; the asking side of a
 * handover is `takeover.ts`. (Heartbeats, votes and death notices are the
 * node's: `node.ts`.)
 *
 * @module
 */

import type { CallContext, MethodTable } from "../rmi/endpoint.ts";
import { isValidSessionId } from "../session/ids.ts";
import { REPLICATE_METHOD } from "../session/replicator.ts";
import type { SnapshotUpdate } from "../session/types.ts";
import { parseUpdate } from "../session/update.ts";
import type { ClusterContext, HandoverReply } from "./context.ts";

export function peerMethods(ctx: ClusterContext): MethodTable {
  return {
    [REPLICATE_METHOD]: (args: unknown, call: CallContext) => {
      const update = parseUpdate(args);
      if (update.primary !== call.endpoint.name) {
        throw new Error(`update names primary '${update.primary}' but came from '${call.endpoint.name}'`);
      }
      if (!ctx.node.mayApply(call.endpoint)) {
        throw new Error(`'${call.endpoint.name}' is not a live member here (unknown or dead incarnation)`);
      }
      const result = ctx.store.applyReplica(update, ctx.node.incarnationOf(call.endpoint));
      if (result === "need-snapshot" && call.ack !== "applied") {
        void ctx.node.endpoint(update.primary)?.call("resync", { id: update.id }, { ack: "none" });
      }
      if (result === "fenced") {
        // Tell the old primary where the session lives now, so it steps down.
        const held = ctx.store.get(update.id)!;
        void ctx.node.endpoint(update.primary)?.call("fenced", {
          id: update.id,
          epoch: held.epoch,
          primary: held.role === "primary" ? ctx.self : held.primary,
        }, { ack: "none" });
      }
      return result;
    },
    resync: (args: unknown, call: CallContext) => {
      const id = (args as { id?: unknown } | null)?.id;
      if (!isValidSessionId(id)) throw new Error(`resync 'id' must be a session id: got ${JSON.stringify(id)}`);
      const record = ctx.store.get(id);
      if (record?.role !== "primary" || record.expired || record.secondary !== call.endpoint.name) return false;
      ctx.counts.resyncs++;
      void ctx.replicator.replicateSnapshot(id, record.secondary, "transport", ctx.ackTimeoutMs);
      return true;
    },
    handover: (args: unknown, call: CallContext): Promise<HandoverReply> => {
      const id = (args as { id?: unknown } | null)?.id;
      if (!isValidSessionId(id)) throw new Error(`handover 'id' must be a session id: got ${JSON.stringify(id)}`);
      return giveAway(ctx, id, call);
    },
    rebind: (args: unknown, call: CallContext): boolean => {
      const a = args as { snapshot?: unknown; incarnation?: unknown } | null;
      const snapshot = parseUpdate(a?.snapshot);
      if (snapshot.kind !== "snapshot" || typeof a?.incarnation !== "string") {
        throw new Error("rebind needs {snapshot, incarnation}");
      }
      const from = call.endpoint.name;
      if (!ctx.node.mayApply(call.endpoint)) return false;
      const held = ctx.store.get(snapshot.id);
      // Asked again after an unanswered rebind: already done.
      if (held?.role === "replica" && held.primary === snapshot.primary && held.epoch === snapshot.epoch &&
        held.primaryIncarnation === a.incarnation) return true;
      // Only the primary this copy belongs to may name its successor.
      if (held !== undefined && (held.role !== "replica" || held.primary !== from ||
        held.primaryIncarnation !== ctx.node.incarnationOf(call.endpoint))) return false;
      return ctx.store.applyReplica(snapshot, a.incarnation) === "applied";
    },
    fenced: (args: unknown) => {
      const a = args as { id?: unknown; epoch?: unknown; primary?: unknown } | null;
      if (!isValidSessionId(a?.id) || typeof a.epoch !== "number" || typeof a.primary !== "string") {
        throw new Error("fenced needs {id, epoch, primary}");
      }
      const record = ctx.store.get(a.id);
      if (record?.role !== "primary" || record.expired || record.epoch >= a.epoch || a.primary === ctx.self) return false;
      ctx.counts.fenced++;
      ctx.logger.warn(`cluster ${ctx.self}: session '${a.id}' has a newer primary '${a.primary}' (epoch ${a.epoch}); stepping down`);
      ctx.store.markMoved(a.id, a.primary, a.epoch);
      return true;
    },
  };
}

/** The `handover` method: this server gives session `id` to the caller (see the top of `session_cluster.ts`). */
async function giveAway(ctx: ClusterContext, id: string, call: CallContext): Promise<HandoverReply> {
  const taker = call.endpoint.name;
  const takerIncarnation = ctx.node.incarnationOf(call.endpoint);
  if (takerIncarnation === undefined || !ctx.node.mayApply(call.endpoint)) {
    return { status: "unavailable", reason: `'${taker}' is not a live member here` };
  }
  const record = ctx.store.get(id);
  if (record === undefined) return { status: "missing" };
  if (record.role === "moved") return { status: "moved", to: record.primary };
  if (record.expired) return { status: "expired" };
  if (record.role === "replica") {
    // Rebound to the taker by its old primary (the handover reply was lost): hand the copy over.
    if (record.primary === taker && record.primaryIncarnation === takerIncarnation) {
      const snapshot = ctx.store.snapshot(id);
      if (snapshot?.kind === "snapshot") return { status: "found", snapshot, secondary: ctx.self };
    }
    return { status: "unavailable", reason: `'${ctx.self}' holds only a replica; its primary is '${record.primary}'` };
  }
  if (!ctx.node.holdsLease()) return { status: "unavailable", reason: `'${ctx.self}' holds no majority lease` };
  if (ctx.store.isIdleExpired(record)) {
    ctx.replicateNow(ctx.store.invalidate(id), record.secondary);
    return { status: "expired" };
  }
  if (ctx.handing.has(id)) return { status: "unavailable", reason: "a handover is already in progress" };
  ctx.handing.add(id);
  let keep = false;
  try {
    if (!await ctx.quiesce(id, ctx.fetchTimeoutMs / 2)) {
      return { status: "unavailable", reason: "requests on it did not finish" };
    }
    const current = ctx.store.get(id);
    if (current !== record || record.role !== "primary" || record.expired) return { status: "unavailable", reason: "it changed" };
    const epoch = record.epoch + 1;
    const snapshot = ctx.store.snapshot(id) as SnapshotUpdate;
    const given: SnapshotUpdate = { ...snapshot, epoch, primary: taker };
    const secondary = record.secondary;
    if (secondary !== undefined && secondary !== taker) {
      // The secondary records the new primary first: it will not promote its copy for us afterwards.
      const endpoint = ctx.node.endpoint(secondary);
      if (endpoint === undefined) return { status: "unavailable", reason: `its secondary '${secondary}' is unreachable` };
      const args = { snapshot: given, incarnation: takerIncarnation };
      let answer: unknown;
      try {
        answer = await endpoint.call("rebind", args, { ack: "applied", timeoutMs: ctx.fetchTimeoutMs / 2 });
      } catch (error) {
        // No answer: the secondary may or may not name the taker now. Stay out of service until it says.
        ctx.logger.warn(`cluster ${ctx.self}: rebind of session '${id}' at '${secondary}' failed: ${(error as Error).message}`);
        keep = true;
        void settleRebind(ctx, id, secondary, args, epoch);
        return { status: "unavailable", reason: `its secondary '${secondary}' did not answer` };
      }
      if (answer !== true) {
        // The secondary's copy no longer names us (promoted, or given to another primary): it knows where the session is.
        ctx.store.markMoved(id, secondary, epoch - 1);
        return { status: "unavailable", reason: `its secondary '${secondary}' refused the new primary` };
      }
      ctx.store.markMoved(id, taker, epoch);
    } else {
      ctx.store.markMoved(id, taker, epoch);
    }
    return { status: "found", snapshot: given, secondary: secondary === taker ? null : secondary ?? null };
  } finally {
    if (!keep) ctx.handing.delete(id);
  }
}

/**
 * A `rebind` went unanswered: ask again until the secondary says yes (the
 * session is the taker's: keep a redirect) or no (it is not ours: redirect
 * to the secondary), or until the secondary is certified dead (then no one
 * else can have been given it, and this server serves it again).
 */
async function settleRebind(ctx: ClusterContext, id: string, secondary: string, args: { snapshot: SnapshotUpdate }, epoch: number): Promise<void> {
  try {
    while (!ctx.closed && ctx.store.get(id)?.role === "primary") {
      await new Promise((r) => setTimeout(r, 100));
      if (ctx.node.membership.isDead(secondary)) return;
      const endpoint = ctx.node.endpoint(secondary);
      if (endpoint === undefined) continue;
      try {
        const answer = await endpoint.call("rebind", args, { ack: "applied", timeoutMs: ctx.fetchTimeoutMs / 2 });
        ctx.store.markMoved(id, answer === true ? args.snapshot.primary : secondary, answer === true ? epoch : epoch - 1);
        return;
      } catch {
        // still no answer: try again
      }
    }
  } finally {
    ctx.handing.delete(id);
  }
}
