/**
 * TLS for the tcp transport (src/sdp/links/tls.ts): mutual certificates from a CA
 * made here with openssl, seen on the wire through a recording relay, and a
 * cluster of three servers replicating over it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, listen } from "../src/sdp/mod.ts";
import type { TlsConfig } from "../src/sdp/links/tls.ts";
import { startSessionCluster } from "../src/cluster/start.ts";
import { freePort } from "./fixtures/wait.ts";

/** A CA and a certificate it signed for 127.0.0.1 (server and client use), as files. */
function makePki(dir: string, name: string): TlsConfig {
  const run = (...args: string[]) => {
    try {
      execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    } catch (error) {
      const e = error as { code?: string; stderr?: Buffer };
      if (e.code === "ENOENT") throw new Error("openssl is needed to make test certificates: apt-get install openssl");
      throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString()}`);
    }
  };
  run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}-ca.key`, "-out", `${name}-ca.crt`, "-subj", `/CN=${name} test CA`, "-days", "2");
  run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name} node`);
  writeFileSync(join(dir, `${name}.ext`), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n");
  run("x509", "-req", "-in", `${name}.csr`, "-CA", `${name}-ca.crt`, "-CAkey", `${name}-ca.key`, "-CAcreateserial", "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`);
  return { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`), caFile: join(dir, `${name}-ca.crt`) };
}

/** A tcp relay to `port` that records every byte going through it. */
async function recordingRelay(port: number): Promise<{ port: number; bytes: () => Buffer; close: () => Promise<void> }> {
  const chunks: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect({ host: "127.0.0.1", port });
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    inbound.on("data", (d: Buffer) => {
      chunks.push(Buffer.from(d));
      outbound.write(d);
    });
    outbound.on("data", (d: Buffer) => {
      chunks.push(Buffer.from(d));
      inbound.write(d);
    });
    inbound.on("end", () => outbound.end());
    outbound.on("end", () => inbound.end());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as net.AddressInfo).port,
    bytes: () => Buffer.concat(chunks),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

const MARKER = "session-secret-cart-contents-0123456789";

async function exchange(tls: TlsConfig | undefined, listenerTls: TlsConfig | undefined) {
  const server = await listen({ transport: "tcp", host: "127.0.0.1", port: 0, tls: listenerTls });
  const relay = await recordingRelay(server.address.port);
  const accepted = server[Symbol.asyncIterator]().next();
  const client = await connect({ transport: "tcp", host: "127.0.0.1", port: relay.port, tls, timeoutMs: 3000, handshakeTimeoutMs: 3000 });
  const peer = (await accepted).value!;
  await client.send(new TextEncoder().encode(MARKER));
  const got = await peer[Symbol.asyncIterator]().next();
  const text = new TextDecoder().decode(got.value!.bytes);
  got.value!.release();
  await client.close();
  await peer.close();
  await server.close();
  await relay.close();
  return { text, wire: relay.bytes() };
}

test("tcp tls: messages arrive intact and the wire carries no plaintext (a plain connection through the same relay does)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rdma-tls-"));
  try {
    const pki = makePki(dir, "cluster");
    const plain = await exchange(undefined, undefined);
    assert.equal(plain.text, MARKER);
    assert.ok(plain.wire.includes(MARKER), "the relay sees plaintext on a plain tcp connection");
    const secure = await exchange(pki, pki);
    assert.equal(secure.text, MARKER);
    assert.ok(secure.wire.length > MARKER.length, "bytes went through the relay");
    assert.ok(!secure.wire.includes(MARKER), "no plaintext on the wire with tls");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("tcp tls: a peer without a certificate from the cluster's CA, or without tls, is refused; the listener keeps serving", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rdma-tls-"));
  try {
    const pki = makePki(dir, "cluster");
    const rogue = makePki(dir, "rogue");
    const server = await listen({ transport: "tcp", host: "127.0.0.1", port: 0, tls: pki });
    const port = server.address.port;
    const opts = { transport: "tcp" as const, host: "127.0.0.1", port, timeoutMs: 3000, handshakeTimeoutMs: 3000 };
    // A certificate from another CA: the server refuses it (and the client refuses the server's).
    await assert.rejects(connect({ ...opts, tls: rogue }), /tls|certificate|closed|handshake/i);
    // Our CA but no certificate of its own: refused.
    await assert.rejects(connect({ ...opts, tls: { caFile: pki.caFile, cert: "", key: "" } }), /tls|certificate|closed|handshake|key|cert/i);
    // Plain tcp to a tls port: the SDP handshake never completes.
    await assert.rejects(connect(opts), /timed out|closed|disconnected|handshake|protocol/i);
    // A good peer still gets in.
    const accepted = server[Symbol.asyncIterator]().next();
    const good = await connect({ ...opts, tls: pki });
    const peer = (await accepted).value!;
    await good.send(new Uint8Array([1, 2, 3]));
    const m = await peer[Symbol.asyncIterator]().next();
    assert.deepEqual([...m.value!.bytes], [1, 2, 3]);
    m.value!.release();
    await good.close();
    await peer.close();
    await server.close();
    // A missing file is named.
    await assert.rejects(connect({ ...opts, tls: { certFile: join(dir, "nope.crt"), keyFile: pki.keyFile, caFile: pki.caFile } }), /'certFile' \S*nope\.crt cannot be read/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("tcp tls: a cluster of three servers replicates over tls (the cluster secret still authenticates peers)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rdma-tls-"));
  try {
    const tls = makePki(dir, "cluster");
    const ports = await Promise.all([0, 1, 2].map(() => freePort()));
    const peers = ["a", "b", "c"].map((id, i) => ({ id, host: "127.0.0.1", port: ports[i], transport: "tcp" as const }));
    const secret = "tls-cluster-secret-0123456789";
    const nodes = await Promise.all(peers.map((p) =>
      startSessionCluster({ self: p.id, peers, secret, tls, logger: { warn: () => {} }, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 2000 })
    ));
    try {
      for (const n of nodes) assert.ok(await n.waitForPeers(10_000), `${n.self} sees its peers over tls`);
      const a = nodes[0];
      const s = a.create();
      assert.equal(await a.commit(s.id, { cart: MARKER }, [], { ack: "applied" }), "applied");
      const replica = nodes.find((n) => n.self === s.secondary)!.store.get(s.id)!;
      assert.equal(replica.attributes.cart, MARKER);
    } finally {
      await Promise.all(nodes.map((n) => n.close()));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

