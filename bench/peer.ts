/**
 * The far side of the transport benchmarks, a child process under Bun or Deno.
 *
 *   peer.ts rdma <host> <maxMessageSize>   SDP over rdma: echo (bcopy), echo (zcopy), sink
 *   peer.ts tcp  <host> <maxMessageSize>   SDP over tcp: echo, sink; plus a plain node:net echo
 *
 * Prints one JSON line with the ports, then serves until killed:
 * `{"echoBcopy","echoZcopy","sink","plainEcho"?}`. An echo listener sends
 * every message back on the same socket with its own zcopy threshold (so
 * both directions of a ping-pong use the same path); the sink releases
 * every message at once. The plain echo speaks 4-byte little-endian length
 * + payload frames and writes each frame straight back.
 *
 * @module
 */
import * as net from "node:net";
import { listen } from "../src/sdp/mod.ts";
import type { TransportKind } from "../src/sdp/types.ts";

/** zcopyThreshold values that force one path: every message by zcopy, or none. */
export const FORCE_ZCOPY = 1;
export const FORCE_BCOPY = 0x7fffffff;

async function echo(transport: TransportKind, host: string, maxMessageSize: number, zcopyThreshold: number): Promise<number> {
  const server = await listen({ transport, host, port: 0, maxMessageSize, zcopyThreshold });
  (async () => {
    for await (const s of server) {
      (async () => {
        for await (const m of s) {
          s.send(m.bytes).catch(() => {}); // send copies before it returns
          m.release();
        }
      })();
    }
  })();
  return server.address.port;
}

async function sink(transport: TransportKind, host: string, maxMessageSize: number): Promise<number> {
  const server = await listen({ transport, host, port: 0, maxMessageSize });
  (async () => {
    for await (const s of server) {
      (async () => {
        for await (const m of s) m.release();
      })();
    }
  })();
  return server.address.port;
}

/** A plain node:net echo of length-prefixed frames (the reference for the TCP transport). */
function plainEcho(host: string): Promise<number> {
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    const reader = new FrameReader((frame) => sock.write(frame));
    sock.on("data", (d: Uint8Array) => reader.push(d));
    sock.on("error", () => {});
  });
  return new Promise((r) => server.listen(0, host, () => r((server.address() as net.AddressInfo).port)));
}

/** Splits a byte stream into whole `[u32 length][payload]` frames (the prefix is kept). */
export class FrameReader {
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  readonly #onFrame: (frame: Uint8Array) => void;
  constructor(onFrame: (frame: Uint8Array) => void) {
    this.#onFrame = onFrame;
  }
  push(d: Uint8Array): void {
    this.#chunks.push(d);
    this.#buffered += d.length;
    for (;;) {
      if (this.#buffered < 4) return;
      const head = this.#peek(4);
      const len = 4 + (head[0] | (head[1] << 8) | (head[2] << 16) | (head[3] << 24)) >>> 0;
      if (this.#buffered < len) return;
      this.#onFrame(this.#take(len));
    }
  }
  #peek(n: number): Uint8Array {
    if (this.#chunks[0].length >= n) return this.#chunks[0];
    const all = this.#take(this.#buffered);
    this.#chunks = [all];
    this.#buffered = all.length;
    return all;
  }
  #take(n: number): Uint8Array {
    const first = this.#chunks[0];
    if (first.length >= n) {
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return first.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const c = this.#chunks[0];
      const k = Math.min(c.length, n - off);
      out.set(c.subarray(0, k), off);
      off += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    this.#buffered -= n;
    return out;
  }
}

if ((import.meta as ImportMeta & { main?: boolean }).main) {
  const [transport, host = "127.0.0.1", max = String(4 << 20)] = process.argv.slice(2);
  if (transport !== "rdma" && transport !== "tcp") {
    console.error("usage: peer.ts rdma|tcp <host> <maxMessageSize>");
    process.exit(2);
  }
  const maxMessageSize = Number(max);
  const ports: Record<string, number> = {
    echoBcopy: await echo(transport, host, maxMessageSize, FORCE_BCOPY),
    sink: await sink(transport, host, maxMessageSize),
  };
  if (transport === "rdma") ports.echoZcopy = await echo(transport, host, maxMessageSize, FORCE_ZCOPY);
  else ports.plainEcho = await plainEcho(host);
  console.log(JSON.stringify(ports));
  process.on("SIGTERM", () => process.exit(0));
  // A fault in one connection (a library bug) must not take the other listeners down mid-benchmark.
  process.on("uncaughtException", (e) => console.error(`peer: uncaught: ${(e as Error)?.stack ?? e}`));
}
