/**
 * The comparison users make: the same HTTP app (`redis_app.ts`) with its
 * sessions in a real redis-server, against `withSessions` on three servers
 * over tcp with ack `none`, `transport` and `applied`; Bun and Deno servers.
 *
 *   bun bench/redis.ts [--quick]            (or: npm run bench -- --redis-only)
 *
 * 1. Speed: the load generator (`loadgen.ts`, Bun, closed loop, one session
 *    per user) against server a of each setup, 1 and 8 users, the same
 *    duration: p50/p99 and requests/s. Redis: one app server and a
 *    redis-server started here on 127.0.0.1 on a free port (no persistence:
 *    `--save "" --appendonly no`, what a session cache runs with). Ours: servers
 *    a, b, c (the same runtime), sessions replicated from a to one of b, c.
 * 2. Killing a server: users spread over the app servers each write per-update
 *    keys (`/put?k=u<i>`), and at 40 % of the updates one server is SIGKILLed:
 *    redis-server in the Redis setup, app server b in ours. Afterwards every
 *    session is read back (ours: through the survivors; Redis: while it is
 *    down, then after a restart with the same settings) and every update that
 *    was acknowledged (a 200 whose `x-replication` said `transport`, `applied`,
 *    or `redis`: redis-server replied to the SET) is looked for.
 *
 * Needs redis-server (Debian: `apt-get install redis-server`); without it this
 * fails with a message saying so. Prints one `BENCH_JSON` line.
 *
 * @module
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { launchCluster, type LaunchedCluster } from "../examples/cluster_launcher.ts";
import { parseSessionCookie } from "../src/cluster/cookie.ts";
import { collectOutput, emit, freePort, isMain, killChild, LOADGEN, type LoadResult, progress, ROOT, runLoad, type Runtime, sleep } from "./lib.ts";

export const REDIS_SETUPS = ["redis", "none", "transport", "applied"] as const;
export type RedisSetup = typeof REDIS_SETUPS[number];

const APP = `${ROOT}/bench/redis_app.ts`;
const SECRET = "bench-redis-comparison-secret-0123456789";

/** redis-server's version line; throws with what to install when it is missing. */
export function requireRedisServer(bin = "redis-server"): string {
  const r = spawnSync(bin, ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    throw new Error(
      "redis-server is not installed (or not on PATH): the Redis comparison starts a real one. Install it: `apt-get install redis-server` (Debian/Ubuntu; .ci/run does), `dnf install redis` (RHEL), `brew install redis` (macOS)",
    );
  }
  return r.stdout.trim();
}

/** A redis-server on 127.0.0.1:port, no persistence; resolves once it accepts connections. */
export async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn("redis-server", [
    "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
    "--daemonize", "no", "--loglevel", "warning", "--dir", "/tmp",
  ], { stdio: ["ignore", "pipe", "pipe"] });
  const out = collectOutput(child);
  const net = await import("node:net");
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`redis-server exited at start: ${out()}`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host: "127.0.0.1", port }, () => {
        s.end();
        r(true);
      });
      s.once("error", () => r(false));
    });
    if (ok) return child;
    await sleep(50);
  }
  await killChild(child);
  throw new Error(`redis-server did not accept connections on ${port}: ${out()}`);
}

interface Setup {
  cluster: LaunchedCluster;
  redis?: ChildProcess;
  redisPort?: number;
  ids: string[];
}

async function startSetup(rt: Runtime, setup: RedisSetup): Promise<Setup> {
  if (setup === "redis") {
    const redisPort = await freePort();
    const redis = await startRedis(redisPort);
    try {
      const cluster = await launchCluster({
        servers: [{ id: "a", runtime: rt }],
        secret: SECRET,
        transport: "tcp",
        script: APP,
        args: ["--store", "redis", "--redis-port", String(redisPort)],
        stderr: "pipe",
      });
      return { cluster, redis, redisPort, ids: ["a"] };
    } catch (e) {
      await killChild(redis);
      throw e;
    }
  }
  const cluster = await launchCluster({
    servers: ["a", "b", "c"].map((id) => ({ id, runtime: rt })),
    secret: SECRET,
    transport: "tcp",
    script: APP,
    args: ["--store", "cluster", "--ack", setup],
    stderr: "pipe",
  });
  return { cluster, ids: ["a", "b", "c"] };
}

async function stopSetup(s: Setup): Promise<void> {
  await s.cluster.stop();
  await killChild(s.redis);
}

export interface RedisSpeedRun extends LoadResult {
  runtime: Runtime;
  setup: RedisSetup;
  concurrency: number;
}

async function speed(rt: Runtime, setup: RedisSetup, concurrency: number, durationMs: number, warmupMs: number): Promise<RedisSpeedRun> {
  const s = await startSetup(rt, setup);
  try {
    progress(`redis comparison: ${rt} ${setup}, ${concurrency} user(s) for ${durationMs} ms…`);
    const r = await runLoad(`${s.cluster.servers.get("a")!.url}/`, concurrency, durationMs, warmupMs);
    progress(`redis comparison: ${rt} ${setup} ×${concurrency}: p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, ${r.rps} req/s ${JSON.stringify(r.replication)}`);
    return { runtime: rt, setup, concurrency, ...r };
  } finally {
    await stopSetup(s);
  }
}

export interface KillRun {
  runtime: Runtime;
  setup: RedisSetup;
  /** What was killed with SIGKILL, at 40 % of the updates. */
  killed: string;
  users: number;
  updatesPerUser: number;
  /** Updates answered 200 and acknowledged (`x-replication` transport, applied or redis). */
  acknowledged: number;
  /** Updates answered 200 without an acknowledgement (ack none). */
  unacknowledgedOk: number;
  /** Updates that got no 200 within the retries (503 while the store was down or a failover ran). */
  failed: number;
  /** Acknowledged updates not found when the sessions were read back. */
  acknowledgedLost: number;
  /** Answered-200 updates (acknowledged or not) not found when read back. */
  okLost: number;
  /** Sessions (users) with at least one update answered 200. */
  sessions: number;
  /** Of those: read back with none of their updates (the session is gone). */
  sessionsLost: number;
  /** Of those: could not be read back at all (503 or no server answered). */
  sessionsUnavailable: number;
  /** `x-replication` of the updates answered 200 (what "not acked" ones said instead). */
  replication?: Record<string, number>;
  /** Redis only: read back again after redis-server was restarted with the same settings. */
  afterRestart?: { acknowledgedLost: number; sessionsLost: number; sessionsUnavailable: number };
  seconds: number;
}

interface User {
  cookie?: string;
  home: string;
  ok: Map<string, boolean>; // key → acknowledged
}

async function killRun(rt: Runtime, setup: RedisSetup, users: number, updates: number, attempts = 30): Promise<KillRun> {
  const s = await startSetup(rt, setup);
  const t0 = performance.now();
  try {
    const alive = (id: string | undefined) => id !== undefined && s.cluster.servers.get(id)?.alive === true;
    const url = (id: string) => s.cluster.servers.get(id)!.url;
    const order = (u: User): string[] => {
      const v = u.cookie?.slice(u.cookie.indexOf("=") + 1);
      const loc = setup === "redis" ? undefined : parseSessionCookie(v);
      return [...new Set([loc?.primary, loc?.secondary, u.home, ...s.ids].filter((id): id is string => alive(id)))];
    };
    /** One request with retries over the live servers; the response body and header, or undefined. */
    const request = async (u: User, path: string, attempts: number): Promise<{ body: Record<string, unknown>; replication: string | null } | undefined> => {
      for (let a = 0; a < attempts; a++) {
        const ids = order(u);
        if (!ids.length) return undefined;
        try {
          const res = await fetch(`${url(ids[a % ids.length])}${path}`, { headers: u.cookie ? { cookie: u.cookie } : {}, signal: AbortSignal.timeout(5000) });
          const body = await res.json() as Record<string, unknown>;
          const set = res.headers.get("set-cookie");
          if (set) u.cookie = set.split(";")[0];
          if (res.ok) return { body, replication: res.headers.get("x-replication") };
        } catch { /* refused, reset, timed out: try again */ }
        await sleep(100);
      }
      return undefined;
    };
    const list: User[] = Array.from({ length: users }, (_, i) => ({ home: s.ids[i % s.ids.length], ok: new Map() }));
    const total = users * updates;
    let done = 0, failed = 0, killed = false;
    const replication: Record<string, number> = {};
    const kill = async () => {
      killed = true;
      if (setup === "redis") {
        progress(`redis comparison: ${rt} kill: SIGKILL redis-server at ${done}/${total} updates`);
        await killChild(s.redis);
      } else {
        progress(`redis comparison: ${rt} ${setup} kill: SIGKILL server b at ${done}/${total} updates`);
        s.cluster.signal("b", "SIGKILL");
        s.cluster.servers.get("b")!.alive = false;
      }
    };
    await Promise.all(list.map(async (u, ui) => {
      for (let k = 0; k < updates; k++) {
        await sleep(2 + Math.random() * 8);
        if (!killed && done >= total * 0.4) await kill();
        const key = `u${k}`;
        const r = await request(u, `/put?k=${key}&v=${ui}.${k}`, attempts);
        if (!r) failed++;
        else {
          u.ok.set(key, ["transport", "applied", "redis"].includes(r.replication ?? ""));
          replication[r.replication ?? "absent"] = (replication[r.replication ?? "absent"] ?? 0) + 1;
        }
        done++;
      }
    }));
    await sleep(1000);
    const readBack = async () => {
      let acknowledgedLost = 0, okLost = 0, sessionsLost = 0, sessionsUnavailable = 0;
      for (const u of list) {
        if (u.ok.size === 0) continue;
        const r = await request(u, "/all", Math.max(5, attempts));
        if (!r) {
          sessionsUnavailable++;
          continue;
        }
        const attrs = (r.body.attributes ?? {}) as Record<string, unknown>;
        let found = 0;
        for (const [key, acked] of u.ok) {
          if (key in attrs) found++;
          else {
            okLost++;
            if (acked) acknowledgedLost++;
          }
        }
        if (found === 0) sessionsLost++;
      }
      return { acknowledgedLost, okLost, sessionsLost, sessionsUnavailable };
    };
    const first = await readBack();
    let afterRestart: KillRun["afterRestart"];
    if (setup === "redis") {
      s.redis = await startRedis(s.redisPort!);
      // Every app server's client reconnects with a backoff that grew while redis-server was down:
      // wait (bounded) until each answers through redis again, with a throwaway session (a write, so it goes through redis).
      for (const id of s.ids) {
        const until = performance.now() + 30_000;
        while (performance.now() < until) {
          const res = await fetch(`${url(id)}/put?k=probe&v=0`, { signal: AbortSignal.timeout(5000) }).catch(() => undefined);
          await res?.body?.cancel();
          if (res?.ok) break;
          await sleep(100);
        }
      }
      const again = await readBack();
      afterRestart = { acknowledgedLost: again.acknowledgedLost, sessionsLost: again.sessionsLost, sessionsUnavailable: again.sessionsUnavailable };
    }
    const all = list.flatMap((u) => [...u.ok.values()]);
    const run: KillRun = {
      runtime: rt,
      setup,
      killed: setup === "redis" ? "redis-server" : "app server b",
      users,
      updatesPerUser: updates,
      acknowledged: all.filter(Boolean).length,
      unacknowledgedOk: all.filter((a) => !a).length,
      failed,
      acknowledgedLost: first.acknowledgedLost,
      okLost: first.okLost,
      sessions: list.filter((u) => u.ok.size > 0).length,
      sessionsLost: first.sessionsLost,
      sessionsUnavailable: first.sessionsUnavailable,
      replication,
      afterRestart,
      seconds: Math.round((performance.now() - t0) / 100) / 10,
    };
    progress(`redis comparison: ${rt} ${setup} kill: ${JSON.stringify(run)}`);
    return run;
  } finally {
    await stopSetup(s);
  }
}

export interface RedisComparison {
  part: "redis";
  redisServer: string;
  store: string;
  cluster: string;
  loadgen: string;
  concurrencies: number[];
  durationMs: number;
  warmupMs: number;
  speed: RedisSpeedRun[];
  kill: KillRun[];
  /** Runs that failed twice (recorded, not retried further). */
  errors: string[];
}

/**
 * The whole comparison. `tiny` (the smoke test): 1 user, half-second runs,
 * 6 users × 5 updates with few retries; `setups` narrows the setups.
 */
export async function runRedisComparison(
  o: { quick?: boolean; runtimes?: Runtime[]; tiny?: boolean; setups?: readonly RedisSetup[] } = {},
): Promise<RedisComparison> {
  const redisServer = requireRedisServer();
  const runtimes = o.runtimes ?? ["bun", "deno"];
  const setups = o.setups ?? REDIS_SETUPS;
  const concurrencies = o.tiny ? [1] : [1, 8];
  const durationMs = o.tiny ? 500 : o.quick ? 1500 : 5000;
  const warmupMs = o.tiny ? 200 : o.quick ? 500 : 1000;
  const errors: string[] = [];
  /** One retry, then the failure is recorded and the comparison goes on (the tiny run, a test, throws). */
  const attempt = async <T>(what: string, f: () => Promise<T>): Promise<T | undefined> => {
    for (let i = 1; ; i++) {
      try {
        return await f();
      } catch (e) {
        progress(`redis comparison: ${what} failed (attempt ${i}): ${(e as Error).message.split("\n")[0]}`);
        if (o.tiny) throw e;
        if (i >= 2) {
          errors.push(`${what}: ${(e as Error).message.slice(0, 500)}`);
          return undefined;
        }
      }
    }
  };
  const speedRuns: RedisSpeedRun[] = [];
  for (const c of concurrencies) {
    for (const rt of runtimes) {
      for (const setup of setups) {
        const r = await attempt(`speed ${rt} ${setup} ×${c}`, () => speed(rt, setup, c, durationMs, warmupMs));
        if (r) speedRuns.push(r);
      }
    }
  }
  const kills: KillRun[] = [];
  const [users, updates] = o.tiny ? [6, 5] : o.quick ? [12, 10] : [30, 20];
  for (const rt of runtimes) {
    for (const setup of setups) {
      const r = await attempt(`kill ${rt} ${setup}`, () => killRun(rt, setup, users, updates, o.tiny ? 8 : 30));
      if (r) kills.push(r);
    }
  }
  return {
    part: "redis",
    redisServer,
    store: "GET sess:<id> before the handler, SET sess:<id> <json> EX 1800 after it when changed, response after redis-server's reply; cookie sid; Bun: built-in RedisClient, Deno: redis (node-redis) npm package; redis-server --save '' --appendonly no",
    cluster: "withSessions on 3 servers a, b, c of the same runtime, tcp on 127.0.0.1, defaults (heartbeat 250 ms, timeout 1500 ms)",
    loadgen: `${LOADGEN} against server a`,
    concurrencies,
    durationMs,
    warmupMs,
    speed: speedRuns,
    kill: kills,
    errors,
  };
}

if (isMain(import.meta)) {
  const args = process.argv.slice(2);
  emit(await runRedisComparison({ quick: args.includes("--quick"), tiny: args.includes("--tiny") }));
  process.exit(0);
}
