/**
 * The demo application: a tiny shop whose state lives in replicated sessions.
 *
 * Routes (all GET, JSON answers):
 * - `/login?user=NAME`           starts a session (user, empty cart)
 * - `/cart/add?item=ID&qty=N`    sets one cart line (idempotent: the same item id twice is one line)
 * - `/cart`                      shows the session (user, cart, version, epoch)
 * - `/put?k=KEY&v=VAL`            sets exactly one attribute (creating the session if there is none);
 *                                 answers `{id, isNew, version, epoch, server}` (version before this change)
 * - `/all`                       every attribute, `{id, attributes, version, epoch, server}` (`id` null without a session)
 * - `/logout`                    ends the session everywhere
 * - `/stats`                     this server's replication counters and latencies (no session)
 *
 * @module
 */

import { type Session, type SessionCluster, SessionTooLargeError } from "../mod.ts";

/** The shop's request handler, to be wrapped with `withSessions`. */
export function shopHandler(cluster: SessionCluster) {
  return (request: Request, session: Session): Response => {
    const url = new URL(request.url);
    const q = url.searchParams;
    try {
      switch (url.pathname) {
        case "/login": {
          const user = q.get("user");
          if (!user) return Response.json({ error: "'user' is required" }, { status: 400 });
          session.set("user", user);
          session.set("cart", {});
          return Response.json({ user, server: cluster.self });
        }
        case "/cart/add": {
          if (session.get("user") === undefined) return Response.json({ error: "not logged in" }, { status: 401 });
          const item = q.get("item");
          const qty = Number(q.get("qty") ?? "1");
          if (!item || !Number.isInteger(qty) || qty < 0) {
            return Response.json({ error: "'item' and an integer 'qty' >= 0 are required" }, { status: 400 });
          }
          const cart = session.get<Record<string, number>>("cart") ?? {};
          cart[item] = qty;
          session.set("cart", cart);
          return Response.json({ lines: Object.keys(cart).length, server: cluster.self });
        }
        case "/cart":
          return Response.json({
            user: session.get("user") ?? null,
            cart: session.get("cart") ?? {},
            version: session.version,
            epoch: session.epoch,
            server: cluster.self,
          });
        case "/put": {
          const key = q.get("k");
          if (!key) return Response.json({ error: "'k' is required" }, { status: 400 });
          session.set(key, q.get("v") ?? "");
          return Response.json({
            id: session.id,
            isNew: session.isNew,
            version: session.version,
            epoch: session.epoch,
            server: cluster.self,
          });
        }
        case "/all": {
          const attributes: Record<string, unknown> = {};
          for (const key of session.keys()) attributes[key] = session.get(key);
          return Response.json({
            id: session.id ?? null,
            attributes,
            version: session.version,
            epoch: session.epoch,
            server: cluster.self,
          });
        }
        case "/logout":
          session.invalidate();
          return Response.json({ ok: true });
        case "/stats":
          return Response.json(cluster.stats());
      }
    } catch (error) {
      if (error instanceof SessionTooLargeError) return Response.json({ error: error.message }, { status: 413 });
      throw error;
    }
    return Response.json({ error: "not found" }, { status: 404 });
  };
}
