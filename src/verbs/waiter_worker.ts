/**
 * The waiter: a worker that sleeps in `epoll_wait` (shim_waitset_wait) for the
 * main thread, so an idle process uses no CPU and wakes on the first completion
 * or connection event. Protocol: it posts "ready" once loaded; each message
 * `{ waitset: string }` makes it block until some fd is ready (or it is woken),
 * then it posts the count back. Used unchanged by Bun and Deno.
 *
 * @module
 */
import { loadShim } from "../../ffi/mod.ts";

interface WorkerScope {
  onmessage: ((e: MessageEvent<{ waitset: string }>) => void) | null;
  postMessage(message: unknown): void;
}
const scope = globalThis as unknown as WorkerScope;

const shim = await loadShim();
scope.onmessage = (e) => {
  const ws = shim.pointer(BigInt(e.data.waitset));
  scope.postMessage(shim.fn.shim_waitset_wait(ws, -1));
};
scope.postMessage("ready");
