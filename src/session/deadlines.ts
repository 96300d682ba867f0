/**
 * One timer for the ack bounds of many replications, instead of a
 * `setTimeout` (and a `Promise.race`) per update.
 *
 * Deadlines are kept in one FIFO queue per bound length: within a queue they
 * arrive in time order (now + the same bound), so adding and cancelling cost
 * O(1): a cancelled entry stays in its queue until it reaches the head, and
 * the cancelled heads are dropped on the next `add` (acks mostly come back in
 * send order), so a queue holds about the deadlines still in flight. One
 * timer is armed for the earliest head; it exists only while a deadline is
 * pending. The queues are rings (`Fifo`): one that empties and refills per
 * update allocates nothing for it.
 *
 * @module
 */
import { Fifo } from "../fifo.ts";


class Entry {
  constructor(readonly at: number, public fire: (() => void) | undefined) {}
  cancel(): void {
    this.fire = undefined;
  }
}

/** A pending deadline; `cancel()` before it fires, and it never fires. */
export interface Deadline {
  cancel(): void;
}

export class Deadlines {
  #queues = new Map<number, Fifo<Entry>>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #armedFor = Infinity;
  #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Calls `fire` once `boundMs` have passed since `start` (the caller's clock reading), unless cancelled. */
  add(boundMs: number, start: number, fire: () => void): Deadline {
    const entry = new Entry(start + boundMs, fire);
    let queue = this.#queues.get(boundMs);
    if (queue === undefined) this.#queues.set(boundMs, queue = new Fifo());
    else trim(queue);
    queue.push(entry);
    if (entry.at < this.#armedFor) this.#arm(entry.at);
    return entry;
  }

  /** Number of deadlines not yet fired or skipped (cancelled ones count until they reach the head). */
  get pending(): number {
    let n = 0;
    for (const q of this.#queues.values()) n += q.length;
    return n;
  }

  #arm(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#armedFor = at;
    this.#timer = setTimeout(() => this.#run(), Math.max(0, at - this.#now()));
  }

  #run(): void {
    this.#timer = undefined;
    this.#armedFor = Infinity;
    const now = this.#now();
    // Due entries fire in deadline order across queues (a late timer may find several due).
    for (;;) {
      let first: Fifo<Entry> | undefined;
      for (const q of this.#queues.values()) {
        trim(q);
        const h = q.peek();
        if (h !== undefined && h.at <= now && (first === undefined || h.at < first.peek()!.at)) first = q;
      }
      if (first === undefined) break;
      const e = first.shift()!;
      const fire = e.fire;
      e.fire = undefined;
      fire?.();
    }
    let next = Infinity;
    for (const [bound, q] of this.#queues) {
      const h = q.peek();
      if (h === undefined) {
        this.#queues.delete(bound);
        continue;
      }
      next = Math.min(next, h.at);
    }
    if (next < Infinity) this.#arm(next);
  }
}

/**
 * Drops the cancelled entries at the head of `q` (acks mostly come back in
 * send order, so they are usually all of its settled ones): a queue holds
 * about the deadlines still in flight, not every update of the last bound's
 * length.
 */
function trim(q: Fifo<Entry>): void {
  for (let h = q.peek(); h !== undefined && h.fire === undefined; h = q.peek()) q.shift();
}
