/**
 * Turns the saved results (bench/results/host.json, guest.json) into the
 * stdout tables, the Markdown figures of bench/README.md and the SVG chart.
 * Every comparison is a ratio of two figures measured in the same run.
 *
 * @module
 */
import type { FfiResult } from "./ffi.ts";
import { fmtNs } from "./lib.ts";
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

/** Everything `run.ts` prints and writes. */
export function render(host: Json, guest: Json): { text: string; markdown: string; svg: string } {
  const sections: Section[] = [];
  const add = (s: Section | undefined) => s && sections.push(s);
  add(ffiSection("FFI overhead on the host (no device)", host?.ffi));
  add(ffiSection("FFI and verbs overhead in the guest (real rxe connection; emulated CPU)", guest?.ffi));
  const text = sections.map((s) => textTable(s.title, s.head, s.rows) + (s.note ? `\n${s.note}` : "")).join("\n");
  const markdown = sections.map((s) => `#### ${s.title}\n\n${markdownTable(s.head, s.rows)}${s.note ? `\n\n${s.note}` : ""}`).join("\n\n");
  return { text, markdown, svg: chart(host, guest) };
}
