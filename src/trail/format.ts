/**
 * The trail's line layout, which the writer produces and the reader checks.
 *
 * Every record is one line
 *
 *   {"seq":n,"time":"ISO","kind":"decision","prev":"<hex>","record":{...},"hash":"<hex>"}
 *
 * where `hash` is SHA-256 over the line's own bytes up to (not including)
 * `,"hash":` — the record exactly as written — and `prev` is the previous
 * record's hash (64 zeros for the first record). Any edit to a line, even
 * whitespace, breaks its hash. seq and the chain continue across files
 * (`trail-000001.jsonl`, `trail-000002.jsonl`, ...). See docs/audit-trail.md
 * for the format and for what the chain can and cannot prove.
 */
import { createHash } from "node:crypto";
import { toolgateError } from "../errors";

export const GENESIS_HASH = "0".repeat(64);

/** The kind of the marker record written when `AuditTrail.open` skips a damaged tail. */
export const RECOVERED_KIND = "trail.recovered";

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** The part of a line that is hashed: everything before `,"hash":`. */
export function lineBody(
  seq: number,
  time: string,
  kindJson: string,
  prev: string,
  recJson: string,
): string {
  return `{"seq":${seq},"time":${JSON.stringify(time)},"kind":${kindJson},"prev":"${prev}","record":${recJson}`;
}

/** `,"hash":"<64 hex>"}` closes every line. */
export const HASH_SUFFIX_LENGTH = ',"hash":"'.length + 64 + '"}'.length;

// -- canonical JSON -----------------------------------------------------------
//
// The trail keeps its own serialiser rather than the strict RFC 8785 one in
// src/shared/jcs.ts: both write the same bytes for plain JSON values without
// lone surrogates (keys sorted by UTF-16 code units, JSON.stringify's string
// and number forms, undefined object members omitted), but this one is
// lenient where that one refuses, and pinned by test/unit/trail.test.ts:
// non-finite numbers and undefined / function / symbol array elements (and
// sparse holes) become null, function and symbol members are omitted, toJSON
// is honoured (a Date becomes its ISO string), any object is walked by its
// own enumerable string keys (symbol keys ignored), lone surrogates are
// written as JSON.stringify escapes them, and nesting stops at 200 (a cycle
// is reported as too deep) with `audit_record_invalid`.

const MAX_DEPTH = 200;

export function invalidRecord(message: string): Error {
  return toolgateError("audit_record_invalid", message);
}

function canon(value: unknown, depth: number): string {
  if (depth > MAX_DEPTH)
    throw invalidRecord(`audit record nests deeper than ${MAX_DEPTH} (or is cyclic)`);
  if (value === null) return "null";
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "number":
      return Number.isFinite(value) ? JSON.stringify(value) : "null";
    case "boolean":
      return value ? "true" : "false";
    case "object":
      break;
    default:
      throw invalidRecord(`audit records must be plain JSON; found a ${typeof value}`);
  }
  const toJSON = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === "function") return canon((toJSON as () => unknown).call(value), depth + 1);
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      if (i > 0) out += ",";
      out += skippable(item) ? "null" : canon(item, depth + 1);
    }
    return out + "]";
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  let out = "{";
  let first = true;
  for (const key of keys) {
    const item = obj[key];
    if (skippable(item)) continue;
    if (!first) out += ",";
    first = false;
    out += JSON.stringify(key) + ":" + canon(item, depth + 1);
  }
  return out + "}";
}

function skippable(v: unknown): boolean {
  return v === undefined || typeof v === "function" || typeof v === "symbol";
}

/**
 * Deterministic JSON: object keys sorted (UTF-16 code unit order)
 * recursively, no whitespace, JSON.stringify's rules otherwise (undefined
 * members skipped, non-finite numbers as null, toJSON honoured). BigInt and
 * cycles are refused with `audit_record_invalid`.
 */
export function canonicalJson(value: unknown): string {
  return canon(value, 0);
}
