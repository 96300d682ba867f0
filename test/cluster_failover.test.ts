/**
 * Cluster tests with real child processes (Bun and Deno servers mixed) over
 * the tcp transport (rdma in the guest): expiry across processes after the
 * primary dies, and a stalled (SIGSTOPped) secondary. Every timing bound
 * derives from the timeouts the servers are configured with.
 *
 * (Losses under kill -9, SIGSTOP, partitions and forged cookies are measured
 * by the fault suite, test/fault_tcp.test.ts, whose clients write one
 * attribute per update so that no later update can mask a lost one.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { launchCluster, type LaunchedCluster } from "../examples/cluster_launcher.ts";
import { parseSessionCookie } from "../src/cluster/cookie.ts";

import { HOST, IN_GUEST, START_TIMEOUT_MS, TRANSPORT } from "./fixtures/cluster_env.ts";

const SECRET = "failover-test-secret-0123456789abcdef";

/** The failure timeout (heartbeat timeout, also the lease) and the ack bound: the guest's CPU is emulated. */
const HEARTBEAT_MS = 100;
const HEARTBEAT_TIMEOUT_MS = IN_GUEST ? 10_000 : 1000;
const ACK_TIMEOUT_MS = IN_GUEST ? 30_000 : 1000;
/**
 * Longest a failover may take once the primary is dead: its leases run out
 * (one heartbeat timeout), a majority certifies it (a margin and a vote), the
 * holder drains its socket and promotes. Twice that, for scheduling.
 */
const FAILOVER_MS = 2 * (2 * HEARTBEAT_TIMEOUT_MS + HEARTBEAT_MS * 5);
const TIMING = ["--heartbeat-ms", String(HEARTBEAT_MS), "--heartbeat-timeout-ms", String(HEARTBEAT_TIMEOUT_MS)];

interface Client {
  cookie?: string;
}

/**
 * GET `path` on `server`; a 503 (the session is being failed over) is retried
 * every 100 ms as a client would, until `retryForMs` has passed.
 */
async function get(cluster: LaunchedCluster, server: string, client: Client, path: string, retryForMs = 0) {
  const deadline = Date.now() + retryForMs;
  let response: Response;
  for (;;) {
    response = await fetch(`${cluster.servers.get(server)!.url}${path}`, {
      headers: client.cookie ? { cookie: client.cookie } : {},
    });
    if (response.status !== 503 || Date.now() >= deadline) break;
    await response.body?.cancel();
    await new Promise((r) => setTimeout(r, 100));
  }
  const text = await response.text();
  let body: Record<string, unknown> & { cart?: Record<string, number> };
  try {
    body = JSON.parse(text);
  } catch {
    body = { text };
  }
  const setCookie = response.headers.get("set-cookie");
  if (setCookie) client.cookie = setCookie.split(";")[0];
  return { status: response.status, body, replication: response.headers.get("x-replication") };
}

function locate(client: Client) {
  const loc = parseSessionCookie(client.cookie?.split("=")[1]);
  assert.ok(loc !== undefined, `the client has a session cookie (${client.cookie})`);
  return loc;
}

const stats = (cluster: LaunchedCluster, id: string) =>
  fetch(`${cluster.servers.get(id)!.url}/stats`).then((r) => r.json());

test(`cluster over ${TRANSPORT}: expiry decided by the primary is honoured by the secondary after the primary dies`, async () => {
  // The session kept alive must outlive the failover, so the idle limit is above the failover bound:
  // a shorter one (800 ms) expired the living session too while the guest (10 s failure timeout)
  // was still certifying the primary dead, and the test read [null, undefined].
  const maxIdleMs = FAILOVER_MS + 2 * HEARTBEAT_TIMEOUT_MS;
  const sweepMs = Math.max(50, Math.floor(maxIdleMs / 20));
  // Three servers: with two, the survivor alone is no majority and cannot certify the primary dead.
  const cluster = await launchCluster({
    servers: [{ id: "a", runtime: "bun" }, { id: "b", runtime: "deno" }, { id: "c", runtime: "bun" }],
    secret: SECRET,
    transport: TRANSPORT,
    startTimeoutMs: START_TIMEOUT_MS,
    args: ["--host", HOST, "--ack", "applied", "--ack-timeout-ms", String(ACK_TIMEOUT_MS), "--max-idle-ms", String(maxIdleMs), "--sweep-ms", String(sweepMs), ...TIMING],
    stderr: "pipe",
  });
  try {
    const expiring: Client = {};
    const living: Client = {};
    assert.equal((await get(cluster, "a", expiring, "/login?user=old")).status, 200);
    assert.equal((await get(cluster, "a", living, "/login?user=new")).status, 200);
    const expiringAt = locate(expiring).secondary!;
    const livingAt = locate(living).secondary!;
    assert.ok(expiringAt && livingAt, "both sessions have a secondary");
    // Keep one session alive by touching it (well within a quarter of the idle limit); let the other idle past it.
    const touchEveryMs = Math.floor(maxIdleMs / 8);
    const idleUntil = Date.now() + maxIdleMs + 4 * sweepMs;
    let qty = 0;
    while (Date.now() < idleUntil) {
      await new Promise((r) => setTimeout(r, touchEveryMs));
      const r = await get(cluster, "a", living, "/cart/add?item=x&qty=" + ++qty);
      assert.equal(r.status, 200);
      assert.equal(r.replication, "applied");
    }
    // The tombstone is replicated with ack transport by the sweeper: give it one ack bound to land.
    const tombstoneBy = Date.now() + ACK_TIMEOUT_MS;
    while ((await stats(cluster, expiringAt)).store.expired < 1 && Date.now() < tombstoneBy) {
      await new Promise((r) => setTimeout(r, sweepMs));
    }
    assert.ok((await stats(cluster, expiringAt)).store.expired >= 1, "the tombstone reached the secondary");
    cluster.signal("a", "SIGKILL");
    cluster.servers.get("a")!.alive = false;
    const gone = await get(cluster, expiringAt, expiring, "/cart", FAILOVER_MS);
    assert.equal(gone.status, 200, `status ${gone.status}: ${JSON.stringify(gone.body)}`);
    assert.equal(gone.body.user, null, "the expired session does not come back on the secondary");
    const kept = await get(cluster, livingAt, living, "/cart", FAILOVER_MS);
    assert.equal(kept.status, 200, `status ${kept.status}: ${JSON.stringify(kept.body)}`);
    assert.deepEqual(
      [kept.body.user, kept.body.cart?.x],
      ["new", qty],
      `${JSON.stringify(kept.body)} from ${livingAt}: ${JSON.stringify((await stats(cluster, livingAt)).failover)}; its log:\n` +
        cluster.servers.get(livingAt)!.log.slice(-8).join("\n"),
    );
    assert.ok(Number(kept.body.epoch) >= 2, `a new primary took it over with a new epoch (${kept.body.epoch})`);
  } finally {
    await cluster.stop();
  }
});

for (const ack of ["none", "transport"] as const) {
  test(`cluster over ${TRANSPORT}: the primary answers within the bound in ${ack} mode while its secondary process is stopped (SIGSTOP)`, async () => {
    const bound = IN_GUEST ? 3000 : 300;
    // A response may take the bound plus the request's own work; the emulated CPU is slow, so
    // that slack scales with the bound. The stop (4 such requests) stays below the failure timeout.
    const slack = 2 * bound;
    const heartbeatTimeoutMs = 4 * (bound + slack) + bound;
    const failoverMs = 2 * (2 * heartbeatTimeoutMs + HEARTBEAT_MS * 5);
    const cluster = await launchCluster({
      servers: [{ id: "a", runtime: "deno" }, { id: "b", runtime: "bun" }, { id: "c", runtime: "deno" }],
      secret: SECRET,
      transport: TRANSPORT,
      startTimeoutMs: START_TIMEOUT_MS,
      args: ["--host", HOST, "--ack", ack, "--ack-timeout-ms", String(bound), "--heartbeat-ms", String(HEARTBEAT_MS), "--heartbeat-timeout-ms", String(heartbeatTimeoutMs)],
      stderr: "pipe",
    });
    try {
      const client: Client = {};
      const login = await get(cluster, "a", client, "/login?user=s");
      assert.equal(login.status, 200);
      assert.equal(login.replication, ack);
      const secondary = locate(client).secondary!;
      assert.ok(secondary !== undefined && secondary !== "a", `the session has a secondary (${client.cookie})`);
      const appliedBefore = (await stats(cluster, secondary)).store.applied;
      cluster.signal(secondary, "SIGSTOP");
      const stoppedAt = performance.now();
      for (let i = 0; i < 4; i++) {
        const started = performance.now();
        const r = await get(cluster, "a", client, `/cart/add?item=i${i}&qty=1`);
        const elapsed = performance.now() - started;
        assert.equal(r.status, 200);
        // Over tcp the return needs the secondary process, so it times out; over rdma the
        // secondary's NIC (here rxe in its kernel) may complete a bcopy send by itself.
        const expected = ack === "none" ? ["none"] : TRANSPORT === "tcp" ? ["timeout"] : ["timeout", "transport"];
        assert.ok(expected.includes(r.replication!), `replication ${r.replication}`);
        assert.ok(elapsed < bound + slack, `response took ${elapsed.toFixed(0)} ms with a ${bound} ms bound`);
      }
      const stoppedFor = performance.now() - stoppedAt;
      cluster.signal(secondary, "SIGCONT");
      assert.ok(stoppedFor < heartbeatTimeoutMs, `stopped ${stoppedFor.toFixed(0)} ms, below the failure timeout (${heartbeatTimeoutMs} ms)`);
      const after = await get(cluster, "a", client, "/cart/add?item=last&qty=1", failoverMs);
      assert.equal(after.status, 200);
      assert.equal(after.replication, ack);
      // Once resumed, the held updates reach the secondary (4 held, 1 after): wait until it applied them
      // (ack none waits for nothing), within a few ack bounds, then kill the primary.
      const appliedBy = Date.now() + 10 * (bound + slack);
      let applied = appliedBefore;
      while (applied < appliedBefore + 5 && Date.now() < appliedBy) {
        await new Promise((r) => setTimeout(r, 50));
        applied = (await stats(cluster, secondary)).store.applied;
      }
      assert.ok(applied >= appliedBefore + 5, `the secondary applied the held updates (${applied - appliedBefore} of 5)`);
      cluster.signal("a", "SIGKILL");
      cluster.servers.get("a")!.alive = false;
      const r = await get(cluster, secondary, client, "/cart", failoverMs);
      assert.equal(r.status, 200, `status ${r.status}: ${JSON.stringify(r.body)}`);
      assert.deepEqual(Object.keys(r.body.cart ?? {}).sort(), ["i0", "i1", "i2", "i3", "last"], `${JSON.stringify(r.body)} from ${secondary}; its log:\n${cluster.servers.get(secondary)!.log.slice(-8).join("\n")}`);
    } finally {
      await cluster.stop();
    }
  });
}
