import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseSecondary, hash53 } from "../src/cluster/rendezvous.ts";
import { formatSessionCookie, parseSessionCookie, readCookie, SessionCookieSigner } from "../src/cluster/cookie.ts";
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
  // Computed once under Bun 1.4 and Deno 2.9 (identical); any change to the hash moves
  // every session's secondary, and mixed Bun/Deno clusters would disagree.
  const pinned: [string, number, number][] = [
    ["", 0, 3338908027751811],
    ["a", 0, 7929297801672961],
    ["a\u0000session", 0, 5196713651381697],
    ["srv-1\u0000Zx9_q", 0, 802227824449505],
    ["b\u0000s1", 0, 204513235806046],
    ["h\u00e9llo \u2603", 0, 8380716218886935],
    ["", 1, 7956228673112545],
    ["a", 42, 1768335378950291],
  ];
  for (const [text, seed, want] of pinned) assert.equal(hash53(text, seed), want, JSON.stringify([text, seed]));
  assert.notEqual(hash53("a\u0000s1"), hash53("b\u0000s1"));
});

test("session cookie round-trips id!primary!secondary and rejects anything else", () => {
  const id = newSessionId();
  const text = formatSessionCookie({ id, primary: "srv-1", secondary: "srv-2" });
  assert.equal(text, `${id}!srv-1!srv-2`);
  assert.deepEqual(parseSessionCookie(text), { id, primary: "srv-1", secondary: "srv-2" });
  assert.deepEqual(parseSessionCookie(`${id}!srv-1!`), { id, primary: "srv-1", secondary: undefined });
  for (const bad of ["", id, `${id}!a`, `${id}!a!b!c!d`, `bad id!a!b`, `${id}!!b`, `${id}!a!b c`, `${id}!a b!c`]) {
    assert.equal(parseSessionCookie(bad), undefined, bad);
  }
  // Signed: the routing fields verify only with the MAC of the same secret.
  const signer = new SessionCookieSigner("cluster-secret-0123456789");
  const signed = signer.format({ id, primary: "srv-1", secondary: "srv-2" });
  assert.match(signed, new RegExp(`^${id}!srv-1!srv-2![A-Za-z0-9_-]{22}$`));
  assert.deepEqual(signer.verify(signed), { id, primary: "srv-1", secondary: "srv-2" });
  assert.deepEqual(parseSessionCookie(signed), { id, primary: "srv-1", secondary: "srv-2" }, "routing fields readable without the key");
  const mac = signed.split("!")[3];
  for (const forged of [text, `${id}!srv-1!srv-3!${mac}`, `${id}!srv-2!srv-1!${mac}`, `${signed}x`, signed.slice(0, -1) + (signed.endsWith("A") ? "B" : "A")]) {
    assert.equal(signer.verify(forged), undefined, forged);
  }
  assert.equal(new SessionCookieSigner("another-secret-0123456789").verify(signed), undefined, "another cluster's cookie");
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
