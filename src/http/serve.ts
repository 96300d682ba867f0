/**
 * `serve`: starts a real HTTP server with the runtime's own server,
 * `Bun.serve` under Bun and `Deno.serve` under Deno, for examples and tests
 * that must run unchanged on both. Applications can just as well call their
 * runtime's server directly with the handler `withSessions` returns.
 *
 * @module
 */

/** A fetch-style handler. */
export type FetchHandler = (request: Request) => Response | Promise<Response>;

/** A running server. */
export interface RunningServer {
  readonly runtime: "bun" | "deno";
  readonly hostname: string;
  readonly port: number;
  /** e.g. "http://127.0.0.1:43121" */
  readonly url: string;
  /** Stops accepting and closes open connections. */
  close(): Promise<void>;
}

/** Options of `serve`. */
export interface ServeOptions {
  /** @default "127.0.0.1" */
  hostname?: string;
  /** 0 picks a free port. @default 0 */
  port?: number;
}

/** The runtime this code runs on. */
export function runtimeName(): "bun" | "deno" {
  if (typeof Bun !== "undefined") return "bun";
  if (typeof Deno !== "undefined") return "deno";
  throw new Error("serve() needs Bun or Deno");
}

/** Starts `handler` on `hostname:port` with Bun.serve or Deno.serve. */
export function serve(handler: FetchHandler, options: ServeOptions = {}): Promise<RunningServer> {
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? 0;
  if (runtimeName() === "bun") {
    const server = Bun.serve({ hostname, port, fetch: handler });
    const actual = server.port ?? port;
    return Promise.resolve({
      runtime: "bun",
      hostname,
      port: actual,
      url: `http://${hostname}:${actual}`,
      close: async () => {
        await server.stop(true);
      },
    });
  }
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname,
      port,
      onListen: (addr) => {
        const actual = (addr as Deno.NetAddr).port;
        resolve({
          runtime: "deno",
          hostname,
          port: actual,
          url: `http://${hostname}:${actual}`,
          close: () => server.shutdown(),
        });
      },
    }, handler);
  });
}
