/**
 * Membership from DNS (src/cluster/dns_peers.ts) against a real DNS server:
 * dnsmasq from Debian, started here on a loopback port, whose records change
 * during the test (it is restarted with new records, as a headless Service's
 * records change when pods come and go).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolvePeers } from "../src/cluster/dns_peers.ts";
import { startSessionCluster } from "../src/cluster/start.ts";
import { collectOutput, killChild } from "./fixtures/runtime.ts";
import { freePort, until } from "./fixtures/wait.ts";
import type { SessionCluster } from "../src/cluster/session_cluster.ts";

const DNSMASQ = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].find((p) => existsSync(p)) ?? "dnsmasq";
const ZONE = "shop.test";
const SRV = `_sessions._tcp.${ZONE}`;

/** A dnsmasq on 127.0.0.1:port serving SRV + A records for `peers` (in the given order). */
class Dns {
  #child: ChildProcess | undefined;
  readonly dir = mkdtempSync(join(tmpdir(), "rdma-dns-"));
  constructor(readonly port: number) {}

  async serve(peers: { id: string; port: number }[]): Promise<void> {
    await this.stop();
    const lines = peers.flatMap((p) => [
      `srv-host=${SRV},${p.id}.${ZONE},${p.port},0,0`,
      `host-record=${p.id}.${ZONE},127.0.0.1`,
    ]);
    const conf = join(this.dir, "dnsmasq.conf");
    writeFileSync(conf, lines.join("\n") + "\n");
    const child = spawn(DNSMASQ, [
      "--no-daemon", `--port=${this.port}`, "--listen-address=127.0.0.1", "--bind-interfaces",
      "--no-resolv", "--no-hosts", `--conf-file=${conf}`, "--pid-file=" + join(this.dir, "pid"),
    ], { stdio: ["ignore", "ignore", "pipe"] });
    const stderr = collectOutput(child);
    this.#child = child;
    let failed: Error | undefined;
    child.on("error", (e) => (failed = e));
    // Ready when it answers.
    const deadline = Date.now() + 5000;
    for (;;) {
      if (failed !== undefined || child.exitCode !== null) {
        throw new Error(`dnsmasq did not start (apt-get install dnsmasq-base): ${failed?.message ?? stderr()}`);
      }
      try {
        await resolvePeers({ name: SRV, nameServers: [`127.0.0.1:${this.port}`] });
        return;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`dnsmasq on port ${this.port} does not answer: ${(error as Error).message} ${stderr()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    await killChild(child, "SIGTERM");
  }

  async close(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}



test("dns peers: SRV targets become peers named by their first label, sorted whatever the record order; A records need a port", async () => {
  const dns = new Dns(await freePort());
  try {
    const nameServers = [`127.0.0.1:${dns.port}`];
    await dns.serve([{ id: "sessions-2", port: 7303 }, { id: "sessions-0", port: 7301 }, { id: "sessions-1", port: 7302 }]);
    const first = await resolvePeers({ name: SRV, nameServers, transport: "tcp" });
    assert.deepEqual(first.map((p) => [p.id, p.host, p.port]), [
      ["sessions-0", "127.0.0.1", 7301],
      ["sessions-1", "127.0.0.1", 7302],
      ["sessions-2", "127.0.0.1", 7303],
    ]);
    await dns.serve([{ id: "sessions-1", port: 7302 }, { id: "sessions-0", port: 7301 }, { id: "sessions-2", port: 7303 }]);
    assert.deepEqual(await resolvePeers({ name: SRV, nameServers, transport: "tcp" }), first, "identity does not depend on record order");
    const byAddress = await resolvePeers({ name: `sessions-0.${ZONE}`, record: "A", port: 9000, nameServers });
    assert.deepEqual(byAddress, [{ id: "127.0.0.1", host: "127.0.0.1", port: 9000, transport: undefined }]);
    await assert.rejects(resolvePeers({ name: `sessions-0.${ZONE}`, record: "A", nameServers }), /'port' is required/);
    await assert.rejects(resolvePeers({ name: `_nothing._tcp.${ZONE}`, nameServers }), /SRV lookup of '_nothing\._tcp\.shop\.test' failed/);
  } finally {
    await dns.close();
  }
});

test("dns membership: servers find each other in DNS; one that appears later joins, one that vanishes is treated as down and its sessions re-protected", async () => {
  const dns = new Dns(await freePort());
  const [pa, pb, pc] = await Promise.all([freePort(), freePort(), freePort()]);
  const nodes = new Map<string, SessionCluster>();
  try {
    await dns.serve([{ id: "b", port: pb }, { id: "a", port: pa }]);
    const start = (self: string) =>
      startSessionCluster({
        self,
        secret: "dns-membership-secret-0123456789",
        transport: "tcp",
        dns: { name: SRV, nameServers: [`127.0.0.1:${dns.port}`], refreshMs: 200, transport: "tcp" },
        dnsWaitMs: 20_000,
        heartbeatIntervalMs: 100,
        heartbeatTimeoutMs: 1500,
        logger: { warn: () => {} },
      }).then((n) => void nodes.set(self, n));
    const cStarted = start("c"); // not published yet: waits for its own record
    await Promise.all([start("a"), start("b")]);
    const a = nodes.get("a")!;
    assert.ok(await a.waitForPeers(10_000), "a and b connected through DNS");
    const s = a.create();
    assert.equal(s.secondary, "b");
    assert.equal(await a.commit(s.id, { n: 1 }, [], { ack: "applied" }), "applied");
    assert.equal(nodes.has("c"), false, "c is still waiting for its record");

    // c is published (records in another order): it starts, and a and b add it.
    await dns.serve([{ id: "c", port: pc }, { id: "a", port: pa }, { id: "b", port: pb }]);
    await cStarted;
    const c = nodes.get("c")!;
    await until(() => a.node.isAlive("c") && nodes.get("b")!.node.isAlive("c") && c.node.isAlive("a"), "c joined", 10_000);
    assert.deepEqual([...a.node.peers.keys()], ["a", "b", "c"]);
    assert.equal(a.store.get(s.id)!.secondary, "b", "existing sessions stay where they are");
    const fresh = Array.from({ length: 30 }, () => a.create());
    assert.ok(fresh.some((r) => r.secondary === "c"), "new sessions may pick the new peer");

    // b leaves: gone from DNS and stopped. Its sessions' copies are re-protected on c.
    await dns.serve([{ id: "a", port: pa }, { id: "c", port: pc }]);
    await nodes.get("b")!.close();
    nodes.delete("b");
    await until(() => !a.node.peers.has("b"), "b dropped from a's peer list", 10_000);
    await until(() => a.store.get(s.id)!.secondary === "c" && c.store.get(s.id)?.attributes.n === 1, "the session re-protected on c", 10_000);
    assert.equal(await a.commit(s.id, { n: 2 }, [], { ack: "applied" }), "applied", "a still holds its lease (a and c)");
  } finally {
    await Promise.all([...nodes.values()].map((n) => n.close()));
    await dns.close();
  }
});
