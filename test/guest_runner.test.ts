/**
 * The test tooling itself: scripts/guest.sh (without booting a guest), the count parser
 * of scripts/test.sh, and scripts/doctor.ts under the runtime running this test.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const runtime = "Bun" in globalThis ? "bun" : "deno";

function bash(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync("bash", args, { cwd: ROOT, encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000 });
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

function parse(rt: "bun" | "deno", log: string): string {
  const dir = mkdtempSync(join(tmpdir(), "rdma-runner-"));
  try {
    writeFileSync(join(dir, "log"), log);
    return bash(["scripts/test.sh", "--parse-counts", rt, join(dir, "log")]).stdout.trim();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("guest.sh inside the guest runs the command directly and returns its exit status", () => {
  const r = bash(["scripts/guest.sh", "sh", "-c", "echo in; echo err >&2; exit 7"], { RDMA_IN_GUEST: "1" });
  assert.equal(r.status, 7);
  assert.equal(r.stdout, "in\n");
  assert.equal(r.stderr, "err\n");
});

test("guest.sh without a command prints its usage and exits 2", () => {
  const r = bash(["scripts/guest.sh"]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /guest\.sh <command/);
  assert.match(r.stderr, /RDMA_GUEST_TIMEOUT/);
});

test("guest.sh rejects a malformed RDMA_GUEST_TIMEOUT before doing anything", () => {
  const cache = mkdtempSync(join(tmpdir(), "rdma-guest-cache-"));
  try {
    const r = bash(["scripts/guest.sh", "true"], { RDMA_GUEST_TIMEOUT: "soon", RDMA_GUEST_CACHE: cache });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /RDMA_GUEST_TIMEOUT must look like 2400, 40m or 1h: got 'soon'/);
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test("test.sh reads bun's summary, counting todo as skipped and errors as failed", () => {
  assert.equal(parse("bun", " 12 pass\n 1 skip\n 0 fail\n 34 expect() calls\nRan 13 tests across 3 files. [1.23s]\n"), "12 0 1");
  assert.equal(parse("bun", "\x1b[32m 12 pass\x1b[0m\n 2 todo\n\x1b[31m 3 fail\x1b[0m\n 1 error\n"), "12 4 2");
});

test("test.sh reads deno's summary line, with steps and colours", () => {
  assert.equal(parse("deno", "ok | 10 passed | 0 failed | 2 ignored (3s)\n"), "10 0 2");
  assert.equal(
    parse("deno", "\x1b[0m\x1b[31mFAILED\x1b[0m | 9 passed (2 steps) | 1 failed (1 step) (3s)\n\nerror: Test failed\n"),
    "9 1 0 2 steps",
  );
});

test("test.sh reports no counts for output without a summary", () => {
  assert.equal(parse("bun", "Segmentation fault\n"), "none");
  assert.equal(parse("deno", "error: Module not found\n"), "none");
});

test("doctor exits 0 and ends with a summary line", () => {
  const bin = join(ROOT, "node_modules", ".bin", runtime);
  const args = runtime === "bun" ? ["scripts/doctor.ts"] : ["run", "-A", "scripts/doctor.ts"];
  const r = spawnSync(bin, args, { cwd: ROOT, encoding: "utf8", timeout: 60_000, env: { ...process.env, NO_COLOR: "1" } });
  assert.equal(r.status, 0, String(r.stderr));
  const lines = String(r.stdout).trim().split("\n");
  assert.match(lines[lines.length - 1], /^doctor: \d+ ok, \d+ warnings, \d+ missing; /);
  assert.match(String(r.stdout), /rdma-core headers/);
  assert.match(String(r.stdout), /ulimit -l/);
});
