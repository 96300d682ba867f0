/**
 * Bun's native TCP sockets (`Bun.connect`, `Bun.listen`) as the byte stream
 * under the tcp link, in place of `node:net`, whose streams Bun builds in
 * JavaScript on top of the same sockets (their write path was the largest
 * single cost of a replicated update in a Bun profile). Used under Bun for
 * plain tcp; TLS, and every Deno run, stay on `node:net`/`node:tls`.
 * `RDMA_TCP_DRIVER=node` turns it off (for comparisons).
 *
 * `BunStream` is the part of `net.Socket` the link uses (`StreamSocket`),
 * with the same meaning:
 *
 * - created paused: bytes that arrive before `resume()` are kept (copied, in
 *   order) and handed out on `resume()`;
 * - `write(data, done)` takes the whole buffer: what the kernel does not take
 *   at once (`write` returned less) is kept, in order, and written on
 *   `drain`; `done` is called, asynchronously and in write order, once all of
 *   a buffer's bytes are in the kernel (the caller may then reuse it), or
 *   with an error if the connection closed first;
 * - events `data`, `end` (the peer's FIN), `error`, and `close` (once, last);
 * - `end()` sends FIN after the kept bytes, `destroy()` closes at once.
 *
 * @module
 */

/** What the tcp link needs of a stream socket: a subset of `net.Socket`. */
export interface StreamSocket {
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  readonly destroyed: boolean;
  setNoDelay(noDelay: boolean): unknown;
  pause(): unknown;
  resume(): unknown;
  write(data: Uint8Array, done: (error?: Error | null) => void): unknown;
  end(): unknown;
  destroy(): unknown;
  on(event: "data", listener: (chunk: Uint8Array) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "end" | "close", listener: () => void): unknown;
  once(event: "close", listener: () => void): unknown;
}

interface NativeSocket {
  data: BunStream | undefined;
  readonly remoteAddress: string;
  readonly remotePort?: number;
  write(data: Uint8Array, byteOffset?: number, byteLength?: number): number;
  end(): unknown;
  terminate(): unknown;
  setNoDelay(noDelay?: boolean): unknown;
}

interface NativeListener {
  readonly port: number;
  stop(closeActiveConnections?: boolean): void;
}

interface Handlers {
  open(s: NativeSocket): void;
  data(s: NativeSocket, chunk: Uint8Array): void;
  drain(s: NativeSocket): void;
  end(s: NativeSocket): void;
  close(s: NativeSocket, error?: Error): void;
  error(s: NativeSocket, error: Error): void;
}

interface BunNet {
  connect(options: { hostname: string; port: number; socket: Handlers }): Promise<NativeSocket>;
  listen(options: { hostname: string; port: number; socket: Handlers }): NativeListener;
}

const bun = (globalThis as { Bun?: BunNet }).Bun;
const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;

/** Whether the tcp link runs on Bun's native sockets here (Bun, and `RDMA_TCP_DRIVER` is not `node`). */
export const nativeTcp: boolean = bun !== undefined && env?.RDMA_TCP_DRIVER !== "node";

type Listener = (...args: never[]) => void;

/** One pending write: the bytes from `at` on are not in the kernel yet. */
interface Pending {
  data: Uint8Array;
  at: number;
  done: (error?: Error | null) => void;
}

/** A native socket with the `StreamSocket` interface (module notes). */
export class BunStream implements StreamSocket {
  readonly #s: NativeSocket;
  readonly remoteAddress: string;
  readonly remotePort: number | undefined;
  #destroyed = false;
  #closed = false;
  #ending = false;
  #paused = true;
  #early: Uint8Array[] = [];
  #earlyEnd = false;
  #pending: Pending[] = [];
  /** Writes whose bytes are all in the kernel, waiting for their `done` (called on a microtask, in order). */
  #completed: ((error?: Error | null) => void)[] = [];
  #completing = false;
  readonly #listeners: Record<string, Listener[]> = { data: [], error: [], end: [], close: [] };
  readonly #runCompleted = () => this.#callCompleted();

  constructor(s: NativeSocket) {
    this.#s = s;
    s.data = this;
    this.remoteAddress = s.remoteAddress;
    this.remotePort = s.remotePort;
  }

  get destroyed(): boolean {
    return this.#destroyed || this.#closed;
  }

  setNoDelay(noDelay: boolean): void {
    this.#s.setNoDelay(noDelay);
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    const early = this.#early;
    this.#early = [];
    for (const chunk of early) {
      if (this.#paused || this.#closed) return;
      this.#emit("data", chunk);
    }
    if (this.#earlyEnd) {
      this.#earlyEnd = false;
      this.#emit("end");
    }
  }

  on(event: string, listener: Listener): this {
    this.#listeners[event]?.push(listener);
    return this;
  }

  once(event: "close", listener: () => void): this {
    const once = () => {
      const list = this.#listeners[event];
      const i = list.indexOf(once);
      if (i >= 0) list.splice(i, 1);
      listener();
    };
    return this.on(event, once);
  }

  write(data: Uint8Array, done: (error?: Error | null) => void): void {
    if (this.destroyed || this.#ending) {
      this.#complete(done, new Error("write after the connection ended"));
      return;
    }
    if (this.#pending.length === 0) {
      const n = this.#s.write(data);
      if (n === data.length) return this.#complete(done);
      if (n < 0) {
        this.#complete(done, new Error("the connection closed"));
        return;
      }
      this.#pending.push({ data, at: n, done });
      return;
    }
    this.#pending.push({ data, at: 0, done });
  }

  end(): void {
    if (this.#ending || this.destroyed) return;
    this.#ending = true;
    if (this.#pending.length === 0) this.#s.end();
  }

  destroy(): void {
    if (this.destroyed) return;
    this.#destroyed = true;
    this.#s.terminate();
    // Bun reports the close of a terminated socket; if it does not, the stream closes here.
    queueMicrotask(() => this.#onClose(undefined));
  }

  /** @internal the kernel takes more. */
  _drain(): void {
    const pending = this.#pending;
    while (pending.length > 0) {
      const p = pending[0];
      const left = p.data.length - p.at;
      const n = this.#s.write(p.data, p.at, left);
      if (n < 0) return;
      if (n < left) {
        p.at += n;
        return;
      }
      pending.shift();
      this.#complete(p.done);
    }
    if (this.#ending && !this.destroyed) this.#s.end();
  }

  /** @internal bytes from the peer. */
  _data(chunk: Uint8Array): void {
    if (this.destroyed) return;
    if (this.#paused) this.#early.push(chunk.slice());
    else this.#emit("data", chunk);
  }

  /** @internal the peer's FIN. */
  _end(): void {
    if (this.destroyed) return;
    if (this.#paused) this.#earlyEnd = true;
    else this.#emit("end");
  }

  /** @internal a socket error. */
  _error(error: Error): void {
    if (this.#closed) return;
    this.#emit("error", error);
  }

  /** @internal the socket closed (also after `destroy`); Bun may report it inside `end()`, `node:net` never does. */
  _close(error: Error | undefined): void {
    queueMicrotask(() => this.#onClose(error));
  }

  #onClose(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    const failed = new Error(`the connection closed${error ? `: ${error.message}` : ""}`, { cause: error });
    for (const p of this.#pending.splice(0)) this.#complete(p.done, failed);
    this.#emit("close");
  }

  #complete(done: (error?: Error | null) => void, error?: Error): void {
    this.#completed.push(error === undefined ? done : () => done(error));
    if (!this.#completing) {
      this.#completing = true;
      queueMicrotask(this.#runCompleted);
    }
  }

  #callCompleted(): void {
    this.#completing = false;
    const list = this.#completed;
    this.#completed = [];
    for (let i = 0; i < list.length; i++) list[i]();
  }

  #emit(event: string, arg?: unknown): void {
    // A `once` listener takes itself out while the list is walked: walk a copy (not for data).
    const list = event === "data" ? this.#listeners.data : this.#listeners[event].slice();
    for (let i = 0; i < list.length; i++) (list[i] as (a?: unknown) => void)(arg);
  }
}

function handlers(onOpen: (stream: BunStream) => void): Handlers {
  return {
    open: (s) => onOpen(new BunStream(s)),
    data: (s, chunk) => s.data?._data(chunk),
    drain: (s) => s.data?._drain(),
    end: (s) => s.data?._end(),
    close: (s, error) => s.data?._close(error),
    error: (s, error) => s.data?._error(error),
  };
}

/** Connects a native socket; rejects with the runtime's error. */
export async function connectNative(host: string, port: number): Promise<BunStream> {
  // `open` makes the stream (it sets `s.data`) before the connect resolves.
  const s = await bun!.connect({ hostname: host, port, socket: handlers(() => {}) });
  return s.data ?? new BunStream(s);
}

/** Listens with native sockets; `onStream` gets each accepted connection (paused). */
export function listenNative(host: string, port: number, onStream: (stream: BunStream) => void): NativeListener {
  return bun!.listen({ hostname: host, port, socket: handlers(onStream) });
}
