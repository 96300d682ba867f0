/**
 * Replicated sessions as Hono middleware: `app.use(sessions({ cluster }))`,
 * then `c.get("session")` in any handler after it.
 *
 * The steps are those of `withSessions` (the same function runs them): the
 * cookie `id!primary!secondary` is read and the session found or taken over
 * before `next()` (503 with Retry-After, and no handler, when it cannot be
 * taken over safely right now); after `next()` the request's changes are
 * committed as one delta and replicated per the ack mode, and the cookie and
 * the replication header are set on the response; the session is then ended
 * (released to the cluster). A request whose handler threw (Hono's `c.error`)
 * commits nothing, as with `withSessions`, and keeps the response of
 * `app.onError`, except a `SessionUnavailableError`, which becomes the 503.
 *
 * Hono is not a dependency of the rest of the library: import this module
 * (`rdma-sessions/hono`) only in an app that has `hono` installed.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { sessions, type SessionVariables } from "./hono.ts";
 * import { serve } from "./serve.ts";
 * import { startSessionCluster } from "../cluster/start.ts";
 * // A one-server cluster, so that the example runs alone; list every server in production.
 * const cluster = await startSessionCluster({
 *   self: "a",
 *   peers: [{ id: "a", host: "127.0.0.1", port: 0, transport: "tcp" }],
 *   secret: "an-example-secret-of-32-bytes!!!",
 * });
 * const app = new Hono<{ Variables: SessionVariables }>();
 * app.use(sessions({ cluster }));
 * app.get("/", (c) => {
 *   const session = c.get("session");
 *   const visits = (session.get<number>("visits") ?? 0) + 1;
 *   session.set("visits", visits);
 *   return c.text(`visit ${visits}`);
 * });
 * const server = await serve(app.fetch);
 * console.log(await (await fetch(server.url)).text()); // "visit 1"
 * await server.close();
 * await cluster.close();
 * ```
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import type { Session } from "./session.ts";
import { requestSessions, type WithSessionsOptions } from "./with_sessions.ts";

/** The context variables the middleware sets: `c.get("session")`. */
export interface SessionVariables {
  session: Session;
}

/** Options of `sessions`: those of `withSessions` (cluster, cookie, ack mode and bound, replication header). */
export type HonoSessionsOptions = WithSessionsOptions;

/** Hono middleware that gives every request its replicated session at `c.get("session")`. */
export function sessions(options: HonoSessionsOptions): MiddlewareHandler<{ Variables: SessionVariables }> {
  const steps = requestSessions(options);
  return async (c, next) => {
    const opened = await steps.open(c.req.header("cookie"));
    if (opened instanceof Response) return opened;
    c.set("session", opened.session);
    let response: Response;
    try {
      response = await steps.respond(opened, async () => {
        await next();
        // Hono has already turned a handler's error into c.res (app.onError); rethrown
        // here, it keeps the request from committing (and a SessionUnavailableError
        // still becomes the 503, as with withSessions).
        if (c.error !== undefined) throw c.error;
        return c.res;
      });
    } catch (error) {
      if (error === c.error) return; // answered by onError; nothing committed
      throw error;
    }
    if (response !== c.res) {
      // Hono's `res` setter copies the old response's headers over the new one
      // (replacing its Set-Cookie list); the new one already has them all.
      c.res = undefined;
      c.res = response;
    }
  };
}
