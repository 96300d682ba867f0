/**
 * The HTTP app of the Redis comparison, one handler behind two session
 * stores, a child process under Bun or Deno (`serve()`: `Bun.serve` /
 * `Deno.serve`).
 *
 *   redis_app.ts --store redis --redis-port P --id a
 *       sessions in a redis-server on 127.0.0.1:P: a random session id in the
 *       cookie `sid`; per request GET `sess:<id>` (JSON of the attributes),
 *       the handler, then SET `sess:<id>` with EX 1800 when it changed; the
 *       response goes out after redis-server answered the SET (what
 *       connect-redis and most session middlewares do). Client: Bun's built-in
 *       `RedisClient` under Bun, the `redis` npm package (node-redis) under Deno.
 *   redis_app.ts --store cluster --id a --secret S --ack none|transport|applied
 *       `withSessions` on a SessionCluster over tcp (the peers come on stdin).
 *
 * Both speak the protocol of examples/cluster_launcher.ts: print
 * `{"event":"listening",...,"httpPort","clusterPort"}`, read `{"peers":[...]}`
 * on stdin (the redis store ignores it), print `{"event":"ready"}`; stdin
 * closing stops the server.
 *
 * Routes (GET), the same in both stores:
 * - `/`             increments `n` and stores a 100-byte `last` (one update of two attributes)
 * - `/put?k=K&v=V`  sets exactly one attribute; answers `{ok, server}`
 * - `/all`          every attribute: `{id, attributes, server}` (`id` null without a session)
 *
 * @module
 */
import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import process from "node:process";
import { SessionCluster } from "../src/cluster/session_cluster.ts";
import { dialPeer, listenForPeers } from "../src/cluster/transport.ts";
import type { PeerConfig } from "../src/cluster/peers.ts";
import { runtimeName, serve } from "../src/http/serve.ts";
import { withSessions } from "../src/http/with_sessions.ts";
import type { AckMode } from "../src/rmi/types.ts";

/** What the handler needs of a session: both stores give it. */
export interface AppSession {
  get<T = unknown>(key: string): T | undefined;
  set(key: string, value: unknown): void;
  keys(): Iterable<string>;
}

const VALUE = "v".repeat(100);

/** The app: the same code for both stores. */
export function appHandler(server: string) {
  return (request: Request, session: AppSession, id: string | null): Response => {
    const url = new URL(request.url);
    switch (url.pathname) {
      case "/": {
        const n = (session.get<number>("n") ?? 0) + 1;
        session.set("n", n);
        session.set("last", VALUE);
        return new Response(String(n));
      }
      case "/put": {
        const k = url.searchParams.get("k");
        if (!k) return Response.json({ error: "'k' is required" }, { status: 400 });
        session.set(k, url.searchParams.get("v") ?? "");
        return Response.json({ ok: true, server });
      }
      case "/all": {
        const attributes: Record<string, unknown> = {};
        for (const k of session.keys()) attributes[k] = session.get(k);
        return Response.json({ id, attributes, server });
      }
    }
    return Response.json({ error: "not found" }, { status: 404 });
  };
}

/** The two calls the Redis store makes, over either client. */
interface RedisLike {
  get(key: string): Promise<string | null>;
  setEx(key: string, value: string, seconds: number): Promise<void>;
}

async function redisClient(port: number): Promise<RedisLike> {
  const url = `redis://127.0.0.1:${port}`;
  const g = globalThis as { Bun?: { RedisClient: new (url: string, o?: Record<string, unknown>) => BunRedis } };
  if (g.Bun) {
    // Bun's built-in client; no automatic reconnection, so a dead redis-server shows at once.
    const c = new g.Bun.RedisClient(url, { autoReconnect: true, maxRetries: 1000, enableOfflineQueue: false, connectionTimeout: 2000 });
    await c.connect();
    return {
      get: (k) => c.get(k),
      setEx: async (k, v, s) => {
        await c.send("SET", [k, v, "EX", String(s)]);
      },
    };
  }
  const { createClient } = await import("redis");
  const c = createClient({ url, disableOfflineQueue: true, socket: { connectTimeout: 2000, reconnectStrategy: () => 200 } });
  c.on("error", () => {}); // reported per request instead
  await c.connect();
  return {
    get: (k) => c.get(k) as Promise<string | null>,
    setEx: async (k, v, s) => {
      await c.set(k, v, { EX: s });
    },
  };
}

interface BunRedis {
  connect(): Promise<void>;
  get(key: string): Promise<string | null>;
  send(cmd: string, args: string[]): Promise<unknown>;
}

class RedisSession implements AppSession {
  readonly #data: Record<string, unknown>;
  changed = false;
  constructor(data: Record<string, unknown>) {
    this.#data = data;
  }
  get<T = unknown>(key: string): T | undefined {
    return this.#data[key] as T | undefined;
  }
  set(key: string, value: unknown): void {
    this.#data[key] = value;
    this.changed = true;
  }
  keys(): Iterable<string> {
    return Object.keys(this.#data);
  }
  json(): string {
    return JSON.stringify(this.#data);
  }
}

function sessionId(): string {
  const b = crypto.getRandomValues(new Uint8Array(18));
  return btoa(String.fromCharCode(...b)).replaceAll("+", "-").replaceAll("/", "_");
}

/** `handler` with sessions in Redis: GET before, SET (EX ttl) after, response after the SET's reply. */
export function withRedisSessions(redis: RedisLike, handler: ReturnType<typeof appHandler>, ttlSeconds = 1800) {
  return async (request: Request): Promise<Response> => {
    const cookie = request.headers.get("cookie") ?? "";
    let id = /(?:^|;\s*)sid=([A-Za-z0-9_-]+)/.exec(cookie)?.[1] ?? null;
    let data: Record<string, unknown> = {};
    try {
      const raw = id ? await redis.get(`sess:${id}`) : null;
      if (raw) data = JSON.parse(raw);
      else id = null; // unknown or expired: a new session
    } catch (e) {
      return Response.json({ error: `session store unavailable: ${(e as Error).message}` }, { status: 503 });
    }
    const session = new RedisSession(data);
    const response = handler(request, session, id);
    if (!session.changed) return response;
    const newId = id ?? sessionId();
    try {
      await redis.setEx(`sess:${newId}`, session.json(), ttlSeconds);
    } catch (e) {
      return Response.json({ error: `session store unavailable: ${(e as Error).message}` }, { status: 503 });
    }
    const out = new Response(response.body, response);
    out.headers.set("x-replication", "redis");
    if (newId !== id) out.headers.append("set-cookie", `sid=${newId}; Path=/; HttpOnly; SameSite=Lax`);
    return out;
  };
}

function emit(event: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(event) + "\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      store: { type: "string" },
      id: { type: "string", default: "a" },
      secret: { type: "string" },
      ack: { type: "string", default: "transport" },
      "redis-port": { type: "string" },
      host: { type: "string", default: "127.0.0.1" },
      transport: { type: "string", default: "tcp" },
    },
  });
  const id = values.id!;
  const lines = createInterface({ input: process.stdin });
  if (values.store === "redis") {
    const redis = await redisClient(Number(values["redis-port"]));
    const http = await serve(withRedisSessions(redis, appHandler(id)), { hostname: "127.0.0.1", port: 0 });
    emit({ event: "listening", id, host: "127.0.0.1", runtime: runtimeName(), transport: "redis", ack: "redis", pid: process.pid, clusterPort: 0, httpPort: http.port });
    for await (const line of lines) {
      if (line.includes('"peers"')) emit({ event: "ready", id, allPeersUp: true });
    }
    process.exit(0);
  } else if (values.store === "cluster") {
    const listener = await listenForPeers({ transport: "tcp", host: values.host!, port: 0 });
    let resolveApp!: (a: (r: Request) => Promise<Response>) => void;
    const appReady = new Promise<(r: Request) => Promise<Response>>((r) => (resolveApp = r));
    const http = await serve(async (r) => (await appReady)(r), { hostname: "127.0.0.1", port: 0 });
    emit({ event: "listening", id, host: values.host, runtime: runtimeName(), transport: listener.transport, ack: values.ack, pid: process.pid, clusterPort: listener.address.port, httpPort: http.port });
    let cluster: SessionCluster | undefined;
    for await (const line of lines) {
      const m = JSON.parse(line) as { peers?: PeerConfig[] };
      if (!m.peers || cluster) continue;
      cluster = new SessionCluster({
        self: id,
        peers: m.peers,
        secret: values.secret ?? "bench-redis-comparison-secret-0123456789",
        listener,
        dial: (peer) => dialPeer(peer, "tcp"),
        ackMode: values.ack as AckMode,
        logger: { warn: (msg) => process.stderr.write(`[${id}] ${msg}\n`) },
      });
      const h = appHandler(id);
      resolveApp(withSessions((r, s) => h(r, s, s.id ?? null), { cluster, replicationHeader: "x-replication" }));
      const all = await cluster.waitForPeers(30_000);
      emit({ event: "ready", id, allPeersUp: all });
    }
    await http.close();
    await cluster?.close();
    process.exit(0);
  } else {
    console.error("usage: redis_app.ts --store redis --redis-port P | --store cluster --secret S --ack MODE");
    process.exit(2);
  }
}
