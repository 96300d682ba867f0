/**
 * Value codecs for RMI arguments and results (and, through the session layer,
 * for session attributes). JSON is the default so that Bun and Deno servers
 * interoperate with no shared schema.
 *
 * @module
 */

/** Turns values into bytes and back. `decode` must throw on malformed input. */
export interface ValueCodec {
  /** A short name used in error messages, e.g. `"json"`. */
  readonly name: string;
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const EMPTY = new Uint8Array(0);

/** The JSON text `jsonCodec` encodes `value` (not `undefined`) as; `TypeError` for what JSON cannot represent. */
export function jsonText(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`json codec cannot encode a ${typeof value}`);
  return text;
}

/**
 * JSON codec: `undefined` is encoded as zero bytes; anything `JSON.stringify`
 * cannot represent (functions, bigint, cycles) throws a `TypeError`.
 *
 * @example
 * ```ts
 * import { jsonCodec } from "./codec.ts";
 * const bytes = jsonCodec.encode({ cart: ["apple"] });
 * console.log(jsonCodec.decode(bytes)); // { cart: ["apple"] }
 * ```
 */
export const jsonCodec: ValueCodec = {
  name: "json",
  encode(value: unknown): Uint8Array {
    if (value === undefined) return EMPTY;
    return encoder.encode(jsonText(value));
  },
  decode(bytes: Uint8Array): unknown {
    if (bytes.byteLength === 0) return undefined;
    return JSON.parse(decoder.decode(bytes));
  },
};
