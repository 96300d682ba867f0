/**
 * Starts a cluster of shop servers as child processes on this machine (any
 * mix of Bun and Deno), wires their peer lists, and lets the caller kill,
 * stop or resume them. Used by `demo.ts` and the cluster tests.
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import process from "node:process";
import type { PeerConfig, TransportChoice } from "../mod.ts";

/** The repository root (this file is in `examples/`). */
export const REPO_ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);

/** One server to start. */
export interface ServerSpec {
  id: string;
  runtime: "bun" | "deno";
  /** Extra flags for the server script. */
  args?: string[];
  /** Address this server listens on (its `--host`), after the common flags. */
  host?: string;
  /** Address of its HTTP listener (`--http-host`), if not `host`. */
  httpHost?: string;
  /**
   * A command that wraps this server's command, e.g. `["ip", "netns", "exec", "ns1"]`
   * (it must exec the server in its own process, so that signals reach the server).
   */
  prefix?: string[];
}

/** Options of `launchCluster`. */
export interface LaunchOptions {
  servers: ServerSpec[];
  secret: string;
  /** @default "auto" */
  transport?: TransportChoice;
  /** Server script. @default examples/shop_server.ts */
  script?: string;
  /** Flags passed to every server. */
  args?: string[];
  /** @default 60000 */
  startTimeoutMs?: number;
  /** Where server stderr goes. @default "inherit" */
  stderr?: "inherit" | "ignore" | "pipe";
}

/** A running child server. */
export interface LaunchedServer {
  readonly id: string;
  readonly runtime: "bun" | "deno";
  readonly transport: string;
  readonly url: string;
  readonly clusterPort: number;
  readonly child: ChildProcess;
  /** What the server itself reported when it listened (runtime, transport, host, ack mode...). */
  readonly reported: Readonly<Record<string, unknown>>;
  /** False once the process has exited. */
  alive: boolean;
  /** Resolves with the exit code or signal when the process exits. */
  readonly exited: Promise<string>;
  /** Stderr lines, when `stderr: "pipe"`. */
  readonly log: string[];
}

/** A launched cluster. */
export interface LaunchedCluster {
  readonly servers: Map<string, LaunchedServer>;
  /** Sends `signal` to server `id` (SIGKILL, SIGSTOP, SIGCONT...). */
  signal(id: string, signal: NodeJS.Signals): void;
  /** Stops every server still running. */
  stop(): Promise<void>;
}

/** The command that runs `script` with `runtime`. */
export function runtimeCommand(runtime: "bun" | "deno", script: string): [string, string[]] {
  const local = `${REPO_ROOT}node_modules/.bin/${runtime}`;
  const bin = existsSync(local) ? local : runtime;
  return runtime === "bun" ? [bin, ["run", script]] : [bin, ["run", "-A", "--quiet", script]];
}

/** Starts the servers, exchanges peer lists, and waits until every server is ready. */
export async function launchCluster(options: LaunchOptions): Promise<LaunchedCluster> {
  const script = options.script ?? `${REPO_ROOT}examples/shop_server.ts`;
  const transport = options.transport ?? "auto";
  const timeoutMs = options.startTimeoutMs ?? 60_000;
  const servers = new Map<string, LaunchedServer>();
  type Listening = { host: string; clusterPort: number; httpPort: number; transport: string };
  const listening = new Map<string, Promise<Listening>>();
  const ready = new Map<string, Promise<void>>();
  const children: ChildProcess[] = [];
  try {
    for (const spec of options.servers) {
      const [bin, pre] = runtimeCommand(spec.runtime, script);
      const args = [
        ...pre,
        "--id",
        spec.id,
        "--secret",
        options.secret,
        "--transport",
        transport,
        ...(options.args ?? []),
        ...(spec.args ?? []),
        ...(spec.host !== undefined ? ["--host", spec.host] : []),
        ...(spec.httpHost !== undefined ? ["--http-host", spec.httpHost] : []),
      ];
      const [command, commandArgs] = spec.prefix?.length
        ? [spec.prefix[0], [...spec.prefix.slice(1), bin, ...args]]
        : [bin, args];
      const child = spawn(command, commandArgs, {
        cwd: REPO_ROOT,
        stdio: ["pipe", "pipe", options.stderr ?? "inherit"],
        env: { ...process.env, NO_COLOR: "1" },
      });
      children.push(child);
      const log: string[] = [];
      if (options.stderr === "pipe") {
        createInterface({ input: child.stderr! }).on("line", (line) => log.push(line));
      }
      let onListening!: (v: Listening) => void;
      let onReady!: () => void;
      let onFail!: (e: Error) => void;
      const failed = new Promise<never>((_, reject) => (onFail = reject));
      failed.catch(() => {});
      listening.set(spec.id, Promise.race([new Promise<Listening>((r) => (onListening = r)), failed]));
      ready.set(spec.id, Promise.race([new Promise<void>((r) => (onReady = r)), failed]));
      const exited = new Promise<string>((resolve) => {
        child.on("exit", (code, sig) => {
          const server = servers.get(spec.id);
          if (server) server.alive = false;
          const text = sig ?? `exit ${code}`;
          onFail(new Error(`server '${spec.id}' (${spec.runtime}) exited during start: ${text}${log.length ? "\n" + log.join("\n") : ""}`));
          resolve(text);
        });
      });
      createInterface({ input: child.stdout! }).on("line", (line) => {
        let event: Record<string, unknown>;
        try {
          event = JSON.parse(line);
        } catch {
          return;
        }
        if (event.event === "listening") {
          onListening(event as never);
          servers.set(spec.id, {
            id: spec.id,
            runtime: spec.runtime,
            transport: String(event.transport),
            url: `http://${event.httpHost ?? event.host}:${event.httpPort}`,
            clusterPort: Number(event.clusterPort),
            child,
            reported: event,
            alive: true,
            exited,
            log,
          });
        } else if (event.event === "ready") onReady();
      });
    }
    const ports = await withTimeout(
      Promise.all(options.servers.map((s) => listening.get(s.id)!)),
      timeoutMs,
      "servers to listen",
    );
    const peers: PeerConfig[] = options.servers.map((s, i) => ({
      id: s.id,
      host: ports[i].host,
      port: ports[i].clusterPort,
      transport: ports[i].transport as TransportChoice,
    }));
    for (const s of options.servers) servers.get(s.id)!.child.stdin!.write(JSON.stringify({ peers }) + "\n");
    await withTimeout(Promise.all(options.servers.map((s) => ready.get(s.id)!)), timeoutMs, "servers to join the cluster");
  } catch (error) {
    for (const child of children) sendSignal(child, "SIGKILL");
    throw error;
  }
  return {
    servers,
    signal(id, signal) {
      sendSignal(servers.get(id)?.child, signal);
    },
    async stop() {
      await Promise.all([...servers.values()].map(async (s) => {
        if (!s.alive) return;
        sendSignal(s.child, "SIGCONT");
        s.child.stdin!.end();
        const timer = setTimeout(() => sendSignal(s.child, "SIGKILL"), 5000);
        await s.exited;
        clearTimeout(timer);
      }));
    },
  };
}

/**
 * Signals a child by pid. (Deno's `ChildProcess.kill` sends only the first
 * signal of a child's life, so SIGSTOP then SIGCONT would not work through it.)
 */
function sendSignal(child: ChildProcess | undefined, signal: NodeJS.Signals): void {
  if (child?.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(child.pid, signal);
  } catch {
    // already gone
  }
}

function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    work,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
