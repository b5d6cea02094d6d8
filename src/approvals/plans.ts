/**
 * Plan approvals: the pure rules. An agent submits a plan — a list of
 * envelopes, each a tool call with its arguments bounded — and one eligible
 * human approves it; each later call inside an envelope that the policy
 * answers needs_approval is allowed with its own grant and counted against
 * the envelope (src/approvals/service.ts, store.ts). No store, no clock here.
 *
 * An envelope as submitted (schemas/plan-request.schema.json):
 *
 *   {tool, resource?: {type, id}, arguments?: {name: constraint},
 *    other_arguments?: "forbid" | "any", max_uses: 1..1000, ttl_seconds?}
 *
 * A constraint is `{min?, max?}` (a finite number within, both ends
 * inclusive), `{enum: [values]}` (one of them, by canonical JSON), or any
 * other JSON value (exactly it, by canonical JSON, RFC 8785).
 *
 * What is kept: the envelope's *matching form* — tool and resource in clear,
 * numeric bounds in clear, exact values and enum members only as SHA-256
 * hashes of their canonical JSON — so approvals.db holds no argument value in
 * clear; approvers read a redacted copy.
 */
import { toolgateError } from "../errors";
import { canonicalize } from "../shared/jcs";
import { isObject } from "../shared/guards";
import type { ApprovalRequirement, DecisionRequest } from "../model";
import { hashCanonical, projectSubject } from "./binding";

/** A plan holds at most this many envelopes. */
export const MAX_ENVELOPES = 50;
/** An envelope names at most this many arguments. */
export const MAX_ARGUMENTS = 32;
/** An enum lists at most this many values. */
export const MAX_ENUM = 100;
/** An exact value or an enum, as canonical JSON: at most this many characters. */
export const MAX_CONSTRAINT_CHARS = 4096;
/** A plan's time to live when it names none. */
export const DEFAULT_PLAN_TTL_SECONDS = 900;
/** Previews (policy evaluations) per envelope at submission, at most. */
export const MAX_PREVIEWS_PER_ENVELOPE = 8;

export interface EntityRef {
  type: string;
  id: string;
}

/** An envelope as the agent submits it. */
export interface EnvelopeInput {
  tool: string;
  resource?: EntityRef;
  arguments?: Record<string, unknown>;
  other_arguments?: "forbid" | "any";
  max_uses: number;
  ttl_seconds?: number;
}

/** POST /access/v1/plans (schemas/plan-request.schema.json). */
export interface PlanRequest {
  subject: DecisionRequest["subject"];
  resource?: DecisionRequest["resource"];
  context: { job: Record<string, unknown>; session?: { id: string } } & Record<string, unknown>;
  plan: { calls: EnvelopeInput[]; ttl_seconds?: number };
  justification?: string;
}

/** A constraint as kept: bounds in clear, exact values and enum members as hashes. */
export type Constraint =
  | { kind: "range"; min: number | null; max: number | null }
  | { kind: "eq"; hash: string }
  | { kind: "in"; hashes: string[] };

/** An envelope's matching form (what approvals.db keeps and calls are matched against). */
export interface Envelope {
  tool: string;
  resource: EntityRef;
  arguments: Record<string, Constraint>;
  other_arguments: "forbid" | "any";
  max_uses: number;
  ttl_seconds: number | null;
}

/** A canonical JSON value's hash (base64url SHA-256 of its RFC 8785 text). */
export function valueHash(v: unknown): string {
  return hashCanonical(canonicalize(v));
}

/** The hash of `v`, or undefined when it has no canonical form (NaN, Infinity, undefined...). */
function tryValueHash(v: unknown): string | undefined {
  try {
    return valueHash(v);
  } catch {
    return undefined;
  }
}

const bad = (where: string, why: string): never => {
  throw toolgateError("invalid_request", `${where}: ${why}`);
};

function canonicalBounded(where: string, v: unknown): string {
  let text: string;
  try {
    text = canonicalize(v);
  } catch (e) {
    return bad(where, `not a JSON value (${(e as Error).message})`);
  }
  if (text.length > MAX_CONSTRAINT_CHARS)
    bad(where, `longer than ${MAX_CONSTRAINT_CHARS} characters as canonical JSON`);
  return text;
}

/** True for `{min?, max?}` with at least one of them and nothing else. */
function isRange(v: unknown): v is { min?: unknown; max?: unknown } {
  if (!isObject(v)) return false;
  const keys = Object.keys(v);
  return keys.length > 0 && keys.every((k) => k === "min" || k === "max");
}

function isEnum(v: unknown): v is { enum: unknown } {
  return isObject(v) && Object.keys(v).length === 1 && Object.hasOwn(v, "enum");
}

/** A submitted constraint, checked, in its kept form. */
function constraintOf(where: string, v: unknown): Constraint {
  if (isRange(v)) {
    const end = (k: "min" | "max"): number | null => {
      const x = v[k];
      if (x === undefined) return null;
      if (typeof x !== "number" || !Number.isFinite(x))
        return bad(`${where}.${k}`, "not a finite number");
      return x === 0 ? 0 : x; // -0 is 0
    };
    const min = end("min");
    const max = end("max");
    if (min !== null && max !== null && min > max) bad(where, "min is greater than max");
    return { kind: "range", min, max };
  }
  if (isEnum(v)) {
    const values = v.enum;
    if (!Array.isArray(values) || values.length < 1 || values.length > MAX_ENUM)
      bad(`${where}.enum`, `must be an array of 1 to ${MAX_ENUM} JSON values`);
    const hashes = (values as unknown[]).map((x, i) => {
      canonicalBounded(`${where}.enum[${i}]`, x);
      return valueHash(x);
    });
    return { kind: "in", hashes: [...new Set(hashes)] };
  }
  canonicalBounded(where, v);
  return { kind: "eq", hash: valueHash(v) };
}

/**
 * The plan's envelopes in their kept form, checked beyond the schema: each
 * has a resource (its own, else the plan's), ≤ 32 arguments, well-formed
 * constraints. Throws `invalid_request` naming the member.
 */
export function envelopesOf(req: PlanRequest): Envelope[] {
  const calls: unknown = req.plan?.calls;
  if (!Array.isArray(calls) || calls.length < 1 || calls.length > MAX_ENVELOPES)
    bad("plan.calls", `must be an array of 1 to ${MAX_ENVELOPES} envelopes`);
  return (calls as EnvelopeInput[]).map((c, i) => {
    const where = `plan.calls[${i}]`;
    const resource =
      c.resource ?? (req.resource ? { type: req.resource.type, id: req.resource.id } : undefined);
    if (resource === undefined)
      bad(where, "names no resource, and the plan has none: give plan resource or the envelope's");
    const args: Record<string, Constraint> = Object.create(null) as Record<string, Constraint>;
    const given = c.arguments ?? {};
    if (!isObject(given)) bad(`${where}.arguments`, "must be an object");
    const names = Object.keys(given);
    if (names.length > MAX_ARGUMENTS)
      bad(`${where}.arguments`, `names more than ${MAX_ARGUMENTS} arguments`);
    for (const name of names) args[name] = constraintOf(`${where}.arguments.${name}`, given[name]);
    return {
      tool: c.tool,
      resource: { type: (resource as EntityRef).type, id: (resource as EntityRef).id },
      arguments: args,
      other_arguments: c.other_arguments ?? "forbid",
      max_uses: c.max_uses,
      ttl_seconds: c.ttl_seconds ?? null,
    };
  });
}

/** The subject as bound (without properties.act), hashed. */
export function subjectHash(subject: unknown): string {
  return valueHash(projectSubject(subject) ?? null);
}

/** The job as bound (context.job, or null when absent), hashed. */
export function jobHash(context: unknown): string {
  const job = isObject(context) && Object.hasOwn(context, "job") ? context.job : null;
  return tryValueHash(job ?? null) ?? "";
}

/**
 * The plan's binding hash: base64url(SHA-256(JCS({subject, agent, job,
 * envelopes, ttl_seconds}))) — subject without properties.act, the agent the
 * sidecar serves, context.job, the envelopes in their kept form.
 */
export function planBindingHash(input: {
  subject: unknown;
  agent: string;
  context: unknown;
  envelopes: Envelope[];
  ttlSeconds: number;
}): string {
  const job = isObject(input.context) && input.context.job !== undefined ? input.context.job : null;
  return valueHash({
    subject: projectSubject(input.subject) ?? null,
    agent: input.agent,
    job,
    envelopes: input.envelopes,
    ttl_seconds: input.ttlSeconds,
  });
}

/** The call's arguments (action.properties.arguments), or undefined when it has none. */
export function argumentsOf(req: DecisionRequest): unknown {
  const props = req.action?.properties;
  return isObject(props) ? props.arguments : undefined;
}

/** Why the call is not inside `e`, or undefined when it is. */
export function outside(e: Envelope, req: DecisionRequest): string | undefined {
  if (req.action?.name !== e.tool) return `tool is not ${e.tool}`;
  const r = req.resource;
  if (!isObject(r) || r.type !== e.resource.type || r.id !== e.resource.id)
    return `resource is not ${e.resource.type}/${e.resource.id}`;
  const raw = argumentsOf(req);
  if (raw !== undefined && !isObject(raw)) return "arguments are not an object";
  const args = raw ?? {};
  for (const name of Object.keys(e.arguments)) {
    const c = e.arguments[name] as Constraint;
    if (!Object.hasOwn(args, name)) return `argument '${name}' is missing`;
    const v = args[name];
    switch (c.kind) {
      case "range":
        if (typeof v !== "number" || !Number.isFinite(v))
          return `argument '${name}' is not a finite number`;
        if (c.min !== null && !(v >= c.min)) return `argument '${name}' is below ${c.min}`;
        if (c.max !== null && !(v <= c.max)) return `argument '${name}' is above ${c.max}`;
        break;
      case "eq":
        if (tryValueHash(v) !== c.hash) return `argument '${name}' is not the planned value`;
        break;
      case "in": {
        const h = tryValueHash(v);
        if (h === undefined || !c.hashes.includes(h))
          return `argument '${name}' is not one of the planned values`;
        break;
      }
    }
  }
  if (e.other_arguments === "forbid") {
    for (const name of Object.keys(args)) {
      if (!Object.hasOwn(e.arguments, name)) return `argument '${name}' is not in the plan`;
    }
  }
  return undefined;
}

/**
 * Representative argument sets for previewing an envelope with the policy
 * at submission: the most demanding values each constraint allows — an
 * exact value, a range's max (and its min), each enum member — one
 * constraint varied at a time, at most MAX_PREVIEWS_PER_ENVELOPE sets.
 */
export function representativeArguments(input: EnvelopeInput): Array<Record<string, unknown>> {
  const given = input.arguments ?? {};
  const candidates: Array<[string, unknown[]]> = Object.keys(given).map((name) => {
    const v = given[name];
    if (isRange(v)) {
      const vals: unknown[] = [];
      if (typeof v.max === "number") vals.push(v.max);
      if (typeof v.min === "number" && v.min !== v.max) vals.push(v.min);
      return [name, vals];
    }
    if (isEnum(v) && Array.isArray(v.enum)) return [name, v.enum as unknown[]];
    return [name, [v]];
  });
  const base: Record<string, unknown> = {};
  for (const [name, vals] of candidates) base[name] = vals[0];
  const out: Array<Record<string, unknown>> = [base];
  for (const [name, vals] of candidates) {
    for (const v of vals.slice(1)) {
      if (out.length >= MAX_PREVIEWS_PER_ENVELOPE) return out;
      out.push({ ...base, [name]: v });
    }
  }
  return out;
}

/** An envelope's approval requirement from its previews (null: no preview needed one). */
export type EnvelopeRequirement = ApprovalRequirement | null;

/**
 * The requirements of several previews of one envelope merged: every role
 * set must be satisfied, so roles intersect; the shortest ttl; single use if
 * any; every exclusion.
 */
export function mergeRequirements(rs: ApprovalRequirement[]): EnvelopeRequirement {
  if (rs.length === 0) return null;
  const [first, ...rest] = rs as [ApprovalRequirement, ...ApprovalRequirement[]];
  let roles = [...first.approver_roles];
  for (const r of rest) roles = roles.filter((x) => r.approver_roles.includes(x));
  return {
    approver_roles: [...new Set(roles)].sort(),
    single_use: rs.some((r) => r.single_use),
    ttl_seconds: Math.min(...rs.map((r) => r.ttl_seconds)),
    exclude: [...new Set(rs.flatMap((r) => r.exclude))].sort(),
  };
}

/**
 * The plan's requirement, as kept: per envelope (null when it needs no
 * approval), the union an approver is shown, and the time to live.
 */
export interface PlanRequirement {
  envelopes: EnvelopeRequirement[];
  /** Every role named by some envelope (display); eligibility checks each envelope. */
  approver_roles: string[];
  exclude: string[];
  /** The shortest ttl of the envelopes that need approval. */
  ttl_seconds: number;
}

export function planRequirement(envelopes: EnvelopeRequirement[]): PlanRequirement {
  const needed = envelopes.filter((r): r is ApprovalRequirement => r !== null);
  return {
    envelopes,
    approver_roles: [...new Set(needed.flatMap((r) => r.approver_roles))].sort(),
    exclude: [...new Set(needed.flatMap((r) => r.exclude))].sort(),
    ttl_seconds: needed.length ? Math.min(...needed.map((r) => r.ttl_seconds)) : 0,
  };
}

/**
 * Why `principal` may not decide a plan, or undefined if eligible: not the
 * initiator, not the agent, excluded by no envelope's policy, and holding,
 * for every envelope that needs an approval, one of its roles.
 */
export function planIneligible(
  principal: { id: string; roles: string[] },
  plan: { initiator: string; agentId: string; requirement: PlanRequirement },
  servedAgent: string,
): string | undefined {
  if (principal.id === plan.initiator) return "the approver is the initiator";
  if (principal.id === servedAgent || principal.id === plan.agentId)
    return "the approver is the agent";
  if (plan.requirement.exclude.includes(principal.id)) return "the policy excludes this approver";
  for (const [i, r] of plan.requirement.envelopes.entries()) {
    if (r === null) continue;
    if (!principal.roles.some((x) => r.approver_roles.includes(x)))
      return `the approver holds none of the roles ${r.approver_roles.join(", ")} (envelope ${i})`;
  }
  return undefined;
}

/** A plan id: `pln_` + 128 random bits, base64url (made by the store). */
export const PLAN_ID_RE = /^pln_[A-Za-z0-9_-]{16,64}$/;

/** The `context.plan.id` a request presents, or undefined. */
export function presentedPlan(req: DecisionRequest): string | undefined | null {
  const p = req.context?.plan;
  if (p === undefined) return undefined;
  const id = isObject(p) ? p.id : undefined;
  return typeof id === "string" ? id : null;
}
