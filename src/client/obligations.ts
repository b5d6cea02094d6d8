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
