/**
 * Finds or builds the shim library, binds it for the running runtime and checks its ABI.
 *
 * 1. `RDMA_SHIM_PATH` set: use that prebuilt library as is.
 * 2. Otherwise the library lives in a cache directory (`RDMA_SHIM_CACHE`, else
 *    `$XDG_CACHE_HOME/rdma-sessions`, else `~/.cache/rdma-sessions`) under a name
 *    keyed by a hash of the C sources, the compiler flags and the ABI version.
 *    The sources are c_shim/ beside this file when it is a file there (a
 *    checkout, an npm install: an edit to c_shim/ applies at once), else the
 *    copy embedded in shim_source.ts (a module loaded from https://jsr.io/,
 *    where there is no directory to read and the shim must still be compiled
 *    on the user's machine; test/ffi_remote_loader.test.ts keeps the copy in
 *    sync). Both give the same hash, so they share the cache.
 * 3. Missing: write the sources into a temporary directory of this build in
 *    that directory, compile them with the system C compiler (`CC`, default
 *    `cc`) into a temporary file and `rename` it into place (the sources are
 *    removed). Rename is atomic, so parallel first runs are safe: the last one
 *    wins with identical bytes.
 * 4. Bind (Bun: `bun:ffi`; Deno: `Deno.dlopen`), then compare `shim_abi_version`
 *    and the record sizes with what the TypeScript side was written for.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { RECORD_SIZES } from "./records.ts";
import { SHIM_SOURCES } from "./shim_source.ts";
import { type Binding, SHIM_ABI_VERSION } from "./symbols.ts";

/** The shim could not be found, built, loaded or trusted; `hint` says what to do. */
export class ShimLoadError extends Error {
  constructor(message: string, readonly hint: string, options?: ErrorOptions) {
    super(`${message}\n  → ${hint}`, options);
    this.name = "ShimLoadError";
  }
}

const HEADERS_HINT =
  "install the rdma-core development packages: Debian/Ubuntu `apt-get install libibverbs-dev librdmacm-dev`, RHEL/Fedora `dnf install rdma-core-devel`";
const DENO_FLAGS =
  "run Deno with --allow-ffi --allow-read --allow-write --allow-env --allow-run (compiling the shim on first use needs all five; with RDMA_SHIM_PATH set, --allow-ffi --allow-read --allow-env suffice), or -A";

const CFLAGS = ["-O2", "-fPIC", "-shared", "-Wall", "-Wl,--no-undefined"];
const LIBS = ["-lrdmacm", "-libverbs"];

const SHIM_FILES = ["shim.c", "shim.h"] as const;
type ShimFiles = Record<(typeof SHIM_FILES)[number], string>;

/** The C sources: c_shim/ beside this module when it is on disk there, else the embedded copy. */
function shimSources(): ShimFiles {
  const dir = new URL("../c_shim/", import.meta.url);
  if (dir.protocol !== "file:") return SHIM_SOURCES;
  const path = (f: string) => fileURLToPath(new URL(f, dir).href);
  try {
    if (!existsSync(path("shim.c"))) return SHIM_SOURCES;
    return { "shim.c": readFileSync(path("shim.c"), "utf8"), "shim.h": readFileSync(path("shim.h"), "utf8") };
  } catch (e) {
    throw denoPermission(e, "reading the shim's C sources");
  }
}

function env(name: string): string | undefined {
  try {
    return process.env[name] || undefined;
  } catch (e) {
    throw denoPermission(e, `reading ${name}`);
  }
}

function denoPermission(e: unknown, what: string): Error {
  const isDeno = typeof (globalThis as { Deno?: { errors?: unknown } }).Deno?.errors === "object";
  if (isDeno && e instanceof Error && (e.name === "NotCapable" || e.name === "PermissionDenied")) {
    return new ShimLoadError(`Deno refused ${what}: ${e.message}`, DENO_FLAGS, { cause: e });
  }
  return e as Error;
}

/** The directory compiled shims are cached in. */
function cacheDir(): string {
  const base = env("RDMA_SHIM_CACHE") ??
    join(env("XDG_CACHE_HOME") ?? join(homedir(), ".cache"), "rdma-sessions");
  return base;
}

/** The cache key: sources, flags, ABI. */
function shimHash(sources: ShimFiles): string {
  const h = createHash("sha256");
  for (const f of SHIM_FILES) h.update(sources[f]);
  h.update([...CFLAGS, ...LIBS, String(SHIM_ABI_VERSION), env("CC") ?? "cc"].join(" "));
  return h.digest("hex").slice(0, 16);
}

/** Compiles the shim into the cache if absent; returns its path. */
function buildShim(): string {
  const explicit = env("RDMA_SHIM_PATH");
  if (explicit) {
    if (!existsSync(explicit)) {
      throw new ShimLoadError(`RDMA_SHIM_PATH points at ${explicit}, which does not exist`, "unset it to build the shim on first use, or build it with `npm run doctor` hints");
    }
    return explicit;
  }
  const sources = shimSources();
  let target: string;
  try {
    const dir = cacheDir();
    target = join(dir, `librdmashim-${shimHash(sources)}.so`);
    if (existsSync(target)) return target;
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw denoPermission(e, "access to the shim cache");
  }
  const tmp = `${target}.${process.pid}.${Date.now()}.tmp`;
  const srcDir = `${tmp}.src`; // this build's own copy of the sources, removed with the temporary file
  const cc = env("CC") ?? "cc";
  try {
    mkdirSync(srcDir);
    for (const f of SHIM_FILES) writeFileSync(join(srcDir, f), sources[f]);
    execFileSync(cc, [...CFLAGS, "-o", tmp, join(srcDir, "shim.c"), ...LIBS], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { force: true });
    const err = e as { code?: string; stderr?: Uint8Array; name?: string };
    if (err.name === "NotCapable" || err.name === "PermissionDenied") throw denoPermission(e, `running ${cc} or writing to the shim cache`);
    if (err.code === "ENOENT") {
      throw new ShimLoadError(`no C compiler: \`${cc}\` was not found`, "install one (Debian `apt-get install gcc`, RHEL `dnf install gcc`), set CC, or point RDMA_SHIM_PATH at a prebuilt shim", { cause: e });
    }
    const stderr = err.stderr ? new TextDecoder().decode(err.stderr) : String(e);
    if (/infiniband\/verbs\.h|rdma\/rdma_cma\.h|cannot find -l(rdmacm|ibverbs)/.test(stderr)) {
      throw new ShimLoadError(`rdma-core headers or libraries are missing (${stderr.trim().split("\n")[0]})`, HEADERS_HINT, { cause: e });
    }
    throw new ShimLoadError(`compiling the shim failed:\n${stderr}`, "run `npm run doctor` to see what is missing", { cause: e });
  } finally {
    rmSync(srcDir, { recursive: true, force: true });
  }
  return target;
}

/** Loads the shim for the running runtime and checks its ABI. */
export async function loadBinding(): Promise<Binding> {
  const path = buildShim();
  let binding: Binding;
  try {
    if ("Bun" in globalThis) {
      binding = (await import("./bun.ts")).bindBun(path);
    } else if (typeof (globalThis as { Deno?: { dlopen?: unknown } }).Deno?.dlopen === "function") {
      binding = (await import("./deno.ts")).bindDeno(path);
    } else {
      throw new ShimLoadError("this runtime has no FFI the shim supports", "run under Bun or Deno");
    }
  } catch (e) {
    if (e instanceof ShimLoadError) throw e;
    const p = denoPermission(e, "loading the shim");
    if (p instanceof ShimLoadError) throw p;
    throw new ShimLoadError(`loading ${path} failed: ${(e as Error).message}`, `${HEADERS_HINT}; the runtime libraries are in Debian's librdmacm1 and libibverbs1`, { cause: e });
  }
  const abi = binding.fn.shim_abi_version();
  const sizes = new Uint32Array(4);
  binding.fn.shim_record_sizes(sizes);
  const expected = [RECORD_SIZES.wc, RECORD_SIZES.cmEvent, RECORD_SIZES.deviceInfo, RECORD_SIZES.mrInfo | (RECORD_SIZES.connInfo << 16)];
  if (abi !== SHIM_ABI_VERSION || expected.some((v, i) => sizes[i] !== v)) {
    binding.close();
    throw new ShimLoadError(
      `shim at ${path} has ABI ${abi} with record sizes [${[...sizes]}]; this code needs ABI ${SHIM_ABI_VERSION} with [${expected}]`,
      "delete the cached shim or unset RDMA_SHIM_PATH so it is rebuilt from the C sources",
    );
  }
  return binding;
}
