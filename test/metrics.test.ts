/**
 * The Prometheus exposition writer (src/metrics/exposition.ts) against the text
 * format, and the cluster metrics (src/metrics/cluster.ts) from a real
 * in-process cluster served by a real HTTP server.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { SessionCluster } from "../src/cluster/session_cluster.ts";
import { serve } from "../src/http/serve.ts";
import { withSessions } from "../src/http/with_sessions.ts";
import { clusterMetrics, metricsHandler } from "../src/metrics/cluster.ts";
import { escapeLabelValue, Exposition, formatValue, Histogram } from "../src/metrics/exposition.ts";
import { startCluster } from "./fixtures/cluster.ts";

/**
 * A strict reading of the text format: every line is a HELP, a TYPE or a
 * sample; HELP and TYPE come once per family, before its samples; sample
 * names belong to the last TYPEd family (with _bucket/_sum/_count for
 * histograms and summaries); values parse. Returns the samples.
 */
function parse(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  assert.ok(text.endsWith("\n"), "the exposition ends with a line feed");
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  const typed = new Map<string, string>();
  let family = "";
  for (const line of text.slice(0, -1).split("\n")) {
    let m = line.match(/^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/);
    if (m) {
      assert.ok(!typed.has(m[1]), `HELP for ${m[1]} before its TYPE, once`);
      family = m[1];
      continue;
    }
    m = line.match(/^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/);
    if (m) {
      assert.equal(m[1], family, "TYPE follows its HELP");
      assert.ok(!typed.has(m[1]), `one TYPE for ${m[1]}`);
      typed.set(m[1], m[2]);
      continue;
    }
    m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/);
    assert.ok(m, `a sample line: ${JSON.stringify(line)}`);
    const [, name, rawLabels, rawValue] = m;
    const type = typed.get(family);
    const suffixes = type === "histogram" ? ["_bucket", "_sum", "_count"] : type === "summary" ? ["", "_sum", "_count"] : [""];
    assert.ok(suffixes.some((s) => name === family + s), `${name} belongs to ${family} (${type})`);
    const labels: Record<string, string> = {};
    if (rawLabels) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\[\\"n])*)"(,|$)/gy;
      let end = 0;
      for (let l = re.exec(rawLabels); l !== null; l = re.exec(rawLabels)) {
        labels[l[1]] = l[2].replace(/\\(["\\n])/g, (_, c) => (c === "n" ? "\n" : c));
        end = re.lastIndex;
      }
      assert.equal(end, rawLabels.length, `labels parse: ${rawLabels}`);
    }
    const value = rawValue === "+Inf" ? Infinity : rawValue === "-Inf" ? -Infinity : Number(rawValue);
    assert.ok(rawValue === "NaN" || !Number.isNaN(value), `value ${rawValue}`);
    samples.push({ name, labels, value });
  }
  return samples;
}

test("metrics: HELP and TYPE once per family, then its samples; counters and gauges", () => {
  const out = new Exposition()
    .counter("app_requests_total", "Requests served.", [[{ route: "/" }, 3], [{ route: "/cart" }, 1]])
    .gauge("app_temperature", "Not a counter.", [[{}, -1.5]]);
  assert.equal(
    out.text(),
    [
      "# HELP app_requests_total Requests served.",
      "# TYPE app_requests_total counter",
      'app_requests_total{route="/"} 3',
      'app_requests_total{route="/cart"} 1',
      "# HELP app_temperature Not a counter.",
      "# TYPE app_temperature gauge",
      "app_temperature -1.5",
      "",
    ].join("\n"),
  );
  assert.equal(parse(out.text()).length, 3);
  assert.equal(new Exposition().text(), "", "nothing written: empty body");
});

test("metrics: label values escape backslash, quote and newline; HELP escapes backslash and newline", () => {
  assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  const text = new Exposition().gauge("x", 'path C:\\tmp\nsecond "line"', [[{ path: 'C:\\tmp\n"q"' }, 1]]).text();
  assert.equal(text, '# HELP x path C:\\\\tmp\\nsecond "line"\n# TYPE x gauge\nx{path="C:\\\\tmp\\n\\"q\\""} 1\n');
  assert.deepEqual(parse(text)[0].labels, { path: 'C:\\tmp\n"q"' }, "a parser gets the value back");
});

test("metrics: values +Inf, -Inf and NaN are spelled as the format wants", () => {
  assert.deepEqual([Infinity, -Infinity, NaN, 0, 1e-7, 12345678901].map(formatValue), ["+Inf", "-Inf", "NaN", "0", "1e-7", "12345678901"]);
});

test("metrics: histogram has cumulative _bucket{le} series ending in +Inf, then _sum and _count", () => {
  const h = new Histogram([0.1, 0.5, 1]);
  for (const v of [0.05, 0.1, 0.3, 0.7, 2, 3]) h.observe(v);
  const text = new Exposition().histogram("lat_seconds", "Latency.", [[{ ack: "transport" }, h.snapshot()]]).text();
  assert.equal(
    text,
    [
      "# HELP lat_seconds Latency.",
      "# TYPE lat_seconds histogram",
      'lat_seconds_bucket{ack="transport",le="0.1"} 2', // 0.1 itself counts in le="0.1"
      'lat_seconds_bucket{ack="transport",le="0.5"} 3',
      'lat_seconds_bucket{ack="transport",le="1"} 4',
      'lat_seconds_bucket{ack="transport",le="+Inf"} 6',
      'lat_seconds_sum{ack="transport"} 6.15',
      'lat_seconds_count{ack="transport"} 6',
      "",
    ].join("\n"),
  );
  const samples = parse(text);
  const inf = samples.find((s) => s.labels.le === "+Inf")!;
  assert.equal(inf.value, samples.find((s) => s.name === "lat_seconds_count")!.value, "+Inf bucket equals _count");
  const empty = new Exposition().histogram("e", "Empty.", [[{}, new Histogram([1]).snapshot()]]).text();
  assert.match(empty, /^e_bucket\{le="1"\} 0\ne_bucket\{le="\+Inf"\} 0\ne_sum 0\ne_count 0\n$/m);
});

test("metrics: the writer refuses what the format cannot carry", () => {
  assert.throws(() => new Exposition().counter("1bad", "x", []), /invalid metric name '1bad'/);
  assert.throws(() => new Exposition().counter("ok", "x", [[{ "bad-label": "v" }, 1]]), /invalid label name 'bad-label'/);
  assert.throws(() => new Exposition().counter("ok", "x", [[{ __reserved: "v" }, 1]]), /invalid label name '__reserved'/);
  assert.throws(() => new Exposition().gauge("a", "x", []).gauge("a", "y", []), /metric 'a' written twice/);
  assert.throws(() => new Exposition().histogram("h", "x", [[{ le: "1" }, new Histogram([1]).snapshot()]]), /label 'le' is reserved/);
  assert.throws(() => new Histogram([1, 1]), /strictly ascending/);
  assert.throws(
    () => new Exposition().histogram("h", "x", [[{}, { bounds: [1, 2], cumulative: [3, 2], sum: 0, count: 3 }]]),
    /counts must be cumulative/,
  );
});

test("metrics: clusterMetrics reads stats() defensively (missing fields are left out, new keys become labels)", () => {
  const stats = {
    self: "a",
    store: { primaries: 2 },
    replication: { outcomes: { transport: 5, "a-new-outcome": 1 }, deltas: 4, latency: { transport: { count: 5, p50: 1, p90: 2, p99: 4, max: 4 } } },
    node: { peers: { b: "up", c: "down" } },
    failover: { lost: 1, fenced: 2 },
  };
  const fake = {
    self: "a",
    stats: () => stats,
    node: { peers: new Map([["b", { id: "b", transport: "tcp" }]]) },
  } as unknown as SessionCluster;
  const text = clusterMetrics(fake);
  const samples = parse(text);
  const value = (name: string, labels: Record<string, string> = {}) =>
    samples.find((s) => s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels))?.value;
  assert.equal(value("rdma_sessions_sessions", { role: "primary" }), 2);
  assert.equal(value("rdma_sessions_sessions", { role: "replica" }), undefined, "absent field, absent sample");
  assert.equal(value("rdma_sessions_replication_outcomes_total", { outcome: "a-new-outcome" }), 1);
  assert.equal(value("rdma_sessions_replicated_updates_total", { kind: "delta" }), 4);
  assert.equal(value("rdma_sessions_replicator_latency_seconds", { ack: "transport", quantile: "0.99" }), 0.004);
  assert.equal(value("rdma_sessions_replicator_latency_seconds_count", { ack: "transport" }), 5);
  assert.equal(value("rdma_sessions_lost_sessions_total"), 1);
  assert.equal(value("rdma_sessions_fenced_total"), 2);
  assert.equal(value("rdma_sessions_peer_connections", { transport: "tcp" }), 1);
  assert.equal(value("rdma_sessions_peers", { state: "down" }), 1);
  assert.equal(value("rdma_sessions_registered_memory_bytes"), 0, "no rdma in this process");
  assert.doesNotMatch(text, /rdma_sessions_replicated_bytes_total/, "no byte count in these stats");
  assert.equal(value("rdma_sessions_info", { self: "a" }), 1);
  // A stats() with nothing in it still gives a valid exposition.
  const bare = { self: "z", stats: () => ({}), node: { peers: new Map() } } as unknown as SessionCluster;
  assert.ok(parse(clusterMetrics(bare)).length >= 2);
});

test("metrics: metricsHandler serves a real cluster's counters over a real server, and they move with traffic", async () => {
  const cluster = await startCluster(["a", "b"], {
    prefix: "metrics",
    cluster: { secret: "metrics-test-cluster-secret-0123", logger: { warn: () => {} }, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 60_000 },
  });
  const clusters = [...cluster.nodes.values()];
  const [a] = clusters;
  const app = withSessions((request, session) => {
    if (new URL(request.url).pathname === "/metrics") return metricsHandler(a)(request);
    session.set("n", (session.get<number>("n") ?? 0) + 1);
    return new Response("ok");
  }, { cluster: a, ackMode: "applied" });
  const server = await serve(app);
  try {
    const scrape = async () => {
      const r = await fetch(`${server.url}/metrics`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
      return parse(await r.text());
    };
    const value = (samples: ReturnType<typeof parse>, name: string, labels: Record<string, string> = {}) =>
      samples.find((s) => s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels))?.value;
    const before = await scrape();
    assert.equal(value(before, "rdma_sessions_replication_latency_seconds_count", { ack: "applied" }), undefined);
    let cookie = "";
    for (let i = 0; i < 4; i++) {
      const r = await fetch(`${server.url}/inc`, { headers: cookie ? { cookie } : {} });
      await r.body?.cancel();
      cookie = r.headers.get("set-cookie")?.split(";")[0] ?? cookie;
    }
    const after = await scrape();
    assert.equal(value(after, "rdma_sessions_replication_latency_seconds_count", { ack: "applied" }), 4);
    assert.equal(value(after, "rdma_sessions_replication_latency_seconds_bucket", { ack: "applied", le: "+Inf" }), 4);
    assert.ok(value(after, "rdma_sessions_replication_latency_seconds_sum", { ack: "applied" })! > 0);
    assert.equal(value(after, "rdma_sessions_request_replications_total", { ack: "applied", outcome: "applied" }), 4);
    assert.equal(value(after, "rdma_sessions_replication_outcomes_total", { outcome: "applied" }), 4);
    assert.equal(value(after, "rdma_sessions_replicated_updates_total", { kind: "snapshot" }), 1, "the first write sends a snapshot");
    assert.equal(value(after, "rdma_sessions_replicated_updates_total", { kind: "delta" }), 3, "then deltas");
    assert.equal(value(after, "rdma_sessions_sessions", { role: "primary" }), 1);
    assert.equal(value(after, "rdma_sessions_replicator_latency_seconds_count", { ack: "applied" }), 4);
    assert.equal(value(after, "rdma_sessions_peer_connections", { transport: "loopback" }), 1);
    // The secondary's own metrics show what it applied.
    const b = parse(clusterMetrics(clusters[1]));
    assert.equal(value(b, "rdma_sessions_applied_updates_total"), 4);
    assert.equal(value(b, "rdma_sessions_sessions", { role: "replica" }), 1);
  } finally {
    await server.close();
    await cluster.close();
  }
});
