/**
 * The native foundation on a host without RDMA: loader, cache, ABI check,
 * clear errors, no-device behaviour. (Device tests live in test/guest/.)
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadShim, SHIM_ABI_VERSION, ShimLoadError } from "../ffi/mod.ts";
import { errnoName, RdmaError, WorkCompletionError } from "../src/verbs/errors.ts";
import { connect, devices } from "../src/verbs/mod.ts";
import { currentRuntime, type Runtime, ROOT, runtimeArgv, spawnRuntime } from "./fixtures/runtime.ts";
const hasDevice = existsSync("/dev/infiniband/rdma_cm");

interface LoadResult {
  ok: boolean;
  runtime?: string;
  abi?: number;
  name?: string;
  message?: string;
}

function loadIn(runtime: Runtime, env: Record<string, string>, denoFlags = ["-A"]): LoadResult {
  const [cmd, args] = runtimeArgv(runtime, "test/fixtures/load_shim.ts", [], { denoFlags });
  const out = execFileSync(cmd, args, { env: { ...process.env, ...env }, encoding: "utf8" });
  return JSON.parse(out.trim().split("\n").pop()!);
}

test("loadShim compiles the shim once into the cache and reuses it", () => {
  const cache = mkdtempSync(join(tmpdir(), "shim-cache-"));
  const first = loadIn(currentRuntime, { RDMA_SHIM_CACHE: cache });
  assert.deepEqual([first.ok, first.abi], [true, SHIM_ABI_VERSION], first.message ?? "");
  const files = readdirSync(cache);
  assert.equal(files.length, 1);
  assert.match(files[0], /^librdmashim-[0-9a-f]{16}\.so$/);
  const mtime = statSync(join(cache, files[0])).mtimeMs;
  const second = loadIn(currentRuntime, { RDMA_SHIM_CACHE: cache });
  assert.ok(second.ok);
  assert.equal(statSync(join(cache, files[0])).mtimeMs, mtime, "not rebuilt");
});

test("parallel first runs in both runtimes build one shim safely", async () => {
  const cache = mkdtempSync(join(tmpdir(), "shim-race-"));
  const runs = (["bun", "deno", "bun", "deno"] as Runtime[]).map((rt) =>
    new Promise<LoadResult>((resolve, reject) => {
      const c = spawnRuntime(rt, "test/fixtures/load_shim.ts", [], { stdin: "pipe", stderr: "pipe", env: { RDMA_SHIM_CACHE: cache } });
      let out = "";
      c.stdout!.on("data", (d) => (out += d));
      c.on("exit", () => {
        try {
          resolve(JSON.parse(out.trim().split("\n").pop()!));
        } catch (e) {
          reject(e);
        }
      });
    })
  );
  const results = await Promise.all(runs);
  for (const r of results) assert.ok(r.ok, r.message ?? "");
  assert.deepEqual(readdirSync(cache).filter((f) => f.endsWith(".so")).length, 1);
  assert.equal(readdirSync(cache).filter((f) => f.endsWith(".tmp")).length, 0, "no temporary files left");
});

test("a shim with another ABI is refused with a clear error", () => {
  const dir = mkdtempSync(join(tmpdir(), "shim-abi-"));
  // The real shim, built as a future version would be.
  execFileSync("cc", ["-DSHIM_ABI_VERSION=999", "-shared", "-fPIC", "-o", join(dir, "v999.so"), join(ROOT, "c_shim/shim.c"), "-lrdmacm", "-libverbs"]);
  const r = loadIn(currentRuntime, { RDMA_SHIM_PATH: join(dir, "v999.so") });
  assert.equal(r.ok, false);
  assert.equal(r.name, "ShimLoadError");
  assert.match(r.message!, new RegExp(`has ABI 999 .* this code needs ABI ${SHIM_ABI_VERSION}`));
});

test("RDMA_SHIM_PATH pointing nowhere says so", () => {
  const r = loadIn(currentRuntime, { RDMA_SHIM_PATH: "/nonexistent/libshim.so" });
  assert.equal(r.ok, false);
  assert.match(r.message!, /RDMA_SHIM_PATH points at \/nonexistent\/libshim\.so, which does not exist/);
});

test("a missing C compiler is named, with what to install", () => {
  const cache = mkdtempSync(join(tmpdir(), "shim-nocc-"));
  const r = loadIn(currentRuntime, { RDMA_SHIM_CACHE: cache, CC: "/nonexistent/cc" });
  assert.equal(r.ok, false);
  assert.match(r.message!, /no C compiler: `\/nonexistent\/cc` was not found/);
  assert.match(r.message!, /apt-get install gcc/);
});

const canHideHeaders = spawnSync("unshare", ["-m", "true"]).status === 0;
test("missing rdma-core headers name the Debian and RHEL packages", {
  skip: canHideHeaders ? false : "needs `unshare -m` (root) to hide /usr/include/infiniband",
}, () => {
  const cache = mkdtempSync(join(tmpdir(), "shim-nohdr-"));
  const [rt, args] = runtimeArgv(currentRuntime, "test/fixtures/load_shim.ts");
  const cmd = `mount -t tmpfs none /usr/include/infiniband && exec ${rt} ${args.join(" ")}`;
  const out = execFileSync("unshare", ["-m", "sh", "-c", cmd], { env: { ...process.env, RDMA_SHIM_CACHE: cache }, encoding: "utf8" });
  const r: LoadResult = JSON.parse(out.trim().split("\n").pop()!);
  assert.equal(r.ok, false);
  assert.match(r.message!, /rdma-core headers or libraries are missing/);
  assert.match(r.message!, /libibverbs-dev librdmacm-dev/);
  assert.match(r.message!, /rdma-core-devel/);
});

test("Deno without the FFI permissions gets the flags to pass", () => {
  const r = loadIn("deno", {}, ["--allow-read", "--allow-env"]);
  assert.equal(r.ok, false);
  assert.match(r.message!, /--allow-ffi/);
  assert.match(r.message!, /--allow-run/);
});

test("devices() is an empty list where there is no RDMA device", { skip: hasDevice ? "a device is present" : false }, async () => {
  assert.deepEqual(await devices(), []);
});

test("connect() without RDMA support fails with an error that says what to do", { skip: hasDevice ? "a device is present" : false }, async () => {
  await assert.rejects(connect({ host: "127.0.0.1", port: 1 }), (e: unknown) => {
    assert.ok(e instanceof RdmaError, String(e));
    assert.match(e.message, /rdma_create_event_channel failed: \w+ \(\d+\): no RDMA support here/);
    assert.match(e.message, /rdma link add rxe0 type rxe netdev/);
    return true;
  });
});

test("errors name the operation, the errno and the completion status", async () => {
  const shim = await loadShim();
  assert.equal(shim.runtime, currentRuntime);
  assert.equal(errnoName(110), "ETIMEDOUT");
  assert.equal(new RdmaError("rdma_resolve_addr", -110).message, "rdma_resolve_addr failed: ETIMEDOUT (110)");
  const wc = new WorkCompletionError("RDMA READ", 10);
  assert.equal(wc.status, "IBV_WC_REM_ACCESS_ERR");
  assert.match(wc.message, /RDMA READ completed with IBV_WC_REM_ACCESS_ERR \(10\): remote access error/);
  assert.ok(new ShimLoadError("x", "y").message.includes("→ y"));
});
