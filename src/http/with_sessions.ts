/**
 * `withSessions`: wraps a fetch-style handler so that it gets a replicated
 * session. The wrapped function has the shape both runtimes take,
 * `(request, info?) => Promise<Response>`, so it is used unchanged by
 * `Bun.serve({ fetch })` and `Deno.serve(handler)`.
 *
 * The session reaches the handler as its **second argument** (and the
 * runtime's own second argument, Bun's server or Deno's info, moves to the
 * third): explicit, typed, and the same on both runtimes, with no hidden
 * per-request state.
 *
 * Per request:
 * 1. Read the cookie `id!primary!secondary`; find the session, taking it over
 *    from another server if its primary is gone (`SessionCluster.open`).
 *    If it cannot be taken over safely right now, answer 503 with Retry-After
 *    (the handler does not run).
 * 2. Run the handler.
 * 3. Commit its changes as one delta and replicate it, waiting per the ack
 *    mode (`none`: not at all; `transport`: until the bytes are in the
 *    secondary's memory; `applied`: until the secondary applied it), never
 *    longer than `ackTimeoutMs`. The secondary *application* is never waited
 *    for except in `applied` mode.
 * 4. Set the cookie when where-the-session-lives changed; return the response.
 *
 * @module
 */

import { readCookie } from "../cluster/cookie.ts";
import { type SessionCluster, SessionUnavailableError } from "../cluster/session_cluster.ts";
import type { AckMode } from "../rmi/types.ts";
import type { ReplicationOutcome } from "../session/replicator.ts";
import { observeRequestReplication } from "../metrics/request_latency.ts";
import { Session } from "./session.ts";

/** A handler that receives the request's session. */
export type SessionHandler<Info = unknown> = (
  request: Request,
  session: Session,
  info: Info,
) => Response | Promise<Response>;

/** Cookie attributes. */
export interface SessionCookieOptions {
  /** @default "/" */
  path?: string;
  /** @default undefined (host-only) */
  domain?: string;
  /** @default true */
  httpOnly?: boolean;
  /** @default false */
  secure?: boolean;
  /** @default "Lax" */
  sameSite?: "Strict" | "Lax" | "None";
}

/** Options of `withSessions`. */
export interface WithSessionsOptions {
  /** The replicated session cluster of this server. */
  cluster: SessionCluster;
  /** @default "sid" */
  cookieName?: string;
  /** Ack mode of the request path. @default the cluster's (`"transport"`) */
  ackMode?: AckMode;
  /** Longest a response waits for the ack. @default the cluster's (1000 ms) */
  ackTimeoutMs?: number;
  cookie?: SessionCookieOptions;
  /**
   * If set, the name of a response header that reports how far replication of
   * this request's changes got (`transport`, `applied`, `none`, `timeout`,
   * `failed`, `no-secondary`); absent when nothing was replicated.
   * @default undefined (no header)
   */
  replicationHeader?: string;
}

/**
 * Wraps `handler` with replicated sessions.
 *
 * @example
 * ```ts
 * import { withSessions } from "./with_sessions.ts";
 * import { serve } from "./serve.ts";
 * import { startSessionCluster } from "../cluster/start.ts";
 * // A one-server cluster, so that the example runs alone; list every server in production.
 * const cluster = await startSessionCluster({
 *   self: "a",
 *   peers: [{ id: "a", host: "127.0.0.1", port: 0, transport: "tcp" }],
 *   secret: "an-example-secret-of-32-bytes!!!",
 * });
 * const app = withSessions((_request, session) => {
 *   const visits = (session.get<number>("visits") ?? 0) + 1;
 *   session.set("visits", visits);
 *   return new Response(`visit ${visits}`);
 * }, { cluster });
 * // Bun.serve({ fetch: app }) and Deno.serve(app) take `app` as it is; `serve` picks the one running.
 * const server = await serve(app);
 * const response = await fetch(server.url);
 * console.log(await response.text(), response.headers.get("set-cookie")); // "visit 1", "sid=…!a!; Path=/; …"
 * await server.close();
 * await cluster.close();
 * ```
 */
export function withSessions<Info = unknown>(
  handler: SessionHandler<Info>,
  options: WithSessionsOptions,
): (request: Request, info?: Info) => Promise<Response> {
  const steps = requestSessions(options);
  return async (request: Request, info?: Info): Promise<Response> => {
    const opened = await steps.open(request.headers.get("cookie"));
    if (opened instanceof Response) return opened;
    return await steps.respond(opened, () => handler(request, opened.session, info as Info));
  };
}

/** @internal The session of one request between `open` and `finish`. */
export interface OpenedSession {
  readonly session: Session;
  /** The cookie value the request carried, if any. */
  readonly incoming: string | undefined;
}

/**
 * @internal The per-request steps of `withSessions`, shared with the other
 * framework adapters (`src/http/hono.ts`) so that all of them read the cookie,
 * answer 503, commit, wait per the ack mode and set the cookie and the
 * replication header the same way.
 */
export interface RequestSessions {
  readonly cluster: SessionCluster;
  readonly ackMode: AckMode;
  /** Step 1: the request's session from its `Cookie` header, or the 503 to answer instead. */
  open(cookieHeader: string | null | undefined): Promise<OpenedSession | Response>;
  /** Steps 3 and 4: commits and replicates, then returns `response` (or a copy) with the cookie and header set. */
  finish(opened: OpenedSession, response: Response): Promise<Response>;
  /**
   * Steps 2 to 4: runs the handler (`run`), then `finish`; the session is ended
   * whatever happens. A `SessionUnavailableError` from either becomes the 503;
   * any other error is rethrown with nothing committed.
   */
  respond(opened: OpenedSession, run: () => Response | Promise<Response>): Promise<Response>;
}

/** @internal Validates `options` once and returns the per-request steps. */
export function requestSessions(options: WithSessionsOptions): RequestSessions {
  const { cluster } = options;
  const cookieName = options.cookieName ?? "sid";
  const ack = options.ackMode ?? cluster.ackMode;
  const boundMs = options.ackTimeoutMs ?? cluster.ackTimeoutMs;
  if (!Number.isFinite(boundMs) || boundMs < 0) {
    throw new RangeError(`'ackTimeoutMs' must be a non-negative number: got ${boundMs}`);
  }
  const attributes = cookieAttributes(options.cookie ?? {});
  const header = options.replicationHeader;
  return {
    cluster,
    ackMode: ack,
    async open(cookieHeader) {
      const incoming = readCookie(cookieHeader ?? null, cookieName);
      const locator = cluster.verifyCookie(incoming);
      let record;
      try {
        record = await cluster.open(locator);
      } catch (error) {
        if (error instanceof SessionUnavailableError) return unavailableResponse();
        throw error;
      }
      return { session: new Session(cluster, record), incoming };
    },
    async finish({ session, incoming }, response) {
      const started = performance.now();
      const outcome: ReplicationOutcome | undefined = await session.commit(ack, boundMs);
      if (outcome !== undefined) observeRequestReplication(cluster, ack, outcome, performance.now() - started);
      const live = session.record;
      let setCookie: string | undefined;
      if (live !== undefined) {
        const value = cluster.cookieFor(live);
        if (value !== incoming) setCookie = `${cookieName}=${value}${attributes}`;
      } else if (incoming !== undefined) {
        setCookie = `${cookieName}=${attributes}; Max-Age=0`;
      }
      if (setCookie === undefined && (outcome === undefined || !header)) return response;
      response = mutable(response);
      if (setCookie !== undefined) response.headers.append("set-cookie", setCookie);
      if (header && outcome !== undefined) response.headers.set(header, outcome);
      return response;
    },
    async respond(opened, run) {
      try {
        return await this.finish(opened, await run());
      } catch (error) {
        // The cluster may stop this server from acting mid-request (lease lapsed, session handed over).
        if (error instanceof SessionUnavailableError) return unavailableResponse();
        throw error;
      } finally {
        opened.session.end();
      }
    },
  };
}

/** @internal The answer when the session cannot be served safely right now. */
export function unavailableResponse(): Response {
  return new Response("session temporarily unavailable", { status: 503, headers: { "retry-after": "1" } });
}

function cookieAttributes(o: SessionCookieOptions): string {
  let text = `; Path=${o.path ?? "/"}`;
  if (o.domain) text += `; Domain=${o.domain}`;
  if (o.httpOnly ?? true) text += "; HttpOnly";
  if (o.secure) text += "; Secure";
  text += `; SameSite=${o.sameSite ?? "Lax"}`;
  return text;
}

/** A response whose headers can be changed (those of `Response.redirect` or `fetch` cannot). */
function mutable(response: Response): Response {
  try {
    response.headers.set("x-probe-mutable", "1");
    response.headers.delete("x-probe-mutable");
    return response;
  } catch {
    return new Response(response.body, {
      status: response.status,
      statusText: response.statusText,
      headers: new Headers(response.headers),
    });
  }
}
