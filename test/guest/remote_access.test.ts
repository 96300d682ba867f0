/**
 * Remote access scoped per transfer (issue 9, item 5), on real RDMA.
 *
 * The victim (test/fixtures/remote_access_peer.ts, in a child process under
 * the other runtime) sends two zcopy messages of N bytes at once: both are in
 * its source arena, the first at offset 0 and the second right after it,
 * while only the first is advertised. This process is the hostile peer: an
 * SDP socket on an rdma link whose `postRead` is intercepted, so that when the
 * engine is about to READ a SrcAvail, the test first issues READs of its own
 * with the advertised rkey:
 *
 * - (a) inside the advertised range: they work and return the message's bytes;
 * - (b) one byte before it, one byte after it, the other message's staged
 *   bytes: IBV_WC_REM_ACCESS_ERR;
 * - (c) the first message's range again after its RdmaRdCompl (when the
 *   second SrcAvail arrives): IBV_WC_REM_ACCESS_ERR.
 *
 * A remote access error moves the reader's RC queue pair to the error state:
 * the hostile connection ends (on both sides, reported with an error), and the
 * victim keeps serving other connections (the last test is a well-behaved one).
 * With `SDP_RDMA_REMOTE_ACCESS=whole-arena` (the fallback) the same probes
 * succeed, and the victim's stats say "whole arena": the test notices.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { connect as sdpConnect, type Link, type LinkEvents, SdpSocket } from "../../src/sdp/mod.ts";
import { connectLink } from "../../src/sdp/links/rdma.ts";
import { connect as verbsConnect, type MemoryRegion, WorkCompletionError } from "../../src/verbs/mod.ts";
import { rdmaSkip } from "../fixtures/guest_device.ts";
import { content, MAX, THRESHOLD } from "../fixtures/remote_access_peer.ts";
import { exited, jsonLineReader, otherRuntime, spawnFixture } from "../fixtures/runtime.ts";

const HOST = process.env.RDMA_TEST_HOST ?? "192.0.2.1";
const skip = await rdmaSkip(test); // fails instead inside the guest (RDMA_IN_GUEST=1)
const N = 100_000; // not a multiple of a page: scoping is by byte
const REM_ACCESS_ERR = 10;

async function victim(env: Record<string, string> = {}) {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  const child = spawnFixture(otherRuntime(), "test/fixtures/remote_access_peer.ts", [HOST, String(N)]);
  for (const k of Object.keys(env)) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  const next = jsonLineReader(child);
  const { port } = await next<{ port: number; runtime: string }>();
  return { child, port, next };
}

interface Report {
  conn: number;
  remoteAccess: string | null;
  sends: string[];
  closed: string | null;
}

type Probe = { ok: true; bytes: Uint8Array } | { ok: false; error: Error };
interface Advert {
  /** Which SrcAvail of the connection (0, 1). */
  index: number;
  vaddr: bigint;
  rkey: number;
  length: number;
}
/** Called when the engine is about to READ a SrcAvail; return true to let the READ go, false to hold it. */
type OnAdvert = (a: Advert, probe: (addr: bigint, len: number, rkey: number) => Promise<Probe>) => Promise<boolean>;

/** A hostile SDP connection: `onAdvert` may READ what it likes before the engine's own READ. */
async function hostile(port: number, onAdvert: OnAdvert) {
  const link = await connectLink({ host: HOST, port, maxMessageSize: MAX });
  const probes = new Map<number, { resolve: (p: Probe) => void; off: number; len: number }>();
  let nextToken = 2 ** 29 - 1; // engine tokens count up from 1
  let adverts = 0;
  const probe = (addr: bigint, len: number, rkey: number) =>
    new Promise<Probe>((resolve) => {
      const token = nextToken--;
      const off = link.sink!.bytes.length - len;
      probes.set(token, { resolve, off, len });
      link.postRead(token, off, len, addr, rkey);
    });
  const wrapped: Link = {
    transport: link.transport,
    remoteAddress: link.remoteAddress,
    capabilities: link.capabilities,
    source: link.source,
    sink: link.sink,
    remoteAccess: link.remoteAccess,
    sendSlot: (s) => link.sendSlot(s),
    postSend: (s, n) => link.postSend(s, n),
    repost: (i) => link.repost(i),
    close: (e) => link.close(e),
    start(events: LinkEvents) {
      const take = (token: number, p: (x: { off: number; len: number }) => Probe) => {
        const x = probes.get(token);
        if (!x) return false;
        probes.delete(token);
        x.resolve(p(x));
        return true;
      };
      link.start({
        ...events,
        readDone: (t) => take(t, (x) => ({ ok: true, bytes: link.sink!.bytes.slice(x.off, x.off + x.len) })) || events.readDone(t),
        readFailed: (t, error) => take(t, () => ({ ok: false, error })) || events.readFailed(t, error),
        closed: (e) => {
          for (const x of probes.values()) x.resolve({ ok: false, error: e ?? new Error("closed") });
          probes.clear();
          events.closed(e);
        },
      });
    },
    postRead(token, sinkOffset, length, vaddr, rkey) {
      const a = { index: adverts++, vaddr, rkey, length };
      void onAdvert(a, probe).then((go) => go && link.postRead(token, sinkOffset, length, vaddr, rkey));
    },
  };
  return await SdpSocket.open(wrapped, "active", { zcopyThreshold: THRESHOLD });
}

function remoteAccessError(p: Probe, what: string): void {
  assert.equal(p.ok, false, `${what}: the READ succeeded, the peer could read bytes not advertised to it`);
  const e = (p as { error: Error }).error;
  assert.ok(e instanceof WorkCompletionError, `${what}: ${e.message}`);
  assert.equal(e.statusCode, REM_ACCESS_ERR, `${what}: ${e.message}`);
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Runs one hostile connection whose first failing probe ends it; returns the victim's report. */
async function hostileCase(v: Awaited<ReturnType<typeof victim>>, onAdvert: OnAdvert, closeAfter = Infinity): Promise<{ closed: Error | undefined; report: Report }> {
  const s = await hostile(v.port, onAdvert);
  (async () => {
    let n = 0;
    for await (const m of s) {
      m.release();
      if (++n === closeAfter) await s.close();
    }
  })();
  const closed = await s.closed;
  const report = await v.next<Report>();
  return { closed, report };
}

test("remote access: the peer reads exactly the advertised bytes, only until RdmaRdCompl (IBV_WC_REM_ACCESS_ERR otherwise)", { skip, timeout: 600_000 }, async () => {
  const v = await victim();
  try {
    // (a) inside, then (c) the same range after its RdmaRdCompl.
    let first: Advert | undefined;
    const inside: Probe[] = [];
    let after: Probe | undefined;
    const r1 = await hostileCase(v, async (a, probe) => {
      if (a.index === 0) {
        first = a;
        inside.push(await probe(a.vaddr, a.length, a.rkey));
        inside.push(await probe(a.vaddr + 1n, a.length - 2, a.rkey));
        inside.push(await probe(a.vaddr + BigInt(a.length - 1), 1, a.rkey));
        return true;
      }
      after = await probe(first!.vaddr, first!.length, first!.rkey);
      return false;
    });
    console.log(`victim (${otherRuntime()}) remote access: ${r1.report.remoteAccess}`);
    if (r1.report.remoteAccess !== "per-transfer region") {
      assert.fail(`per-transfer remote access is not available here: the victim reports remoteAccess ${JSON.stringify(r1.report.remoteAccess)} (the whole-arena fallback)`);
    }
    assert.equal(first!.length, N);
    assert.ok(inside.every((p) => p.ok), `READs inside the advertised range: ${inside.map((p) => (p.ok ? "ok" : p.error.message)).join("; ")}`);
    const msg = content(0, N);
    assert.ok(same((inside[0] as { bytes: Uint8Array }).bytes, msg), "the advertised bytes are the message");
    assert.ok(same((inside[1] as { bytes: Uint8Array }).bytes, msg.subarray(1, N - 1)));
    remoteAccessError(after!, "READ of the first message's range after its RdmaRdCompl");
    assert.ok(r1.closed instanceof Error, "the hostile connection ends with an error");
    assert.equal(r1.report.sends[0], "ok", "the first message had its return");
    assert.notEqual(r1.report.sends[1], "ok", "the second message did not");
    assert.ok(r1.report.closed, "the victim reports its connection's failure");
    console.log(`hostile side: ${r1.closed!.message}\nvictim side: ${r1.report.closed}; second send: ${r1.report.sends[1]}`);

    // (b) outside: one byte after, one byte before, the other message's staged bytes.
    const outside: Array<[string, OnAdvert]> = [
      ["one byte past the end", async (a, probe) => (remoteAccessError(await probe(a.vaddr, a.length + 1, a.rkey), "READ one byte past the end"), false)],
      ["the byte past the end alone", async (a, probe) => (remoteAccessError(await probe(a.vaddr + BigInt(a.length), 1, a.rkey), "READ of the byte past the end"), false)],
      ["the other staged message", async (a, probe) => (remoteAccessError(await probe(a.vaddr + BigInt(a.length), a.length, a.rkey), "READ of the second message (staged, not advertised)"), false)],
      ["one byte before the start", async (a, probe) => {
        if (a.index === 0) return true; // the second message: the byte before it is the first's last byte
        remoteAccessError(await probe(a.vaddr - 1n, a.length, a.rkey), "READ from one byte before the start");
        return false;
      }],
    ];
    for (const [what, onAdvert] of outside) {
      const r = await hostileCase(v, onAdvert);
      assert.ok(r.closed instanceof Error, `${what}: the hostile connection ends with an error`);
      assert.ok(r.report.closed, `${what}: the victim reports its connection's failure`);
      console.log(`${what}: REM_ACCESS_ERR; victim: ${r.report.closed}`);
    }

    // The victim still serves a well-behaved peer.
    const s = await sdpConnect({ transport: "rdma", host: HOST, port: v.port, maxMessageSize: MAX, zcopyThreshold: THRESHOLD });
    const it = s[Symbol.asyncIterator]();
    const m0 = (await it.next()).value!, m1 = (await it.next()).value!;
    assert.ok(same(m0.bytes, content(0, N)) && same(m1.bytes, content(1, N)), "both messages intact");
    m0.release();
    m1.release();
    await s.send(new TextEncoder().encode("ping"));
    const echo = (await it.next()).value!;
    assert.equal(new TextDecoder().decode(echo.bytes), "ping");
    echo.release();
    assert.equal(s.stats().remoteAccess, "per-transfer region");
    await s.close();
    const last = await v.next<Report>();
    assert.deepEqual(last.sends, ["ok", "ok"]);
    assert.equal(last.closed, null);
  } finally {
    v.child.kill("SIGTERM");
    await exited(v.child);
  }
});

test("remote access: the whole-arena fallback is reported, and the test sees what it exposes", { skip, timeout: 600_000 }, async () => {
  const v = await victim({ SDP_RDMA_REMOTE_ACCESS: "whole-arena" });
  try {
    let first: Advert | undefined;
    const probes: Probe[] = [];
    const r = await hostileCase(v, async (a, probe) => {
      if (a.index === 0) {
        first = a;
        probes.push(await probe(a.vaddr + BigInt(a.length), a.length, a.rkey)); // the staged second message
        return true;
      }
      probes.push(await probe(first!.vaddr, first!.length, first!.rkey)); // after RdmaRdCompl
      return true;
    }, 2);
    assert.equal(r.report.remoteAccess, "whole arena", "the fallback is reported in stats()");
    assert.ok(probes.every((p) => p.ok), "with the whole arena exposed, the out-of-scope READs succeed (what per-transfer access prevents)");
    // (Whether the second message is already staged there when the peer reads depends on the
    // sender's timing, so only the READ's success beyond the advertised range is asserted.)
    console.log("whole-arena fallback: bytes beyond the advertised range and the completed message were both readable by the peer, as reported");
    assert.equal(r.closed, undefined, "nothing failed");
  } finally {
    v.child.kill("SIGTERM");
    await exited(v.child);
  }
});

/** Median of `reps` runs of `f`, in µs. */
async function medianUs(reps: number, f: () => Promise<void> | void): Promise<number> {
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await f();
    t.push((performance.now() - t0) * 1000);
  }
  t.sort((a, b) => a - b);
  return Math.round(t[t.length >> 1]);
}

test("remote access: what scoping costs per transfer (registration of exactly the message, and the zcopy round trip with and without)", { skip, timeout: 900_000 }, async () => {
  const sizes = [256 * 1024, 1024 * 1024, 16 * 1024 * 1024];
  // 1. The mechanism alone: ibv_reg_mr of exactly the bytes + ibv_dereg_mr, as advertise/withdraw do.
  const peer = spawnFixture(otherRuntime(), "test/fixtures/verbs_peer.ts", [HOST]);
  const { port } = await jsonLineReader(peer)<{ port: number }>();
  let arena!: MemoryRegion, out!: MemoryRegion;
  const conn = await verbsConnect({ host: HOST, port, prepare: (c) => {
    arena = c.registerMemory(16 * 1024 * 1024, {});
    out = c.registerMemory(64, { localWrite: true });
  } });
  const mechanism: Record<string, number> = {};
  for (const n of sizes) mechanism[n] = await medianUs(n > MAX ? 5 : 15, () => conn.registerRange(arena, 4096 + 7, n - 4096 - 7, { remoteRead: true }).close());
  out.bytes.set(new TextEncoder().encode("quit"));
  await conn.send(out, 0, 4);
  await exited(peer);
  await conn.close();
  // 2. The zcopy round trip (send to an echo peer and get the echo back), per-transfer vs whole arena on both sides.
  const roundTrip: Record<string, Record<string, number>> = {};
  for (const mode of ["whole-arena", "per-transfer"]) {
    const saved = process.env.SDP_RDMA_REMOTE_ACCESS;
    process.env.SDP_RDMA_REMOTE_ACCESS = mode;
    const echo = spawnFixture(otherRuntime(), "test/fixtures/sdp_rdma_peer.ts", [HOST, String(16 * 1024 * 1024)]);
    const { port: p } = await jsonLineReader(echo)<{ port: number }>();
    const s = await sdpConnect({ transport: "rdma", host: HOST, port: p, maxMessageSize: 16 * 1024 * 1024, zcopyThreshold: THRESHOLD });
    if (saved === undefined) delete process.env.SDP_RDMA_REMOTE_ACCESS;
    else process.env.SDP_RDMA_REMOTE_ACCESS = saved;
    assert.equal(s.stats().remoteAccess, mode === "per-transfer" ? "per-transfer region" : "whole arena");
    const it = s[Symbol.asyncIterator]();
    roundTrip[mode] = {};
    for (const n of sizes) {
      const msg = content(0, n);
      await s.send(msg); // warm
      (await it.next()).value!.release();
      roundTrip[mode][n] = await medianUs(n > MAX ? 3 : 9, async () => {
        await s.send(msg);
        (await it.next()).value!.release();
      });
    }
    assert.equal(s.stats().zcopySends, s.stats().messagesSent);
    await s.close();
    echo.kill("SIGTERM");
    await exited(echo);
  }
  console.log(`COST ${JSON.stringify({ runtime: "Bun" in globalThis ? "bun" : "deno", peer: otherRuntime(), regDeregUs: mechanism, zcopyRoundTripUs: roundTrip })}`);
});
