/**
 * `npm run doctor` (or `deno run -A scripts/doctor.ts`): what this machine has for RDMA
 * and what to do about each missing piece. A diagnostic: it always exits 0 and ends with
 * one summary line.
 *
 * Checks, in order: runtime, C compiler, rdma-core headers, libraries and providers,
 * kernel RDMA support (devices, port states, rdma_rxe), the locked-memory limit, how to
 * start Soft-RoCE (or use the test guest), then the project's own shim and `devices()`.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

type Status = "ok" | "warn" | "missing" | "info";

interface Check {
  status: Status;
  /** What was checked and what was found. */
  text: string;
  /** What to do about it, when something is wrong or worth knowing. */
  fix?: string[];
}

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const color = !process.env.NO_COLOR && process.stdout.isTTY === true;
const MARK: Record<Status, [string, string]> = {
  ok: ["✔", "32"],
  warn: ["!", "33"],
  missing: ["✘", "31"],
  info: ["•", "36"],
};
const results: Check[] = [];

function report(status: Status, text: string, fix?: string[]): void {
  results.push({ status, text, fix });
  const [mark, code] = MARK[status];
  console.log(`${color ? `\x1b[${code}m${mark}\x1b[0m` : mark} ${text}`);
  for (const line of fix ?? []) console.log(`    → ${line}`);
}

function section(title: string): void {
  console.log(`\n${color ? `\x1b[1m${title}\x1b[0m` : title}`);
}

/** Runs a command; its trimmed stdout, or undefined when it cannot run or fails. */
function run(cmd: string, args: string[] = []): string | undefined {
  try {
    const r = spawnSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 10_000 });
    if (r.error || r.status !== 0) return undefined;
    return String(r.stdout).trim();
  } catch {
    return undefined;
  }
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

function message(e: unknown): string {
  if (e instanceof Error) {
    const hint = (e as Error & { hint?: string }).hint;
    return `${e.name}: ${e.message}${hint ? ` (${hint})` : ""}`;
  }
  return String(e);
}

// ---------------------------------------------------------------- runtime
section("Runtime");
const g = globalThis as unknown as { Bun?: { version: string }; Deno?: { version: { deno: string; v8: string } } };
if (g.Bun) {
  report("ok", `Bun ${g.Bun.version}`);
} else if (g.Deno) {
  report("ok", `Deno ${g.Deno.version.deno} (V8 ${g.Deno.version.v8})`);
} else {
  report("warn", `not Bun or Deno (Node ${process.version}): the library needs Bun or Deno`, [
    "npm install (brings both as devDependencies), then: npx bun scripts/doctor.ts",
  ]);
}
for (const rt of ["bun", "deno"]) {
  const bin = join(ROOT, "node_modules", ".bin", rt);
  if (existsSync(bin)) {
    const v = run(bin, ["--version"]);
    report(v ? "ok" : "warn", `${rt} in node_modules/.bin: ${v?.split("\n")[0] ?? "present but does not run"}`);
  } else {
    report("missing", `${rt} not in node_modules/.bin`, ["npm install (bun and deno are devDependencies)"]);
  }
}

// ---------------------------------------------------------------- compiler
section("C compiler (the shim is compiled on first use)");
const cc = ["cc", "gcc", "clang"].map((c) => ({ c, v: run(c, ["--version"]) })).find((x) => x.v);
if (cc) {
  report("ok", `${cc.c}: ${cc.v!.split("\n")[0]}`);
} else {
  report("missing", "no C compiler (cc, gcc or clang)", [
    "Debian/Ubuntu: apt-get install gcc",
    "RHEL/Fedora: dnf install gcc",
    "or point RDMA_SHIM_PATH at a prebuilt shim",
  ]);
}

// ---------------------------------------------------------------- headers
section("rdma-core headers");
const headers = ["/usr/include/infiniband/verbs.h", "/usr/include/rdma/rdma_cma.h"];
const missingHeaders = headers.filter((h) => !existsSync(h));
if (missingHeaders.length === 0) {
  report("ok", headers.join(", "));
} else {
  report("missing", `missing ${missingHeaders.join(", ")}`, [
    "Debian/Ubuntu: apt-get install libibverbs-dev librdmacm-dev",
    "RHEL/Fedora: dnf install rdma-core-devel",
  ]);
}

// ---------------------------------------------------------------- libraries and providers
section("rdma-core libraries and providers");
const ldconfig = ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"].map((c) => run(c, ["-p"])).find((x) => x);
for (const lib of ["libibverbs.so.1", "librdmacm.so.1"]) {
  const line = ldconfig?.split("\n").find((l) => l.trim().startsWith(lib + " "));
  if (line) {
    report("ok", `${lib} → ${line.split("=>")[1]?.trim() ?? "?"}`);
  } else if (ldconfig === undefined) {
    const found = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"].map((d) => join(d, lib)).find(existsSync);
    report(found ? "ok" : "missing", found ? `${lib} → ${found}` : `${lib} not found (ldconfig not available)`, found ? undefined : [
      "Debian/Ubuntu: apt-get install libibverbs1 librdmacm1",
      "RHEL/Fedora: dnf install libibverbs librdmacm",
    ]);
  } else {
    report("missing", `${lib} not in the linker cache (ldconfig -p)`, [
      "Debian/Ubuntu: apt-get install libibverbs1 librdmacm1",
      "RHEL/Fedora: dnf install libibverbs librdmacm",
    ]);
  }
}
const providerDirs = ["/usr/lib/x86_64-linux-gnu/libibverbs", "/usr/lib64/libibverbs", "/usr/lib/libibverbs"];
const providers = providerDirs.flatMap((d) => list(d).filter((f) => f.endsWith(".so")).map((f) => join(d, f)));
const drivers = list("/etc/libibverbs.d").filter((f) => f.endsWith(".driver"));
if (providers.length > 0) {
  const names = providers.map((p) => p.replace(/^.*\/lib(.*?)-rdmav\d+\.so$/, "$1"));
  const rxe = names.includes("rxe");
  report(
    rxe ? "ok" : "warn",
    `${providers.length} verbs providers in ${dirname(providers[0])} (${names.join(", ")})`,
    rxe ? undefined : ["no rxe provider for Soft-RoCE: apt-get install ibverbs-providers (RHEL: dnf install libibverbs)"],
  );
} else {
  report("missing", "no verbs providers (libibverbs/*.so)", [
    "Debian/Ubuntu: apt-get install ibverbs-providers",
    "RHEL/Fedora: dnf install libibverbs",
  ]);
}
report(
  drivers.length > 0 ? "ok" : "warn",
  drivers.length > 0 ? `/etc/libibverbs.d: ${drivers.length} driver files` : "/etc/libibverbs.d has no driver files",
  drivers.length > 0 ? undefined : ["apt-get install ibverbs-providers (RHEL: dnf install libibverbs)"],
);

// ---------------------------------------------------------------- kernel
section("Kernel RDMA support");
const kver = readText("/proc/sys/kernel/osrelease") ?? run("uname", ["-r"]) ?? "?";
const ibDevices = list("/sys/class/infiniband");
let activePorts = 0;
if (ibDevices.length === 0) {
  report("warn", `no RDMA devices in /sys/class/infiniband (kernel ${kver})`);
} else {
  for (const dev of ibDevices) {
    const ports = list(`/sys/class/infiniband/${dev}/ports`);
    const states = ports.map((p) => {
      const state = readText(`/sys/class/infiniband/${dev}/ports/${p}/state`) ?? "?";
      if (/ACTIVE/.test(state)) activePorts++;
      const netdev = list(`/sys/class/infiniband/${dev}/ports/${p}/gid_attrs/ndevs`).length > 0
        ? readText(`/sys/class/infiniband/${dev}/ports/${p}/gid_attrs/ndevs/0`)
        : undefined;
      return `port ${p}: ${state}${netdev ? ` on ${netdev}` : ""}`;
    });
    const ok = states.some((s) => /ACTIVE/.test(s));
    report(ok ? "ok" : "warn", `${dev}: ${states.join("; ") || "no ports"}`, ok ? undefined : [
      `bring the link up (ip link set <netdev> up) and check: cat /sys/class/infiniband/${dev}/ports/*/state`,
    ]);
  }
}
const uverbs = list("/dev/infiniband");
if (ibDevices.length > 0) {
  const has = uverbs.some((f) => f.startsWith("uverbs")) && uverbs.includes("rdma_cm");
  report(has ? "ok" : "warn", `/dev/infiniband: ${uverbs.join(" ") || "absent"}`, has ? undefined : [
    "modprobe ib_uverbs rdma_ucm",
  ]);
}
const loaded = existsSync("/sys/module/rdma_rxe");
const modDir = `/lib/modules/${kver}`;
const modulesDep = readText(join(modDir, "modules.dep"));
const rxeAvailable = loaded || (modulesDep !== undefined && /\/rdma_rxe\.ko(\.[a-z]+)?:/.test(modulesDep)) ||
  (readText(join(modDir, "modules.builtin")) ?? "").includes("rdma_rxe.ko");
if (loaded) {
  report("ok", "rdma_rxe (Soft-RoCE) is loaded");
} else if (rxeAvailable) {
  report("ok", "rdma_rxe (Soft-RoCE) is available as a module (not loaded)");
} else if (!existsSync(modDir)) {
  report("warn", `no ${modDir}: this kernel cannot load rdma_rxe (Soft-RoCE) here`);
} else {
  report("warn", `rdma_rxe is not among the modules of kernel ${kver}`);
}

// ---------------------------------------------------------------- locked memory
section("Locked memory (registered regions are pinned)");
const memlock = run("sh", ["-c", "ulimit -l"]);
if (memlock === "unlimited") {
  report("ok", "ulimit -l: unlimited");
} else if (memlock !== undefined && /^\d+$/.test(memlock) && Number(memlock) >= 512 * 1024) {
  report("ok", `ulimit -l: ${memlock} KiB`);
} else {
  report("warn", `ulimit -l: ${memlock ?? "unknown"}${memlock && /^\d+$/.test(memlock) ? " KiB" : ""}: too little to register large regions`, [
    "this shell: ulimit -l unlimited (as root)",
    "for good: a line '<user> - memlock unlimited' in /etc/security/limits.conf (or LimitMEMLOCK=infinity for a systemd service)",
  ]);
}

// ---------------------------------------------------------------- Soft-RoCE
section("Soft-RoCE");
const ifaces = list("/sys/class/net").filter((n) => n !== "lo");
const iface = ifaces[0] ?? "<interface>";
const qemu = run("qemu-system-x86_64", ["--version"]);
if (activePorts > 0) {
  report("ok", `${activePorts} active RDMA port(s): tests and examples can use real verbs here`);
} else if (rxeAvailable) {
  report("info", "no active RDMA port; this kernel can run Soft-RoCE:", [
    "modprobe rdma_rxe rdma_ucm",
    `rdma link add rxe0 type rxe netdev ${iface}    (interfaces: ${ifaces.join(", ") || "none"}; not lo: rdma_cm cannot route over it)`,
    "or, without touching this machine: npm run guest -- <command…>",
  ]);
} else {
  report("info", "no RDMA here; on a kernel with rdma_rxe one would run:", [
    `modprobe rdma_rxe rdma_ucm; rdma link add rxe0 type rxe netdev ${iface}`,
    "on this machine: npm run guest -- <command…>  (a QEMU guest with Soft-RoCE; e.g. npm run guest -- ibv_devices)",
    "the tests do this themselves: npm test runs test/guest/ inside that guest",
  ]);
}
const guestCache = process.env.RDMA_GUEST_CACHE ?? join(ROOT, ".cache", "guest");
const kernels = list(join(guestCache, "kernel"));
report(
  qemu ? "ok" : "info",
  `test guest: ${qemu ? qemu.split("\n")[0] : "qemu not installed"}; kernel cache: ${kernels.join(", ") || "empty"}`,
  qemu && kernels.length > 0 ? undefined : ["bash scripts/guest.sh --prepare  (installs qemu and unpacks a Debian kernel on first use)"],
);

// ---------------------------------------------------------------- the project's own layers
section("This project");
async function importIfPresent(rel: string): Promise<Record<string, unknown> | undefined> {
  const file = join(ROOT, rel);
  if (!existsSync(file)) {
    report("info", `${rel} not present yet`);
    return undefined;
  }
  try {
    return await import(pathToFileURL(file).href) as Record<string, unknown>;
  } catch (e) {
    report("missing", `${rel} failed to import: ${message(e)}`);
    return undefined;
  }
}
const ffi = await importIfPresent("ffi/mod.ts");
if (ffi && typeof ffi.loadShim === "function") {
  try {
    const b = await (ffi.loadShim as () => Promise<{ runtime?: string; path?: string; fn?: { shim_abi_version?: () => number } }>)();
    const abi = typeof b.fn?.shim_abi_version === "function" ? `, ABI ${b.fn.shim_abi_version()}` : "";
    report("ok", `shim loaded (${b.runtime ?? "?"}${abi}${b.path ? `, ${b.path}` : ""})`);
  } catch (e) {
    report("missing", `shim did not load: ${message(e)}`);
  }
} else if (ffi) {
  report("warn", "ffi/mod.ts has no loadShim()");
}
const verbs = await importIfPresent("src/verbs/mod.ts");
if (verbs && typeof verbs.devices === "function") {
  try {
    const devs = await (verbs.devices as () => Promise<unknown[]>)();
    const text = JSON.stringify(devs, (_k, v) => typeof v === "bigint" ? v.toString() : v, 2);
    report(devs.length > 0 ? "ok" : "info", `devices() returned ${devs.length} device(s)${devs.length ? ":" : ""}`);
    if (devs.length > 0) console.log(text.replace(/^/gm, "    "));
    // Remote access to the zcopy source (issue 9): per transfer where the device allows it.
    const probe = verbs.remoteAccessProbe as ((i: number) => Promise<{ remoteAccess: string; reason?: string }>) | undefined;
    if (devs.length === 0) {
      report("info", "zcopy remote access: no device to probe; on RDMA each SrcAvail's bytes alone are opened to the peer until RdmaRdCompl (\"per-transfer region\"), or the whole source arena where the device cannot (\"whole arena\"); stats().remoteAccess says which");
    }
    for (let i = 0; probe && i < devs.length; i++) {
      const name = (devs[i] as { name?: string }).name ?? `device ${i}`;
      const r = await probe(i);
      if (r.remoteAccess === "per-transfer region") {
        report("ok", `${name}: zcopy remote access per transfer: the peer can READ exactly the bytes of each SrcAvail, until RdmaRdCompl or SendSM (one ibv_reg_mr/ibv_dereg_mr of the message per transfer)`);
      } else {
        report("warn", `${name}: zcopy remote access falls back to the whole source arena (maxMessageSize bytes, readable by the peer for the connection's life): ${r.reason}`, [
          "stats().remoteAccess reports \"whole arena\" on such links; check `ulimit -l` (every transfer registers its bytes) and the provider's ibv_reg_mr support",
        ]);
      }
    }
  } catch (e) {
    report("missing", `devices() failed: ${message(e)}`);
  }
} else if (verbs) {
  report("warn", "src/verbs/mod.ts has no devices()");
}

// ---------------------------------------------------------------- summary
const count = (s: Status) => results.filter((r) => r.status === s).length;
console.log(
  `\ndoctor: ${count("ok")} ok, ${count("warn")} warnings, ${count("missing")} missing; ` +
    (activePorts > 0 ? "real RDMA is available here" : "no active RDMA port here (use: npm run guest -- <command…>)"),
);
process.exit(0);
