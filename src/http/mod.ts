/**
 * HTTP integration: `withSessions` wraps a fetch-style handler (the shape
 * `Bun.serve({ fetch })` and `Deno.serve(handler)` both take) with replicated
 * sessions; `serve` starts Bun's or Deno's own server, whichever runs.
 *
 * @module
 */
export { type FetchHandler, type RunningServer, runtimeName, serve, type ServeOptions } from "./serve.ts";
export { Session } from "./session.ts";
export {
  type SessionCookieOptions,
  type SessionHandler,
  withSessions,
  type WithSessionsOptions,
} from "./with_sessions.ts";
