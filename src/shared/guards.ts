/**
 * Guards for values built from untrusted JSON or YAML (bundle data and
 * manifests, config files, persisted state, stored rows, key sets). The
 * parsers themselves are safe: `JSON.parse` and the `yaml` package create a
 * key named `__proto__` as an own data property. The danger is what code does
 * next: `k in obj` is true for `__proto__`, `constructor` and every other
 * member of Object.prototype, `obj[k]` then yields the prototype itself, and
 * `obj[k] = v` with k = `__proto__` replaces an object's prototype. So:
 *
 * - documents that are merged, walked or kept (bundle data, manifests,
 *   config) are refused when they hold one of `FORBIDDEN_KEYS` anywhere
 *   (`forbiddenKey`, `parseUntrustedJson`);
 * - membership is tested with `hasOwn`, never `in`;
 * - lookups keyed by untrusted strings go through a `Map` or a
 *   null-prototype object (`nullProto`).
 *
 * The request-body path (src/http/body.ts) has its own single-pass check.
 */
import { rethrowAs, type ErrorCode } from "../errors";

/** Keys that reach a prototype through `in`, `obj[k]` or `obj[k] = v`. */
export const FORBIDDEN_KEYS: ReadonlySet<string> = new Set([
  "__proto__",
  "constructor",
  "prototype",
]);

/**
 * Whether `v` is a JSON object: not null, not an array. (Any other object
 * passes too; values from `JSON.parse` or the yaml parser are only ever
 * plain objects, arrays and primitives.)
 */
export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Whether `key` is an own property of `obj` (what `key in obj` should have meant). */
export function hasOwn(obj: object, key: PropertyKey): boolean {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

/** RFC 6901 escaping of one JSON Pointer segment. */
function pointerSegment(key: string): string {
  return key.replace(/~/g, "~0").replace(/\//g, "~1");
}

/** Where a forbidden key was found: the key and the JSON Pointer of the object holding it ("/" for the root). */
export interface ForbiddenKeyHit {
  key: string;
  at: string;
}

/**
 * The first forbidden key in a parsed document (depth first, in document
 * order), or undefined. Iterative, so depth is not bounded by the call stack;
 * shared and cyclic references (YAML aliases) are walked once.
 */
export function forbiddenKey(value: unknown): ForbiddenKeyHit | undefined {
  if (value === null || typeof value !== "object") return undefined;
  const seen = new Set<object>();
  const stack: Array<[object, string]> = [[value, ""]];
  while (stack.length > 0) {
    const [node, at] = stack.pop() as [object, string];
    if (seen.has(node)) continue;
    seen.add(node);
    const keys = Array.isArray(node) ? undefined : Object.keys(node);
    if (keys !== undefined) {
      for (const k of keys) if (FORBIDDEN_KEYS.has(k)) return { key: k, at: at === "" ? "/" : at };
    }
    const children: Array<[object, string]> = [];
    if (Array.isArray(node)) {
      node.forEach((v: unknown, i) => {
        if (v !== null && typeof v === "object") children.push([v, `${at}/${i}`]);
      });
    } else {
      for (const k of keys as string[]) {
        const v = (node as Record<string, unknown>)[k];
        if (v !== null && typeof v === "object") children.push([v, `${at}/${pointerSegment(k)}`]);
      }
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i] as [object, string]);
  }
  return undefined;
}

/** `forbidden key "__proto__" at /a/b`, for a hit. */
export function describeForbiddenKey(hit: ForbiddenKeyHit): string {
  return `forbidden key ${JSON.stringify(hit.key)} at ${hit.at}`;
}

/** Throws (a plain Error naming key and path) when `value` holds a forbidden key; returns it otherwise. */
export function assertNoForbiddenKeys<T>(value: T): T {
  const hit = forbiddenKey(value);
  if (hit !== undefined) throw new Error(describeForbiddenKey(hit));
  return value;
}

/**
 * `JSON.parse` for text from outside the process (files, stored rows,
 * network): throws a SyntaxError for bad JSON and an Error naming the key and
 * path for a forbidden key. Callers wrap both in their own error code.
 */
export function parseUntrustedJson(text: string): unknown {
  return assertNoForbiddenKeys(JSON.parse(text) as unknown);
}

/**
 * `JSON.parse` of a document toolgate reads (a file's UTF-8 bytes, or text),
 * or a `code` error "<what>: <the parser's message>" that keeps the parser's
 * error as its cause.
 */
export function parseJsonOr(code: ErrorCode, what: string, raw: Buffer | string): unknown {
  const text = typeof raw === "string" ? raw : raw.toString("utf8");
  return rethrowAs(code, what, () => JSON.parse(text) as unknown);
}

/**
 * A shallow copy of a plain object's own enumerable members into an object
 * without a prototype: a missing member reads as undefined, whatever
 * Object.prototype holds.
 */
export function nullProto<T extends object>(obj: T): T {
  const out = Object.create(null) as Record<string, unknown>;
  for (const [k, v] of Object.entries(obj)) {
    Object.defineProperty(out, k, {
      value: v,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out as T;
}
