/**
 * FFI and verbs overhead of the running runtime (run.ts runs it under Bun
 * and under Deno and prints them side by side).
 *
 *   bun bench/ffi.ts [--rdma HOST] [--quick]
 *   deno run -A bench/ffi.ts [--rdma HOST] [--quick]
 *
 * Everywhere (no device needed): an empty shim call (`shim_abi_version`), a
 * call that passes a typed array (`shim_record_sizes`), and reading/writing a
 * view of an ordinary ArrayBuffer (the reference for region views).
 *
 * With `--rdma HOST` (inside the Soft-RoCE guest): one RC connection to
 * itself through rdma_cm, then an empty completion-queue poll (the raw shim
 * call and `RdmaConnection.poll()`), post plus poll (an inline 8-byte RDMA
 * WRITE, polled until its completion), and access to a registered memory
 * region's view (`Atomics.load` of u32, a byte loop, a 4 KiB `set`).
 *
 * Every sample is a batch of operations: one call per sample would time the timer.
 *
 * @module
 */
import { loadShim } from "../ffi/mod.ts";
import { batched, type BatchedResult, emit, isMain, progress, runtime } from "./lib.ts";

export interface FfiResult {
  part: "ffi";
  runtime: string;
  version: string;
  rdma: boolean;
  cases: BatchedResult[];
}

function runtimeVersion(): string {
  const g = globalThis as { Bun?: { version: string }; Deno?: { version: { deno: string } } };
  return g.Bun ? g.Bun.version : g.Deno!.version.deno;
}

/** Keeps results observable so no JIT can drop the loops. */
let sink = 0;

/** Measures the overheads; `rdmaHost` set runs the verbs cases on a real device. */
export async function runFfi(opts: { rdmaHost?: string; quick?: boolean } = {}): Promise<FfiResult> {
  const shim = await loadShim();
  const fn = shim.fn;
  const timeMs = opts.quick ? 150 : 500;
  const cases: BatchedResult[] = [];
  const N = 10_000;

  cases.push(await batched("empty shim call (shim_abi_version)", N, () => {
    let s = 0;
    for (let i = 0; i < N; i++) s += fn.shim_abi_version();
    sink += s;
  }, { timeMs }));

  const sizes = new Uint32Array(4);
  cases.push(await batched("call with a typed array (shim_record_sizes)", N, () => {
    let s = 0;
    for (let i = 0; i < N; i++) s += fn.shim_record_sizes(sizes);
    sink += s + sizes[0];
  }, { timeMs }));

  const plain = new ArrayBuffer(65536);
  cases.push(...await viewCases("ArrayBuffer view (reference)", plain, timeMs));

  if (opts.rdmaHost) cases.push(...await verbsCases(opts.rdmaHost, timeMs));
  if (sink === 0.5) console.log(sink);
  return { part: "ffi", runtime, version: runtimeVersion(), rdma: opts.rdmaHost !== undefined, cases };
}

/** Reads and writes through views of `buffer` (a plain ArrayBuffer or a registered region). */
async function viewCases(label: string, buffer: ArrayBuffer, timeMs: number): Promise<BatchedResult[]> {
  const u32 = new Uint32Array(buffer, 0, 1024);
  const bytes = new Uint8Array(buffer);
  const src = new Uint8Array(4096).fill(7);
  const out: BatchedResult[] = [];
  out.push(await batched(`${label}: Atomics.load u32`, 1024 * 16, () => {
    let s = 0;
    for (let r = 0; r < 16; r++) for (let i = 0; i < 1024; i++) s += Atomics.load(u32, i);
    sink += s;
  }, { timeMs }));
  out.push(await batched(`${label}: byte write+read`, 4096 * 4, () => {
    let s = 0;
    for (let r = 0; r < 4; r++) {
      for (let i = 0; i < 4096; i++) bytes[i] = i + r;
      for (let i = 0; i < 4096; i++) s += bytes[i];
    }
    sink += s;
  }, { timeMs }));
  out.push(await batched(`${label}: 4 KiB set()`, 64, () => {
    for (let r = 0; r < 64; r++) bytes.set(src, (r & 15) * 4096);
    sink += bytes[5];
  }, { timeMs }));
  return out;
}

/** The verbs cases on one connection to ourselves. */
async function verbsCases(host: string, timeMs: number): Promise<BatchedResult[]> {
  const verbs = await import("../src/verbs/mod.ts");
  const listener = await verbs.listen({ host, port: 0 });
  const accepted = (async () => {
    const req = await listener.next();
    if (!req) throw new Error("listener closed before the connection request");
    return await req.accept({
      prepare: (conn) => {
        const target = conn.registerMemory(4096, { localWrite: true, remoteWrite: true });
        const pd = new Uint8Array(12);
        const dv = new DataView(pd.buffer);
        dv.setBigUint64(0, target.address, true);
        dv.setUint32(8, target.rkey, true);
        return pd;
      },
    });
  })();
  const client = await verbs.connect({ host, port: listener.address.port });
  const server = await accepted;
  progress(`verbs: connected to ourselves on ${host}:${listener.address.port} (max inline ${client.maxInline})`);
  const dv = new DataView(client.privateData.buffer, client.privateData.byteOffset, client.privateData.byteLength);
  const remote = dv.getBigUint64(0, true);
  const rkey = dv.getUint32(8, true);
  const mr = client.registerMemory(65536, { localWrite: true });
  const out: BatchedResult[] = [];
  try {
    const h = client.unsafeHandle;
    const fn = (await loadShim()).fn;
    const N = 10_000;
    out.push(await batched("empty CQ poll (shim_poll)", N, () => {
      let s = 0;
      for (let i = 0; i < N; i++) s += fn.shim_poll(h, 16);
      sink += s;
    }, { timeMs }));
    out.push(await batched("empty CQ poll (RdmaConnection.poll)", N, () => {
      let s = 0;
      for (let i = 0; i < N; i++) s += client.poll();
      sink += s;
    }, { timeMs }));
    // Post plus poll: an inline 8-byte RDMA WRITE to the peer, spun on until its completion.
    let done = 0;
    client.onCompletion = (c) => {
      if (c.status !== 0) throw new Error(`RDMA WRITE failed with status ${c.status}`);
      done++;
    };
    const B = 64;
    out.push(await batched("post + poll to completion (8 B inline RDMA WRITE)", B, () => {
      for (let i = 0; i < B; i++) {
        const want = done + 1;
        client.postWrite(mr, 0, 8, remote, rkey, i);
        while (done < want) client.poll();
      }
    }, { timeMs: timeMs * 2 }));
    client.onCompletion = undefined;
    out.push(...await viewCases("registered region view", mr.bytes.buffer as ArrayBuffer, timeMs));
  } finally {
    await client.close();
    await server.close();
    await listener.close();
  }
  return out;
}

if (isMain(import.meta)) {
  const args = process.argv.slice(2);
  const i = args.indexOf("--rdma");
  const rdmaHost = i >= 0 ? args[i + 1] : undefined;
  emit(await runFfi({ rdmaHost, quick: args.includes("--quick") }));
  process.exit(0);
}
