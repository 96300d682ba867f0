/**
 * The README's fault table from a test log: every `fault=…` summary line the
 * fault suites print (host over tcp, guest over rdma), one row each.
 *
 *   bash .ci/run 2>&1 | tee ci.log; bun scripts/fault_table.ts ci.log
 *
 * @module
 */
import { readFileSync } from "node:fs";
import process from "node:process";

const file = process.argv[2];
if (!file) {
  console.error("usage: bun scripts/fault_table.ts <test log>");
  process.exit(2);
}
const LINE =
  /^fault=(\S+) transport=(\S+) ack=(\S+) acked=(\d+) lost=(\d+) stale=(\d+) overlap=(\d+) sessionsLost=(\d+) leaks=(\d+) unreadable=(\d+) .* servers=(\S+) runner=(\S+) seed=(\d+)/;
/** Terminal colour codes, which some runners put around lines. */
const ANSI = new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g");
const rows = new Map<string, string[]>();
for (const raw of readFileSync(file, "utf8").split("\n")) {
  const m = raw.replace(ANSI, "").trim().match(LINE);
  if (m) rows.set(`${m[2]} ${m[1]} ${m[3]} ${m[12]}`, m.slice(1));
}
const order = ["kill", "stop", "partition", "double-kill", "forge"];
const sorted = [...rows.values()].sort((a, b) =>
  (a[1] === "tcp" ? 0 : 1) - (b[1] === "tcp" ? 0 : 1) || order.indexOf(a[0]) - order.indexOf(b[0]) ||
  a[2].localeCompare(b[2]) * -1 || a[11].localeCompare(b[11])
);
console.log("| fault | transport | ack | driver | servers | acknowledged | lost | stale reads | overlapping primaries | sessions lost | unreadable |");
console.log("| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const [f, t, a, acked, lost, stale, overlap, sessionsLost, , unreadable, servers, runner] of sorted) {
  console.log(`| ${f} | ${t} | ${a} | ${runner} | ${servers.replaceAll(",", " ")} | ${acked} | ${lost} | ${stale} | ${overlap} | ${sessionsLost} | ${unreadable} |`);
}
if (rows.size === 0) console.error(`no fault summary lines in ${file}`);
