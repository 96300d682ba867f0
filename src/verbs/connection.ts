/**
 * An RC connection's queue pair: registered memory (`registerMemory`,
 * `registerRange`), posts (SEND, RECV, RDMA READ/WRITE) and their
 * completions, and the ordered teardown. How a connection comes to exist
 * (resolve, connect, listen/accept, the CM events and their timers) is cm.ts.
 *
 * Closure: DISCONNECTED (peer or local `close()`) settles every pending
 * operation (flush completions first, then ConnectionClosedError), then frees
 * in reverse order: memory regions, QP + CQ + PD, cm id.
 *
 * Work requests carry a 32-bit token. Bit 31 marks operations owned by this
 * file's promises; bit 30 marks receives; the low 30 bits are the caller's.
 *
 * @module
 */
import type { Binding, Ptr } from "../../ffi/mod.ts";
import { CompletionRing, readConnInfo, RECORD_SIZES } from "../../ffi/mod.ts";
import { ConnectionClosedError, unwrap, WorkCompletionError } from "./errors.ts";
import { type Access, MemoryRegion } from "./memory.ts";
import { RemoteRange } from "./remote_range.ts";
import { create, destroyId, type Handle, idAddress } from "./native.ts";
import { CM, type CmEvent, type Progress } from "./progress.ts";

const PROMISE_BIT = 0x80000000;
const RECV_BIT = 0x40000000;
const USER_MASK = 0x3fffffff;
const SIGNALED = 1;
const WR_FLUSH_ERR = 5;

export const OPCODE = { SEND: 0, RDMA_WRITE: 1, RDMA_READ: 2, RECV: 128, OTHER: 255 } as const;

/** One completion, as handed to `onCompletion` for caller-owned tokens. */
export interface Completion {
  /** The caller's token (low 30 bits). */
  token: number;
  /** True for receives. */
  recv: boolean;
  /** ibv_wc_status; 0 is success. */
  status: number;
  opcode: number;
  byteLength: number;
  vendorErr: number;
}

export interface ConnectionOptions {
  /** Send queue depth (sends, reads and writes in flight). @default 128 */
  sendDepth?: number;
  /** Receive queue depth. @default 128 */
  recvDepth?: number;
  /** Inline data size asked for; the device may grant more. @default 64 */
  maxInline?: number;
  /** Private data for the peer (connect: up to 56 bytes; accept: up to 196). */
  privateData?: Uint8Array;
  /**
   * Called once resources exist and before the peer can send: register memory,
   * post receives. What it returns, if anything, is sent as the private data
   * (so a region's address and rkey can travel with the connection itself).
   */
  prepare?: (conn: RdmaConnection) => Uint8Array | void;
}

type Pending = { resolve: (n: number) => void; reject: (e: Error) => void; op: string };

/** An RC connection with its own PD, CQ and QP. */
export class RdmaConnection {
  readonly #progress: Progress;
  readonly #shim: Binding;
  readonly #id: Handle;
  #conn: Handle | undefined;
  readonly #regions = new Set<MemoryRegion>();
  readonly #ranges = new Set<RemoteRange>();
  readonly #pending = new Map<number, Pending>();
  readonly #ring: CompletionRing;
  #nextToken = 0;
  #established = false;
  #closing = false;
  #resolveClosed!: (e: Error | undefined) => void;
  readonly cqFd: number;
  readonly qpNum: number;
  /** Inline size granted: sends up to this size are copied into the work request. */
  readonly maxInline: number;
  readonly sendDepth: number;
  readonly recvDepth: number;
  /** Private data the peer sent with its request or acceptance. */
  privateData: Uint8Array = new Uint8Array(0);
  /** Resolves once the connection is closed and its resources freed: `undefined` for a local close. */
  readonly closed: Promise<Error | undefined>;
  /** Receives completions of caller-owned tokens (`post*`). */
  onCompletion: ((c: Completion) => void) | undefined;
  /**
   * Called once by `close()` after pending operations are settled and before
   * any memory region is freed: the last moment to copy data out of them.
   */
  onClosing: ((reason: Error | undefined) => void) | undefined;

  /** @internal use `connect()` or `ConnectionRequest.accept()`. */
  constructor(progress: Progress, id: Handle, opts: ConnectionOptions) {
    this.#progress = progress;
    this.#shim = progress.shim;
    this.#id = id;
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    const fn = this.#shim.fn;
    this.#conn = create(this.#shim, "rdma_create_qp", (o) =>
      fn.shim_conn_create(id.ptr, opts.sendDepth ?? 128, opts.recvDepth ?? 128, opts.maxInline ?? 64, o));
    const info = new Uint8Array(RECORD_SIZES.connInfo);
    fn.shim_conn_info(this.#conn.ptr, info);
    const ci = readConnInfo(info);
    this.qpNum = ci.qpNum;
    this.maxInline = ci.maxInline;
    this.sendDepth = ci.sendDepth;
    this.recvDepth = ci.recvDepth;
    this.cqFd = ci.cqFd;
    this.#ring = new CompletionRing(this.#shim.view(ci.ringAddress, ci.ringCapacity * RECORD_SIZES.wc), ci.ringCapacity);
  }

  get localAddress(): string {
    return idAddress(this.#shim, this.#id.ptr, false);
  }

  get remoteAddress(): string {
    return idAddress(this.#shim, this.#id.ptr, true);
  }

  get isClosed(): boolean {
    return this.#closing;
  }

  /** Unsafe: the native `struct shim_conn *`, valid until close. */
  get unsafeHandle(): Ptr {
    return this.#live("unsafeHandle");
  }

  /** Registers `length` bytes of C-allocated memory on this connection's protection domain. */
  registerMemory(length: number, access: Access): MemoryRegion {
    const mr = new MemoryRegion(this.#shim, this.#live("registerMemory"), length, access, (m) => this.#regions.delete(m));
    this.#regions.add(mr);
    return mr;
  }

  /**
   * Registers `mr[off, off+len)` again on its own with `access`: its `rkey`
   * opens exactly those bytes until the range is closed (see remote_range.ts).
   * Ranges still open at `close()` are closed before any region.
   */
  registerRange(mr: MemoryRegion, off: number, len: number, access: Access): RemoteRange {
    const r = new RemoteRange(this.#shim, this.#live("registerRange"), mr, off, len, access, (x) => this.#ranges.delete(x));
    this.#ranges.add(r);
    return r;
  }

  // ---- caller-owned tokens: completions go to onCompletion ----------------

  /** Posts a SEND of `mr[off, off+len)`. Inline when it fits. */
  postSend(mr: MemoryRegion, off: number, len: number, token: number, signaled = true): void {
    this.#post("ibv_post_send", signaled, () =>
      this.#shim.fn.shim_post_send(this.#live("postSend"), mr.unsafeHandle, off, len, token & USER_MASK, signaled ? SIGNALED : 0));
  }

  postRecv(mr: MemoryRegion, off: number, len: number, token: number): void {
    unwrap("ibv_post_recv", this.#shim.fn.shim_post_recv(this.#live("postRecv"), mr.unsafeHandle, off, len, (token & USER_MASK) | RECV_BIT));
  }

  /** Posts an RDMA READ of `len` bytes at the peer's `remote` address into `mr[off, ...)`. */
  postRead(mr: MemoryRegion, off: number, len: number, remote: bigint, rkey: number, token: number): void {
    this.#post("ibv_post_send(RDMA_READ)", true, () =>
      this.#shim.fn.shim_post_read(this.#live("postRead"), mr.unsafeHandle, off, len, Number(remote >> 32n), Number(remote & 0xffffffffn), rkey >>> 0, token & USER_MASK, SIGNALED));
  }

  postWrite(mr: MemoryRegion, off: number, len: number, remote: bigint, rkey: number, token: number): void {
    this.#post("ibv_post_send(RDMA_WRITE)", true, () =>
      this.#shim.fn.shim_post_write(this.#live("postWrite"), mr.unsafeHandle, off, len, Number(remote >> 32n), Number(remote & 0xffffffffn), rkey >>> 0, token & USER_MASK, SIGNALED));
  }

  // ---- promise operations ---------------------------------------------------

  /** Sends `mr[off, off+len)`; resolves on the send completion (the bytes are in the peer's memory). */
  send(mr: MemoryRegion, off: number, len: number): Promise<void> {
    return this.#promise("send", (t) =>
      this.#post("ibv_post_send", true, () => this.#shim.fn.shim_post_send(this.#live("send"), mr.unsafeHandle, off, len, t, SIGNALED))).then(() => {});
  }

  /** Posts a receive into `mr[off, off+len)`; resolves with the received byte count. */
  receive(mr: MemoryRegion, off: number, len: number): Promise<number> {
    return this.#promise("receive", (t) =>
      unwrap("ibv_post_recv", this.#shim.fn.shim_post_recv(this.#live("receive"), mr.unsafeHandle, off, len, t)), RECV_BIT);
  }

  /** RDMA READ of the peer's `remote`/`rkey` into `mr[off, off+len)`. */
  read(mr: MemoryRegion, off: number, len: number, remote: bigint, rkey: number): Promise<void> {
    return this.#promise("RDMA READ", (t) =>
      this.#post("ibv_post_send(RDMA_READ)", true, () =>
        this.#shim.fn.shim_post_read(this.#live("read"), mr.unsafeHandle, off, len, Number(remote >> 32n), Number(remote & 0xffffffffn), rkey >>> 0, t, SIGNALED))).then(() => {});
  }

  /** RDMA WRITE of `mr[off, off+len)` to the peer's `remote`/`rkey`. */
  write(mr: MemoryRegion, off: number, len: number, remote: bigint, rkey: number): Promise<void> {
    return this.#promise("RDMA WRITE", (t) =>
      this.#post("ibv_post_send(RDMA_WRITE)", true, () =>
        this.#shim.fn.shim_post_write(this.#live("write"), mr.unsafeHandle, off, len, Number(remote >> 32n), Number(remote & 0xffffffffn), rkey >>> 0, t, SIGNALED))).then(() => {});
  }

  /**
   * Disconnects, settles every pending operation and frees memory regions, QP,
   * CQ, PD and the cm id. Idempotent; returns `closed`.
   */
  close(reason?: Error): Promise<Error | undefined> {
    if (this.#closing) return this.closed;
    this.#closing = true;
    const shim = this.#shim;
    const conn = this.#conn!;
    if (this.#established) shim.fn.shim_id_disconnect(this.#id.ptr);
    this.#established = false;
    // Flush completions are normal here: collect what the QP already reported, then fail the rest.
    this.poll();
    const err = reason ?? new ConnectionClosedError("connection closed");
    for (const p of this.#pending.values()) p.reject(new ConnectionClosedError(`${p.op} did not complete: ${err.message}`, { cause: err }));
    this.#pending.clear();
    this.#progress.remove(this);
    try {
      this.onClosing?.(reason);
    } catch (e) {
      console.error("onClosing handler threw:", e);
    }
    // Every step runs even when one fails: a region whose deregistration failed stays
    // registered and counted (registeredBytes), the shim frees all it can, and `closed`
    // still resolves. Failures are reported, not thrown into the event that closed us.
    const failures: unknown[] = [];
    for (const r of [...this.#ranges]) {
      try {
        r.close();
      } catch (e) {
        failures.push(e);
      }
    }
    for (const mr of [...this.#regions]) {
      try {
        mr.close();
      } catch (e) {
        failures.push(e);
      }
    }
    this.#conn = undefined;
    try {
      unwrap("shim_conn_destroy", shim.fn.shim_conn_destroy(conn.ptr));
    } catch (e) {
      failures.push(e);
    }
    const who = failures.length > 0 ? this.#peerName() : ""; // while the id is still alive
    destroyId(shim, this.#progress, this.#id);
    this.#progress.release();
    for (const e of failures) console.error(`rdma: tearing down the connection to ${who}:`, (e as Error).message ?? e);
    this.#resolveClosed(reason);
    return this.closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close().then(() => {});
  }

  #peerName(): string {
    try {
      return this.remoteAddress;
    } catch {
      return "?";
    }
  }

  // ---- progress interface -----------------------------------------------------

  /** @internal */
  arm(): void {
    if (this.#conn) this.#shim.fn.shim_arm(this.#conn.ptr);
  }

  /** @internal */
  ackEvents(): void {
    if (this.#conn) this.#shim.fn.shim_ack_events(this.#conn.ptr);
  }

  /** @internal Polls in batches and dispatches; returns completions handled. */
  poll(): number {
    let total = 0;
    const r = this.#ring;
    for (;;) {
      if (!this.#conn) return total;
      const n = this.#shim.fn.shim_poll(this.#conn.ptr, r.capacity);
      if (n <= 0) return total;
      let fatal: WorkCompletionError | undefined;
      for (let i = 0; i < n; i++) {
        const token = r.token(i);
        const status = r.status(i);
        const opcode = r.opcode(i);
        const byteLength = r.byteLength(i);
        const vendorErr = r.vendorErr(i);
        const recv = (token & RECV_BIT) !== 0;
        if ((token & PROMISE_BIT) !== 0) {
          const p = this.#pending.get(token);
          if (!p) continue;
          this.#pending.delete(token);
          if (status === 0) p.resolve(byteLength);
          else if (status === WR_FLUSH_ERR) {
            p.reject(new ConnectionClosedError(`${p.op} did not complete: the connection is closing (work request flushed)`));
          } else {
            const e = new WorkCompletionError(p.op, status, vendorErr);
            fatal ??= e;
            p.reject(e);
          }
        } else if (this.onCompletion) {
          this.onCompletion({ token: token & USER_MASK, recv, status, opcode, byteLength, vendorErr });
          if (status !== 0 && status !== WR_FLUSH_ERR) fatal ??= new WorkCompletionError(recv ? "receive" : "work request", status, vendorErr);
        }
      }
      total += n;
      // An error completion moves an RC queue pair to the error state: the connection is over.
      if (fatal && !this.#closing) {
        this.close(new ConnectionClosedError(`connection failed: ${fatal.message}`, { cause: fatal }));
        return total;
      }
      if (n < r.capacity) return total;
    }
  }

  // ---- internals ------------------------------------------------------------

  #live(op: string): Ptr {
    if (this.#closing || !this.#conn) throw new ConnectionClosedError(`${op} on a closed connection`);
    return this.#conn.ptr;
  }

  #post(op: string, signaled: boolean, call: () => number): void {
    unwrap(op, call());
    if (signaled) this.#progress.kick();
  }

  #promise(op: string, post: (token: number) => void, kind = 0): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const token = (PROMISE_BIT | kind | (this.#nextToken++ & USER_MASK)) >>> 0;
      this.#pending.set(token, { resolve, reject, op });
      try {
        post(token);
      } catch (e) {
        this.#pending.delete(token);
        reject(e);
      }
    });
  }

  /** @internal */
  markEstablished(pdata: Uint8Array): void {
    this.#established = true;
    if (pdata.length) this.privateData = pdata;
    this.#progress.onCmEvent(this.#id.address, (ev) => this.#onCmEvent(ev));
    this.#progress.add(this);
  }

  #onCmEvent(ev: CmEvent): void {
    if (ev.type === CM.DISCONNECTED || ev.type === CM.DEVICE_REMOVAL) {
      this.#established = false;
      this.close(new ConnectionClosedError(ev.type === CM.DISCONNECTED ? "peer disconnected" : "RDMA device removed"));
    }
  }
}

/** @internal the rdma_cm step lives in cm.ts; re-exported for test/verbs_teardown.test.ts, which imports it from here. */
export { cmStep, type CmStepProgress } from "./cm.ts";
