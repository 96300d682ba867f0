/**
 * Turns the saved results (bench/results/host.json, guest.json, redis.json,
 * uml.json, datapath-<runtime>.json, replication-<runtime>.json) into the stdout tables, the Markdown figures of bench/README.md and
 * the SVG chart. Every comparison is a ratio of two figures measured in the same
 * run, except the QEMU-vs-UML tables, which put two runs side by side (each
 * labelled with its environment; the system-call table's two sides come from
 * one run of `--uml`).
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

/** perftest runs of the guest run: what ran, how many iterations, what it reported. */
function perftestSection(g: Json): Section | undefined {
  const perf = g?.perftest;
  if (!perf) return undefined;
  const rows: Cell[][] = [];
  for (const r of perf.sendLat ?? []) rows.push([`ib_send_lat (${r.completion})`, fmtBytes(r.size), r.iterations, r.probeIterations ?? "–", r.us, r.avgUs, r.p99Us, "–"]);
  for (const r of perf.readLat ?? []) rows.push(["ib_read_lat", fmtBytes(r.size), r.iterations, r.probeIterations ?? "–", r.us, r.avgUs, r.p99Us, "–"]);
  for (const r of perf.readBw ?? []) rows.push(["ib_read_bw", fmtBytes(r.size), r.iterations, r.probeIterations ?? "–", "–", "–", "–", r.MBps]);
  for (const f of perf.failed ?? []) rows.push([`failed: ${String(f).split("\n")[0].slice(0, 120)}`, "–", "–", "–", "–", "–", "–", "–"]);
  return {
    title: "perftest in the guest run, alone (nothing else of ours running), over rdma_cm (-R)",
    head: ["tool", "size", "iterations", "probe iterations", "typical µs", "average µs", "p99 µs", "MB/s (10^6)"],
    rows,
    note: `Iterations: ${g.meta?.settings?.targetIterations ?? 1000}, fewer only where a probe run said ${g.meta?.settings?.targetIterations ?? 1000} would take longer than ${Math.round((g.meta?.settings?.budgetMsPerMeasurement ?? 0) / 1000)} s (the probe's count is shown). Raw output: ${g.meta?.log ?? "the run's log"}.`,
  };
}

function guestSections(g: Json): Section[] {
  if (!g?.transport) return [];
  const t = g.transport, perf = g.perftest ?? {};
  const sizes: number[] = [...new Set<number>(t.latency.map((r: Json) => r.size as number))].sort((a, b) => a - b);
  const readLat = (s: number) => perf.readLat?.find((r: Json) => r.size === s)?.us;
  const sendLat = (s: number) => bestSendLat(perf, s);
  const latRows = sizes.map((s) => {
    const b = lat(t.latency, s, "bcopy"), z = lat(t.latency, s, "zcopy");
    return [fmtBytes(s), b ? `${b.n} / ${z?.n ?? "–"}` : undefined, b?.sendReturnUs, b?.sendReturnP99Us, b?.halfRttUs, z?.sendReturnUs, z?.sendReturnP99Us, z?.halfRttUs, sendLat(s), readLat(s), ratio(b?.halfRttUs, sendLat(s)), ratio(z?.sendReturnUs, readLat(s))];
  });
  const bwSizes: number[] = [...new Set<number>(t.throughput.map((r: Json) => r.size as number))].sort((a, b) => a - b);
  // perftest sometimes prints 0 MB/s under the emulated clock: that is no measurement.
  const readBw = (s: number) => perf.readBw?.find((r: Json) => r.size === s && r.MBps > 0)?.MBps;
  const bwRows = bwSizes.map((s) => {
    const b = lat(t.throughput, s, "bcopy"), z = lat(t.throughput, s, "zcopy");
    return [fmtBytes(s), b?.messages, b?.MBps, z?.MBps, readBw(s), ratio(b?.MBps, readBw(s)), ratio(z?.MBps, readBw(s)), ratio(z?.MBps, b?.MBps)];
  });
  const th = g.threshold;
  return [{
    title: "RDMA in the Soft-RoCE guest: latency, µs (emulated CPU: read the ratios)",
    head: ["size", "samples bcopy / zcopy", "bcopy send→return p50", "p99", "bcopy ½RTT p50", "zcopy send→return p50", "p99", "zcopy ½RTT p50", "ib_send_lat", "ib_read_lat", "bcopy ½RTT/ib_send_lat", "zcopy/ib_read_lat"],
    rows: latRows,
    note: "After a warm-up (up to 200 round trips or 10 s); samples as shown (1,000 unless the time budget cut them). perftest: its typical (median) figure; ib_send_lat the better of busy polling and CQ events.",
  }, {
    title: `RDMA in the guest: throughput, MB/s (${t.window} in flight to a sink, after a warm-up of ${2 * t.window}; perftest MB = 2^20 B converted to 10^6)`,
    head: ["size", "messages", "bcopy", "zcopy", "ib_read_bw", "bcopy/ib_read_bw", "zcopy/ib_read_bw", "zcopy/bcopy"],
    rows: bwRows,
  }, {
    title: `zcopy threshold from this run: proposed ${th?.proposed ? fmtBytes(th.proposed) : "none"} (latency crossover ${th?.latencyCrossover ? fmtBytes(th.latencyCrossover) : "none"}, throughput crossover ${th?.throughputCrossover ? fmtBytes(th.throughputCrossover) : "none"})`,
    head: ["size", "bcopy µs", "zcopy µs", "zcopy/bcopy latency", "bcopy MB/s", "zcopy MB/s", "zcopy/bcopy throughput"],
    rows: (th?.evidence ?? []).map((e: Json) => [fmtBytes(e.size), e.bcopyUs, e.zcopyUs, ratio(e.zcopyUs, e.bcopyUs), e.bcopyMBps, e.zcopyMBps, ratio(e.zcopyMBps, e.bcopyMBps)]),
    note: th?.rule ? `Rule (stated before the run): ${th.rule}.` : undefined,
  }];
}

/** Our rdma transport in the QEMU guest (guest.json) and in User-Mode Linux (uml.json), side by side. */
function umlSections(guest: Json, uml: Json): Section[] {
  const q = guest?.transport, u = uml?.transport;
  if (!u) return [];
  const qd = guest?.meta?.date?.slice(0, 10) ?? "?", ud = uml.meta?.date?.slice(0, 10) ?? "?";
  const sizes: number[] = [...new Set<number>(u.latency.map((r: Json) => r.size as number))].sort((a, b) => a - b);
  const latRows = sizes.map((s) => {
    const qb = lat(q?.latency, s, "bcopy"), ub = lat(u.latency, s, "bcopy");
    const qz = lat(q?.latency, s, "zcopy"), uz = lat(u.latency, s, "zcopy");
    return [fmtBytes(s), `${qb?.n ?? "–"} / ${ub?.n ?? "–"}`, qb?.halfRttUs, qb?.halfRttP90Us, ub?.halfRttUs, ub?.halfRttP90Us, ratio(ub?.halfRttUs, qb?.halfRttUs), qz?.sendReturnUs, uz?.sendReturnUs, ratio(uz?.sendReturnUs, qz?.sendReturnUs)];
  });
  const bwSizes: number[] = [...new Set<number>(u.throughput.map((r: Json) => r.size as number))].sort((a, b) => a - b);
  const bwRows = bwSizes.map((s) => {
    const qb = lat(q?.throughput, s, "bcopy"), ub = lat(u.throughput, s, "bcopy");
    const qz = lat(q?.throughput, s, "zcopy"), uz = lat(u.throughput, s, "zcopy");
    return [fmtBytes(s), qb?.MBps, ub?.MBps, ratio(ub?.MBps, qb?.MBps), qz?.MBps, uz?.MBps, ratio(uz?.MBps, qz?.MBps)];
  });
  const out: Section[] = [{
    title: `Our rdma transport, QEMU guest (guest.json, ${qd}) vs User-Mode Linux (uml.json, ${ud}): latency, µs`,
    head: ["size", "samples QEMU / UML (bcopy)", "QEMU bcopy ½RTT p50", "p90", "UML bcopy ½RTT p50", "p90", "UML/QEMU", "QEMU zcopy send→return p50", "UML zcopy send→return p50", "UML/QEMU"],
    rows: latRows,
    note: "The same bench/guest.ts code path in both (Bun, one peer process, rxe0 on a dummy netdev, the same warm-up and sample counts); QEMU emulates every instruction (TCG, 2 vCPUs), UML runs user code natively on 1 CPU but sends every system call and page fault through ptrace. Neither stands in for RDMA hardware: see the system-call table below for what each one charges.",
  }, {
    title: `Our rdma transport, QEMU guest vs UML: throughput, MB/s (${u.window} in flight to a sink)`,
    head: ["size", "QEMU bcopy", "UML bcopy", "UML/QEMU", "QEMU zcopy", "UML zcopy", "UML/QEMU"],
    rows: bwRows,
  }];
  // Kernel entry against JS: one run measured both sides (uml.json's qemuSyscall is the QEMU boot of the same run).
  const uc: Json[] = uml.syscall?.cases ?? [], qc: Json[] = uml.qemuSyscall?.syscall?.cases ?? [];
  const rows: Cell[][] = uc.map((c) => {
    const o = qc.find((x) => x.name === c.name);
    return [`${c.name}: ${c.what}`, o?.nsPerOp?.p50, c.nsPerOp.p50, ratio(c.nsPerOp.p50, o?.nsPerOp?.p50)];
  });
  // The FFI part's shim call (JS to C, no kernel entry) and post+poll (one rxe post = one system call, plus rxe's work).
  for (const name of ["empty shim call (shim_abi_version)", "empty CQ poll (RdmaConnection.poll)", "post + poll to completion (8 B inline RDMA WRITE)"]) {
    const a = guest?.ffi?.bun?.cases?.find((c: Json) => c.name === name), b = uml.ffi?.bun?.cases?.find((c: Json) => c.name === name);
    if (a || b) rows.push([`ffi.ts (Bun): ${name} (QEMU: guest.json's run)`, a?.nsPerOp?.p50, b?.nsPerOp?.p50, ratio(b?.nsPerOp?.p50, a?.nsPerOp?.p50)]);
  }
  if (rows.length) {
    out.push({
      title: "What each environment charges: system call, timer, page fault against pure JS, ns per operation (Bun, p50)",
      head: ["operation", "QEMU guest", "UML", "UML/QEMU"],
      rows,
      note: "A ratio below 1 means UML is cheaper. JS and memcpy run natively in UML and emulated in QEMU; a system call or page fault in UML is a ptrace round trip to the host kernel. Our socket's small-message round trip is a few system calls (rxe's post, wake-ups) plus JS, its large-message cost is copies and rxe's packet work (CPU): so the small sizes follow the system-call row and the large ones the JS/copy rows.",
    });
  }
  return out;
}

/** One computed sentence comparing the two environments (for both READMEs). */
function umlSummary(guest: Json, uml: Json): string | undefined {
  const u = uml?.transport, q = guest?.transport;
  if (!u) return undefined;
  const fig = (t: Json, s: number, m: string) => {
    const r = lat(t?.latency, s, m);
    return r ? `${r.halfRttUs} / ${r.halfRttP90Us} µs` : "–";
  };
  const pick = (cases: Json[] | undefined, n: string) => cases?.find((c: Json) => c.name === n)?.nsPerOp?.p50;
  const uc = uml.syscall?.cases, qc = uml.qemuSyscall?.syscall?.cases;
  const ffi = (run: Json, n: string) => run?.ffi?.bun?.cases?.find((c: Json) => c.name === n)?.nsPerOp?.p50;
  const call = "empty shim call (shim_abi_version)", post = "post + poll to completion (8 B inline RDMA WRITE)";
  const ffiText = `an FFI call into the shim (no kernel entry) ${ffi(uml, call) ?? "–"} ns in UML against ${ffi(guest, call) ?? "–"} ns in QEMU (${ratio(ffi(uml, call), ffi(guest, call))}), a post + poll of an 8 B RDMA WRITE (one system call and rxe's work) ${ffi(uml, post) ?? "–"} against ${ffi(guest, post) ?? "–"} ns (${ratio(ffi(uml, post), ffi(guest, post))})`;
  const sys = qc
    ? `a system call (fstat from JS) costs ${pick(uc, "fstat") ?? "–"} ns in UML against ${pick(qc, "fstat") ?? "–"} ns in QEMU (${ratio(pick(uc, "fstat"), pick(qc, "fstat"))}), a JS loop iteration ${pick(uc, "JS loop") ?? "–"} against ${pick(qc, "JS loop") ?? "–"} ns (${ratio(pick(uc, "JS loop"), pick(qc, "JS loop"))}), a 64 KiB copy ${pick(uc, "64 KiB copy") ?? "–"} against ${pick(qc, "64 KiB copy") ?? "–"} ns (${ratio(pick(uc, "64 KiB copy"), pick(qc, "64 KiB copy"))}); ${ffiText}`
    : `in UML a system call (fstat from JS) costs ${pick(uc, "fstat") ?? "–"} ns, a timer read ${pick(uc, "performance.now") ?? "–"} ns and a page fault ${pick(uc, "page fault") ?? "–"} ns, while a JS loop iteration costs ${pick(uc, "JS loop") ?? "–"} ns (this run has no QEMU side of that part); ${ffiText}`;
  return `- RDMA, User-Mode Linux (uml.json, ${uml.meta?.date?.slice(0, 10) ?? "?"}; native user code, system calls through ptrace) beside the QEMU guest (guest.json): bcopy ½ round trip p50 / p90 64 B ${fig(u, 64, "bcopy")} in UML against ${fig(q, 64, "bcopy")} in QEMU; 64 KiB ${fig(u, 65536, "bcopy")} against ${fig(q, 65536, "bcopy")}; 1 MiB ${fig(u, 1 << 20, "bcopy")} against ${fig(q, 1 << 20, "bcopy")}. Why: ${sys}. perftest was not run in UML (${uml.perftestSkipped ? "it prints inf latencies there" : "see uml.json"}); every other figure in the summary above is from the QEMU guest.`;
}

const SETUP_LABEL: Record<string, string> = {
  redis: "Redis store (redis-server)",
  none: "withSessions, ack none",
  transport: "withSessions, ack transport",
  applied: "withSessions, ack applied",
};

function redisSpeedSections(r: Json): Section[] {
  if (!r?.speed?.length) return [];
  return (r.concurrencies as number[]).map((c) => {
    const get = (rt: string, setup: string) => r.speed.find((x: Json) => x.runtime === rt && x.setup === setup && x.concurrency === c);
    const rows = ["redis", "none", "transport", "applied"].map((setup) => {
      const row: Cell[] = [SETUP_LABEL[setup]];
      for (const rt of ["bun", "deno"]) {
        const x = get(rt, setup), base = get(rt, "redis");
        row.push(x?.p50Ms, x?.p99Ms, x?.rps, ratio(x?.p50Ms, base?.p50Ms), ratio(x?.rps, base?.rps));
      }
      return row;
    });
    return {
      title: `Sessions in Redis vs withSessions (3 servers, tcp), ${c} concurrent user${c === 1 ? "" : "s"}, the same app and load`,
      head: ["setup", "Bun p50 ms", "Bun p99 ms", "Bun req/s", "Bun p50/Redis", "Bun req/s / Redis", "Deno p50 ms", "Deno p99 ms", "Deno req/s", "Deno p50/Redis", "Deno req/s / Redis"],
      rows,
      note: `Load: ${r.loadgen}, ${r.warmupMs} ms warm-up, ${r.durationMs} ms measured. Redis store: ${r.store}; ${r.redisServer}. Ours: ${r.cluster}.`,
    };
  });
}

function redisKillSection(r: Json): Section | undefined {
  if (!r?.kill?.length) return undefined;
  const rows = r.kill.map((k: Json) => [
    `${k.runtime} ${SETUP_LABEL[k.setup]}`,
    k.killed,
    `${k.users} × ${k.updatesPerUser}`,
    k.acknowledged,
    k.unacknowledgedOk ? `${k.unacknowledgedOk}${k.replication ? ` (${Object.entries(k.replication).filter(([h]) => !["transport", "applied", "redis"].includes(h)).map(([h, n]) => `${h}: ${n}`).join(", ")})` : ""}` : 0,
    k.failed,
    k.acknowledgedLost,
    k.okLost,
    `${k.sessionsLost} / ${k.sessions}`,
    `${k.sessionsUnavailable} / ${k.sessions}`,
    k.afterRestart ? `${k.afterRestart.acknowledgedLost} acked lost, ${k.afterRestart.sessionsLost} / ${k.sessions} sessions lost` : "–",
  ]);
  return {
    title: "Killing a server (SIGKILL at 40 % of the updates): what the sessions kept",
    head: ["setup", "killed", "users × updates", "acked", "200 not acked", "failed (no 200)", "acked lost", "any 200 lost", "sessions lost", "sessions unavailable", "redis-server restarted"],
    rows,
    note: "Every update writes its own key (/put?k=u<i>); acked = a 200 whose x-replication said transport, applied or redis (redis-server replied to the SET). Read back after the load: through the surviving app servers (ours), or the one app server while redis-server is down and again after it was restarted with the same settings (Redis). Sessions lost: read back with none of their updates; unavailable: no server could answer.",
  };
}

/** A few sentences computed from the results (no figure typed by hand), for both READMEs. */
export function summary(guest: Json, redis: Json): string {
  const out: string[] = [];
  const perf = guest?.perftest, t = guest?.transport;
  if (perf && t) {
    const sl = (perf.sendLat ?? []).filter((r: Json) => Number.isFinite(r.us));
    const poll = sl.find((r: Json) => r.completion === "poll"), ev = sl.find((r: Json) => r.completion === "events");
    const b64 = lat(t.latency, 64, "bcopy"), z64k = lat(t.latency, 65536, "zcopy"), rl64k = perf.readLat?.find((r: Json) => r.size === 65536);
    const best = bestSendLat(perf, 64);
    out.push(`- RDMA, guest (QEMU TCG, ${guest.meta?.date?.slice(0, 10) ?? "?"}): perftest alone gave \`ib_send_lat\` 64 B ${poll?.us ?? "–"} µs busy-polling and ${ev?.us ?? "–"} µs with CQ events (${poll?.iterations ?? "–"} iterations); our bcopy 64 B half round trip is ${b64?.halfRttUs ?? "–"} µs p50 (${b64?.n ?? "–"} samples, p99 ${b64?.halfRttP99Us ?? "–"} µs): ${ratio(b64?.halfRttUs, best)} of \`ib_send_lat\`. zcopy 64 KiB send→return is ${z64k?.sendReturnUs ?? "–"} µs against \`ib_read_lat\` ${rl64k?.us ?? "–"} µs: ${ratio(z64k?.sendReturnUs, rl64k?.us)}.`);
    const bw = (s: number) => perf.readBw?.find((r: Json) => r.size === s);
    const parts = [262144, 1 << 20, 4 << 20].map((s) => {
      const z = lat(t.throughput, s, "zcopy"), p = bw(s);
      const ok = p && p.MBps > 0;
      return `${fmtBytes(s)} ${z?.MBps ?? "–"} MB/s (${z?.messages ?? "–"} messages) against ${ok ? `${p.MBps} MB/s: ${ratio(z?.MBps, p.MBps)}` : "no valid `ib_read_bw` figure (it printed 0)"}`;
    });
    out.push(`- zcopy throughput, 16 in flight: ${parts.join("; ")}.`);
    const cut = (t.latency as Json[]).filter((r) => r.n < (guest.meta?.settings?.targetIterations ?? 1000)).map((r) => `${fmtBytes(r.size)} ${r.mode} ${r.n}`);
    const pcut = [...(perf.readLat ?? []), ...(perf.readBw ?? [])].filter((r: Json) => r.iterations < (guest.meta?.settings?.targetIterations ?? 1000)).map((r: Json) => `${r.command?.split(" ")[0]} ${fmtBytes(r.size)} ${r.iterations}`);
    out.push(`- Samples: ${cut.length ? `fewer than ${guest.meta?.settings?.targetIterations ?? 1000} where ${guest.meta?.settings?.budgetMsPerMeasurement / 1000} s did not allow more (ours: ${cut.join(", ")}${pcut.length ? `; perftest: ${pcut.join(", ")}` : ""})` : "every size and path got the full count"}; everything else ${guest.meta?.settings?.targetIterations ?? 1000}.`);
    const th = guest.threshold;
    if (th) out.push(`- zcopy threshold by the rule stated before the run: proposed ${th.proposed ? fmtBytes(th.proposed) : "none"} (throughput crossover ${th.throughputCrossover ? fmtBytes(th.throughputCrossover) : "none"}, send→return latency crossover ${th.latencyCrossover ? fmtBytes(th.latencyCrossover) : "none"}).`);
  }
  if (redis?.speed?.length) {
    const get = (rt: string, setup: string, c: number) => redis.speed.find((x: Json) => x.runtime === rt && x.setup === setup && x.concurrency === c);
    for (const rt of ["bun", "deno"]) {
      const cs: number[] = redis.concurrencies ?? [];
      const bits = cs.map((c) => {
        const base = get(rt, "redis", c);
        return `${c} user${c === 1 ? "" : "s"}: p50 ${["none", "transport", "applied"].map((m) => `${m} ${ratio(get(rt, m, c)?.p50Ms, base?.p50Ms)}`).join(", ")}, req/s ${["none", "transport", "applied"].map((m) => `${m} ${ratio(get(rt, m, c)?.rps, base?.rps)}`).join(", ")}`;
      });
      out.push(`- Redis vs withSessions, ${rt === "bun" ? "Bun" : "Deno"} servers (host, ${redis.meta?.date?.slice(0, 10) ?? "?"}), ours as a multiple of Redis: ${bits.join("; ")}.`);
    }
  }
  if (redis?.kill?.length) {
    const k = redis.kill as Json[];
    const r = k.filter((x) => x.setup === "redis"), o = k.filter((x) => x.setup !== "redis");
    const sum = (xs: Json[], f: (x: Json) => number) => xs.reduce((a, x) => a + (f(x) ?? 0), 0);
    out.push(`- Killing a server: with redis-server killed, ${sum(r, (x) => x.sessionsUnavailable)} of ${sum(r, (x) => x.sessions)} sessions were unreadable while it was down and, after its restart, ${sum(r, (x) => x.afterRestart?.acknowledgedLost)} of ${sum(r, (x) => x.acknowledged)} acknowledged updates were gone; with one of three withSessions servers killed, ${sum(o, (x) => x.acknowledgedLost)} of ${sum(o, (x) => x.acknowledged)} acknowledged updates were lost (${o.length} runs: Bun and Deno, ack none/transport/applied).`);
  }
  return out.join("\n");
}


/** The before/after files of bench/run.ts's parts `datapath` and `replication`, per runtime. */
export interface BeforeAfter {
  datapath?: { bun?: Json; deno?: Json };
  replication?: { bun?: Json; deno?: Json };
}

const RT_NAME: Record<string, string> = { bun: "Bun", deno: "Deno" };
const versionOf = (r: Json, rt: string) => String(r?.versions?.[rt] ?? r?.meta?.versions?.[rt] ?? "?").replace(/^deno /, "").split(" ")[0];
const short = (sha: unknown) => String(sha ?? "?").slice(0, 7);

/** 64 B round trips and allocation of the data path, before (the baseline commit) and after, per runtime. */
function datapathSections(dp: BeforeAfter["datapath"]): Section[] {
  const rts = ["bun", "deno"].filter((rt) => dp?.[rt as "bun"]?.rows);
  if (!rts.length) return [];
  const rows: Cell[][] = [];
  const targets: Cell[][] = [];
  let base = "?", cur = "?";
  for (const rt of rts) {
    const r = dp![rt as "bun"];
    base = short(r.baseline?.commit);
    cur = short(r.meta?.commit ?? r.commit);
    const row = (name: string) => r.rows.find((x: Json) => x.path === name);
    for (const [what, path] of [["tcp, ours", "tcp ours"], ["loopback, ours", "loopback ours"]]) {
      const b = row(`${path} (baseline)`), a = row(`${path} (current)`);
      rows.push([`${RT_NAME[rt]} ${versionOf(r, rt)}: ${what}`, b?.p50Us, a?.p50Us, ratio(a?.p50Us, b?.p50Us), b?.meanUs, a?.meanUs, b?.allocBytesPerRoundTrip, a?.allocBytesPerRoundTrip, ratio(a?.allocBytesPerRoundTrip, b?.allocBytesPerRoundTrip), `${b?.n ?? "–"} / ${a?.n ?? "–"}`]);
    }
    for (const name of ["tcp node:net ping-pong", "tcp native ping-pong", "floor: 2 promise queues + setImmediate/hop"]) {
      const x = row(name);
      rows.push([`${RT_NAME[rt]}: ${name} (reference, measured once)`, undefined, x?.p50Us, undefined, undefined, x?.meanUs, undefined, x?.allocBytesPerRoundTrip, undefined, x?.n]);
    }
    const fr = r.framesPer64KiBMessage;
    if (fr) rows.push([`${RT_NAME[rt]}: frames per 64 KiB loopback message`, fr.baseline, fr.current, ratio(fr.current, fr.baseline), undefined, undefined, undefined, undefined, undefined, "1 / 1"]);
    const t = (name: string, key: string, limit: number) => {
      const b = r.ratios?.baseline?.[key], a = r.ratios?.current?.[key];
      targets.push([`${name} (${RT_NAME[rt]})`, Number.isFinite(b) ? `${b}×` : undefined, Number.isFinite(a) ? `${a}×` : undefined, `≤ ${limit}×`, pass(Number.isFinite(a) ? a <= limit : undefined)]);
    };
    t("tcp 64 B round trip p50 ≤ 1.2× node:net ping-pong", "tcp p50 / node:net p50", 1.2);
    t("tcp 64 B round trip p50 ≤ 1.2× native ping-pong", "tcp p50 / native p50", 1.2);
    t("loopback 64 B round trip p50 ≤ 1.5× setImmediate floor", "loopback p50 / floor p50", 1.5);
    t("loopback allocation per message ≤ 2× the floor's", "loopback alloc / floor alloc", 2);
    t("tcp allocation per message ≤ 2× node:net's", "tcp alloc / node:net alloc", 2);
  }
  return [{
    title: `Data path, 64 B round trips: before (${base}, v0.1) and after (${cur}), one run per runtime`,
    head: ["path", "p50 µs before", "p50 µs after", "after/before", "mean µs before", "mean µs after", "alloc B/rt before", "alloc B/rt after", "alloc after/before", "round trips timed (before / after)"],
    rows,
    note: "Before and after are loaded side by side in one process and take turns block by block with the references (node:net and native ping-pong with the same peer process, the in-process setImmediate floor), so the machine's drift hits all alike. Allocation: JS heap bytes of the client process per round trip (bench/datapath.ts says how per runtime).",
  }, {
    title: "Targets of issue 10: the data path (ratios to the same run's references)",
    head: ["target", "before", "after", "limit", "verdict (after)"],
    rows: targets,
  }];
}

const REPL_PATHS: [string, string][] = [["plain", "plain node:net round trip"], ["handler", "handler, no replication"], ["none", "ack none"], ["transport", "ack transport"], ["applied", "ack applied"]];

/** Per-update wall, primary CPU and allocation of replication over tcp, before and after, per runtime. */
function replicationSections(rep: BeforeAfter["replication"]): Section[] {
  const rts = ["bun", "deno"].filter((rt) => rep?.[rt as "bun"]?.results);
  if (!rts.length) return [];
  const rows: Cell[][] = [];
  const targets: Cell[][] = [];
  const tails: Cell[][] = [];
  let base = "?", cur = "?", n = "?", batches = "?";
  for (const rt of rts) {
    const r = rep![rt as "bun"];
    base = short(r.libraries?.before?.commit);
    cur = short(r.meta?.commit ?? r.libraries?.after?.commit);
    n = r.settings?.n ?? "?";
    batches = r.settings?.rounds ?? "?";
    const b = r.results.before, a = r.results.after;
    for (const [key, what] of REPL_PATHS) {
      const x = b?.[key], y = a?.[key];
      rows.push([`${RT_NAME[rt]}: ${what}`, x?.wallUs?.median, y?.wallUs?.median, ratio(y?.wallUs?.median, x?.wallUs?.median), x?.cpuUs?.median, y?.cpuUs?.median, ratio(y?.cpuUs?.median, x?.cpuUs?.median), x?.allocBytes, y?.allocBytes, ratio(y?.allocBytes, x?.allocBytes)]);
      const lx = x?.latencyUs, ly = y?.latencyUs;
      if (lx || ly) tails.push([`${RT_NAME[rt]}: ${what}`, lx?.p50, ly?.p50, lx?.p90, ly?.p90, lx?.p99, ly?.p99, ly?.n ?? lx?.n]);
    }
    const names: [string, string][] = [
      ["transportWall", "`transport` wall ≤ plain round trip + 15 µs"],
      ["transportCpu", "`transport` primary CPU ≤ plain round trip's + 15 µs"],
      ["noneWall", "`none` wall ≤ handler + 5 µs"],
      ["noneCpu", "`none` primary CPU ≤ handler's + 5 µs"],
      ["allocTransport", "allocation per `transport` update ≤ 2× the plain round trip's"],
    ];
    for (const [key, what] of names) {
      const x = r.targets?.before?.[key], y = r.targets?.after?.[key];
      const f = (v: Json) => (v ? `${v.value} / ${v.target} = ${ratio(v.value, v.target)}` : undefined);
      targets.push([`${what} (${RT_NAME[rt]} ${versionOf(r, rt)})`, f(x), f(y), pass(y ? y.met : undefined)]);
    }
  }
  return [{
    title: `Replicated updates over tcp, per update: before (${base}, v0.1) and after (${cur}); µs and bytes, medians of ${batches} batches of ${n}`,
    head: ["path", "wall before", "wall after", "after/before", "CPU before", "CPU after", "after/before", "alloc B before", "alloc B after", "after/before"],
    rows,
    note: "Wall: the batch's requests as the caller sees them; CPU: process.cpuUsage() of the primary's process over the batch (and the final applied update that sends what none left); allocation: JS heap of the primary (bench/replication.ts says how per runtime). The plain round trip is measured in each version's turn: its before and after differ by noise only.",
  }, ...(tails.length ? [{
    title: "Replicated updates over tcp: each update's latency, µs (every update of the timed batches)",
    head: ["path", "p50 before", "p50 after", "p90 before", "p90 after", "p99 before", "p99 after", "updates"],
    rows: tails,
    note: "The clock read between consecutive updates of a batch: what one request waits. The batch means above fold this tail in, which is why they move more between runs than the p50 does.",
  }] : []), {
    title: "Targets of issue 10: replication (value / target = ratio; met at 1.00× or below)",
    head: ["target", "before", "after", "verdict (after)"],
    rows: targets,
  }];
}

/** Where each result came from: commit, versions, settings, load. */
function runsSection(host: Json, guest: Json, redis: Json, uml?: Json, ba?: BeforeAfter): Section | undefined {
  const rows: Cell[][] = [];
  const add = (file: string, where: string, m: Json, settings: string) => {
    if (!m) return;
    const v = (x: unknown) => (x === undefined ? undefined : String(x).replace(/^deno /, "").split(" ")[0]);
    rows.push([file, where, m.date, String(m.commit ?? "?").slice(0, 10), v(m.bun ?? m.versions?.bun ?? m.host?.versions?.bun), v(m.deno ?? m.versions?.deno ?? m.host?.versions?.deno), settings, (m.host?.loadavgAtStart ?? m.loadavgAtStart ?? "–").toString(), m.log ?? "–"]);
  };
  const guestSettings = (s: Json) => s ? `RDMA_SPIN_US ${s.rdmaSpinUs}; forced thresholds bcopy ${s.forcedThresholds.bcopy}, zcopy ${s.forcedThresholds.zcopy}; ${s.targetIterations} iterations/samples, budget ${s.budgetMsPerMeasurement / 1000} s; window ${s.window}, ≥ ${s.minThroughputMessages} messages` : "–";
  add("host.json", `host (${host?.meta?.host ?? "?"}, no RDMA)`, host?.meta, "–");
  add("guest.json", `QEMU guest, TCG (${guest?.meta?.kernel ?? "?"})`, guest?.meta, guestSettings(guest?.meta?.settings));
  add("uml.json", `User-Mode Linux (${uml?.meta?.kernel ?? "?"}); perftest not run`, uml?.meta, guestSettings(uml?.meta?.settings));
  if (uml?.qemuSyscall?.meta) add("uml.json qemuSyscall", `QEMU guest, TCG (${uml.qemuSyscall.meta.kernel ?? "?"}): system-call part only`, uml.qemuSyscall.meta, "–");
  add("redis.json", "host", redis?.meta, redis ? `${redis.durationMs} ms per setup, users ${redis.concurrencies?.join(", ")}` : "–");
  for (const rt of ["bun", "deno"] as const) {
    const d = ba?.datapath?.[rt], r = ba?.replication?.[rt];
    if (d?.meta) add(`datapath-${rt}.json`, `host, ${RT_NAME[rt]}`, d.meta, `before ${short(d.meta.baseline)}; 64 B; ${d.meta.samples?.roundTripsPerPathLatency} timed round trips per path, ${d.meta.samples?.roundTripsPerPathAllocation} for allocation; ${d.meta.seconds} s${d.meta.quick ? "; quick" : ""}`);
    if (r?.meta) add(`replication-${rt}.json`, `host, ${RT_NAME[rt]}`, r.meta, `before ${short(r.meta.baseline)}; ${r.meta.samples?.batchesPerPath} batches of ${r.meta.samples?.updatesPerBatch} updates per path, ${r.meta.samples?.updatesPerPathAllocation} for allocation; ${r.meta.seconds} s${r.meta.quick ? "; quick" : ""}`);
  }
  if (!rows.length) return undefined;
  return { title: "The runs behind these figures", head: ["file", "environment", "started", "commit", "bun", "deno", "settings", "host load average at start", "raw log"], rows };
}

function targetsSection(host: Json, g: Json): Section {
  const rows: Cell[][] = [];
  const t = g?.transport, perf = g?.perftest;
  const z64 = lat(t?.latency, 65536, "zcopy")?.sendReturnUs, rl64 = perf?.readLat?.find((r: Json) => r.size === 65536)?.us;
  rows.push(["zcopy 64 KiB latency ≤ 1.5× ib_read_lat", ratio(z64, rl64), pass(z64 && rl64 ? z64 / rl64 <= 1.5 : undefined)]);
  for (const s of [1 << 20, 4 << 20]) {
    const z = lat(t?.throughput, s, "zcopy")?.MBps, bw = perf?.readBw?.find((r: Json) => r.size === s && r.MBps > 0)?.MBps;
    // One READ plus two SENDs per message cannot beat ib_read_bw's READs: above 1× the reference is not sound.
    const zero = perf?.readBw?.some((r: Json) => r.size === s && !(r.MBps > 0));
    const verdict = z && bw ? (z / bw > 1 ? "not judged: above ib_read_bw (see bench/README.md)" : pass(z / bw >= 0.8)) : zero ? "not judged: ib_read_bw printed 0 (failed clock calibration)" : pass(undefined);
    rows.push([`zcopy ${fmtBytes(s)} throughput ≥ 0.8× ib_read_bw`, ratio(z, bw), verdict]);
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
  return { title: "Targets of issue 5 (RDMA figures from the QEMU guest, guest.json)", head: ["target", "measured", "verdict"], rows };
}

/** Everything `run.ts` prints and writes. */
export function render(host: Json, guest: Json, redis?: Json, uml?: Json, ba: BeforeAfter = {}): { text: string; markdown: string; svg: string; readme: string } {
  const sections: Section[] = [];
  const add = (s: Section | undefined) => s && sections.push(s);
  add(runsSection(host, guest, redis, uml, ba));
  add(targetsSection(host, guest));
  sections.push(...datapathSections(ba.datapath), ...replicationSections(ba.replication));
  sections.push(...redisSpeedSections(redis));
  add(redisKillSection(redis));
  add(ffiSection("FFI overhead on the host (no device)", host?.ffi));
  add(ffiSection("FFI and verbs overhead in the guest (real rxe connection; emulated CPU)", guest?.ffi));
  add(perftestSection(guest));
  sections.push(...guestSections(guest));
  sections.push(...umlSections(guest, uml));
  sections.push(...tcpSection(host?.tcp));
  sections.push(...httpSections(host?.http));
  add(memorySection(host?.memory, guest));
  add(idleSection(host, guest));
  const text = sections.map((s) => textTable(s.title, s.head, s.rows) + (s.note ? `\n${s.note}` : "")).join("\n");
  const md = (s: Section) => `#### ${s.title}\n\n${markdownTable(s.head, s.rows)}${s.note ? `\n\n${s.note}` : ""}`;
  const sumText = [summary(guest, redis), umlSummary(guest, uml)].filter(Boolean).join("\n");
  const markdown = (sumText ? `#### Summary (computed from the results)\n\n${sumText}\n\n` : "") + sections.map(md).join("\n\n");
  // README.md's Benchmarks section: the runs, the targets, Redis against ours, the kill test.
  const headline = [runsSection(host, guest, redis, uml, ba), targetsSection(host, guest), ...datapathSections(ba.datapath), ...replicationSections(ba.replication), ...umlSections(guest, uml), ...redisSpeedSections(redis), redisKillSection(redis)]
    .filter((s): s is Section => s !== undefined).map((s) => ({ ...s, title: s.title.replace(/^#+ /, "") }));
  const sum = sumText;
  const readme = (sum ? `#### Summary (computed from the results)\n\n${sum}\n\n` : "") + headline.map(md).join("\n\n");
  return { text, markdown, svg: chart(guest, redis), readme };
}
