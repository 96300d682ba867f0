import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { connect, listen, type SdpSocket } from "../src/sdp/mod.ts";
import { loopbackPair } from "../src/sdp/links/loopback.ts";
import { ProtocolError } from "../src/sdp/wire.ts";
import { encode, MID } from "../src/sdp/wire.ts";
import { pattern } from "./fixtures/sdp_engine_sim.ts";

/** The big-endian u32 at `offset + 4`: a frame's declared length when `offset` is its start (stream framing). */
function declaredLength(bytes: Uint8Array, offset: number): number {
  return ((bytes[offset + 4] << 24) | (bytes[offset + 5] << 16) | (bytes[offset + 6] << 8) | bytes[offset + 7]) >>> 0;
}

/** A raw peer that answers the HELLO, then runs `then(socket)`; resolves with every frame it received. */
function rawPeer(then: (s: net.Socket) => void): Promise<{ port: number; frames: Promise<Uint8Array[]>; close(): void }> {
  return new Promise((resolve) => {
    let done!: (f: Uint8Array[]) => void;
    const frames = new Promise<Uint8Array[]>((r) => (done = r));
    const server = net.createServer((sock) => {
      let buf = new Uint8Array(0);
      const got: Uint8Array[] = [];
      let answered = false;
      sock.on("data", (d: Uint8Array) => {
        const all = new Uint8Array(buf.length + d.length);
        all.set(buf);
        all.set(d, buf.length);
        let off = 0;
        while (all.length - off >= 8 && all.length - off >= declaredLength(all, off)) {
          const len = declaredLength(all, off);
          got.push(all.slice(off, off + len));
          off += len;
        }
        buf = all.slice(off);
        if (!answered && got.length > 0) {
          answered = true;
          sock.write(encode({ bufs: 8, mseq: 0, mseqAck: 0 }, {
            mid: MID.HelloAck,
            hello: { version: 1, zcopyRead: false, recvBufferSize: 4096, recvBufferCount: 8, maxMessageSize: 1 << 20 },
          }));
          then(sock);
        }
      });
      sock.on("end", () => {
        done(got);
        sock.end();
      });
      sock.on("error", () => done(got));
    });
    server.listen(0, "127.0.0.1", () =>
      resolve({ port: (server.address() as net.AddressInfo).port, frames, close: () => server.close() }));
  });
}

describe("tcp link data path", () => {
  test("tcp link: the ABORT posted on a protocol error reaches the peer before the stream ends", async () => {
    const peer = await rawPeer((sock) => {
      setTimeout(() => sock.write(encode({ bufs: 8, mseq: 9, mseqAck: 0 }, { mid: MID.SendSM })), 20); // out of sequence
    });
    const s = await connect({ transport: "tcp", host: "127.0.0.1", port: peer.port });
    const err = await s.closed;
    assert.ok(err instanceof ProtocolError, `closed with ${err}`);
    const frames = await peer.frames;
    assert.equal(frames[0][0], MID.Hello);
    assert.equal(frames.at(-1)![0], MID.Abort, `last frame id 0x${frames.at(-1)![0].toString(16)}`);
    peer.close();
  });

  test("tcp link: frames posted in one turn reach the peer whole and in order", async () => {
    const peer = await rawPeer(() => {});
    const s = await connect({ transport: "tcp", host: "127.0.0.1", port: peer.port, recvBufferSize: 4096 });
    // Three messages in one turn (the peer's receive buffers are 4096 bytes: one frame each).
    const sends = [pattern(1, 10), pattern(2, 4000), pattern(3, 4080)].map((m) => s.send(m).catch(() => {}));
    await new Promise((r) => setTimeout(r, 50));
    const c = s.close();
    const frames = await peer.frames;
    const data = frames.filter((f) => f[0] === MID.Data && f.length > 16);
    assert.deepEqual(data.map((f) => f.length - 16), [10, 4000, 4080]);
    assert.deepEqual(data.map((f) => f.subarray(16)), [pattern(1, 10), pattern(2, 4000), pattern(3, 4080)]);
    const mseqs = frames.map((f) => declaredLength(f, 4)); // mseq sits where a length would at offset 8
    assert.deepEqual(mseqs, frames.map((_, i) => i), "frames in mseq order, none lost");
    await Promise.race([c, new Promise((r) => setTimeout(r, 3000))]);
    await Promise.all(sends);
    peer.close();
  });

  test("tcp and loopback links carry a message of recvBufferSize bytes (64 KiB by default) in one frame", async () => {
    const server = await listen({ transport: "tcp", host: "127.0.0.1", port: 0 });
    const accepted = (async () => {
      for await (const a of server) return a;
    })();
    const c = await connect({ transport: "tcp", host: "127.0.0.1", port: server.address.port });
    const a = (await accepted)!;
    assert.equal((c as SdpSocket).peer!.recvBufferSize, 65536 + 16);
    const got = (async () => {
      for await (const m of a) {
        const b = m.copy();
        m.release();
        return b;
      }
    })();
    await c.send(pattern(5, 65536));
    assert.deepEqual(await got, pattern(5, 65536));
    await c.close();
    await server.close();

    const pair = await loopbackPair({ zcopyThreshold: 0x7fffffff });
    let frames = 0;
    pair.faults.intercept((e) => {
      if (e.kind === "frame" && e.side === 1 && e.mid === MID.Data) frames++;
      return undefined;
    });
    const it = pair[1][Symbol.asyncIterator]();
    const next = it.next();
    await pair[0].send(pattern(6, 65536));
    const r = await next;
    assert.deepEqual(r.value!.copy(), pattern(6, 65536));
    r.value!.release();
    assert.equal(frames, 1);
    await pair[0].close();
  });
});
