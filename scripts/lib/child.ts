/**
 * Child processes for the tests and the benchmarks alike: run a script of this
 * repository under Bun or Deno (the copies in node_modules/.bin), wait for the
 * JSON line with which a child announces itself, collect what a child prints,
 * signal it by pid, stop it and wait until it is gone; and a free port for it
 * to listen on.
 *
 * It lives here, not in test/fixtures/ or bench/, because both import it
 * (test/fixtures/runtime.ts and bench/lib.ts re-export what their callers
 * use), and neither should load the other's code.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

export type Runtime = "bun" | "deno";

/** The repository root (this file is in `scripts/lib/`). */
export const ROOT = join(dirname(fileURLToPath(new URL(import.meta.url).href)), "..", "..");
/** Where `npm ci` puts bun and deno. */
export const BIN = join(ROOT, "node_modules", ".bin");

/** The runtime running this code. */
export const currentRuntime: Runtime = "Bun" in globalThis ? "bun" : "deno";

/** The runtime that is not `rt` (a cross-process test then also checks that Bun and Deno interoperate). */
export function otherRuntime(rt: Runtime = currentRuntime): Runtime {
  return rt === "bun" ? "deno" : "bun";
}

export interface RuntimeArgvOptions {
  /** Deno only: `--v8-flags=--expose-gc`, so the script can force a collection (Bun has `Bun.gc`). */
  exposeGc?: boolean;
  /** Deno only: flags between `run` and the script. @default ["-A"] */
  denoFlags?: string[];
}

/** Command line that runs `script` (relative to the repository, or absolute) under `rt`. */
export function runtimeArgv(rt: Runtime, script: string, args: string[] = [], options: RuntimeArgvOptions = {}): [string, string[]] {
  const file = resolve(ROOT, script);
  if (rt === "bun") return [join(BIN, "bun"), [file, ...args]];
  const flags = [...(options.denoFlags ?? ["-A"]), ...(options.exposeGc ? ["--v8-flags=--expose-gc"] : [])];
  return [join(BIN, "deno"), ["run", ...flags, file, ...args]];
}

export interface SpawnRuntimeOptions extends RuntimeArgvOptions {
  /** @default "ignore" */
  stdin?: "pipe" | "ignore";
  /** @default "inherit" (the child's stderr shows live) */
  stderr?: "pipe" | "inherit" | "ignore";
  /** Added to this process's environment. */
  env?: Record<string, string>;
}

/** Spawns `script` under `rt` with stdout piped. */
export function spawnRuntime(rt: Runtime, script: string, args: string[] = [], options: SpawnRuntimeOptions = {}): ChildProcess {
  const [cmd, argv] = runtimeArgv(rt, script, args, options);
  return spawn(cmd, argv, {
    stdio: [options.stdin ?? "ignore", "pipe", options.stderr ?? "inherit"],
    env: options.env ? { ...process.env, ...options.env } : process.env,
  });
}

/** Resolves with the first stdout line of `child` parsed as JSON (a child announcing its ports, or that it is ready). */
export function firstJsonLine<T>(child: ChildProcess, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const onData = (d: Uint8Array) => {
      buf += new TextDecoder().decode(d);
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        child.stdout!.off("data", onData);
        try {
          resolve(JSON.parse(buf.slice(0, nl)) as T);
        } catch (e) {
          reject(e);
        }
      }
    };
    child.stdout!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`${what} exited with ${code} before announcing itself`)));
  });
}

/**
 * Every stdout line of `child` that parses as JSON, in order (other lines, a
 * runtime's own output, are skipped): `next()` resolves with the next one;
 * with `ms`, rejects after that long naming `what`.
 */
export function jsonLineReader(child: ChildProcess): <T>(ms?: number, what?: string) => Promise<T> {
  const queue: unknown[] = [];
  const waiters: Array<(v: unknown) => void> = [];
  let buf = "";
  child.stdout!.on("data", (d: Uint8Array) => {
    buf += new TextDecoder().decode(d);
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        continue;
      }
      const w = waiters.shift();
      if (w) w(v);
      else queue.push(v);
    }
  });
  return <T>(ms?: number, what = "a line"): Promise<T> => {
    if (queue.length) return Promise.resolve(queue.shift() as T);
    return new Promise<T>((resolve, reject) => {
      const t = ms === undefined ? undefined : setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(new Error(`the child process did not answer ${what} within ${ms} ms`));
      }, ms);
      const w = (v: unknown) => {
        clearTimeout(t);
        resolve(v as T);
      };
      waiters.push(w);
    });
  };
}

/** Everything `child` printed so far on its piped stdout and stderr. */
export function collectOutput(child: ChildProcess): () => string {
  let out = "";
  const add = (d: Uint8Array) => void (out += new TextDecoder().decode(d));
  child.stdout?.on("data", add);
  child.stderr?.on("data", add);
  return () => out;
}

function running(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Resolves with the exit code once the child ends (null when a signal ended it). */
export function exited(child: ChildProcess): Promise<number | null> {
  if (!running(child)) return Promise.resolve(child.exitCode);
  return new Promise((r) => child.once("exit", (code) => r(code)));
}

/**
 * Sends `signal` to the child by its pid, if it still runs. (Deno's
 * `ChildProcess.kill` sends only the first signal of a child's life, so a
 * SIGKILL after a SIGTERM would not arrive through it.)
 */
export function signalChild(child: ChildProcess | undefined, signal: NodeJS.Signals): void {
  if (child?.pid === undefined || !running(child)) return;
  try {
    process.kill(child.pid, signal);
  } catch {
    // already gone
  }
}

/** Sends `signal` (SIGKILL unless told) and waits until the child is gone (at once for one that never started). */
export async function killChild(child: ChildProcess | undefined, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  if (child?.pid === undefined) return;
  const gone = exited(child);
  signalChild(child, signal);
  await gone;
}

/** Stops a child: SIGTERM, then SIGKILL after `graceMs`; waits until it is gone (at once for one that never started). */
export async function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.pid === undefined) return;
  const gone = exited(child);
  const timer = setTimeout(() => signalChild(child, "SIGKILL"), graceMs);
  signalChild(child, "SIGTERM");
  await gone;
  clearTimeout(timer);
}

/** A tcp port on 127.0.0.1 that was free a moment ago (bound then released: a tiny race, fine for tests and benchmarks). */
export async function freePort(): Promise<number> {
  const net = await import("node:net");
  return await new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
