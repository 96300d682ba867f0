import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseSecondary, hash53 } from "../src/cluster/rendezvous.ts";
import { formatSessionCookie, parseSessionCookie, readCookie } from "../src/cluster/cookie.ts";
import { validatePeers } from "../src/cluster/peers.ts";
import { newSessionId } from "../src/session/ids.ts";

const peers = ["a", "b", "c", "d", "e"].map((id) => ({ id }));

test("rendezvous hashing never picks the primary and is the same on every call", () => {
  for (let i = 0; i < 200; i++) {
    const id = newSessionId();
    const s = chooseSecondary(id, { id: "a" }, peers);
    assert.notEqual(s, "a");
    assert.equal(s, chooseSecondary(id, { id: "a" }, [...peers].reverse()));
  }
  assert.equal(chooseSecondary("x", { id: "a" }, [{ id: "a" }]), undefined);
});

test("rendezvous hashing spreads sessions over peers and moves only the removed peer's sessions", () => {
  const counts = new Map<string, number>();
  const before = new Map<string, string>();
  for (let i = 0; i < 4000; i++) {
    const id = `session-${i}`;
    const s = chooseSecondary(id, { id: "a" }, peers)!;
    before.set(id, s);
    counts.set(s, (counts.get(s) ?? 0) + 1);
  }
  for (const p of ["b", "c", "d", "e"]) assert.ok(counts.get(p)! > 800 && counts.get(p)! < 1200, `${p}: ${counts.get(p)}`);
  const without = peers.filter((p) => p.id !== "c");
  for (const [id, s] of before) {
    const after = chooseSecondary(id, { id: "a" }, without)!;
    if (s !== "c") assert.equal(after, s, "a session whose secondary survived keeps it");
    else assert.notEqual(after, "c");
  }
});

test("rendezvous hashing prefers a secondary in another group and falls back to the same group", () => {
  const grouped = [
    { id: "a", group: "r1" },
    { id: "b", group: "r1" },
    { id: "c", group: "r1" },
    { id: "d", group: "r2" },
  ];
  for (let i = 0; i < 100; i++) assert.equal(chooseSecondary(`s${i}`, grouped[0], grouped), "d");
  const r1only = grouped.slice(0, 3);
  for (let i = 0; i < 100; i++) assert.ok(["b", "c"].includes(chooseSecondary(`s${i}`, grouped[0], r1only)!));
});

test("rendezvous hash53 is stable across runtimes (fixed values)", () => {
  assert.equal(hash53(""), 3338908027751811);
  assert.equal(hash53("a\u0000session"), hash53("a\u0000session"));
  assert.notEqual(hash53("a\u0000s1"), hash53("b\u0000s1"));
});

test("session cookie round-trips id!primary!secondary and rejects anything else", () => {
  const id = newSessionId();
  const text = formatSessionCookie({ id, primary: "srv-1", secondary: "srv-2" });
  assert.equal(text, `${id}!srv-1!srv-2`);
  assert.deepEqual(parseSessionCookie(text), { id, primary: "srv-1", secondary: "srv-2" });
  assert.deepEqual(parseSessionCookie(`${id}!srv-1!`), { id, primary: "srv-1", secondary: undefined });
  for (const bad of ["", id, `${id}!a`, `${id}!a!b!c`, `bad id!a!b`, `${id}!!b`, `${id}!a!b c`, `${id}!a b!c`]) {
    assert.equal(parseSessionCookie(bad), undefined, bad);
  }
  assert.equal(readCookie("x=1; sid=abc!a!b; y=2", "sid"), "abc!a!b");
  assert.equal(readCookie("x=1", "sid"), undefined);
  assert.equal(readCookie(null, "sid"), undefined);
});

test("cluster peer list validation names the broken rule", () => {
  assert.throws(() => validatePeers("a", [{ id: "a", host: "h", port: 1 }, { id: "a", host: "h", port: 2 }]), /unique/);
  assert.throws(() => validatePeers("a", [{ id: "a!", host: "h", port: 1 }]), /'id' must be/);
  assert.throws(() => validatePeers("z", [{ id: "a", host: "h", port: 1 }]), /'z' is not in the list/);
  assert.throws(() => validatePeers("a", [{ id: "a", host: "h", port: 70000 }]), /'port' must be 0..65535: got 70000/);
});
