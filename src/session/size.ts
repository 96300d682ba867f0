/**
 * The encoded size of a session's attributes, kept up to date change by
 * change instead of re-encoding the whole session on every `set` and commit.
 *
 * It counts what the JSON codec writes for an attribute object:
 * `{` + entries joined by `,` + `}`, an entry being `"key":value`, so a
 * change costs the encoding of the changed values only. (Other codecs are
 * measured whole, by the store.)
 *
 * @module
 */

import type { Attributes } from "./types.ts";

/** UTF-8 length of a string, without encoding it. */
export function utf8Length(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 2; // a surrogate pair: 2 UTF-16 units, 4 bytes
        i++;
      } else n += 2;
    } else n += 2;
  }
  return n;
}

/** Bytes of `"key":value` as JSON; throws `TypeError` for a value JSON cannot represent. */
export function entryBytes(key: string, value: unknown): number {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`json codec cannot encode attribute '${key}' (a ${typeof value})`);
  return utf8Length(JSON.stringify(key)) + 1 + utf8Length(text);
}

/** Running JSON size of one attribute object. */
export class SizeBook {
  #entries = new Map<string, number>();
  #sum = 0;

  constructor(attributes: Attributes) {
    for (const [key, value] of Object.entries(attributes)) {
      const bytes = entryBytes(key, value);
      this.#entries.set(key, bytes);
      this.#sum += bytes;
    }
  }

  /** The encoded size now. */
  get total(): number {
    return sizeOf(this.#sum, this.#entries.size);
  }

  /** The encoded size after setting `set` and deleting `del` (deletes first, as a commit applies them). */
  after(set: Attributes, del: Iterable<string>): number {
    let sum = this.#sum;
    let count = this.#entries.size;
    const gone = new Set<string>();
    for (const key of del) {
      const old = this.#entries.get(key);
      if (old !== undefined && !gone.has(key)) {
        sum -= old;
        count--;
        gone.add(key);
      }
    }
    for (const [key, value] of Object.entries(set)) {
      const old = gone.has(key) ? undefined : this.#entries.get(key);
      if (old !== undefined) sum -= old;
      else count++;
      sum += entryBytes(key, value);
    }
    return sizeOf(sum, count);
  }

  /** Applies a committed change. */
  apply(set: Attributes, del: Iterable<string>): void {
    for (const key of del) {
      const old = this.#entries.get(key);
      if (old === undefined) continue;
      this.#sum -= old;
      this.#entries.delete(key);
    }
    for (const [key, value] of Object.entries(set)) {
      const bytes = entryBytes(key, value);
      this.#sum += bytes - (this.#entries.get(key) ?? 0);
      this.#entries.set(key, bytes);
    }
  }
}

function sizeOf(sum: number, count: number): number {
  return 2 + sum + Math.max(0, count - 1);
}
