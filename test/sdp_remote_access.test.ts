/**
 * The socket's side of per-transfer remote access (host, loopback links): a
 * link with `advertise`/`withdraw` is asked to open exactly each SrcAvail's
 * bytes before the SrcAvail goes out, carrying the rkey it returns, and to
 * close them when RdmaRdCompl or SendSM arrives, before the send resolves or
 * the arena space is reused. The real mechanism is tested on Soft-RoCE in
 * test/guest/remote_access.test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Link } from "../src/sdp/links/link.ts";
import { loopbackLinkPair } from "../src/sdp/links/loopback.ts";
import { SdpSocket } from "../src/sdp/socket.ts";

function scoped(link: Link, log: string[]): Link {
  return new Proxy(link, {
    get(t, k) {
      if (k === "remoteAccess") return "per-transfer region";
      if (k === "advertise") {
        return (offset: number, length: number) => {
          log.push(`advertise ${offset} ${length}`);
          return t.source!.rkey; // the loopback peer checks the rkey against the whole source
        };
      }
      if (k === "withdraw") return (offset: number) => log.push(`withdraw ${offset}`);
      const v = Reflect.get(t, k, t);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
}

test("sdp socket: each SrcAvail opens exactly its bytes (advertise) and closes them on RdmaRdCompl before the send resolves", async () => {
  const log: string[] = [];
  const [la, lb] = loopbackLinkPair({ maxMessageSize: 1 << 20 });
  const opts = { zcopyThreshold: 1000 };
  const [a, b] = await Promise.all([SdpSocket.open(scoped(la, log), "active", opts), SdpSocket.open(lb, "passive", opts)]);
  const got = (async () => {
    const out: number[] = [];
    for await (const m of b) {
      out.push(m.bytes.length);
      m.release();
      if (out.length === 3) return out;
    }
    return out;
  })();
  const sends = [5000, 10, 7000].map((n) => a.send(new Uint8Array(n).fill(1)).then(() => log.push(`resolved ${n}`)));
  await Promise.all(sends);
  assert.deepEqual(await got, [5000, 10, 7000]);
  // Both zcopy messages were staged at once (0 and 5000); each was opened alone and closed before its return.
  // (The engine emits withdraw before the resolve; the `resolved` entries come from later microtasks.)
  assert.deepEqual(log.filter((l) => !l.startsWith("resolved")), ["advertise 0 5000", "withdraw 0", "advertise 5000 7000", "withdraw 5000"]);
  assert.equal(a.stats().remoteAccess, "per-transfer region");
  assert.equal(b.stats().remoteAccess, undefined, "a link that does not say reports nothing");
  await Promise.all([a.close(), b.close()]);
});

test("sdp socket: a SrcAvail answered by SendSM is withdrawn before the bcopy re-send", async () => {
  const log: string[] = [];
  const size = 64 * 1024;
  const [la, lb] = loopbackLinkPair({ maxMessageSize: size });
  const opts = { zcopyThreshold: 1000, cancelTimeoutMs: 200 };
  const [a, b] = await Promise.all([SdpSocket.open(scoped(la, log), "active", opts), SdpSocket.open(lb, "passive", opts)]);
  const it = b[Symbol.asyncIterator]();
  const s1 = a.send(new Uint8Array(size).fill(1));
  const m1 = (await it.next()).value!; // held: the sink is full
  await s1;
  const s2 = a.send(new Uint8Array(size).fill(2)); // cannot be READ: cancelled, SendSM, bcopy
  const m2 = (await it.next()).value!;
  await s2;
  assert.equal(m2.bytes[size - 1], 2);
  m1.release();
  m2.release();
  assert.equal(a.stats().zcopyFallbacks, 1);
  assert.deepEqual(log, ["advertise 0 65536", "withdraw 0", "advertise 0 65536", "withdraw 0"]);
  await Promise.all([a.close(), b.close()]);
});
