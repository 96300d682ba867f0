/**
 * Connection setup through rdma_cm: the steps before a queue pair can carry
 * data, and the CM events that drive them.
 *
 * Client (connect):
 *   1. create a cm id on the process's event channel;
 *   2. rdma_resolve_addr → ADDR_RESOLVED; rdma_resolve_route → ROUTE_RESOLVED;
 *   3. create PD, completion channel + CQ, RC QP (`new RdmaConnection`, connection.ts);
 *      `prepare(conn)` registers memory and posts receives before the peer can send;
 *   4. rdma_connect with private data → ESTABLISHED (or REJECTED/UNREACHABLE/CONNECT_ERROR).
 * Server (listen): bind + listen; each CONNECT_REQUEST becomes a
 *   `ConnectionRequest` carrying the peer's private data; `accept()` runs
 *   step 3 on the new id, rdma_accept → ESTABLISHED; `reject()` refuses it.
 * Each step waits for its CM event with a timer (`cmStep`); no timer or
 * handler outlives a step, whichever way it ends.
 *
 * @module
 */
import { AcceptQueue } from "../accept_queue.ts";
import { type ConnectionOptions, RdmaConnection } from "./connection.ts";
import { RdmaError, unwrap } from "./errors.ts";
import { create, cString, destroyId, type Handle, idAddress } from "./native.ts";
import { CM, CM_EVENT_NAMES, type CmEvent, Progress } from "./progress.ts";

export interface ConnectOptions extends ConnectionOptions {
  host: string;
  port: number;
  /** Address, route and connection timeout each (emulated CPUs are slow). @default 30000 */
  timeoutMs?: number;
}

export interface ListenOptions {
  /** Local address to bind; must belong to an RDMA device's interface. */
  host: string;
  /** 0 picks a free port. @default 0 */
  port?: number;
  /** @default 64 */
  backlog?: number;
}

function privateDataOf(prepared: unknown, opts: ConnectionOptions): Uint8Array {
  return prepared instanceof Uint8Array ? prepared : opts.privateData ?? new Uint8Array(0);
}

/** What `cmStep` needs of progress (a fake in host tests). */
export type CmStepProgress = Pick<Progress, "onCmEvent" | "offCmEvent" | "kick">;

/**
 * One rdma_cm step: listens for `id`'s next CM event, makes the call with
 * `start`, and resolves with the event, or rejects after `timeoutMs`. The
 * timer and the handler go on every path: the event, the timeout, and a call
 * that fails at once (`start` throws: a name that does not resolve, an
 * rdma_accept refused), so no timer outlives a failed step.
 *
 * `onEvent` runs inside the handler, before the step's handler goes: the
 * progress loop hands out queued CM events in one synchronous pass, so a
 * DISCONNECTED right behind an ESTABLISHED must find the connection's own
 * handler already installed (installed after the `await`, one microtask
 * later, it found none and was lost: the connection stayed open for good).
 *
 * @internal exported for tests
 */
export function cmStep(
  progress: CmStepProgress,
  id: { readonly address: bigint },
  what: string,
  timeoutMs: number,
  start: () => void,
  onEvent?: (ev: CmEvent) => void,
): Promise<CmEvent> {
  return new Promise((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = () => {
      clearTimeout(timer);
      timer = undefined;
      progress.offCmEvent(id.address);
    };
    progress.onCmEvent(id.address, (ev) => {
      done();
      try {
        onEvent?.(ev);
      } catch (e) {
        reject(e);
        return;
      }
      resolve(ev);
    });
    timer = setTimeout(() => {
      done();
      reject(new RdmaError(what, 110, `no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    try {
      start();
    } catch (e) {
      done();
      reject(e);
      return;
    }
    progress.kick();
  });
}

function checkTimeout(timeoutMs: number | undefined, what: string): number {
  const t = timeoutMs ?? 30000;
  if (!Number.isInteger(t) || t < 1 || t > 0x7fffffff) {
    throw new RangeError(`${what}: 'timeoutMs' must be an integer in 1..2147483647: got ${timeoutMs}`);
  }
  return t;
}

function expect(ev: CmEvent, type: number, what: string, target: string): void {
  if (ev.type === type) return;
  const name = CM_EVENT_NAMES[ev.type] ?? `event ${ev.type}`;
  if (ev.type === CM.REJECTED) {
    throw new RdmaError(what, 111, `${target} rejected the connection (${name}, status ${ev.status}): nobody listening on that port, or the listener refused`);
  }
  throw new RdmaError(what, ev.status || 5, `${target}: ${name} (status ${ev.status})`);
}

/** Connects to an rdma_cm listener. */
export async function connect(opts: ConnectOptions): Promise<RdmaConnection> {
  if (typeof opts.host !== "string" || opts.host.length === 0) {
    throw new TypeError(`rdma connect: 'host' must be a non-empty string: got ${String(opts.host)}`);
  }
  if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
    throw new RangeError(`rdma connect: 'port' must be an integer in 1..65535: got ${opts.port}`);
  }
  const timeout = checkTimeout(opts.timeoutMs, "rdma connect");
  const progress = await Progress.get();
  const shim = progress.shim;
  const target = `${opts.host}:${opts.port}`;
  progress.retain();
  const id = create(shim, "rdma_create_id", (o) => shim.fn.shim_id_create(progress.channel.ptr, o));
  let conn: RdmaConnection | undefined;
  try {
    const addr = await cmStep(progress, id, `rdma_resolve_addr(${target})`, timeout, () =>
      unwrap(`rdma_resolve_addr(${target})`, shim.fn.shim_id_resolve_addr(id.ptr, cString(opts.host), opts.port, timeout)));
    expect(addr, CM.ADDR_RESOLVED, `rdma_resolve_addr(${target})`, target);
    const route = await cmStep(progress, id, `rdma_resolve_route(${target})`, timeout, () =>
      unwrap("rdma_resolve_route", shim.fn.shim_id_resolve_route(id.ptr, timeout)));
    expect(route, CM.ROUTE_RESOLVED, `rdma_resolve_route(${target})`, target);
    conn = new RdmaConnection(progress, id, opts);
    const pd = privateDataOf(opts.prepare?.(conn), opts);
    if (pd.length > 56) throw new RangeError(`private data must be at most 56 bytes on connect: got ${pd.length}`);
    const established = conn;
    const done = await cmStep(progress, id, `rdma_connect(${target})`, timeout, () =>
      unwrap("rdma_connect", shim.fn.shim_id_connect(id.ptr, pd, pd.length)), (ev) => {
      if (ev.type === CM.ESTABLISHED) established.markEstablished(ev.privateData);
    });
    expect(done, CM.ESTABLISHED, `rdma_connect(${target})`, target);
    return conn;
  } catch (e) {
    if (conn) await conn.close(e as Error);
    else {
      destroyId(shim, progress, id);
      progress.release();
    }
    throw e;
  }
}

/** An incoming connection request, carrying the peer's private data. */
export class ConnectionRequest {
  readonly #progress: Progress;
  readonly #id: Handle;
  #settled = false;
  readonly privateData: Uint8Array;

  /** @internal */
  constructor(progress: Progress, id: Handle, privateData: Uint8Array) {
    this.#progress = progress;
    this.#id = id;
    this.privateData = privateData;
  }

  get remoteAddress(): string {
    return idAddress(this.#progress.shim, this.#id.ptr, true);
  }

  /** Creates the connection's resources, runs `prepare`, accepts, and resolves once established. */
  async accept(opts: ConnectionOptions & { timeoutMs?: number } = {}): Promise<RdmaConnection> {
    if (this.#settled) throw new Error("connection request already accepted or rejected");
    const timeout = checkTimeout(opts.timeoutMs, "rdma accept");
    this.#settled = true;
    const progress = this.#progress;
    const shim = progress.shim;
    progress.retain();
    let conn: RdmaConnection | undefined;
    try {
      conn = new RdmaConnection(progress, this.#id, opts);
      conn.privateData = this.privateData;
      const pd = privateDataOf(opts.prepare?.(conn), opts);
      if (pd.length > 196) throw new RangeError(`private data must be at most 196 bytes on accept: got ${pd.length}`);
      const established = conn;
      const ev = await cmStep(progress, this.#id, "rdma_accept", timeout, () =>
        unwrap("rdma_accept", shim.fn.shim_id_accept(this.#id.ptr, pd, pd.length)), (ev) => {
        if (ev.type === CM.ESTABLISHED) established.markEstablished(new Uint8Array(0));
      });
      expect(ev, CM.ESTABLISHED, "rdma_accept", this.remoteAddress);
      return conn;
    } catch (e) {
      if (conn) await conn.close(e as Error);
      else {
        destroyId(shim, progress, this.#id);
        progress.release();
      }
      throw e;
    }
  }

  /** Refuses the request; the peer's connect fails with REJECTED. */
  reject(privateData: Uint8Array = new Uint8Array(0)): void {
    if (this.#settled) return;
    this.#settled = true;
    const shim = this.#progress.shim;
    shim.fn.shim_id_reject(this.#id.ptr, privateData, privateData.length);
    destroyId(shim, this.#progress, this.#id);
  }
}

/** A bound rdma_cm listener; iterate it for connection requests. */
export class RdmaListener implements AsyncIterable<ConnectionRequest> {
  readonly #progress: Progress;
  readonly #id: Handle;
  readonly #requests = new AcceptQueue<ConnectionRequest>();
  readonly address: { host: string; port: number };

  /** @internal use `listen()`. */
  constructor(progress: Progress, id: Handle, host: string) {
    this.#progress = progress;
    this.#id = id;
    const local = idAddress(progress.shim, id.ptr, false);
    this.address = { host, port: Number(local.slice(local.lastIndexOf(":") + 1)) };
    progress.onCmEvent(id.address, (ev) => {
      if (ev.type !== CM.CONNECT_REQUEST) return;
      const req = new ConnectionRequest(progress, { ptr: progress.shim.pointer(ev.id), address: ev.id }, ev.privateData);
      if (!this.#requests.push(req)) req.reject();
    });
  }

  /** The next connection request, or `undefined` once closed. */
  async next(): Promise<ConnectionRequest | undefined> {
    const r = await this.#requests.next();
    return r.done ? undefined : r.value;
  }

  [Symbol.asyncIterator](): AsyncIterator<ConnectionRequest> {
    return this.#requests[Symbol.asyncIterator]();
  }

  /** Stops listening; queued requests are rejected. Idempotent. */
  close(): Promise<void> {
    if (this.#requests.closed) return Promise.resolve();
    for (const r of this.#requests.close()) r.reject();
    destroyId(this.#progress.shim, this.#progress, this.#id);
    this.#progress.release();
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Binds and listens on `host:port` (port 0 picks one). */
export async function listen(opts: ListenOptions): Promise<RdmaListener> {
  const progress = await Progress.get();
  const shim = progress.shim;
  const id = create(shim, "rdma_create_id", (o) => shim.fn.shim_id_create(progress.channel.ptr, o));
  try {
    unwrap(`rdma_bind_addr/rdma_listen(${opts.host}:${opts.port ?? 0})`, shim.fn.shim_id_bind_listen(id.ptr, cString(opts.host), opts.port ?? 0, opts.backlog ?? 64));
  } catch (e) {
    destroyId(shim, progress, id);
    throw e;
  }
  progress.retain();
  return new RdmaListener(progress, id, opts.host);
}
