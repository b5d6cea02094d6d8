/**
 * The control service's wire objects as a sidecar reads them (docs: the fleet
 * design, /fleet/v1): every answer is hostile input until checked here. JSON
 * text is parsed with `parseUntrustedJson` (no member that reaches a
 * prototype, anywhere), then each member is checked for its type; times are
 * ISO strings (or null) parsed to epoch ms. A value that does not have the
 * expected shape throws `WireError` and is never used.
 */
import type {
  ApprovalReason,
  ApprovalTask,
  EvaluationRecord,
  TaskStatus,
} from "../approvals/store";
import { MAX_JUSTIFICATION, TASK_STATUSES, toReasons } from "../approvals/store";
import type { SwitchRow, SwitchScope } from "../containment/store";
import type { ApprovalRequirement } from "../model";
import { hasOwn, isObject, nullProto } from "../shared/guards";

/** What the control service sent is not what the protocol says. */
export class WireError extends Error {
  override readonly name = "WireError";
}

type Obj = Record<string, unknown>;

function fail(what: string, why: string): never {
  throw new WireError(`${what}: ${why}`);
}

export function obj(v: unknown, what: string): Obj {
  if (!isObject(v)) fail(what, "not an object");
  return nullProto(v);
}

function member(o: Obj, k: string): unknown {
  return hasOwn(o, k) ? o[k] : undefined;
}

export function str(o: Obj, k: string, what: string, max = 4096): string {
  const v = member(o, k);
  if (typeof v !== "string" || v.length > max) fail(what, `${k} is not a string`);
  return v;
}

function strOrNull(o: Obj, k: string, what: string, max = 4096): string | null {
  const v = member(o, k);
  if (v === null || v === undefined) return null;
  if (typeof v !== "string" || v.length > max) fail(what, `${k} is not a string or null`);
  return v;
}

export function int(o: Obj, k: string, what: string, min = 0): number {
  const v = member(o, k);
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min)
    fail(what, `${k} is not a whole number ≥ ${min}`);
  return v;
}

export function num(o: Obj, k: string, what: string): number {
  const v = member(o, k);
  if (typeof v !== "number" || !Number.isFinite(v)) fail(what, `${k} is not a number`);
  return v;
}

export function bool(o: Obj, k: string, what: string): boolean {
  const v = member(o, k);
  if (typeof v !== "boolean") fail(what, `${k} is not a boolean`);
  return v;
}

function time(o: Obj, k: string, what: string): number {
  const t = timeOrNull(o, k, what);
  if (t === null) fail(what, `${k} is not a date-time`);
  return t;
}

function timeOrNull(o: Obj, k: string, what: string): number | null {
  const v = member(o, k);
  if (v === null || v === undefined) return null;
  const t = typeof v === "string" ? Date.parse(v) : NaN;
  if (!Number.isFinite(t)) fail(what, `${k} is not a date-time or null`);
  return t;
}

function strings(o: Obj, k: string, what: string): string[] {
  const v = member(o, k);
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string"))
    fail(what, `${k} is not an array of strings`);
  return [...(v as string[])];
}

function stringsOrNull(o: Obj, k: string, what: string): string[] | null {
  const v = member(o, k);
  return v === null || v === undefined ? null : strings(o, k, what);
}

/** KillSwitchWire (the control's switchView) → the switch as the decision path holds it. */
export function switchFromWire(v: unknown): SwitchRow {
  const what = "kill switch";
  const o = obj(v, what);
  const rawScope = member(o, "scope");
  const scope: SwitchScope = {};
  if (rawScope !== null && rawScope !== undefined) {
    const s = obj(rawScope, `${what} scope`);
    for (const k of Object.keys(s)) {
      const val = s[k];
      if (k !== "agent" && k !== "tool" && k !== "subject" && k !== "job")
        fail(what, `scope has an unknown member ${JSON.stringify(k)}`);
      if (typeof val !== "string") fail(what, `scope.${k} is not a string`);
      scope[k] = val;
    }
  }
  return {
    id: str(o, "id", what, 256),
    scope,
    reason: str(o, "reason", what),
    createdBy: str(o, "created_by", what, 512),
    createdAt: time(o, "created_at", what),
    expiresAt: timeOrNull(o, "expires_at", what),
    deletedAt: timeOrNull(o, "deleted_at", what),
    deletedBy: strOrNull(o, "deleted_by", what, 512),
  };
}

/** A task as the control service keeps it: the sidecar's ApprovalTask plus who asked. */
export interface FleetTask extends ApprovalTask {
  requester: string | null;
}

const STATUSES: ReadonlySet<string> = new Set(TASK_STATUSES);

/** TaskWire → ApprovalTask. */
export function taskFromWire(v: unknown): FleetTask {
  const what = "approval task";
  const o = obj(v, what);
  const status = str(o, "status", what, 32);
  if (!STATUSES.has(status)) fail(what, `status ${JSON.stringify(status)} is unknown`);
  return {
    id: str(o, "id", what, 256),
    evaluationId: str(o, "evaluation_id", what, 256),
    agentId: str(o, "agent_id", what, 256),
    status: status as TaskStatus,
    idempotencyKey: strOrNull(o, "idempotency_key", what, 256),
    requester: strOrNull(o, "requester", what, 512),
    createdAt: time(o, "created_at", what),
    expiresAt: time(o, "expires_at", what),
    decidedAt: timeOrNull(o, "decided_at", what),
    decidedBy: strOrNull(o, "decided_by", what, 512),
    decidedByRoles: stringsOrNull(o, "decided_by_roles", what),
    comment: strOrNull(o, "comment", what, 4096),
    approvedUntil: timeOrNull(o, "approved_until", what),
    usedAt: timeOrNull(o, "used_at", what),
    usedByDecisionId: strOrNull(o, "used_by_decision_id", what, 256),
    revokedAt: timeOrNull(o, "revoked_at", what),
    revokedBy: strOrNull(o, "revoked_by", what, 512),
    justification: strOrNull(o, "justification", what, MAX_JUSTIFICATION),
  };
}

function reasonsOf(v: unknown, what: string): ApprovalReason[] {
  try {
    return toReasons(v);
  } catch (e) {
    fail(what, (e as Error).message);
  }
}

/** EvaluationWire → EvaluationRecord. */
export function evaluationFromWire(v: unknown): EvaluationRecord {
  const what = "evaluation";
  const o = obj(v, what);
  const req = obj(member(o, "requirement"), `${what} requirement`);
  const requirement: ApprovalRequirement = {
    ...req,
    approver_roles: strings(req, "approver_roles", `${what} requirement`),
    single_use: bool(req, "single_use", `${what} requirement`),
    ttl_seconds: num(req, "ttl_seconds", `${what} requirement`),
    exclude: strings(req, "exclude", `${what} requirement`),
  };
  return {
    evaluationId: str(o, "evaluation_id", what, 256),
    decisionId: str(o, "decision_id", what, 256),
    agentId: str(o, "agent_id", what, 256),
    bindingHash: str(o, "binding_hash", what, 256),
    bindingContextMembers: strings(o, "binding_context_members", what),
    redactedRequest: obj(member(o, "redacted_request"), `${what} redacted_request`),
    requirement,
    reasons: reasonsOf(member(o, "reasons"), what),
    initiator: str(o, "initiator", what, 512),
    tool: str(o, "tool", what, 512),
    toolClass: strOrNull(o, "tool_class", what, 64),
    toolStage: strOrNull(o, "tool_stage", what, 64),
    policyRevision: strOrNull(o, "policy_revision", what, 512),
    createdAt: time(o, "created_at", what),
    expiresAt: time(o, "expires_at", what),
  };
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** EvaluationRecord → EvaluationWire (what POST /fleet/v1/access-requests carries). */
export function evaluationToWire(e: EvaluationRecord): Record<string, unknown> {
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
    ...(e.toolClass !== null ? { tool_class: e.toolClass } : {}),
    ...(e.toolStage !== null ? { tool_stage: e.toolStage } : {}),
    policy_revision: e.policyRevision,
    created_at: iso(e.createdAt),
    expires_at: iso(e.expiresAt),
  };
}

/** `{ task, evaluation }`, as GET and cancel of an access request answer. */
export function taskAndEvaluation(v: unknown): { task: FleetTask; evaluation: EvaluationRecord } {
  const o = obj(v, "answer");
  return {
    task: taskFromWire(member(o, "task")),
    evaluation: evaluationFromWire(member(o, "evaluation")),
  };
}

export { member };
