/**
 * The byte stream under the tcp link keeps the `net.Socket` contract the
 * link relies on, on every driver this runtime has (Bun: its native sockets,
 * `src/sdp/links/bun_tcp.ts`, and `node:net`; Deno: `node:net`): a write the
 * kernel cannot take at once is finished later, in order, and its callback
 * comes only then; bytes that arrive before `resume()` are kept; a peer that
 * vanishes with writes pending fails each of them, and `close` comes once.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { BunStream, connectNative, nativeTcp, type StreamSocket } from "../src/sdp/links/bun_tcp.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const CHUNK = 256 * 1024;
const CHUNKS = 64; // 16 MiB: more than loopback's socket buffers hold while the reader is paused

type Driver = { name: string; connect(port: number): Promise<StreamSocket> };

const drivers: Driver[] = [
  {
    name: "node:net",
    connect: (port) =>
      new Promise((resolve, reject) => {
        const s = net.connect({ host: "127.0.0.1", port });
        s.once("connect", () => {
          s.pause();
          resolve(s);
        });
        s.once("error", reject);
      }),
  },
];
if (isBun) drivers.push({ name: "bun native", connect: (port) => connectNative("127.0.0.1", port) });

/** A server whose accepted sockets start paused; resolves each accepted socket in turn. */
async function pausedServer(): Promise<{ port: number; next(): Promise<net.Socket>; close(): void }> {
  const accepted: net.Socket[] = [];
  const waiting: ((s: net.Socket) => void)[] = [];
  const server = net.createServer({ pauseOnConnect: true }, (s) => {
    s.on("error", () => {});
    const w = waiting.shift();
    if (w) w(s);
    else accepted.push(s);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    next: () => (accepted.length > 0 ? Promise.resolve(accepted.shift()!) : new Promise((r) => waiting.push(r))),
    close: () => server.close(),
  };
}

function chunk(i: number): Uint8Array {
  const b = new Uint8Array(CHUNK);
  for (let k = 0; k < CHUNK; k += 4096) b[k] = (i * 31 + k / 4096) & 0xff;
  b[0] = i;
  return b;
}

test("tcp link under Bun runs on Bun's native sockets, under Deno on node:net", () => {
  assert.equal(nativeTcp, isBun);
});

for (const d of drivers) {
  test(`${d.name}: writes the kernel cannot take at once finish later, in order, with their callbacks only then`, async () => {
    const server = await pausedServer();
    try {
      const s = await d.connect(server.port);
      const peer = await server.next();
      const done: number[] = [];
      for (let i = 0; i < CHUNKS; i++) s.write(chunk(i), (e) => done.push(e ? -1 : i));
      await new Promise((r) => setTimeout(r, 100));
      // The reader has not read a byte: 16 MiB cannot all be in the kernel yet.
      assert.ok(done.length < CHUNKS, `all ${CHUNKS} writes reported done while the peer read nothing`);
      const got: Uint8Array[] = [];
      let bytes = 0;
      const all = new Promise<void>((resolve) =>
        peer.on("data", (c: Uint8Array) => {
          got.push(c);
          bytes += c.length;
          if (bytes === CHUNK * CHUNKS) resolve();
        })
      );
      peer.resume();
      await all;
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(done, Array.from({ length: CHUNKS }, (_, i) => i));
      const flat = new Uint8Array(bytes);
      let at = 0;
      for (const c of got) {
        flat.set(c, at);
        at += c.length;
      }
      for (let i = 0; i < CHUNKS; i++) {
        const want = chunk(i);
        const have = flat.subarray(i * CHUNK, (i + 1) * CHUNK);
        for (let k = 0; k < CHUNK; k += 4096) assert.equal(have[k], want[k], `chunk ${i} byte ${k}`);
      }
      s.destroy();
      peer.destroy();
    } finally {
      server.close();
    }
  });

  test(`${d.name}: bytes sent before resume() are kept and handed out on resume, in order`, async () => {
    const server = await pausedServer();
    try {
      const s = await d.connect(server.port);
      const peer = await server.next();
      peer.resume();
      peer.write(new Uint8Array([1, 2, 3]));
      peer.write(new Uint8Array([4, 5]));
      await new Promise((r) => setTimeout(r, 50));
      const got: number[] = [];
      s.on("data", (c: Uint8Array) => got.push(...c));
      s.resume();
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(got, [1, 2, 3, 4, 5]);
      s.destroy();
      peer.destroy();
    } finally {
      server.close();
    }
  });

  test(`${d.name}: a peer that vanishes with writes pending fails each of them, and close comes once`, async () => {
    const server = await pausedServer();
    try {
      const s = await d.connect(server.port);
      s.on("error", () => {});
      const peer = await server.next();
      let closes = 0;
      s.on("close", () => closes++);
      s.resume();
      const results: (string | number)[] = [];
      for (let i = 0; i < CHUNKS; i++) s.write(chunk(i), (e) => results.push(e ? "error" : i));
      await new Promise((r) => setTimeout(r, 50));
      peer.resetAndDestroy?.() ?? peer.destroy();
      const until = Date.now() + 5000;
      while (results.length < CHUNKS && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      assert.equal(results.length, CHUNKS, "every write's callback came");
      const firstError = results.indexOf("error");
      assert.ok(firstError >= 0, "writes the peer never took report an error");
      // Done ones come first, in order; after the first failure, all fail.
      assert.deepEqual(results.slice(0, firstError), Array.from({ length: firstError }, (_, i) => i));
      assert.ok(results.slice(firstError).every((r) => r === "error"));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(closes, 1);
      assert.equal(s.destroyed, true);
    } finally {
      server.close();
    }
  });
}

if (isBun) {
  test("bun native: a destroyed stream refuses writes with an error, asynchronously", async () => {
    const server = await pausedServer();
    try {
      const s = (await connectNative("127.0.0.1", server.port)) as BunStream;
      const peer = await server.next();
      s.destroy();
      let returned = false;
      let calledBeforeReturn = false;
      const err = await new Promise<Error | null | undefined>((r) => {
        s.write(new Uint8Array(8), (e) => {
          calledBeforeReturn = !returned;
          r(e);
        });
        returned = true;
      });
      assert.equal(calledBeforeReturn, false);
      assert.match(String(err), /ended|closed/);
      peer.destroy();
    } finally {
      server.close();
    }
  });
}
