import { test } from "node:test";
import assert from "node:assert/strict";
import { batched, exportCommit } from "../bench/lib.ts";
import { runFfi } from "../bench/ffi.ts";
import { FrameReader } from "../bench/peer.ts";
import { render } from "../bench/report.ts";
import { markdownTable, ratio } from "../bench/table.ts";
import { chooseThreshold } from "../bench/threshold.ts";
import { requireRedisServer, runRedisComparison } from "../bench/redis.ts";

test("bench batched measures many operations per sample and reports per-operation time", async () => {
  let calls = 0;
  const r = await batched("noop loop", 1000, () => {
    for (let i = 0; i < 1000; i++) calls++;
  }, { timeMs: 20, warmupMs: 5, iterations: 4 });
  assert.equal(r.opsPerSample, 1000);
  assert.ok(r.samples >= 4);
  assert.ok(calls >= 4000);
  assert.ok(r.nsPerOp.p50 > 0 && Number.isFinite(r.nsPerOp.p50));
});

test("bench ffi runs its host cases on this runtime", async () => {
  const r = await runFfi({ quick: true });
  assert.equal(r.part, "ffi");
  assert.ok(r.cases.length >= 5);
  for (const c of r.cases) assert.ok(c.nsPerOp.p50 > 0, c.name);
});

test("bench plain echo framing splits and joins frames across chunks", () => {
  const frames: number[] = [];
  const reader = new FrameReader((f) => frames.push(f.length - 4));
  const frame = (n: number) => {
    const f = new Uint8Array(4 + n);
    new DataView(f.buffer).setUint32(0, n, true);
    return f;
  };
  const all = new Uint8Array([...frame(3), ...frame(0), ...frame(70000)]);
  for (let i = 0; i < all.length; i += 1000) reader.push(all.subarray(i, Math.min(all.length, i + 1000)));
  assert.deepEqual(frames, [3, 0, 70000]);
});

test("bench report renders tables and an SVG chart with or without results", () => {
  const empty = render(undefined, undefined);
  assert.match(empty.svg, /^<svg[^>]*>[\s\S]*<\/svg>\n$/);
  assert.match(empty.text, /Targets of issue 5/);
  assert.equal(ratio(3, 2), "1.50×");
  assert.equal(ratio(1, 0), "–");
  assert.equal(markdownTable(["a", "b"], [["x", 1]]), "| a | b |\n| --- | ---: |\n| x | 1 |");
});

test("bench threshold: the throughput crossover decides, at least 4 KiB; none without a crossover", () => {
  const lat = (size: number, b: number, z: number) => [
    { size, mode: "bcopy", n: 1000, sendReturnUs: b, halfRttUs: b, halfRttP99Us: b },
    { size, mode: "zcopy", n: 1000, sendReturnUs: z, halfRttUs: z, halfRttP99Us: z },
  ];
  const bw = (size: number, b: number, z: number) => [
    { size, mode: "bcopy", messages: 160, window: 16, MBps: b, seconds: 1 },
    { size, mode: "zcopy", messages: 160, window: 16, MBps: z, seconds: 1 },
  ];
  const t = chooseThreshold([...lat(1024, 1, 2), ...lat(65536, 2, 3), ...lat(1 << 20, 9, 5)], [...bw(1024, 5, 1), ...bw(65536, 5, 6), ...bw(1 << 20, 5, 9)]);
  assert.equal(t.throughputCrossover, 65536);
  assert.equal(t.latencyCrossover, 1 << 20);
  assert.equal(t.proposed, 65536);
  // zcopy better at a small size but worse at a larger one: the crossover starts above it.
  assert.equal(chooseThreshold([], [...bw(1024, 1, 5), ...bw(65536, 6, 5), ...bw(1 << 20, 5, 9)]).throughputCrossover, 1 << 20);
  assert.equal(chooseThreshold([], [...bw(1 << 20, 9, 5)]).proposed, null);
});

test("bench report renders the Redis comparison and the README block from results", () => {
  const speed = (runtime: string, setup: string, p50Ms: number, rps: number) => ({ runtime, setup, concurrency: 1, p50Ms, p99Ms: Math.round(p50Ms * 30) / 10, rps, meanMs: p50Ms, requests: rps, errors: 0, statuses: {}, replication: {} });
  const redis = {
    meta: { date: "2026-12-02T00:00:00Z", commit: "0123456789abcdef", versions: { bun: "1", deno: "2" } },
    concurrencies: [1], durationMs: 500, warmupMs: 200, loadgen: "bun", store: "GET/SET", cluster: "3 servers", redisServer: "Redis server v=7",
    speed: ["bun", "deno"].flatMap((rt) => [speed(rt, "redis", 0.4, 2000), speed(rt, "none", 0.2, 4000), speed(rt, "transport", 0.3, 3000), speed(rt, "applied", 0.5, 1500)]),
    kill: [{ runtime: "bun", setup: "redis", killed: "redis-server", users: 6, updatesPerUser: 5, acknowledged: 12, unacknowledgedOk: 0, failed: 18, acknowledgedLost: 0, okLost: 0, sessions: 6, sessionsLost: 0, sessionsUnavailable: 6, afterRestart: { acknowledgedLost: 12, sessionsLost: 6, sessionsUnavailable: 0 }, seconds: 5 }],
  };
  const r = render(undefined, undefined, redis);
  assert.match(r.readme, /Sessions in Redis vs withSessions/);
  assert.match(r.readme, /\| withSessions, ack transport \| 0\.3 \| 0\.9 \| 3000 \| 0\.75× \| 1\.50× \|/);
  assert.match(r.readme, /Killing a server/);
  assert.match(r.readme, /12 acked lost, 6 \/ 6 sessions lost/);
  assert.match(r.svg, /Redis store vs withSessions/);
});

test("bench redis: a missing redis-server fails with what to install", () => {
  assert.throws(() => requireRedisServer("redis-server-that-does-not-exist"), /apt-get install redis-server/);
});

// .ci/run installs redis-server: a missing one fails this test (it is not skipped), unless
// BENCH_SKIP_REDIS=1 says on purpose that this machine has none.
const skipRedis = process.env.BENCH_SKIP_REDIS === "1" ? "BENCH_SKIP_REDIS=1" : false;
test("bench redis: a tiny comparison run against a real redis-server (this runtime's servers)", { skip: skipRedis, timeout: 55_000 }, async () => {
  requireRedisServer(); // throws with what to install
  const rt = "Bun" in globalThis ? "bun" : "deno";
  const r = await runRedisComparison({ tiny: true, runtimes: [rt], setups: ["redis", "transport"] });
  assert.deepEqual(r.speed.map((s) => s.setup), ["redis", "transport"]);
  for (const s of r.speed) {
    assert.ok(s.requests > 0, `${s.setup}: no request completed`);
    assert.equal(s.errors, 0, `${s.setup}: ${s.errors} errors`);
  }
  assert.ok((r.speed[0].replication.redis ?? 0) > 0, "the Redis setup's responses name redis");
  assert.ok((r.speed[1].replication.transport ?? 0) > 0, "the transport setup's responses were acknowledged");
  const [killRedis, killOurs] = r.kill;
  // redis-server without persistence: after its restart every session is gone.
  assert.equal(killRedis.afterRestart?.sessionsLost, killRedis.sessions);
  assert.equal(killRedis.sessionsUnavailable + killRedis.sessionsLost, killRedis.sessions, "while redis-server is down no session is readable");
  // ack transport: no acknowledged update is lost when one of three servers dies.
  assert.ok(killOurs.acknowledged > 0);
  assert.equal(killOurs.acknowledgedLost, 0);
});

test("bench report renders the data path and replication before/after tables with issue 10's verdicts", () => {
  const row = (path: string, p50Us: number, allocBytesPerRoundTrip: number) => ({ path, p50Us, meanUs: p50Us, p99Us: p50Us, n: 4800, allocBytesPerRoundTrip });
  const datapath = {
    meta: { date: "2026-12-02T00:00:00Z", commit: "0123456789abcdef", versions: { bun: "1", deno: "2" }, baseline: "fda7d6b", samples: { roundTripsPerPathLatency: 4800, roundTripsPerPathAllocation: 8000 }, seconds: 30 },
    baseline: { commit: "fda7d6b0d0e1" },
    rows: [row("tcp ours (current)", 30, 400), row("tcp ours (baseline)", 60, 2000), row("tcp node:net ping-pong", 27, 300), row("tcp native ping-pong", 20, 100), row("loopback ours (current)", 12, 500), row("loopback ours (baseline)", 24, 3000), row("floor: 2 promise queues + setImmediate/hop", 10, 200)],
    ratios: { current: { "tcp p50 / node:net p50": 1.11, "tcp p50 / native p50": 1.5, "loopback p50 / floor p50": 1.2, "loopback alloc / floor alloc": 2.5, "tcp alloc / node:net alloc": 1.33 }, baseline: { "tcp p50 / node:net p50": 2.22 } },
  };
  const res = (w: number, c: number, a: number) => ({ wallUs: { median: w }, cpuUs: { median: c }, allocBytes: a });
  const j = (value: number, target: number) => ({ value, target, met: value <= target });
  const replication = {
    meta: { date: "2026-12-02T00:00:00Z", commit: "0123456789abcdef", versions: { bun: "1", deno: "2" }, baseline: "fda7d6b", samples: { batchesPerPath: 7, updatesPerBatch: 2000, updatesPerPathAllocation: 3000 }, seconds: 90 },
    libraries: { before: { commit: "fda7d6b0d0e1" }, after: { commit: "0123456789abcdef" } },
    settings: { n: 2000, rounds: 7 },
    results: { before: { plain: res(27, 14, 345), handler: res(10, 8, 3000), none: res(24, 23, 5000), transport: res(80, 44, 6000), applied: res(139, 72, 8000) }, after: { plain: res(28, 14, 345), handler: res(9, 7, 1800), none: res(12, 11, 3000), transport: { ...res(40, 28, 600), latencyUs: { p50: 35, p90: 60, p99: 300, n: 14000 } }, applied: res(100, 60, 7000) } },
    targets: { after: { transportWall: j(40, 43), transportCpu: j(28, 29), noneWall: j(12, 14), noneCpu: j(11, 12), allocTransport: j(600, 690) } },
  };
  const r = render(undefined, undefined, undefined, undefined, { datapath: { bun: datapath }, replication: { deno: replication } });
  assert.match(r.readme, /\| Bun 1: tcp, ours \| 60 \| 30 \| 0\.50× \|/);
  assert.match(r.readme, /\| tcp 64 B round trip p50 ≤ 1\.2× node:net ping-pong \(Bun\) \| 2\.22× \| 1\.11× \| ≤ 1\.2× \| met \|/);
  assert.match(r.readme, /\| tcp 64 B round trip p50 ≤ 1\.2× native ping-pong \(Bun\) \| – \| 1\.5× \| ≤ 1\.2× \| missed \|/);
  assert.match(r.readme, /\| Deno: ack transport \| 80 \| 40 \| 0\.50× \|/);
  // Each update's latency: only the after file has it here (as in files written before it was measured).
  assert.match(r.readme, /\| Deno: ack transport \| – \| 35 \| – \| 60 \| – \| 300 \| 14000 \|/);
  assert.match(r.readme, /`transport` wall ≤ plain round trip \+ 15 µs \(Deno 2\) \| – \| 40 \/ 43 = 0\.93× \| met \|/);
  assert.match(r.markdown, /\| datapath-bun\.json \| host, Bun \|/);
  assert.match(r.markdown, /\| replication-deno\.json \| host, Deno \|/);
});

test("bench exportCommit names a ref the checkout does not have", () => {
  assert.throws(() => exportCommit("no-such-ref-for-the-bench"), /'no-such-ref-for-the-bench' is not a commit of the git checkout/);
});
