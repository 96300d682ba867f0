/**
 * A ring allocator over a fixed region (the zcopy source arena, the sink).
 *
 * Allocations are contiguous ranges taken in ring order; they may be freed in
 * any order, and space is reclaimed from the oldest allocation forward (a
 * range freed early is reused once everything older is freed too). No memory
 * is allocated here beyond the bookkeeping records; the region itself is the
 * caller's (registered once).
 *
 * @module
 */

interface Allocation {
  offset: number;
  length: number;
  freed: boolean;
}

export class RingAllocator {
  readonly size: number;
  #live: Allocation[] = [];
  #first = 0; // index of the oldest live allocation in #live
  readonly #byOffset = new Map<number, Allocation>();

  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`ring size must be a positive integer: got ${size}`);
    this.size = size;
  }

  /** Bytes currently allocated or awaiting reclaim. */
  get inUse(): number {
    let n = 0;
    for (let i = this.#first; i < this.#live.length; i++) n += this.#live[i].length;
    return n;
  }

  /** Number of live (not yet freed) allocations. */
  get count(): number {
    return this.#byOffset.size;
  }

  /** Returns the offset of `length` contiguous bytes, or -1 if they are not available now. */
  alloc(length: number): number {
    if (!Number.isInteger(length) || length < 1 || length > this.size) return -1;
    let offset: number;
    if (this.#first === this.#live.length) {
      this.#live = [];
      this.#first = 0;
      offset = 0;
    } else {
      const first = this.#live[this.#first];
      const last = this.#live[this.#live.length - 1];
      const end = last.offset + last.length;
      if (last.offset >= first.offset) {
        // Not wrapped: free space is [end, size) then [0, first.offset).
        if (end + length <= this.size) offset = end;
        else if (length <= first.offset) offset = 0;
        else return -1;
      } else {
        // Wrapped: free space is [end, first.offset).
        if (end + length <= first.offset) offset = end;
        else return -1;
      }
    }
    const a = { offset, length, freed: false };
    this.#live.push(a);
    this.#byOffset.set(offset, a);
    return offset;
  }

  /** Frees the allocation at `offset`; freeing an unknown offset throws (a bookkeeping bug). */
  free(offset: number): void {
    const a = this.#byOffset.get(offset);
    if (!a) throw new Error(`ring free of offset ${offset}: no live allocation there`);
    this.#byOffset.delete(offset);
    a.freed = true;
    while (this.#first < this.#live.length && this.#live[this.#first].freed) this.#first++;
    if (this.#first > 64 && this.#first * 2 > this.#live.length) {
      this.#live = this.#live.slice(this.#first);
      this.#first = 0;
    }
  }
}
