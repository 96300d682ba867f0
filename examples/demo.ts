/**
 * The demo (`npm run demo`): a three-server shop cluster on this machine,
 * sessions replicated one-way over the SDP-like socket, one server killed
 * with SIGKILL in the middle of the load, and proof that every acknowledged
 * update survived.
 *
 * 1. Start servers a, b, c as child processes (by default Bun, Deno, Bun:
 *    the servers interoperate through the JSON codec) on 127.0.0.1, over
 *    transport `auto` (rdma where a device is up, else tcp).
 * 2. Drive users: log in, then add cart lines. A client goes to the primary
 *    named in its cookie, or to the secondary when the primary is gone (what a
 *    WebLogic-style proxy does). An update counts as *acknowledged* when its
 *    response says replication reached `transport` (or `applied`).
 * 3. At 40% of the load, SIGKILL server b. Its sessions fail over.
 * 4. Afterwards, read every session back through the surviving servers and
 *    check every acknowledged cart line. Print counts and replication latency
 *    percentiles per server. Exit 1 if an acknowledged update was lost.
 *
 * Flags: --transport auto|tcp|rdma, --guest (run all this inside the
 * Soft-RoCE guest over rdma), --users 200, --ops 15, --concurrency 24,
 * --ack transport|applied|none, --servers bun,deno,bun, --kill b, --think-ms 20
 * (random pause before each update), --host (127.0.0.1; in the guest 192.0.2.1).
 *
 * Run with `bun examples/demo.ts` or `deno run -A examples/demo.ts`
 * (DEMO_DEBUG=1 also prints the servers' logs).
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import { parseArgs } from "node:util";
import process from "node:process";
import { launchCluster, type LaunchedCluster, REPO_ROOT } from "./cluster_launcher.ts";
import { parseSessionCookie, type SessionClusterStats, type TransportChoice } from "../mod.ts";

const { values: flags } = parseArgs({
  args: process.argv.slice(2),
  options: {
    transport: { type: "string", default: "auto" },
    guest: { type: "boolean", default: false },
    users: { type: "string", default: "200" },
    ops: { type: "string", default: "15" },
    concurrency: { type: "string", default: "24" },
    ack: { type: "string", default: "transport" },
    servers: { type: "string", default: "bun,deno,bun" },
    kill: { type: "string", default: "b" },
    host: { type: "string" },
    "think-ms": { type: "string", default: "20" },
  },
});

const runtime = typeof Bun !== "undefined" ? "bun" : "deno";

if (flags.guest) {
  // Re-run this demo inside the Soft-RoCE guest, over real RDMA (rxe0 on the guest's dummy interface).
  const self = runtime === "bun" ? ["node_modules/.bin/bun", "examples/demo.ts"] : ["node_modules/.bin/deno", "run", "-A", "examples/demo.ts"];
  const forwarded = process.argv.slice(2).filter((a) => a !== "--guest" && !a.startsWith("--transport"));
  const args = ["scripts/guest.sh", ...self, "--transport", "rdma", "--host", flags.host ?? "192.0.2.1", ...forwarded];
  console.log(`demo: running inside the Soft-RoCE guest: bash ${args.join(" ")}`);
  const result = spawnSync("bash", args, { cwd: REPO_ROOT, stdio: "inherit" });
  process.exit(result.status ?? 1);
}

const USERS = Number(flags.users);
const OPS = Number(flags.ops);
const CONCURRENCY = Number(flags.concurrency);
const VICTIM = flags.kill!;
const THINK_MS = Number(flags["think-ms"]);
const think = () => new Promise((r) => setTimeout(r, Math.random() * THINK_MS));
const host = flags.host ?? "127.0.0.1";
const runtimes = flags.servers!.split(",").map((r) => r.trim()) as ("bun" | "deno")[];
const ids = runtimes.map((_, i) => String.fromCharCode(97 + i));
const secret = crypto.randomUUID() + crypto.randomUUID();

interface User {
  name: string;
  cookie?: string;
  /** Cart lines whose update was acknowledged (item → qty). */
  acked: Map<string, number>;
  /** The login (session creation) was acknowledged. */
  loginAcked: boolean;
}

const counts = { requests: 0, acked: 0, unacked: 0, errors: 0, retries: 0, rerouted: 0 };
const requestLatency: number[] = [];
const unackedBy: Record<string, number> = {};
let killedAt: number | undefined;

console.log(`demo: ${runtime} driving ${ids.length} servers (${runtimes.join(", ")}), transport ${flags.transport}, ack ${flags.ack}`);
const cluster = await launchCluster({
  servers: ids.map((id, i) => ({ id, runtime: runtimes[i], args: ["--host", host] })),
  secret,
  transport: flags.transport as TransportChoice,
  args: ["--ack", flags.ack!],
  stderr: "pipe",
  // Inside the emulated guest, starting three runtimes takes minutes.
  startTimeoutMs: flags.transport === "rdma" ? 600_000 : 60_000,
});
for (const s of [...cluster.servers.values()].sort((x, y) => x.id.localeCompare(y.id))) {
  console.log(`  server ${s.id}: ${s.runtime.padEnd(4)} http ${s.url}  replication ${s.transport} port ${s.clusterPort}`);
}

const alive = (id: string | undefined) => id !== undefined && cluster.servers.get(id)?.alive === true;
const aliveIds = () => ids.filter(alive);

/** Where a client sends a request: the cookie's primary, else its secondary, else any live server. */
function route(user: User, attempt: number): string {
  const loc = parseSessionCookie(user.cookie?.split("=")[1]);
  const order = [loc?.primary, loc?.secondary, ...aliveIds()].filter((id): id is string => alive(id));
  const unique = [...new Set(order)];
  if (loc && !alive(loc.primary) && attempt === 0) counts.rerouted++;
  return unique[attempt % unique.length] ?? ids[0];
}

async function request(user: User, path: string): Promise<{ body: Record<string, unknown>; replication: string | null }> {
  let unavailableUntil: number | undefined;
  for (let attempt = 0; attempt < 6; attempt++) {
    const server = attempt === 0 && user.cookie === undefined ? aliveIds()[Math.floor(Math.random() * aliveIds().length)] : route(user, attempt);
    const started = performance.now();
    try {
      counts.requests++;
      const response = await fetch(`${cluster.servers.get(server)!.url}${path}`, {
        headers: user.cookie ? { cookie: user.cookie } : {},
      });
      const text = await response.text();
      requestLatency.push(performance.now() - started);
      const setCookie = response.headers.get("set-cookie");
      if (setCookie) user.cookie = setCookie.split(";")[0];
      if (response.status === 503 && unavailableUntil === undefined) unavailableUntil = performance.now() + 30_000;
      if (response.status === 503 && performance.now() < unavailableUntil!) {
        // A failover in progress (the session is settled within the failure timeout): wait as told, not an attempt.
        counts.retries++;
        attempt--;
        await new Promise((r) => setTimeout(r, 1000 * Number(response.headers.get("retry-after") ?? 1)));
        continue;
      }
      if (!response.ok) throw new Error(`${path} → ${response.status} ${text}`);
      return { body: JSON.parse(text), replication: response.headers.get("x-replication") };
    } catch (error) {
      counts.errors++;
      counts.retries++;
      if (attempt === 5) throw error;
      await new Promise((r) => setTimeout(r, 50 * (attempt + 1)));
    }
  }
  throw new Error("unreachable");
}

const users: User[] = Array.from({ length: USERS }, (_, i) => ({ name: `user${i}`, acked: new Map(), loginAcked: false }));
const total = USERS * (OPS + 1);
let done = 0;
let victimStats: SessionClusterStats | undefined;

let killing: Promise<void> | undefined;
function killVictim(c: LaunchedCluster): Promise<void> {
  killing ??= (async () => {
    const victim = c.servers.get(VICTIM);
    if (!victim) return;
    victimStats = await fetch(`${victim.url}/stats`).then((r) => r.json()).catch(() => undefined);
    c.signal(VICTIM, "SIGKILL");
    victim.alive = false;
    killedAt = done;
  })();
  return killing;
}

const tty = process.stdout.isTTY;
function progress(final = false) {
  const width = 30;
  const filled = Math.round((done / total) * width);
  const bar = "#".repeat(filled) + ".".repeat(width - filled);
  const kill = killedAt === undefined ? "" : `  server ${VICTIM} SIGKILLed at ${Math.round((killedAt / total) * 100)}%`;
  const line = `  [${bar}] ${done}/${total} ops  acked ${counts.acked}  unacked ${counts.unacked}  retries ${counts.retries}${kill}`;
  if (tty) process.stdout.write(`\r${line}${final ? "\n" : ""}`);
  else if (final) console.log(line);
}
const ticker = setInterval(() => (tty ? progress() : console.log(`  ${done}/${total} ops, acked ${counts.acked}`)), tty ? 100 : 1000);

async function runUser(user: User) {
  const acked = (replication: string | null) => replication === "transport" || replication === "applied";
  const login = await request(user, `/login?user=${user.name}`);
  user.loginAcked = acked(login.replication);
  done++;
  for (let k = 0; k < OPS; k++) {
    await think();
    if (killedAt === undefined && done >= total * 0.4) await killVictim(cluster);
    const item = `${user.name}-item${k}`;
    const qty = 1 + Math.floor(Math.random() * 5);
    try {
      const { replication } = await request(user, `/cart/add?item=${item}&qty=${qty}`);
      if (acked(replication)) {
        user.acked.set(item, qty);
        counts.acked++;
      } else {
        counts.unacked++;
        unackedBy[replication ?? "missing"] = (unackedBy[replication ?? "missing"] ?? 0) + 1;
      }
    } catch {
      counts.unacked++;
      unackedBy["request failed"] = (unackedBy["request failed"] ?? 0) + 1;
    }
    done++;
  }
}

console.log(`demo: ${USERS} users × (login + ${OPS} cart updates), ${CONCURRENCY} at a time`);
const started = performance.now();
let next = 0;
await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
  while (next < users.length) await runUser(users[next++]);
}));
const elapsed = (performance.now() - started) / 1000;
clearInterval(ticker);
progress(true);

// Verification: read every session back through the surviving servers.
let lostUpdates = 0;
let lostSessions = 0;
let checked = 0;
for (const user of users) {
  const { body } = await request(user, "/cart");
  const cart = (body.cart ?? {}) as Record<string, number>;
  if (body.user !== user.name && (user.loginAcked || user.acked.size > 0)) lostSessions++;
  for (const [item, qty] of user.acked) {
    checked++;
    if (cart[item] !== qty) lostUpdates++;
  }
}

const stats: [string, SessionClusterStats][] = [];
for (const id of aliveIds().sort()) stats.push([id, await fetch(`${cluster.servers.get(id)!.url}/stats`).then((r) => r.json())]);
if (victimStats) stats.push([`${VICTIM} (until killed)`, victimStats]);
const takenOver = stats.filter(([id]) => id !== `${VICTIM} (until killed)`).reduce((n, [, s]) => n + s.failover.promoted, 0);
if (process.env.DEMO_DEBUG) for (const s of cluster.servers.values()) console.log(s.id, s.log.join("\n"));
await cluster.stop();

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)] : 0;
};
const ms = (x: number) => `${x.toFixed(2)} ms`;
console.log("");
console.log(`results (${elapsed.toFixed(1)} s, ${Math.round(counts.requests / elapsed)} req/s):`);
console.log(`  sessions: ${USERS}, read back ${USERS - lostSessions}, lost ${lostSessions}`);
console.log(`  acknowledged updates: ${checked}, survived ${checked - lostUpdates}, LOST ${lostUpdates}`);
const why = Object.entries(unackedBy).map(([k, v]) => `${k} ${v}`).join(", ");
console.log(`  unacknowledged updates (response said so, or no response): ${counts.unacked}${why ? ` (${why})` : ""}`);
console.log(`  requests: ${counts.requests}, retried after a connection error: ${counts.retries}, sent to a secondary: ${counts.rerouted}`);
console.log(`  request latency: p50 ${ms(pct(requestLatency, 0.5))}  p90 ${ms(pct(requestLatency, 0.9))}  p99 ${ms(pct(requestLatency, 0.99))}`);
console.log(`  replication latency to the ${flags.ack} ack, per server:`);
console.log(`    ${"server".padEnd(16)} ${"count".padStart(7)} ${"p50".padStart(10)} ${"p90".padStart(10)} ${"p99".padStart(10)}  deltas snapshots promoted rereplicated`);
for (const [id, s] of stats) {
  const l = s.replication.latency[flags.ack as "transport"] ?? { count: 0, p50: 0, p90: 0, p99: 0 };
  console.log(
    `    ${`${id[0]} ${cluster.servers.get(id[0])?.runtime ?? ""}${id.length > 1 ? " (killed)" : ""}`.padEnd(16)} ${String(l.count).padStart(7)} ${ms(l.p50).padStart(10)} ${ms(l.p90).padStart(10)} ${ms(l.p99).padStart(10)}  ` +
      `${String(s.replication.deltas).padStart(6)} ${String(s.replication.snapshots).padStart(9)} ${String(s.failover.promoted).padStart(8)} ${String(s.failover.rereplicated).padStart(12)}`,
  );
}
console.log(`  failover: ${takenOver} sessions had their primary on ${VICTIM} and were taken over (epoch + 1) by the survivors`);
if (flags.ack === "none") console.log("  (ack mode none: no update is acknowledged as replicated, so none is checked)");
const ok = lostUpdates === 0 && lostSessions === 0;
console.log(ok ? "demo: every acknowledged session and update survived the SIGKILL" : "demo: FAILED: acknowledged data was lost");
process.exit(ok ? 0 : 1);
