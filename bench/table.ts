/**
 * Plain-text and Markdown tables for the benchmark report (no dependencies).
 *
 * @module
 */

export type Cell = string | number | undefined | null;

function cell(v: Cell): string {
  if (v === undefined || v === null || (typeof v === "number" && !Number.isFinite(v))) return "–";
  return typeof v === "number" ? String(v) : v;
}

/** A table aligned with spaces, for stdout. */
export function textTable(title: string, head: string[], rows: Cell[][]): string {
  const all = [head, ...rows.map((r) => r.map(cell))];
  const widths = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [`\n== ${title}`, line(head), widths.map((w) => "-".repeat(w)).join("  "), ...all.slice(1).map(line)].join("\n");
}

/** A GitHub Markdown table. */
export function markdownTable(head: string[], rows: Cell[][]): string {
  const esc = (s: string) => s.replaceAll("|", "\\|");
  return [
    `| ${head.map(esc).join(" | ")} |`,
    `| ${head.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
    ...rows.map((r) => `| ${r.map((c) => esc(cell(c))).join(" | ")} |`),
  ].join("\n");
}

/** `a / b` as "1.23×", or "–". */
export function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return "–";
  const r = a / b;
  return `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}×`;
}
