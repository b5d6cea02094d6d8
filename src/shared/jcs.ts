/**
 * RFC 8785 JSON Canonicalization Scheme (JCS).
 *
 * `canonicalize(value)` returns the canonical JSON text of a JSON value held
 * in memory (as `JSON.parse` produces it):
 *
 * - objects: members sorted by their names compared as arrays of UTF-16 code
 *   units (RFC 8785 §3.2.3). JavaScript's relational `<` on strings compares
 *   code units (ECMA-262 IsLessThan), which is exactly that order — not code
 *   points (U+1F600, stored as D83D DE00, sorts before U+FB33) and not any
 *   locale. The tests pin this with the RFC's examples.
 * - no whitespace anywhere.
 * - strings: `JSON.stringify`'s escaping, which is the ECMAScript
 *   serialisation RFC 8785 §3.2.2.2 adopts (`\b \t \n \f \r \" \\`, other
 *   controls below U+0020 as lower-case `\u00xx`, everything else literal,
 *   including `/`, U+007F and non-ASCII).
 * - numbers: ECMAScript `Number.prototype.toString` (RFC 8785 §3.2.2.3),
 *   which `JSON.stringify` also uses; `-0` becomes `0`. NaN and ±Infinity are
 *   not JSON and are rejected.
 * - arrays: elements in order.
 * - literals: `null`, `true`, `false`.
 *
 * Decisions (strict, because this feeds a security hash; a value that could
 * be serialised two ways must not be serialised at all):
 *
 * - an object member whose value is `undefined` is omitted (as
 *   `JSON.stringify` does; such a member cannot come from parsed JSON);
 *   `undefined` as an array element or as the top-level value is rejected.
 * - rejected: BigInt, functions, symbols, non-finite numbers, symbol-keyed
 *   members, cycles, nesting deeper than {@link MAX_DEPTH}, strings (values or
 *   names) holding a lone surrogate (I-JSON, RFC 7493 §2.1, which RFC 8785
 *   requires), and every object that is not a plain object or array: Date,
 *   Map, Set, RegExp, Buffer / typed arrays, boxed primitives, class
 *   instances. `toJSON` is never called: a Date must be turned into a string
 *   by the caller, so the hash never depends on a hidden conversion.
 * - plain objects are those whose prototype is `Object.prototype` or `null`.
 *
 * Rejections throw `json_not_canonicalizable` (400) naming the JSON path.
 *
 * `canonicalizeAny(value)` is the same serialiser made total, for hashing
 * whatever a caller hands in (the redactor's keyed hashes): for every value
 * `canonicalize` accepts and nested no deeper than {@link ANY_MAX_DEPTH} it
 * writes the same text, and where `canonicalize` refuses it writes something
 * instead, as `JSON.stringify` would where `JSON.stringify` writes anything
 * (see {@link canonicalizeAny}).
 */
import { toolgateError } from "../errors";

/** Nesting deeper than this is refused (the HTTP faces refuse far less). */
export const MAX_DEPTH = 1000;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Compares two strings by UTF-16 code units (RFC 8785 §3.2.3). */
export function compareUtf16(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The canonical (RFC 8785) JSON text of `value`. */
export function canonicalize(value: unknown): string {
  // The fast writer handles the common case (plain JSON, well-formed strings,
  // shallow) with no path bookkeeping; on anything it does not accept it gives
  // up and the full writer below decides, writing the text or naming the path
  // it refuses. Both write the same text for every value the fast one accepts.
  const fast = fastWrite(value, 0);
  if (fast !== undefined) return fast;
  const out: string[] = [];
  write(value, "$", 0, new Set<object>(), out, false);
  return out.join("");
}

/** Deeper than this the fast writer gives up (cycles end here too). */
const FAST_MAX_DEPTH = 64;

// String.prototype.isWellFormed (ES2024; Node 20+), else the regular expression.
const isWellFormed = (String.prototype as { isWellFormed?: (this: string) => boolean })
  .isWellFormed;
const wellFormed: (s: string) => boolean =
  typeof isWellFormed === "function" ? (s) => isWellFormed.call(s) : (s) => !LONE_SURROGATE.test(s);

/**
 * The canonical text of `value` if it is plain JSON nested no deeper than
 * {@link FAST_MAX_DEPTH}, else undefined (never throws on a value's shape).
 * Object members are sorted by the default sort, which compares UTF-16 code
 * units as {@link compareUtf16} does.
 */
function fastWrite(value: unknown, depth: number): string | undefined {
  switch (typeof value) {
    case "string":
      return wellFormed(value) ? JSON.stringify(value) : undefined;
    case "number":
      return Number.isFinite(value) ? String(value) : undefined;
    case "boolean":
      return value ? "true" : "false";
    case "object":
      break;
    default:
      return undefined;
  }
  if (value === null) return "null";
  if (depth >= FAST_MAX_DEPTH) return undefined;
  if (Array.isArray(value)) {
    if (Object.getPrototypeOf(value) !== Array.prototype) return undefined;
    let text = "[";
    for (let i = 0; i < value.length; i++) {
      if (!(i in value)) return undefined;
      const item = fastWrite((value as unknown[])[i], depth + 1);
      if (item === undefined) return undefined;
      text += i === 0 ? item : `,${item}`;
    }
    return `${text}]`;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return undefined;
  if (Object.getOwnPropertySymbols(value).length > 0) return undefined;
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record).sort();
  let text = "{";
  let first = true;
  for (const key of keys) {
    const member = record[key];
    if (member === undefined) continue;
    if (!wellFormed(key)) return undefined;
    const m = fastWrite(member, depth + 1);
    if (m === undefined) return undefined;
    text += `${first ? "" : ","}${JSON.stringify(key)}:${m}`;
    first = false;
  }
  return `${text}}`;
}

/** What {@link canonicalizeAny} writes for a cycle or nesting deeper than {@link ANY_MAX_DEPTH}. */
export const CIRCULAR = "[CIRCULAR]";

/** {@link canonicalizeAny} writes {@link CIRCULAR} for objects nested deeper than this. */
export const ANY_MAX_DEPTH = 256;

/**
 * The canonical JSON text of any value, refusing none. For a value
 * {@link canonicalize} accepts (nested no deeper than {@link ANY_MAX_DEPTH}),
 * the same text. Otherwise `JSON.stringify`'s rules with the members sorted
 * the same way: toJSON is called (except on binary data); a non-finite number,
 * and undefined, a function or a symbol as the value or an element (or a
 * sparse hole), is `null`; such members are omitted; any object is written by
 * its own enumerable string keys; lone surrogates are escaped. Where
 * `JSON.stringify` would throw or write nothing: a BigInt as its digits,
 * binary data (Buffer, typed arrays, DataView) as a base64 string, a cycle or
 * an object or array nested deeper than {@link ANY_MAX_DEPTH} as the string
 * {@link CIRCULAR}.
 */
export function canonicalizeAny(value: unknown): string {
  const out: string[] = [];
  write(value, "$", 0, new Set<object>(), out, true);
  return out.join("");
}

function fail(path: string, what: string): never {
  throw toolgateError("json_not_canonicalizable", `${path}: ${what}`);
}

/** `what` is not JSON: refused (strict), or written as `text` (any). */
function notJson(any: boolean, path: string, what: string, text: string, out: string[]): void {
  if (!any) fail(path, what);
  out.push(text);
}

function serializeString(s: string, path: string, any: boolean): string {
  if (!any && LONE_SURROGATE.test(s)) fail(path, "a string holds a lone surrogate (not I-JSON)");
  return JSON.stringify(s);
}

function write(
  value: unknown,
  path: string,
  depth: number,
  seen: Set<object>,
  out: string[],
  any: boolean,
): void {
  switch (typeof value) {
    case "string":
      out.push(serializeString(value, path, any));
      return;
    case "number":
      // Number.prototype.toString, which JSON.stringify also uses; -0 → "0".
      if (Number.isFinite(value)) out.push(String(value));
      else notJson(any, path, `${String(value)} is not a JSON number`, "null", out);
      return;
    case "boolean":
      out.push(value ? "true" : "false");
      return;
    case "undefined":
      return notJson(any, path, "undefined is not a JSON value", "null", out);
    case "bigint":
      return notJson(
        any,
        path,
        "a BigInt is not a JSON value (use a number or a string)",
        value.toString(),
        out,
      );
    case "function":
    case "symbol":
      return notJson(any, path, `a ${typeof value} is not a JSON value`, "null", out);
    case "object":
      break;
  }
  if (value === null) {
    out.push("null");
    return;
  }
  if (any) {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === "function" && !ArrayBuffer.isView(value)) {
      write((toJSON as () => unknown).call(value), path, depth, seen, out, any);
      return;
    }
    if (depth > ANY_MAX_DEPTH || seen.has(value)) {
      out.push(JSON.stringify(CIRCULAR));
      return;
    }
    if (ArrayBuffer.isView(value)) {
      const bytes = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      out.push(JSON.stringify(bytes.toString("base64")));
      return;
    }
  } else {
    if (depth >= MAX_DEPTH) fail(path, `nesting deeper than ${MAX_DEPTH}`);
    if (seen.has(value)) fail(path, "a cycle");
  }
  seen.add(value);
  if (Array.isArray(value)) {
    if (!any && Object.getPrototypeOf(value) !== Array.prototype) fail(path, "not a plain array");
    out.push("[");
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out.push(",");
      const p = any ? path : `${path}[${i}]`;
      if (i in value) write((value as unknown[])[i], p, depth + 1, seen, out, any);
      else notJson(any, p, "a sparse array hole", "null", out);
    }
    out.push("]");
  } else {
    if (!any) {
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
        fail(path, `a ${typeof name === "string" ? name : "non-plain"} object is not JSON`);
      }
      if (Object.getOwnPropertySymbols(value).length > 0) fail(path, "a symbol-keyed member");
    }
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record).sort(compareUtf16);
    out.push("{");
    let first = true;
    for (const key of keys) {
      const member = record[key];
      if (member === undefined) continue;
      if (any && (typeof member === "function" || typeof member === "symbol")) continue;
      const p = any ? path : `${path}[${JSON.stringify(key)}]`;
      if (!first) out.push(",");
      first = false;
      out.push(serializeString(key, p, any), ":");
      write(member, p, depth + 1, seen, out, any);
    }
    out.push("}");
  }
  seen.delete(value);
}
