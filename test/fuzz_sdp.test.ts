/**
 * Fuzzes the sdp listener over tcp (`listen({transport: "tcp"})`) with raw
 * connections below the socket: random bytes, BSDH headers with hostile
 * lengths, HELLOs with hostile sizes, credits and sequence numbers, and after
 * a good HELLO, frames that lie about credits, fragments, lengths and ids.
 * Meanwhile a well-behaved client keeps sending messages to an echo service
 * on the same listener and checks every echo. Seeded (`FUZZ_SEED`), bounded.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, listen } from "../src/sdp/mod.ts";
import type { MessageSocket } from "../src/sdp/types.ts";
import { bsdh, collect, goodHello, helloBody, installCrashGuard, MID, rawTcp, Rng, rssMiB, sampleRss, SEED, settled } from "./fixtures/fuzz.ts";

const ROUNDS = 2;
const CASES_PER_ROUND = 80;
/** RSS after may exceed RSS before by at most this much: Deno's allocator keeps the pages of the transient peak (the per-round retained check below is the leak test). */
const RSS_BOUND_MIB = 320;
/** Each round may add at most this much retained memory (heap + external) to the first's; one leaked socket is 8 MiB. */
const ROUND_GROWTH_MIB = 32;
const BUDGET_MS = 24_000;

interface Case {
  what: string;
  chunks: Uint8Array[];
  /** The server must close the connection (a protocol error), not wait. */
  mustClose: boolean;
}

function u32(n: number): Uint8Array {
  return new Uint8Array([n >>> 24, n >>> 16, n >>> 8, n]);
}

/** One hostile connection's bytes. */
function hostileCase(rng: Rng): Case {
  const after = (what: string, frames: Uint8Array[], mustClose: boolean): Case => ({ what: `after HELLO: ${what}`, chunks: [goodHello(), ...frames], mustClose });
  switch (rng.int(16)) {
    case 0:
      return { what: "random bytes", chunks: Array.from({ length: rng.int(4) + 1 }, () => rng.bytes(rng.int(3000) + 1)), mustClose: false };
    case 1:
      return { what: "header declaring a huge length", chunks: [bsdh({ mid: rng.pick([MID.Hello, MID.Data]), len: rng.pick([0xffff_ffff, 0x8000_0000, 65536 + 17, 16 * 1024 * 1024]) })], mustClose: true };
    case 2:
      return { what: "header declaring less than a header", chunks: [bsdh({ mid: MID.Hello, len: rng.int(16) })], mustClose: true };
    case 3: {
      const body = helloBody(rng.pick([0, 1, 2, 0xffff]), rng.int(0x10000), rng.u32(), rng.u32(), rng.u32());
      return { what: "HELLO with hostile sizes", chunks: [bsdh({ mid: MID.Hello, bufs: rng.pick([0, 1, 0xffff]), mseq: 0, mseqAck: 0xffff_ffff }, body)], mustClose: false };
    }
    case 4:
      return { what: "HELLO with a wrong sequence number", chunks: [bsdh({ mid: MID.Hello, bufs: 64, mseq: rng.pick([1, 5, 0xffff_ffff]), mseqAck: rng.u32() }, helloBody(1, 0, 65536, 64, 1 << 24))], mustClose: true };
    case 5:
      return { what: "HELLO with a short body", chunks: [bsdh({ mid: MID.Hello, bufs: 64, mseq: 0, mseqAck: 0xffff_ffff }, rng.bytes(rng.int(16)))], mustClose: true };
    case 6:
      return { what: "a first frame that is not HELLO", chunks: [bsdh({ mid: rng.pick([MID.Data, MID.SrcAvail, MID.Disconn, MID.HelloAck, 0x55]), bufs: 64 }, rng.bytes(16))], mustClose: true };
    case 7:
      return after("DATA claiming 65535 credits and acking frames never sent", [bsdh({ mid: MID.Data, bufs: 0xffff, mseq: 1, mseqAck: rng.pick([5, 1000, 0x7fff_ffff]) }, rng.bytes(10))], false);
    case 8:
      return after("a HEAD fragment announcing a huge message", [bsdh({ mid: MID.Data, flags: 0x03, bufs: 64, mseq: 1, mseqAck: 0 }, new Uint8Array([...u32(rng.pick([0xffff_ffff, 0x8000_0000, (1 << 24) + 1])), ...rng.bytes(100)]))], true);
    case 9:
      return after("a MORE fragment with no HEAD", [bsdh({ mid: MID.Data, flags: 0x01, bufs: 64, mseq: 1, mseqAck: 0 }, rng.bytes(100))], true);
    case 10:
      return after("DATA with unknown flags", [bsdh({ mid: MID.Data, flags: rng.pick([0x04, 0x80, 0x02]), bufs: 64, mseq: 1, mseqAck: 0 }, rng.bytes(20))], true);
    case 11:
      return after("a sequence number skipped", [bsdh({ mid: MID.Data, bufs: 64, mseq: rng.pick([2, 3, 0]), mseqAck: 0 }, rng.bytes(20))], true);
    case 12: {
      // More frames than the 64 receive buffers the server posted (its credits).
      const frames = Array.from({ length: 200 }, (_, i) => bsdh({ mid: MID.Data, bufs: 64, mseq: i + 1, mseqAck: 0 }, rng.bytes(8)));
      return after("200 frames on 64 credits", [concat(frames)], true);
    }
    case 13:
      return after("SrcAvail on tcp (no zcopy)", [bsdh({ mid: MID.SrcAvail, bufs: 64, mseq: 1, mseqAck: 0 }, new Uint8Array([...u32(rng.u32()), ...u32(rng.u32()), ...rng.bytes(8)]))], true);
    case 14: {
      const mid = rng.pick([MID.RdmaRdCompl, MID.SendSM, MID.SrcAvailCancel, MID.HelloAck, MID.Hello, 0x55]);
      const body = rng.pick([new Uint8Array(0), u32(rng.u32()), rng.bytes(16)]);
      // A well-formed SrcAvailCancel with nothing outstanding may have crossed its transfer's completion: tolerated.
      const tolerated = mid === MID.SrcAvailCancel && body.byteLength === 0;
      return after(`an unexpected control frame 0x${mid.toString(16)} with ${body.byteLength} bytes`, [bsdh({ mid, bufs: 64, mseq: 1, mseqAck: 0 }, body)], !tolerated);
    }
    default:
      return after("random frames with plausible headers", Array.from({ length: rng.int(6) + 1 }, (_, i) => bsdh({ mid: rng.pick(Object.values(MID)), flags: rng.int(4), bufs: rng.int(0x10000), mseq: i + 1, mseqAck: rng.u32() }, rng.bytes(rng.int(64)))), false);
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

test(`fuzz: the sdp tcp listener survives hostile frames while a client's echoes stay right (seed ${SEED})`, { timeout: 90_000 }, async () => {
  const guard = installCrashGuard();
  const rng = new Rng(SEED);
  const logLines: string[] = [];
  const server = await listen({ transport: "tcp", host: "127.0.0.1", port: 0, handshakeTimeoutMs: 1000, closeTimeoutMs: 500, log: (l) => void logLines.push(l) });
  const serverErrors: string[] = [];
  let accepted = 0;
  const serving = (async () => {
    for await (const s of server) {
      accepted++;
      void (async () => {
        try {
          for await (const m of s) {
            const copy = m.copy();
            m.release();
            await s.send(copy);
          }
        } catch (error) {
          serverErrors.push((error as Error).message);
        }
        await s.close().catch(() => {});
      })();
    }
  })();
  let client: MessageSocket | undefined;
  try {
    client = await connect({ transport: "tcp", host: "127.0.0.1", port: server.address.port });
    const c = client;
    const clientRng = new Rng(SEED + 1); // its own, so the hostile cases do not depend on timing
    const roundTrip = async (n: number) => {
      const bytes = clientRng.bytes(n);
      await c.send(bytes);
      const got = await c[Symbol.asyncIterator]().next();
      assert.ok(!got.done, "echo arrived");
      const same = got.value.bytes.byteLength === n && got.value.bytes.every((b, i) => b === bytes[i]);
      got.value.release();
      return same;
    };
    for (let i = 0; i < 20; i++) assert.ok(await roundTrip(100));
    collect();
    const before = rssMiB();
    const sampler = sampleRss();

    let stop = false;
    let echoes = 0;
    const clientErrors: string[] = [];
    const loop = (async () => {
      while (!stop) {
        try {
          if (await roundTrip(clientRng.pick([1, 64, 4096, 70_000]))) echoes++;
          else clientErrors.push(`echo ${echoes + 1} differs`);
        } catch (error) {
          clientErrors.push((error as Error).message);
          break;
        }
      }
    })();

    const started = Date.now();
    const notClosed: string[] = [];
    const rounds: Array<{ rss: number; retained: number }> = [];
    let cases = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < CASES_PER_ROUND && Date.now() - started < BUDGET_MS; i++) {
        const k = hostileCase(rng);
        cases++;
        // A connection the server must refuse gets 3 s to be closed; others are ended by us after 300 ms.
        const how = await rawTcp(server.address.port, k.chunks, k.mustClose ? 3000 : 300);
        if (k.mustClose && how !== "closed") notClosed.push(k.what);
      }
      rounds.push(await settled());
    }
    stop = true;
    await loop;
    const during = sampler.stop();
    const after = rounds.at(-1)!.rss;
    console.log(
      `fuzz sdp seed ${SEED}: ${cases} hostile connections, ${echoes} echoes, RSS before ${before.toFixed(1)} MiB, during max ${during.toFixed(1)} MiB, ` +
        `after each round ${rounds.map((r) => r.rss.toFixed(1)).join(", ")} MiB (retained ${rounds.map((r) => r.retained.toFixed(1)).join(", ")} MiB); ` +
        `${logLines.length} connections dropped with a reason, ${accepted} accepted`,
    );

    assert.deepEqual(guard.events, [], "no unhandled rejection or uncaught exception");
    assert.deepEqual(clientErrors, [], "the well-behaved client saw no error");
    assert.ok(echoes > 0);
    assert.deepEqual(notClosed, [], "every connection that broke the protocol was closed by the server");
    assert.ok(logLines.some((l) => /dropped: .+/.test(l)), "drops are logged with their reason");
    // The listener still accepts and serves.
    const late = await connect({ transport: "tcp", host: "127.0.0.1", port: server.address.port });
    await late.send(new Uint8Array([1, 2, 3]));
    const echo = await late[Symbol.asyncIterator]().next();
    assert.deepEqual(!echo.done && [...echo.value.bytes], [1, 2, 3]);
    await late.close();
    assert.ok(after < before + RSS_BOUND_MIB, `RSS after ${after.toFixed(1)} MiB < before ${before.toFixed(1)} + ${RSS_BOUND_MIB} MiB`);
    for (const [i, r] of rounds.entries()) {
      assert.ok(r.retained < rounds[0].retained + ROUND_GROWTH_MIB, `retained after round ${i + 1} ${r.retained.toFixed(1)} MiB < round 1 ${rounds[0].retained.toFixed(1)} + ${ROUND_GROWTH_MIB} MiB`);
    }
  } finally {
    await client?.close();
    await server.close();
    await serving;
    guard.uninstall();
  }
});
