/**
 * The sidecar API's wire objects (snake_case JSON, times as ISO strings or
 * null): TaskWire and EvaluationWire, to and from the store's records
 * (docs/fleet.md). What comes from a sidecar has passed its JSON Schema
 * (schemas/fleet-*.schema.json); the times are parsed here and checked.
 */
import { toolgateError } from "../errors";
import { iso } from "../approvals/rules";
import { toReasons, type EvaluationInput } from "../approvals/store";
import type { ApprovalRequirement } from "../model";
import { assertNoForbiddenKeys } from "../shared/guards";
import type { EvaluationRecord, FleetTask } from "./store/types";

/** EvaluationWire as schemas/fleet-evaluation.schema.json admits it. */
export interface EvaluationWire {
  evaluation_id: string;
  decision_id: string;
  agent_id: string;
  binding_hash: string;
  binding_context_members: string[];
  redacted_request: Record<string, unknown>;
  requirement: ApprovalRequirement & Record<string, unknown>;
  /** `{code, message}`; the codes alone from sidecars that predate messages. */
  reasons: Array<string | { code: string; message: string }>;
  initiator: string;
  tool: string;
  tool_class?: string | null;
  tool_stage?: string | null;
  policy_revision: string | null;
  created_at: string;
  expires_at: string;
}

export function taskWire(t: FleetTask): Record<string, unknown> {
  return {
    id: t.id,
    evaluation_id: t.evaluationId,
    agent_id: t.agentId,
    status: t.status,
    idempotency_key: t.idempotencyKey,
    requester: t.requester,
    created_at: iso(t.createdAt),
    expires_at: iso(t.expiresAt),
    decided_by: t.decidedBy,
    decided_by_roles: t.decidedByRoles,
    decided_at: iso(t.decidedAt),
    comment: t.comment,
    approved_until: iso(t.approvedUntil),
    revoked_at: iso(t.revokedAt),
    revoked_by: t.revokedBy,
    used_at: iso(t.usedAt),
    used_by_decision_id: t.usedByDecisionId,
    justification: t.justification,
  };
}

export function evaluationWire(e: EvaluationRecord): Record<string, unknown> {
  return {
    evaluation_id: e.evaluationId,
    decision_id: e.decisionId,
    agent_id: e.agentId,
    binding_hash: e.bindingHash,
    binding_context_members: e.bindingContextMembers,
    redacted_request: e.redactedRequest,
    requirement: e.requirement,
    reasons: e.reasons,
    initiator: e.initiator,
    tool: e.tool,
    tool_class: e.toolClass,
    tool_stage: e.toolStage,
    policy_revision: e.policyRevision,
    created_at: iso(e.createdAt),
    expires_at: iso(e.expiresAt),
  };
}

function time(v: string, member: string): number {
  const t = Date.parse(v);
  if (!Number.isFinite(t))
    throw toolgateError("invalid_request", `evaluation.${member} must be an RFC 3339 date-time`);
  return t;
}

/** The store's input for an evaluation a sidecar sent (already checked against its schema). */
export function evaluationFromWire(w: EvaluationWire): EvaluationInput {
  try {
    // kept and shown to approvers: no member that reaches a prototype
    assertNoForbiddenKeys(w.redacted_request);
    assertNoForbiddenKeys(w.requirement);
    toReasons(w.reasons, "evaluation.reasons");
  } catch (e) {
    throw toolgateError("invalid_request", `evaluation: ${(e as Error).message}`, { cause: e });
  }
  const { approver_roles, single_use, ttl_seconds, exclude } = w.requirement;
  return {
    evaluationId: w.evaluation_id,
    decisionId: w.decision_id,
    bindingHash: w.binding_hash,
    bindingContextMembers: [...w.binding_context_members],
    redactedRequest: w.redacted_request,
    requirement: { ...w.requirement, approver_roles, single_use, ttl_seconds, exclude },
    reasons: toReasons(w.reasons, "evaluation.reasons"),
    initiator: w.initiator,
    agentId: w.agent_id,
    tool: w.tool,
    toolClass: w.tool_class ?? null,
    toolStage: w.tool_stage ?? null,
    policyRevision: w.policy_revision,
    createdAt: time(w.created_at, "created_at"),
    expiresAt: time(w.expires_at, "expires_at"),
  };
}
