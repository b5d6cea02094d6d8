/** What a decision is: the policy's answer, checked, and what toolgate makes of it. */

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
  /** Identities that may never approve (the initiator and the agent are always excluded). */
  exclude: string[];
}

export interface ToolInfo {
  name: string;
  class: string | null;
  stage: string | null;
}

/** The policy's answer, checked (see src/decision/output.ts). */
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

/** What audit records of a grant: never the token itself. */
export interface GrantInfo {
  jti: string;
  aud: string;
  /** Epoch seconds. */
  exp: number;
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
