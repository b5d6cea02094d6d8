import type { Attributes } from "@opentelemetry/api";
import type { DecisionMeta } from "../decision/types";
import { toolgateError } from "../errors";
import type { AuditService } from "./index";
import type { MaskOp } from "./redact";

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

/**
 * Records what an allowed tool call did. A report that cannot be matched to an
 * allow — unknown or expired decision, a deny or needs_approval, a second
 * report, another tool — is refused (409) and recorded as a security event:
 * it means an action happened without permission.
 */
export function recordAction(
  auditor: AuditService,
  report: ActionReport,
  meta: DecisionMeta,
  /** Told once the report is accepted (containment counts budgets on status ok). */
  onReported?: (decisionId: string, status: ActionReport["status"]) => void,
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
    auditor.securityEvent(
      "action_without_permission",
      "an action was reported without a matching allow",
      {
        code,
        decision_id: report.decision_id,
        reported_tool: report.tool,
        decided_tool: entry?.tool,
        decided_outcome: entry?.outcome,
        call_id: report.call_id,
        status: report.status,
        changed: report.changed,
      },
      meta,
    );
    throw toolgateError(code, message);
  };
  if (entry === undefined)
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
  const attrs: Attributes = {
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
    trace_id: null as string | null, // filled in by audit, in this place
    span_id: null as string | null,
    decision_span_id: e.spanContext?.spanId,
    request_id: meta.requestId,
  };
  const ids = auditor.action({
    name: `execute_tool ${e.tool ?? ""}`,
    meta: { ...meta, ...(started !== undefined ? { startTimeMs: started } : {}) },
    endTimeMs: ended,
    attributes: attrs,
    link: e.spanContext,
    errorMessage: report.status === "error" ? (error?.message ?? "tool error") : undefined,
    record,
  });
  // after the record is written: a store failure (503) never loses the action's audit
  onReported?.(e.decisionId, report.status);
  return { recorded: true, decision_id: e.decisionId, trace_id: ids.traceId, span_id: ids.spanId };
}
