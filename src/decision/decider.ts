import { createHash, randomUUID } from "node:crypto";
import { isToolgateError, normalizeError, toolgateError, type ToolgateError } from "../errors";
import type { Identity } from "../identity";
import type { ApprovalCheck, PlanCheck } from "../approvals/service";
import type { GrantMinter } from "../grants";
import { switchDeny, type ContainmentDeny } from "../containment";
import {
  drive,
  wait,
  type ApprovalPort,
  type ContainmentPort,
  type SessionPort,
  type Steps,
} from "./ports";
import type { PolicyEngine } from "../policy/engine";
import { checkPolicyOutput } from "./output";
import type {
  Decision,
  DecisionEvent,
  DecisionNotes,
  DecisionRequest,
  DecisionSink,
  GrantInfo,
  PolicyOutput,
  Principal,
  RefusalEvent,
  RequestContext,
  VerifiedFacts,
} from "../model";

export type * from "../model";
export { checkPolicyOutput, KNOWN_OBLIGATIONS } from "./output";
export type { ApprovalPort, ContainmentPort, MaybePromise, SessionPort } from "./ports";
export { drive, mapMaybe, wait, type Steps } from "./ports";

/** Where the active policy comes from; the bundle manager implements it. */
export interface PolicySource {
  active(): PolicyEngine | undefined;
}

export interface DeciderOptions {
  policy: PolicySource;
  identity: Identity;
  /** Seconds a needs_approval answer stays requestable (access_request.expires_at). */
  requestTtlSeconds: number;
  now?: () => number;
  newId?: () => string;
  /** Audit: receives every decision and refusal. */
  sink?: DecisionSink;
  /** Approvals: records needs_approval evaluations and checks presented approvals. */
  approvals?: ApprovalPort;
  /** Grants: signs a request-bound credential onto every allow. */
  grants?: GrantMinter;
  /** Containment: kill switches, rates and budgets, enforced before evaluation. */
  containment?: ContainmentPort;
  /** Session state: the policy sees the session's history (verified.session); every decision adds to it. */
  session?: SessionPort;
  /** A candidate policy evaluated beside the active one, for the record only. */
  candidate?: PolicySource;
}

/**
 * The session a request belongs to: the token's session claim when it has
 * one, else `context.session.id` (a non-empty string of at most 256).
 */
function sessionIdOf(
  req: DecisionRequest,
  caller: Principal | undefined,
  subjectId: string,
): string | undefined {
  let id: unknown = caller?.session;
  if (id === undefined) {
    const s = req.context?.session;
    if (s === null || typeof s !== "object") return undefined;
    id = (s as Record<string, unknown>).id;
  }
  if (typeof id !== "string" || id.length === 0 || id.length > 256) return undefined;
  // one subject's session ids never meet another's: the key is a digest of the verified subject, then the id
  return `${createHash("sha256").update(subjectId).digest("base64url").slice(0, 22)}:${id}`;
}

/** The deny reason of a policy that could not answer (fail closed). */
function failClosedReason(err: ToolgateError): {
  code: keyof typeof FAIL_CLOSED_REASONS;
  message: string;
} {
  const code =
    err.code === "policy_output_invalid" || err.code === "unknown_obligation"
      ? err.code
      : "evaluation_error";
  return { code, message: `${FAIL_CLOSED_REASONS[code]}: ${err.message}` };
}

/** One action's preview (Decider.preview): the policy's outcome, nothing done. */
/** What a preview evaluates with (see Decider.previewScope). */
interface PreviewScope {
  nowMs: number;
  nowNs: number;
  verified: VerifiedFacts;
  engine: PolicyEngine;
  switches: Parameters<typeof switchDeny>[0];
}

/**
 * What the policy answers for `req`, nothing done: a kill switch in force
 * or a policy failure answers `deny` (the latter with the fail-closed reason).
 */
function previewOne(scope: PreviewScope, verifiedJson: string, req: DecisionRequest): Preview {
  const { nowMs, nowNs, verified, engine, switches } = scope;
  const name = req.action.name;
  const stop = switchDeny(switches, verified.agent.id, req, verified, nowMs);
  if (stop !== undefined)
    return { name, outcome: "deny", reasons: [{ code: stop.code, message: stop.message }] };
  let out: PolicyOutput | ToolgateError;
  try {
    out = checkPolicyOutput(
      engine.evaluateJson(`{"request":${JSON.stringify(req)},"verified":${verifiedJson}}`, nowNs),
    );
  } catch (e) {
    out = normalizeError(e, "policy_evaluation_failed");
  }
  if (isToolgateError(out)) return { name, outcome: "deny", reasons: [failClosedReason(out)] };
  const p: Preview = { name, outcome: out.outcome, reasons: out.reasons };
  if (out.approval !== undefined) p.approval = out.approval;
  return p;
}

export interface Preview {
  name: string;
  outcome: Decision["outcome"];
  reasons: Decision["reasons"];
  approval?: Decision["approval"];
}

/** What decide() answers: the decision, and what audit records beside it. */
export interface Decided {
  decision: Decision;
  notes: DecisionNotes | undefined;
}

/** Reason codes toolgate itself puts on a deny when the policy cannot answer. */
export const FAIL_CLOSED_REASONS = {
  evaluation_error: "policy evaluation failed; denied (fail closed)",
  policy_output_invalid: "the policy returned a malformed decision; denied (fail closed)",
  unknown_obligation:
    "the policy asked for an obligation toolgate cannot honour; denied (fail closed)",
} as const;

/** An allow under a plan that waits for its use to be claimed (Decider.claimPlanUse). */
interface PendingPlanUse {
  planId: string;
  envelopes: readonly number[];
  /** The policy's answer with the plan's approval. */
  out: PolicyOutput;
  /** The needs_approval decision as it was, to go back to when no use can be claimed. */
  before: {
    outcome: Decision["outcome"];
    reasons: Decision["reasons"];
    obligations: Decision["obligations"];
    tool: Decision["tool"] | undefined;
    approval: Decision["approval"] | undefined;
    access_request: Decision["access_request"] | undefined;
  };
}

/**
 * The one decision path every face calls: identity → policy → checked
 * Decision. Synchronous (the wasm evaluation is), unless a port answers with
 * a promise: in fleet mode a budget reservation, a presented approval or an
 * empty rate lease waits on the control service. `decide` then returns a
 * promise; the faces await it only when it is one.
 */
export class Decider {
  private readonly opts: DeciderOptions;
  private readonly now: () => number;
  private readonly newId: () => string;

  constructor(opts: DeciderOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    this.newId = opts.newId ?? randomUUID;
  }

  /**
   * Decides one request. `requestJson`, when given, must be the JSON text of
   * `req` (the faces pass the body they parsed, which saves a stringify).
   * Throws ToolgateError only for request problems (`agent_mismatch`) and for
   * `policy_unavailable` (synchronously: before any port is asked); every
   * policy, port or store failure is a deny.
   */
  decide(
    req: DecisionRequest,
    ctx: RequestContext,
    requestJson?: string,
  ): Decided | Promise<Decided> {
    return drive(this.steps(req, ctx, requestJson));
  }

  /**
   * decide() where every port answers synchronously (a sidecar's own state,
   * the offline tools): the Decided itself. Throws `internal_error` if a port
   * answered with a promise (fleet mode); use decide() there.
   */
  decideSync(req: DecisionRequest, ctx: RequestContext, requestJson?: string): Decided {
    const r = this.decide(req, ctx, requestJson);
    if (r instanceof Promise) {
      r.catch(() => undefined);
      throw toolgateError(
        "internal_error",
        "decideSync: a port answered asynchronously; use decide()",
      );
    }
    return r;
  }

  /**
   * What the policy would answer for each of `names` as the action of
   * `base` — AuthZEN action search. The caller is verified once, as decide()
   * does (a refusal throws); then each name is evaluated with no arguments
   * and no side effects: no decision recorded, no grant, no budget
   * reservation, no rate token, no access request. Kill switches in force
   * answer `deny` as they would on decide(); rates and budgets are not
   * consulted (they are capacity, not permission). A policy failure for a
   * name answers `deny` with the fail-closed reason.
   */
  preview(
    base: Omit<DecisionRequest, "action">,
    names: readonly string[],
    ctx: RequestContext,
  ): { policy: { bundle: string; revision: string }; results: Preview[] } {
    const probe: DecisionRequest = { ...base, action: { name: names[0] ?? "" } };
    const scope = this.previewScope(probe, ctx);
    const { nowMs, verified, engine } = scope;
    // the session as decide() would see it (this sidecar's own summary: a search makes no network hop)
    const session = this.opts.session;
    const sessionId =
      session === undefined ? undefined : sessionIdOf(probe, ctx.principal, verified.subject.id);
    if (session !== undefined && sessionId !== undefined) {
      const v = session.view(sessionId, nowMs, { ...base, action: { name: "" } }, engine);
      if (!(v instanceof Promise)) verified.session = v;
    }
    const verifiedJson = JSON.stringify(verified);
    const results = names.map((name) =>
      previewOne(scope, verifiedJson, { ...base, action: { name } }),
    );
    return { policy: { bundle: engine.info.bundle, revision: engine.info.revision }, results };
  }

  /**
   * What the policy would answer for each of `requests` (plan approvals:
   * each envelope's representative calls), nothing done — as preview(),
   * but whole requests with their arguments. The caller is verified once,
   * on the first request (all share subject and context).
   */
  previewRequests(
    requests: readonly DecisionRequest[],
    ctx: RequestContext,
  ): { policy: { bundle: string; revision: string }; results: Preview[] } {
    const first = requests[0];
    if (first === undefined) throw toolgateError("invalid_request", "nothing to preview");
    const scope = this.previewScope(first, ctx);
    const verifiedJson = JSON.stringify(scope.verified);
    const results = requests.map((req) => previewOne(scope, verifiedJson, req));
    const { engine } = scope;
    return { policy: { bundle: engine.info.bundle, revision: engine.info.revision }, results };
  }

  /**
   * What preview() and previewRequests() evaluate with: the caller verified
   * on `probe`, the active policy (`policy_unavailable` without one) and the
   * kill switches in force, also put into the verified facts.
   */
  private previewScope(probe: DecisionRequest, ctx: RequestContext): PreviewScope {
    const nowMs = this.now();
    const nowNs = nowMs * 1e6;
    const verified = this.opts.identity.verify(probe, nowNs, ctx.principal);
    const engine = this.opts.policy.active();
    if (engine === undefined) throw toolgateError("policy_unavailable");
    const switches = this.opts.containment?.view(nowMs).killswitches ?? [];
    if (this.opts.containment !== undefined) verified.containment = { killswitches: switches };
    return { nowMs, nowNs, verified, engine, switches };
  }

  private *steps(req: DecisionRequest, ctx: RequestContext, requestJson?: string): Steps<Decided> {
    const nowMs = this.now();
    const nowNs = nowMs * 1e6;
    let verified: VerifiedFacts;
    let engine: PolicyEngine | undefined;
    try {
      verified = this.opts.identity.verify(req, nowNs, ctx.principal);
      engine = this.opts.policy.active();
      if (engine === undefined) throw toolgateError("policy_unavailable");
    } catch (e) {
      const err = normalizeError(e);
      const error = { code: err.code, message: err.message, status: err.status };
      this.finish({ kind: "refusal", error, request: req, ctx });
      throw err;
    }
    const decision: Decision = {
      decision_id: this.newId(),
      outcome: "deny",
      reasons: [],
      obligations: [],
      policy: { bundle: engine.info.bundle, revision: engine.info.revision },
      evaluated_at: new Date(nowMs).toISOString(),
    };
    // Audit cannot keep a record now (its backlog is past its bound): deny before anything is done.
    const auditFull = this.opts.sink?.overloaded?.();
    if (auditFull !== undefined) {
      decision.reasons = [
        {
          code: "audit_unavailable",
          message: `the decision could not be recorded; denied (fail closed): ${auditFull}`,
        },
      ];
      return this.finish({ kind: "decision", decision, request: req, verified, ctx });
    }
    const session = this.opts.session;
    const sessionId =
      session === undefined ? undefined : sessionIdOf(req, ctx.principal, verified.subject.id);
    let sessionDown: string | undefined;
    if (session !== undefined && sessionId !== undefined) {
      try {
        verified.session = yield* wait(session.view(sessionId, nowMs, req, engine));
      } catch (e) {
        sessionDown = normalizeError(e).message;
      }
    }
    const policy: PolicyEngine = engine;
    const event: DecisionEvent = { kind: "decision", decision, request: req, verified, ctx };
    /** Every decision exit: into the session's history, then answered. */
    const done = (e: DecisionEvent): Decided => {
      if (sessionId !== undefined) session?.record(sessionId, e.decision, req, policy, nowMs);
      return this.finish(e);
    };
    if (sessionDown !== undefined) {
      decision.reasons = [
        {
          code: "session_unavailable",
          message: `the session's history could not be read; denied (fail closed): ${sessionDown}`,
        },
      ];
      return done(event);
    }
    // Containment first: a kill switch or limit denies whatever the bundle says.
    const containment = this.opts.containment;
    if (containment !== undefined) {
      let held: (Omit<ContainmentDeny, "code"> & { code: string }) | undefined;
      try {
        held = yield* wait(containment.check(req, verified, engine, nowMs));
      } catch (e) {
        // malformed limits in the bundle's data: fail closed
        held = {
          code: "evaluation_error",
          message: `${FAIL_CLOSED_REASONS.evaluation_error}: ${normalizeError(e).message}`,
        };
      }
      if (held !== undefined) {
        decision.reasons = [{ code: held.code, message: held.message }];
        if (held.retry_after !== undefined) decision.retry_after = held.retry_after;
        if (held.killswitch_id !== undefined) event.notes = { killswitch_id: held.killswitch_id };
        return done(event);
      }
      verified.containment = containment.view(nowMs);
    }
    const check = yield* this.approvalCheck(req, nowMs);
    if (check.kind === "deny") {
      decision.reasons = [{ code: check.code, message: check.message }];
      return done(event);
    }
    if (check.kind === "verified") verified.approval = check.approval;
    const input = `{"request":${requestJson ?? JSON.stringify(req)},"verified":${JSON.stringify(verified)}}`;
    let out: PolicyOutput | ToolgateError;
    try {
      out = checkPolicyOutput(engine.evaluateJson(input, nowNs));
    } catch (e) {
      out = isToolgateError(e) ? e : normalizeError(e, "policy_evaluation_failed");
    }
    if (isToolgateError(out)) {
      decision.reasons = [failClosedReason(out)];
      return done(event);
    }
    const notes = this.candidate(input, nowNs, out);
    if (notes !== undefined && out.shadow !== undefined) notes.shadow = out.shadow;
    decision.outcome = out.outcome;
    decision.reasons = out.reasons;
    decision.obligations = out.obligations;
    if (out.tool !== undefined) decision.tool = out.tool;
    if (out.approval !== undefined) {
      decision.approval = out.approval;
      decision.access_request = {
        evaluation_id: decision.decision_id,
        expires_at: new Date(nowMs + this.opts.requestTtlSeconds * 1000).toISOString(),
      };
    }
    this.applyApproval(decision, check);
    // a plan (context.plan) may stand in for the approval a needs_approval answer asks for
    let final = out;
    let planUse: PendingPlanUse | undefined;
    if (
      decision.outcome === "needs_approval" &&
      check.kind !== "verified" &&
      req.context?.plan !== undefined
    ) {
      planUse = yield* this.applyPlan(decision, req, verified, engine, requestJson, nowMs);
      if (planUse !== undefined) final = planUse.out;
    }
    // Session state: an allowed read of labelled data is recorded (fleet-wide) before it is answered.
    if (decision.outcome === "allow" && sessionId !== undefined && session?.touch !== undefined) {
      try {
        yield* wait(session.touch(sessionId, decision, req, engine, nowMs));
      } catch (e) {
        decision.outcome = "deny";
        decision.reasons = [
          {
            code: "session_unavailable",
            message: `the session's history could not be recorded; denied (fail closed): ${normalizeError(e).message}`,
          },
        ];
        decision.obligations = [];
      }
    }
    // Budgets: an allow reserves its amount (on disk) before it can carry a grant or be answered.
    const reserved =
      decision.outcome === "allow" && containment !== undefined
        ? yield* this.reserve(containment, decision, req, verified, engine, nowMs)
        : false;
    // A plan's use, or a presented approval's, is claimed last, once nothing but the grant
    // can deny the call: a call denied by its session or its budget spends no use. Without
    // its use it is not allowed (and its reservation goes, below).
    if (planUse !== undefined && decision.outcome === "allow") {
      if (!(yield* this.claimPlanUse(decision, planUse, verified, nowMs))) final = out;
    }
    if (check.kind === "verified" && decision.outcome === "allow") {
      yield* this.useApproval(decision, check, nowMs);
    }
    const grant = this.grant(decision, req, verified, nowMs);
    if (reserved && decision.outcome !== "allow") containment?.unreserve(decision.decision_id);
    if (decision.access_request !== undefined) {
      this.opts.approvals?.recordNeedsApproval(decision, req, verified, final.mask);
    }
    if (final.mask !== undefined) event.mask = final.mask;
    if (grant !== undefined) event.grant = grant;
    if (notes !== undefined) event.notes = notes;
    return done(event);
  }

  /**
   * Every exit of decide(): the one place its event goes to the sink. A
   * decision is answered; a refusal is thrown by the caller.
   */
  private finish(event: DecisionEvent): Decided;
  private finish(event: RefusalEvent): void;
  private finish(event: DecisionEvent | RefusalEvent): Decided | undefined {
    this.opts.sink?.record(event);
    return event.kind === "decision" ? { decision: event.decision, notes: event.notes } : undefined;
  }

  /**
   * Reserves an allow's budget amounts (Containment.reserve). A budget that
   * would be exceeded, or a reservation that cannot be written, turns the
   * allow into a deny (fail closed). Returns whether anything was reserved.
   */
  private *reserve(
    containment: ContainmentPort,
    d: Decision,
    req: DecisionRequest,
    verified: VerifiedFacts,
    engine: PolicyEngine,
    nowMs: number,
  ): Generator<Promise<unknown>, boolean, unknown> {
    let held: ContainmentDeny | undefined;
    try {
      held = yield* wait(containment.reserve(d.decision_id, req, verified, engine, nowMs));
    } catch (e) {
      held = {
        code: "budget_unavailable",
        message: `the budget reservation failed; denied (fail closed): ${normalizeError(e).message}`,
      };
    }
    if (held === undefined) return true;
    d.outcome = "deny";
    d.reasons = [{ code: held.code, message: held.message }];
    if (held.retry_after !== undefined) d.retry_after = held.retry_after;
    d.obligations = [];
    return false;
  }

  /**
   * Signs the grant of an allow (last, after approvals may have turned it
   * into a deny: a deny never carries a grant). A signing failure denies.
   */
  private grant(
    d: Decision,
    req: DecisionRequest,
    verified: VerifiedFacts,
    nowMs: number,
  ): GrantInfo | undefined {
    if (d.outcome !== "allow" || this.opts.grants === undefined) return undefined;
    try {
      const g = this.opts.grants.issue(d, req, verified, nowMs);
      d.grant = g.token;
      return g.info;
    } catch (e) {
      d.outcome = "deny";
      d.reasons = [
        {
          code: "grant_failed",
          message: `signing the grant failed; denied (fail closed): ${normalizeError(e).message}`,
        },
      ];
      d.obligations = [];
      return undefined;
    }
  }

  /**
   * Evaluates the candidate policy (if any) on the same input; its answer is
   * recorded beside the decision, never returned. Always returns a notes
   * object when a shadow or a candidate is to be recorded.
   */
  private candidate(input: string, nowNs: number, out: PolicyOutput): DecisionNotes | undefined {
    const cand = this.opts.candidate?.active();
    if (cand === undefined) return out.shadow === undefined ? undefined : {};
    let c: PolicyOutput | ToolgateError;
    try {
      c = checkPolicyOutput(cand.evaluateJson(input, nowNs));
    } catch (e) {
      c = normalizeError(e, "policy_evaluation_failed");
    }
    const outcome = isToolgateError(c) ? "error" : c.outcome;
    return {
      candidate: {
        bundle: cand.info.bundle,
        revision: cand.info.revision,
        outcome,
        reasons: isToolgateError(c) ? [c.code] : c.reasons.map((r) => r.code),
        diverged: outcome !== out.outcome,
      },
    };
  }

  /** The presented approval's check; a port failure denies (fail closed). */
  private *approvalCheck(
    req: DecisionRequest,
    nowMs: number,
  ): Generator<Promise<unknown>, ApprovalCheck, unknown> {
    const approvals = this.opts.approvals;
    if (approvals === undefined) return { kind: "none" };
    try {
      return yield* wait(approvals.check(req, nowMs));
    } catch (e) {
      return {
        kind: "deny",
        code: "approval_unavailable",
        message: `the presented approval could not be checked; denied (fail closed): ${normalizeError(e).message}`,
      };
    }
  }

  /**
   * A needs_approval answer to a request presenting `context.plan`: the
   * plan is checked (ApprovalPort.checkPlan: bound, approved, unrevoked,
   * unexpired, the call inside an envelope with uses left); the policy is
   * asked again with the plan's approval as `verified.approval` (its own
   * approver-role check applies); only if it then allows does the decision
   * become that allow, pending one use of the plan: steps() claims it
   * (claimPlanUse) after the session and the budget had their say, so a call
   * they deny spends no use, and only a claimed use keeps the allow — with
   * its own grant, as any allow. Otherwise the needs_approval stands with a
   * `plan_*` reason. Never turns a deny into an allow. Returns the pending
   * use (with the policy output the decision now follows), or undefined.
   */
  private *applyPlan(
    d: Decision,
    req: DecisionRequest,
    verified: VerifiedFacts,
    engine: PolicyEngine,
    requestJson: string | undefined,
    nowMs: number,
  ): Generator<Promise<unknown>, PendingPlanUse | undefined, unknown> {
    const approvals = this.opts.approvals;
    const because = (code: string, message: string): undefined => {
      delete verified.approval;
      d.reasons = [...d.reasons, { code, message }];
      return undefined;
    };
    if (approvals?.checkPlan === undefined || approvals.claimPlan === undefined)
      return because("plan_unavailable", "plan approvals are not available on this sidecar");
    let pc: PlanCheck;
    try {
      pc = yield* wait(approvals.checkPlan(req, nowMs));
    } catch (e) {
      return because(
        "plan_unavailable",
        `the presented plan could not be checked: ${normalizeError(e).message}`,
      );
    }
    if (pc.kind === "none") return undefined;
    if (pc.kind === "ignored") return because(pc.code, pc.message);
    verified.approval = pc.approval;
    const input = `{"request":${requestJson ?? JSON.stringify(req)},"verified":${JSON.stringify(verified)}}`;
    let checked: PolicyOutput | ToolgateError;
    try {
      checked = checkPolicyOutput(engine.evaluateJson(input, nowMs * 1e6));
    } catch (e) {
      checked = normalizeError(e, "policy_evaluation_failed");
    }
    if (isToolgateError(checked))
      return because(
        "plan_unavailable",
        `the policy could not be asked with the plan's approval: ${checked.message}`,
      );
    const out = checked;
    if (out.outcome !== "allow") {
      const why = out.reasons.map((r) => r.message || r.code).join("; ");
      return because(
        "plan_mismatch",
        `plan ${pc.planId}'s approval does not satisfy this call${why ? `: ${why}` : ""}`,
      );
    }
    // allowed under the plan, pending its use (claimPlanUse, after the budget reservation)
    const before: PendingPlanUse["before"] = {
      outcome: d.outcome,
      reasons: d.reasons,
      obligations: d.obligations,
      tool: d.tool,
      approval: d.approval,
      access_request: d.access_request,
    };
    d.outcome = "allow";
    d.reasons = out.reasons;
    d.obligations = out.obligations;
    if (out.tool !== undefined) d.tool = out.tool;
    delete d.approval;
    delete d.access_request;
    return { planId: pc.planId, envelopes: pc.envelopes, out, before };
  }

  /**
   * Claims the use a plan's allow is pending on (atomically; never more than
   * max_uses). Claimed: the allow stands, its reasons naming the use.
   * Otherwise the decision goes back to the needs_approval it was, with a
   * `plan_*` reason. Returns whether a use was claimed.
   */
  private *claimPlanUse(
    d: Decision,
    p: PendingPlanUse,
    verified: VerifiedFacts,
    nowMs: number,
  ): Generator<Promise<unknown>, boolean, unknown> {
    const back = (code: string, message: string): false => {
      delete verified.approval;
      d.outcome = p.before.outcome;
      d.reasons = [...p.before.reasons, { code, message }];
      d.obligations = p.before.obligations;
      if (p.before.tool !== undefined) d.tool = p.before.tool;
      else delete d.tool;
      if (p.before.approval !== undefined) d.approval = p.before.approval;
      if (p.before.access_request !== undefined) d.access_request = p.before.access_request;
      return false;
    };
    const approvals = this.opts.approvals;
    if (approvals?.claimPlan === undefined)
      return back("plan_unavailable", "plan approvals are not available on this sidecar");
    let claim;
    try {
      claim = yield* wait(approvals.claimPlan(p.planId, p.envelopes, d.decision_id, nowMs));
    } catch (e) {
      return back(
        "plan_unavailable",
        `a use of plan ${p.planId} could not be claimed: ${normalizeError(e).message}`,
      );
    }
    if (!claim.claimed) {
      const code =
        claim.reason === "used_up"
          ? "plan_used_up"
          : claim.reason === "revoked"
            ? "plan_revoked"
            : claim.reason === "expired"
              ? "plan_expired"
              : "plan_unknown";
      return back(code, `plan ${p.planId}: no use could be claimed (${claim.reason})`);
    }
    d.reasons = [
      ...p.out.reasons,
      {
        code: "plan_use",
        message: `allowed under plan ${p.planId}: envelope ${claim.envelope}, use ${claim.uses} of ${claim.maxUses}`,
      },
    ];
    return true;
  }

  /**
   * How a presented approval that was not verified changes the policy's
   * answer (see ApprovalService.check); a verified one is used by
   * useApproval, once the call is allowed by everything else.
   */
  private applyApproval(d: Decision, check: ApprovalCheck): void {
    if (this.opts.approvals === undefined) return;
    if (check.kind === "ignored" && d.outcome === "needs_approval") {
      d.reasons = [...d.reasons, { code: check.code, message: check.message }];
    } else if (check.kind === "expired" && d.outcome === "needs_approval") {
      // denied, but with a fresh access request the agent may submit
      d.outcome = "deny";
      d.reasons = [{ code: "approval_expired", message: check.message }, ...d.reasons];
    }
  }

  /**
   * Uses the verified approval an allow rests on: a single-use approval is
   * claimed (atomically: once), a multi-use one recorded. Unclaimed — used
   * already, or the claim could not be written — the allow becomes a deny.
   * Called last (after the session and the budget reservation), so a call
   * they deny spends no use.
   */
  private *useApproval(
    d: Decision,
    check: Extract<ApprovalCheck, { kind: "verified" }>,
    nowMs: number,
  ): Generator<Promise<unknown>, void, unknown> {
    const approvals = this.opts.approvals;
    if (approvals === undefined) return;
    let consumed: boolean;
    if (!check.singleUse) {
      approvals.used(check.taskId, d.decision_id);
      consumed = true;
    } else {
      try {
        consumed = yield* wait(approvals.consume(check.taskId, d.decision_id, nowMs));
      } catch (e) {
        // the use could not be recorded: the approval is not honoured (fail closed)
        d.outcome = "deny";
        d.reasons = [
          {
            code: "approval_unavailable",
            message: `approval ${check.taskId} could not be claimed; denied (fail closed): ${normalizeError(e).message}`,
          },
        ];
        d.obligations = [];
        return;
      }
    }
    if (!consumed) {
      d.outcome = "deny";
      d.reasons = [
        {
          code: "approval_used",
          message: `approval ${check.taskId} was already used (single use)`,
        },
      ];
      d.obligations = [];
    }
  }
}
