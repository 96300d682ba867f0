/**
 * The data path, lean or not: 64 B round trips and allocation per message of
 * our socket over the tcp link (two processes) and over the loopback link
 * (one process), each beside its floor, measured in one run and printed as
 * ratios (issue 10).
 *
 *   bun bench/datapath.ts [--quick] [--tag=before] [--baseline=<git ref>] [--current=<git ref>]
 *   deno run -A bench/datapath.ts [--quick] [--tag=before] [--baseline=<git ref>] [--current=<git ref>] [--emit]
 *
 * Paths (every one a 64 B ping-pong, one message in flight):
 *
 * - **tcp, ours**: `connect({ transport: "tcp" })` to an echo socket in a child
 *   process under the same runtime (`send` awaited, then the echo read).
 * - **tcp, node:net**: a plain `[u32 length][payload]` ping-pong over `node:net`
 *   with the same child (the reference of the tcp target).
 * - **tcp, native**: the same ping-pong over `Bun.connect`/`Bun.listen` or
 *   `Deno.connect`/`Deno.listen`.
 * - **loopback, ours**: `loopbackPair()` in this process, echo on the other end.
 * - **floor**: two promise queues, one `setImmediate` per hop (what an in-process
 *   link that hands a frame over on the next turn cannot go below).
 *
 * With `--baseline=<ref>` the library of that commit is extracted (`git
 * archive`) to a temporary directory and its tcp and loopback paths are
 * measured too, in the same run, interleaved with the current ones: a
 * before/after comparison that the machine's drift cannot fake. `--current=<ref>`
 * measures that commit instead of the working tree (others' uncommitted edits
 * left out).
 *
 * Latency: rounds of blocks, the paths taking turns block by block, every
 * iteration timed; p50 and mean in µs. Allocation per round trip: under Deno
 * (V8) the sum of rises of `heapUsed` read after every iteration (a fall is a
 * scavenge), minus the same loop around an already resolved promise; under
 * Bun (JSC, whose `heapUsed` moves only at collections) the rise of
 * `heapCapacity` over a window of iterations started right after a full
 * collection (short enough that no collection runs), median of several
 * windows, minus the same empty loop. Both count JS heap bytes of this
 * process only (for tcp: the client side). Nothing here asserts on speed.
 *
 * Writes `bench/results/datapath-<runtime>[-<tag>].json`; with `--emit` (how
 * bench/run.ts runs it, as its part `datapath`) the result goes to stdout as a
 * `BENCH_JSON` line instead and the runner writes the file with its provenance.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import { setImmediate } from "node:timers";
import { emit, exportCommit, firstJsonLine, GIT_ROOT, isMain, progress, ROOT, round, runtime, spawnRuntime, stopChild } from "./lib.ts";

const SIZE = 64;
const argv = process.argv.slice(2);
const arg = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const quick = argv.includes("--quick");

// ------------------------------------------------------------------ library loading

interface Lib {
  label: string;
  root: string;
  // deno-lint-ignore no-explicit-any
  mod: any;
  // deno-lint-ignore no-explicit-any
  loopback: any;
}

async function loadLib(label: string, root: string): Promise<Lib> {
  const mod = await import(join(root, "src/sdp/mod.ts"));
  // loopbackPair is exported by src/sdp/mod.ts in every version compared.
  return { label, root, mod, loopback: mod };
}

// ------------------------------------------------------------------ the peer (child process)

function lengthPrefixed(size: number): Uint8Array {
  const f = new Uint8Array(4 + size);
  new DataView(f.buffer).setUint32(0, size, true);
  for (let i = 4; i < f.length; i++) f[i] = i & 0xff;
  return f;
}

/** Echoes whole `[u32 length][payload]` frames of one stream (partial reads joined). */
class EchoFramer {
  #pending = new Uint8Array(0);
  constructor(readonly write: (b: Uint8Array) => void) {}
  push(d: Uint8Array): void {
    let buf = d;
    if (this.#pending.length > 0) {
      buf = new Uint8Array(this.#pending.length + d.length);
      buf.set(this.#pending);
      buf.set(d, this.#pending.length);
    }
    let off = 0;
    while (buf.length - off >= 4) {
      const len = 4 + ((buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | (buf[off + 3] << 24)) >>> 0);
      if (buf.length - off < len) break;
      off += len;
    }
    if (off > 0) this.write(off === buf.length ? buf : buf.subarray(0, off));
    this.#pending = off === buf.length ? new Uint8Array(0) : buf.slice(off);
  }
}

async function servePeer(): Promise<void> {
  const host = "127.0.0.1";
  const ports: Record<string, number> = {};
  const libs: Lib[] = [await loadLib("current", arg("current-dir") ?? ROOT)];
  const base = arg("baseline-dir");
  if (base) libs.push(await loadLib("baseline", base));
  for (const lib of libs) {
    const server = await lib.mod.listen({ transport: "tcp", host, port: 0 });
    (async () => {
      for await (const s of server) {
        (async () => {
          for await (const m of s) {
            s.send(m.bytes).catch(() => {}); // send has copied the bytes when it returns
            m.release();
          }
        })();
      }
    })();
    ports[`ours-${lib.label}`] = server.address.port;
  }
  const plain = net.createServer((sock) => {
    sock.setNoDelay(true);
    const f = new EchoFramer((b) => sock.write(b));
    sock.on("data", (d: Uint8Array) => f.push(d));
    sock.on("error", () => {});
  });
  await new Promise<void>((r) => plain.listen(0, host, () => r()));
  ports.nodeNet = (plain.address() as net.AddressInfo).port;
  ports.native = nativeEchoServer(host);
  process.stdout.write(JSON.stringify(ports) + "\n");
  await new Promise(() => {});
}

interface BunSocketLike {
  write(b: Uint8Array): number;
  data: EchoFramer;
}

function nativeEchoServer(host: string): number {
  const g = globalThis as unknown as {
    Bun?: { listen(o: unknown): { port: number } };
    Deno?: {
      listen(o: { hostname: string; port: number }): AsyncIterable<DenoConn> & { addr: { port: number } };
    };
  };
  if (g.Bun) {
    const server = g.Bun.listen({
      hostname: host,
      port: 0,
      socket: {
        open(s: BunSocketLike) {
          s.data = new EchoFramer((b) => {
            if (s.write(b) !== b.length) throw new Error("native echo: short write (not expected for 64 B)");
          });
        },
        data(s: BunSocketLike, d: Uint8Array) {
          s.data.push(d);
        },
      },
    });
    return server.port;
  }
  const l = g.Deno!.listen({ hostname: host, port: 0 });
  (async () => {
    for await (const conn of l) {
      conn.setNoDelay(true);
      (async () => {
        const buf = new Uint8Array(1 << 16);
        const f = new EchoFramer((b) => void writeAll(conn, b));
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) return;
          f.push(buf.slice(0, n));
        }
      })().catch(() => {});
    }
  })();
  return l.addr.port;
}

interface DenoConn {
  read(b: Uint8Array): Promise<number | null>;
  write(b: Uint8Array): Promise<number>;
  setNoDelay(on: boolean): void;
  close(): void;
}

async function writeAll(conn: DenoConn, b: Uint8Array): Promise<void> {
  let off = 0;
  while (off < b.length) off += await conn.write(b.subarray(off));
}

// ------------------------------------------------------------------ client paths

/** One path: `rt()` performs one 64 B round trip. */
interface Path {
  name: string;
  rt: () => Promise<void>;
  close: () => Promise<void> | void;
}

// deno-lint-ignore no-explicit-any
function ourPath(name: string, s: any): Path {
  const it = s[Symbol.asyncIterator]();
  const msg = new Uint8Array(SIZE).fill(7);
  return {
    name,
    rt: async () => {
      const echoed = it.next();
      await s.send(msg);
      const r = await echoed;
      if (r.done || r.value.bytes.length !== SIZE) throw new Error(`${name}: bad echo`);
      r.value.release();
    },
    close: () => s.close(),
  };
}

/** Counts the bytes an echo peer sends back; `roundTrip(write)` writes a frame of `frameLength` bytes and resolves once one more whole frame has come back. */
function echoCounter(frameLength: number): { data(d: Uint8Array): void; roundTrip(write: () => void): Promise<void> } {
  let got = 0;
  let wake: (() => void) | undefined;
  return {
    data: (d) => {
      got += d.length;
      if (got >= frameLength) {
        got -= frameLength;
        const w = wake;
        wake = undefined;
        w?.();
      }
    },
    roundTrip: (write) => {
      const p = new Promise<void>((r) => (wake = r));
      write();
      return p;
    },
  };
}

async function nodeNetPath(port: number): Promise<Path> {
  const sock = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port }, () => resolve(s));
    s.once("error", reject);
  });
  sock.setNoDelay(true);
  const frame = lengthPrefixed(SIZE);
  const echo = echoCounter(frame.length);
  sock.on("data", echo.data);
  return {
    name: "tcp node:net ping-pong",
    rt: () => echo.roundTrip(() => sock.write(frame)),
    close: () => void sock.destroy(),
  };
}

async function nativePath(port: number): Promise<Path> {
  const frame = lengthPrefixed(SIZE);
  const g = globalThis as unknown as {
    Bun?: { connect(o: unknown): Promise<{ write(b: Uint8Array): number; end(): void }> };
    Deno?: { connect(o: { hostname: string; port: number }): Promise<DenoConn> };
  };
  if (g.Bun) {
    const echo = echoCounter(frame.length);
    const s = await g.Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: { data: (_s: unknown, d: Uint8Array) => echo.data(d) },
    });
    return {
      name: "tcp native ping-pong",
      rt: () => echo.roundTrip(() => s.write(frame)),
      close: () => s.end(),
    };
  }
  const conn = await g.Deno!.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const buf = new Uint8Array(4096);
  return {
    name: "tcp native ping-pong",
    rt: async () => {
      await conn.write(frame);
      let got = 0;
      while (got < frame.length) {
        const n = await conn.read(buf);
        if (n === null) throw new Error("native echo closed");
        got += n;
      }
    },
    close: () => conn.close(),
  };
}

/** The floor: two promise queues, one setImmediate per hop, an echo task on the far end. */
function floorPath(): Path {
  class Queue {
    #items: Uint8Array[] = [];
    #waiter: ((b: Uint8Array) => void) | undefined;
    send(b: Uint8Array): void {
      setImmediate(() => {
        const w = this.#waiter;
        if (w) {
          this.#waiter = undefined;
          w(b);
        } else this.#items.push(b);
      });
    }
    next(): Promise<Uint8Array> {
      const b = this.#items.shift();
      if (b) return Promise.resolve(b);
      return new Promise((r) => (this.#waiter = r));
    }
  }
  const there = new Queue(), back = new Queue();
  let running = true;
  (async () => {
    while (running) back.send(await there.next());
  })();
  const msg = new Uint8Array(SIZE);
  return {
    name: "floor: 2 promise queues + setImmediate/hop",
    rt: async () => {
      const p = back.next();
      there.send(msg);
      await p;
    },
    close: () => {
      running = false;
      there.send(msg);
    },
  };
}

// ------------------------------------------------------------------ measurement

interface Latency {
  p50Us: number;
  meanUs: number;
  p99Us: number;
  n: number;
}

async function latencies(paths: Path[], rounds: number, block: number): Promise<Latency[]> {
  const times = paths.map(() => new Float64Array(rounds * block));
  for (let r = 0; r < rounds; r++) {
    // Alternate the order too, so that no path always follows the same one.
    const order = r % 2 === 0 ? paths.map((_, i) => i) : paths.map((_, i) => paths.length - 1 - i);
    for (const i of order) {
      const t = times[i];
      const rt = paths[i].rt;
      for (let k = 0; k < block; k++) {
        const t0 = performance.now();
        await rt();
        t[r * block + k] = (performance.now() - t0) * 1000;
      }
    }
  }
  return times.map((t) => {
    const s = Array.from(t).sort((a, b) => a - b);
    const mean = s.reduce((a, b) => a + b, 0) / s.length;
    return { p50Us: round(s[Math.floor(s.length / 2)]), meanUs: round(mean), p99Us: round(s[Math.floor(s.length * 0.99)]), n: s.length };
  });
}

type Jsc = { heapStats(): { heapCapacity: number } };
const jsc: Jsc | undefined = runtime === "bun" ? (await import("bun:jsc" as string)) as Jsc : undefined;

function fullGc(): void {
  (globalThis as unknown as { Bun: { gc(sync: boolean): void } }).Bun.gc(true);
}

/** JS heap bytes allocated per call of `rt` (see the module comment for the method). */
async function allocPerOp(rt: () => Promise<void>, n: number): Promise<number> {
  if (jsc) {
    const windows: number[] = [];
    const w = 400;
    for (let k = 0; k < Math.max(5, Math.round(n / w)); k++) {
      fullGc();
      const c0 = jsc.heapStats().heapCapacity;
      for (let i = 0; i < w; i++) await rt();
      windows.push((jsc.heapStats().heapCapacity - c0) / w);
    }
    windows.sort((a, b) => a - b);
    return windows[Math.floor(windows.length / 2)];
  }
  let total = 0;
  let last = process.memoryUsage().heapUsed;
  for (let i = 0; i < n; i++) {
    await rt();
    const h = process.memoryUsage().heapUsed;
    if (h > last) total += h - last;
    last = h;
  }
  return total / n;
}

const empty = () => Promise.resolve();

async function allocations(paths: Path[], n: number): Promise<number[]> {
  // Twice, the second pass counted (the first warms the code and the heap up).
  let out: number[] = [];
  for (let pass = 0; pass < 2; pass++) {
    const base = await allocPerOp(empty, n);
    out = [];
    for (const p of paths) out.push(round(Math.max(0, (await allocPerOp(p.rt, n)) - base)));
  }
  return out;
}

/** Frames one 64 KiB message takes on a loopback pair (counted by the fault hook). */
async function framesPer64KiB(lib: Lib): Promise<number> {
  const pair = await lib.loopback.loopbackPair({ zcopyThreshold: 0x7fffffff });
  const [a, b] = pair;
  let frames = 0;
  pair.faults.intercept((e: { side: number; kind: string; mid: number | undefined }) => {
    if (e.side === 1 && e.kind === "frame" && e.mid === 0xff) frames++;
    return undefined;
  });
  const it = b[Symbol.asyncIterator]();
  const got = it.next();
  await a.send(new Uint8Array(65536).fill(1));
  const m = (await got).value;
  if (m.bytes.length !== 65536) throw new Error("64 KiB loopback message came back wrong");
  m.release();
  await new Promise((r) => setTimeout(r, 5));
  const n = frames;
  await Promise.all([a.close(), b.close()]);
  return n;
}

// ------------------------------------------------------------------ main

function versions(): Record<string, string> {
  const g = globalThis as unknown as { Bun?: { version: string }; Deno?: { version: Record<string, string> } };
  if (g.Bun) return { bun: g.Bun.version };
  return { deno: g.Deno!.version.deno, v8: g.Deno!.version.v8 };
}

function git(args: string[]): string {
  try {
    return execFileSync("git", args, { cwd: GIT_ROOT, stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  } catch {
    return "";
  }
}

async function main(): Promise<void> {
  const rounds = quick ? 4 : 12;
  const block = quick ? 100 : 400;
  const allocN = quick ? 2000 : 8000;
  const baselineRef = arg("baseline");
  const tag = arg("tag");
  const currentRef = arg("current");
  let currentSha: string | undefined;
  const peerArgs = ["--peer"];
  let currentRoot = ROOT;
  if (currentRef) {
    const { dir, sha } = exportCommit(currentRef);
    currentSha = sha;
    currentRoot = dir;
    peerArgs.push(`--current-dir=${dir}`);
  }
  const libs: Lib[] = [await loadLib("current", currentRoot)];
  let baselineSha: string | undefined;
  if (baselineRef) {
    const { dir, sha } = exportCommit(baselineRef);
    baselineSha = sha;
    libs.push(await loadLib("baseline", dir));
    peerArgs.push(`--baseline-dir=${dir}`);
  }
  const peer = spawnRuntime(runtime, "bench/datapath.ts", peerArgs);
  try {
    const ports = await firstJsonLine<Record<string, number>>(peer, "datapath peer");
    const paths: Path[] = [];
    for (const lib of libs) {
      const s = await lib.mod.connect({ transport: "tcp", host: "127.0.0.1", port: ports[`ours-${lib.label}`] });
      paths.push(ourPath(`tcp ours (${lib.label})`, s));
    }
    paths.push(await nodeNetPath(ports.nodeNet), await nativePath(ports.native));
    for (const lib of libs) {
      const [a, b] = await lib.loopback.loopbackPair();
      (async () => {
        for await (const m of b) {
          b.send(m.bytes).catch(() => {});
          m.release();
        }
      })();
      const p = ourPath(`loopback ours (${lib.label})`, a);
      paths.push({ ...p, close: async () => void (await Promise.all([a.close(), b.close()])) });
    }
    paths.push(floorPath());

    progress(`warm-up (${paths.length} paths)`);
    await latencies(paths, 2, quick ? 100 : 500);
    progress(`latency: ${rounds} rounds × ${block} round trips per path`);
    const lat = await latencies(paths, rounds, block);
    progress(`allocation: ${allocN} round trips per path`);
    const alloc = await allocations(paths, allocN);
    const frames: Record<string, number> = {};
    for (const lib of libs) frames[lib.label] = await framesPer64KiB(lib);
    for (const p of paths) await p.close();

    const by = (name: string) => paths.findIndex((p) => p.name === name);
    const nodeNet = by("tcp node:net ping-pong"), native = by("tcp native ping-pong"), floor = by(paths[paths.length - 1].name);
    const ratios: Record<string, Record<string, number>> = {};
    for (const lib of libs) {
      const tcp = by(`tcp ours (${lib.label})`), lo = by(`loopback ours (${lib.label})`);
      ratios[lib.label] = {
        "tcp p50 / node:net p50": round(lat[tcp].p50Us / lat[nodeNet].p50Us),
        "tcp p50 / native p50": round(lat[tcp].p50Us / lat[native].p50Us),
        "tcp p50 / best plain p50": round(lat[tcp].p50Us / Math.min(lat[nodeNet].p50Us, lat[native].p50Us)),
        "loopback p50 / floor p50": round(lat[lo].p50Us / lat[floor].p50Us),
        "loopback mean / floor mean": round(lat[lo].meanUs / lat[floor].meanUs),
        "loopback alloc / floor alloc": round(alloc[lo] / alloc[floor]),
        "tcp alloc / node:net alloc": round(alloc[tcp] / alloc[nodeNet]),
      };
    }

    const rows = paths.map((p, i) => ({ path: p.name, ...lat[i], allocBytesPerRoundTrip: alloc[i] }));
    const w = Math.max(...rows.map((r) => r.path.length));
    const line = (c: string[]) => progress(c.map((x, i) => (i === 0 ? x.padEnd(w) : x.padStart(11))).join(" "));
    progress(`datapath, ${runtime} ${Object.values(versions())[0]}, 64 B round trips`);
    line(["path", "p50 µs", "mean µs", "p99 µs", "alloc B/rt"]);
    for (const r of rows) line([r.path, String(r.p50Us), String(r.meanUs), String(r.p99Us), String(r.allocBytesPerRoundTrip)]);
    for (const [label, rs] of Object.entries(ratios)) {
      for (const [k, v] of Object.entries(rs)) progress(`ratio (${label}) ${k}: ${v}×`);
      progress(`frames per 64 KiB message (${label}): ${frames[label]}`);
    }

    const result = {
      part: "datapath",
      runtime,
      versions: versions(),
      commit: currentSha ?? git(["rev-parse", "HEAD"]),
      dirty: currentSha ? false : git(["status", "--porcelain", "--untracked-files=no", "src", "mod.ts"]) !== "",
      baseline: baselineSha ? { ref: baselineRef, commit: baselineSha } : undefined,
      date: new Date().toISOString(),
      messageSize: SIZE,
      iterations: { latencyRounds: rounds, latencyBlock: block, latencyPerPath: rounds * block, allocationPerPath: allocN, warmupPerPath: 2 * (quick ? 100 : 500) },
      allocationMethod: jsc
        ? "JSC heapCapacity rise over 400-iteration windows after Bun.gc(true), median, minus an empty loop"
        : "V8 sum of heapUsed rises read after every iteration, minus an empty loop",
      rows,
      ratios,
      framesPer64KiBMessage: frames,
    };
    if (argv.includes("--emit")) {
      emit(result);
      return;
    }
    const dir = join(ROOT, "bench", "results");
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `datapath-${runtime}${tag ? `-${tag}` : ""}.json`);
    writeFileSync(file, JSON.stringify(result, null, 2) + "\n");
    progress(`wrote ${file}`);
  } finally {
    await stopChild(peer);
  }
}

if (isMain(import.meta)) {
  if (argv.includes("--peer")) await servePeer();
  else {
    await main();
    process.exit(0);
  }
}
