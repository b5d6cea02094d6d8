import type { Decision, DecisionRequest, VerifiedFacts } from "../model";
import { toolgateError } from "../errors";
import type { Principal } from "../identity/jwt";
import { bindingHash, DEFAULT_BINDING_CONTEXT_MEMBERS } from "./binding";
import * as rules from "./rules";
import {
  checkJustification,
  MAX_JUSTIFICATION,
  type ApprovalStore,
  type ApprovalTask,
  type EvaluationInput,
  type EvaluationRecord,
  type RequestStats,
} from "./store";
import { isObject } from "../shared/guards";
import { type Component, type ComponentStatus, notRunning } from "../shared/lifecycle";
import type { Logger } from "../shared/log";
import { SecretsSeen } from "../redaction/redact";
import type { ApprovalRequirement } from "../model";
import type { DecideInput, PlanClaim, PlanRecord } from "./store";
import {
  DEFAULT_PLAN_TTL_SECONDS,
  envelopesOf,
  jobHash,
  mergeRequirements,
  outside,
  planBindingHash,
  planIneligible,
  planRequirement,
  presentedPlan,
  representativeArguments,
  subjectHash,
  type PlanRequest,
} from "./plans";

/** Expired evaluations nobody asked approval for are kept this long, then pruned. */
export const EVALUATION_RETENTION_MS = 60 * 60 * 1000;

/** Per initiator: access requests that are not approved, within a sliding window. */
export const DEFAULT_REQUEST_LIMIT = { max: 20, windowSeconds: 3600 } as const;

/**
 * Who asks on the agent port: in identity mode `jwt` the verified subject,
 * who must be the initiator of the evaluation or task named; `null` in
 * `trusted` mode (development), where nobody is verified and the task id
 * (128 random bits, returned only to the submitter) is the only key.
 */
export type Requester = string | null;

/**
 * POST /access/v1/requests (schemas/access-request.schema.json): the decision
 * request that was answered needs_approval, and the evaluation that answer named.
 */
export interface AccessRequest extends DecisionRequest {
  denial: { evaluation_id: string };
  /** The agent's words on why it needs this (≤ 2000 chars; shown to approvers as the agent's). */
  justification?: string;
}

/** Longest piece of a justification line redacted as one string (under the redactor's cut). */
const PIECE = 1000;

/**
 * A line in pieces of at most PIECE characters, each ending at whitespace that
 * does not follow `:`, `=` or a word like "bearer" (so `key: value` and
 * `Bearer <token>` stay in one piece for the redactor to see). A run with no
 * such whitespace stays whole (the redactor cuts it: nothing leaks).
 */
function splitForRedaction(line: string): string[] {
  if (line.length <= PIECE) return [line];
  const out: string[] = [];
  let rest = line;
  while (rest.length > PIECE) {
    let cut = -1;
    for (let i = PIECE; i > 0; i--) {
      const c = rest[i - 1];
      if (c !== " " && c !== "\t") continue;
      const before = rest.slice(0, i).trimEnd();
      if (/[:=]$/.test(before) || /(?:bearer|basic|token|key|secret|password)$/i.test(before))
        continue;
      cut = i;
      break;
    }
    if (cut <= 0) {
      const next = rest.slice(PIECE).search(/[ \t]/);
      cut = next < 0 ? rest.length : PIECE + next + 1;
    }
    out.push(rest.slice(0, cut));
    rest = rest.slice(cut);
  }
  if (rest !== "") out.push(rest);
  return out;
}

/**
 * The agent's justification as approvers may read it: checked (≤ 2000
 * characters, no control characters but tab and newline), then redacted line
 * by line with the same redactor as free text (secret shapes inside the text,
 * values quoted from secret keys); null when the agent gave none.
 */
export function redactJustification(
  v: unknown,
  redact: <T>(v: T, mask?: readonly unknown[], seen?: SecretsSeen) => T,
): string | null {
  const text = checkJustification(v);
  if (text === null) return null;
  // one string per piece of ≤ 1000 characters: the redactor cuts a longer string (at 1024)
  const pieces = text.split("\n").map(splitForRedaction);
  const redacted = redact(pieces);
  const out = pieces
    .map((line, i) => {
      const r: unknown = Array.isArray(redacted) ? redacted[i] : undefined;
      return Array.isArray(r) && r.length === line.length && r.every((x) => typeof x === "string")
        ? r.join("")
        : "";
    })
    .join("\n");
  return out.length > MAX_JUSTIFICATION ? out.slice(0, MAX_JUSTIFICATION) : out;
}

/** What toolgate hands the policy as `input.verified.approval`. */
export interface VerifiedApproval {
  id: string;
  state: "approved";
  approver: { id: string; roles: string[] };
  single_use: boolean;
  expires_at_ns: number;
}

/** The result of checking a `context.approval` a request carries. */
export type ApprovalCheck =
  | { kind: "none" }
  | { kind: "verified"; approval: VerifiedApproval; taskId: string; singleUse: boolean }
  /** The request is denied outright (toolgate reason). */
  | {
      kind: "deny";
      code: "approval_used" | "approval_denied" | "approval_revoked" | "approval_unavailable";
      message: string;
    }
  /** Expired: denied, with a fresh access request. */
  | { kind: "expired"; message: string }
  /** The approval does not apply to this request: decided as if absent, with a reason. */
  | {
      kind: "ignored";
      code: "approval_mismatch" | "approval_pending" | "approval_unknown" | "approval_not_usable";
      message: string;
    };

/** The result of checking the plan a request presents in `context.plan` (see ApprovalService.checkPlan). */
export type PlanCheck =
  | { kind: "none" }
  /** The plan does not apply to this call: its needs_approval stands, with this reason. */
  | {
      kind: "ignored";
      code:
        | "plan_unknown"
        | "plan_mismatch"
        | "plan_pending"
        | "plan_not_usable"
        | "plan_revoked"
        | "plan_expired"
        | "plan_used_up"
        | "plan_unavailable";
      message: string;
    }
  /** Inside these envelopes (indexes), uses left: what the policy sees as verified.approval. */
  | { kind: "verified"; planId: string; envelopes: number[]; approval: VerifiedApproval };

/** One policy evaluation of a planned call at submission (Decider.previewRequests). */
export interface PlanPreview {
  outcome: Decision["outcome"];
  reasons: Decision["reasons"];
  approval?: ApprovalRequirement | undefined;
}

/** Evaluates planned calls with the policy, without side effects. */
export type PlanPreviewer = (requests: DecisionRequest[]) => {
  policy: { bundle: string; revision: string };
  results: PlanPreview[];
};

export type ApprovalEventName =
  "requested" | "approved" | "denied" | "expired" | "cancelled" | "used" | "refused" | "revoked";

/** Audit receives every approval event. */
export interface ApprovalEvents {
  approvalEvent(event: ApprovalEventName, fields: Record<string, unknown>): void;
}

export interface ApprovalServiceOptions {
  store: ApprovalStore;
  agentId: string;
  /** Redacts the request kept for approvers to read (with the policy's audit mask, if any). */
  redact: <T>(v: T, mask?: readonly unknown[], seen?: SecretsSeen) => T;
  events?: ApprovalEvents;
  /** How long an approver has to decide a submitted request. */
  taskTtlSeconds?: number;
  /** Per initiator rate limit on access requests (default DEFAULT_REQUEST_LIMIT). */
  requestLimit?: { max: number; windowSeconds: number };
  onPending?: (view: Record<string, unknown>) => void;
  now?: () => number;
  /** Error lines for failed housekeeping. */
  log?: Logger;
  /** How often, once started, due tasks are expired and old evaluations pruned (default 5 s). */
  housekeepingIntervalMs?: number;
}

const iso = rules.iso;

/**
 * The approval flow of the AuthZEN Access Request and Approval profile, on top
 * of the durable store: needs_approval evaluations are recorded, the agent
 * submits an access request bound to one of them, an eligible human decides on
 * the control port, and a re-evaluation carrying `context.approval` is checked
 * (approved, unexpired, unrevoked, bound to this exact request, unused when
 * single-use) before the policy sees it.
 */
export class ApprovalService implements Component {
  readonly name = "approvals";
  private readonly now: () => number;
  private readonly members = DEFAULT_BINDING_CONTEXT_MEMBERS;
  private housekeeping: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;

  constructor(private readonly opts: ApprovalServiceOptions) {
    this.now = opts.now ?? Date.now;
  }

  hash(req: { subject: unknown; action: unknown; resource: unknown; context?: unknown }): string {
    return bindingHash(req, this.members);
  }

  /** Records a needs_approval decision so that an access request can cite it. */
  recordNeedsApproval(
    d: Decision,
    req: DecisionRequest,
    verified: VerifiedFacts,
    /** The policy's audit mask: what it hashes or removes in the trail, approvers never see in clear. */
    mask?: readonly unknown[],
  ): void {
    const e = evaluationOf(d, req, verified, this.opts.redact, mask);
    if (e !== undefined) this.opts.store.addEvaluation(e);
  }

  /** Checks the approval a request presents in `context.approval`. */
  check(req: DecisionRequest, nowMs: number = this.now()): ApprovalCheck {
    const id = presentedApproval(req);
    if (typeof id !== "string") return id;
    this.expire(nowMs);
    const task = this.opts.store.getTask(id);
    const evaluation = task ? this.opts.store.getEvaluation(task.evaluationId) : undefined;
    return judgeApproval(id, task, evaluation, this.hash(req), this.opts.agentId, nowMs);
  }
  /** Marks a single-use approval used by this decision; false if another decision won. */
  consume(taskId: string, decisionId: string, nowMs: number = this.now()): boolean {
    const r = this.opts.store.consume(taskId, decisionId, nowMs);
    if (r.consumed)
      this.opts.events?.approvalEvent(
        "used",
        this.eventFields(r.task, { used_by_decision_id: decisionId }),
      );
    return r.consumed;
  }

  /** Records an approval use for a multi-use approval (audit only). */
  used(taskId: string, decisionId: string): void {
    const task = this.opts.store.getTask(taskId);
    if (task)
      this.opts.events?.approvalEvent("used", this.eventFields(task, { decision_id: decisionId }));
  }

  /**
   * POST /access/v1/requests: the agent asks for approval of a recorded
   * needs_approval evaluation. One evaluation gives at most one request: a
   * resubmission returns it (`created: false`) while it is pending or
   * approved, and is refused with `access_request_closed` once it was denied,
   * cancelled or expired. New requests are rate-limited per initiator.
   */
  submit(
    request: AccessRequest,
    idempotencyKey: string | undefined,
    baseUrl: string,
    requester: Requester,
  ): { created: boolean; view: Record<string, unknown> } {
    const now = this.now();
    this.expire(now);
    const evaluation = requestableEvaluation(
      this.opts.store,
      request,
      requester,
      this.opts.agentId,
      now,
    );
    const justification = redactJustification(request.justification, this.opts.redact);
    const limit = this.opts.requestLimit ?? DEFAULT_REQUEST_LIMIT;
    const { task, created } = this.opts.store.createTask({
      evaluationId: evaluation.evaluationId,
      justification,
      idempotencyKey: idempotencyKey ?? null,
      agentId: this.opts.agentId,
      expiresAt: now + (this.opts.taskTtlSeconds ?? 3600) * 1000,
      now,
      limit: { max: limit.max, windowMs: limit.windowSeconds * 1000 },
    });
    const view = this.view(task, baseUrl, evaluation);
    if (created) {
      this.opts.events?.approvalEvent("requested", this.eventFields(task));
      if (this.opts.onPending) {
        try {
          this.opts.onPending(this.approverView(task, evaluation, true));
        } catch (e) {
          // a notifier never fails (or delays) the request
          this.opts.log?.error("approval notification failed", {
            event: "approvals.notify_error",
            error: (e as Error).message,
          });
        }
      }
    }
    return { created, view };
  }

  /** GET /access/v1/requests/{id}: the initiator's (jwt) task; anyone else's is "not found". */
  get(taskId: string, baseUrl: string, requester: Requester): Record<string, unknown> {
    this.expire();
    const task = this.ownTask(taskId, requester);
    return this.view(task, baseUrl, this.opts.store.getEvaluation(task.evaluationId));
  }

  /** The initiator (jwt) cancels her own pending request; anyone else's is "not found". */
  cancel(taskId: string, baseUrl: string, requester: Requester): Record<string, unknown> {
    const own = this.ownTask(taskId, requester);
    const task = this.opts.store.cancel(own.id, this.opts.agentId, this.now());
    this.opts.events?.approvalEvent("cancelled", this.eventFields(task));
    return this.view(task, baseUrl, this.opts.store.getEvaluation(task.evaluationId));
  }

  /** What approvers see (control port): tasks they may decide, with redacted context. */
  list(
    principal: Principal,
    status: string | undefined,
    isAdmin: boolean,
    limit = 100,
    order: "oldest" | "newest" = "oldest",
  ): Array<Record<string, unknown>> {
    this.expire();
    const tasks = this.opts.store.listTasks({
      ...(status ? { status: status as ApprovalTask["status"] } : {}),
      limit,
      order,
    });
    const out: Array<Record<string, unknown>> = [];
    for (const t of tasks) {
      const e = this.opts.store.getEvaluation(t.evaluationId);
      if (e === undefined) continue;
      if (!isAdmin && this.ineligible(principal, e) !== undefined) continue;
      out.push(this.approverView(t, e, true));
    }
    // plans share the queue (kind "plan"), in the same order
    for (const p of this.opts.store.listPlans({
      ...(status ? { status: status as ApprovalTask["status"] } : {}),
      agentId: this.opts.agentId,
      limit,
      order,
    })) {
      if (!isAdmin && planIneligible(principal, p, this.opts.agentId) !== undefined) continue;
      out.push(this.planApproverView(p));
    }
    const at = (v: Record<string, unknown>): string =>
      typeof v.created_at === "string" ? v.created_at : "";
    out.sort((a, b) =>
      order === "newest" ? at(b).localeCompare(at(a)) : at(a).localeCompare(at(b)),
    );
    return out.slice(0, limit);
  }

  detail(taskId: string): Record<string, unknown> {
    if (isPlanId(taskId)) return this.planApproverView(this.plan(taskId));
    const t = this.task(taskId);
    const e = this.opts.store.getEvaluation(t.evaluationId);
    return e ? this.approverView(t, e, true) : { id: t.id, status: t.status };
  }

  /**
   * How many access requests `agentId` made for `tool` since `sinceMs` (epoch
   * ms), and how many were approved. The approvers' views carry this for the
   * last 24 h as `stats: {requested_today, approved_today}`.
   */
  requestStats(agentId: string, tool: string, sinceMs: number): RequestStats {
    return this.opts.store.requestStats(agentId, tool, sinceMs);
  }

  /** Why `principal` may not decide evaluation `e`, or undefined if eligible. */
  ineligible(principal: Principal, e: EvaluationRecord): string | undefined {
    return rules.ineligible(principal, e, this.opts.agentId);
  }

  /** POST /v1/approvals/{id}/approve|deny on the control port. */
  decide(
    taskId: string,
    principal: Principal,
    approve: boolean,
    comment: string | undefined,
  ): Record<string, unknown> {
    this.expire();
    if (isPlanId(taskId)) return this.decidePlan(taskId, principal, approve, comment);
    const task = this.task(taskId);
    const e = this.opts.store.getEvaluation(task.evaluationId);
    if (e === undefined)
      throw toolgateError("approval_not_found", `approval ${taskId} has no evaluation`);
    this.refuseIneligible(taskId, this.ineligible(principal, e), principal, approve, (extra) =>
      this.eventFields(task, extra),
    );
    const now = this.now();
    const decided = this.opts.store.decide(
      task.id,
      decideInput(principal, approve, comment, now + e.requirement.ttl_seconds * 1000, now),
    );
    this.opts.events?.approvalEvent(
      approve ? "approved" : "denied",
      this.eventFields(decided, { comment }),
    );
    return this.approverView(decided, e);
  }

  /** Admin: revoke an approval; no new decision will honour it. */
  revoke(taskId: string, principal: Principal): Record<string, unknown> {
    if (isPlanId(taskId)) {
      const p = this.opts.store.revokePlan(this.plan(taskId).id, principal.id, this.now());
      this.opts.events?.approvalEvent("revoked", planEventFields(p));
      return this.planApproverView(p);
    }
    const t = this.opts.store.revoke(this.task(taskId).id, principal.id, this.now());
    this.opts.events?.approvalEvent("revoked", this.eventFields(t));
    return this.detail(t.id);
  }

  // -- plan approvals (src/approvals/plans.ts) ---------------------------------

  /**
   * POST /access/v1/plans: the agent submits a plan. Each envelope is
   * previewed with the policy on its most demanding representative
   * arguments (no side effects); a deny refuses the whole plan
   * (`plan_denied`, naming the envelope), a plan none of whose calls needs
   * an approval is refused (`plan_unneeded`). The plan's requirement is the
   * envelopes' requirements together: its approver must satisfy each.
   */
  submitPlan(
    request: PlanRequest,
    preview: PlanPreviewer,
    idempotencyKey: string | undefined,
    baseUrl: string,
    requester: Requester,
  ): { created: boolean; view: Record<string, unknown> } {
    const now = this.now();
    this.expire(now);
    if (requester !== null && requester !== request.subject.id)
      throw toolgateError("subject_mismatch", "the plan's subject is not the token's subject");
    const envelopes = envelopesOf(request);
    const calls = request.plan.calls;
    // every representative call of every envelope, evaluated at once
    const asked: Array<{ envelope: number; req: DecisionRequest }> = [];
    calls.forEach((c, i) => {
      const envelope = envelopes[i];
      if (envelope === undefined) return;
      for (const args of representativeArguments(c)) {
        asked.push({
          envelope: i,
          req: {
            subject: request.subject,
            action: { name: c.tool, properties: { arguments: args } },
            resource: envelope.resource,
            context: request.context,
          },
        });
      }
    });
    const { policy, results } = preview(asked.map((a) => a.req));
    const perEnvelope: ApprovalRequirement[][] = envelopes.map(() => []);
    const reasons: Array<Array<{ code: string; message: string }>> = envelopes.map(() => []);
    results.forEach((r, k) => {
      const i = asked[k]?.envelope ?? 0;
      if (r.outcome === "deny") {
        throw toolgateError(
          "plan_denied",
          `plan.calls[${i}] (${calls[i]?.tool ?? "?"}) is denied by the policy: ` +
            r.reasons.map((x) => `${x.code}: ${x.message}`).join("; "),
          { envelope: i, reasons: r.reasons },
        );
      }
      if (r.outcome === "needs_approval" && r.approval !== undefined) {
        perEnvelope[i]?.push(r.approval);
        for (const x of r.reasons)
          if (!reasons[i]?.some((y) => y.code === x.code)) reasons[i]?.push(x);
      }
    });
    const requirement = planRequirement(perEnvelope.map(mergeRequirements));
    if (requirement.envelopes.every((r) => r === null)) {
      throw toolgateError(
        "plan_unneeded",
        "no call of this plan needs an approval: the policy allows each of them as planned",
      );
    }
    for (const [i, r] of requirement.envelopes.entries()) {
      if (r !== null && r.approver_roles.length === 0)
        throw toolgateError(
          "plan_denied",
          `plan.calls[${i}] (${calls[i]?.tool ?? "?"}): no approver role satisfies every approval rule that applies`,
          { envelope: i },
        );
    }
    const ttlSeconds = Math.min(
      request.plan.ttl_seconds ?? DEFAULT_PLAN_TTL_SECONDS,
      requirement.ttl_seconds,
    );
    const seen = new SecretsSeen();
    const redacted = this.opts.redact(
      {
        subject: request.subject,
        ...(request.resource ? { resource: request.resource } : {}),
        context: { job: request.context.job },
        calls,
        reasons: reasons.map((rs) =>
          rs.map((r) => ({ code: r.code, message: this.opts.redact(r.message, undefined, seen) })),
        ),
      },
      undefined,
      seen,
    );
    const limit = this.opts.requestLimit ?? DEFAULT_REQUEST_LIMIT;
    const { plan, created } = this.opts.store.createPlan({
      agentId: this.opts.agentId,
      initiator: request.subject.id,
      bindingHash: planBindingHash({
        subject: request.subject,
        agent: this.opts.agentId,
        context: request.context,
        envelopes,
        ttlSeconds,
      }),
      subjectHash: subjectHash(request.subject),
      jobHash: jobHash(request.context),
      envelopes,
      redacted,
      requirement,
      ttlSeconds,
      idempotencyKey: idempotencyKey ?? null,
      justification: redactJustification(request.justification, this.opts.redact),
      policyRevision: policy.revision,
      expiresAt: now + (this.opts.taskTtlSeconds ?? 3600) * 1000,
      now,
      limit: { max: limit.max, windowMs: limit.windowSeconds * 1000 },
    });
    if (created) {
      this.opts.events?.approvalEvent("requested", planEventFields(plan));
      if (this.opts.onPending) {
        try {
          this.opts.onPending(this.planApproverView(plan));
        } catch (e) {
          this.opts.log?.error("approval notification failed", {
            event: "approvals.notify_error",
            error: (e as Error).message,
          });
        }
      }
    }
    return { created, view: planAgentView(plan, baseUrl) };
  }

  /** GET /access/v1/plans/{id}: the initiator's (jwt) plan; anyone else's is "not found". */
  getPlan(planId: string, baseUrl: string, requester: Requester): Record<string, unknown> {
    this.expire();
    return planAgentView(this.ownPlan(planId, requester), baseUrl);
  }

  /** The initiator (jwt) cancels her own pending plan. */
  cancelPlan(planId: string, baseUrl: string, requester: Requester): Record<string, unknown> {
    const own = this.ownPlan(planId, requester);
    const p = this.opts.store.cancelPlan(own.id, this.opts.agentId, this.now());
    this.opts.events?.approvalEvent("cancelled", planEventFields(p));
    return planAgentView(p, baseUrl);
  }

  /**
   * Checks the plan a request presents in `context.plan` (asked only when
   * the policy answered needs_approval): this agent's, bound to this
   * subject and job, approved, unrevoked, unexpired, and the call inside
   * one of its envelopes with uses left. Nothing is claimed here
   * (claimPlan, once the policy allowed with the approval).
   */
  checkPlan(req: DecisionRequest, nowMs: number = this.now()): PlanCheck {
    const id = presentedPlan(req);
    if (id === undefined) return { kind: "none" };
    const unknown = (): PlanCheck => ({
      kind: "ignored",
      code: "plan_unknown",
      message: `no plan ${String(id)} on this sidecar`,
    });
    if (id === null || !isPlanId(id)) return unknown();
    const p = this.opts.store.getPlan(id);
    if (p === undefined || p.agentId !== this.opts.agentId) return unknown();
    if (p.subjectHash !== subjectHash(req.subject) || p.jobHash !== jobHash(req.context))
      return {
        kind: "ignored",
        code: "plan_mismatch",
        message: `plan ${id} is bound to another subject or job`,
      };
    if (p.status === "pending" && p.expiresAt > nowMs)
      return { kind: "ignored", code: "plan_pending", message: `plan ${id} is still pending` };
    if (p.status !== "approved")
      return {
        kind: "ignored",
        code: p.status === "expired" || p.status === "pending" ? "plan_expired" : "plan_not_usable",
        message: `plan ${id} is ${p.status === "pending" ? "expired" : p.status}`,
      };
    if (p.revokedAt !== null)
      return {
        kind: "ignored",
        code: "plan_revoked",
        message: `plan ${id} was revoked by ${p.revokedBy ?? "an admin"}`,
      };
    if (p.approvedUntil === null || p.approvedUntil <= nowMs)
      return {
        kind: "ignored",
        code: "plan_expired",
        message: `plan ${id} expired at ${iso(p.approvedUntil)}`,
      };
    const inside: number[] = [];
    const why: string[] = [];
    p.envelopes.forEach((e, i) => {
      const no = outside(e, req);
      if (no === undefined) inside.push(i);
      else why.push(`envelope ${i}: ${no}`);
    });
    if (inside.length === 0)
      return {
        kind: "ignored",
        code: "plan_mismatch",
        message: `the call is outside every envelope of plan ${id} (${why.slice(0, 5).join("; ")})`,
      };
    const usable = inside.filter((i) => {
      const u = p.uses[i];
      return u !== undefined && u.uses < u.maxUses && (u.expiresAt === null || u.expiresAt > nowMs);
    });
    if (usable.length === 0) {
      const allUsed = inside.every((i) => {
        const u = p.uses[i];
        return u === undefined || u.uses >= u.maxUses;
      });
      return allUsed
        ? {
            kind: "ignored",
            code: "plan_used_up",
            message: `every envelope of plan ${id} this call fits is used up`,
          }
        : {
            kind: "ignored",
            code: "plan_expired",
            message: `every envelope of plan ${id} this call fits has expired`,
          };
    }
    const until = Math.min(
      p.approvedUntil,
      ...usable.map((i) => p.uses[i]?.expiresAt ?? p.approvedUntil ?? 0),
    );
    return {
      kind: "verified",
      planId: p.id,
      envelopes: usable,
      approval: {
        id: p.id,
        state: "approved",
        approver: { id: p.decidedBy ?? "", roles: p.decidedByRoles ?? [] },
        // each use of a plan is claimed once, atomically: a use is single use
        single_use: true,
        expires_at_ns: until * 1e6,
      },
    };
  }

  /**
   * Claims one use of the first of `envelopes` with uses left for decision
   * `decisionId` (the store's guarded UPDATE: never more than max_uses).
   * Audited as an approval use.
   */
  claimPlan(
    planId: string,
    envelopes: readonly number[],
    decisionId: string,
    nowMs: number = this.now(),
  ): PlanClaim {
    let last: PlanClaim = { claimed: false, reason: "not_found" };
    for (const i of envelopes) {
      last = this.opts.store.claimPlanUse(planId, i, decisionId, nowMs);
      if (last.claimed) {
        const p = this.opts.store.getPlan(planId);
        if (p)
          this.opts.events?.approvalEvent(
            "used",
            planEventFields(p, {
              decision_id: decisionId,
              envelope: last.envelope,
              uses: last.uses,
              max_uses: last.maxUses,
            }),
          );
        return last;
      }
    }
    return last;
  }

  private decidePlan(
    planId: string,
    principal: Principal,
    approve: boolean,
    comment: string | undefined,
  ): Record<string, unknown> {
    const plan = this.plan(planId);
    const why = planIneligible(principal, plan, this.opts.agentId);
    this.refuseIneligible(planId, why, principal, approve, (extra) => planEventFields(plan, extra));
    const now = this.now();
    const approvedUntil = now + plan.ttlSeconds * 1000;
    const decided = this.opts.store.decidePlan(plan.id, {
      ...decideInput(principal, approve, comment, approvedUntil, now),
      envelopeEnds: plan.envelopes.map((e) =>
        e.ttl_seconds !== null && now + e.ttl_seconds * 1000 < approvedUntil
          ? now + e.ttl_seconds * 1000
          : null,
      ),
    });
    this.opts.events?.approvalEvent(
      approve ? "approved" : "denied",
      planEventFields(decided, { comment }),
    );
    return this.planApproverView(decided);
  }

  private plan(planId: string): PlanRecord {
    const p = isPlanId(planId) ? this.opts.store.getPlan(planId) : undefined;
    if (p === undefined || p.agentId !== this.opts.agentId)
      throw toolgateError("approval_not_found", `no plan ${planId}`);
    return p;
  }

  /** The plan, if `requester` may see it (jwt: only its initiator); else "not found". */
  private ownPlan(planId: string, requester: Requester): PlanRecord {
    const p = this.plan(planId);
    if (requester !== null && p.initiator !== requester)
      throw toolgateError("approval_not_found", `no plan ${planId}`);
    return p;
  }

  /** A plan as approvers see it (kind "plan"), with stats as for a request. */
  planApproverView(p: PlanRecord): Record<string, unknown> {
    return planApproverView(p);
  }

  /** Moves overdue pending tasks to expired (and audits each). */
  expire(nowMs: number = this.now()): void {
    for (const id of this.opts.store.expireDue(nowMs)) {
      const t = this.opts.store.getTask(id);
      if (t) this.opts.events?.approvalEvent("expired", this.eventFields(t));
    }
    for (const id of this.opts.store.expireDuePlans(nowMs)) {
      const p = this.opts.store.getPlan(id);
      if (p) this.opts.events?.approvalEvent("expired", planEventFields(p));
    }
  }

  /**
   * Deletes needs_approval evaluations that expired more than an hour ago
   * and were never asked about (approvals.db would otherwise grow with every
   * needs_approval answer). Returns how many.
   */
  prune(nowMs: number = this.now()): number {
    return this.opts.store.pruneEvaluations(nowMs - EVALUATION_RETENTION_MS);
  }

  /** Starts the housekeeping: every few seconds, due tasks expire and old evaluations are pruned. */
  start(): Promise<void> {
    if (!this.started && !this.stopped) {
      this.started = true;
      this.housekeeping = setInterval(
        () => this.houseKeep(),
        this.opts.housekeepingIntervalMs ?? 5000,
      );
      this.housekeeping.unref();
    }
    return Promise.resolve();
  }

  private houseKeep(): void {
    try {
      this.expire();
      this.prune();
    } catch (e) {
      // a store failure here must not take the sidecar down; the next tick retries
      this.opts.log?.error("approval housekeeping failed", {
        event: "approvals.housekeeping_error",
        error: (e as Error).message,
      });
    }
  }

  /**
   * Stops the housekeeping and closes the store. Housekeeping is
   * synchronous: when this returns, none is in flight.
   */
  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.stopped = true;
      clearInterval(this.housekeeping);
      this.housekeeping = undefined;
      this.opts.store.close();
      resolve();
    });
  }

  /** ERROR while the store cannot serve (removed, replaced, unreadable, a read failing). */
  status(): ComponentStatus {
    const idle = notRunning(this.started, this.stopped);
    if (idle !== undefined) return idle;
    const problem = this.opts.store.problem();
    return problem === undefined ? { state: "OK" } : { state: "ERROR", detail: problem };
  }

  pendingCount(): number {
    return this.opts.store.listTasks({ status: "pending", agentId: this.opts.agentId, limit: 1000 })
      .length;
  }

  private task(taskId: string): ApprovalTask {
    const t = this.opts.store.getTask(taskId);
    if (t === undefined || t.agentId !== this.opts.agentId)
      throw toolgateError("approval_not_found", `no approval ${taskId}`);
    return t;
  }

  /**
   * The task, if `requester` may see it: with a verified requester (jwt) only
   * the evaluation's initiator may. Anyone else gets exactly the answer an
   * unknown id gets (404), so a task's existence is not disclosed.
   */
  private ownTask(taskId: string, requester: Requester): ApprovalTask {
    const t = this.task(taskId);
    if (requester === null) return t;
    const e = this.opts.store.getEvaluation(t.evaluationId);
    if (e === undefined || e.initiator !== requester)
      throw toolgateError("approval_not_found", `no approval ${taskId}`);
    return t;
  }

  /**
   * When `why` says why `principal` may not decide task or plan `id`: audits
   * the attempt ("refused", with `fields`) and throws `forbidden`.
   */
  private refuseIneligible(
    id: string,
    why: string | undefined,
    principal: Principal,
    approve: boolean,
    fields: (extra: Record<string, unknown>) => Record<string, unknown>,
  ): void {
    if (why === undefined) return;
    this.opts.events?.approvalEvent(
      "refused",
      fields({
        approver: principal.id,
        approver_roles: principal.roles,
        why,
        wanted: approve ? "approve" : "deny",
      }),
    );
    throw toolgateError("forbidden", `not eligible to decide ${id}: ${why}`);
  }

  private eventFields(
    t: ApprovalTask,
    extra: Record<string, unknown> = {},
  ): Record<string, unknown> {
    return rules.approvalEventFields(t, this.opts.store.getEvaluation(t.evaluationId), extra);
  }

  private view(
    t: ApprovalTask,
    baseUrl: string,
    e: EvaluationRecord | undefined,
  ): Record<string, unknown> {
    return rules.accessRequestView(t, baseUrl, e);
  }

  private approverView(
    t: ApprovalTask,
    e: EvaluationRecord,
    withStats = false,
  ): Record<string, unknown> {
    if (!withStats) return rules.approverView(t, e);
    let stats: RequestStats | undefined;
    try {
      stats = this.requestStats(e.agentId, e.tool, this.now() - rules.STATS_WINDOW_MS);
    } catch {
      stats = undefined; // a view without stats rather than none
    }
    return rules.approverView(t, e, stats);
  }
}

/**
 * The recorded needs_approval evaluation an access request cites, checked:
 * this agent's, the requester's own (jwt mode), still requestable, and bound
 * to this exact request (subject, action, resource, job). One check for the
 * sidecar's own service and for the fleet's, which then forwards it.
 */
export function requestableEvaluation(
  store: Pick<ApprovalStore, "getEvaluation">,
  request: AccessRequest,
  requester: Requester,
  agentId: string,
  nowMs: number,
): EvaluationRecord {
  const { denial } = request;
  const evaluation = store.getEvaluation(denial.evaluation_id);
  if (
    evaluation === undefined ||
    evaluation.agentId !== agentId ||
    (requester !== null && evaluation.initiator !== requester)
  ) {
    throw toolgateError("approval_not_found", `no requestable evaluation ${denial.evaluation_id}`);
  }
  if (evaluation.expiresAt <= nowMs) {
    throw toolgateError(
      "approval_expired",
      `evaluation ${denial.evaluation_id} is no longer requestable (expired ${iso(evaluation.expiresAt)})`,
    );
  }
  if (bindingHash(request, DEFAULT_BINDING_CONTEXT_MEMBERS) !== evaluation.bindingHash) {
    throw toolgateError(
      "invalid_denial_binding",
      "the request differs from the evaluation it cites (subject, action, resource or job)",
    );
  }
  return evaluation;
}

/**
 * The presented `context.approval`: its id, or what a request without a
 * usable one gets (none; ignored `approval_unknown` without an id).
 */
export function presentedApproval(req: DecisionRequest): string | ApprovalCheck {
  const presented = req.context?.approval;
  if (presented === undefined) return { kind: "none" };
  const id = isObject(presented) ? presented.id : undefined;
  if (typeof id !== "string") {
    return { kind: "ignored", code: "approval_unknown", message: "context.approval has no id" };
  }
  return id;
}

/**
 * How a presented approval `id` is judged, given its task and evaluation
 * (undefined: unknown) and the binding hash of the request presenting it:
 * bound to this request, approved, unrevoked, unused when single use,
 * unexpired. Pure: the sidecar's ApprovalService and the fleet's approvals
 * (src/fleet) give the same answer for the same state.
 */
export function judgeApproval(
  id: string,
  task: ApprovalTask | undefined,
  evaluation: EvaluationRecord | undefined,
  hash: string,
  agentId: string,
  nowMs: number,
): ApprovalCheck {
  if (task === undefined || evaluation === undefined || task.agentId !== agentId) {
    return {
      kind: "ignored",
      code: "approval_unknown",
      message: `no approval ${id} on this sidecar`,
    };
  }
  if (hash !== evaluation.bindingHash) {
    return {
      kind: "ignored",
      code: "approval_mismatch",
      message: `approval ${id} is bound to another request (subject, tool, arguments, resource or job differ)`,
    };
  }
  switch (task.status) {
    case "pending":
      return {
        kind: "ignored",
        code: "approval_pending",
        message: `approval ${id} is still pending`,
      };
    case "denied":
      return {
        kind: "deny",
        code: "approval_denied",
        message: `approval ${id} was denied by ${task.decidedBy ?? "an approver"}`,
      };
    case "expired":
      return { kind: "expired", message: `approval request ${id} expired before it was decided` };
    case "cancelled":
    case "failed":
      return {
        kind: "ignored",
        code: "approval_not_usable",
        message: `approval ${id} is ${task.status}`,
      };
    case "approved":
      break;
  }
  if (task.revokedAt !== null) {
    return {
      kind: "deny",
      code: "approval_revoked",
      message: `approval ${id} was revoked by ${task.revokedBy ?? "an admin"}`,
    };
  }
  const singleUse = evaluation.requirement.single_use;
  if (singleUse && task.usedAt !== null) {
    return {
      kind: "deny",
      code: "approval_used",
      message: `approval ${id} was already used (single use)`,
    };
  }
  if (task.approvedUntil === null || task.approvedUntil <= nowMs) {
    return { kind: "expired", message: `approval ${id} expired at ${iso(task.approvedUntil)}` };
  }
  return {
    kind: "verified",
    taskId: task.id,
    singleUse,
    approval: {
      id: task.id,
      state: "approved",
      approver: { id: task.decidedBy ?? "", roles: task.decidedByRoles ?? [] },
      single_use: singleUse,
      expires_at_ns: task.approvedUntil * 1e6,
    },
  };
}

/** A short label (a tool's class or stage) as kept: 1..64 characters, else null. */
function shortText(v: unknown): string | null {
  return typeof v === "string" && v.length > 0 && v.length <= 64 ? v : null;
}

/**
 * What is recorded of a needs_approval decision (or a deny that offers a
 * fresh request, approval_expired) so an access request can cite it;
 * undefined for any other decision. The request is redacted with the
 * policy's audit mask: approvers never see in clear what the trail hides.
 */
export function evaluationOf(
  d: Decision,
  req: DecisionRequest,
  verified: VerifiedFacts,
  redact: <T>(v: T, mask?: readonly unknown[], seen?: SecretsSeen) => T,
  mask?: readonly unknown[],
): EvaluationInput | undefined {
  if (d.approval === undefined || d.access_request === undefined) return undefined;
  // what the policy's mask hides in the request is hidden where its messages quote it, as in the trail
  const seen = new SecretsSeen();
  const redactedRequest = redact(req, mask, seen);
  return {
    evaluationId: d.access_request.evaluation_id,
    decisionId: d.decision_id,
    bindingHash: bindingHash(req, DEFAULT_BINDING_CONTEXT_MEMBERS),
    bindingContextMembers: [...DEFAULT_BINDING_CONTEXT_MEMBERS],
    redactedRequest,
    requirement: { ...d.approval },
    // the words approvers read: redacted like any free text (a message may quote an argument)
    reasons: d.reasons.map((r) => ({
      code: r.code,
      message: typeof r.message === "string" ? redact(r.message, undefined, seen) : "",
    })),
    initiator: verified.subject.id,
    agentId: verified.agent.id,
    // shown to approvers and audited: redacted like the request (the binding hash covers the
    // clear name); cut to the store's limit, as redaction may lengthen it
    tool: redact(req.action.name, undefined, seen).slice(0, 512),
    toolClass: shortText(d.tool?.class),
    toolStage: shortText(d.tool?.stage),
    policyRevision: d.policy.revision,
    createdAt: Date.parse(d.evaluated_at),
    expiresAt: Date.parse(d.access_request.expires_at),
  };
}

/** Plan ids (`pln_…`) share the approval routes with task ids (`apr_…`). */
export function isPlanId(id: string): boolean {
  return id.startsWith("pln_");
}

/** The envelopes as approvers read them: the redacted calls with their uses. */
function planEnvelopes(p: PlanRecord): Array<Record<string, unknown>> {
  const r = isObject(p.redacted) ? p.redacted : {};
  const calls = Array.isArray(r.calls) ? (r.calls as unknown[]) : [];
  const reasons = Array.isArray(r.reasons) ? (r.reasons as unknown[]) : [];
  return p.envelopes.map((e, i) => {
    const c = isObject(calls[i]) ? calls[i] : {};
    const u = p.uses[i];
    return {
      index: i,
      tool: typeof c.tool === "string" ? c.tool : e.tool,
      resource: e.resource,
      arguments: isObject(c.arguments) ? c.arguments : {},
      other_arguments: e.other_arguments,
      max_uses: e.max_uses,
      uses: u?.uses ?? 0,
      ttl_seconds: e.ttl_seconds,
      expires_at: iso(u?.expiresAt ?? null),
      requirement: p.requirement.envelopes[i] ?? null,
      reasons: Array.isArray(reasons[i]) ? reasons[i] : [],
    };
  });
}

/** A plan in the approvers' queue (GET /v1/approvals, `kind: "plan"`). */
export function planApproverView(p: PlanRecord): Record<string, unknown> {
  const r = isObject(p.redacted) ? p.redacted : {};
  const envelopes = planEnvelopes(p);
  const reasons: Array<{ code: string; message: string }> = [];
  for (const e of envelopes)
    for (const x of e.reasons as Array<{ code: string; message: string }>)
      if (!reasons.some((y) => y.code === x.code && y.message === x.message)) reasons.push(x);
  const tools = [...new Set(envelopes.map((e) => String(e.tool)))];
  return {
    id: p.id,
    kind: "plan",
    status: p.status,
    created_at: iso(p.createdAt),
    expires_at: iso(p.expiresAt),
    initiator: p.initiator,
    agent: p.agentId,
    tool: `plan: ${tools.join(", ")}`,
    tool_class: null,
    tool_stage: null,
    request: { subject: r.subject, resource: r.resource, context: r.context },
    plan: { envelopes, ttl_seconds: p.ttlSeconds, binding_hash: p.bindingHash },
    reasons,
    requirement: {
      approver_roles: p.requirement.approver_roles,
      single_use: false,
      ttl_seconds: p.ttlSeconds,
      exclude: p.requirement.exclude,
    },
    policy_revision: p.policyRevision,
    decided_by: p.decidedBy,
    decided_at: iso(p.decidedAt),
    comment: p.comment,
    approved_until: iso(p.approvedUntil),
    used_at: null,
    revoked_at: iso(p.revokedAt),
    agent_justification: p.justification,
  };
}

/** What the agent sees of its plan (POST/GET /access/v1/plans). */
export function planAgentView(p: PlanRecord, baseUrl: string): Record<string, unknown> {
  const task = {
    id: p.id,
    kind: "plan",
    status: p.status,
    status_endpoint: `${baseUrl}/access/v1/plans/${p.id}`,
    created_at: iso(p.createdAt),
    expires_at: iso(p.expiresAt),
    links: { cancel: `${baseUrl}/access/v1/plans/${p.id}/cancel` },
  };
  const out: Record<string, unknown> = { task };
  if (p.status === "approved" && p.approvedUntil !== null) {
    out.result = {
      mode: "plan",
      plan: {
        id: p.id,
        approved_at: iso(p.decidedAt),
        approved_until: iso(p.approvedUntil),
        revoked: p.revokedAt !== null,
        binding_hash: p.bindingHash,
        envelopes: p.envelopes.map((e, i) => ({
          index: i,
          tool: e.tool,
          max_uses: e.max_uses,
          uses: p.uses[i]?.uses ?? 0,
          expires_at: iso(p.uses[i]?.expiresAt ?? p.approvedUntil),
        })),
      },
    };
  }
  return out;
}

/** The store's input for `principal`'s decision; `approvedUntil` is kept only when approving. */
function decideInput(
  principal: Principal,
  approve: boolean,
  comment: string | undefined,
  approvedUntil: number,
  now: number,
): DecideInput {
  return {
    approve,
    by: principal.id,
    roles: principal.roles,
    comment: comment ?? null,
    approvedUntil: approve ? approvedUntil : null,
    now,
  };
}

/** The fields of a plan's approval audit event. */
export function planEventFields(
  p: PlanRecord,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    approval_id: p.id,
    kind: "plan",
    status: p.status,
    tool: [...new Set(p.envelopes.map((e) => e.tool))].join(","),
    initiator: p.initiator,
    approver: p.decidedBy,
    approver_roles: p.decidedByRoles,
    approved_until: iso(p.approvedUntil),
    binding_hash: p.bindingHash,
    ...extra,
  };
}
