/**
 * Shared by the console's backends: an approver view (src/approvals/rules.ts
 * `approverView`, the shape GET /v1/approvals/{id} answers on both the
 * sidecar and the control service) turned into the console's summary and
 * detail, and the bundle data the pages read (tools' class and stage, the
 * reference deployment's users). Every field is read defensively: a stored
 * row is outside input.
 */
import { ineligible } from "../../approvals/rules";
import { planIneligible, type PlanRequirement } from "../../approvals/plans";
import type { EvaluationRecord } from "../../approvals/store";
import type { Principal } from "../../model";
import { isObject } from "../../shared/guards";
import {
  type PlanDetail,
  reasonFallback,
  type ReasonText,
  type RequestDetail,
  type RequestOutcome,
  type RequestSummary,
} from "../backend";

const str = (v: unknown): string | null => (typeof v === "string" ? v : null);
const strs = (v: unknown): string[] =>
  Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];

const STATUSES = new Set(["pending", "approved", "denied", "expired", "cancelled", "failed"]);

/** The policy's reasons as stored: `{code, message}` or codes alone. */
export function reasonsOf(v: unknown): ReasonText[] {
  if (!Array.isArray(v)) return [];
  const out: ReasonText[] = [];
  for (const r of v) {
    if (typeof r === "string") out.push({ code: r, message: reasonFallback(r), fallback: true });
    else if (isObject(r) && typeof r.code === "string") {
      const m = typeof r.message === "string" ? r.message.trim() : "";
      out.push(
        m === ""
          ? { code: r.code, message: reasonFallback(r.code), fallback: true }
          : { code: r.code, message: m, fallback: false },
      );
    }
  }
  return out;
}

/** What became of a request, from its view at `nowMs`. */
export function outcomeOf(v: Record<string, unknown>, nowMs: number): RequestOutcome {
  const status = str(v.status);
  if (status === "approved") {
    if (str(v.revoked_at) !== null) return "revoked";
    if (str(v.used_at) !== null) return "used";
    const until = Date.parse(str(v.approved_until) ?? "");
    if (Number.isFinite(until) && until <= nowMs) return "expired";
    return "approved_unused";
  }
  if (status === "pending") return "pending";
  if (status === "denied" || status === "expired" || status === "cancelled") return status;
  return "failed";
}

/** The minimal evaluation `ineligible` reads, from a view. */
export function evaluationOfView(v: Record<string, unknown>): EvaluationRecord {
  const req = isObject(v.requirement) ? v.requirement : {};
  return {
    initiator: str(v.initiator) ?? "",
    agentId: str(v.agent) ?? "",
    requirement: {
      approver_roles: strs(req.approver_roles),
      exclude: strs(req.exclude),
      single_use: req.single_use === true,
      ttl_seconds: typeof req.ttl_seconds === "number" ? req.ttl_seconds : 0,
    },
  } as unknown as EvaluationRecord;
}

/** A plan view's envelopes (defensively read: a stored row is outside input). */
function envelopesOfView(v: Record<string, unknown>): Array<Record<string, unknown>> {
  const plan = isObject(v.plan) ? v.plan : {};
  return Array.isArray(plan.envelopes) ? plan.envelopes.filter(isObject) : [];
}

/** The minimal plan `planIneligible` reads, from a plan view. */
function planOfView(v: Record<string, unknown>): {
  initiator: string;
  agentId: string;
  requirement: PlanRequirement;
} {
  const req = isObject(v.requirement) ? v.requirement : {};
  return {
    initiator: str(v.initiator) ?? "",
    agentId: str(v.agent) ?? "",
    requirement: {
      approver_roles: strs(req.approver_roles),
      exclude: strs(req.exclude),
      ttl_seconds: 0,
      envelopes: envelopesOfView(v).map((e) => {
        const r = isObject(e.requirement) ? e.requirement : undefined;
        return r === undefined
          ? null
          : {
              approver_roles: strs(r.approver_roles),
              exclude: strs(r.exclude),
              single_use: r.single_use === true,
              ttl_seconds: typeof r.ttl_seconds === "number" ? r.ttl_seconds : 0,
            };
      }),
    },
  };
}

/** The plan of a plan view, for the request page. */
export function planDetailOf(v: Record<string, unknown>): PlanDetail | undefined {
  if (v.kind !== "plan") return undefined;
  const plan = isObject(v.plan) ? v.plan : {};
  const num = (x: unknown): number | null => (typeof x === "number" ? x : null);
  return {
    envelopes: envelopesOfView(v).map((e, i) => {
      const res = isObject(e.resource) ? e.resource : undefined;
      const req = isObject(e.requirement) ? e.requirement : undefined;
      return {
        index: num(e.index) ?? i,
        tool: str(e.tool) ?? "",
        resource: res !== undefined ? `${str(res.type) ?? "?"}/${str(res.id) ?? "?"}` : null,
        arguments: isObject(e.arguments) ? e.arguments : {},
        other_arguments: e.other_arguments === "any" ? "any" : "forbid",
        max_uses: num(e.max_uses) ?? 0,
        uses: num(e.uses) ?? 0,
        ttl_seconds: num(e.ttl_seconds),
        expires_at: str(e.expires_at),
        approver_roles: req !== undefined ? strs(req.approver_roles) : null,
      };
    }),
    ttl_seconds: num(plan.ttl_seconds) ?? 0,
    binding_hash: str(plan.binding_hash),
  };
}

/** Why `viewer` may not decide the request now, or null (src/approvals/rules.ts, plus status). */
export function whyNot(
  v: Record<string, unknown>,
  viewer: Principal,
  servedAgent: string | undefined,
  nowMs: number,
): string | null {
  const served = servedAgent ?? str(v.agent) ?? "";
  const why =
    v.kind === "plan"
      ? planIneligible(viewer, planOfView(v), served)
      : ineligible(viewer, evaluationOfView(v), served);
  if (why !== undefined) return why;
  const status = str(v.status);
  if (status !== "pending") return `the request is ${status ?? "unknown"}, not pending`;
  const exp = Date.parse(str(v.expires_at) ?? "");
  if (Number.isFinite(exp) && exp <= nowMs) return "the request has expired";
  return null;
}

/** The summary of a view, as `viewer` sees it at `nowMs`. */
export function summaryOf(
  v: Record<string, unknown>,
  viewer: Principal,
  nowMs: number,
  servedAgent?: string,
): RequestSummary {
  const status = str(v.status) ?? "failed";
  const exp = Date.parse(str(v.expires_at) ?? "");
  const why = whyNot(v, viewer, servedAgent, nowMs);
  return {
    id: str(v.id) ?? "",
    status: (STATUSES.has(status) ? status : "failed") as RequestSummary["status"],
    outcome: outcomeOf(v, nowMs),
    tool: str(v.tool) ?? "",
    agent: str(v.agent) ?? "",
    initiator: str(v.initiator) ?? "",
    created_at: str(v.created_at),
    expires_at: str(v.expires_at),
    seconds_left:
      status === "pending" && Number.isFinite(exp)
        ? Math.max(0, Math.floor((exp - nowMs) / 1000))
        : null,
    reasons: reasonsOf(v.reasons),
    justification: str(v.agent_justification) ?? str(v.justification),
    decided_by: str(v.decided_by),
    decided_at: str(v.decided_at),
    can_decide: why === null,
    why_not: why,
  };
}

/** Tools' class and stage, and users' roles, from the bundle data (`toolgate.deployment`). */
export function deploymentData(data: unknown): {
  tools: Map<string, { class: string | null; stage: string | null }>;
  users: Map<string, string[]>;
} {
  const tg = isObject(data) ? data.toolgate : undefined;
  const dep = isObject(tg) ? tg.deployment : undefined;
  const tools = new Map<string, { class: string | null; stage: string | null }>();
  const users = new Map<string, string[]>();
  if (isObject(dep) && isObject(dep.tools)) {
    for (const [name, t] of Object.entries(dep.tools)) {
      if (isObject(t)) tools.set(name, { class: str(t.class), stage: str(t.stage) });
    }
  }
  if (isObject(dep) && isObject(dep.users)) {
    for (const [name, u] of Object.entries(dep.users)) {
      if (isObject(u)) users.set(name, strs(u.roles));
    }
  }
  return { tools, users };
}

/** The detail of a view. */
export function detailOf(
  v: Record<string, unknown>,
  viewer: Principal,
  nowMs: number,
  tool: { class: string | null; stage: string | null } | undefined,
  servedAgent?: string,
): RequestDetail {
  const request = v.request;
  const r = isObject(request) ? request : {};
  const action = isObject(r.action) ? r.action : {};
  const props = isObject(action.properties) ? action.properties : {};
  const resource = isObject(r.resource) ? r.resource : {};
  const ctx = isObject(r.context) ? r.context : {};
  const job = isObject(ctx.job) ? ctx.job : {};
  const stats = isObject(v.stats) ? v.stats : undefined;
  const req = isObject(v.requirement) ? v.requirement : undefined;
  const customer =
    str(job.customer_id) ?? (str(resource.type) === "customer" ? str(resource.id) : null);
  return {
    ...summaryOf(v, viewer, nowMs, servedAgent),
    // as recorded with the evaluation (the bundle then in force), else the active bundle's data
    tool_class: str(v.tool_class) ?? tool?.class ?? null,
    stage: str(v.tool_stage) ?? tool?.stage ?? null,
    arguments: props.arguments ?? null,
    request: request ?? null,
    customer,
    job: str(job.id),
    stats:
      stats !== undefined &&
      typeof stats.requested_today === "number" &&
      typeof stats.approved_today === "number"
        ? { requested_today: stats.requested_today, approved_today: stats.approved_today }
        : null,
    requirement:
      req !== undefined
        ? {
            approver_roles: strs(req.approver_roles),
            single_use: req.single_use === true,
            ttl_seconds: typeof req.ttl_seconds === "number" ? req.ttl_seconds : 0,
          }
        : null,
    comment: str(v.comment),
    approved_until: str(v.approved_until),
    used_at: str(v.used_at),
    revoked_at: str(v.revoked_at),
    revoked_by: str(v.revoked_by),
    policy_revision: str(v.policy_revision),
    ...(v.kind === "plan" ? { plan: planDetailOf(v) as PlanDetail } : {}),
  };
}

/**
 * Whether the inbox lists the request for `viewer`: one they may decide,
 * one they initiated, one whose roles they hold (shown read-only with why
 * not), and every one for the admin role.
 */
export function listedFor(
  v: Record<string, unknown>,
  viewer: Principal,
  isAdmin: boolean,
): boolean {
  if (isAdmin) return true;
  if (str(v.initiator) === viewer.id) return true;
  const roles = evaluationOfView(v).requirement.approver_roles;
  return viewer.roles.some((r) => roles.includes(r));
}
