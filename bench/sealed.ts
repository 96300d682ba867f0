/**
 * What sealing costs per frame (`src/cluster/sealed_socket.ts`), side by
 * side with unsealed frames in the same run: 64 B and 4 KiB messages.
 *
 * - `mac`: one HMAC-SHA256/16 (the engine `SealedSocket` picks), i.e. half
 *   the CPU of a sealed frame (the sender MACs it, the receiver checks it).
 * - `tcp`: messages over a connected tcp socket pair in this process, 32 in
 *   flight, unsealed, through a wrapper that only copies (what a seal costs
 *   without its MAC: a new buffer per send, one more promise per receive),
 *   and sealed, alternating runs; µs per message received.
 *
 * Run: `bun bench/sealed.ts` or `deno run -A bench/sealed.ts` (`--quick` for fewer messages).
 * Transfer figures: the best and the median of RUNS runs (the best is the
 * least disturbed by other load on the machine).
 *
 * @module
 */
import process from "node:process";
import { randomBytes } from "node:crypto";
import { mac16, SealedSocket } from "../src/cluster/sealed_socket.ts";
import { connect, listen } from "../src/sdp/mod.ts";
import type { MessageSocket } from "../src/sdp/types.ts";

const quick = process.argv.includes("--quick") || (globalThis as { Deno?: { args: string[] } }).Deno?.args.includes("--quick");
const runtime = (globalThis as { Bun?: unknown }).Bun ? "bun" : "deno";
const SIZES = [64, 4096];
const RUNS = 9;

/** A wrapper with a seal's copies and promise hops but no MAC (to attribute the cost). */
function copying(inner: MessageSocket): MessageSocket {
  const messages = inner[Symbol.asyncIterator]();
  return {
    ...inner,
    transport: inner.transport,
    remoteAddress: inner.remoteAddress,
    closed: inner.closed,
    send: (bytes: Uint8Array) => {
      const frame = new Uint8Array(bytes.byteLength + 24);
      frame.set(bytes, 8);
      return inner.send(frame);
    },
    close: () => inner.close(),
    stats: () => inner.stats(),
    [Symbol.asyncDispose]: () => inner.close(),
    [Symbol.asyncIterator]: () => ({
      next: () => messages.next().then((r) => (r.done ? r : { value: { get bytes() { return r.value.bytes.subarray(8, r.value.bytes.byteLength - 16); }, copy: () => r.value.copy(), release: () => r.value.release() }, done: false })),
    }),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function macCost(size: number): number {
  const mac = mac16(new Uint8Array(randomBytes(32)));
  const frame = new Uint8Array(size + 24);
  const n = quick ? 2000 : 20000;
  for (let i = 0; i < 1000; i++) mac(frame, size + 8, frame, size + 8);
  const t = performance.now();
  for (let i = 0; i < n; i++) mac(frame, size + 8, frame, size + 8);
  return ((performance.now() - t) * 1000) / n;
}

async function pair(mode: "raw" | "copy" | "sealed"): Promise<{ tx: MessageSocket; rx: MessageSocket; close(): Promise<void> }> {
  const server = await listen({ transport: "tcp", host: "127.0.0.1", port: 0 });
  const accepted = server[Symbol.asyncIterator]().next();
  const a = await connect({ transport: "tcp", host: "127.0.0.1", port: server.address.port });
  const b = (await accepted).value as MessageSocket;
  const k1 = new Uint8Array(randomBytes(32));
  const k2 = new Uint8Array(randomBytes(32));
  const tx = mode === "sealed" ? new SealedSocket(a, a[Symbol.asyncIterator](), { send: k1, receive: k2 }) : mode === "copy" ? copying(a) : a;
  const rx = mode === "sealed" ? new SealedSocket(b, b[Symbol.asyncIterator](), { send: k2, receive: k1 }) : mode === "copy" ? copying(b) : b;
  return {
    tx,
    rx,
    close: async () => {
      await a.close();
      await b.close();
      await server.close();
    },
  };
}

/** µs per message: `n` messages of `size` bytes, 32 in flight, until the receiver has them all. */
async function transfer(p: { tx: MessageSocket; rx: MessageSocket }, size: number, n: number): Promise<number> {
  const payload = new Uint8Array(size).fill(5);
  const received = (async () => {
    let got = 0;
    const it = p.rx[Symbol.asyncIterator]();
    while (got < n) {
      const r = await it.next();
      if (r.done) throw new Error("closed early");
      r.value.release();
      got++;
    }
  })();
  const t = performance.now();
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    inFlight.push(p.tx.send(payload));
    if (inFlight.length >= 32) await inFlight.shift();
  }
  await Promise.all(inFlight);
  await received;
  return ((performance.now() - t) * 1000) / n;
}

const rows: Array<Record<string, string | number>> = [];
for (const size of SIZES) {
  const macs = Array.from({ length: RUNS }, () => macCost(size));
  const modes = ["raw", "copy", "sealed"] as const;
  const pairs = await Promise.all(modes.map((m) => pair(m)));
  const n = quick ? 500 : (size > 1000 ? 3000 : 6000);
  for (const p of pairs) await transfer(p, size, 500);
  const times: number[][] = modes.map(() => []);
  for (let r = 0; r < RUNS; r++) {
    for (const [i, p] of pairs.entries()) times[i].push(await transfer(p, size, n));
  }
  for (const p of pairs) await p.close();
  const [best, med] = [(xs: number[]) => Math.min(...xs), median];
  rows.push({
    runtime,
    size,
    "mac µs (one side)": +median(macs).toFixed(2),
    "unsealed µs/msg best|median": `${best(times[0]).toFixed(1)} | ${med(times[0]).toFixed(1)}`,
    "copy-only µs/msg": `${best(times[1]).toFixed(1)} | ${med(times[1]).toFixed(1)}`,
    "sealed µs/msg": `${best(times[2]).toFixed(1)} | ${med(times[2]).toFixed(1)}`,
    "added by sealing µs (best)": +(best(times[2]) - best(times[0])).toFixed(1),
    "added by sealing µs (median)": +(med(times[2]) - med(times[0])).toFixed(1),
  });
}
console.table(rows);
console.log(JSON.stringify(rows));
