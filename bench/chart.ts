/**
 * The benchmark chart as hand-written SVG (no dependencies): four panels,
 * each drawn from the saved results, with "not measured" where a part is missing.
 *
 * 1. Guest latency by message size (log-log): bcopy, zcopy, ib_read_lat, ib_send_lat.
 * 2. Guest throughput by message size (log x): bcopy, zcopy, ib_read_bw.
 * 3. HTTP p50 at 1 user: the Redis session store against withSessions (ack none, transport, applied), Bun and Deno.
 * 4. HTTP requests/s at 8 users, the same setups.
 *
 * @module
 */

// deno-lint-ignore no-explicit-any
type Json = any;

export interface Series {
  name: string;
  color: string;
  points: [number, number][];
  dashed?: boolean;
}

const W = 480, H = 300, PAD = { l: 64, r: 16, t: 34, b: 46 };
const esc = (s: string) => s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");

function text(x: number, y: number, s: string, extra = ""): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${extra}>${esc(s)}</text>`;
}

function sizeLabel(n: number): string {
  if (n >= 1 << 20) return `${n / (1 << 20)}M`;
  if (n >= 1024) return `${n / 1024}K`;
  return String(n);
}

function niceLabel(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toPrecision(3)}k`;
  return String(+v.toPrecision(3));
}

/** A line chart in a panel at (ox, oy); x is always log2, y log10 when `logY`. */
export function linePanel(ox: number, oy: number, title: string, yLabel: string, series: Series[], logY: boolean): string {
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => x > 0 && y > 0);
  const parts = [`<g transform="translate(${ox},${oy})">`, `<rect width="${W}" height="${H}" fill="#fff" stroke="#ccc"/>`,
    text(W / 2, 20, title, `text-anchor="middle" font-weight="bold"`)];
  if (pts.length === 0) {
    parts.push(text(W / 2, H / 2, "not measured in this run", `text-anchor="middle" fill="#888"`), "</g>");
    return parts.join("");
  }
  const fx = (x: number) => Math.log2(x), fy = (y: number) => (logY ? Math.log10(y) : y);
  const x0 = Math.floor(Math.min(...pts.map(([x]) => fx(x)))), x1 = Math.ceil(Math.max(...pts.map(([x]) => fx(x))));
  let y0 = logY ? Math.floor(Math.min(...pts.map(([, y]) => fy(y)))) : 0;
  let y1 = logY ? Math.ceil(Math.max(...pts.map(([, y]) => fy(y)))) : Math.max(...pts.map(([, y]) => y)) * 1.1;
  if (y1 === y0) (y1 += 1), (y0 -= logY ? 1 : 0);
  const px = (x: number) => PAD.l + ((fx(x) - x0) / Math.max(1, x1 - x0)) * (W - PAD.l - PAD.r);
  const py = (y: number) => H - PAD.b - ((fy(y) - y0) / (y1 - y0)) * (H - PAD.t - PAD.b);
  for (let e = x0; e <= x1; e += 2) {
    const x = px(2 ** e);
    parts.push(`<line x1="${x}" x2="${x}" y1="${PAD.t}" y2="${H - PAD.b}" stroke="#eee"/>`, text(x, H - PAD.b + 14, sizeLabel(2 ** e), `text-anchor="middle" font-size="10"`));
  }
  const yTicks = logY ? Array.from({ length: y1 - y0 + 1 }, (_, i) => 10 ** (y0 + i)) : Array.from({ length: 5 }, (_, i) => (y1 * i) / 4);
  for (const t of yTicks) {
    const y = py(t);
    parts.push(`<line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y}" y2="${y}" stroke="#eee"/>`, text(PAD.l - 4, y + 3, niceLabel(t), `text-anchor="end" font-size="10"`));
  }
  parts.push(text(W / 2, H - 8, "message size (bytes, log scale)", `text-anchor="middle" font-size="11"`));
  parts.push(text(14, H / 2, yLabel, `text-anchor="middle" font-size="11" transform="rotate(-90 14 ${H / 2})"`));
  series.forEach((s, i) => {
    const p = s.points.filter(([x, y]) => x > 0 && y > 0).sort((a, b) => a[0] - b[0]);
    if (p.length) {
      const d = p.map(([x, y], j) => `${j ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join("");
      parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ` stroke-dasharray="5,3"` : ""}/>`);
      for (const [x, y] of p) parts.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
    }
    const ly = PAD.t + 4 + i * 14;
    parts.push(`<rect x="${PAD.l + 8}" y="${ly}" width="10" height="3" fill="${s.color}"/>`, text(PAD.l + 22, ly + 5, s.name, `font-size="10"`));
  });
  parts.push("</g>");
  return parts.join("");
}

/** Grouped bars: `groups` on x, one bar per series in each. */
export function barPanel(ox: number, oy: number, title: string, yLabel: string, groups: string[], series: { name: string; color: string; values: (number | undefined)[] }[]): string {
  const parts = [`<g transform="translate(${ox},${oy})">`, `<rect width="${W}" height="${H}" fill="#fff" stroke="#ccc"/>`,
    text(W / 2, 20, title, `text-anchor="middle" font-weight="bold"`)];
  const vals = series.flatMap((s) => s.values).filter((v): v is number => v !== undefined && Number.isFinite(v));
  if (vals.length === 0) {
    parts.push(text(W / 2, H / 2, "not measured in this run", `text-anchor="middle" fill="#888"`), "</g>");
    return parts.join("");
  }
  const top = Math.max(...vals) * 1.15;
  const py = (v: number) => H - PAD.b - (v / top) * (H - PAD.t - PAD.b);
  for (let i = 0; i <= 4; i++) {
    const t = (top * i) / 4, y = py(t);
    parts.push(`<line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y}" y2="${y}" stroke="#eee"/>`, text(PAD.l - 4, y + 3, niceLabel(t), `text-anchor="end" font-size="10"`));
  }
  const gw = (W - PAD.l - PAD.r) / groups.length, bw = (gw * 0.8) / series.length;
  groups.forEach((g, gi) => {
    const gx = PAD.l + gi * gw + gw * 0.1;
    series.forEach((s, si) => {
      const v = s.values[gi];
      if (v === undefined || !Number.isFinite(v)) return;
      const x = gx + si * bw, y = py(v);
      parts.push(`<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${(H - PAD.b - y).toFixed(1)}" fill="${s.color}"/>`);
    });
    parts.push(text(gx + gw * 0.4, H - PAD.b + 14, g, `text-anchor="middle" font-size="10"`));
  });
  parts.push(text(14, H / 2, yLabel, `text-anchor="middle" font-size="11" transform="rotate(-90 14 ${H / 2})"`));
  series.forEach((s, i) => {
    const ly = PAD.t + 4 + i * 14;
    parts.push(`<rect x="${PAD.l + 8}" y="${ly}" width="10" height="8" fill="${s.color}"/>`, text(PAD.l + 22, ly + 8, s.name, `font-size="10"`));
  });
  parts.push("</g>");
  return parts.join("");
}

const C = { bcopy: "#1f77b4", zcopy: "#d62728", ref: "#2ca02c", ref2: "#9467bd", bun: "#f0a030", deno: "#303030" };

/** The whole chart (2 × 2 panels). */
export function chart(guest: Json, redis: Json): string {
  const t = guest?.transport;
  const pick = (rows: Json[] | undefined, mode: string, key: string): [number, number][] =>
    (rows ?? []).filter((r: Json) => r.mode === mode && r[key] !== undefined).map((r: Json) => [r.size, r[key]]);
  const perf = guest?.perftest ?? {};
  const lat = linePanel(0, 0, "Guest latency (send → return), p50", "µs (log)", [
    { name: "ours bcopy", color: C.bcopy, points: pick(t?.latency, "bcopy", "sendReturnUs") },
    { name: "ours zcopy", color: C.zcopy, points: pick(t?.latency, "zcopy", "sendReturnUs") },
    { name: "ib_read_lat", color: C.ref, dashed: true, points: (perf.readLat ?? []).map((r: Json) => [r.size, r.us]) },
    { name: "ib_send_lat", color: C.ref2, dashed: true, points: (perf.sendLat ?? []).some((r: Json) => Number.isFinite(r.us)) ? [[64, Math.min(...perf.sendLat.filter((r: Json) => Number.isFinite(r.us)).map((r: Json) => r.us))]] : [] },
  ], true);
  const bw = linePanel(W + 20, 0, "Guest throughput (many in flight)", "MB/s", [
    { name: "ours bcopy", color: C.bcopy, points: pick(t?.throughput, "bcopy", "MBps") },
    { name: "ours zcopy", color: C.zcopy, points: pick(t?.throughput, "zcopy", "MBps") },
    { name: "ib_read_bw", color: C.ref, dashed: true, points: (perf.readBw ?? []).filter((r: Json) => r.MBps > 0).map((r: Json) => [r.size, r.MBps]) },
  ], false);
  const setups = ["redis", "none", "transport", "applied"];
  const rs: Json[] = redis?.speed ?? [];
  const cs: number[] = redis?.concurrencies ?? [1, 8];
  const val = (rt: string, setup: string, c: number, key: string) => rs.find((r) => r.runtime === rt && r.setup === setup && r.concurrency === c)?.[key];
  const c0 = cs[0], c1 = cs[cs.length - 1];
  const http = barPanel(0, H + 20, `HTTP p50: Redis store vs withSessions (${c0} user${c0 === 1 ? "" : "s"})`, "ms", setups, [
    { name: "Bun.serve", color: C.bun, values: setups.map((m) => val("bun", m, c0, "p50Ms")) },
    { name: "Deno.serve", color: C.deno, values: setups.map((m) => val("deno", m, c0, "p50Ms")) },
  ]);
  const rps = barPanel(W + 20, H + 20, `HTTP requests/s: Redis store vs withSessions (${c1} users)`, "req/s", setups, [
    { name: "Bun.serve", color: C.bun, values: setups.map((m) => val("bun", m, c1, "rps")) },
    { name: "Deno.serve", color: C.deno, values: setups.map((m) => val("deno", m, c1, "rps")) },
  ]);
  const w = 2 * W + 20, h = 2 * H + 20;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="12">\n${lat}\n${bw}\n${http}\n${rps}\n</svg>\n`;
}
