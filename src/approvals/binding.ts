/**
 * The AuthZEN Access Request and Approval profile's `binding_hash`: binds an
 * approval to the exact request it answers.
 *
 *   binding_hash = base64url-without-padding(SHA-256(JCS(hash input)))
 *
 * Single item: hash input `{"subject", "resource", "action", "context"}`;
 * bulk: `{"subject", "items": [{"resource", "action"}, ...], "context"}`, items
 * in the bound order. In both:
 *
 * - `subject` is the request's subject with `subject.properties.act` removed
 *   (the PEP may normalise the actor). When `act` was the only property the
 *   subject keeps `"properties":{}` — the profile's reference verifier
 *   (`test-vectors/verify-binding-hash-vectors.mjs`) deletes the member and
 *   keeps the object, so we do the same. A subject without `properties`, or
 *   whose `properties` is not an object, is bound as sent.
 * - `context` holds only the authorization-relevant members named by
 *   `bindingContextMembers` that are present in the request's context (own
 *   members; a member whose value is `null` is present and bound, an absent
 *   member stays absent — `{}` ≠ `{"risk":null}`). With no members, `{}`.
 * - resource and action are bound whole, `properties` included.
 *
 * The profile's machinery members (`access_request`, `evaluation_id`,
 * `evaluated_at`, `reason`) are never authorization-relevant; naming one is a
 * configuration error.
 *
 * toolgate binds the job (`context.job`: id, purpose, customer_id) by default.
 * Inputs are never mutated.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { toolgateError } from "../errors";
import { canonicalize } from "../shared/jcs";
import { isObject } from "../shared/guards";

/** The context members toolgate binds an approval to unless configured otherwise. */
export const DEFAULT_BINDING_CONTEXT_MEMBERS: readonly string[] = Object.freeze(["job"]);

/** Context members the profile defines as machinery, never authorization-relevant. */
export const PROFILE_MACHINERY_CONTEXT_MEMBERS: readonly string[] = Object.freeze([
  "access_request",
  "evaluation_id",
  "evaluated_at",
  "reason",
]);

export interface BindingRequest {
  subject: unknown;
  action: unknown;
  resource: unknown;
  context?: unknown;
}

export interface BindingBulkRequest {
  subject: unknown;
  items: ReadonlyArray<{ resource: unknown; action: unknown }>;
  context?: unknown;
}

export interface BindingHashInput {
  subject: unknown;
  resource: unknown;
  action: unknown;
  context: Record<string, unknown>;
}

export interface BindingBulkHashInput {
  subject: unknown;
  items: Array<{ resource: unknown; action: unknown }>;
  context: Record<string, unknown>;
}

/** A null-prototype copy of an object's own enumerable members. */
function copy(o: Record<string, unknown>): Record<string, unknown> {
  const out = Object.create(null) as Record<string, unknown>;
  for (const k of Object.keys(o)) out[k] = o[k];
  return out;
}

/** The subject with `properties.act` removed (`properties` kept, possibly `{}`). */
export function projectSubject(subject: unknown): unknown {
  if (!isObject(subject)) return subject;
  const props = subject.properties;
  if (!isObject(props) || !Object.hasOwn(props, "act")) return subject;
  const p = copy(props);
  delete p.act;
  const s = copy(subject);
  s.properties = p;
  return s;
}

function checkMembers(members: readonly string[]): void {
  if (!Array.isArray(members)) {
    throw toolgateError("config_invalid", "binding context members must be an array of names");
  }
  for (const m of members) {
    if (typeof m !== "string" || m === "") {
      throw toolgateError("config_invalid", "binding context members must be non-empty strings");
    }
    if (PROFILE_MACHINERY_CONTEXT_MEMBERS.includes(m)) {
      throw toolgateError(
        "config_invalid",
        `context.${m} is profile machinery and cannot be a binding context member`,
      );
    }
  }
}

/** The authorization-relevant context: only the named members that are present. */
export function projectContext(
  context: unknown,
  members: readonly string[],
): Record<string, unknown> {
  checkMembers(members);
  const out = Object.create(null) as Record<string, unknown>;
  if (context === undefined || context === null) return out;
  if (!isObject(context)) {
    throw toolgateError("invalid_request", "context must be an object");
  }
  for (const m of members) {
    // undefined cannot come from parsed JSON; treat it as absent, as JCS would.
    if (Object.hasOwn(context, m) && context[m] !== undefined) out[m] = context[m];
  }
  return out;
}

export function bindingHashInput(
  req: BindingRequest,
  bindingContextMembers: readonly string[],
): BindingHashInput {
  return {
    subject: projectSubject(req.subject),
    resource: req.resource,
    action: req.action,
    context: projectContext(req.context, bindingContextMembers),
  };
}

export function bindingHashInputBulk(
  req: BindingBulkRequest,
  bindingContextMembers: readonly string[],
): BindingBulkHashInput {
  const items: unknown = req.items;
  if (!Array.isArray(items)) throw toolgateError("invalid_request", "items must be an array");
  return {
    subject: projectSubject(req.subject),
    items: (items as unknown[]).map((item, i) => {
      if (!isObject(item)) throw toolgateError("invalid_request", `items[${i}] must be an object`);
      return { resource: item.resource, action: item.action };
    }),
    context: projectContext(req.context, bindingContextMembers),
  };
}

/** base64url (no padding) of SHA-256 over the UTF-8 bytes of a canonical JSON text. */
export function hashCanonical(jcs: string): string {
  return createHash("sha256").update(jcs, "utf8").digest("base64url");
}

/** The profile's single-item `binding_hash`. */
export function bindingHash(req: BindingRequest, bindingContextMembers: readonly string[]): string {
  return hashCanonical(canonicalize(bindingHashInput(req, bindingContextMembers)));
}

/** The profile's bulk `binding_hash` (items in the bound order). */
export function bindingHashBulk(
  req: BindingBulkRequest,
  bindingContextMembers: readonly string[],
): string {
  return hashCanonical(canonicalize(bindingHashInputBulk(req, bindingContextMembers)));
}

/** Constant-time comparison of two binding hashes (false when either is not a string). */
export function bindingHashesEqual(a: unknown, b: unknown): boolean {
  if (typeof a !== "string" || typeof b !== "string") return false;
  const x = Buffer.from(a, "utf8");
  const y = Buffer.from(b, "utf8");
  return x.length === y.length && timingSafeEqual(x, y);
}
