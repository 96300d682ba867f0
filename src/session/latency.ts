/**
 * `LatencyRecorder`: keeps replication latencies (a bounded reservoir) and
 * reports percentiles.
 *
 * @module
 */

/** Percentiles of recorded latencies, in milliseconds. */
export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/**
 * Records latencies in ms. Keeps every sample up to `capacity`, then a uniform
 * random reservoir of that size (Vitter's algorithm R), so memory is bounded.
 */
export class LatencyRecorder {
  #samples: number[] = [];
  #count = 0;
  #max = 0;
  readonly capacity: number;

  constructor(capacity = 100_000) {
    this.capacity = capacity;
  }

  record(ms: number): void {
    this.#count++;
    if (ms > this.#max) this.#max = ms;
    if (this.#samples.length < this.capacity) {
      this.#samples.push(ms);
      return;
    }
    const slot = Math.floor(Math.random() * this.#count);
    if (slot < this.capacity) this.#samples[slot] = ms;
  }

  /** Nearest-rank percentiles; zeros when nothing was recorded. */
  summary(): LatencySummary {
    const sorted = [...this.#samples].sort((a, b) => a - b);
    const at = (p: number) => sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
    return { count: this.#count, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: this.#max };
  }
}
