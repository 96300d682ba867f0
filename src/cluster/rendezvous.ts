/**
 * Secondary selection by rendezvous (highest-random-weight) hashing.
 *
 * Each candidate peer gets a score `hash(peerId, sessionId)`; the highest
 * wins. Adding or removing a peer moves only the sessions whose winner it
 * was, and every server computes the same answer with no coordination. With
 * groups, candidates outside the primary's group are preferred (so the
 * secondary sits on another machine or rack); the primary's own group is used
 * only when no other group has a live peer.
 *
 * @module
 */

/** A candidate for secondary. */
export interface RendezvousCandidate {
  id: string;
  group?: string;
}

/**
 * A 53-bit string hash (cyrb53): identical in every runtime, well mixed.
 * Not cryptographic; used only to spread sessions.
 */
export function hash53(text: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** The score of `peer` for `sessionId`. */
export function rendezvousScore(sessionId: string, peer: string): number {
  return hash53(`${peer}\u0000${sessionId}`);
}

/**
 * Chooses the secondary for `sessionId` among `candidates`, never `self`.
 * Returns `undefined` when there is no other candidate.
 *
 * @example
 * ```ts
 * import { chooseSecondary } from "./rendezvous.ts";
 * const peers = [{ id: "a", group: "r1" }, { id: "b", group: "r1" }, { id: "c", group: "r2" }];
 * console.log(chooseSecondary("sess1", { id: "a", group: "r1" }, peers)); // "c": the only other group
 * ```
 */
export function chooseSecondary(
  sessionId: string,
  self: RendezvousCandidate,
  candidates: Iterable<RendezvousCandidate>,
): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  let bestOther = false;
  for (const c of candidates) {
    if (c.id === self.id) continue;
    const other = self.group === undefined || c.group === undefined || c.group !== self.group;
    const score = rendezvousScore(sessionId, c.id);
    const better = best === undefined ||
      (other && !bestOther) ||
      (other === bestOther && (score > bestScore || (score === bestScore && c.id < best)));
    if (better) {
      best = c.id;
      bestScore = score;
      bestOther = other;
    }
  }
  return best;
}
