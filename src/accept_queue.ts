/**
 * The one queue behind every listener's async iterator (rdma_cm requests,
 * rdma/tcp/loopback links): accepted items wait here until a consumer asks.
 *
 * @module
 */
export class AcceptQueue<T> implements AsyncIterable<T> {
  readonly #items: T[] = [];
  readonly #waiters: ((r: IteratorResult<T>) => void)[] = [];
  #closed = false;

  get closed(): boolean {
    return this.#closed;
  }

  /** Hands `item` to a waiting consumer, or queues it. False once closed: the caller disposes of it. */
  push(item: T): boolean {
    if (this.#closed) return false;
    const w = this.#waiters.shift();
    if (w) w({ value: item, done: false });
    else this.#items.push(item);
    return true;
  }

  /** Ends iteration for every consumer; returns the items nobody took, for the caller to dispose of. */
  close(): T[] {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w({ value: undefined, done: true });
    return this.#items.splice(0);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#items.length) return Promise.resolve({ value: this.#items.shift()!, done: false });
    if (this.#closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((r) => this.#waiters.push(r));
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return { next: () => this.next() };
  }
}
