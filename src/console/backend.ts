/**
 * What the approver console needs of a deployment: the single sidecar's
 * (src/console/backends/sidecar.ts, over ApprovalService, Containment,
 * BundleManager and the trail) or the fleet's (src/console/backends/fleet.ts,
 * over the control service's approvals, switches and store).
 *
 * Every method is async (the fleet's reads PostgreSQL) and enforces exactly
 * what the API enforces: a backend never trusts the page to have checked
 * eligibility, the admin role, expiry or single use. Errors are coded
 * ToolgateErrors (src/errors): `approval_not_found` (404), `forbidden` (403,
 * not eligible / not admin), `approval_not_pending` and the like (409),
 * `invalid_request` (400), store failures (503). The pages map their HTTP
 * status and show their message (escaped).
 *
 * Times are ISO 8601 strings (UTC) or null; every string may hold anything an
 * agent, a policy or a person put there: the pages escape all of it.
 */
import type { Principal } from "../model";
import type { KillSwitch, SwitchScope } from "../containment/store";

/** Which deployment the console shows. */
export interface ConsoleDeployment {
  kind: "sidecar" | "fleet";
  /** A display name: the agent a sidecar serves, or the fleet's name. */
  name: string;
  /** The role that opens the containment panel (config.control.admin_role). */
  adminRole: string;
}

/** One of the policy's reasons: its code and its human-readable message. */
export interface ReasonText {
  code: string;
  /**
   * The policy's message for this reason. Rows recorded before messages
   * were kept hold codes only (message ""): then a fallback text derived
   * from the code, and `fallback` says so.
   */
  message: string;
  fallback: boolean;
}

/** What became of a decided request. */
export type RequestOutcome =
  | "pending"
  | "approved_unused"
  | "used"
  | "expired"
  | "revoked"
  | "denied"
  | "cancelled"
  | "failed";

/** One row of the inbox. */
export interface RequestSummary {
  id: string;
  status: "pending" | "approved" | "denied" | "expired" | "cancelled" | "failed";
  outcome: RequestOutcome;
  tool: string;
  agent: string;
  initiator: string;
  created_at: string | null;
  expires_at: string | null;
  /** Seconds until an undecided request expires (0 when past; null once decided). */
  seconds_left: number | null;
  reasons: ReasonText[];
  /** The agent's own words on the access request (never toolgate's); null when none. */
  justification: string | null;
  decided_by: string | null;
  decided_at: string | null;
  /** Whether the viewer may decide it now (pending and eligible). */
  can_decide: boolean;
  /**
   * Why the viewer may not decide it (src/approvals/rules.ts `ineligible`, or
   * "already decided" / "expired"); null when `can_decide`.
   */
  why_not: string | null;
}

/**
 * The inbox of one viewer. An entry may be a RequestDetail (it extends
 * RequestSummary): the row then also shows class, stage, customer, job, the
 * arguments and today's stats.
 */
export interface Inbox {
  /** Pending requests the viewer may decide, oldest first. */
  pending: RequestSummary[];
  /** Requests the viewer may see but not decide (pending ones, with why not). */
  readOnly: RequestSummary[];
  /** Decided (or expired, cancelled) requests the viewer may see, newest first. */
  decided: RequestSummary[];
}

/** A request in full: what an approver reads before deciding. */
export interface RequestDetail extends RequestSummary {
  /** The tool's class and rollout stage, when the bundle data names them. */
  tool_class: string | null;
  stage: string | null;
  /** The tool's arguments as stored: redacted and masked by the policy. */
  arguments: unknown;
  /** The whole decision request as stored (redacted). */
  request: unknown;
  customer: string | null;
  job: string | null;
  /** How many access requests this agent made today (UTC) for this tool, and how many were approved. */
  stats: { requested_today: number; approved_today: number } | null;
  requirement: { approver_roles: string[]; single_use: boolean; ttl_seconds: number } | null;
  comment: string | null;
  approved_until: string | null;
  used_at: string | null;
  revoked_at: string | null;
  revoked_by: string | null;
  policy_revision: string | null;
  /** A plan approval (kind "plan"): its envelopes, each with its bounds, resource, uses and ttl. */
  plan?: PlanDetail;
}

/** One envelope of a plan, as approvers read it (arguments redacted). */
export interface PlanEnvelopeView {
  index: number;
  tool: string;
  resource: string | null;
  /** Per argument: the constraint as submitted (an exact value, {min, max} or {enum}). */
  arguments: Record<string, unknown>;
  other_arguments: "forbid" | "any";
  max_uses: number;
  uses: number;
  ttl_seconds: number | null;
  expires_at: string | null;
  approver_roles: string[] | null;
}

export interface PlanDetail {
  envelopes: PlanEnvelopeView[];
  ttl_seconds: number;
  binding_hash: string | null;
}

export type TimelineKind =
  | "decision"
  | "access_request"
  | "approval"
  | "denial"
  | "reask"
  | "use"
  | "action_report"
  | "expired"
  | "cancelled"
  | "revoked"
  | "refused"
  | "other";

/** One step of a request's story (from the trail, the task's events, spans' ids). */
export interface TimelineEvent {
  at: string;
  kind: TimelineKind;
  /** Who: a person, the agent, or "toolgate"; null when unknown. */
  actor: string | null;
  /** A one-line description (plain text). */
  detail: string;
  /** The W3C trace id (32 hex) when known. */
  trace_id: string | null;
}

export interface NewSwitchInput {
  /** Empty: everything. */
  scope: SwitchScope;
  reason: string;
  /** RFC 3339, in the future; null: until lifted. */
  expires_at: string | null;
}

/** A budget's current use. */
export interface BudgetUse {
  /** The budget as named by the policy data (its tools and per). */
  name: string;
  tools: string[];
  per: string;
  /**
   * The budget's maximum; null where it is not known (on the fleet the
   * maximum is in each sidecar's bundle, not in the control service's store).
   */
  limit: number | null;
  window_seconds: number;
  /** Per key currently holding spends/reservations: the amount used in the window. */
  keys: Array<{ key: string; used: number }>;
}

/** A tool's rollout stage (read-only: stages are set in the bundle). */
export interface RolloutStage {
  tool: string;
  stage: string | null;
  tool_class: string | null;
}

export interface ConsoleBackend {
  /** Who this deployment is. */
  deployment(): Promise<ConsoleDeployment>;
  /**
   * The viewer's inbox: pending requests `viewer` may decide; pending ones
   * listed for them but not decidable (with `why_not`); decided ones. Listed
   * for a viewer: requests they may decide, requests they initiated,
   * requests whose approver roles they hold (e.g. excluded by the policy),
   * and every request for the admin role. (GET /v1/approvals lists what the
   * caller may decide; the agent port shows an initiator her own requests.)
   */
  inbox(viewer: Principal): Promise<Inbox>;
  /**
   * One request in full, for any signed-in viewer, as GET /v1/approvals/{id}
   * answers any verified caller; `approval_not_found` for an unknown id.
   * `can_decide` / `why_not` are computed for `viewer`.
   */
  request(id: string, viewer: Principal): Promise<RequestDetail>;
  /** Its timeline, oldest first (same visibility as `request`). */
  timeline(id: string, viewer: Principal): Promise<TimelineEvent[]>;
  /**
   * Approve or deny, exactly as POST /v1/approvals/{id}/approve|deny:
   * `forbidden` when not eligible (audited as refused), 409 when no longer
   * pending. Returns the request as decided.
   */
  decide(
    id: string,
    viewer: Principal,
    approve: boolean,
    comment: string | null,
  ): Promise<RequestDetail>;
  /** Kill switches in force (admin only: `forbidden` otherwise). */
  listSwitches(viewer: Principal): Promise<KillSwitch[]>;
  /** Sets a switch, effective like one set through the API (admin only). */
  setSwitch(input: NewSwitchInput, viewer: Principal): Promise<KillSwitch>;
  /** Lifts a switch (admin only); `killswitch_not_found` when not in force. */
  liftSwitch(id: string, viewer: Principal): Promise<KillSwitch>;
  /** Budgets' current use (admin only). */
  budgets(viewer: Principal): Promise<BudgetUse[]>;
  /** Rollout stages per tool, read-only (admin only). */
  rollout(viewer: Principal): Promise<RolloutStage[]>;
}

/** A fallback text for a reason code when the policy's message is not stored. */
export function reasonFallback(code: string): string {
  const words = code.replace(/[_.:-]+/g, " ").trim();
  return words === "" ? "(no reason given)" : words.charAt(0).toUpperCase() + words.slice(1);
}
