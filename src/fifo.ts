/**
 * A first-in first-out queue on a ring that grows by doubling and never
 * shrinks, for the queues of the data path that empty and refill once per
 * message (the engine's send queue, the socket's readers, the loopback
 * scheduler's channels).
 *
 * Why not an array with `push`/`shift`: under V8 (Deno) an array that
 * `shift()` empties drops its backing store, and the next `push` allocates a
 * new one (~150 B; measured: 156 B per push/shift cycle, 3 B for an array
 * that keeps one element). A queue that goes 0 → 1 → 0 per message paid that
 * on every message. JSC (Bun) keeps the store, so there it changes nothing.
 *
 * @module
 */
export class Fifo<T> {
  #ring: (T | undefined)[];
  #mask: number;
  #head = 0;
  #size = 0;

  /** `capacity`: the initial ring size, rounded up to a power of two. */
  constructor(capacity = 8) {
    let n = 2;
    while (n < capacity) n *= 2;
    this.#ring = new Array<T | undefined>(n).fill(undefined);
    this.#mask = n - 1;
  }

  get length(): number {
    return this.#size;
  }

  /** Adds `v` at the tail. */
  push(v: T): void {
    if (this.#size === this.#ring.length) this.#grow();
    this.#ring[(this.#head + this.#size++) & this.#mask] = v;
  }

  /** Adds `v` at the head (it is the next `shift`). */
  unshift(v: T): void {
    if (this.#size === this.#ring.length) this.#grow();
    this.#head = (this.#head - 1) & this.#mask;
    this.#ring[this.#head] = v;
    this.#size++;
  }

  /** Removes and returns the head, or `undefined` when empty. */
  shift(): T | undefined {
    if (this.#size === 0) return undefined;
    const v = this.#ring[this.#head];
    this.#ring[this.#head] = undefined; // not kept alive by the ring
    this.#head = (this.#head + 1) & this.#mask;
    this.#size--;
    return v;
  }

  /** The head without removing it, or `undefined` when empty. */
  peek(): T | undefined {
    return this.#size === 0 ? undefined : this.#ring[this.#head];
  }

  /** Removes the first element that is `v` (order of the rest kept); false if absent. */
  remove(v: T): boolean {
    const ring = this.#ring, mask = this.#mask;
    for (let i = 0; i < this.#size; i++) {
      if (ring[(this.#head + i) & mask] !== v) continue;
      for (let k = i; k < this.#size - 1; k++) ring[(this.#head + k) & mask] = ring[(this.#head + k + 1) & mask];
      ring[(this.#head + --this.#size) & mask] = undefined;
      return true;
    }
    return false;
  }

  /** Empties the queue and returns its elements, head first. */
  drain(): T[] {
    const out: T[] = [];
    while (this.#size > 0) out.push(this.shift()!);
    return out;
  }

  #grow(): void {
    const old = this.#ring, n = old.length;
    const ring = new Array<T | undefined>(n * 2).fill(undefined);
    for (let i = 0; i < this.#size; i++) ring[i] = old[(this.#head + i) & (n - 1)];
    this.#ring = ring;
    this.#mask = n * 2 - 1;
    this.#head = 0;
  }
}
