/**
 * FleetApprovals: the decider's approval port and the agent port's
 * access-request routes in fleet mode. Evaluations are recorded where they
 * are decided (this sidecar's approvals.db, as without a fleet); everything
 * after that lives on the control service, so that one approval queue
 * serves every sidecar of the agent and a single-use approval is used once
 * fleet-wide:
 *
 * - submit: the recorded evaluation (checked here as the sidecar's own
 *   service checks it: owner, unexpired, bound to the request) goes to
 *   POST /fleet/v1/access-requests with the agent's request;
 * - get / cancel: GET /fleet/v1/access-requests/{id}, POST …/cancel;
 * - check: GET the task, then the same judgement as the sidecar's own
 *   service (judgeApproval); a failure denies approval_unavailable (the
 *   decider's catch);
 * - consume: POST /fleet/v1/approvals/{id}/use {single_use: true} — the
 *   control's conditional UPDATE decides which decision claims it;
 *   used (multi use): the same with single_use false, in the background.
 *
 * Approval events (requested, cancelled, used) are audited here as the
 * sidecar's own service audits them; approved, denied, revoked and expired
 * happen on the control service and are audited there.
 */
import { bindingHash, DEFAULT_BINDING_CONTEXT_MEMBERS } from "../approvals/binding";
import { accessRequestView, approvalEventFields } from "../approvals/rules";
import {
  evaluationOf,
  judgeApproval,
  presentedApproval,
  redactJustification,
  requestableEvaluation,
  type AccessRequest,
  type ApprovalCheck,
  type ApprovalEvents,
  type Requester,
  EVALUATION_RETENTION_MS,
} from "../approvals/service";
import type { ApprovalStore, EvaluationRecord } from "../approvals/store";
import { toolgateError, isToolgateError } from "../errors";
import type { Decision, DecisionRequest, VerifiedFacts } from "../model";
import { type Component, type ComponentStatus, notRunning } from "../shared/lifecycle";
import type { SecretsSeen } from "../redaction/redact";
import type { Logger } from "../shared/log";
import type { FleetClient } from "./client";
import {
  bool,
  evaluationToWire,
  member,
  obj,
  taskAndEvaluation,
  taskFromWire,
  type FleetTask,
} from "./wire";
import { OrderedMap } from "../shared/ordered-map";

export interface FleetApprovalsOptions {
  client: FleetClient;
  /** This sidecar's approvals.db: the evaluations it decided. */
  store: ApprovalStore;
  agentId: string;
  redact: <T>(v: T, mask?: readonly unknown[], seen?: SecretsSeen) => T;
  events?: ApprovalEvents;
  log: Logger;
  now?: () => number;
  /** How often old evaluations are pruned (default 5 s). */
  housekeepingIntervalMs?: number;
}

/** Evaluations of tasks seen by check(), for the events of consume and used. */
const MAX_SEEN = 10_000;

const idPath = (id: string): string => encodeURIComponent(id);

export class FleetApprovals implements Component {
  readonly name = "approvals";
  private readonly opts: FleetApprovalsOptions;
  private readonly client: FleetClient;
  private readonly now: () => number;
  private readonly seen = new OrderedMap<string, EvaluationRecord>();
  private housekeeping: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;

  constructor(opts: FleetApprovalsOptions) {
    this.opts = opts;
    this.client = opts.client;
    this.now = opts.now ?? Date.now;
  }

  private hash(req: { subject: unknown; action: unknown; resource: unknown; context?: unknown }) {
    return bindingHash(req, DEFAULT_BINDING_CONTEXT_MEMBERS);
  }

  // -- the decider's port ---------------------------------------------------------

  /** Records a needs_approval decision here, so an access request can cite it. */
  recordNeedsApproval(
    d: Decision,
    req: DecisionRequest,
    verified: VerifiedFacts,
    mask?: readonly unknown[],
  ): void {
    const e = evaluationOf(d, req, verified, this.opts.redact, mask);
    if (e !== undefined) this.opts.store.addEvaluation(e);
  }

  /** The presented approval, judged on the control service's task (a promise when there is one). */
  check(req: DecisionRequest, nowMs: number = this.now()): ApprovalCheck | Promise<ApprovalCheck> {
    const id = presentedApproval(req);
    if (typeof id !== "string") return id;
    const hash = this.hash(req);
    return this.fetchTask(id).then((answer) => {
      const found = answer === undefined ? undefined : this.vouched(answer);
      if (found !== undefined) this.remember(found.task.id, found.evaluation);
      return judgeApproval(
        id,
        found?.task,
        found?.evaluation,
        hash,
        this.opts.agentId,
        // the task was read after nowMs: judge expiry at the later of the two
        Math.max(nowMs, this.now()),
      );
    });
  }

  /**
   * What of the control service's answer this sidecar can check itself, it
   * checks: the evaluation must be of this agent; one this sidecar recorded is
   * judged as recorded here (its binding hash, single use, TTL), whatever the
   * answer says of it; and an approval is good for at most the requirement's
   * TTL after it was decided. Undefined: not this agent's.
   */
  private vouched(found: {
    task: FleetTask;
    evaluation: EvaluationRecord;
  }): { task: FleetTask; evaluation: EvaluationRecord } | undefined {
    const { agentId } = this.opts;
    if (found.task.agentId !== agentId || found.evaluation.agentId !== agentId) return undefined;
    let local: EvaluationRecord | undefined;
    try {
      local = this.opts.store.getEvaluation(found.task.evaluationId);
    } catch {
      local = undefined; // the answer's evaluation is judged (the hash below still binds it)
    }
    if (local !== undefined && local.agentId !== agentId) return undefined;
    const evaluation = local ?? found.evaluation;
    const { task } = found;
    if (task.approvedUntil === null) return { task, evaluation };
    const ttlMs = evaluation.requirement.ttl_seconds * 1000;
    // an honest control service answers approved_until = decided_at + ttl (1 s of rounding allowed);
    // none decided: never usable
    if (task.decidedAt === null) return { task: { ...task, approvedUntil: null }, evaluation };
    const latest = task.decidedAt + ttlMs + 1000;
    return {
      task: task.approvedUntil > latest ? { ...task, approvedUntil: latest } : task,
      evaluation,
    };
  }

  /** Claims a single-use approval for this decision, fleet-wide; false if another decision won. */
  async consume(taskId: string, decisionId: string): Promise<boolean> {
    const r = await this.use(taskId, decisionId, true);
    if (r.claimed) this.event("used", r.task, { used_by_decision_id: decisionId });
    return r.claimed;
  }

  /** Records a use of a multi-use approval (audit), in the background. */
  used(taskId: string, decisionId: string): void {
    this.client.background(
      () => this.use(taskId, decisionId, false),
      (r) => this.event("used", r.task, { decision_id: decisionId }),
      (e) =>
        this.opts.log.warn("fleet: the use of an approval could not be recorded", {
          event: "fleet.approval_use_failed",
          approval_id: taskId,
          decision_id: decisionId,
          error: e.message,
        }),
    );
  }

  private use(
    taskId: string,
    decisionId: string,
    singleUse: boolean,
  ): Promise<{ claimed: boolean; task: FleetTask }> {
    return this.client.call(
      "POST",
      `/fleet/v1/approvals/${idPath(taskId)}/use`,
      { decision_id: decisionId, single_use: singleUse },
      (v) => {
        const o = obj(v, "approval use");
        const task = taskFromWire(member(o, "task"));
        if (task.id !== taskId) throw new Error("approval use: another task came back");
        return { claimed: bool(o, "claimed", "approval use"), task };
      },
      "approval use",
    );
  }

  // -- the agent port's access requests ------------------------------------------

  /** POST /access/v1/requests: the recorded evaluation and the request go to the control service. */
  async submit(
    request: AccessRequest,
    idempotencyKey: string | undefined,
    baseUrl: string,
    requester: Requester,
  ): Promise<{ created: boolean; view: Record<string, unknown> }> {
    const evaluation = requestableEvaluation(
      this.opts.store,
      request,
      requester,
      this.opts.agentId,
      this.now(),
    );
    // the agent's justification goes redacted, beside the request (never in clear inside it)
    const { justification: clear, ...bound } = request;
    const justification = redactJustification(clear, this.opts.redact);
    const answer = await this.client.call(
      "POST",
      "/fleet/v1/access-requests",
      {
        evaluation: evaluationToWire(evaluation),
        request: bound,
        idempotency_key: idempotencyKey ?? null,
        requester,
        ...(justification !== null ? { justification } : {}),
      },
      (v) => {
        const o = obj(v, "access request");
        return { created: bool(o, "created", "access request"), ...taskAndEvaluation(v) };
      },
      "access request",
    );
    const { task, created } = answer;
    if (
      task.evaluationId !== evaluation.evaluationId ||
      task.agentId !== this.opts.agentId ||
      answer.evaluation.evaluationId !== evaluation.evaluationId ||
      answer.evaluation.agentId !== this.opts.agentId
    )
      throw toolgateError(
        "fleet_unavailable",
        "access request: the control service answered with another evaluation's task",
      );
    // the control service notifies approvers of a new task (once, fleet-wide); a sidecar never does
    if (created) this.event("requested", task);
    return { created, view: accessRequestView(task, baseUrl, answer.evaluation) };
  }

  /** GET /access/v1/requests/{id}: the initiator's (jwt) task; anyone else's is "not found". */
  async get(
    taskId: string,
    baseUrl: string,
    requester: Requester,
  ): Promise<Record<string, unknown>> {
    const { task, evaluation } = await this.ownTask(taskId, requester);
    return accessRequestView(task, baseUrl, evaluation);
  }

  /** The initiator (jwt) cancels her own pending request; anyone else's is "not found". */
  async cancel(
    taskId: string,
    baseUrl: string,
    requester: Requester,
  ): Promise<Record<string, unknown>> {
    await this.ownTask(taskId, requester);
    const { task, evaluation } = await this.client.call(
      "POST",
      `/fleet/v1/access-requests/${idPath(taskId)}/cancel`,
      { requester },
      taskAndEvaluation,
      "access request cancel",
    );
    if (
      task.id !== taskId ||
      task.agentId !== this.opts.agentId ||
      task.evaluationId !== evaluation.evaluationId ||
      evaluation.agentId !== this.opts.agentId
    )
      throw toolgateError(
        "fleet_unavailable",
        "access request cancel: the control service answered with another task",
      );
    this.event("cancelled", task, {}, evaluation);
    return accessRequestView(task, baseUrl, evaluation);
  }

  /** The task and its evaluation, if `requester` may see it (else approval_not_found). */
  private async ownTask(
    taskId: string,
    requester: Requester,
  ): Promise<{ task: FleetTask; evaluation: EvaluationRecord }> {
    const found = await this.fetchTask(taskId);
    if (
      found === undefined ||
      found.task.agentId !== this.opts.agentId ||
      (requester !== null && found.evaluation.initiator !== requester)
    )
      throw toolgateError("approval_not_found", `no approval ${taskId}`);
    return found;
  }

  /** The task and its evaluation from the control service; undefined when it has none (404). */
  private async fetchTask(
    taskId: string,
  ): Promise<{ task: FleetTask; evaluation: EvaluationRecord } | undefined> {
    try {
      const found = await this.client.call(
        "GET",
        `/fleet/v1/access-requests/${idPath(taskId)}`,
        undefined,
        taskAndEvaluation,
        "approval status",
      );
      if (found.task.id !== taskId || found.task.evaluationId !== found.evaluation.evaluationId)
        throw toolgateError(
          "fleet_unavailable",
          "approval status: the control service answered with another task",
        );
      return found;
    } catch (e) {
      if (isToolgateError(e) && e.code === "approval_not_found") return undefined;
      throw e;
    }
  }

  private remember(taskId: string, e: EvaluationRecord): void {
    this.seen.delete(taskId);
    this.seen.set(taskId, e);
    if (this.seen.size > MAX_SEEN) this.seen.shift();
  }

  private event(
    name: "requested" | "cancelled" | "used",
    task: FleetTask,
    extra: Record<string, unknown> = {},
    evaluation?: EvaluationRecord,
  ): void {
    const e =
      evaluation ?? this.seen.get(task.id) ?? this.opts.store.getEvaluation(task.evaluationId);
    this.opts.events?.approvalEvent(name, approvalEventFields(task, e, extra));
  }

  // -- lifecycle --------------------------------------------------------------------

  /** Prunes evaluations nobody asked about, every few seconds (as the sidecar's own service). */
  start(): Promise<void> {
    if (!this.started && !this.stopped) {
      this.started = true;
      this.housekeeping = setInterval(() => {
        try {
          this.opts.store.pruneEvaluations(this.now() - EVALUATION_RETENTION_MS);
        } catch (e) {
          this.opts.log.error("approval housekeeping failed", {
            event: "approvals.housekeeping_error",
            error: (e as Error).message,
          });
        }
      }, this.opts.housekeepingIntervalMs ?? 5000);
      this.housekeeping.unref();
    }
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.housekeeping);
    this.housekeeping = undefined;
    this.opts.store.close();
    return Promise.resolve();
  }

  /** ERROR while the evaluation store cannot serve. */
  status(): ComponentStatus {
    const idle = notRunning(this.started, this.stopped);
    if (idle !== undefined) return idle;
    const problem = this.opts.store.problem();
    return problem === undefined ? { state: "OK" } : { state: "ERROR", detail: problem };
  }
}
