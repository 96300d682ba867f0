/**
 * The test tooling itself: scripts/guest.sh (without booting a guest), the count parser
 * and final line of scripts/test.sh (which .ci/run greps for), the guest tests' device
 * check, and scripts/doctor.ts under the runtime running this test.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { missingDeviceMessage, probeDevices, rdmaSkip } from "./fixtures/guest_device.ts";
import { BIN, currentRuntime, ROOT, runtimeArgv } from "./fixtures/runtime.ts";

const runtime = currentRuntime;

// The slowest spawn here (the runner on a 4-test file under both runtimes, or a guest test
// file) measured 3.7-7 s on this 2-core machine with a guest or other suites running beside
// it; 60 s is over 8 times that, for a loaded CI host.
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
  const [bin, args] = runtimeArgv(runtime, "scripts/doctor.ts");
  const r = spawnSync(bin, args, { cwd: ROOT, encoding: "utf8", timeout: 60_000, env: { ...process.env, NO_COLOR: "1" } });
  assert.equal(r.status, 0, String(r.stderr));
  const lines = String(r.stdout).trim().split("\n");
  assert.match(lines[lines.length - 1], /^doctor: \d+ ok, \d+ warnings, \d+ missing; /);
  assert.match(String(r.stdout), /rdma-core headers/);
  assert.match(String(r.stdout), /ulimit -l/);
});

test("guest.sh --wait-active fails with the last state when the port never becomes ACTIVE", () => {
  const dir = mkdtempSync(join(tmpdir(), "rdma-port-"));
  try {
    const state = join(dir, "state");
    writeFileSync(state, "1: DOWN\n");
    const down = bash(["scripts/guest.sh", "--wait-active", state, "0.3"]);
    assert.equal(down.status, 1);
    assert.match(down.stderr, /rxe0 port 1 never became ACTIVE within 0\.3s \(RDMA_GUEST_ACTIVE_TIMEOUT\); last state: 1: DOWN/);
    const missing = bash(["scripts/guest.sh", "--wait-active", join(dir, "nothing"), "0.2"]);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /last state: missing/);
    writeFileSync(state, "4: ACTIVE\n");
    const up = bash(["scripts/guest.sh", "--wait-active", state, "5"]);
    assert.equal(up.status, 0, up.stderr);
    assert.match(up.stdout, /^rxe0 port 1: 4: ACTIVE after \d+ ms$/m);
    assert.equal(bash(["scripts/guest.sh", "--wait-active", state, "soon"]).status, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Two runtimes start inside: 3.7-7 s measured; bun's default 5 s per test is too short for it.
test("test.sh ends with 'N passed, N failed, N skipped' summed over both runtimes, and .ci/run's grep finds it", { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "rdma-runner-files-"));
  try {
    const file = join(dir, "mixed.test.ts");
    writeFileSync(
      file,
      [
        'import { test } from "node:test";',
        'test("one", () => {});',
        'test("two", () => {});',
        'test("three", () => { throw new Error("planned failure"); });',
        'test("four", { skip: "planned skip" }, () => {});',
        "",
      ].join("\n"),
    );
    const r = bash(["scripts/test.sh"], { RDMA_TEST_FILES: file, RDMA_SKIP_GUEST: "1", NO_COLOR: "1" });
    assert.equal(r.status, 1, "a failure makes the runner fail");
    const lines = r.stdout.trimEnd().split("\n");
    const last = lines[lines.length - 1];
    assert.equal(last, "4 passed, 2 failed, 2 skipped");
    assert.match(r.stdout, /^bun +host +2 +1 +1 /m);
    assert.match(r.stdout, /^deno +host +2 +1 +1 /m);
    // .ci/run takes the count line with grep -E '<pattern>': the same pattern must match it.
    const ci = readFileSync(join(ROOT, ".ci", "run"), "utf8");
    const m = ci.match(/grep -E '(\^\[0-9\]\+ passed[^']*)'/);
    assert.ok(m, ".ci/run greps for the count line");
    assert.match(last, new RegExp(m[1]));
    assert.doesNotMatch("4 passed, 2 failed", new RegExp(m[1]), "the old two-count line no longer counts");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("guest test files skip without a device on the host, and fail without one inside the guest", async () => {
  const { active, found } = await probeDevices();
  if (active) return; // this host has RDMA: the no-device paths cannot be reached here (found: see probeDevices)
  const registered: string[] = [];
  const fake = (name: string, fn: () => void) => {
    registered.push(name);
    assert.throws(fn, { message: missingDeviceMessage(found) });
  };
  assert.match(String(await rdmaSkip(fake, {})), /^no active RDMA device/);
  assert.deepEqual(registered, [], "the host registers no failing test");
  assert.match(String(await rdmaSkip(fake, { RDMA_IN_GUEST: "1" })), /^not run: RDMA_IN_GUEST=1 but no ACTIVE RDMA port/);
  assert.deepEqual(registered, ["an ACTIVE RDMA device is present in the guest"]);
  // The real thing: a guest test file run here with RDMA_IN_GUEST=1 fails, naming the cause.
  const bin = join(BIN, runtime);
  const args = runtime === "bun" ? ["test", "./test/guest/verbs.test.ts"] : ["test", "-A", "test/guest/verbs.test.ts"];
  const r = spawnSync(bin, args, {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, RDMA_IN_GUEST: "1", NO_COLOR: "1" },
  });
  assert.notEqual(r.status, 0, "the guest file failed");
  assert.match(String(r.stdout) + String(r.stderr), /RDMA_IN_GUEST=1 but no ACTIVE RDMA port/);
});

test(".ci/run's phase caps fit inside CI's 90-minute limit, and test.sh's own caps fit the npm test cap", () => {
  const minutes = (v: string) => {
    const m = v.match(/^(\d+(?:\.\d+)?)([smh]?)$/);
    assert.ok(m, `a timeout(1) duration: ${v}`);
    return Number(m[1]) * ({ s: 1 / 60, m: 1, h: 60, "": 1 / 60 } as Record<string, number>)[m[2]];
  };
  const ci = readFileSync(join(ROOT, ".ci", "run"), "utf8");
  const caps: Record<string, number> = {};
  for (const m of ci.matchAll(/^(\w+)_TIMEOUT=\$\{CI_\w+:-([^}]+)\}$/gm)) caps[m[1]] = minutes(m[2]);
  assert.deepEqual(Object.keys(caps).sort(), ["APT", "NPM", "PACKAGE", "PREPARE", "TEST"]);
  const doctor = ci.match(/timeout -k 5 (\S+) bun scripts\/doctor\.ts/);
  assert.ok(doctor, "the doctor phase is capped");
  const total = Object.values(caps).reduce((a, b) => a + b, 0) + minutes(doctor[1]);
  assert.ok(total <= 85, `the caps sum to ${total} min`);
  const sh = readFileSync(join(ROOT, "scripts", "test.sh"), "utf8");
  const host = minutes(sh.match(/RDMA_TEST_RUN_TIMEOUT:-([^}]+)\}/)![1]);
  const guest = minutes(sh.match(/RDMA_GUEST_TIMEOUT=\$\{RDMA_GUEST_TIMEOUT:-([^}]+)\}/)![1]);
  const perGuestRun = minutes(sh.match(/RDMA_TEST_GUEST_RUN_TIMEOUT:-([^}]+)\}/)![1]);
  const check = minutes(sh.match(/timeout -k 15 (\S+) deno check/)![1]);
  assert.ok(2 * perGuestRun < guest, "both guest runs fit in the guest boot's limit");
  assert.ok(2 * host + check + guest <= caps.TEST, `test.sh's caps (${2 * host + check + guest} min) fit CI_TEST_TIMEOUT`);
});
