import { Redactor } from "../redaction/redact";
import { toolgateError, type ToolgateError } from "../errors";
import { isObject } from "../shared/guards";
import type { ApprovalRequirement, Obligation, PolicyOutput, Reason, ToolInfo } from "../model";

/** Obligation types toolgate knows how to honour; any other fails closed (deny). */
export const KNOWN_OBLIGATIONS: ReadonlySet<string> = new Set(["redact", "grant_scope"]);

const OUTCOMES = new Set(["allow", "deny", "needs_approval"]);

function bad(msg: string): ToolgateError {
  return toolgateError("policy_output_invalid", `policy output: ${msg}`);
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}

/**
 * A `grant_scope` obligation narrows the allow's grant (docs/grants.md):
 * `max_amount` (a number ≥ 0), `record_ids` (strings). Other keys pass here
 * and are embedded; the backend's verifier fails closed on keys it lacks.
 */
function checkGrantScope(p: Record<string, unknown> | undefined): string | undefined {
  if (p === undefined || Object.keys(p).length === 0) return "properties must name a scope";
  if (p.max_amount !== undefined && !(typeof p.max_amount === "number" && p.max_amount >= 0))
    return "max_amount must be a number ≥ 0";
  if (p.record_ids !== undefined && !isStringArray(p.record_ids))
    return "record_ids must be an array of strings";
  return undefined;
}

/**
 * Checks what the policy returned against the contract in
 * docs/policy-contract.md. Returns the typed output, or an error that the
 * caller turns into a deny: malformed output never becomes an allow.
 */
export function checkPolicyOutput(value: unknown): PolicyOutput | ToolgateError {
  if (value === undefined) return bad("the entrypoint is undefined for this input");
  if (!isObject(value)) return bad("must be an object");
  const { outcome, reasons, obligations, approval, tool, mask, shadow } = value;
  if (typeof outcome !== "string" || !OUTCOMES.has(outcome)) {
    return bad(`outcome must be allow, deny or needs_approval, got ${JSON.stringify(outcome)}`);
  }
  if (
    !Array.isArray(reasons) ||
    !reasons.every(
      (r) => isObject(r) && typeof r.code === "string" && typeof r.message === "string",
    )
  ) {
    return bad("reasons must be an array of {code, message} strings");
  }
  const obl = obligations ?? [];
  if (
    !Array.isArray(obl) ||
    !obl.every(
      (o) =>
        isObject(o) &&
        typeof o.id === "string" &&
        typeof o.type === "string" &&
        (o.properties === undefined || isObject(o.properties)),
    )
  ) {
    return bad("obligations must be an array of {id, type, properties?}");
  }
  for (const o of obl as Obligation[]) {
    if (!KNOWN_OBLIGATIONS.has(o.type)) {
      return toolgateError(
        "unknown_obligation",
        `policy output: obligation type "${o.type}" (id "${o.id}") is unknown to toolgate`,
      );
    }
    if (o.type === "grant_scope") {
      const why = checkGrantScope(o.properties);
      if (why !== undefined) return bad(`grant_scope obligation "${o.id}": ${why}`);
    }
  }
  const out: PolicyOutput = {
    outcome: outcome as PolicyOutput["outcome"],
    reasons: (reasons as Reason[]).map((r) => ({ code: r.code, message: r.message })),
    obligations: (obl as Obligation[]).map((o) =>
      o.properties === undefined
        ? { id: o.id, type: o.type }
        : { id: o.id, type: o.type, properties: o.properties },
    ),
  };
  if (outcome === "needs_approval") {
    if (
      !isObject(approval) ||
      !isStringArray(approval.approver_roles) ||
      approval.approver_roles.length === 0 ||
      typeof approval.single_use !== "boolean" ||
      typeof approval.ttl_seconds !== "number" ||
      !(approval.ttl_seconds > 0) ||
      !isStringArray(approval.exclude ?? [])
    ) {
      return bad(
        "needs_approval requires approval {approver_roles: [..1+], single_use, ttl_seconds > 0, exclude?}",
      );
    }
    out.approval = {
      approver_roles: approval.approver_roles,
      single_use: approval.single_use,
      ttl_seconds: approval.ttl_seconds,
      exclude: (approval.exclude as string[] | undefined) ?? [],
    } satisfies ApprovalRequirement;
  }
  if (outcome !== "allow" && out.reasons.length === 0) {
    return bad(`a ${outcome} must carry at least one reason`);
  }
  if (mask !== undefined) {
    const ops = Redactor.validateMask(mask);
    if (typeof ops === "string") return bad(`mask: ${ops}`);
    if (ops.length > 0) out.mask = ops;
  }
  if (shadow !== undefined) {
    if (
      !isObject(shadow) ||
      typeof shadow.outcome !== "string" ||
      !OUTCOMES.has(shadow.outcome) ||
      !Array.isArray(shadow.reasons) ||
      !shadow.reasons.every(
        (r) => isObject(r) && typeof r.code === "string" && typeof r.message === "string",
      )
    ) {
      return bad("shadow must be {outcome: allow|deny|needs_approval, reasons: [{code, message}]}");
    }
    out.shadow = {
      outcome: shadow.outcome as PolicyOutput["outcome"],
      reasons: (shadow.reasons as Reason[]).map((r) => ({ code: r.code, message: r.message })),
    };
  }
  if (isObject(tool) && typeof tool.name === "string") {
    out.tool = {
      name: tool.name,
      class: typeof tool.class === "string" ? tool.class : null,
      stage: typeof tool.stage === "string" ? tool.stage : null,
    } satisfies ToolInfo;
  }
  return out;
}
