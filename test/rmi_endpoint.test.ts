import { test } from "node:test";
import assert from "node:assert/strict";
import { RmiEndpoint } from "../src/rmi/endpoint.ts";
import { RemoteError, RmiClosedError, RmiTimeoutError } from "../src/rmi/errors.ts";
import { encodeCall } from "../src/rmi/frame.ts";
import type { MessageSocket } from "../src/sdp/types.ts";
import { loopbackPair } from "../src/sdp/links/loopback.ts";
import { connect, listen } from "../src/sdp/mod.ts";
import { quietLogger } from "./fixtures/wait.ts";

type PairFactory = () => Promise<[MessageSocket, MessageSocket]>;

const transports: [string, PairFactory][] = [
  ["loopback", async () => {
    const [a, b] = await loopbackPair();
    return [a, b];
  }],
  ["tcp", async () => {
    const listener = await listen({ transport: "tcp", host: "127.0.0.1", port: 0 });
    const accepted = listener[Symbol.asyncIterator]().next();
    const a = await connect({ transport: "tcp", host: "127.0.0.1", port: listener.address.port });
    const b = (await accepted).value as MessageSocket;
    void listener.close(); // completes once both sockets are closed
    return [a, b];
  }],
];

for (const [name, makePair] of transports) {
  test(`rmi over ${name} resolves calls per ack mode and returns results in applied mode`, async () => {
    const [a, b] = await makePair();
    const seen: unknown[] = [];
    const callee = new RmiEndpoint(b, { methods: { add: (args) => { seen.push(args); const [x, y] = args as number[]; return x + y; } } });
    const caller = new RmiEndpoint(a);
    assert.equal(await caller.call("add", [1, 2], { ack: "none" }), undefined);
    assert.equal(await caller.call("add", [3, 4]), undefined); // transport is the default
    assert.equal(await caller.call("add", [5, 6], { ack: "applied" }), 11);
    assert.deepEqual(seen, [[1, 2], [3, 4], [5, 6]]);
    await caller.close();
    await callee.closed;
  });

  test(`rmi over ${name} applies calls in send order`, async () => {
    const [a, b] = await makePair();
    const order: number[] = [];
    const callee = new RmiEndpoint(b, {
      methods: {
        put: async (n) => {
          if ((n as number) % 3 === 0) await new Promise((r) => setTimeout(r, 1));
          order.push(n as number);
        },
      },
    });
    const caller = new RmiEndpoint(a);
    const calls = [];
    for (let i = 0; i < 100; i++) calls.push(caller.call("put", i, { ack: i === 99 ? "applied" : "transport" }));
    await Promise.all(calls);
    assert.deepEqual(order, Array.from({ length: 100 }, (_, i) => i));
    await caller.close();
    await callee.closed;
  });

  test(`rmi over ${name} reports an unknown method or bad arguments back in applied mode`, async () => {
    const [a, b] = await makePair();
    const log = quietLogger();
    const callee = new RmiEndpoint(b, {
      logger: log,
      methods: {
        need: (args) => {
          if (typeof args !== "string") throw new TypeError(`'need' takes a string: got ${typeof args}`);
          return args.length;
        },
      },
    });
    const caller = new RmiEndpoint(a, { logger: log });
    await assert.rejects(caller.call("nope", 1, { ack: "applied" }), (e: unknown) =>
      e instanceof RemoteError && e.method === "nope" && /unknown method 'nope'/.test(e.message));
    await assert.rejects(caller.call("need", 42, { ack: "applied" }), /'need' takes a string: got number/);
    // Undecodable arguments: a hand-made frame with bytes that are not JSON.
    const raw = encodeCall(777, "need", "transport", new TextEncoder().encode("{not json"));
    await a.send(raw);
    assert.equal(await caller.call("need", "abc", { ack: "applied" }), 3, "the endpoint still serves after failures");
    const s = callee.stats();
    assert.equal(s.unknownMethods, 1);
    assert.equal(s.failedCalls, 2);
    assert.ok(log.lines.some((l) => /bad arguments \(json\)/.test(l)), log.lines.join("\n"));
    await caller.close();
    await callee.closed;
  });

  test(`rmi over ${name} counts and logs failures of one-way calls without rejecting them`, async () => {
    const [a, b] = await makePair();
    const log = quietLogger();
    const callee = new RmiEndpoint(b, { logger: log, methods: { boom: () => { throw new Error("kaboom"); } } });
    const caller = new RmiEndpoint(a, { logger: log });
    await caller.call("boom", undefined, { ack: "transport" });
    await caller.call("missing", undefined, { ack: "none" });
    await caller.call("boom", undefined, { ack: "applied" }).catch(() => {});
    assert.equal(callee.stats().failedCalls, 2);
    assert.equal(callee.stats().unknownMethods, 1);
    assert.ok(log.lines.some((l) => l.includes("call 'boom' (transport) failed: kaboom")), log.lines.join("\n"));
    assert.ok(log.lines.some((l) => l.includes("unknown method 'missing'")), log.lines.join("\n"));
    await caller.close();
    await callee.closed;
  });

  test(`rmi over ${name} closes only the connection that sent a malformed frame`, async () => {
    const [a1, b1] = await makePair();
    const [a2, b2] = await makePair();
    const log = quietLogger();
    const methods = { echo: (x: unknown) => x };
    const bad = new RmiEndpoint(b1, { methods, logger: log });
    const good = new RmiEndpoint(b2, { methods, logger: log });
    const goodCaller = new RmiEndpoint(a2);
    const badCaller = new RmiEndpoint(a1, { logger: log });
    const pending = badCaller.call("echo", 1, { ack: "applied" });
    await a1.send(new Uint8Array([0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    const cause = await bad.closed;
    assert.match(String(cause), /kind must be 0x01/);
    assert.equal(bad.stats().malformedFrames, 1);
    // The call sent before the garbage was answered; later calls on the closed connection fail clearly.
    assert.equal(await pending, 1);
    await assert.rejects(badCaller.call("echo", 2, { ack: "applied" }), (e: unknown) => e instanceof Error);
    assert.equal(await goodCaller.call("echo", "still here", { ack: "applied" }), "still here");
    await goodCaller.close();
    await good.closed;
  });

  test(`rmi over ${name} rejects pending applied calls when the connection closes, and times out when asked`, async () => {
    const [a, b] = await makePair();
    const waiting: (() => void)[] = [];
    const release = () => waiting.splice(0).forEach((r) => r());
    const log = quietLogger();
    const callee = new RmiEndpoint(b, { logger: log, methods: { slow: () => new Promise<void>((r) => void waiting.push(r)) } });
    const caller = new RmiEndpoint(a);
    await assert.rejects(caller.call("slow", 1, { ack: "applied", timeoutMs: 30 }), RmiTimeoutError);
    const pending = assert.rejects(caller.call("slow", 2, { ack: "applied" }), RmiClosedError);
    await new Promise((r) => setTimeout(r, 10));
    await b.close();
    await pending;
    assert.equal(caller.pendingCalls, 0);
    release();
    await new Promise((r) => setTimeout(r, 5));
    release();
    await callee.closed;
    await caller.closed;
    assert.equal(caller.isClosed, true);
  });
}

test("rmi concurrent methods do not hold up the frames after them", async () => {
  const [a, b] = await loopbackPair();
  let release!: () => void;
  const callee = new RmiEndpoint(b, {
    concurrent: ["slow"],
    methods: { slow: () => new Promise<string>((r) => (release = () => r("slow done"))), ping: () => "pong" },
  });
  const caller = new RmiEndpoint(a);
  const slow = caller.call("slow", undefined, { ack: "applied" });
  assert.equal(await caller.call("ping", undefined, { ack: "applied", timeoutMs: 2000 }), "pong", "ping overtakes the waiting call");
  release();
  assert.equal(await slow, "slow done");
  await caller.close();
  await callee.closed;
});
