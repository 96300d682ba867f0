/**
 * A small writer of the Prometheus text exposition format (version 0.0.4):
 * `# HELP` and `# TYPE` once per metric family, samples with escaped label
 * values, and histograms as cumulative `_bucket{le="…"}` series ending in
 * `le="+Inf"`, then `_sum` and `_count`. No dependencies, the same in Bun and
 * Deno.
 *
 * @example
 * ```ts
 * import { Exposition, Histogram } from "./exposition.ts";
 * const latency = new Histogram([0.001, 0.01, 0.1]);
 * latency.observe(0.004);
 * const out = new Exposition();
 * out.counter("app_requests_total", "Requests served.", [[{ route: "/" }, 3]]);
 * out.histogram("app_latency_seconds", "Time to answer.", [[{}, latency.snapshot()]]);
 * console.log(out.text());
 * ```
 *
 * @module
 */

/** The `Content-Type` of the text format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Label names and values of one sample. */
export type Labels = Readonly<Record<string, string>>;

/** A histogram's state: per-bucket upper bounds (ascending, without +Inf), cumulative counts, sum and count. */
export interface HistogramSnapshot {
  /** Upper bounds, strictly ascending and finite; the `+Inf` bucket is implied. */
  readonly bounds: readonly number[];
  /** `cumulative[i]`: observations `<= bounds[i]`. Same length as `bounds`. */
  readonly cumulative: readonly number[];
  readonly sum: number;
  /** All observations (the `+Inf` bucket). */
  readonly count: number;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Escapes HELP text: backslash and line feed (quotes stay as they are). */
export function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** A sample value: integers and decimals as JavaScript prints them, and `+Inf`, `-Inf`, `NaN`. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

function labelText(labels: Labels, extra?: [string, string]): string {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(labels)) {
    if (!LABEL_NAME.test(name) || name.startsWith("__")) throw new RangeError(`invalid label name '${name}'`);
    if (extra && name === extra[0]) throw new RangeError(`label '${name}' is reserved here`);
    parts.push(`${name}="${escapeLabelValue(String(value))}"`);
  }
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

/** Collects metric families and renders them in the text format. A family name may be used once. */
export class Exposition {
  #lines: string[] = [];
  #names = new Set<string>();

  #family(name: string, help: string, type: string): void {
    if (!METRIC_NAME.test(name)) throw new RangeError(`invalid metric name '${name}'`);
    if (this.#names.has(name)) throw new RangeError(`metric '${name}' written twice`);
    this.#names.add(name);
    this.#lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
  }

  #samples(name: string, samples: Iterable<readonly [Labels, number]>): void {
    for (const [labels, value] of samples) this.#lines.push(`${name}${labelText(labels)} ${formatValue(value)}`);
  }

  /** A counter (a total that only goes up); by convention its name ends in `_total`. */
  counter(name: string, help: string, samples: Iterable<readonly [Labels, number]>): this {
    this.#family(name, help, "counter");
    this.#samples(name, samples);
    return this;
  }

  /** A gauge (a value that goes up and down). */
  gauge(name: string, help: string, samples: Iterable<readonly [Labels, number]>): this {
    this.#family(name, help, "gauge");
    this.#samples(name, samples);
    return this;
  }

  /** A histogram: per series, cumulative `_bucket{le}` lines up to `le="+Inf"`, then `_sum` and `_count`. */
  histogram(name: string, help: string, series: Iterable<readonly [Labels, HistogramSnapshot]>): this {
    this.#family(name, help, "histogram");
    for (const [labels, h] of series) {
      checkSnapshot(name, h);
      h.bounds.forEach((bound, i) => {
        this.#lines.push(`${name}_bucket${labelText(labels, ["le", formatValue(bound)])} ${formatValue(h.cumulative[i])}`);
      });
      this.#lines.push(`${name}_bucket${labelText(labels, ["le", "+Inf"])} ${formatValue(h.count)}`);
      this.#lines.push(`${name}_sum${labelText(labels)} ${formatValue(h.sum)}`);
      this.#lines.push(`${name}_count${labelText(labels)} ${formatValue(h.count)}`);
    }
    return this;
  }

  /** A summary: `{quantile="…"}` samples, then `_count` and (when known) `_sum`. */
  summary(
    name: string,
    help: string,
    series: Iterable<readonly [Labels, { quantiles: readonly [number, number][]; count: number; sum?: number }]>,
  ): this {
    this.#family(name, help, "summary");
    for (const [labels, s] of series) {
      for (const [q, v] of s.quantiles) this.#lines.push(`${name}${labelText(labels, ["quantile", formatValue(q)])} ${formatValue(v)}`);
      if (s.sum !== undefined) this.#lines.push(`${name}_sum${labelText(labels)} ${formatValue(s.sum)}`);
      this.#lines.push(`${name}_count${labelText(labels)} ${formatValue(s.count)}`);
    }
    return this;
  }

  /** The exposition: one line per entry, each ending in a line feed. */
  text(): string {
    return this.#lines.length === 0 ? "" : this.#lines.join("\n") + "\n";
  }
}

function checkSnapshot(name: string, h: HistogramSnapshot): void {
  if (h.cumulative.length !== h.bounds.length) throw new RangeError(`histogram '${name}': ${h.bounds.length} bounds but ${h.cumulative.length} counts`);
  for (let i = 0; i < h.bounds.length; i++) {
    if (!Number.isFinite(h.bounds[i]) || (i > 0 && h.bounds[i] <= h.bounds[i - 1])) {
      throw new RangeError(`histogram '${name}': bounds must be finite and strictly ascending`);
    }
    if (i > 0 && h.cumulative[i] < h.cumulative[i - 1]) throw new RangeError(`histogram '${name}': counts must be cumulative`);
  }
  if (h.bounds.length > 0 && h.count < h.cumulative[h.cumulative.length - 1]) {
    throw new RangeError(`histogram '${name}': count below the last bucket`);
  }
}

/** Observations into fixed buckets (upper bounds, ascending). */
export class Histogram {
  readonly bounds: readonly number[];
  #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(bounds: readonly number[]) {
    for (let i = 0; i < bounds.length; i++) {
      if (!Number.isFinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
        throw new RangeError("histogram bounds must be finite and strictly ascending");
      }
    }
    this.bounds = [...bounds];
    this.#counts = new Array(bounds.length).fill(0);
  }

  /** Counts `value` in the first bucket whose bound is `>= value` (and in `+Inf`). */
  observe(value: number): void {
    this.#sum += value;
    this.#count++;
    for (let i = 0; i < this.bounds.length; i++) {
      if (value <= this.bounds[i]) {
        this.#counts[i]++;
        return;
      }
    }
  }

  /** Cumulative counts, as the format wants them. */
  snapshot(): HistogramSnapshot {
    const cumulative: number[] = [];
    let running = 0;
    for (const c of this.#counts) cumulative.push(running += c);
    return { bounds: this.bounds, cumulative, sum: this.#sum, count: this.#count };
  }
}
