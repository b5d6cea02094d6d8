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
    if (e !== undefined) this.opts.store.recordEvaluation(e);
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
    return out;
  }

  detail(taskId: string): Record<string, unknown> {
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
    const task = this.task(taskId);
    const e = this.opts.store.getEvaluation(task.evaluationId);
    if (e === undefined)
      throw toolgateError("approval_not_found", `approval ${taskId} has no evaluation`);
    const why = this.ineligible(principal, e);
    if (why !== undefined) {
      this.opts.events?.approvalEvent(
        "refused",
        this.eventFields(task, {
          approver: principal.id,
          approver_roles: principal.roles,
          why,
          wanted: approve ? "approve" : "deny",
        }),
      );
      throw toolgateError("forbidden", `not eligible to decide ${taskId}: ${why}`);
    }
    const now = this.now();
    const decided = this.opts.store.decide(task.id, {
      approve,
      by: principal.id,
      roles: principal.roles,
      comment: comment ?? null,
      approvedUntil: approve ? now + e.requirement.ttl_seconds * 1000 : null,
      now,
    });
    this.opts.events?.approvalEvent(
      approve ? "approved" : "denied",
      this.eventFields(decided, { comment }),
    );
    return this.approverView(decided, e);
  }

  /** Admin: revoke an approval; no new decision will honour it. */
  revoke(taskId: string, principal: Principal): Record<string, unknown> {
    const t = this.opts.store.revoke(this.task(taskId).id, principal.id, this.now());
    this.opts.events?.approvalEvent("revoked", this.eventFields(t));
    return this.detail(t.id);
  }

  /** Moves overdue pending tasks to expired (and audits each). */
  expire(nowMs: number = this.now()): void {
    for (const id of this.opts.store.expireDue(nowMs)) {
      const t = this.opts.store.getTask(id);
      if (t) this.opts.events?.approvalEvent("expired", this.eventFields(t));
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
