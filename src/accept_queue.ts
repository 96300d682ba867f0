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

/** Limits of `acceptConcurrently`. */
export interface HandshakeLimits {
  /** Handshakes in progress at once; a request beyond it is refused at once. @default 8 */
  maxHandshakes?: number;
  /** How long one handshake may take (given to `accept`, which must honour it). @default 10000 */
  handshakeTimeoutMs?: number;
}

export const HANDSHAKE_DEFAULTS = { maxHandshakes: 8, handshakeTimeoutMs: 10000 } as const;

/** Checks `HandshakeLimits`, naming the option and the bad value. */
export function handshakeLimits(o: HandshakeLimits): Required<HandshakeLimits> {
  const l = {
    maxHandshakes: o.maxHandshakes ?? HANDSHAKE_DEFAULTS.maxHandshakes,
    handshakeTimeoutMs: o.handshakeTimeoutMs ?? HANDSHAKE_DEFAULTS.handshakeTimeoutMs,
  };
  if (!Number.isInteger(l.maxHandshakes) || l.maxHandshakes < 1 || l.maxHandshakes > 65535) {
    throw new RangeError(`'maxHandshakes' must be an integer in 1..65535: got ${l.maxHandshakes}`);
  }
  if (!Number.isInteger(l.handshakeTimeoutMs) || l.handshakeTimeoutMs < 1 || l.handshakeTimeoutMs > 0x7fffffff) {
    throw new RangeError(`'handshakeTimeoutMs' must be an integer in 1..2147483647: got ${l.handshakeTimeoutMs}`);
  }
  return l;
}

/** What `acceptConcurrently` does with each request. */
export interface ConcurrentAccept<R, T> {
  /** Runs one handshake within `timeoutMs`; resolves with the accepted item, or rejects. */
  accept(request: R, timeoutMs: number): Promise<T>;
  /** Refuses a request beyond the cap, or one that arrives after `close`. */
  refuse(request: R): void;
  /** Disposes of an item accepted after `close`. */
  dispose(item: T): void;
  /** Told of each failed handshake (the listener goes on). */
  failed?(request: R, error: Error): void;
}

/**
 * Accepts the requests of `requests` concurrently, at most `maxHandshakes` at
 * a time (beyond that a request is refused at once, so a flood of requests
 * that never finish holds at most that many handshakes' resources), each
 * within `handshakeTimeoutMs`; accepted items come out of the returned queue
 * in the order their handshakes finish. One slow or failed handshake delays
 * no other. `close()` stops: later requests are refused, items accepted later
 * are disposed of, and the queue's leftovers are returned.
 */
export function acceptConcurrently<R, T>(
  requests: AsyncIterable<R>,
  how: ConcurrentAccept<R, T>,
  limits: HandshakeLimits = {},
): { queue: AcceptQueue<T>; readonly inHandshake: number; close(): T[] } {
  const { maxHandshakes, handshakeTimeoutMs } = handshakeLimits(limits);
  const queue = new AcceptQueue<T>();
  let inHandshake = 0;
  (async () => {
    for await (const r of requests) {
      if (queue.closed || inHandshake >= maxHandshakes) {
        how.refuse(r);
        continue;
      }
      inHandshake++;
      let accepted: Promise<T>;
      try {
        accepted = how.accept(r, handshakeTimeoutMs);
      } catch (e) {
        accepted = Promise.reject(e);
      }
      accepted.then(
        (item) => {
          inHandshake--;
          if (!queue.push(item)) how.dispose(item);
        },
        (e: unknown) => {
          inHandshake--;
          how.failed?.(r, e instanceof Error ? e : new Error(String(e)));
        },
      );
    }
  })().catch(() => {
    for (const t of queue.close()) how.dispose(t); // the request source failed: nothing more comes
  });
  return {
    queue,
    get inHandshake() {
      return inHandshake;
    },
    close: () => queue.close(),
  };
}
