/**
 * `acceptConcurrently` (src/accept_queue.ts), which the rdma link listener
 * uses so that one slow handshake delays no other and a flood of requests
 * holds at most `maxHandshakes` handshakes' resources.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { AcceptQueue, acceptConcurrently, handshakeLimits } from "../src/accept_queue.ts";

interface Req {
  id: number;
  finish?: (ok: boolean) => void;
}

function setup(limits = { maxHandshakes: 3, handshakeTimeoutMs: 50 }) {
  const requests = new AcceptQueue<Req>();
  const refused: number[] = [], failed: string[] = [], disposed: number[] = [], timeouts: number[] = [];
  const acc = acceptConcurrently<Req, number>(requests, {
    accept: (r, timeoutMs) => {
      timeouts.push(timeoutMs);
      return new Promise((resolve, reject) => {
        r.finish = (ok) => (ok ? resolve(r.id) : reject(new Error(`handshake ${r.id} failed`)));
      });
    },
    refuse: (r) => void refused.push(r.id),
    dispose: (n) => void disposed.push(n),
    failed: (_r, e) => void failed.push(e.message),
  }, limits);
  return { requests, acc, refused, failed, disposed, timeouts };
}

const tick = () => new Promise((r) => setTimeout(r, 5));

test("accepts run concurrently: a stuck handshake does not hold back the next, results come in finishing order", async () => {
  const { requests, acc, timeouts } = setup();
  const rs: Req[] = [1, 2, 3].map((id) => ({ id }));
  for (const r of rs) requests.push(r);
  await tick();
  assert.equal(acc.inHandshake, 3, "all three handshakes started at once");
  assert.deepEqual(timeouts, [50, 50, 50], "each handshake gets the deadline");
  rs[2].finish!(true);
  rs[1].finish!(true);
  assert.equal((await acc.queue.next()).value, 3);
  assert.equal((await acc.queue.next()).value, 2);
  assert.equal(acc.inHandshake, 1, "request 1 is still in its handshake");
  rs[0].finish!(true);
  assert.equal((await acc.queue.next()).value, 1);
  acc.close();
  requests.close();
});

test("beyond maxHandshakes a request is refused at once; a failed handshake frees its place and is reported", async () => {
  const { requests, acc, refused, failed } = setup();
  const rs: Req[] = [1, 2, 3, 4, 5].map((id) => ({ id }));
  for (const r of rs) requests.push(r);
  await tick();
  assert.deepEqual(refused, [4, 5]);
  rs[0].finish!(false);
  await tick();
  assert.deepEqual(failed, ["handshake 1 failed"]);
  const r6: Req = { id: 6 };
  requests.push(r6);
  await tick();
  assert.equal(acc.inHandshake, 3, "the failed handshake's place went to request 6");
  assert.deepEqual(refused, [4, 5]);
  r6.finish!(true);
  assert.equal((await acc.queue.next()).value, 6);
  acc.close();
  requests.close();
});

test("after close, later requests are refused and handshakes that finish late are disposed of", async () => {
  const { requests, acc, refused, disposed } = setup();
  const r1: Req = { id: 1 };
  requests.push(r1);
  await tick();
  assert.deepEqual(acc.close(), []);
  assert.equal((await acc.queue.next()).done, true);
  requests.push({ id: 2 });
  await tick();
  assert.deepEqual(refused, [2]);
  r1.finish!(true);
  await tick();
  assert.deepEqual(disposed, [1]);
  requests.close();
});

test("handshake limits are checked with errors that name the option", () => {
  assert.deepEqual(handshakeLimits({}), { maxHandshakes: 8, handshakeTimeoutMs: 10000 });
  assert.throws(() => handshakeLimits({ maxHandshakes: 0 }), /'maxHandshakes' must be an integer in 1\.\.65535: got 0/);
  assert.throws(() => handshakeLimits({ handshakeTimeoutMs: 1.5 }), /'handshakeTimeoutMs' must be an integer .*: got 1\.5/);
});

test("the rdma link listener checks its handshake limits before it needs a device", async () => {
  const { listenLinks } = await import("../src/sdp/links/rdma.ts");
  await assert.rejects(listenLinks({ host: "192.0.2.1", port: 0, maxHandshakes: 0 }), /'maxHandshakes' must be an integer in 1\.\.65535: got 0/);
  await assert.rejects(listenLinks({ host: "192.0.2.1", port: 0, handshakeTimeoutMs: -1 }), /'handshakeTimeoutMs' must be an integer/);
});
