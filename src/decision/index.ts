import { randomUUID } from "node:crypto";
import { isToolgateError, normalizeError, toolgateError, type ToolgateError } from "../errors";
import type { Identity, Principal } from "../identity";
import type { ApprovalCheck, ApprovalService } from "../approvals/service";
import type { PolicyEngine } from "../policy/engine";
import { checkPolicyOutput } from "./output";
import type {
  Decision,
  DecisionMeta,
  DecisionRequest,
  DecisionSink,
  PolicyOutput,
  VerifiedFacts,
} from "./types";

export type * from "./types";
export { checkPolicyOutput, KNOWN_OBLIGATIONS } from "./output";

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
  approvals?: ApprovalService;
}

/** Reason codes toolgate itself puts on a deny when the policy cannot answer. */
export const FAIL_CLOSED_REASONS = {
  evaluation_error: "policy evaluation failed; denied (fail closed)",
  policy_output_invalid: "the policy returned a malformed decision; denied (fail closed)",
  unknown_obligation:
    "the policy asked for an obligation toolgate cannot honour; denied (fail closed)",
} as const;

/**
 * The one decision path every face calls: identity → policy → checked
 * Decision. Synchronous: the wasm evaluation is synchronous and nothing on
 * this path waits on I/O.
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
   * `policy_unavailable`; every policy failure is a deny.
   */
  decide(
    req: DecisionRequest,
    requestJson?: string,
    meta: DecisionMeta = { face: "native" },
  ): Decision {
    const nowMs = this.now();
    const nowNs = nowMs * 1e6;
    let verified: VerifiedFacts | undefined;
    try {
      verified = this.opts.identity.verify(req, nowNs, meta.caller as Principal | undefined);
      if (this.opts.policy.active() === undefined) throw toolgateError("policy_unavailable");
    } catch (e) {
      const err = normalizeError(e);
      this.opts.sink?.refused(err, req, meta);
      throw err;
    }
    const engine = this.opts.policy.active() as PolicyEngine;
    const decision: Decision = {
      decision_id: this.newId(),
      outcome: "deny",
      reasons: [],
      obligations: [],
      policy: { bundle: engine.info.bundle, revision: engine.info.revision },
      evaluated_at: new Date(nowMs).toISOString(),
    };
    const check: ApprovalCheck = this.opts.approvals?.check(req, nowMs) ?? { kind: "none" };
    if (check.kind === "deny") {
      decision.reasons = [{ code: check.code, message: check.message }];
      this.opts.sink?.decided(decision, req, verified, meta, undefined);
      return decision;
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
      const code =
        out.code === "policy_output_invalid" || out.code === "unknown_obligation"
          ? out.code
          : "evaluation_error";
      decision.reasons = [{ code, message: `${FAIL_CLOSED_REASONS[code]}: ${out.message}` }];
      this.opts.sink?.decided(decision, req, verified, meta, undefined);
      return decision;
    }
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
    if (decision.access_request !== undefined && verified !== undefined) {
      this.opts.approvals?.recordNeedsApproval(decision, req, verified);
    }
    this.opts.sink?.decided(decision, req, verified, meta, out.mask);
    return decision;
  }

  /** How a presented approval changes the policy's answer (see ApprovalService.check). */
  private applyApproval(d: Decision, check: ApprovalCheck): void {
    const approvals = this.opts.approvals;
    if (approvals === undefined || check.kind === "none" || check.kind === "deny") return;
    if (check.kind === "ignored" && d.outcome === "needs_approval") {
      d.reasons = [...d.reasons, { code: check.code, message: check.message }];
    } else if (check.kind === "expired" && d.outcome === "needs_approval") {
      // denied, but with a fresh access request the agent may submit
      d.outcome = "deny";
      d.reasons = [{ code: "approval_expired", message: check.message }, ...d.reasons];
    } else if (check.kind === "verified" && d.outcome === "allow") {
      if (!check.singleUse) approvals.used(check.taskId, d.decision_id);
      else if (!approvals.consume(check.taskId, d.decision_id)) {
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
}
