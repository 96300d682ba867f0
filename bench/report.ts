/**
 * Turns the saved results (bench/results/host.json, guest.json) into the
 * stdout tables, the Markdown figures of bench/README.md and the SVG chart.
 * Every comparison is a ratio of two figures measured in the same run.
 *
 * @module
 */
import type { FfiResult } from "./ffi.ts";
import { fmtBytes, fmtNs } from "./lib.ts";
import { HTTP_MODES } from "./http.ts";
import { type Cell, markdownTable, ratio, textTable } from "./table.ts";
import { chart } from "./chart.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

interface Section {
  title: string;
  head: string[];
  rows: Cell[][];
  note?: string;
}

function ffiSection(title: string, ffi: { bun?: FfiResult; deno?: FfiResult } | undefined): Section | undefined {
  if (!ffi?.bun || !ffi?.deno) return undefined;
  const rows: Cell[][] = ffi.bun.cases.map((b) => {
    const d = ffi.deno!.cases.find((c) => c.name === b.name);
    return [b.name, fmtNs(b.nsPerOp.p50), d ? fmtNs(d.nsPerOp.p50) : undefined, ratio(b.nsPerOp.p50, d?.nsPerOp.p50)];
  });
  return {
    title,
    head: ["operation (per op, p50 of batched samples)", `Bun ${ffi.bun.version}`, `Deno ${ffi.deno.version}`, "Bun/Deno"],
    rows,
  };
}

const lat = (rows: Json[] | undefined, size: number, mode: string) => rows?.find((r) => r.size === size && r.mode === mode);
/** ib_send_lat's better figure at `size` (it runs busy-polling and with CQ events). */
function bestSendLat(perf: Json, size: number): number | undefined {
  const us = (perf?.sendLat ?? []).filter((r: Json) => r.size === size && Number.isFinite(r.us)).map((r: Json) => r.us as number);
  return us.length ? Math.min(...us) : undefined;
}
const pass = (ok: boolean | undefined) => (ok === undefined ? "not measured" : ok ? "met" : "missed");

function tcpSection(tcp: Json): Section[] {
  if (!tcp?.bun || !tcp?.deno) return [];
  const rts = ["bun", "deno"];
  const latRows = tcp.bun.latency.map((b: Json, i: number) => {
    const row: Cell[] = [fmtBytes(b.size)];
    for (const rt of rts) {
      const p = tcp[rt].latency[i];
      row.push(p.sdp.halfRttUs, p.plain.halfRttUs, ratio(p.sdp.halfRttUs, p.plain.halfRttUs));
    }
    return row;
  });
  const bwRows = tcp.bun.throughput.map((b: Json, i: number) => {
    const row: Cell[] = [fmtBytes(b.size)];
    for (const rt of rts) {
      const p = tcp[rt].throughput[i];
      row.push(p.sdp.MBps, p.plain.MBps, ratio(p.sdp.MBps, p.plain.MBps));
    }
    return row;
  });
  return [{
    title: "TCP transport vs plain node:net echo, loopback: half round trip, p50 µs",
    head: ["size", "Bun sdp", "Bun plain", "Bun sdp/plain", "Deno sdp", "Deno plain", "Deno sdp/plain"],
    rows: latRows,
  }, {
    title: "TCP transport vs plain node:net echo, loopback: echo throughput, MB/s (16 in flight)",
    head: ["size", "Bun sdp", "Bun plain", "Bun sdp/plain", "Deno sdp", "Deno plain", "Deno sdp/plain"],
    rows: bwRows,
  }];
}

function httpSections(http: Json): Section[] {
  if (!http?.runs?.length) return [];
  const out: Section[] = [];
  for (const c of http.concurrencies ?? [http.concurrency]) {
    const runs = http.runs.filter((r: Json) => (r.concurrency ?? http.concurrency) === c);
    const get = (rt: string, m: string) => runs.find((r: Json) => r.runtime === rt && r.mode === m);
    const rows = HTTP_MODES.map((m) => {
      const row: Cell[] = [m];
      for (const rt of ["bun", "deno"]) {
        const r = get(rt, m), base = get(rt, "sessions");
        row.push(r?.p50Ms, r?.p99Ms, r?.rps, ratio(r?.p50Ms, base?.p50Ms));
      }
      return row;
    });
    out.push({
      title: `HTTP end to end, ${c} concurrent user${c === 1 ? "" : "s"} (load generator: ${http.loadgen ?? "bench/loadgen.ts"})`,
      head: ["mode", "Bun p50 ms", "Bun p99 ms", "Bun req/s", "Bun p50/sessions", "Deno p50 ms", "Deno p99 ms", "Deno req/s", "Deno p50/sessions"],
      rows,
      note: "plain: no sessions; sessions: withSessions on a one-server cluster (no replication: the baseline); none/transport/applied: replicated to a secondary process over TCP on loopback.",
    });
  }
  return out;
}

function memorySection(mem: Json, guest: Json): Section | undefined {
  if (!mem?.bun && !guest?.registered) return undefined;
  const rows: Cell[][] = [];
  for (const rt of ["bun", "deno"]) {
    const m = mem?.[rt];
    if (!m) continue;
    rows.push([`${rt}: allocated per replicated update (transport ack)`, m.replicatedUpdate.allocatedBytesPerUpdate ?? "not measurable (JSC heapUsed)"]);
    rows.push([`${rt}: retained per replicated update (after full GC)`, m.replicatedUpdate.retainedBytesPerUpdate]);
    rows.push([`${rt}: allocated per 1 KiB SDP/tcp message`, m.sdpTcpMessage.allocatedBytesPerMessage ?? "not measurable (JSC heapUsed)"]);
  }
  const r = guest?.registered;
  if (r) {
    rows.push(["rdma: registered by one socket (defaults)", `${r.oneSocketBytes} (${fmtBytes(r.oneSocketBytes)})`]);
    rows.push([`rdma: registered by 4 sockets, after connecting / after ${r.messagesSent} messages`, `${r.fourSocketsBytes} / ${r.afterTrafficBytes}`]);
  }
  return { title: "Memory (bytes)", head: ["what", "bytes"], rows, note: mem?.bun?.method ? `Method: ${mem.bun.method}.` : undefined };
}

function idleSection(host: Json, guest: Json): Section | undefined {
  const rows: Cell[][] = [];
  for (const [where, idle] of [["host", host?.idle], ["guest", guest?.idle]] as const) {
    for (const rt of ["bun", "deno"]) {
      const r = idle?.[rt];
      if (r) rows.push([`${where} ${rt} ${r.transport}`, r.seconds, r.plainTcpCpuMs, r.sdpCpuMs, r.sdpPercentOfCore, r.ackFramesWhileIdle]);
    }
  }
  if (!rows.length) return undefined;
  return { title: "CPU of an idle connected pair", head: ["where", "seconds", "plain TCP pair ms", "SDP pair ms", "SDP % of a core", "acks while idle"], rows };
}

function guestSections(g: Json): Section[] {
  if (!g?.transport) return [];
  const t = g.transport, perf = g.perftest;
  const sizes: number[] = [...new Set<number>(t.latency.map((r: Json) => r.size as number))].sort((a, b) => a - b);
  const readLat = (s: number) => perf.readLat.find((r: Json) => r.size === s)?.us;
  const sendLat = (s: number) => bestSendLat(perf, s);
  const latRows = sizes.map((s) => {
    const b = lat(t.latency, s, "bcopy"), z = lat(t.latency, s, "zcopy");
    return [fmtBytes(s), b?.sendReturnUs, b?.halfRttUs, z?.sendReturnUs, z?.halfRttUs, sendLat(s), readLat(s), ratio(b?.halfRttUs, sendLat(s)), ratio(z?.sendReturnUs, readLat(s))];
  });
  const bwSizes: number[] = [...new Set<number>(t.throughput.map((r: Json) => r.size as number))].sort((a, b) => a - b);
  // perftest sometimes prints 0 MB/s under the emulated clock: that is no measurement.
  const readBw = (s: number) => perf.readBw.find((r: Json) => r.size === s && r.MBps > 0)?.MBps;
  const bwRows = bwSizes.map((s) => {
    const b = lat(t.throughput, s, "bcopy"), z = lat(t.throughput, s, "zcopy");
    return [fmtBytes(s), b?.MBps, z?.MBps, readBw(s), ratio(b?.MBps, readBw(s)), ratio(z?.MBps, readBw(s)), ratio(z?.MBps, b?.MBps)];
  });
  const th = g.threshold;
  return [{
    title: "RDMA in the Soft-RoCE guest: latency, p50 µs (emulated CPU: read the ratios)",
    head: ["size", "bcopy send→return", "bcopy ½RTT", "zcopy send→return", "zcopy ½RTT", "ib_send_lat", "ib_read_lat", "bcopy ½RTT/ib_send_lat", "zcopy/ib_read_lat"],
    rows: latRows,
  }, {
    title: `RDMA in the guest: throughput, MB/s (${t.window} in flight to a sink; perftest MB = 2^20 B converted to 10^6)`,
    head: ["size", "bcopy", "zcopy", "ib_read_bw", "bcopy/ib_read_bw", "zcopy/ib_read_bw", "zcopy/bcopy"],
    rows: bwRows,
  }, {
    title: `zcopy threshold from this run: proposed ${th?.proposed ? fmtBytes(th.proposed) : "–"} (latency crossover ${th?.latencyCrossover ? fmtBytes(th.latencyCrossover) : "none"}, throughput crossover ${th?.throughputCrossover ? fmtBytes(th.throughputCrossover) : "none"})`,
    head: ["size", "bcopy µs", "zcopy µs", "zcopy/bcopy latency", "bcopy MB/s", "zcopy MB/s", "zcopy/bcopy throughput"],
    rows: (th?.evidence ?? []).map((e: Json) => [fmtBytes(e.size), e.bcopyUs, e.zcopyUs, ratio(e.zcopyUs, e.bcopyUs), e.bcopyMBps, e.zcopyMBps, ratio(e.zcopyMBps, e.bcopyMBps)]),
    note: th?.rule ? `Rule: ${th.rule}.` : undefined,
  }];
}

function targetsSection(host: Json, g: Json): Section {
  const rows: Cell[][] = [];
  const t = g?.transport, perf = g?.perftest;
  const z64 = lat(t?.latency, 65536, "zcopy")?.sendReturnUs, rl64 = perf?.readLat?.find((r: Json) => r.size === 65536)?.us;
  rows.push(["zcopy 64 KiB latency ≤ 1.5× ib_read_lat", ratio(z64, rl64), pass(z64 && rl64 ? z64 / rl64 <= 1.5 : undefined)]);
  for (const s of [1 << 20, 4 << 20]) {
    const z = lat(t?.throughput, s, "zcopy")?.MBps, bw = perf?.readBw?.find((r: Json) => r.size === s && r.MBps > 0)?.MBps;
    rows.push([`zcopy ${fmtBytes(s)} throughput ≥ 0.8× ib_read_bw`, ratio(z, bw), pass(z && bw ? z / bw >= 0.8 : undefined)]);
  }
  const b64 = lat(t?.latency, 64, "bcopy"), sl = bestSendLat(perf, 64);
  rows.push(["bcopy 64 B latency ≤ 2× ib_send_lat (½ round trip, like ib_send_lat)", ratio(b64?.halfRttUs, sl), pass(b64 && sl ? b64.halfRttUs / sl <= 2 : undefined)]);
  rows.push(["bcopy 64 B send→return vs ib_send_lat (for information)", ratio(b64?.sendReturnUs, sl), "–"]);
  const runs: Json[] = host?.http?.runs ?? [];
  for (const c of host?.http?.concurrencies ?? []) {
    for (const rt of ["bun", "deno"]) {
      const p = (m: string) => runs.find((r) => r.runtime === rt && r.mode === m && r.concurrency === c)?.p50Ms;
      const base = p("sessions");
      rows.push([`HTTP p50 transport ≤ 1.25× no replication (${rt}, ${c} user${c === 1 ? "" : "s"})`, ratio(p("transport"), base), pass(base ? p("transport") / base <= 1.25 : undefined)]);
      rows.push([`HTTP p50 none ≤ 1.05× no replication (${rt}, ${c} user${c === 1 ? "" : "s"})`, ratio(p("none"), base), pass(base ? p("none") / base <= 1.05 : undefined)]);
      rows.push([`HTTP p50 applied vs no replication (${rt}, ${c} user${c === 1 ? "" : "s"}; comparison point)`, ratio(p("applied"), base), "–"]);
    }
  }
  const r = g?.registered;
  rows.push(["no memory registration per message (registered bytes constant across the guest traffic)", r ? `${r.fourSocketsBytes} → ${r.afterTrafficBytes} B over ${r.messagesSent} messages` : "–", pass(r ? r.afterTrafficBytes === r.fourSocketsBytes : undefined)]);
  return { title: "Targets of issue 5", head: ["target", "measured", "verdict"], rows };
}

/** Everything `run.ts` prints and writes. */
export function render(host: Json, guest: Json, _redis?: Json): { text: string; markdown: string; svg: string } {
  const sections: Section[] = [];
  const add = (s: Section | undefined) => s && sections.push(s);
  add(targetsSection(host, guest));
  add(ffiSection("FFI overhead on the host (no device)", host?.ffi));
  add(ffiSection("FFI and verbs overhead in the guest (real rxe connection; emulated CPU)", guest?.ffi));
  sections.push(...guestSections(guest));
  sections.push(...tcpSection(host?.tcp));
  sections.push(...httpSections(host?.http));
  add(memorySection(host?.memory, guest));
  add(idleSection(host, guest));
  const text = sections.map((s) => textTable(s.title, s.head, s.rows) + (s.note ? `\n${s.note}` : "")).join("\n");
  const markdown = sections.map((s) => `#### ${s.title}\n\n${markdownTable(s.head, s.rows)}${s.note ? `\n\n${s.note}` : ""}`).join("\n\n");
  return { text, markdown, svg: chart(host, guest) };
}
