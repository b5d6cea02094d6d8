import type { RequestContext, SpanAttributes } from "../model";
import { toolgateError } from "../errors";
import { hasOwn, isObject } from "../shared/guards";
import type { AuditService, LedgerEntry } from "./auditor";
import type { MaskOp } from "../redaction/redact";

/** POST /v1/actions body (schemas/action-report.schema.json). */
export interface ActionReport {
  decision_id: string;
  tool?: string;
  call_id?: string;
  status: "ok" | "error";
  error?: { type?: string; message?: string };
  started_at?: string;
  ended_at?: string;
  read?: Array<{ type: string; id: string }>;
  changed?: Array<{
    resource: { type: string; id: string };
    fields?: Array<{ path: string; before?: unknown; after?: unknown }>;
  }>;
}

/** The `redact` obligations' dotted field paths, as mask ops over changed values. */
function obligationMask(
  obligations: Array<{ type: string; properties?: Record<string, unknown> }>,
): Set<string> {
  const fields = new Set<string>();
  for (const o of obligations) {
    if (o.type !== "redact") continue;
    const f = o.properties?.fields;
    if (Array.isArray(f)) for (const p of f) if (typeof p === "string") fields.add(p);
  }
  return fields;
}

function covered(path: string, fields: Set<string>): boolean {
  for (const f of fields)
    if (path === f || path.startsWith(f + ".") || path.startsWith(f + "[")) return true;
  return false;
}

/** Ways an action report can contradict the decision it cites. */
export type AnomalyKind =
  "read_tool_changed" | "changed_outside_boundary" | "read_outside_boundary";

export interface ActionAnomaly {
  kind: AnomalyKind;
  resource: { type: string; id: string };
}

/** What bounds the records a tool may touch, from the active bundle's data. */
export interface ActionBoundary {
  /** Resource types that name a customer (`data_boundary.customer_resource_types`). */
  customerTypes: readonly string[];
  /** False when the tool's data boundary is `none`: the job's customer does not bound it. */
  jobCustomer: boolean;
}

const DEFAULT_BOUNDARY: ActionBoundary = { customerTypes: ["customer"], jobCustomer: true };

const obj = (v: unknown): Record<string, unknown> | undefined => (isObject(v) ? v : undefined);

/**
 * The boundary the reference policy library enforces at decision time
 * (rego/toolgate/checks.rego): customer resource types from
 * `data.toolgate.deployment.data_boundary.customer_resource_types` (default
 * `["customer"]`); a tool rule's `data_boundary: "none"` (or the deployment
 * default `none`) lifts the job's customer bound. Read from the active
 * bundle when the report arrives.
 */
export function boundaryFromData(data: unknown, tool: string | undefined): ActionBoundary {
  const dep = obj(obj(obj(data)?.toolgate)?.deployment);
  if (dep === undefined) return DEFAULT_BOUNDARY;
  const db = obj(dep.data_boundary);
  const types = db?.customer_resource_types;
  const customerTypes =
    Array.isArray(types) && types.every((t) => typeof t === "string")
      ? types
      : DEFAULT_BOUNDARY.customerTypes;
  const rules = obj(dep.tool_rules);
  const rule =
    tool !== undefined && rules !== undefined && hasOwn(rules, tool) ? obj(rules[tool]) : undefined;
  const mode =
    typeof rule?.data_boundary === "string"
      ? rule.data_boundary
      : typeof db?.default === "string"
        ? db.default
        : "job_customer";
  return { customerTypes, jobCustomer: mode !== "none" };
}

/**
 * Compares a report with its decision: a read-class tool that changed
 * something; a changed or read record outside the decision's resource and
 * the job's customer. A record is judged when it has the decision resource's
 * type, or a customer type while the job has a customer; records of other
 * types (a refund the call created, a ticket under a customer) cannot be
 * judged from the decision and are not flagged.
 */
export function anomaliesOf(
  e: Pick<LedgerEntry, "toolClass" | "resource" | "jobCustomer">,
  report: Pick<ActionReport, "read" | "changed">,
  boundary: ActionBoundary,
): ActionAnomaly[] {
  const ref = (r: { type: string; id: string }) => ({ type: r.type, id: r.id });
  const byCustomer = boundary.jobCustomer && e.jobCustomer !== undefined;
  const outside = (r: { type: string; id: string }): boolean => {
    const sameType = r.type === e.resource.type;
    const customerType = byCustomer && boundary.customerTypes.includes(r.type);
    if (!sameType && !customerType) return false;
    if (sameType && r.id === e.resource.id) return false;
    return !(customerType && r.id === e.jobCustomer);
  };
  const changed = (report.changed ?? []).map((c) => c.resource);
  const out: ActionAnomaly[] = [];
  if (e.toolClass === "read")
    for (const r of changed) out.push({ kind: "read_tool_changed", resource: ref(r) });
  for (const r of changed)
    if (outside(r)) out.push({ kind: "changed_outside_boundary", resource: ref(r) });
  for (const r of report.read ?? [])
    if (outside(r)) out.push({ kind: "read_outside_boundary", resource: ref(r) });
  return out;
}

/** What the route plugs into recordAction. */
export interface ActionHooks {
  /**
   * Told once the report is accepted, with whether it lists changes
   * (containment resolves the decision's budget reservations); returns what
   * it did, for the response.
   */
  onReported?: (
    decisionId: string,
    status: ActionReport["status"],
    changedSomething: boolean,
  ) => string | undefined;
  /** The boundary of the decided tool (default: customer types `["customer"]`, job-bound). */
  boundary?: (tool: string | undefined) => ActionBoundary;
  /** Counts each anomaly (toolgate_action_anomalies_total{kind}). */
  onAnomaly?: (kind: AnomalyKind) => void;
}

/**
 * Records what an allowed tool call did. A report that cannot be matched to an
 * allow — unknown or expired decision, a deny or needs_approval, a second
 * report, another tool — is refused (409) and recorded as a security event:
 * it means an action happened without permission.
 *
 * A matched report that contradicts its decision (see anomaliesOf) is
 * recorded — the action happened — and flagged: `anomalies` in the action
 * record, its span and the response, one `action_anomaly` security event,
 * and `hooks.onAnomaly` per anomaly. See docs/audit.md.
 */
export function recordAction(
  auditor: AuditService,
  report: ActionReport,
  ctx: RequestContext,
  hooks: ActionHooks = {},
): Record<string, unknown> {
  const entry = auditor.ledger.get(report.decision_id);
  const refuse = (
    code:
      | "action_unknown_decision"
      | "action_not_allowed"
      | "action_already_reported"
      | "action_tool_mismatch",
    message: string,
  ): never => {
    auditor.record({
      kind: "security",
      event: "action_without_permission",
      message: "an action was reported without a matching allow",
      fields: {
        code,
        decision_id: report.decision_id,
        reported_tool: report.tool,
        decided_tool: entry?.tool,
        decided_outcome: entry?.outcome,
        call_id: report.call_id,
        status: report.status,
        changed: report.changed,
      },
      ctx,
    });
    throw toolgateError(code, message);
  };
  // In identity mode jwt only the decision's own subject may report its
  // action (a report can release a budget reservation); anyone else learns
  // nothing of the decision: the same answer as an unknown id.
  if (entry === undefined || (ctx.principal !== undefined && ctx.principal.id !== entry.subjectId))
    refuse("action_unknown_decision", `no recent decision ${report.decision_id} on this sidecar`);
  const e = entry as NonNullable<typeof entry>;
  if (e.outcome !== "allow") {
    refuse("action_not_allowed", `decision ${report.decision_id} was ${e.outcome}, not allow`);
  }
  if (e.reported)
    refuse("action_already_reported", `decision ${report.decision_id} was already reported`);
  if (report.tool !== undefined && report.tool !== e.tool) {
    refuse(
      "action_tool_mismatch",
      `decision ${report.decision_id} allowed ${e.tool}, not ${report.tool}`,
    );
  }
  e.reported = true;
  const anomalies = anomaliesOf(e, report, hooks.boundary?.(e.tool) ?? DEFAULT_BOUNDARY);

  // Changed values: the shared redaction, plus the decision's redact obligations.
  const sensitive = obligationMask(e.obligations);
  const changed = (report.changed ?? []).map((c) => ({
    resource: c.resource,
    fields: (c.fields ?? []).map((f) => {
      const mask: MaskOp[] = covered(f.path, sensitive)
        ? [
            { op: "hash", path: "/before" },
            { op: "hash", path: "/after" },
          ]
        : [];
      return auditor.redact({ path: f.path, before: f.before, after: f.after }, mask);
    }),
  }));
  const error = report.error ? auditor.redact(report.error) : undefined;
  const attrs: SpanAttributes = {
    "gen_ai.operation.name": "execute_tool",
    "gen_ai.tool.name": e.tool ?? "",
    "gen_ai.agent.id": e.agentId,
    "toolgate.decision.id": e.decisionId,
    "toolgate.action.status": report.status,
    "toolgate.subject.id": e.subjectId,
  };
  const callId = report.call_id ?? e.callId;
  if (callId !== undefined) attrs["gen_ai.tool.call.id"] = callId;
  if (report.read) attrs["toolgate.action.read"] = JSON.stringify(report.read);
  if (changed.length > 0) attrs["toolgate.action.changed"] = JSON.stringify(changed);
  if (report.status === "error") attrs["error.type"] = report.error?.type ?? "tool_error";
  if (anomalies.length > 0) attrs["toolgate.action.anomalies"] = JSON.stringify(anomalies);
  const started = report.started_at ? Date.parse(report.started_at) : undefined;
  const ended = report.ended_at ? Date.parse(report.ended_at) : undefined;
  const record = {
    decision_id: e.decisionId,
    tool: e.tool,
    call_id: callId,
    agent_id: e.agentId,
    subject_id: e.subjectId,
    status: report.status,
    error,
    started_at: report.started_at,
    ended_at: report.ended_at,
    read: report.read,
    changed,
    anomalies,
    trace_id: null, // filled in by audit, in this place
    span_id: null,
    decision_span_id: e.spanContext?.spanId,
    request_id: ctx.requestId,
  };
  const ids = auditor.record({
    kind: "action",
    name: `execute_tool ${e.tool ?? ""}`,
    ctx,
    startTimeMs: started,
    endTimeMs: ended,
    attributes: attrs,
    link: e.spanContext,
    errorMessage: report.status === "error" ? (error?.message ?? "tool error") : undefined,
    record,
  });
  if (anomalies.length > 0) {
    auditor.record({
      kind: "security",
      event: "action_anomaly",
      message: "an action report contradicts its decision",
      fields: {
        decision_id: e.decisionId,
        tool: e.tool,
        tool_class: e.toolClass,
        decided_resource: e.resource,
        job_customer: e.jobCustomer,
        subject_id: e.subjectId,
        call_id: callId,
        status: report.status,
        anomalies,
      },
      ctx,
    });
    for (const a of anomalies) hooks.onAnomaly?.(a.kind);
  }
  // after the record is written: a store failure never loses the action's audit
  const budget = hooks.onReported?.(e.decisionId, report.status, (report.changed?.length ?? 0) > 0);
  return {
    recorded: true,
    decision_id: e.decisionId,
    trace_id: ids.traceId,
    span_id: ids.spanId,
    anomalies,
    ...(budget !== undefined ? { budget } : {}),
  };
}
