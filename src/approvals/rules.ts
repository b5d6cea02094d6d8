/**
 * The approval flow's pure rules, shared by the sidecar's ApprovalService
 * (SQLite) and the fleet's control service (PostgreSQL): who may decide an
 * evaluation, and how a task is shown to approvers, to the agent and to audit.
 * No store, no clock: every function takes what it needs.
 */
import type { Principal } from "../model";
import type { ApprovalTask, EvaluationRecord, RequestStats } from "./store";

/** "Today" of the approvers' stats: the last 24 hours. */
export const STATS_WINDOW_MS = 24 * 60 * 60 * 1000;

/** Epoch ms as an ISO string (null stays null). */
export const iso = (ms: number | null): string | null =>
  ms === null ? null : new Date(ms).toISOString();

/**
 * Why `principal` may not decide evaluation `e`, or undefined if eligible:
 * not the initiator, not the agent (the evaluation's, or `servedAgent`, the
 * agent the deciding sidecar serves), not excluded by the policy, and holding
 * one of the roles it requires.
 */
export function ineligible(
  principal: Principal,
  e: EvaluationRecord,
  servedAgent: string = e.agentId,
): string | undefined {
  if (principal.id === e.initiator) return "the approver is the initiator";
  if (principal.id === servedAgent || principal.id === e.agentId)
    return "the approver is the agent";
  if (e.requirement.exclude.includes(principal.id)) return "the policy excludes this approver";
  if (!principal.roles.some((r) => e.requirement.approver_roles.includes(r))) {
    return `the approver holds none of the roles ${e.requirement.approver_roles.join(", ")}`;
  }
  return undefined;
}

/**
 * What approvers see of a task (GET /v1/approvals, approve, deny, revoke): redacted context.
 * `reasons` are the policy's `{code, message}` (message "" on rows from before messages were
 * kept); `agent_justification` is the agent's own words (redacted), never toolgate's, null
 * when it gave none; `stats` (when the caller read them): this agent's access requests for
 * this tool in the last 24 h, and how many were approved.
 */
export function approverView(
  t: ApprovalTask,
  e: EvaluationRecord,
  stats?: RequestStats,
): Record<string, unknown> {
  return {
    id: t.id,
    status: t.status,
    created_at: iso(t.createdAt),
    expires_at: iso(t.expiresAt),
    initiator: e.initiator,
    agent: e.agentId,
    tool: e.tool,
    tool_class: e.toolClass,
    tool_stage: e.toolStage,
    request: e.redactedRequest,
    reasons: e.reasons,
    requirement: e.requirement,
    policy_revision: e.policyRevision,
    decided_by: t.decidedBy,
    decided_at: iso(t.decidedAt),
    comment: t.comment,
    approved_until: iso(t.approvedUntil),
    used_at: iso(t.usedAt),
    revoked_at: iso(t.revokedAt),
    agent_justification: t.justification,
    ...(stats !== undefined
      ? { stats: { requested_today: stats.requested, approved_today: stats.approved } }
      : {}),
  };
}

/**
 * What the agent sees of its access request (POST/GET /access/v1/requests):
 * the task, its links on the agent port at `baseUrl`, and once approved the
 * approval to present on re-evaluation.
 */
export function accessRequestView(
  t: ApprovalTask,
  baseUrl: string,
  e: EvaluationRecord | undefined,
): Record<string, unknown> {
  const task: Record<string, unknown> = {
    id: t.id,
    status: t.status,
    status_endpoint: `${baseUrl}/access/v1/requests/${t.id}`,
    created_at: iso(t.createdAt),
    expires_at: iso(t.expiresAt),
    links: { cancel: `${baseUrl}/access/v1/requests/${t.id}/cancel` },
  };
  const out: Record<string, unknown> = { task };
  if (t.status === "approved" && t.approvedUntil !== null) {
    out.result = {
      mode: "reevaluate",
      approval: {
        id: t.id,
        approved_at: iso(t.decidedAt),
        approved_until: iso(t.approvedUntil),
        state: e?.bindingHash ?? "",
      },
    };
  }
  return out;
}

/** The fields of an approval audit event (its span attributes name the decision it answers). */
export function approvalEventFields(
  t: ApprovalTask,
  e: EvaluationRecord | undefined,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    approval_id: t.id,
    status: t.status,
    evaluation_id: t.evaluationId,
    decision_id: e?.decisionId,
    tool: e?.tool,
    initiator: e?.initiator,
    approver: t.decidedBy,
    approver_roles: t.decidedByRoles,
    approved_until: iso(t.approvedUntil),
    ...extra,
  };
}
