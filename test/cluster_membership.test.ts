/**
 * The membership rules (src/cluster/membership.ts) on a fake clock: leases
 * from a majority, votes only after a lease has run out plus the margin,
 * final votes, incarnations, and the safety property itself checked over
 * random schedules.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { Membership } from "../src/cluster/membership.ts";

const LEASE = 1000;
const MARGIN = 200;

function cluster(ids: string[], clock: { t: number }) {
  const nodes = new Map<string, Membership>();
  for (const id of ids) {
    nodes.set(id, new Membership({ self: id, servers: ids, leaseMs: LEASE, marginMs: MARGIN, now: () => clock.t, incarnation: `${id}1` }));
  }
  /** `from` pings `to` and gets the answer (no delay). */
  const ping = (from: string, to: string) => {
    const a = nodes.get(from)!;
    const b = nodes.get(to)!;
    const sentAt = clock.t;
    const { answer } = b.answerPing(from, a.incarnation);
    return a.onPingAnswer(to, sentAt, answer);
  };
  return { nodes, ping };
}

test("membership: a lease needs answers from a majority and runs out leaseMs after the ping was sent", () => {
  const clock = { t: 0 };
  const { nodes, ping } = cluster(["a", "b", "c"], clock);
  const a = nodes.get("a")!;
  assert.equal(a.majority, 2);
  assert.equal(a.holdsLease(), false, "no grant yet");
  ping("a", "b");
  assert.equal(a.holdsLease(), true);
  assert.equal(a.leaseExpiry(), LEASE);
  clock.t = LEASE - 1;
  assert.equal(a.holdsLease(), true);
  clock.t = LEASE;
  assert.equal(a.holdsLease(), false, "expired exactly leaseMs after the send");
  const solo = new Membership({ self: "x", servers: ["x"], leaseMs: LEASE, marginMs: 0, now: () => clock.t });
  assert.equal(solo.holdsLease(), true, "a one-server cluster is its own majority");
});

test("membership: a voter says dead only after leaseMs + margin of silence, and a yes is final", () => {
  const clock = { t: 0 };
  const { nodes, ping } = cluster(["a", "b", "c"], clock);
  const b = nodes.get("b")!;
  clock.t = 5000;
  ping("a", "b");
  ping("a", "c");
  const inc = nodes.get("a")!.incarnation;
  clock.t = 5000 + LEASE + MARGIN;
  ping("b", "c"); // b holds a lease (from c): it may vote
  assert.equal(b.vote("a", inc), false, "not silent long enough");
  clock.t += 1;
  assert.equal(b.vote("a", inc), true);
  assert.equal(b.isDead("a", inc), true);
  // Final: the dead incarnation never gets a grant again. One refusal without a known
  // certificate is not enough to give up; a second (no majority left to grant) is.
  assert.deepEqual(ping("a", "b"), { evicted: false });
  ping("c", "b");
  assert.equal(nodes.get("c")!.vote("a", inc), true);
  assert.deepEqual(ping("a", "c"), { evicted: true });
  assert.equal(b.stats().votesGiven, 1);
});

test("membership: an incarnation a voter never heard of gets a no (it may be new and on its way)", () => {
  const clock = { t: 0 };
  const { nodes, ping } = cluster(["a", "b", "c"], clock);
  ping("b", "c");
  clock.t = 10 * LEASE;
  ping("b", "c");
  assert.equal(nodes.get("b")!.vote("a", "a-unheard-of"), false);
  assert.equal(nodes.get("b")!.isDead("a", "a-unheard-of"), false);
});

test("membership: a server without a lease of its own (paused, cut off) does not vote", () => {
  const clock = { t: 0 };
  const { nodes, ping } = cluster(["a", "b", "c"], clock);
  ping("b", "a");
  clock.t = 10 * LEASE; // b was stopped: its lease ran out, and it has heard from no one since
  assert.equal(nodes.get("b")!.vote("c", nodes.get("c")!.incarnation), false);
  assert.equal(nodes.get("b")!.isDead("c"), false);
});

test("membership: a new incarnation of a peer proves its old one dead, on both sides of a ping", () => {
  const clock = { t: 0 };
  const { nodes, ping } = cluster(["a", "b", "c"], clock);
  ping("a", "b");
  const old = nodes.get("a")!.incarnation;
  nodes.get("a")!.reincarnate("a2");
  ping("a", "b");
  assert.equal(nodes.get("b")!.isDead("a", old), true);
  assert.equal(nodes.get("b")!.isDead("a", "a2"), false);
  ping("b", "a");
  assert.equal(nodes.get("a")!.known("b"), nodes.get("b")!.incarnation);
});

test("membership safety: whenever a certificate for a server exists, that server has held no lease since before the certificate", () => {
  // Random schedules of pings, clock steps and certification attempts among 3 or 5 servers.
  fc.assert(
    fc.property(
      fc.constantFrom(3, 5),
      fc.array(
        fc.record({
          kind: fc.constantFrom("ping", "tick", "certify"),
          from: fc.nat(4),
          to: fc.nat(4),
          dt: fc.integer({ min: 1, max: 700 }),
        }),
        { minLength: 5, maxLength: 120 },
      ),
      (n, steps) => {
        const ids = ["a", "b", "c", "d", "e"].slice(0, n);
        const clock = { t: 10_000 };
        const { nodes, ping } = cluster(ids, clock);
        const certifiedAt = new Map<string, number>();
        for (const step of steps) {
          const from = ids[step.from % n];
          const to = ids[step.to % n];
          if (step.kind === "tick") clock.t += step.dt;
          else if (step.kind === "ping" && from !== to) {
            // A certified server keeps pinging: the voters refuse it, and the rest are no majority.
            ping(from, to);
          } else if (step.kind === "certify" && from !== to) {
            const accused = nodes.get(to)!;
            let yes = 0;
            for (const voter of ids) if (voter !== to && nodes.get(voter)!.vote(to, accused.incarnation)) yes++;
            if (yes >= accused.majority && !certifiedAt.has(to)) certifiedAt.set(to, clock.t);
          }
          // The property: a certified server holds no lease from the certificate on.
          for (const [id, at] of certifiedAt) {
            if (clock.t >= at && nodes.get(id)!.holdsLease()) return false;
          }
        }
        return true;
      },
    ),
    { numRuns: 300, seed: 20261202 },
  );
});

test("membership: dead incarnations are remembered per peer up to a bound (a peer naming made-up ones cannot grow it), the current one never forgotten", () => {
  const clock = { t: 0 };
  const { nodes, ping } = cluster(["a", "b", "c"], clock);
  ping("a", "b");
  const b = nodes.get("b")!;
  const real = nodes.get("a")!.incarnation;
  for (let i = 0; i < 1000; i++) b.markDead("a", `made-up-${i}`);
  assert.equal(b.isDead("a", "made-up-999"), true, "the newest are kept");
  assert.equal(b.isDead("a", "made-up-0"), false, "the oldest were forgotten");
  assert.equal(b.isDead("a", real), false, "the live incarnation is untouched");
  b.markDead("a", real);
  for (let i = 1000; i < 1200; i++) b.markDead("a", `made-up-${i}`);
  assert.equal(b.isDead("a", real), true, "the current incarnation, once dead, stays dead");
});
