import { test } from "node:test";
import assert from "node:assert/strict";
import { withSessions } from "../src/http/with_sessions.ts";
import type { Session } from "../src/http/session.ts";
import { SessionTooLargeError } from "../src/session/errors.ts";
import type { AckMode } from "../src/rmi/types.ts";
import type { MessageSocket } from "../src/sdp/types.ts";
import { dialer, serveEach, startCluster } from "./fixtures/cluster.ts";

const SECRET = "http-test-cluster-secret-012345";

/** The shop used by the tests: login, add to cart, show cart, logout. */
function shop(request: Request, session: Session): Response {
  const url = new URL(request.url);
  try {
    switch (url.pathname) {
      case "/login":
        session.set("user", url.searchParams.get("user"));
        return Response.json({ ok: true });
      case "/add": {
        const cart = session.get<string[]>("cart") ?? [];
        cart.push(url.searchParams.get("item")!);
        session.set("cart", cart);
        return Response.json({ cart });
      }
      case "/touch":
        session.touch();
        return Response.json({ ok: true });
      case "/cart":
        return Response.json({ user: session.get("user") ?? null, cart: session.get("cart") ?? [], epoch: session.epoch });
      case "/big":
        session.set("blob", "x".repeat(Number(url.searchParams.get("n"))));
        return Response.json({ ok: true });
      case "/logout":
        session.invalidate();
        return Response.json({ ok: true });
      case "/redirect":
        session.set("r", 1);
        return Response.redirect("http://127.0.0.1/elsewhere", 302);
    }
  } catch (error) {
    if (error instanceof SessionTooLargeError) return new Response(error.message, { status: 413 });
    throw error;
  }
  return new Response("not found", { status: 404 });
}

/** Wraps a socket so that its sends can be held back (a stalled secondary). */
class Stall {
  stalled = false;
  #held: (() => void)[] = [];
  wrap(socket: MessageSocket): MessageSocket {
    const send = (bytes: Uint8Array) => socket.send(bytes);
    return {
      transport: socket.transport,
      remoteAddress: socket.remoteAddress,
      closed: socket.closed,
      send: (bytes: Uint8Array) =>
        this.stalled ? new Promise<void>((resolve, reject) => this.#held.push(() => send(bytes).then(resolve, reject))) : send(bytes),
      close: () => socket.close(),
      stats: () => socket.stats(),
      [Symbol.asyncIterator]: () => socket[Symbol.asyncIterator](),
      [Symbol.asyncDispose]: () => socket.close(),
    };
  }
  resume() {
    this.stalled = false;
    this.#held.splice(0).forEach((f) => f());
  }
}

async function startShop(ids: string[], ackMode: AckMode = "transport", ackTimeoutMs = 1000) {
  const stall = new Stall();
  const cluster = await startCluster(ids, {
    prefix: "shop",
    cluster: {
      secret: SECRET,
      dial: async (p) => stall.wrap(await dialer("loopback")(p)),
      logger: { warn: () => {} },
      ackMode,
      ackTimeoutMs,
      maxSessionBytes: 4096,
      heartbeatIntervalMs: 100,
      heartbeatTimeoutMs: 60_000,
    },
  });
  const shopCluster = await serveEach(cluster, (node) => withSessions(shop, { cluster: node, replicationHeader: "x-replication" }));
  return { clusters: shopCluster.nodes, servers: shopCluster.servers, stall, close: shopCluster.close };
}

function cookieOf(response: Response): string | undefined {
  const raw = response.headers.get("set-cookie");
  return raw?.split(";")[0];
}

test("http withSessions creates a session on first write and names primary and secondary in the cookie", async () => {
  const shopCluster = await startShop(["a", "b", "c"]);
  const a = shopCluster.servers.get("a")!;
  assert.match(a.runtime, /^(bun|deno)$/);
  const none = await fetch(`${a.url}/cart`);
  assert.equal(none.headers.get("set-cookie"), null, "reading creates nothing");
  await none.body?.cancel();
  const login = await fetch(`${a.url}/login?user=ada`);
  const setCookie = login.headers.get("set-cookie")!;
  assert.match(setCookie, /^sid=[A-Za-z0-9_-]{22}!a![bc]![A-Za-z0-9_-]{22}; Path=\/; HttpOnly; SameSite=Lax$/);
  assert.equal(login.headers.get("x-replication"), "transport");
  await login.body?.cancel();
  const cookie = cookieOf(login)!;
  const add = await fetch(`${a.url}/add?item=apple`, { headers: { cookie } });
  assert.deepEqual(await add.json(), { cart: ["apple"] });
  assert.equal(add.headers.get("set-cookie"), null, "unchanged location: no new cookie");
  const cart = await fetch(`${a.url}/cart`, { headers: { cookie } });
  assert.deepEqual(await cart.json(), { user: "ada", cart: ["apple"], epoch: 1 });
  assert.equal(cart.headers.get("x-replication"), null, "a read replicates nothing");
  const touched = await fetch(`${a.url}/touch`, { headers: { cookie } });
  await touched.body?.cancel();
  assert.equal(touched.headers.get("x-replication"), "transport", "touch() replicates the access time");
  await shopCluster.close();
});

test("http session survives the loss of its primary: another server serves it with a new cookie", async () => {
  const shopCluster = await startShop(["a", "b", "c"], "applied");
  const a = shopCluster.servers.get("a")!;
  const login = await fetch(`${a.url}/login?user=bob`);
  assert.equal(login.headers.get("x-replication"), "applied");
  await login.body?.cancel();
  let cookie = cookieOf(login)!;
  for (const item of ["pear", "fig"]) {
    const r = await fetch(`${a.url}/add?item=${item}`, { headers: { cookie } });
    await r.body?.cancel();
  }
  const [, , secondary] = cookie.slice(4).split("!");
  await shopCluster.servers.get("a")!.close();
  await shopCluster.clusters.get("a")!.close();
  const other = ["b", "c"].find((x) => x !== secondary)!;
  const b = shopCluster.clusters.get(other)!;
  while (b.node.isAlive("a")) await new Promise((r) => setTimeout(r, 10));
  const r = await fetch(`${shopCluster.servers.get(other)!.url}/cart`, { headers: { cookie } });
  // a left: its secondary promoted the session (epoch 2), then handed it to this server (epoch 3).
  assert.deepEqual(await r.json(), { user: "bob", cart: ["pear", "fig"], epoch: 3 });
  cookie = cookieOf(r)!;
  assert.match(cookie, new RegExp(`^sid=[A-Za-z0-9_-]{22}!${other}!${secondary}![A-Za-z0-9_-]{22}$`));
  shopCluster.clusters.delete("a");
  shopCluster.servers.delete("a");
  await shopCluster.close();
});

test("http session size limit gives the handler a clear error and leaves the session unchanged", async () => {
  const shopCluster = await startShop(["a", "b"]);
  const a = shopCluster.servers.get("a")!;
  const login = await fetch(`${a.url}/login?user=eve`);
  await login.body?.cancel();
  const cookie = cookieOf(login)!;
  const big = await fetch(`${a.url}/big?n=5000`, { headers: { cookie } });
  assert.equal(big.status, 413);
  assert.match(await big.text(), /over the limit 'maxSessionBytes' = 4096/);
  const cart = await fetch(`${a.url}/cart`, { headers: { cookie } });
  assert.deepEqual(await cart.json(), { user: "eve", cart: [], epoch: 1 });
  await shopCluster.close();
});

test("http logout invalidates everywhere and clears the cookie; redirects keep their cookie", async () => {
  const shopCluster = await startShop(["a", "b"], "applied");
  const a = shopCluster.servers.get("a")!;
  const login = await fetch(`${a.url}/login?user=zed`);
  await login.body?.cancel();
  const cookie = cookieOf(login)!;
  const id = cookie.slice(4).split("!")[0];
  const out = await fetch(`${a.url}/logout`, { headers: { cookie } });
  await out.body?.cancel();
  assert.match(out.headers.get("set-cookie")!, /^sid=; .*Max-Age=0$/);
  assert.equal(shopCluster.clusters.get("b")!.store.get(id)?.expired, true, "tombstone on the secondary");
  const after = await fetch(`${a.url}/cart`, { headers: { cookie } });
  assert.deepEqual(await after.json(), { user: null, cart: [], epoch: 0 });
  const redirect = await fetch(`${a.url}/redirect`, { redirect: "manual" });
  await redirect.body?.cancel();
  assert.equal(redirect.status, 302);
  assert.match(redirect.headers.get("set-cookie")!, /^sid=/);
  await shopCluster.close();
});

for (const mode of ["none", "transport"] as const) {
  test(`http responses in ${mode} mode are not held by a stalled secondary beyond the bound`, async () => {
    const bound = 200;
    const shopCluster = await startShop(["a", "b"], mode, bound);
    const a = shopCluster.servers.get("a")!;
    const login = await fetch(`${a.url}/login?user=sam`);
    await login.body?.cancel();
    assert.equal(login.headers.get("x-replication"), mode);
    const cookie = cookieOf(login)!;
    shopCluster.stall.stalled = true;
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      const r = await fetch(`${a.url}/add?item=i${i}`, { headers: { cookie } });
      const elapsed = performance.now() - started;
      await r.body?.cancel();
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("x-replication"), mode === "none" ? "none" : "timeout");
      // Generous: the bound plus plenty for a loaded machine; without the bound it would never return.
      assert.ok(elapsed < bound + 3000, `response took ${elapsed} ms`);
    }
    shopCluster.stall.resume();
    const b = shopCluster.clusters.get("b")!;
    const id = cookie.slice(4).split("!")[0];
    const deadline = Date.now() + 5000;
    while (b.store.get(id)?.version !== 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(b.store.get(id)?.attributes.cart, ["i0", "i1", "i2"], "held updates arrive once the secondary resumes");
    await shopCluster.close();
  });
}

test("http cookies are signed: an edited or made-up cookie starts a fresh session and fetches nothing", async () => {
  const shopCluster = await startShop(["a", "b", "c"], "applied");
  const a = shopCluster.servers.get("a")!;
  const login = await fetch(`${a.url}/login?user=eve`);
  await login.body?.cancel();
  const cookie = cookieOf(login)!;
  const [id, primary, secondary, mac] = cookie.slice(4).split("!");
  const b = shopCluster.servers.get("b")!;
  const forgeries = [
    `sid=${id}!${primary}!${secondary === "b" ? "c" : "b"}!${mac}`, // rerouted
    `sid=${id}!${primary}!${secondary}`, // MAC stripped (the old unsigned format)
    `sid=${id}!${primary}!${secondary}!${mac.slice(0, -2)}AA`, // MAC altered
    `sid=${"A".repeat(22)}!a!b!${mac}`, // made up
  ];
  const before = shopCluster.clusters.get("b")!.stats();
  for (const forged of forgeries) {
    const r = await fetch(`${b.url}/cart`, { headers: { cookie: forged } });
    assert.deepEqual((await r.json()).user, null, `no data for ${forged}`);
  }
  const after = shopCluster.clusters.get("b")!.stats();
  assert.equal(after.failover.badCookies - before.failover.badCookies, forgeries.length);
  assert.equal(after.failover.migrated, before.failover.migrated, "nothing was taken over");
  assert.equal(after.failover.lost, before.failover.lost, "nothing was looked up on the peers");
  // The real cookie still works at its primary.
  const mine = await fetch(`${a.url}/cart`, { headers: { cookie } });
  assert.equal((await mine.json()).user, "eve");
  await shopCluster.close();
});
