/**
 * Fuzzes the sdp listener over real RDMA (`listen({transport: "rdma"})`,
 * Soft-RoCE in the guest) with a hostile peer that speaks raw verbs below the
 * SDP layer (test/fixtures/rdma_raw_peer.ts): rdma_cm connects, then SENDs of
 * random bytes, truncated headers, lying lengths, hostile HELLOs, frames that
 * are not HELLO, frames larger than the receive buffers, and after a good
 * HELLO: bogus message ids and flags, skipped sequence numbers, credit lies
 * (buffers never reposted, bufs beyond what was announced), fragments that lie
 * about their totals, SrcAvails with a wrong rkey, an address out of range or
 * a length beyond the region (the listener's RDMA READ gets a remote access
 * error and must handle it), answers to transfers that never were, a peer that
 * never READs what the listener advertises, abrupt disconnects mid-transfer,
 * connects that never send anything (the handshake deadline must drop them)
 * and floods of connects beyond `maxHandshakes`.
 *
 * The listener runs in a child process under the same runtime
 * (test/fixtures/fuzz_rdma_listener.ts): a crash is a dead child. Meanwhile a
 * well-behaved client in this process keeps sending messages (bcopy, fragmented
 * and zcopy) to its echo service and checks every echo. Asserted: the child
 * lives; no unhandled rejection or uncaught exception in either process; the
 * client saw no error; every connection that broke the protocol was closed;
 * after each round, every hostile connection is gone from the listener too
 * (its registered memory is back to exactly what the client's connection holds
 * and only that socket is open); RSS and retained memory stay bounded.
 *
 * Seeded: `FUZZ_SEED=<n>` replays a run (the seed is printed). Bounded in count
 * (`ROUNDS` × `CASES_PER_ROUND`) and in time (`BUDGET_MS`).
 */
import assert from "node:assert/strict";
import process from "node:process";
import { test } from "node:test";
import { connect, type MessageSocket } from "../../src/sdp/mod.ts";
import { bsdh, helloBody, installCrashGuard, Rng, SEED } from "../fixtures/fuzz.ts";
import type { Stats } from "../fixtures/fuzz_rdma_listener.ts";
import { bodyU32, RAW_RECV_COUNT, RAW_SLOT_SIZE, RawPeer, type RxFrame } from "../fixtures/rdma_raw_peer.ts";
import { rdmaSkip } from "../fixtures/guest_device.ts";
import { currentRuntime, exited, jsonLineReader, spawnFixture } from "../fixtures/runtime.ts";

const HOST = process.env.RDMA_TEST_HOST ?? "192.0.2.1";
const skip = await rdmaSkip(test); // fails instead inside the guest (RDMA_IN_GUEST=1)

/** The listener's options (small rings: each connection registers about 4 MiB, cheap under the guest's emulated CPU). */
const LISTEN = {
  recvBufferCount: 16,
  sendSlots: 16,
  maxMessageSize: 1 << 20,
  zcopyThreshold: 100_000,
  handshakeTimeoutMs: 3000,
  maxHandshakes: 4,
  closeTimeoutMs: 500,
  cancelTimeoutMs: 1500,
  settleMs: 1500,
};
const CLIENT = { recvBufferCount: 16, sendSlots: 16, maxMessageSize: 1 << 20, zcopyThreshold: 100_000 };
const ROUNDS = 2;
const CASES_PER_ROUND = 20;
/** The fuzz stops starting cases after this long (noted in the summary); the counts are the real bound. */
const BUDGET_MS = 30_000;
/** A connection that broke the protocol must be closed within this (generous for the emulated CPU). */
const CLOSE_MS = 6000;
/** A case's own steps may take this long; then the peer disconnects whatever it was waiting for. */
const RUN_MS = 8000;
/** A case the listener may tolerate is ended by the peer after this. */
const DWELL_MS = 300;
/** Child RSS after the fuzz may exceed RSS before it by at most this much (allocators keep pages of the transient peak). */
const RSS_BOUND_MIB = 320;
/** Each round may add at most this much retained memory (heap + external) to the first's. */
const ROUND_GROWTH_MIB = 48;
/** Once every hostile peer is gone, the listener's registered memory must be back to its baseline within this. */
const RELEASE_MS = 15_000;

const MID = { Hello: 0x00, HelloAck: 0x01, Disconn: 0x02, Abort: 0x03, SendSM: 0x04, RdmaRdCompl: 0x06, SrcAvailCancel: 0x08, SrcAvail: 0xfe, Data: 0xff };
const MIDS = Object.values(MID);

// ---- the child ---------------------------------------------------------------

// ---- hostile cases -------------------------------------------------------------

interface Case {
  what: string;
  /** "close": the listener must close the connection (a protocol error, a failed READ, a deadline); "any": it may go on. */
  expect: "close" | "any";
  /** For "close": how long the listener has, from the end of `run`. */
  bound?: number;
  /** Waits in the background after `run` (deadline cases), so the next case can start. */
  background?: boolean;
  /** The peer's steps; returns a problem if something the listener owed did not happen. */
  run(p: RawPeer): Promise<string | void>;
}

interface Ack {
  size: number;
  count: number;
  max: number;
}

/** Valid HELLO, then the listener's HELLO_ACK (its sizes), or a problem. */
async function handshake(p: RawPeer, zcopy = false, sizes?: Parameters<RawPeer["hello"]>[1]): Promise<Ack | string> {
  const r = await p.send(p.hello(zcopy, sizes));
  if (r !== "ok") return `valid HELLO send: ${r}`;
  const f = await p.frame((f) => f.mid === MID.HelloAck, CLOSE_MS);
  if (!f) return p.closed ? `closed after a valid HELLO: ${p.closedWith!.error?.message}` : `no HELLO_ACK within ${CLOSE_MS} ms`;
  return { size: bodyU32(f, 4), count: bodyU32(f, 8), max: bodyU32(f, 12) };
}

function u32(n: number): Uint8Array {
  return new Uint8Array([n >>> 24, n >>> 16, n >>> 8, n]);
}

function srcAvail(p: RawPeer, len: number, rkey: number, vaddr: bigint): Uint8Array {
  const v = BigInt.asUintN(64, vaddr);
  return p.frameOf({ mid: MID.SrcAvail }, new Uint8Array([...u32(len), ...u32(rkey), ...u32(Number(v >> 32n)), ...u32(Number(v & 0xffff_ffffn))]));
}

/** One message of `n` bytes as DATA frames of at most the listener's buffer size (HEAD|MORE, MORE…, last). */
async function sendMessage(p: RawPeer, ack: Ack, bytes: Uint8Array): Promise<string | void> {
  const max = Math.min(ack.size, RAW_SLOT_SIZE) - 16;
  if (bytes.length <= max) {
    const r = await p.send(p.frameOf({ mid: MID.Data }, bytes));
    return r === "ok" ? undefined : `DATA send: ${r}`;
  }
  const first = max - 4;
  const chunks: Uint8Array[] = [new Uint8Array([...u32(bytes.length), ...bytes.subarray(0, first)])];
  for (let o = first; o < bytes.length; o += max) chunks.push(bytes.subarray(o, Math.min(bytes.length, o + max)));
  const rs = await p.burst(chunks.length, (i) => p.frameOf({ mid: MID.Data, flags: i === 0 ? 0x03 : i < chunks.length - 1 ? 0x01 : 0 }, chunks[i]));
  return rs.every((r) => r === "ok") ? undefined : `fragment sends: ${rs.join(",")}`;
}

const isFrame = (mid: number) => (f: RxFrame) => f.mid === mid;

/** The listener's echo of a message the peer sent: a DATA frame with payload. */
const isEcho = (f: RxFrame) => f.mid === MID.Data && f.byteLength > 16;

function hostileCase(rng: Rng, silentBound: number): Case {
  // Each case draws from its own generator, so one case's control flow does not shift the next one's inputs.
  const r = new Rng(rng.int(0x1_0000_0000));
  const kind = rng.int(30);
  const after = (what: string, expect: "close" | "any", steps: (p: RawPeer, ack: Ack) => Promise<string | void>, zcopy = false): Case => ({
    what: `after HELLO: ${what}`,
    expect,
    run: async (p) => {
      const ack = await handshake(p, zcopy);
      if (typeof ack === "string") return ack;
      return await steps(p, ack);
    },
  });
  const garbage = () => r.bytes(r.int(3000) + 1);
  switch (kind) {
    case 0:
      return {
        what: "random bytes",
        expect: "close",
        run: async (p) => void (await p.burst(r.int(3) + 1, () => garbage())),
      };
    case 1: {
      const n = r.int(16);
      return { what: `a truncated header of ${n} bytes`, expect: "close", run: async (p) => void (await p.send(r.bytes(n))) };
    }
    case 2: {
      const len = r.pick([0, 15, 16, 31, 33, 0xffff, 0x8000_0000, 0xffff_ffff]);
      return {
        what: `a HELLO whose header declares ${len} bytes`,
        expect: "close",
        run: async (p) => void (await p.send(bsdh({ mid: MID.Hello, bufs: 16, len, mseq: 0, mseqAck: 0xffff_ffff }, helloBody(1, 0, 65536, 16, 1 << 20)))),
      };
    }
    case 3: {
      const version = r.pick([1, 1, 0, 2, 0xffff]);
      const caps = r.pick([0, 1, 2, 0x8000, 0xffff]);
      const size = r.pick([65536, 64, 63, 0, 0xffff_ffff, r.int(200)]);
      const count = r.pick([16, 4, 3, 0, 65535, 65536, 0xffff_ffff]);
      const max = r.pick([1 << 20, 1, 0, 0xffff_ffff]);
      const valid = version === 1 && caps <= 1 && size >= 64 && count >= 4 && count <= 65535 && max >= 1;
      return {
        what: `a HELLO announcing version ${version}, caps 0x${caps.toString(16)}, ${count} buffers of ${size} bytes, max message ${max}`,
        expect: valid ? "any" : "close",
        run: async (p) => {
          // bufs within what the HELLO announces, so only the body decides.
          await p.send(bsdh({ mid: MID.Hello, bufs: Math.min(16, count), mseq: 0, mseqAck: 0xffff_ffff }, helloBody(version, caps, size, count, max)));
          if (valid && !(await p.frame(isFrame(MID.HelloAck), CLOSE_MS))) return `no HELLO_ACK for a valid HELLO (${count} x ${size})`;
        },
      };
    }
    case 4: {
      const f = r.pick([{ mseq: 1 }, { mseq: 0xffff_ffff }, { mseqAck: 0 }, { mseqAck: 5 }, { bufs: 17 }, { bufs: 0xffff }]);
      return {
        what: `a HELLO with ${JSON.stringify(f)}`,
        expect: "close",
        run: async (p) => void (await p.send(bsdh({ mid: MID.Hello, bufs: 16, mseq: 0, mseqAck: 0xffff_ffff, ...f }, helloBody(1, 0, 65536, 16, 1 << 20)))),
      };
    }
    case 5: {
      const mid = r.pick([MID.Data, MID.SrcAvail, MID.Disconn, MID.Abort, MID.HelloAck, MID.SendSM, MID.RdmaRdCompl, 0x55]);
      const body = mid === MID.SrcAvail ? r.bytes(16) : mid === MID.RdmaRdCompl ? r.bytes(4) : mid === MID.Data ? r.bytes(20) : new Uint8Array(0);
      return {
        what: `a first frame 0x${mid.toString(16)} that is not HELLO`,
        expect: "close",
        run: async (p) => void (await p.send(bsdh({ mid, bufs: 16, mseq: 0, mseqAck: 0xffff_ffff }, body))),
      };
    }
    case 6: {
      const n = 65536 + 1 + r.int(RAW_SLOT_SIZE - 65536);
      return { what: `a first frame of ${n} bytes, beyond any 64 KiB receive buffer`, expect: "close", run: async (p) => void (await p.send(r.bytes(n))) };
    }
    case 7:
      return { what: "a connect that never sends anything (the handshake deadline)", expect: "close", bound: silentBound, background: true, run: async () => {} };
    case 8:
      // Handled by the runner (many connects at once).
      return { what: "flood", expect: "close", bound: silentBound, background: true, run: async () => {} };
    case 9:
      return { what: "a connect that vanishes at once", expect: "any", run: async (p) => void (await p.close()) };
    case 10:
      return {
        what: "a valid HELLO, then an abrupt disconnect before HELLO_ACK",
        expect: "any",
        run: async (p) => {
          void p.send(p.hello());
          await p.close();
        },
      };
    case 11:
      return after("a message (echoed), then garbage", "close", async (p, ack) => {
        const msg = r.bytes(r.int(2000) + 1);
        const e = await sendMessage(p, ack, msg);
        if (e) return e;
        const echo = await p.frame(isEcho, CLOSE_MS);
        if (!echo) return `no echo of a ${msg.length}-byte message within ${CLOSE_MS} ms`;
        if (echo.byteLength !== 16 + msg.length) return `echo of ${echo.byteLength - 16} bytes for a ${msg.length}-byte message`;
        await p.send(garbage());
      });
    case 12: {
      const mid = r.pick([0x05, 0x07, 0x09, 0x55, 0x80, 0xfd]);
      return after(`an unknown message id 0x${mid.toString(16)}`, "close", async (p) => void (await p.send(p.frameOf({ mid }, r.bytes(r.pick([0, 4, 16]))))));
    }
    case 13: {
      const [mid, flags] = r.pick([[MID.Data, 0x04], [MID.Data, 0x80], [MID.Data, 0x02], [MID.Disconn, 0x01], [MID.SrcAvailCancel, 0x02]]);
      const body = mid === MID.Data ? r.bytes(20) : new Uint8Array(0);
      return after(`flags 0x${flags.toString(16)} on 0x${mid.toString(16)}`, "close", async (p) => void (await p.send(p.frameOf({ mid, flags }, body))));
    }
    case 14: {
      const skip = r.pick([2, 3, 0, 0xffff_ffff]);
      return after(`mseq ${skip} where 1 is due`, "close", async (p) => void (await p.send(p.frameOf({ mid: MID.Data, mseq: skip }, r.bytes(10)))));
    }
    case 15: {
      const lie = r.pick([{ bufs: RAW_RECV_COUNT + 1 }, { bufs: 0xffff }, { mseqAck: 5 }, { mseqAck: 1000 }, { mseqAck: 0x7fff_ffff }]);
      return after(`a header lying ${JSON.stringify(lie)}`, "close", async (p) => void (await p.send(p.frameOf({ mid: MID.Data, ...lie }, r.bytes(10)))));
    }
    case 16: {
      const n = 20 + r.int(30);
      return after(`${n} messages claiming ${RAW_RECV_COUNT} buffers while never reposting one (the listener's echoes stall on receiver-not-ready)`, "any", async (p) => {
        p.repost = false;
        // Each frame still claims every buffer posted: the listener believes it has credits it has not.
        await p.burst(n, () => p.frameOf({ mid: MID.Data, bufs: RAW_RECV_COUNT }, r.bytes(r.int(200) + 1)));
        await new Promise((res) => setTimeout(res, 200));
      });
    }
    case 17: {
      const n = 30 + r.int(40);
      return after(`${n} messages back to back, beyond the listener's credits`, "any", async (p) => {
        await p.burst(n, () => p.frameOf({ mid: MID.Data }, r.bytes(r.int(3000) + 1)));
      });
    }
    case 18: {
      const v = r.int(3);
      if (v === 0) {
        const total = r.pick([(1 << 20) + 1, 0x8000_0000, 0xffff_ffff]);
        return after(`a HEAD fragment announcing ${total} bytes`, "close", async (p) => void (await p.send(p.frameOf({ mid: MID.Data, flags: 0x03 }, new Uint8Array([...u32(total), ...r.bytes(100)])))));
      }
      if (v === 1) {
        return after("fragments exceeding their HEAD's total", "close", async (p) => {
          await p.send(p.frameOf({ mid: MID.Data, flags: 0x03 }, new Uint8Array([...u32(300), ...r.bytes(200)])));
          await p.send(p.frameOf({ mid: MID.Data, flags: r.pick([0, 1]) }, r.bytes(200)));
        });
      }
      return after("half a fragmented message, then an abrupt disconnect", "any", async (p) => {
        await p.send(p.frameOf({ mid: MID.Data, flags: 0x03 }, new Uint8Array([...u32(500_000), ...r.bytes(60_000)])));
        await p.close();
      });
    }
    case 19: {
      const [flags, body] = r.pick([[0x01, r.bytes(100)], [0x02, new Uint8Array([...u32(300), ...r.bytes(100)])], [0x01, new Uint8Array(0)], [0x03, u32(0)], [0x03, new Uint8Array(2)]]);
      return after(`a DATA fragment with flags 0x${flags.toString(16)} and ${body.length} body bytes out of place`, "close", async (p) => void (await p.send(p.frameOf({ mid: MID.Data, flags }, body))));
    }
    case 20:
      return after("a SrcAvail with a wrong rkey (the listener's READ fails: remote access error)", "close", async (p) => {
        const s = p.source;
        let rkey = r.u32();
        if (rkey === s.rkey) rkey ^= 1;
        await p.send(srcAvail(p, r.int(s.len) + 1, rkey, s.addr));
      });
    case 21: {
      const which = r.int(4);
      return after(`a SrcAvail with an address out of the region (${["just past its end", "a page before it", "straddling its end", "zero"][which]})`, "close", async (p) => {
        const s = p.source;
        const [len, addr] = [
          [100, s.addr + BigInt(s.len)],
          [100, s.addr - 4096n],
          [200, s.addr + BigInt(s.len - 100)],
          [100, 0n],
        ][which] as [number, bigint];
        await p.send(srcAvail(p, len, s.rkey, addr));
      });
    }
    case 22: {
      const len = r.pick([64 * 1024 + 1, 1 << 20, (1 << 20) + 1, 0xffff_ffff, 0]);
      return after(`a SrcAvail of ${len} bytes over a 64 KiB region`, "close", async (p) => void (await p.send(srcAvail(p, len, p.source.rkey, p.source.addr))));
    }
    case 23: {
      const len = r.int(64 * 1024) + 1;
      const then = r.pick(["RdmaRdCompl", "SendSM", "SrcAvailCancel", "DISCONN"] as const);
      return after(`a valid SrcAvail of ${len} bytes (READ, RdmaRdCompl, echo), then ${then} for nothing outstanding`, then === "SrcAvailCancel" ? "any" : "close", async (p) => {
        const s = p.source;
        if ((await p.send(srcAvail(p, len, s.rkey, s.addr))) !== "ok") return "SrcAvail send failed";
        const done = await p.frame(isFrame(MID.RdmaRdCompl), CLOSE_MS);
        if (!done) return `no RdmaRdCompl for a valid SrcAvail within ${CLOSE_MS} ms${p.closed ? `: closed (${p.closedWith!.error?.message})` : ""}`;
        if (bodyU32(done, 0) !== len) return `RdmaRdCompl for ${bodyU32(done, 0)} bytes, the SrcAvail was ${len}`;
        const echo = await p.frame(isEcho, CLOSE_MS);
        if (!echo) return `no echo of the zcopy message within ${CLOSE_MS} ms`;
        const mid = { RdmaRdCompl: MID.RdmaRdCompl, SendSM: MID.SendSM, SrcAvailCancel: MID.SrcAvailCancel, DISCONN: MID.Disconn }[then];
        await p.send(p.frameOf({ mid }, mid === MID.RdmaRdCompl ? u32(len) : new Uint8Array(0)));
        if (then === "DISCONN" && !(await p.frame(isFrame(MID.Disconn), CLOSE_MS)) && !p.closed) return "no DISCONN answered";
      });
    }
    case 24:
      return after("a valid SrcAvail, then an abrupt disconnect while the listener READs", "any", async (p) => {
        void p.send(srcAvail(p, p.source.len, p.source.rkey, p.source.addr));
        await new Promise((res) => setTimeout(res, r.int(5)));
        await p.close();
      });
    case 25: {
      const n = 100_000 + r.int(100_000);
      const then = r.pick(["nothing", "nothing", "a wrong RdmaRdCompl", "SendSM"] as const);
      const expect = then === "SendSM" ? "any" : "close";
      return {
        ...after(`a ${n}-byte message whose zcopy echo the peer ${then === "nothing" ? "never READs (cancel, then the stuck transfer closes)" : `answers with ${then}`}`, expect, async (p, ack) => {
          const e = await sendMessage(p, ack, r.bytes(n));
          if (e) return e;
          const sa = await p.frame(isFrame(MID.SrcAvail), CLOSE_MS);
          if (!sa) return `no SrcAvail for the ${n}-byte echo within ${CLOSE_MS} ms`;
          if (bodyU32(sa, 0) !== n) return `SrcAvail of ${bodyU32(sa, 0)} bytes for a ${n}-byte echo`;
          if (then === "a wrong RdmaRdCompl") await p.send(p.frameOf({ mid: MID.RdmaRdCompl }, u32(n - 1)));
          if (then === "SendSM") {
            await p.send(p.frameOf({ mid: MID.SendSM }));
            if (!(await p.frame(isEcho, CLOSE_MS))) return "no bcopy echo after SendSM";
          }
        }, true),
        bound: then === "nothing" ? 2 * LISTEN.cancelTimeoutMs + CLOSE_MS : undefined,
        background: then === "nothing",
      };
    }
    case 26: {
      const what = r.pick(["ABORT", "DISCONN twice"] as const);
      return after(what, "close", async (p) => {
        if (what === "ABORT") await p.send(p.frameOf({ mid: MID.Abort }));
        else await p.burst(2, () => p.frameOf({ mid: MID.Disconn }));
      });
    }
    case 27: {
      const n = r.int(6) + 2;
      return after(`${n} random frames with plausible headers`, "any", async (p) => {
        await p.burst(n, () =>
          p.frameOf(
            { mid: r.pick(MIDS), flags: r.int(4), ...(r.int(2) ? { bufs: r.int(0x10000) } : {}), ...(r.int(3) === 0 ? { mseqAck: r.u32() } : {}) },
            r.bytes(r.pick([0, 4, 16, r.int(300)])),
          ));
      });
    }
    case 28:
      return after("a second HELLO", "close", async (p) => void (await p.send(p.frameOf({ mid: MID.Hello }, helloBody(1, 0, 65536, 16, 1 << 20)))));
    default:
      return {
        what: "a HELLO announcing 4 buffers of 64 bytes, then a 4 KiB message (tiny fragments, few credits)",
        expect: "any",
        run: async (p) => {
          const ack = await handshake(p, false, { size: 64, count: 4, bufs: 4 });
          if (typeof ack === "string") return ack;
          await sendMessage(p, ack, r.bytes(4096));
          await new Promise((res) => setTimeout(res, 200));
        },
      };
  }
}

// ---- the test ------------------------------------------------------------------

/** The listener in its own process; `ask` sends a command and reads its answer; `died` says why it ended, if it did. */
async function startListener() {
  const child = spawnFixture(currentRuntime, "test/fixtures/fuzz_rdma_listener.ts", [HOST, JSON.stringify(LISTEN)]);
  const state: { died: string | undefined } = { died: undefined };
  child.once("exit", (code, signal) => (state.died = `the listener process exited (code ${code}, signal ${signal})`));
  const next = jsonLineReader(child);
  const ask = async (cmd: "stats" | "settle"): Promise<Stats> => {
    if (state.died) throw new Error(state.died);
    child.stdin!.write(`${cmd}\n`);
    return await next<Stats>(30_000, cmd);
  };
  const stop = async () => {
    child.stdin!.end();
    child.kill("SIGTERM");
    await exited(child);
  };
  try {
    const { port } = await next<{ port: number }>(60_000, "its port");
    return { port, ask, state, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** The listener's open sockets, each named by the hostile case whose connection it is. */
function describeOpen(s: Stats, byAddress: Map<string, string>): string {
  return s.openSockets.map((o) => `${o.remote} (${byAddress.get(o.remote) ?? "not a hostile connection: the client"}, open for ${o.ageMs} ms)`).join("; ");
}

test(`fuzz: the sdp rdma listener survives a hostile raw-verbs peer while a client's echoes stay right (seed ${SEED})`, { skip, timeout: 300_000 }, async () => {
  const guard = installCrashGuard();
  const rng = new Rng(SEED);
  const t0 = Date.now();
  const { port, ask, state, stop: stopListener } = await startListener();
  const byAddress = new Map<string, string>();
  let client: MessageSocket | undefined;
  try {
    const startMs = Date.now() - t0;
    client = await connect({ transport: "rdma", host: HOST, port, ...CLIENT });
    const c = client;
    const it = c[Symbol.asyncIterator]();
    const clientRng = new Rng(SEED + 1); // its own, so the hostile cases do not depend on timing
    const roundTrip = async (n: number): Promise<string | undefined> => {
      const bytes = clientRng.bytes(n);
      await c.send(bytes);
      let t: ReturnType<typeof setTimeout> | undefined;
      const got = await Promise.race([it.next(), new Promise<"late">((r) => (t = setTimeout(() => r("late"), 30_000)))]);
      clearTimeout(t);
      if (got === "late") return `no echo of a ${n}-byte message within 30 s`;
      if (got.done) return "the client's socket ended";
      const same = got.value.bytes.byteLength === n && got.value.bytes.every((b, i) => b === bytes[i]);
      got.value.release();
      return same ? undefined : `echo of a ${n}-byte message differs`;
    };
    for (const n of [1, 64, 4096, 70_000, 200_000]) assert.equal(await roundTrip(n), undefined, `warm-up echo of ${n} bytes`);
    const before = await ask("settle");
    const baseline = before.registered;

    let stop = false;
    let echoes = 0;
    const clientErrors: string[] = [];
    const loop = (async () => {
      while (!stop) {
        try {
          const e = await roundTrip(clientRng.pick([1, 64, 4096, 70_000, 200_000]));
          if (e) {
            clientErrors.push(e);
            break;
          }
          echoes++;
        } catch (error) {
          clientErrors.push((error as Error).message);
          break;
        }
      }
    })();

    const notClosed: string[] = [];
    const problems: string[] = [];
    const peerClose: Record<string, number> = {};
    const tally = (m: Record<string, number>, k: string) => void (m[k] = (m[k] ?? 0) + 1);
    let cases = 0, established = 0, refused = 0, finished = 0;
    const flood = { attempts: 0, rejected: 0, established: 0 };
    const rounds: Stats[] = [];
    const during: number[] = [];
    const kinds: Record<string, number> = {};
    let budgetHit = false;
    const silentBound = LISTEN.handshakeTimeoutMs + CLOSE_MS;

    /** Waits (bounded) for `p` to be closed, checks `expect`, then disconnects it for sure. */
    const finish = async (p: RawPeer, k: Case, fromMs: number) => {
      if (k.expect === "close") {
        const ok = await p.closedWithin(Math.max(0, (k.bound ?? CLOSE_MS) - (Date.now() - fromMs)));
        if (!ok) notClosed.push(k.what);
      } else await p.closedWithin(DWELL_MS);
      tally(peerClose, p.closed ? (p.closedWith!.error?.message.replace(/\d+/g, "#") ?? "closed by the peer itself") : "still open: closed by the peer");
      await p.close();
      await p.conn.closed;
      finished++;
    };

    for (let round = 0; round < ROUNDS; round++) {
      const background: Promise<void>[] = [];
      for (let i = 0; i < CASES_PER_ROUND; i++) {
        if (Date.now() - t0 - startMs > BUDGET_MS) {
          budgetHit = true;
          break;
        }
        const k = hostileCase(rng, silentBound);
        cases++;
        tally(kinds, k.what.replace(/\d+/g, "#").slice(0, 60));
        if (k.what === "flood") {
          // Many connects at once, beyond maxHandshakes; the ones accepted never send anything.
          const n = LISTEN.maxHandshakes * 2 + 2;
          flood.attempts += n;
          const settled = await Promise.allSettled(Array.from({ length: n }, () => RawPeer.open(HOST, port)));
          const at = Date.now();
          for (const s of settled) {
            if (s.status === "rejected") {
              flood.rejected++;
              if (!/rejected the connection|REJECTED/.test(String(s.reason))) problems.push(`flood connect failed otherwise: ${s.reason}`);
              continue;
            }
            flood.established++;
            established++;
            byAddress.set(s.value.localAddress, "a flooding connect that never sends");
            background.push(finish(s.value, { ...k, what: "a flooding connect that never sends" }, at));
          }
          continue;
        }
        let p: RawPeer;
        try {
          p = await RawPeer.open(HOST, port);
        } catch (e) {
          refused++;
          if (!/rejected the connection|REJECTED/.test((e as Error).message)) problems.push(`connect for "${k.what}" failed: ${(e as Error).message}`);
          continue;
        }
        established++;
        byAddress.set(p.localAddress, k.what);
        let t: ReturnType<typeof setTimeout> | undefined;
        const problem = await Promise.race([
          k.run(p).catch((e: Error) => `the case threw: ${e.message}`),
          new Promise<string | void>((r) => (t = setTimeout(() => r(), RUN_MS))),
        ]);
        clearTimeout(t);
        if (problem) problems.push(`${k.what}: ${problem}`);
        const done = finish(p, k, Date.now());
        if (k.background) background.push(done);
        else await done;
        if (state.died) break;
      }
      await Promise.all(background);
      during.push((await ask("stats")).rssMax);
      // Every hostile connection is gone on this side: the listener must have let go of them too.
      const releaseStart = Date.now();
      let s = await ask("stats");
      while ((s.registered !== baseline || s.open !== 1) && Date.now() - releaseStart < RELEASE_MS && !state.died) {
        await new Promise((r) => setTimeout(r, 250));
        s = await ask("stats");
      }
      const settledStats = await ask("settle");
      rounds.push(settledStats);
      console.log(
        `round ${round + 1}: listener registered ${settledStats.registered} B (baseline ${baseline}) after ${Date.now() - releaseStart} ms, ${settledStats.open} socket(s) open: ${describeOpen(settledStats, byAddress)}`,
      );
      if (state.died || budgetHit) break;
    }
    stop = true;
    await loop;
    const last = rounds.at(-1)!;
    const rssDuring = Math.max(...during);
    console.log(
      `fuzz rdma seed ${SEED} (${currentRuntime}): ${cases} hostile cases in ${rounds.length} round(s)${budgetHit ? " (time budget hit)" : ""}, ` +
        `${established} raw connections established (${refused} refused; flood ${flood.established}/${flood.attempts} accepted, ${flood.rejected} refused), ${finished} closed, ${echoes} client echoes; ` +
        `listener RSS before ${before.rss.toFixed(1)} MiB, during max ${rssDuring.toFixed(1)} MiB, after each round ${rounds.map((r) => r.rss.toFixed(1)).join(", ")} MiB ` +
        `(retained ${before.retained.toFixed(1)} -> ${rounds.map((r) => r.retained.toFixed(1)).join(", ")} MiB); fuzz ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    console.log(`cases: ${JSON.stringify(kinds)}`);
    console.log(`hostile side saw its connections end: ${JSON.stringify(peerClose)}`);
    console.log(`listener: ${last.opened} sockets opened; dropped in handshake ${JSON.stringify(last.dropped)}; closed ${JSON.stringify(last.closed)}; ${last.warningCount} warnings ${JSON.stringify(last.warnings.slice(0, 5))}`);

    assert.equal(state.died, undefined, "the listener process stays alive");
    assert.deepEqual(last.events, [], "no unhandled rejection or uncaught exception in the listener");
    assert.deepEqual(guard.events, [], "no unhandled rejection or uncaught exception in the test process");
    assert.deepEqual(clientErrors, [], "the well-behaved client saw no error");
    assert.ok(echoes > 0, "the client exchanged messages during the fuzz");
    assert.deepEqual(problems, [], "the listener answered what valid input asked for");
    assert.deepEqual(notClosed, [], "every connection that broke the protocol was closed");
    assert.equal(finished, established, "every hostile connection ended");
    assert.ok(established > 0, "hostile connections were made");
    for (const [i, r] of rounds.entries()) {
      assert.equal(r.registered, baseline, `after round ${i + 1} the listener's registered memory is back to the client's connection alone (every hostile connection torn down there); open: ${describeOpen(r, byAddress)}`);
      assert.equal(r.open, 1, `after round ${i + 1} only the client's socket is open in the listener: ${describeOpen(r, byAddress)}`);
      assert.ok(r.retained < rounds[0].retained + ROUND_GROWTH_MIB, `retained after round ${i + 1} ${r.retained.toFixed(1)} MiB < round 1 ${rounds[0].retained.toFixed(1)} + ${ROUND_GROWTH_MIB} MiB`);
    }
    assert.ok(last.rss < before.rss + RSS_BOUND_MIB, `listener RSS after ${last.rss.toFixed(1)} MiB < before ${before.rss.toFixed(1)} + ${RSS_BOUND_MIB} MiB`);
    // The listener still accepts and serves a new client.
    const late = await connect({ transport: "rdma", host: HOST, port, ...CLIENT });
    await late.send(new Uint8Array([1, 2, 3]));
    const echo = await late[Symbol.asyncIterator]().next();
    assert.deepEqual(!echo.done && [...echo.value.bytes], [1, 2, 3]);
    await late.close();
  } finally {
    await client?.close();
    await stopListener();
    guard.uninstall();
  }
});

/**
 * The fuzz case "a valid HELLO, then an abrupt disconnect before HELLO_ACK",
 * alone and repeated: the peer connects, posts its HELLO and disconnects at
 * once. The listener may accept the HELLO (it is in its receive buffer) and
 * open the socket; the peer's disconnect must still end that socket and free
 * the connection's registered memory. Also repeated: connects that vanish
 * before sending anything (there the handshake deadline ends what is left).
 *
 * Found by the fuzz above (seed 20261202, "a valid HELLO, then an abrupt
 * disconnect before HELLO_ACK"): in the guest, 6 and 7 of 10 such sockets
 * stayed open for good (Deno, Bun), each with its connection's memory
 * registered, and 7 of 10 silent ones were ended by the handshake deadline
 * rather than by the peer's disconnect. The disconnect is lost when it comes
 * right after ESTABLISHED: both are dispatched in one drain of the CM channel,
 * and the connection's own DISCONNECTED handler is installed only after the
 * accept's await, a microtask later. This test fails until that is fixed.
 */
test("the rdma listener keeps nothing of peers that connect, send HELLO and disconnect at once", { skip, timeout: 120_000 }, async () => {
  const guard = installCrashGuard();
  const { port, ask, state, stop } = await startListener();
  const byAddress = new Map<string, string>();
  try {
    const base = await ask("stats");
    const n = 6;
    for (let i = 0; i < n; i++) {
      const p = await RawPeer.open(HOST, port);
      byAddress.set(p.localAddress, `HELLO, then gone at once (#${i + 1})`);
      void p.send(p.hello());
      await p.close();
    }
    for (let i = 0; i < n; i++) {
      const p = await RawPeer.open(HOST, port);
      byAddress.set(p.localAddress, `gone at once, nothing sent (#${i + 1})`);
      await p.close();
    }
    const start = Date.now();
    let s = await ask("stats");
    while ((s.open !== base.open || s.registered !== base.registered) && Date.now() - start < LISTEN.handshakeTimeoutMs + RELEASE_MS && !state.died) {
      await new Promise((r) => setTimeout(r, 250));
      s = await ask("stats");
    }
    console.log(
      `${2 * n} peers gone at once (${currentRuntime}): listener opened ${s.opened} socket(s), ${s.open} still open and ${s.registered} B registered after ${Date.now() - start} ms; ` +
        `dropped ${JSON.stringify(s.dropped)}; closed ${JSON.stringify(s.closed)}`,
    );
    assert.equal(state.died, undefined, "the listener process stays alive");
    assert.deepEqual(s.events, [], "no unhandled rejection or uncaught exception in the listener");
    assert.deepEqual(guard.events, [], "no unhandled rejection or uncaught exception in the test process");
    assert.equal(s.open, base.open, `every socket of a peer that disconnected is closed in the listener; still open: ${describeOpen(s, byAddress)}`);
    assert.equal(s.registered, base.registered, `the listener's registered memory is back to ${base.registered} B; open: ${describeOpen(s, byAddress)}`);
  } finally {
    await stop();
    guard.uninstall();
  }
});
