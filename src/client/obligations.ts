import type { Obligation } from "./types";

/**
 * Obligation types this client honours: `redact` (it removes the listed
 * fields from the tool's result) and `grant_scope` (nothing to do here: the
 * scope is inside the grant, which the tool backend verifies). A decision
 * carrying any other type must not be acted on.
 */
export const CLIENT_OBLIGATIONS: ReadonlySet<string> = new Set(["redact", "grant_scope"]);

/** The first obligation whose type this client does not know, if any. */
export function unknownObligation(obligations: readonly Obligation[]): Obligation | undefined {
  return obligations.find((o) => !CLIENT_OBLIGATIONS.has(o.type));
}

/** The dotted paths of every `redact` obligation (`properties.fields`). */
export function redactFields(obligations: readonly Obligation[]): string[] {
  const out: string[] = [];
  for (const o of obligations) {
    if (o.type !== "redact") continue;
    const f = o.properties?.fields;
    if (Array.isArray(f)) for (const x of f) if (typeof x === "string" && x !== "") out.push(x);
  }
  return out;
}

const isPlain = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

function without(value: unknown, path: readonly string[]): unknown {
  if (Array.isArray(value)) {
    // a list of records: the path applies to each element
    let changed = false;
    const next = value.map((v) => {
      const r = without(v, path);
      if (r !== v) changed = true;
      return r;
    });
    return changed ? next : value;
  }
  if (!isPlain(value) || path.length === 0) return value;
  const [head, ...rest] = path as [string, ...string[]];
  if (!Object.prototype.hasOwnProperty.call(value, head)) return value;
  if (rest.length === 0) {
    const copy = { ...value };
    delete copy[head];
    return copy;
  }
  const inner = without(value[head], rest);
  return inner === value[head] ? value : { ...value, [head]: inner };
}

/**
 * The tool's result with every field named by the decision's `redact`
 * obligations removed (dotted paths such as `payment.card_number`; through
 * arrays, the path applies to each element). The result is not mutated:
 * changed objects are copied along the path. Only JSON-like object results
 * can be redacted; a string or other scalar is returned as is.
 */
export function applyRedactions<R>(result: R, obligations: readonly Obligation[]): R {
  let out: unknown = result;
  for (const f of redactFields(obligations)) out = without(out, f.split("."));
  return out as R;
}

/** Whether the decision carries a `redact` obligation (then a result must be redactable). */
export function requiresRedaction(obligations: readonly Obligation[]): boolean {
  return obligations.some((o) => o.type === "redact");
}

/**
 * Why `value` cannot be redacted field by field, or undefined when it can:
 * JSON-like data only — plain objects, arrays, strings, numbers, booleans,
 * null (and Dates) at every level. A Map, Set, Buffer, typed array, class
 * instance or function could hide a named field where a dotted path does
 * not reach, so it is not redactable.
 */
export function notRedactable(value: unknown, path = new Set<unknown>()): string | undefined {
  if (value === null || value === undefined) return undefined;
  const t = typeof value;
  if (t === "string" || t === "number" || t === "boolean" || t === "bigint") return undefined;
  if (t !== "object") return `a ${t}`;
  if (value instanceof Date) return undefined;
  if (path.has(value)) return "a cyclic value";
  const proto = Object.getPrototypeOf(value) as unknown;
  if (!Array.isArray(value) && proto !== Object.prototype && proto !== null)
    return `an object of class ${(value as { constructor?: { name?: string } }).constructor?.name ?? "unknown"}`;
  path.add(value); // the objects above this one (a value shared by two fields is not a cycle)
  try {
    for (const v of Object.values(value as Record<string, unknown>)) {
      const why = notRedactable(v, path);
      if (why !== undefined) return why;
    }
    return undefined;
  } finally {
    path.delete(value);
  }
}

/**
 * A tool result under the decision's obligations, failing closed: without a
 * `redact` obligation, the result as is. With one, a JSON-like object or
 * array with the fields removed; a string holding a JSON object or array is
 * parsed, redacted and serialised again; a number, boolean, null or undefined
 * (nothing to remove) as is. Anything else — other text, a Map, a Buffer, a
 * class instance — cannot be redacted field by field: `{withheld: why}`.
 */
export function redactResult<R>(
  result: R,
  obligations: readonly Obligation[],
): { value: R } | { withheld: string } {
  if (!requiresRedaction(obligations)) return { value: result };
  if (typeof result === "string") {
    const t = result.trim();
    if (t.startsWith("{") || t.startsWith("[")) {
      try {
        const parsed = JSON.parse(t) as unknown;
        return { value: JSON.stringify(applyRedactions(parsed, obligations)) as R };
      } catch {
        // not JSON after all
      }
    }
    return { withheld: "a string that is not a JSON object or array" };
  }
  const why = notRedactable(result);
  if (why !== undefined) return { withheld: why };
  return { value: applyRedactions(result, obligations) };
}
