/** AuthZEN's information model, as toolgate receives it on every face. */
export interface Entity {
  type: string;
  id: string;
  properties?: Record<string, unknown>;
}

export interface Action {
  name: string;
  properties?: Record<string, unknown>;
}

export interface DecisionRequest {
  subject: Entity;
  action: Action;
  resource: Entity;
  context?: Record<string, unknown>;
}

export type Outcome = "allow" | "deny" | "needs_approval";

export interface Reason {
  code: string;
  message: string;
}

export interface Obligation {
  id: string;
  type: string;
  properties?: Record<string, unknown>;
}

/** What the policy requires of an approval (docs/policy-contract.md). */
export interface ApprovalRequirement {
  approver_roles: string[];
  single_use: boolean;
  ttl_seconds: number;
  exclude: string[];
}

export interface ToolInfo {
  name: string;
  class: string | null;
  stage: string | null;
}

/** The policy's answer, checked (see ./output.ts). */
export interface PolicyOutput {
  outcome: Outcome;
  reasons: Reason[];
  obligations: Obligation[];
  approval?: ApprovalRequirement;
  tool?: ToolInfo;
  /** Audit mask ops from the policy (validated; never sent to the client). */
  mask?: unknown[];
  /** Stage shadow: what the next stage would have answered (recorded, never returned). */
  shadow?: ShadowOutcome;
}

/** A decision that was computed for the record only (shadow stage, candidate policy). */
export interface ShadowOutcome {
  outcome: Outcome;
  reasons: Reason[];
}

/** What audit records beside a decision without returning it to the caller. */
export interface DecisionNotes {
  /** Stage shadow: the decision the next stage would have made. */
  shadow?: ShadowOutcome;
  /** The candidate policy's answer (policy.candidate.bundle), or "error". */
  candidate?: {
    bundle: string;
    revision: string;
    outcome: Outcome | "error";
    reasons: string[];
    diverged: boolean;
  };
  /** The kill switch that denied this decision. */
  killswitch_id?: string;
}

/** Who toolgate itself established the caller to be, and the agent it serves. */
export interface VerifiedFacts {
  agent: { id: string };
  subject: { id: string; method: "trusted" | "jwt"; claims?: Record<string, unknown> };
  time_ns: number;
  /**
   * The job, when toolgate verified it (identity mode jwt with
   * identity.jwt.job_claim): it wins over context.job.id for policy and for
   * job-scoped switches, limits and budgets.
   */
  job?: { id: string; method: "jwt" };
  /** Kill switches in force (toolgate enforces them before evaluation; docs/containment.md). */
  containment?: {
    killswitches: Array<{
      id: string;
      scope: { agent?: string; tool?: string; subject?: string; job?: string };
      reason: string;
    }>;
  };
  /** Present only when toolgate verified an approval bound to this exact request. */
  approval?: {
    id: string;
    state: "approved";
    approver: { id: string; roles: string[] };
    single_use: boolean;
    expires_at_ns: number;
  };
}

/** A finished decision: what every face shapes its response from and audit records. */
export interface Decision {
  decision_id: string;
  outcome: Outcome;
  reasons: Reason[];
  obligations: Obligation[];
  approval?: ApprovalRequirement;
  access_request?: { evaluation_id: string; expires_at: string };
  tool?: ToolInfo;
  policy: { bundle: string; revision: string };
  evaluated_at: string;
  /** On rate_limited / budget_exceeded: seconds after which the call may succeed. */
  retry_after?: number;
  /** On allow (grants enabled): the grant, a compact JWS for the tool backend (docs/grants.md). */
  grant?: string;
}

/** What audit records of a grant: never the token itself. */
export interface GrantInfo {
  jti: string;
  aud: string;
  /** Epoch seconds. */
  exp: number;
}

/** Which API a decision came through. */
export type Face = "native" | "authzen" | "opa" | "cli";

/**
 * Where a decision request came from, for audit. `trace` is opaque to the
 * decision path (the audit module puts the caller's trace context there).
 */
export interface DecisionMeta {
  face: Face;
  requestId?: string;
  /** performance.timeOrigin + performance.now() when the request arrived, in ms. */
  startTimeMs?: number;
  trace?: unknown;
  http?: { method: string; path: string };
  /** The caller's verified token (identity mode jwt). */
  caller?: { id: string; roles: string[]; method: "jwt"; claims: Record<string, unknown> };
}

/** Receives every finished decision and every refusal (audit implements it). */
export interface DecisionSink {
  decided(
    decision: Decision,
    request: DecisionRequest,
    verified: VerifiedFacts | undefined,
    meta: DecisionMeta,
    mask: readonly unknown[] | undefined,
    grant?: GrantInfo,
    notes?: DecisionNotes,
  ): void;
  refused(
    error: { code: string; message: string; status: number },
    request: DecisionRequest,
    meta: DecisionMeta,
  ): void;
}
