/**
 * A Hono app with replicated sessions and Prometheus metrics: two servers of
 * one cluster in this process (normally one per process or machine), each a
 * Hono app behind Bun.serve or Deno.serve.
 *
 *   bun examples/hono_app.ts                      # runs a few requests against both, prints what happened, exits
 *   bun examples/hono_app.ts --serve              # keeps serving: curl -c j -b j localhost:8081/visit; curl localhost:8081/metrics
 *   deno run -A examples/hono_app.ts [--serve]    # the same under Deno
 *
 * Options: --peer-ports 7311,7312 (the cluster's own connections) and
 * --http-ports 8081,8082; CLUSTER_SECRET overrides the example secret.
 *
 * @module
 */
import process from "node:process";
import { Hono } from "hono";
import { metricsHandler, serve, type SessionCluster, startSessionCluster } from "../mod.ts";
// The package's `./hono` export (mod.ts leaves it out: hono is an optional peer dependency).
import { sessions, type SessionVariables } from "../src/http/hono.ts";

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

/** The app of one server: `/visit` counts visits in the session, `/metrics` is Prometheus. */
export function app(cluster: SessionCluster): Hono<{ Variables: SessionVariables }> {
  const app = new Hono<{ Variables: SessionVariables }>();
  app.get("/metrics", (c) => metricsHandler(cluster)(c.req.raw)); // before sessions(): a scrape has no session
  app.use(sessions({ cluster, ackMode: "applied", replicationHeader: "x-replication" })); // "applied": b has applied it when the response leaves
  app.get("/visit", (c) => {
    const session = c.get("session");
    const visits = (session.get<number>("visits") ?? 0) + 1;
    session.set("visits", visits);
    return c.json({ visits, server: cluster.self, epoch: session.epoch });
  });
  return app;
}

if (import.meta.main) {
  const [pa, pb] = option("--peer-ports", "7311,7312").split(",").map(Number);
  const [ha, hb] = option("--http-ports", "8081,8082").split(",").map(Number);
  const secret = process.env.CLUSTER_SECRET ?? "hono-example-secret-of-32-bytes!";
  const peers = [
    { id: "a", host: "127.0.0.1", port: pa, transport: "tcp" as const },
    { id: "b", host: "127.0.0.1", port: pb, transport: "tcp" as const },
  ];
  const clusters = [await startSessionCluster({ self: "a", peers, secret }), await startSessionCluster({ self: "b", peers, secret })];
  await Promise.all(clusters.map((c) => c.waitForPeers()));
  const servers = [await serve(app(clusters[0]).fetch, { port: ha }), await serve(app(clusters[1]).fetch, { port: hb })];
  console.log(`serving a on ${servers[0].url}, b on ${servers[1].url} (${servers[0].runtime})`);
  if (!process.argv.includes("--serve")) {
    let cookie = "";
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${servers[0].url}/visit`, { headers: cookie ? { cookie } : {} });
      cookie = r.headers.get("set-cookie")?.split(";")[0] ?? cookie;
      console.log(`visit: ${JSON.stringify(await r.json())} replication=${r.headers.get("x-replication")}`);
    }
    console.log(`cookie: ${cookie}`);
    const replica = clusters[1].store.get(cookie.slice("sid=".length).split("!")[0]);
    console.log(`replica on b: ${JSON.stringify(replica?.attributes)}`);
    const metrics = await (await fetch(`${servers[0].url}/metrics`)).text();
    for (const line of metrics.split("\n")) {
      if (/^rdma_sessions_(replication_latency_seconds_count|request_replications_total|sessions)\b/.test(line)) console.log(`metric: ${line}`);
    }
    for (const s of servers) await s.close();
    for (const c of clusters) await c.close();
  }
}
