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
  return entryOf(key, value).bytes;
}

/** One attribute as JSON: the value's text and the bytes of `"key":value`. */
export interface EncodedEntry {
  value: unknown;
  text: string;
  bytes: number;
}

function entryOf(key: string, value: unknown): EncodedEntry {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`json codec cannot encode attribute '${key}' (a ${typeof value})`);
  return { value, text, bytes: keyBytes(key) + 1 + utf8Length(text) };
}

function keyBytes(key: string): number {
  // Keys without characters JSON escapes cost their UTF-8 length plus the two quotes.
  return plainJsonString(key) ? utf8Length(key) + 2 : utf8Length(JSON.stringify(key));
}

/** True if `JSON.stringify(text)` is `text` between quotes (no character JSON escapes; surrogates left to `JSON.stringify`). */
export function plainJsonString(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return false;
  }
  return true;
}

/** `JSON.stringify(text)`, without the call for the common plain string. */
export function jsonString(text: string): string {
  return plainJsonString(text) ? `"${text}"` : JSON.stringify(text);
}

/** `JSON.stringify(n)` for a number. */
export function jsonNumber(n: number): string {
  return Number.isFinite(n) ? `${n}` : "null";
}

/**
 * Running JSON size of one attribute object.
 *
 * `after` remembers the entries it encoded until the next `after`, so that
 * `apply` of the same change (the commit that follows its check, in one
 * synchronous step) encodes nothing again, and the commit's delta can reuse
 * the values' JSON text (`encodedValue`).
 */
export class SizeBook {
  #entries = new Map<string, number>();
  #sum = 0;
  #memo = new Map<string, EncodedEntry>();

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
    this.#memo.clear();
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
      const entry = entryOf(key, value);
      this.#memo.set(key, entry);
      sum += entry.bytes;
    }
    return sizeOf(sum, count);
  }

  /** The JSON text of `value` for `key` if the last `after` encoded that very value, else `undefined`. */
  encodedValue(key: string, value: unknown): string | undefined {
    const m = this.#memo.get(key);
    return m !== undefined && m.value === value ? m.text : undefined;
  }

  /** Applies a committed change. */
  apply(set: Attributes, del: Iterable<string>): void {
    for (const key of del) {
      const old = this.#entries.get(key);
      if (old === undefined) continue;
      this.#sum -= old;
      this.#entries.delete(key);
    }
    for (const key in set) {
      if (!Object.hasOwn(set, key)) continue;
      const value = set[key];
      const m = this.#memo.get(key);
      const bytes = m !== undefined && m.value === value ? m.bytes : entryBytes(key, value);
      this.#sum += bytes - (this.#entries.get(key) ?? 0);
      this.#entries.set(key, bytes);
    }
  }
}

function sizeOf(sum: number, count: number): number {
  return 2 + sum + Math.max(0, count - 1);
}
