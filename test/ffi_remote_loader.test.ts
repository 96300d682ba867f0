/**
 * The loader where there is no c_shim/ directory beside it (a package loaded
 * from https://jsr.io/): it must build the shim on this machine from the C
 * sources embedded in ffi/shim_source.ts.
 *
 * Each case stages a copy of ffi/ in a temporary directory, outside the repo,
 * with no c_shim/ and with a marker comment added to the embedded shim.c, and
 * loads it in a child process with its own shim cache and a `CC` that records
 * the source it was handed: the shim must be compiled from the marked embedded
 * copy, load, and pass the ABI check. One case imports the copy by path under
 * the runtime running this file; the other imports it over http from a server
 * on 127.0.0.1, under Deno (Bun cannot import modules over http).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { readShimDir, renderShimSource } from "../ffi/embed_shim.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url).href);
const BIN = join(ROOT, "node_modules", ".bin");
const runtime: "bun" | "deno" = "Bun" in globalThis ? "bun" : "deno";
/** How long a child may take to compile and load the shim before the case fails. */
const CHILD_TIMEOUT_MS = 120_000;

test("ffi/shim_source.ts embeds c_shim/ byte for byte", () => {
  const embedded = readFileSync(join(ROOT, "ffi/shim_source.ts"), "utf8");
  assert.ok(embedded === renderShimSource(readShimDir()), "ffi/shim_source.ts differs from c_shim/: run `bun ffi/embed_shim.ts`");
});

interface Stage {
  dir: string;
  cache: string;
  log: string;
  marker: string;
  env: Record<string, string>;
}

/** A copy of ffi/ outside the repo (no c_shim/ beside it) whose embedded shim.c carries a marker. */
function stage(): Stage {
  const dir = mkdtempSync(join(tmpdir(), "shim-remote-"));
  const ffi = join(dir, "pkg", "ffi");
  mkdirSync(ffi, { recursive: true });
  for (const f of readdirSync(join(ROOT, "ffi"))) if (f.endsWith(".ts")) copyFileSync(join(ROOT, "ffi", f), join(ffi, f));
  const marker = `embedded copy ${process.pid}-${Date.now()}`;
  const sources = readShimDir();
  writeFileSync(join(ffi, "shim_source.ts"), renderShimSource({ ...sources, "shim.c": `${sources["shim.c"]}/* ${marker} */\n` }));
  assert.ok(!existsSync(join(dir, "pkg", "c_shim")));
  writeFileSync(
    join(dir, "probe.ts"),
    `import process from "node:process";
const { loadShim } = await import(process.env.LOADER_URL!);
const b = await loadShim();
console.log(JSON.stringify({ runtime: b.runtime, abi: b.fn.shim_abi_version() }));
`,
  );
  const log = join(dir, "cc-log");
  mkdirSync(log);
  const cc = join(dir, "cc");
  // Records the .c file (and the shim.h beside it) it is asked to compile, then compiles.
  writeFileSync(cc, `#!/bin/sh\nfor a; do case "$a" in *.c) printf '%s' "$a" > "${log}/path"; cp "$a" "${log}/shim.c"; cp "$(dirname "$a")/shim.h" "${log}/shim.h";; esac; done\nexec cc "$@"\n`);
  chmodSync(cc, 0o755);
  const cache = join(dir, "cache");
  return { dir, cache, log, marker, env: { RDMA_SHIM_CACHE: cache, CC: cc } };
}

function runChild(rt: "bun" | "deno", s: Stage, loaderUrl: string): Promise<{ runtime: string; abi: number }> {
  const args = rt === "bun" ? ["probe.ts"] : ["run", "-A", "--no-lock", "--no-config", "--quiet", "probe.ts"];
  const env: Record<string, string | undefined> = { ...process.env, ...s.env, LOADER_URL: loaderUrl, DENO_DIR: join(s.dir, "deno-dir") };
  delete env.RDMA_SHIM_PATH;
  return new Promise((resolve, reject) => {
    const c = spawn(join(BIN, rt), args, { cwd: s.dir, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    c.stdout!.on("data", (d) => (out += d));
    c.stderr!.on("data", (d) => (err += d));
    const timer = setTimeout(() => c.kill("SIGKILL"), CHILD_TIMEOUT_MS);
    c.on("exit", (code, signal) => {
      clearTimeout(timer);
      const last = out.trim().split("\n").pop() ?? "";
      if (code === 0 && last.startsWith("{")) resolve(JSON.parse(last));
      else reject(new Error(`${rt} probe exited ${code ?? signal}:\n${out}\n${err}`));
    });
  });
}

/** The shim was compiled from the staged, marked embedded sources, into the stage's cache, and nothing else is left there. */
function assertBuiltFromEmbedded(s: Stage, result: { runtime: string; abi: number }, rt: string): void {
  assert.deepEqual(result, { runtime: rt, abi: 2 });
  const path = readFileSync(join(s.log, "path"), "utf8");
  assert.ok(path.startsWith(s.cache + "/"), `compiled ${path}, not a copy in the cache ${s.cache}`);
  assert.ok(!path.startsWith(ROOT), "not the repo's c_shim/");
  const compiled = readFileSync(join(s.log, "shim.c"), "utf8");
  assert.ok(compiled.includes(`/* ${s.marker} */`), "the compiled shim.c is the embedded copy (it carries the marker)");
  assert.equal(compiled, `${readShimDir()["shim.c"]}/* ${s.marker} */\n`);
  assert.equal(readFileSync(join(s.log, "shim.h"), "utf8"), readShimDir()["shim.h"]);
  assert.deepEqual(readdirSync(s.cache).map((f) => /^librdmashim-[0-9a-f]{16}\.so$/.test(f)), [true], "one library, no leftover sources or temporary files");
}

test(`a copy of the loader with no c_shim/ beside it builds the shim from the embedded sources (${runtime})`, async () => {
  const s = stage();
  const result = await runChild(runtime, s, pathToFileURL(join(s.dir, "pkg", "ffi", "mod.ts")).href);
  assertBuiltFromEmbedded(s, result, runtime);
});

test("the loader imported over http (as from https://jsr.io/) builds the shim from the embedded sources (deno)", async () => {
  const s = stage();
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    requests.push(url.pathname);
    const m = /^\/pkg\/ffi\/([a-z_]+\.ts)$/.exec(url.pathname);
    const file = m ? join(s.dir, "pkg", "ffi", m[1]) : undefined;
    if (!file || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/typescript" }).end(readFileSync(file));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const { port } = server.address() as AddressInfo;
    const result = await runChild("deno", s, `http://127.0.0.1:${port}/pkg/ffi/mod.ts`);
    assertBuiltFromEmbedded(s, result, "deno");
    assert.ok(requests.includes("/pkg/ffi/loader.ts"), `the loader came over http: ${requests.join(" ")}`);
    assert.ok(!requests.some((p) => p.includes("c_shim")), `nothing asked for c_shim/: ${requests.join(" ")}`);
  } finally {
    await new Promise((r) => server.close(r));
  }
});
