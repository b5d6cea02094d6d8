/**
 * The fleet's approval flow on the control service: the same rules as a
 * sidecar's ApprovalService (src/approvals/rules.ts: eligibility, the
 * approvers' view, audit fields), over the PostgreSQL store. Sidecars submit,
 * read, cancel and use (each only its own agent's tasks); people list and
 * decide (the human API).
 */
import { bindingHash } from "../approvals/binding";
import {
  approvalEventFields,
  approverView,
  ineligible,
  iso,
  STATS_WINDOW_MS,
} from "../approvals/rules";
import type { AccessRequest, ApprovalEventName } from "../approvals/service";
import { toolgateError } from "../errors";
import type { Principal } from "../model";
import type {
  EvaluationRecord,
  FleetStore,
  FleetTask,
  RequestStats,
  TaskStatus,
} from "./store/types";
import { evaluationFromWire, evaluationWire, taskWire, type EvaluationWire } from "./wire";

/** POST /fleet/v1/access-requests (schemas/fleet-access-request.schema.json). */
export interface FleetSubmission {
  evaluation: EvaluationWire;
  request: AccessRequest;
  idempotency_key: string | null;
  requester: string | null;
  /** The agent's justification, redacted by the sidecar; absent or null: none. */
  justification?: string | null;
}

export interface FleetApprovalsOptions {
  store: FleetStore;
  /** Every approval event (audit and metrics). */
  event: (event: ApprovalEventName, fields: Record<string, unknown>) => void;
  /** Per initiator, fleet-wide (approvals.request_limit.*). */
  requestLimit: { max: number; windowSeconds: number };
  /** How long an approver has to decide (default 3600 s). */
  taskTtlSeconds?: number;
  /**
   * Told of each task a submission created (once, fleet-wide: only the
   * replica whose INSERT created it), with the approvers' view. Must not
   * block: notifiers queue and send in the background.
   */
  onPending?: (view: Record<string, unknown>) => void;
  /** Where failures of onPending are logged. */
  log?: { error: (msg: string, fields?: Record<string, unknown>) => void };
  now?: () => number;
}

const notFound = (id: string) => toolgateError("approval_not_found", `no approval ${id}`);

export class FleetApprovals {
  private readonly now: () => number;

  constructor(private readonly opts: FleetApprovalsOptions) {
    this.now = opts.now ?? Date.now;
  }

  private audit(
    event: ApprovalEventName,
    t: FleetTask,
    e: EvaluationRecord | undefined,
    extra: Record<string, unknown> = {},
  ): void {
    this.opts.event(event, approvalEventFields(t, e, { agent_id: t.agentId, ...extra }));
  }

  /** Moves overdue pending tasks to expired (each audited once, fleet-wide: the UPDATE says which). */
  async expire(now: number = this.now()): Promise<number> {
    const ids = await this.opts.store.expireDue(now);
    for (const id of ids) {
      const t = await this.opts.store.getTask(id);
      if (t !== undefined)
        this.audit("expired", t, await this.opts.store.getEvaluation(t.evaluationId));
    }
    return ids.length;
  }

  private async task(id: string): Promise<FleetTask> {
    const t = await this.opts.store.getTask(id);
    if (t === undefined) throw notFound(id);
    return t;
  }

  /**
   * How many access requests `agentId` made for `tool` since `sinceMs`, and
   * how many were approved, fleet-wide. The approvers' views carry this for
   * the last 24 h as `stats: {requested_today, approved_today}`.
   */
  requestStats(agentId: string, tool: string, sinceMs: number): Promise<RequestStats> {
    return this.opts.store.requestStats(agentId, tool, sinceMs);
  }

  /** The approvers' view with today's stats (without them if they cannot be read). */
  private async view(t: FleetTask, e: EvaluationRecord): Promise<Record<string, unknown>> {
    const stats = await this.requestStats(e.agentId, e.tool, this.now() - STATS_WINDOW_MS).catch(
      () => undefined,
    );
    return approverView(t, e, stats);
  }

  // -- the human API ------------------------------------------------------------

  async list(
    principal: Principal,
    status: TaskStatus | undefined,
    isAdmin: boolean,
    limit: number,
  ): Promise<Array<Record<string, unknown>>> {
    await this.expire();
    const tasks = await this.opts.store.listTasks({ status, limit });
    const evaluations = new Map<string, EvaluationRecord | undefined>();
    const out: Array<Record<string, unknown>> = [];
    for (const t of tasks) {
      if (!evaluations.has(t.evaluationId))
        evaluations.set(t.evaluationId, await this.opts.store.getEvaluation(t.evaluationId));
      const e = evaluations.get(t.evaluationId);
      if (e === undefined) continue;
      if (!isAdmin && ineligible(principal, e) !== undefined) continue;
      out.push(await this.view(t, e));
    }
    return out;
  }

  async detail(id: string): Promise<Record<string, unknown>> {
    const t = await this.task(id);
    const e = await this.opts.store.getEvaluation(t.evaluationId);
    return e ? this.view(t, e) : { id: t.id, status: t.status };
  }

  async decide(
    id: string,
    principal: Principal,
    approve: boolean,
    comment: string | undefined,
  ): Promise<Record<string, unknown>> {
    await this.expire();
    const task = await this.task(id);
    const e = await this.opts.store.getEvaluation(task.evaluationId);
    if (e === undefined)
      throw toolgateError("approval_not_found", `approval ${id} has no evaluation`);
    const why = ineligible(principal, e);
    if (why !== undefined) {
      this.audit("refused", task, e, {
        approver: principal.id,
        approver_roles: principal.roles,
        why,
        wanted: approve ? "approve" : "deny",
      });
      throw toolgateError("forbidden", `not eligible to decide ${id}: ${why}`);
    }
    const now = this.now();
    const decided = await this.opts.store.decide(task.id, {
      approve,
      by: principal.id,
      roles: principal.roles,
      comment: comment ?? null,
      approvedUntil: approve ? now + e.requirement.ttl_seconds * 1000 : null,
      now,
    });
    this.audit(approve ? "approved" : "denied", decided, e, { comment });
    return approverView(decided, e);
  }

  async revoke(id: string, principal: Principal): Promise<Record<string, unknown>> {
    const t = await this.opts.store.revoke((await this.task(id)).id, principal.id, this.now());
    const e = await this.opts.store.getEvaluation(t.evaluationId);
    this.audit("revoked", t, e, { revoked_by: principal.id });
    return e ? approverView(t, e) : { id: t.id, status: t.status };
  }

  // -- the sidecar API ----------------------------------------------------------

  /**
   * An access request forwarded by the sidecar of `agentId`: the evaluation it
   * recorded must be its own agent's, unexpired, cited by the request, and
   * bound to it (the binding hash over the evaluation's context members).
   */
  async submit(
    agentId: string,
    s: FleetSubmission,
  ): Promise<{ created: boolean; body: Record<string, unknown> }> {
    const now = this.now();
    const input = evaluationFromWire(s.evaluation);
    if (input.agentId !== agentId || s.request.denial.evaluation_id !== input.evaluationId) {
      throw toolgateError(
        "approval_not_found",
        `no requestable evaluation ${s.request.denial.evaluation_id}`,
      );
    }
    if (s.requester !== null && input.initiator !== s.requester) {
      throw toolgateError(
        "approval_not_found",
        `no requestable evaluation ${s.request.denial.evaluation_id}`,
      );
    }
    if (input.expiresAt <= now) {
      throw toolgateError(
        "approval_expired",
        `evaluation ${input.evaluationId} is no longer requestable (expired ${iso(input.expiresAt)})`,
      );
    }
    if (bindingHash(s.request, input.bindingContextMembers) !== input.bindingHash) {
      throw toolgateError(
        "invalid_denial_binding",
        "the request differs from the evaluation it cites (subject, action, resource or job)",
      );
    }
    await this.expire(now);
    const { task, evaluation, created } = await this.opts.store.submit({
      evaluation: input,
      agentId,
      idempotencyKey: s.idempotency_key,
      requester: s.requester,
      justification: s.justification ?? null,
      expiresAt: now + (this.opts.taskTtlSeconds ?? 3600) * 1000,
      limit: {
        max: this.opts.requestLimit.max,
        windowMs: this.opts.requestLimit.windowSeconds * 1000,
      },
      now,
    });
    if (created) {
      this.audit("requested", task, evaluation, { requester: s.requester });
      if (this.opts.onPending !== undefined) this.notify(this.opts.onPending, task, evaluation);
    }
    return {
      created,
      body: { created, task: taskWire(task), evaluation: evaluationWire(evaluation) },
    };
  }

  /** Tells onPending of a new task in the background: the submission's answer never waits. */
  private notify(
    onPending: (view: Record<string, unknown>) => void,
    task: FleetTask,
    e: EvaluationRecord,
  ): void {
    void this.view(task, e)
      .then(onPending)
      .catch((err: unknown) =>
        this.opts.log?.error("approval notification failed", {
          event: "approvals.notify_error",
          error: (err as Error).message,
        }),
      );
  }

  /** A task of the caller's agent (any other is "not found"), due tasks expired first. */
  private async own(
    agentId: string,
    id: string,
    expireFirst = true,
  ): Promise<{ task: FleetTask; e: EvaluationRecord }> {
    if (expireFirst) await this.expire();
    const task = await this.opts.store.getTask(id);
    if (task === undefined || task.agentId !== agentId) throw notFound(id);
    const e = await this.opts.store.getEvaluation(task.evaluationId);
    if (e === undefined || e.agentId !== agentId) throw notFound(id);
    return { task, e };
  }

  async get(agentId: string, id: string): Promise<Record<string, unknown>> {
    const { task, e } = await this.own(agentId, id);
    return { task: taskWire(task), evaluation: evaluationWire(e) };
  }

  /** The requester (when the sidecar verified one) must be the evaluation's initiator. */
  async cancel(
    agentId: string,
    id: string,
    requester: string | null,
  ): Promise<Record<string, unknown>> {
    const { e } = await this.own(agentId, id);
    if (requester !== null && e.initiator !== requester) throw notFound(id);
    const task = await this.opts.store.cancel(id, agentId, this.now());
    this.audit("cancelled", task, e);
    return { task: taskWire(task), evaluation: evaluationWire(e) };
  }

  /** A decision of the caller's agent uses an approval; single use: claimed once, fleet-wide. */
  async use(
    agentId: string,
    id: string,
    decisionId: string,
    singleUse: boolean,
  ): Promise<Record<string, unknown>> {
    // on the decision path: no expiry sweep (a pending task is never usable anyway)
    const { e } = await this.own(agentId, id, false);
    const r = await this.opts.store.useApproval(id, agentId, decisionId, singleUse, this.now());
    if (r.claimed)
      this.audit("used", r.task, e, {
        used_by_decision_id: decisionId,
        single_use: singleUse || e.requirement.single_use,
      });
    return { claimed: r.claimed, task: taskWire(r.task) };
  }
}
