/**
 * Intruders against a running cluster of Bun and Deno servers over tcp: a
 * peer without the secret, a peer that skips authentication to forge a
 * replica, and an authenticated peer that sends garbage. None may disturb the
 * real replication, and no forged replica may ever be served.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { launchCluster, type LaunchedCluster } from "../examples/cluster_launcher.ts";
import { authenticate } from "../src/cluster/auth.ts";
import { parseSessionCookie } from "../src/cluster/cookie.ts";
import { encodeCall } from "../src/rmi/frame.ts";
import { jsonCodec } from "../src/rmi/codec.ts";
import { connect } from "../src/sdp/mod.ts";

import { HOST, SLOW, START_TIMEOUT_MS, TRANSPORT, failoverBoundMs } from "./fixtures/cluster_env.ts";

const SECRET = "security-test-secret-0123456789";

async function get(cluster: LaunchedCluster, server: string, cookie: string | undefined, path: string) {
  const response = await fetch(`${cluster.servers.get(server)!.url}${path}`, { headers: cookie ? { cookie } : {} });
  const body = await response.json();
  return { body, cookie: response.headers.get("set-cookie")?.split(";")[0] ?? cookie, replication: response.headers.get("x-replication") };
}

async function stats(cluster: LaunchedCluster, id: string) {
  return await fetch(`${cluster.servers.get(id)!.url}/stats`).then((r) => r.json());
}

/** Connects like a peer would; a few tries, since an emulated guest may be slow to re-arm its listener. */
async function dial(port: number) {
  for (let attempt = 0;; attempt++) {
    try {
      return await connect({ transport: TRANSPORT, host: HOST, port });
    } catch (error) {
      if (attempt === 4) throw error;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

function closedWithin(socket: { closed: Promise<unknown> }, ms: number) {
  return Promise.race([socket.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
}

test(`cluster over ${TRANSPORT} rejects intruders (no secret, no handshake, garbage) without disturbing replication`, async () => {
  const cluster = await launchCluster({
    servers: [{ id: "a", runtime: "bun" }, { id: "b", runtime: "deno" }, { id: "c", runtime: "bun" }],
    secret: SECRET,
    transport: TRANSPORT,
    startTimeoutMs: START_TIMEOUT_MS,
    args: ["--host", HOST, "--ack", "applied", "--heartbeat-ms", "100", "--heartbeat-timeout-ms", "1000", ...SLOW],
    stderr: "pipe",
  });
  try {
    let { cookie, replication } = await get(cluster, "a", undefined, "/login?user=alice");
    assert.equal(replication, "applied");
    const loc = parseSessionCookie(cookie!.split("=")[1])!;
    const secondary = cluster.servers.get(loc.secondary!)!;
    const port = secondary.clusterPort;

    // 1. A peer that claims to be 'a' but lacks the secret.
    const noSecret = await dial(port);
    await assert.rejects(
      authenticate(noSecret, noSecret[Symbol.asyncIterator](), {
        role: "dialer",
        self: "a",
        secret: "a-guess-at-the-cluster-secret",
        allowed: () => true,
      }),
      /closed|wrong cluster secret/,
    );
    assert.ok(await closedWithin(noSecret, 5000), "the server closed the unauthenticated connection");

    // 2. A peer that skips the handshake and sends a forged replica of alice's session.
    const forger = await dial(port);
    const forged = {
      kind: "snapshot",
      id: loc.id,
      epoch: 99,
      version: 99,
      primary: "a",
      lastAccess: Date.now(),
      maxIdleMs: 3_600_000,
      attributes: { user: "mallory", cart: { stolen: 1 } },
    };
    await forger.send(encodeCall(1, "replicate", "transport", jsonCodec.encode(forged))).catch(() => {});
    assert.ok(await closedWithin(forger, 5000), "the server closed the connection that skipped authentication");

    // 3. A peer with the secret that then sends a malformed frame.
    const garbler = await dial(port);
    const who = await authenticate(garbler, garbler[Symbol.asyncIterator](), {
      role: "dialer",
      self: "c" === loc.secondary ? "a" : "c",
      secret: SECRET,
      allowed: () => true,
    });
    assert.equal(who, loc.secondary);
    await garbler.send(new Uint8Array([0x7f, 1, 2, 3])).catch(() => {});
    assert.ok(await closedWithin(garbler, 5000), "the server closed the connection that sent a malformed frame");

    // Real replication was not disturbed.
    for (const item of ["pen", "ink"]) {
      ({ cookie, replication } = await get(cluster, "a", cookie, `/cart/add?item=${item}&qty=2`));
      assert.equal(replication, "applied");
    }
    const s = await stats(cluster, loc.secondary!);
    assert.ok(s.node.authRejected >= 2, `auth rejections counted: ${s.node.authRejected}`);
    assert.ok(s.node.malformedFrames >= 1, `malformed frames counted: ${s.node.malformedFrames}`);

    // The primary dies; the session comes from the secondary: alice's, never the forgery.
    cluster.signal("a", "SIGKILL");
    cluster.servers.get("a")!.alive = false;
    // 503 until the secondary has promoted it: at most a failover (bound from the timeouts).
    let after;
    const deadline = Date.now() + failoverBoundMs();
    while (Date.now() < deadline) {
      const r = await fetch(`${secondary.url}/cart`, { headers: { cookie: cookie! } });
      if (r.status !== 503) {
        after = await r.json();
        break;
      }
      await r.body?.cancel();
      await new Promise((res) => setTimeout(res, 200));
    }
    assert.ok(after !== undefined, `the secondary served the session within ${failoverBoundMs()} ms of the kill`);
    assert.deepEqual([after.user, after.cart], ["alice", { pen: 2, ink: 2 }]);
  } catch (error) {
    for (const s of cluster.servers.values()) console.error(`--- server ${s.id} log\n${s.log.join("\n")}`);
    throw error;
  } finally {
    await cluster.stop();
  }
});
