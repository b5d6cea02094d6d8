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
  const out: string[] = [];
  write(value, "$", 0, new Set<object>(), out);
  return out.join("");
}

function fail(path: string, what: string): never {
  throw toolgateError("json_not_canonicalizable", `${path}: ${what}`);
}

function serializeString(s: string, path: string): string {
  if (LONE_SURROGATE.test(s)) fail(path, "a string holds a lone surrogate (not I-JSON)");
  return JSON.stringify(s);
}

function serializeNumber(n: number, path: string): string {
  if (!Number.isFinite(n)) fail(path, `${String(n)} is not a JSON number`);
  // Object.is(n, -0) → "0": Number.prototype.toString(-0) is already "0".
  return String(n);
}

function write(value: unknown, path: string, depth: number, seen: Set<object>, out: string[]) {
  switch (typeof value) {
    case "string":
      out.push(serializeString(value, path));
      return;
    case "number":
      out.push(serializeNumber(value, path));
      return;
    case "boolean":
      out.push(value ? "true" : "false");
      return;
    case "undefined":
      return fail(path, "undefined is not a JSON value");
    case "bigint":
      return fail(path, "a BigInt is not a JSON value (use a number or a string)");
    case "function":
    case "symbol":
      return fail(path, `a ${typeof value} is not a JSON value`);
    case "object":
      break;
  }
  if (value === null) {
    out.push("null");
    return;
  }
  if (depth >= MAX_DEPTH) fail(path, `nesting deeper than ${MAX_DEPTH}`);
  if (seen.has(value)) fail(path, "a cycle");
  seen.add(value);
  if (Array.isArray(value)) {
    if (Object.getPrototypeOf(value) !== Array.prototype) fail(path, "not a plain array");
    out.push("[");
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out.push(",");
      const p = `${path}[${i}]`;
      if (!(i in value)) fail(p, "a sparse array hole");
      write((value as unknown[])[i], p, depth + 1, seen, out);
    }
    out.push("]");
  } else {
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
      fail(path, `a ${typeof name === "string" ? name : "non-plain"} object is not JSON`);
    }
    if (Object.getOwnPropertySymbols(value).length > 0) fail(path, "a symbol-keyed member");
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record).sort(compareUtf16);
    out.push("{");
    let first = true;
    for (const key of keys) {
      const member = record[key];
      if (member === undefined) continue;
      const p = `${path}[${JSON.stringify(key)}]`;
      if (!first) out.push(",");
      first = false;
      out.push(serializeString(key, p), ":");
      write(member, p, depth + 1, seen, out);
    }
    out.push("}");
  }
  seen.delete(value);
}
