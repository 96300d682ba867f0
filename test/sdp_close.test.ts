/**
 * Closing never loses a received message (the contract in src/sdp/types.ts):
 * whatever the transport, messages received before a local close or the
 * peer's disconnect, read or unread, are handed out by the iterator, in order
 * and with their bytes, before it ends; a message held (read, not released)
 * stays readable after the link's memory is gone.
 *
 * Over tcp and loopback here; `LaggingLink` below stands in for the rdma
 * link on the host: its frames wait "in the completion queue" (the sender
 * already has its send completion) until the link closes, when they are
 * reported in a final pass before `closed`, and its memory is detached right
 * after `closed`, as the rdma link's regions are deregistered. The real rdma
 * link is tested the same way in test/guest/sdp_close.test.ts.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type LoopbackFaults, loopbackLinkPair } from "../src/sdp/links/loopback.ts";
import type { Link, LinkEvents } from "../src/sdp/links/link.ts";
import { connect, listen, type ReceivedMessage, SdpSocket } from "../src/sdp/mod.ts";
import { pattern } from "./fixtures/sdp_engine_sim.ts";

const KiB = 1024;

/** Sizes for message i: small, fragmented (several frames) and, every 17th, zcopy where the link can. */
function size(i: number): number {
  if (i % 17 === 16) return 300 * KiB;
  if (i % 7 === 6) return 150 * KiB + i;
  return 1 + ((i * 397) % 5000);
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return false;
  return true;
}

/** Reads the iterator to its end; each message's bytes are checked when it is read and again at the end. */
async function drain(s: AsyncIterable<ReceivedMessage>, expect: (i: number) => Uint8Array, from = 0): Promise<number> {
  let i = from;
  for await (const m of s) {
    const want = expect(i);
    assert.ok(same(m.bytes, want), `message ${i} (${want.length} B) read as ${m.bytes.length} B with other bytes`);
    m.release();
    i++;
  }
  return i - from;
}

type Pair = { a: SdpSocket; b: SdpSocket; faults?: LoopbackFaults; done: () => Promise<void> };

async function pairOver(transport: "tcp" | "loopback"): Promise<Pair> {
  const server = await listen({ transport, host: "127.0.0.1", port: 0, maxMessageSize: 1 << 20 });
  const accepted = (async () => {
    for await (const s of server) return s as SdpSocket;
  })();
  const a = await connect({ transport, host: "127.0.0.1", port: server.address.port, maxMessageSize: 1 << 20 });
  const b = (await accepted)!;
  return { a, b, done: () => server.close() };
}

for (const transport of ["loopback", "tcp"] as const) {
  describe(`closing over ${transport} loses no received message`, () => {
    test(`${transport}: local close with messages received and unread: every one is delivered, in order, then the iterator ends`, async () => {
      const { a, b, done } = await pairOver(transport);
      const n = 40;
      const msgs = Array.from({ length: n }, (_, i) => pattern(i, size(i)));
      const it = b[Symbol.asyncIterator]();
      // Read 5 and hold them (not released): they must stay readable after the close.
      await Promise.all(msgs.slice(0, 20).map((m) => a.send(m)));
      const held: ReceivedMessage[] = [];
      for (let i = 0; i < 5; i++) held.push((await it.next()).value!);
      await Promise.all(msgs.slice(20).map((m) => a.send(m))); // every send has its return: b has the bytes
      const closing = b.close();
      const rest = await drain({ [Symbol.asyncIterator]: () => it }, (i) => msgs[i], 5);
      assert.equal(rest, n - 5, `after close(), ${rest} of the ${n - 5} unread messages were delivered`);
      await closing;
      for (let i = 0; i < 5; i++) {
        assert.ok(same(held[i].bytes, msgs[i]), `held message ${i} changed after close: ${held[i].bytes.length} B`);
        held[i].release();
      }
      assert.equal(await a.closed, undefined);
      await done();
    });

    test(`${transport}: the peer closes after its sends returned: the receiver reads all of them before the end`, async () => {
      const { a, b, done } = await pairOver(transport);
      const msgs = Array.from({ length: 30 }, (_, i) => pattern(i, size(i)));
      await Promise.all(msgs.map((m) => a.send(m)));
      await a.close();
      assert.equal(await drain(b, (i) => msgs[i]), msgs.length);
      assert.equal(await b.closed, undefined);
      await done();
    });

    test(`${transport}: a local close racing the peer's sends: every send that returned was delivered, in order`, async () => {
      const { a, b, done } = await pairOver(transport);
      const n = 300;
      const msgs = Array.from({ length: n }, (_, i) => pattern(i, 1 + ((i * 131) % 3000)));
      const returned = new Set<number>();
      const sends = msgs.map((m, i) => a.send(m).then(() => void returned.add(i), () => {}));
      const it = b[Symbol.asyncIterator]();
      let got = 0;
      for (; got < 10; got++) {
        const m = (await it.next()).value!;
        assert.ok(same(m.bytes, msgs[got]));
        m.release();
      }
      const closing = b.close(); // while the peer is still sending
      got += await drain({ [Symbol.asyncIterator]: () => it }, (i) => msgs[i], got);
      await closing;
      await Promise.all(sends);
      assert.ok(returned.size > 10 && returned.size < n, `the close raced the sends (${returned.size} of ${n} returned)`);
      for (const i of returned) assert.ok(i < got, `send ${i} returned but only ${got} messages were delivered`);
      await a.closed;
      await done();
    });
  });
}

test("loopback: the pair disconnects with messages unread: every one is delivered before the iterator ends", async () => {
  const [la, lb, faults] = loopbackLinkPair({ maxMessageSize: 1 << 20 });
  const [a, b] = await Promise.all([SdpSocket.open(la, "active"), SdpSocket.open(lb, "passive")]);
  const msgs = Array.from({ length: 30 }, (_, i) => pattern(i, size(i)));
  await Promise.all(msgs.map((m) => a.send(m)));
  faults.disconnect(new Error("cable cut"));
  assert.equal(await drain(b, (i) => msgs[i]), msgs.length);
  assert.match(String(await b.closed), /cable cut/);
  await a.closed;
});

/**
 * A link whose frames, once `lagging`, stay queued as in a completion queue
 * nobody polled (the sender already has its send completion: the loopback
 * link completes a send when the frame lands), until the link closes: then
 * they are reported in one final pass before `closed`, and every buffer the
 * socket saw is detached right after `closed` (as the rdma link's regions
 * are deregistered).
 */
class LaggingLink implements Link {
  readonly #inner: Link;
  lagging = false;
  readonly #queued: Array<[Uint8Array, number]> = [];
  readonly #buffers = new Set<ArrayBuffer>();
  #events: LinkEvents | undefined;
  #finished = false;

  constructor(inner: Link) {
    this.#inner = inner;
  }
  get transport() {
    return this.#inner.transport;
  }
  get remoteAddress() {
    return this.#inner.remoteAddress;
  }
  get capabilities() {
    return this.#inner.capabilities;
  }
  get source() {
    return this.#inner.source;
  }
  get sink() {
    return this.#inner.sink;
  }
  get queued(): number {
    return this.#queued.length;
  }
  start(events: LinkEvents): void {
    this.#events = events;
    if (this.sink) this.#buffers.add(this.sink.bytes.buffer as ArrayBuffer);
    this.#inner.start({
      ...events,
      frame: (view, index) => {
        this.#buffers.add(view.buffer as ArrayBuffer);
        if (this.lagging) this.#queued.push([view, index]);
        else events.frame(view, index);
      },
      closed: (err) => this.#finish(err),
    });
  }
  sendSlot(slot: number): Uint8Array {
    return this.#inner.sendSlot(slot);
  }
  postSend(slot: number, length: number): void {
    if (!this.#finished) this.#inner.postSend(slot, length);
  }
  repost(i: number): void {
    if (!this.#finished) this.#inner.repost(i);
  }
  postRead(token: number, off: number, len: number, addr: bigint, rkey: number): void {
    if (!this.#finished) this.#inner.postRead(token, off, len, addr, rkey);
  }
  close(error?: Error): void {
    queueMicrotask(() => this.#finish(error));
  }
  #finish(error: Error | undefined): void {
    if (this.#finished) return;
    this.#finished = true;
    for (const [view, index] of this.#queued.splice(0)) this.#events!.frame(view, index);
    this.#events!.closed(error);
    for (const b of this.#buffers) b.transfer(0); // the memory is gone
    this.#inner.close(error);
  }
}

async function laggingPair(closeTimeoutMs = 2000) {
  const [la, lb, faults] = loopbackLinkPair({ maxMessageSize: 1 << 20 });
  const lag = new LaggingLink(lb);
  const [a, b] = await Promise.all([SdpSocket.open(la, "active", { closeTimeoutMs }), SdpSocket.open(lag, "passive", { closeTimeoutMs })]);
  return { a, b, lag, faults };
}

describe("a link that reports its last frames in a final pass and then frees its memory (the rdma link's way)", () => {
  test("peer gone with frames not yet polled and a reader waiting: each message is read intact, none as 0 bytes", async () => {
    const { a, b, lag, faults } = await laggingPair();
    const msgs = Array.from({ length: 20 }, (_, i) => pattern(i, 1 + ((i * 397) % 5000)));
    const got: Uint8Array[] = [];
    const reading = (async () => {
      for await (const m of b) {
        got.push(m.bytes.slice()); // read after the final pass delivered it, and after `closed` freed the memory
        m.release();
      }
    })();
    lag.lagging = true;
    await Promise.all(msgs.map((m) => a.send(m))); // every send returned: the frames are "in the queue"
    assert.equal(lag.queued, msgs.length);
    faults.disconnect(new Error("peer killed"));
    await reading;
    assert.equal(got.length, msgs.length, `${got.length} of ${msgs.length} messages read`);
    for (let i = 0; i < msgs.length; i++) assert.ok(same(got[i], msgs[i]), `message ${i} read as ${got[i].length} B with other bytes`);
    assert.match(String(await b.closed), /peer killed/);
  });

  test("local close that times out waiting for DISCONN: frames reported in the final pass after the engine closed are delivered", async () => {
    const { a, b, lag } = await laggingPair(150);
    const msgs = Array.from({ length: 12 }, (_, i) => pattern(i, i % 3 === 2 ? 100 * KiB + i : 1 + i * 300));
    const it = b[Symbol.asyncIterator]();
    await a.send(msgs[0]);
    const first = (await it.next()).value!; // held across the close
    lag.lagging = true;
    await Promise.all(msgs.slice(1).map((m) => a.send(m)));
    // b closes; a answers DISCONN, but that frame lags too: b's close times out, its engine
    // closes, then the link reports the queued frames (messages, then DISCONN) and frees memory.
    await b.close();
    assert.ok(same(first.bytes, msgs[0]), `the held message reads ${first.bytes.length} B after the close`);
    first.release();
    assert.equal(await drain({ [Symbol.asyncIterator]: () => it }, (i) => msgs[i], 1), msgs.length - 1);
    await a.closed;
  });
});
