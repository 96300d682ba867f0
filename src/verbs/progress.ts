/**
 * Progress: one per process. It owns the connection-manager event channel, the
 * wait set and the waiter worker, and drives every connection's completions:
 *
 * 1. A pass drains CM events, then polls every connection's completion queue
 *    in batches and dispatches the records.
 * 2. Passes repeat (spin, yielding to the event loop between passes) until
 *    `RDMA_SPIN_US` (default 500 µs) pass with no completion and no new work:
 *    an answer usually follows soon after activity.
 * 3. Then every queue is armed (`ibv_req_notify_cq`) and polled once more, to
 *    close the race with a completion that landed before the arm; with still
 *    nothing, the waiter worker sleeps in epoll over all completion channels
 *    and the CM channel, and wakes the main thread with a message. New work
 *    starts a pass at once; the worker's wait stays armed meanwhile (it is
 *    never woken just to be asked to wait again). Until the worker has said
 *    it is ready, passes run on a short timer instead (under `deno test` the
 *    worker is type-checked first: tens of seconds on an emulated CPU, longer
 *    than a connect's timeout).
 * 4. When nothing uses RDMA any more (no listener, connection or connect in
 *    progress), the worker is stopped so the process can exit.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import { type Binding, CmEventBuffer, type CmEventRecord, loadShim } from "../../ffi/mod.ts";
import { RdmaError, unwrap } from "./errors.ts";
import { create, type Handle } from "./native.ts";

/** A CM event copied out of the shim's 256-byte record (`struct shim_cm_event`, ffi/records.ts). */
export type CmEvent = CmEventRecord;

/** rdma_cm_event_type values. */
export const CM = {
  ADDR_RESOLVED: 0, ADDR_ERROR: 1, ROUTE_RESOLVED: 2, ROUTE_ERROR: 3, CONNECT_REQUEST: 4,
  CONNECT_RESPONSE: 5, CONNECT_ERROR: 6, UNREACHABLE: 7, REJECTED: 8, ESTABLISHED: 9,
  DISCONNECTED: 10, DEVICE_REMOVAL: 11, ADDR_CHANGE: 14, TIMEWAIT_EXIT: 15,
} as const;
export const CM_EVENT_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(CM).map(([k, v]) => [v, `RDMA_CM_EVENT_${k}`]),
);

/** What a connection gives progress. */
interface Pollable {
  readonly cqFd: number;
  /** Polls and dispatches; returns completions handled. */
  poll(): number;
  arm(): void;
  ackEvents(): void;
}

const SPIN_MS = Number(process.env.RDMA_SPIN_US ?? 500) / 1000;
/** Pass interval while the waiter worker is still starting. */
const STARTING_POLL_MS = 2;

export class Progress {
  static #instance: Promise<Progress> | undefined;

  readonly shim: Binding;
  readonly channel: Handle;
  readonly #waitset: Handle;
  readonly #conns = new Set<Pollable>();
  readonly #cmHandlers = new Map<bigint, (ev: CmEvent) => void>();
  readonly #event = new CmEventBuffer();
  #worker: Worker | undefined;
  #workerReady = false;
  /** The pass timer used while the worker is starting. */
  #startingTimer: ReturnType<typeof setTimeout> | undefined;
  /** A wait was posted to the worker and has not returned. */
  #waiting = false;
  #scheduled = false;
  #users = 0;
  #lastActivity = 0;

  private constructor(shim: Binding) {
    this.shim = shim;
    try {
      this.channel = create(shim, "rdma_create_event_channel", (o) => shim.fn.shim_channel_create(o));
    } catch (e) {
      const err = e as RdmaError;
      throw new RdmaError("rdma_create_event_channel", err.errno ?? 19, "no RDMA support here (/dev/infiniband/rdma_cm missing?): load rdma_ucm and start a device, e.g. `modprobe rdma_rxe rdma_ucm; rdma link add rxe0 type rxe netdev <interface>`; `npm run doctor` checks everything");
    }
    this.#waitset = create(shim, "epoll_create", (o) => shim.fn.shim_waitset_create(o));
    const fd = unwrap("shim_channel_fd", shim.fn.shim_channel_fd(this.channel.ptr));
    unwrap("epoll_ctl", shim.fn.shim_waitset_add(this.#waitset.ptr, fd));
  }

  /** The process's progress engine (created on first use). */
  static get(): Promise<Progress> {
    Progress.#instance ??= loadShim().then((s) => new Progress(s)).catch((e) => {
      Progress.#instance = undefined;
      throw e;
    });
    return Progress.#instance;
  }

  /** Something (a listener, connection, pending connect) needs events; keeps the waiter alive. */
  retain(): void {
    if (this.#users++ === 0) this.#startWorker();
  }

  release(): void {
    if (--this.#users > 0) return;
    this.#users = 0;
    this.#stopWorker();
  }

  onCmEvent(id: bigint, handler: (ev: CmEvent) => void): void {
    this.#cmHandlers.set(id, handler);
  }

  offCmEvent(id: bigint): void {
    this.#cmHandlers.delete(id);
  }

  add(c: Pollable): void {
    unwrap("epoll_ctl", this.shim.fn.shim_waitset_add(this.#waitset.ptr, c.cqFd));
    this.#conns.add(c);
    this.kick();
  }

  remove(c: Pollable): void {
    if (!this.#conns.delete(c)) return;
    this.shim.fn.shim_waitset_remove(this.#waitset.ptr, c.cqFd);
  }

  /**
   * New work was posted: make sure a pass runs soon. The waiter is not woken:
   * its epoll wait, if one is outstanding, simply stays armed for later.
   */
  kick(): void {
    this.#lastActivity = performance.now();
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(this.#pass);
  }

  #pass = (): void => {
    this.#scheduled = false;
    let handled = this.#drainCm();
    for (const c of this.#conns) {
      c.ackEvents();
      handled += c.poll();
    }
    const now = performance.now();
    if (handled > 0) this.#lastActivity = now;
    // Spin while work is in flight, and for a moment after any activity (an answer is likely near).
    if (handled > 0 || now - this.#lastActivity < SPIN_MS) {
      this.#schedule();
      return;
    }
    // Arm, then look once more: a completion that landed before the arm raises no event.
    for (const c of this.#conns) c.arm();
    let late = 0;
    for (const c of this.#conns) late += c.poll();
    if (late > 0) {
      this.#lastActivity = performance.now();
      this.#schedule();
      return;
    }
    this.#sleep();
  };

  #drainCm(): number {
    let n = 0;
    const fn = this.shim.fn;
    while (fn.shim_channel_get_event(this.channel.ptr, this.#event.bytes) === 0) {
      n++;
      const ev = this.#event.read();
      const handler = this.#cmHandlers.get(ev.type === CM.CONNECT_REQUEST ? ev.listenId : ev.id);
      handler?.(ev);
    }
    return n;
  }

  /** Hands the wait to the worker, unless a wait it was given is still outstanding (it stays armed). */
  #sleep(): void {
    if (!this.#worker || this.#waiting) return;
    if (!this.#workerReady) {
      // Nothing would wake us: poll on a timer until the worker can wait for us.
      this.#startingTimer ??= setTimeout(() => {
        this.#startingTimer = undefined;
        this.#schedule();
      }, STARTING_POLL_MS);
      return;
    }
    this.#waiting = true;
    this.#worker.postMessage({ waitset: String(this.#waitset.address) });
  }

  #startWorker(): void {
    const w = new Worker(new URL("./waiter_worker.ts", import.meta.url).href, { type: "module" });
    this.#worker = w;
    this.#workerReady = false;
    w.onmessage = (e: MessageEvent) => {
      if (this.#worker !== w) return;
      if (e.data === "ready") this.#workerReady = true;
      else this.#waiting = false;
      this.#schedule();
    };
    w.onerror = (e) => {
      console.error("rdma waiter worker failed:", (e as ErrorEvent).message);
    };
  }

  #stopWorker(): void {
    clearTimeout(this.#startingTimer);
    this.#startingTimer = undefined;
    const w = this.#worker;
    if (!w) return;
    this.#worker = undefined;
    if (this.#waiting) {
      // It is blocked in C: wake it first, then end it once it has returned.
      w.onmessage = () => w.terminate();
      this.shim.fn.shim_waitset_wake(this.#waitset.ptr);
      this.#waiting = false;
    } else {
      w.terminate();
    }
  }
}
