/**
 * The TypeScript layout of the shim's records (ffi/records.ts) against the C
 * one (c_shim/shim.h): a C program generated from `LAYOUTS`, compiled with the
 * system compiler, prints `sizeof` and `offsetof` of every field; a second part
 * fills each struct in C and the readers must decode what C wrote. Needs only
 * a C compiler (shim.h includes nothing but stdint.h).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { CmEventBuffer, CompletionRing, LAYOUTS, readConnInfo, readDeviceInfo, readMrInfo, RECORD_SIZES } from "../ffi/records.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url).href);

function layoutProgram(): string {
  const lines: string[] = [];
  const entries = Object.values(LAYOUTS);
  entries.forEach((l, i) => {
    const s = `struct ${l.struct}`;
    lines.push(`  printf("%s\\"${l.struct}\\":{\\"size\\":%zu,\\"fields\\":{", ${i ? '","' : '""'}, sizeof(${s}));`);
    Object.keys(l.fields).forEach((name, j) => {
      lines.push(`  printf("%s\\"${name}\\":[%zu,%zu]", ${j ? '","' : '""'}, offsetof(${s}, ${name}), sizeof(((${s} *)0)->${name}));`);
    });
    lines.push(`  printf("}}");`);
  });
  return `#include <stddef.h>\n#include <stdio.h>\n#include "shim.h"\nint main(void) {\n  printf("{");\n${lines.join("\n")}\n  printf("}\\n");\n  return 0;\n}\n`;
}

/** Fills one of each record in C and prints the bytes as hex, one record per line. */
const FILL_PROGRAM = `#include <stdio.h>
#include <string.h>
#include "shim.h"
static void dump(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
  printf("\\n");
}
int main(void) {
  struct shim_wc ring[2] = {
    {.wr_id = 0x80000007u, .status = 0, .opcode = SHIM_OP_RDMA_READ, .byte_len = 4096, .qp_num = 17, .imm = 0xdeadbeefu, .vendor_err = 0},
    {.wr_id = 0x1122334440000003ull, .status = 5, .opcode = SHIM_OP_RECV, .byte_len = 9, .qp_num = 18, .imm = 1, .vendor_err = 0x244},
  };
  dump(ring, sizeof ring);
  struct shim_cm_event ev;
  memset(&ev, 0xee, sizeof ev);
  ev.event = 4; ev.status = -110; ev.id = 0x7f0000001000ull; ev.listen_id = 0x7f0000002000ull; ev.pdata_len = 3;
  ev.pdata[0] = 1; ev.pdata[1] = 2; ev.pdata[2] = 3;
  dump(&ev, sizeof ev);
  struct shim_device_info d;
  memset(&d, 0, sizeof d);
  strcpy(d.name, "rxe0");
  d.node_guid = 0x0102030405060708ull; d.max_mr_size = 0x100000000ull;
  d.max_qp_wr = 1; d.max_sge = 2; d.max_cqe = 3; d.max_qp_rd_atom = 4; d.max_inline_data = 5; d.port_count = 2;
  d.ports[0] = (struct shim_port_info){.state = 4, .active_mtu = 1024, .max_mtu = 4096, .link_layer = 2};
  d.ports[1] = (struct shim_port_info){.state = 1, .active_mtu = 256, .max_mtu = 2048, .link_layer = 1};
  d.ports[2].state = 99; /* beyond port_count: not read */
  dump(&d, sizeof d);
  struct shim_mr_info mr = {.addr = 0x7f00deadb000ull, .length = 65536, .lkey = 0x11, .rkey = 0x22};
  dump(&mr, sizeof mr);
  struct shim_conn_info ci = {.ring_addr = 0x7f00cafe0000ull, .ring_capacity = 16, .qp_num = 17, .max_inline = 220, .send_depth = 128, .recv_depth = 64, .cq_fd = -1};
  dump(&ci, sizeof ci);
  return 0;
}
`;

function compileAndRun(source: string): string {
  const dir = mkdtempSync(join(tmpdir(), "shim-records-"));
  try {
    const c = join(dir, "p.c");
    const exe = join(dir, "p");
    writeFileSync(c, source);
    execFileSync(process.env.CC || "cc", ["-std=c11", "-Wall", "-Werror", "-I", join(ROOT, "c_shim"), "-o", exe, c], { stdio: ["ignore", "pipe", "pipe"] });
    return new TextDecoder().decode(execFileSync(exe));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const hex = (s: string) => new Uint8Array(s.match(/../g)!.map((b) => parseInt(b, 16)));

test("every record field's offset and size in ffi/records.ts is the C compiler's, and the fields tile each struct", () => {
  const c = JSON.parse(compileAndRun(layoutProgram())) as Record<string, { size: number; fields: Record<string, [number, number]> }>;
  for (const l of Object.values(LAYOUTS)) {
    const got = c[l.struct];
    assert.equal(got.size, l.size, `sizeof(struct ${l.struct})`);
    let end = 0;
    for (const [name, field] of Object.entries(l.fields)) {
      assert.deepEqual(got.fields[name], [field.offset, field.bytes], `offsetof/sizeof ${l.struct}.${name}`);
      // Listed in order with no gap: a C field missing from the TS table leaves a gap or changes the size.
      assert.equal(field.offset, end, `${l.struct}.${name} starts where the previous field ends`);
      end = field.offset + field.bytes;
    }
    assert.equal(end, l.size, `the fields of ${l.struct} cover all its ${l.size} bytes`);
  }
  assert.deepEqual(
    RECORD_SIZES,
    { wc: c.shim_wc.size, cmEvent: c.shim_cm_event.size, deviceInfo: c.shim_device_info.size, mrInfo: c.shim_mr_info.size, connInfo: c.shim_conn_info.size },
  );
});

test("the readers decode records filled in by C", () => {
  const [wc, ev, dev, mr, ci] = compileAndRun(FILL_PROGRAM).trim().split("\n").map(hex);

  const ring = new CompletionRing(wc.buffer as ArrayBuffer, 2);
  assert.deepEqual(
    [0, 1].map((i) => [ring.token(i), ring.status(i), ring.opcode(i), ring.byteLength(i), ring.qpNum(i), ring.imm(i), ring.vendorErr(i)]),
    [[0x80000007, 0, 2, 4096, 17, 0xdeadbeef, 0], [0x40000003, 5, 128, 9, 18, 1, 0x244]],
  );
  assert.throws(() => new CompletionRing(wc.buffer as ArrayBuffer, 3), /cannot hold 3 records/);

  const buf = new CmEventBuffer();
  buf.bytes.set(ev);
  const e = buf.read();
  assert.deepEqual(e, { type: 4, status: -110, id: 0x7f0000001000n, listenId: 0x7f0000002000n, privateData: new Uint8Array([1, 2, 3]) });
  buf.bytes.fill(0);
  assert.deepEqual([...e.privateData], [1, 2, 3], "the private data is a copy, not a view of the reused buffer");

  const d = readDeviceInfo(dev);
  assert.equal(new TextDecoder().decode(d.name.subarray(0, d.name.indexOf(0))), "rxe0");
  assert.deepEqual({ ...d, name: undefined }, {
    name: undefined, nodeGuid: 0x0102030405060708n, maxMrSize: 0x100000000n,
    maxQpWr: 1, maxSge: 2, maxCqe: 3, maxQpRdAtom: 4, maxInlineData: 5,
    ports: [{ state: 4, activeMtu: 1024, maxMtu: 4096, linkLayer: 2 }, { state: 1, activeMtu: 256, maxMtu: 2048, linkLayer: 1 }],
  });

  assert.deepEqual(readMrInfo(mr), { address: 0x7f00deadb000n, length: 65536n, lkey: 0x11, rkey: 0x22 });
  assert.deepEqual(readConnInfo(ci), { ringAddress: 0x7f00cafe0000n, ringCapacity: 16, qpNum: 17, maxInline: 220, sendDepth: 128, recvDepth: 64, cqFd: -1 });
  assert.throws(() => readConnInfo(ci.subarray(0, 31)), /struct shim_conn_info needs 32 bytes: got 31/);
});
