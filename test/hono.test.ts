/**
 * The Hono middleware (`src/http/hono.ts`) with the real `hono` package, a real
 * HTTP server (Bun.serve or Deno.serve through src/http/serve.ts) and a real
 * in-process cluster of three servers over the loopback transport.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { Hono } from "hono";
import { SessionCluster, SessionUnavailableError } from "../src/cluster/session_cluster.ts";
import { sessions, type SessionVariables } from "../src/http/hono.ts";
import { metricsHandler } from "../src/metrics/cluster.ts";
import type { AckMode } from "../src/rmi/types.ts";
import { serveEach, startCluster as startInProcess } from "./fixtures/cluster.ts";
import { currentRuntime, runtimeArgv } from "./fixtures/runtime.ts";
import { freePort } from "./fixtures/wait.ts";

const SECRET = "hono-test-cluster-secret-0123456";

function shopApp(cluster: SessionCluster, ackMode?: AckMode) {
  const app = new Hono<{ Variables: SessionVariables }>();
  app.get("/metrics", (c) => metricsHandler(cluster)(c.req.raw));
  app.use(sessions({ cluster, ackMode, replicationHeader: "x-replication" }));
  app.get("/login", (c) => {
    c.get("session").set("user", c.req.query("user"));
    return c.json({ ok: true });
  });
  app.get("/add", (c) => {
    const session = c.get("session");
    const cart = session.get<string[]>("cart") ?? [];
    cart.push(c.req.query("item")!);
    session.set("cart", cart);
    return c.json({ cart });
  });
  app.get("/cart", (c) => {
    const session = c.get("session");
    return c.json({ user: session.get("user") ?? null, cart: session.get("cart") ?? [], epoch: session.epoch });
  });
  app.get("/logout", (c) => {
    c.get("session").invalidate();
    return c.json({ ok: true });
  });
  app.get("/boom", (c) => {
    c.get("session").set("half", "written");
    throw new Error("handler failed");
  });
  app.get("/redirect", (c) => {
    c.get("session").set("r", 1);
    return Response.redirect("http://127.0.0.1/elsewhere", 302); // immutable headers
  });
  app.get("/own-cookie", (c) => {
    c.get("session").set("o", 1);
    c.header("set-cookie", "theme=dark; Path=/", { append: true });
    return c.text("ok");
  });
  app.get("/unavailable", (c) => {
    c.get("session").set("lost", "write");
    throw new SessionUnavailableError("lease lapsed mid-request");
  });
  app.onError((error, c) => c.text(`error: ${error.message}`, 500));
  return app;
}

async function startCluster(ids: string[], ackMode: AckMode = "transport") {
  const cluster = await startInProcess(ids, {
    prefix: "hono",
    cluster: { secret: SECRET, logger: { warn: () => {} }, ackMode, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 60_000 },
  });
  const shop = await serveEach(cluster, (node) => shopApp(node).fetch);
  return { clusters: shop.nodes, servers: shop.servers, close: shop.close };
}

function cookieOf(response: Response): string {
  return response.headers.get("set-cookie")!.split(";")[0];
}

test("hono sessions(): first write creates the session, replicates it to the secondary and sets the cookie", async () => {
  const shop = await startCluster(["a", "b", "c"]);
  try {
    const a = shop.servers.get("a")!;
    const none = await fetch(`${a.url}/cart`);
    assert.deepEqual(await none.json(), { user: null, cart: [], epoch: 0 });
    assert.equal(none.headers.get("set-cookie"), null, "reading creates nothing");
    assert.equal(none.headers.get("x-replication"), null, "and replicates nothing");
    const login = await fetch(`${a.url}/login?user=ada`);
    assert.deepEqual(await login.json(), { ok: true });
    const setCookie = login.headers.get("set-cookie")!;
    assert.match(setCookie, /^sid=[A-Za-z0-9_-]{22}!a![bc]![A-Za-z0-9_-]{22}; Path=\/; HttpOnly; SameSite=Lax$/);
    assert.equal(login.headers.get("x-replication"), "transport");
    const cookie = cookieOf(login);
    const [id, , secondary] = cookie.slice("sid=".length).split("!");
    const add = await fetch(`${a.url}/add?item=apple`, { headers: { cookie } });
    assert.deepEqual(await add.json(), { cart: ["apple"] });
    assert.equal(add.headers.get("set-cookie"), null, "unchanged location: no new cookie");
    assert.equal(add.headers.get("x-replication"), "transport");
    // transport means the bytes reached the secondary's memory; its application applies them right after.
    const replica = shop.clusters.get(secondary)!;
    const deadline = Date.now() + 5000;
    while (replica.store.get(id)?.version !== 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(replica.store.get(id)?.attributes, { user: "ada", cart: ["apple"] });
    const cart = await fetch(`${a.url}/cart`, { headers: { cookie } });
    assert.deepEqual(await cart.json(), { user: "ada", cart: ["apple"], epoch: 1 });
  } finally {
    await shop.close();
  }
});

test("hono sessions(): the applied ack mode waits for the secondary application (header says so)", async () => {
  const shop = await startCluster(["a", "b"], "applied");
  try {
    const a = shop.servers.get("a")!;
    const login = await fetch(`${a.url}/login?user=bo`);
    await login.body?.cancel();
    assert.equal(login.headers.get("x-replication"), "applied");
    const id = cookieOf(login).slice("sid=".length).split("!")[0];
    assert.equal(shop.clusters.get("b")!.store.get(id)?.attributes.user, "bo", "applied before the response");
  } finally {
    await shop.close();
  }
});

test("hono sessions(): a handler that throws commits nothing; logout clears the cookie", async () => {
  const shop = await startCluster(["a", "b"]);
  try {
    const a = shop.servers.get("a")!;
    const boom = await fetch(`${a.url}/boom`);
    assert.equal(boom.status, 500);
    assert.equal(await boom.text(), "error: handler failed");
    assert.equal(boom.headers.get("set-cookie"), null, "no session from a failed request");
    const replication = shop.clusters.get("a")!.stats().replication;
    assert.equal(replication.deltas + replication.snapshots, 0, "nothing replicated");
    assert.equal(shop.clusters.get("b")!.stats().store.replicas, 0, "the secondary holds nothing");
    const login = await fetch(`${a.url}/login?user=cy`);
    await login.body?.cancel();
    const cookie = cookieOf(login);
    const out = await fetch(`${a.url}/logout`, { headers: { cookie } });
    await out.body?.cancel();
    assert.equal(out.headers.get("set-cookie"), "sid=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    const after = await fetch(`${a.url}/cart`, { headers: { cookie } });
    assert.deepEqual(await after.json(), { user: null, cart: [], epoch: 0 });
  } finally {
    await shop.close();
  }
});

test("hono sessions(): a SessionUnavailableError from the handler is the same 503 as withSessions gives, with nothing committed", async () => {
  const shop = await startCluster(["a", "b"]);
  try {
    const r = await fetch(`${shop.servers.get("a")!.url}/unavailable`);
    assert.equal(r.status, 503);
    assert.equal(r.headers.get("retry-after"), "1");
    assert.equal(await r.text(), "session temporarily unavailable");
    assert.equal(r.headers.get("set-cookie"), null);
    const replication = shop.clusters.get("a")!.stats().replication;
    assert.equal(replication.deltas + replication.snapshots, 0, "nothing replicated");
  } finally {
    await shop.close();
  }
});

test("hono sessions(): the cookie reaches immutable responses and sits beside the app's own cookies", async () => {
  const shop = await startCluster(["a", "b"]);
  try {
    const a = shop.servers.get("a")!;
    const redirect = await fetch(`${a.url}/redirect`, { redirect: "manual" });
    await redirect.body?.cancel();
    assert.equal(redirect.status, 302);
    assert.equal(redirect.headers.get("location"), "http://127.0.0.1/elsewhere");
    assert.match(redirect.headers.get("set-cookie") ?? "", /^sid=[A-Za-z0-9_-]{22}!a!b![A-Za-z0-9_-]{22};/);
    const own = await fetch(`${a.url}/own-cookie`);
    assert.equal(await own.text(), "ok");
    const cookies = own.headers.getSetCookie();
    assert.equal(cookies.length, 2, cookies.join(" | "));
    assert.ok(cookies.includes("theme=dark; Path=/"));
    assert.ok(cookies.some((c) => /^sid=[A-Za-z0-9_-]{22}!a!b![A-Za-z0-9_-]{22};/.test(c)));
  } finally {
    await shop.close();
  }
});

test("hono sessions(): a surviving server takes over the session of a dead primary (new epoch, new cookie)", async () => {
  const shop = await startCluster(["a", "b", "c"]);
  try {
    const a = shop.servers.get("a")!;
    const login = await fetch(`${a.url}/login?user=di`);
    await login.body?.cancel();
    const cookie = cookieOf(login);
    const secondary = cookie.split("!")[2];
    await shop.servers.get("a")!.close();
    await shop.clusters.get("a")!.close();
    const survivor = ["b", "c"].find((x) => x !== secondary)!; // fetches the session from its secondary
    for (const id of ["b", "c"]) while (shop.clusters.get(id)!.node.isAlive("a")) await new Promise((r) => setTimeout(r, 10));
    const cart = await fetch(`${shop.servers.get(survivor)!.url}/cart`, { headers: { cookie } });
    const body = await cart.json();
    assert.deepEqual({ ...body, epoch: undefined }, { user: "di", cart: [], epoch: undefined });
    assert.ok(body.epoch >= 2, `a new primary, a newer epoch: got ${body.epoch}`);
    assert.match(cart.headers.get("set-cookie") ?? "", new RegExp(`^sid=[A-Za-z0-9_-]{22}!${survivor}!${secondary}![A-Za-z0-9_-]{22};`), "the new primary is named");
  } finally {
    shop.servers.delete("a");
    shop.clusters.delete("a");
    await shop.close();
  }
});

test("hono app serves the cluster's metrics, with the request path's latency histogram", async () => {
  const shop = await startCluster(["a", "b"]);
  try {
    const a = shop.servers.get("a")!;
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${a.url}/login?user=u${i}`);
      await r.body?.cancel();
    }
    const m = await fetch(`${a.url}/metrics`);
    assert.equal(m.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const text = await m.text();
    assert.match(text, /^# TYPE rdma_sessions_replication_latency_seconds histogram$/m);
    assert.match(text, /^rdma_sessions_replication_latency_seconds_bucket\{ack="transport",le="\+Inf"\} 3$/m);
    assert.match(text, /^rdma_sessions_replication_latency_seconds_count\{ack="transport"\} 3$/m);
    assert.match(text, /^rdma_sessions_request_replications_total\{ack="transport",outcome="transport"\} 3$/m);
    assert.match(text, /^rdma_sessions_sessions\{role="primary"\} 3$/m);
    assert.match(text, /^rdma_sessions_peer_connections\{transport="loopback"\} 1$/m);
    assert.match(text, /^rdma_sessions_replicated_updates_total\{kind="snapshot"\} \d+$/m);
  } finally {
    await shop.close();
  }
});

test("examples/hono_app.ts runs under this runtime: three visits, applied on b, counted in the metrics", async () => {
  const ports = [await freePort(), await freePort(), await freePort(), await freePort()];
  const [cmd, args] = runtimeArgv(currentRuntime, "examples/hono_app.ts", ["--peer-ports", `${ports[0]},${ports[1]}`, "--http-ports", `${ports[2]},${ports[3]}`]);
  // Measured 0.8-0.9 s under either runtime on this 2-core machine (a guest booting beside it); 60 s
  // is the same bound as the other spawned tools (test/guest_runner.test.ts), for a loaded CI host.
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, String(r.stderr));
  const out = String(r.stdout);
  assert.match(out, /^visit: \{"visits":3,"server":"a","epoch":1\} replication=applied$/m);
  assert.match(out, /^replica on b: \{"visits":3\}$/m);
  assert.match(out, /^metric: rdma_sessions_replication_latency_seconds_count\{ack="applied"\} 3$/m);
});
