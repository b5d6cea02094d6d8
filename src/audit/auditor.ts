import {
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
} from "@opentelemetry/api";
import type {
  Decision,
  DecisionMeta,
  DecisionNotes,
  DecisionRequest,
  DecisionSink,
  GrantInfo,
  VerifiedFacts,
} from "../model/decision";
import type { Logger } from "../shared/log";
import type { SpanIds } from "../telemetry/ids";
import { SecretsSeen, type MaskOp, type Redactor } from "../redaction/redact";
import type { AuditTrail, TrailStats } from "../trail/trail";
import type { PreparedSpan, Tracing, TracingStats } from "../telemetry/tracing";

export { Tracing } from "../telemetry/tracing";
export type { SpanIds } from "../telemetry/ids";

/** A span that spans several decisions (an AuthZEN batch request): ended by the face. */
export interface RequestSpan {
  end(): void;
}

/** What POST /v1/actions records: the execute_tool span and its record. */
export interface ActionAudit {
  name: string;
  /** The report's request meta; startTimeMs is the action's started_at when given. */
  meta: DecisionMeta;
  /** The action's ended_at (ms), if given. */
  endTimeMs: number | undefined;
  attributes: Attributes;
  /** The decision span the action links to. */
  link: ReturnType<Span["spanContext"]> | undefined;
  /** Set when the tool reported an error: the span's status message. */
  errorMessage: string | undefined;
  /** The trail and log record; its trace_id and span_id are filled in. */
  record: Record<string, unknown> & { trace_id: string | null; span_id: string | null };
}

/**
 * Audit as the rest of toolgate sees it. `Auditor` does the work on the
 * calling thread; `AuditClient` (./client) hands it to an Auditor in a worker
 * thread so the decision path pays only for a message.
 */
export interface AuditService extends DecisionSink {
  /** Recent decisions, for checking action reports (on the calling thread in both). */
  readonly ledger: DecisionLedger;
  traceMeta(headers: Record<string, string | string[] | undefined>): unknown;
  startRequestSpan(meta: DecisionMeta, name: string): RequestSpan;
  securityEvent(
    event: string,
    message: string,
    fields: Record<string, unknown>,
    meta: DecisionMeta,
  ): void;
  approvalEvent(event: string, fields: Record<string, unknown>): void;
  containmentEvent(event: string, fields: Record<string, unknown>): void;
  /** A span per bundle activation or rejection (BundleManager). */
  bundleSpan(name: string, attributes: Attributes, error?: string): void;
  /** Records an action report; returns the ids of its execute_tool span. */
  action(a: ActionAudit): SpanIds;
  /** Redacts with the shared redactor (action reports, approval display copies). */
  redact<T>(value: T, mask?: readonly MaskOp[]): T;
  tracingStats(): TracingStats;
  trailStats(): TrailStats | undefined;
  /** Audit records waiting for another thread (0 when audit runs on the calling thread). */
  backlog(): number;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** What audit keeps of an allowed decision, so an action report can be checked and linked. */
export interface LedgerEntry {
  decisionId: string;
  outcome: Decision["outcome"];
  tool: string | undefined;
  subjectId: string;
  agentId: string;
  callId: string | undefined;
  obligations: Decision["obligations"];
  spanContext: ReturnType<Span["spanContext"]> | undefined;
  reported: boolean;
  at: number;
  /** The tool's permission class from the policy (`read`, `execute`, …), if given. */
  toolClass: string | null;
  /** The record the decision was about (`resource`). */
  resource: { type: string; id: string };
  /** The job's customer (`context.job.customer_id`), if a string. */
  jobCustomer: string | undefined;
}

/** The call id an agent gave in action.properties.call_id, if a string. */
export function callIdOf(req: DecisionRequest): string | undefined {
  const id = req.action.properties?.call_id;
  return typeof id === "string" ? id : undefined;
}

/** The ledger's account of a decision whose span is `spanContext`. */
export function ledgerEntry(
  d: Decision,
  req: DecisionRequest,
  agentId: string,
  spanContext: LedgerEntry["spanContext"],
): LedgerEntry {
  return {
    decisionId: d.decision_id,
    outcome: d.outcome,
    tool: d.tool?.name ?? req.action.name,
    subjectId: req.subject.id,
    agentId,
    callId: callIdOf(req),
    obligations: d.obligations,
    spanContext,
    reported: false,
    at: Date.now(),
    toolClass: d.tool?.class ?? null,
    resource: { type: req.resource.type, id: req.resource.id },
    jobCustomer: jobCustomerOf(req),
  };
}

/** `context.job.customer_id`, if a non-empty string. */
function jobCustomerOf(req: DecisionRequest): string | undefined {
  const job = req.context?.job;
  const c =
    job !== null && typeof job === "object"
      ? (job as Record<string, unknown>).customer_id
      : undefined;
  return typeof c === "string" && c !== "" ? c : undefined;
}

/**
 * Recent decisions by id, bounded in size and age (oldest evicted first): what
 * POST /v1/actions checks a report against. In memory only.
 */
export class DecisionLedger {
  private readonly map = new Map<string, LedgerEntry>();
  constructor(
    private readonly maxEntries = 100_000,
    private readonly maxAgeMs = 60 * 60 * 1000,
  ) {}

  add(e: LedgerEntry): void {
    this.map.set(e.decisionId, e);
    if (this.map.size > this.maxEntries) {
      const oldest = this.map.keys().next().value;
      if (oldest !== undefined) this.map.delete(oldest);
    }
  }

  get(id: string, now = Date.now()): LedgerEntry | undefined {
    const e = this.map.get(id);
    if (e !== undefined && now - e.at > this.maxAgeMs) {
      this.map.delete(id);
      return undefined;
    }
    return e;
  }

  get size(): number {
    return this.map.size;
  }
}

export interface AuditorOptions {
  tracing: Tracing;
  log: Logger;
  redactor: Redactor;
  trail: AuditTrail | undefined;
  agentId: string;
  ledger?: DecisionLedger;
  /** Write a log line per decision (default true). */
  logDecisions?: boolean;
}

/** The redacted, flattened account of one decision, shared by span, log and trail. */
export interface DecisionRecord {
  decision_id: string;
  time: string;
  face: string;
  request_id: string | undefined;
  trace_id: string | undefined;
  span_id: string | undefined;
  agent_id: string;
  subject: { type: string; id: string; method: string | undefined };
  tool: { name: string; class: string | null; stage: string | null; call_id: string | undefined };
  resource: { type: string; id: string };
  job: { id: unknown; purpose: unknown; customer_id: unknown };
  arguments: unknown;
  context: unknown;
  outcome: string;
  reasons: Decision["reasons"];
  obligations: Decision["obligations"];
  approval: Decision["approval"] | undefined;
  access_request: Decision["access_request"] | undefined;
  policy: Decision["policy"];
  duration_us: number | undefined;
  /** The allow's grant: its id, audience and expiry (never the token). */
  grant?: GrantInfo | undefined;
  /** rate_limited / budget_exceeded: seconds until a retry may succeed. */
  retry_after?: number | undefined;
  /** The kill switch that denied the decision. */
  killswitch_id?: string | undefined;
  /** Stage shadow: what the next stage would have answered (never returned to the agent). */
  shadow?: DecisionNotes["shadow"];
  /** The candidate policy's answer (policy.candidate.bundle). */
  candidate?: DecisionNotes["candidate"];
}

function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function json(v: unknown): string {
  return v === undefined ? "" : JSON.stringify(v);
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * One event's redaction: the one way caller data enters an audit record. The
 * structured data goes first (the request with the policy's mask, or the
 * event's fields), then everything else the caller wrote or a policy quoted
 * from it — reason messages, refusal and error messages, tool names, call ids,
 * the request path and id — through the same redactor and the same
 * SecretsSeen, so free text quotes a value as the record shows it. Spans, log
 * lines and trail records are built from its output only.
 */
class Redaction {
  private readonly seen = new SecretsSeen();
  constructor(private readonly redactor: Redactor) {}

  /** Structured data (with the policy's mask, for the request). */
  data<T>(value: T, mask?: readonly MaskOp[]): T {
    return this.redactor.redact(value, mask, this.seen);
  }

  /** Free text, cut to the redactor's maximum length like any string. */
  text(value: string): string {
    return this.redactor.redact(value, undefined, this.seen);
  }

  /** Free text kept whole (span names, attributes holding JSON text). */
  whole(value: string): string {
    return this.redactor.redactText(value, this.seen);
  }

  /** The request's caller-chosen parts: its X-Request-ID and path. */
  meta(meta: DecisionMeta): DecisionMeta {
    const out = { ...meta };
    // usually the UUID toolgate drew itself
    if (meta.requestId !== undefined && !UUID_RE.test(meta.requestId))
      out.requestId = this.text(meta.requestId);
    if (meta.http) out.http = { method: meta.http.method, path: this.text(meta.http.path) };
    return out;
  }

  /** String and string-array attribute values as free text. */
  attributes(attributes: Attributes): Attributes {
    const out: Attributes = {};
    for (const [k, v] of Object.entries(attributes)) {
      if (typeof v === "string") out[k] = this.whole(v);
      else if (Array.isArray(v))
        out[k] = v.map((x: unknown) => (typeof x === "string" ? this.whole(x) : x));
      else out[k] = v;
    }
    return out;
  }
}

/** The caller's trace context and, for batches, the request span to parent items. */
export interface TraceMeta {
  parent: Context;
  requestSpan?: Span;
}

/**
 * Audit: every decision and refusal becomes one span, one log line and one
 * trail record, all built from one redacted record. Never throws into the
 * decision path and never changes a decision.
 */
export class Auditor implements AuditService {
  readonly ledger: DecisionLedger;
  private readonly logDecisions: boolean;

  constructor(private readonly opts: AuditorOptions) {
    this.ledger = opts.ledger ?? new DecisionLedger();
    this.logDecisions = opts.logDecisions ?? true;
  }

  get tracing(): Tracing {
    return this.opts.tracing;
  }

  tracingStats(): TracingStats {
    return this.opts.tracing.stats();
  }

  /** Builds the trace part of DecisionMeta from request headers. */
  traceMeta(headers: Record<string, string | string[] | undefined>): TraceMeta {
    return { parent: this.opts.tracing.extract(headers) };
  }

  /** A SERVER span for a request that carries several decisions (AuthZEN batch). */
  startRequestSpan(meta: DecisionMeta, name: string): Span {
    const t = meta.trace as TraceMeta | undefined;
    const red = new Redaction(this.opts.redactor);
    const span = this.opts.tracing.startSpan(
      red.whole(name),
      {
        kind: SpanKind.SERVER,
        startTime: meta.startTimeMs,
        attributes: this.httpAttributes(red.meta(meta)),
      },
      t?.parent ?? this.opts.tracing.extract({}),
    );
    if (t !== undefined) t.requestSpan = span;
    return span;
  }

  private httpAttributes(meta: DecisionMeta): Attributes {
    const a: Attributes = { "toolgate.face": meta.face };
    if (meta.http) {
      a["http.request.method"] = meta.http.method;
      a["url.path"] = meta.http.path;
    }
    if (meta.requestId !== undefined) a["toolgate.request_id"] = meta.requestId;
    return a;
  }

  /**
   * Where a decision's span goes: under the batch's request span (INTERNAL),
   * or as the request's own span (SERVER, with the HTTP attributes) under the
   * caller's trace context.
   */
  private placement(
    meta: DecisionMeta,
    attributes: Attributes,
  ): { kind: SpanKind; parent: Context; attributes: Attributes } {
    const t = meta.trace as TraceMeta | undefined;
    if (t?.requestSpan !== undefined)
      return {
        kind: SpanKind.INTERNAL,
        parent: trace.setSpan(t.parent, t.requestSpan),
        attributes,
      };
    return {
      kind: meta.http ? SpanKind.SERVER : SpanKind.INTERNAL,
      parent: t?.parent ?? this.opts.tracing.extract({}),
      attributes: { ...this.httpAttributes(meta), ...attributes },
    };
  }

  /** The decision span, on the light path (Tracing.prepareSpan). */
  private preparedFor(name: string, meta: DecisionMeta, attributes: Attributes): PreparedSpan {
    const p = this.placement(meta, attributes);
    return this.opts.tracing.prepareSpan(name, p.kind, p.parent, p.attributes, meta.startTimeMs);
  }

  /** A refusal's or security event's span, placed as a decision's. */
  private spanFor(name: string, meta: DecisionMeta, attributes: Attributes): Span {
    const p = this.placement(meta, attributes);
    return this.opts.tracing.startSpan(
      name,
      { kind: p.kind, startTime: meta.startTimeMs, attributes: p.attributes },
      p.parent,
    );
  }

  decided(
    d: Decision,
    req: DecisionRequest,
    verified: VerifiedFacts | undefined,
    meta: DecisionMeta,
    mask: readonly unknown[] | undefined,
    grant?: GrantInfo,
    notes?: DecisionNotes,
  ): void {
    try {
      const red = new Redaction(this.opts.redactor);
      const redacted = red.data(req, mask as readonly MaskOp[] | undefined);
      // what the policy answered quotes the caller (reason messages, the tool name)
      const said = red.data({
        tool: d.tool,
        reasons: d.reasons,
        obligations: d.obligations,
        approval: d.approval,
        shadow: notes?.shadow,
        candidate: notes?.candidate,
      });
      meta = red.meta(meta);
      const args = redacted.action.properties?.arguments;
      const callId = callIdOf(redacted);
      const job = isObject(redacted.context?.job) ? redacted.context.job : {};
      const toolName = said.tool?.name ?? redacted.action.name;
      const attrs: Attributes = {
        "gen_ai.tool.name": toolName,
        "gen_ai.agent.id": this.opts.agentId,
        "toolgate.decision.id": d.decision_id,
        "toolgate.decision.outcome": d.outcome,
        "toolgate.decision.reasons": said.reasons.map((r) => r.code),
        "toolgate.policy.bundle": d.policy.bundle,
        "toolgate.policy.revision": d.policy.revision,
        "toolgate.subject.type": redacted.subject.type,
        "toolgate.subject.id": redacted.subject.id,
        "toolgate.resource.type": redacted.resource.type,
        "toolgate.resource.id": redacted.resource.id,
      };
      if (callId !== undefined) attrs["gen_ai.tool.call.id"] = callId;
      if (verified) attrs["toolgate.subject.method"] = verified.subject.method;
      if (said.tool?.class) attrs["toolgate.tool.class"] = said.tool.class;
      if (said.tool?.stage) attrs["toolgate.tool.stage"] = said.tool.stage;
      if (typeof job.id === "string") attrs["toolgate.job.id"] = job.id;
      if (typeof job.purpose === "string") attrs["toolgate.job.purpose"] = job.purpose;
      if (typeof job.customer_id === "string") attrs["toolgate.job.customer_id"] = job.customer_id;
      if (args !== undefined) attrs["toolgate.tool.arguments"] = json(args);
      if (redacted.context !== undefined)
        attrs["toolgate.request.context"] = json(redacted.context);
      if (said.obligations.length > 0)
        attrs["toolgate.decision.obligations"] = json(said.obligations);
      if (said.approval) {
        attrs["toolgate.approval.required_roles"] = said.approval.approver_roles;
        attrs["toolgate.approval.single_use"] = said.approval.single_use;
        attrs["toolgate.approval.ttl_seconds"] = said.approval.ttl_seconds;
      }
      if (d.access_request) {
        attrs["toolgate.access_request.evaluation_id"] = d.access_request.evaluation_id;
        attrs["toolgate.access_request.expires_at"] = d.access_request.expires_at;
      }
      if (grant !== undefined) {
        attrs["toolgate.grant.jti"] = grant.jti;
        attrs["toolgate.grant.audience"] = grant.aud;
        attrs["toolgate.grant.expires_at"] = grant.exp;
      }
      if (d.retry_after !== undefined) attrs["toolgate.decision.retry_after"] = d.retry_after;
      if (notes?.killswitch_id !== undefined) attrs["toolgate.killswitch.id"] = notes.killswitch_id;
      if (said.shadow !== undefined) {
        attrs["toolgate.shadow.outcome"] = said.shadow.outcome;
        attrs["toolgate.shadow.reasons"] = said.shadow.reasons.map((r) => r.code);
      }
      if (said.candidate !== undefined) {
        attrs["toolgate.candidate.outcome"] = said.candidate.outcome;
        attrs["toolgate.candidate.diverged"] = said.candidate.diverged;
        attrs["toolgate.candidate.revision"] = said.candidate.revision;
      }
      const span = this.preparedFor(`authorize ${toolName}`, meta, attrs);
      const sc = span.spanContext;
      const record: DecisionRecord = {
        decision_id: d.decision_id,
        time: d.evaluated_at,
        face: meta.face,
        request_id: meta.requestId,
        trace_id: sc.traceId,
        span_id: sc.spanId,
        agent_id: this.opts.agentId,
        subject: {
          type: redacted.subject.type,
          id: redacted.subject.id,
          method: verified?.subject.method,
        },
        tool: {
          name: toolName,
          class: said.tool?.class ?? null,
          stage: said.tool?.stage ?? null,
          call_id: callId,
        },
        resource: { type: redacted.resource.type, id: redacted.resource.id },
        job: { id: job.id, purpose: job.purpose, customer_id: job.customer_id },
        arguments: args,
        context: redacted.context,
        outcome: d.outcome,
        reasons: said.reasons,
        obligations: said.obligations,
        approval: said.approval,
        access_request: d.access_request,
        policy: d.policy,
        duration_us:
          meta.startTimeMs === undefined
            ? undefined
            : Math.round((nowMs() - meta.startTimeMs) * 1000),
        grant: grant === undefined ? undefined : { jti: grant.jti, aud: grant.aud, exp: grant.exp },
        retry_after: d.retry_after,
        killswitch_id: notes?.killswitch_id,
        shadow: said.shadow,
        candidate: said.candidate,
      };
      // Serialised once: the trail stores this text as is, the log line embeds it.
      const recordJson = JSON.stringify(record);
      const trailed = this.appendTrailJson("decision", recordJson);
      span.finish(trailed ? { "toolgate.audit.trail_seq": trailed.seq } : undefined);
      if (this.logDecisions) this.logRecord("decision", recordJson, trailed?.seq);
      if (said.candidate?.diverged === true) {
        this.opts.log.info("the candidate policy answered differently", {
          event: "candidate.divergence",
          decision_id: d.decision_id,
          tool: toolName,
          outcome: d.outcome,
          candidate_outcome: said.candidate.outcome,
          candidate_reasons: said.candidate.reasons,
          candidate_revision: said.candidate.revision,
          trail_seq: trailed?.seq,
        });
      }
      this.ledger.add(ledgerEntry(d, req, this.opts.agentId, sc));
    } catch (e) {
      this.opts.log.error("audit failed for a decision", {
        event: "audit.error",
        decision_id: d.decision_id,
        error: (e as Error).message,
      });
    }
  }

  refused(
    err: { code: string; message: string; status: number },
    req: DecisionRequest,
    meta: DecisionMeta,
  ): void {
    try {
      const red = new Redaction(this.opts.redactor);
      const redacted = red.data(req);
      // the message may quote what the caller sent (agent_mismatch echoes the value)
      const message = red.text(err.message);
      meta = red.meta(meta);
      const tool = redacted.action.name;
      const attrs: Attributes = {
        "gen_ai.tool.name": tool,
        "gen_ai.agent.id": this.opts.agentId,
        "toolgate.decision.outcome": "refused",
        "toolgate.error.code": err.code,
        "toolgate.subject.id": redacted.subject.id,
        "error.type": err.code,
      };
      const span = this.spanFor(`authorize ${tool}`, meta, attrs);
      span.setStatus({ code: SpanStatusCode.ERROR, message });
      const sc = span.spanContext();
      span.end();
      const record = {
        error: { code: err.code, message, status: err.status },
        face: meta.face,
        request_id: meta.requestId,
        trace_id: sc.traceId,
        span_id: sc.spanId,
        agent_id: this.opts.agentId,
        subject: redacted.subject,
        tool,
        resource: redacted.resource,
        context: redacted.context,
      };
      const trailed = this.appendTrail("refusal", record);
      const level = err.code === "agent_mismatch" ? "warn" : "error";
      this.opts.log[level]("decision refused", {
        event: "decision.refused",
        ...record,
        trail_seq: trailed?.seq,
      });
    } catch (e) {
      this.opts.log.error("audit failed for a refusal", {
        event: "audit.error",
        error: (e as Error).message,
      });
    }
  }

  /** A security event: a span, a log line with its own event name, and a trail record. */
  securityEvent(
    event: string,
    message: string,
    fields: Record<string, unknown>,
    meta: DecisionMeta,
  ): void {
    try {
      const red = new Redaction(this.opts.redactor);
      const redacted = red.data(fields);
      message = red.text(message);
      meta = red.meta(meta);
      const span = this.spanFor(`toolgate.security ${event}`, meta, {
        "gen_ai.agent.id": this.opts.agentId,
        "toolgate.security.event": event,
        "toolgate.security.details": json(redacted),
      });
      span.setStatus({ code: SpanStatusCode.ERROR, message });
      const sc = span.spanContext();
      span.end();
      const record = {
        event,
        message,
        ...redacted,
        trace_id: sc.traceId,
        span_id: sc.spanId,
        request_id: meta.requestId,
      };
      const trailed = this.appendTrail("security", record);
      this.opts.log.warn(message, {
        ...record,
        event: `security.${event}`,
        trail_seq: trailed?.seq,
      });
    } catch (e) {
      this.opts.log.error("audit failed for a security event", {
        event: "audit.error",
        error: (e as Error).message,
      });
    }
  }

  /**
   * An approval event (requested, approved, denied, expired, cancelled, used,
   * refused, revoked): a span linked to the decision it answers, a log line
   * `approval.<event>` with the approver's identity, and a trail record.
   */
  approvalEvent(
    event: string,
    fields: Record<string, unknown>,
    /** The decision's span, when the caller keeps the ledger (the audit worker's client). */
    link?: LedgerEntry["spanContext"],
  ): void {
    try {
      const redacted = new Redaction(this.opts.redactor).data(fields);
      const decisionId = typeof fields.decision_id === "string" ? fields.decision_id : undefined;
      const linked = link ?? (decisionId ? this.ledger.get(decisionId)?.spanContext : undefined);
      const attrs: Attributes = {
        "gen_ai.agent.id": this.opts.agentId,
        "toolgate.approval.event": event,
      };
      const put = (key: string, v: unknown): void => {
        if (typeof v === "string" || typeof v === "number" || typeof v === "boolean")
          attrs[key] = v;
        else if (Array.isArray(v) && v.every((x) => typeof x === "string")) attrs[key] = v;
      };
      put("toolgate.approval.id", redacted.approval_id);
      put("toolgate.approval.status", redacted.status);
      put("toolgate.approval.evaluation_id", redacted.evaluation_id);
      put("toolgate.decision.id", redacted.decision_id);
      put("gen_ai.tool.name", redacted.tool);
      put("toolgate.approval.initiator", redacted.initiator);
      put("toolgate.approver.id", redacted.approver);
      put("toolgate.approver.roles", redacted.approver_roles);
      put("toolgate.approval.approved_until", redacted.approved_until);
      put("toolgate.approval.refusal", redacted.why);
      const span = this.opts.tracing.startSpan(
        `toolgate.approval ${event}`,
        { kind: SpanKind.INTERNAL, attributes: attrs, links: linked ? [{ context: linked }] : [] },
        this.opts.tracing.extract({}),
      );
      if (event === "refused")
        span.setStatus({
          code: SpanStatusCode.ERROR,
          message: typeof redacted.why === "string" ? redacted.why : "refused",
        });
      const sc = span.spanContext();
      span.end();
      const record = { event, ...redacted, trace_id: sc.traceId, span_id: sc.spanId };
      const trailed = this.appendTrail("approval", record);
      const level = event === "refused" ? "warn" : "info";
      this.opts.log[level](`approval ${event}`, {
        ...record,
        event: `approval.${event}`,
        trail_seq: trailed?.seq,
      });
    } catch (e) {
      this.opts.log.error("audit failed for an approval event", {
        event: "audit.error",
        error: (e as Error).message,
      });
    }
  }

  /**
   * A containment change (kill switch created or deleted): a span, a log line
   * `containment.<event>` naming who, and a trail record.
   */
  containmentEvent(event: string, fields: Record<string, unknown>): void {
    try {
      const redacted = new Redaction(this.opts.redactor).data(fields);
      const attrs: Attributes = {
        "gen_ai.agent.id": this.opts.agentId,
        "toolgate.containment.event": event,
        "toolgate.containment.details": json(redacted),
      };
      if (typeof redacted.actor === "string") attrs["toolgate.actor.id"] = redacted.actor;
      const ks = redacted.killswitch as { id?: unknown } | undefined;
      if (typeof ks?.id === "string") attrs["toolgate.killswitch.id"] = ks.id;
      const span = this.opts.tracing.startSpan(
        `toolgate.containment ${event}`,
        { kind: SpanKind.INTERNAL, attributes: attrs },
        this.opts.tracing.extract({}),
      );
      const sc = span.spanContext();
      span.end();
      const record = { event, ...redacted, trace_id: sc.traceId, span_id: sc.spanId };
      const trailed = this.appendTrail("containment", record);
      this.opts.log.warn(`containment ${event}`, {
        ...record,
        event: `containment.${event}`,
        trail_seq: trailed?.seq,
      });
    } catch (e) {
      this.opts.log.error("audit failed for a containment event", {
        event: "audit.error",
        error: (e as Error).message,
      });
    }
  }

  /** Appends a record serialised by the caller; a trail failure is logged, never thrown. */
  private appendTrailJson(
    kind: string,
    recordJson: string,
  ): { seq: number; hash: string } | undefined {
    if (this.opts.trail === undefined) return undefined;
    try {
      return this.opts.trail.appendJson(kind, recordJson);
    } catch (e) {
      this.opts.log.error("audit trail append failed", {
        event: "audit.trail_error",
        error: (e as Error).message,
      });
      return undefined;
    }
  }

  /**
   * One JSON log line for a record already serialised: written straight to
   * the log stream (winston's per-line format pipeline cost more than the
   * decision itself), in the same shape as every other line.
   */
  private logRecord(event: string, recordJson: string, trailSeq: number | undefined): void {
    const head = `{"level":"info","msg":"${event}","event":"${event}"${trailSeq === undefined ? "" : `,"trail_seq":${trailSeq}`}`;
    this.opts.log.line(recordJson === "{}" ? `${head}}` : `${head},${recordJson.slice(1)}`, "info");
  }

  /** Appends to the trail; a trail failure is logged, never thrown. */
  appendTrail(
    kind: string,
    record: Record<string, unknown>,
  ): { seq: number; hash: string } | undefined {
    if (this.opts.trail === undefined) return undefined;
    try {
      return this.opts.trail.append(kind, record);
    } catch (e) {
      this.opts.log.error("audit trail append failed", {
        event: "audit.trail_error",
        error: (e as Error).message,
      });
      return undefined;
    }
  }

  action(a: ActionAudit): SpanIds {
    const t = a.meta.trace as TraceMeta | undefined;
    // the report was redacted where it was built; the tool name, call id, record references
    // and anything else it carries from the caller pass here again (redacting twice is a no-op)
    const red = new Redaction(this.opts.redactor);
    const record = red.data(a.record);
    const meta = red.meta(a.meta);
    const span = this.opts.tracing.startSpan(
      red.whole(a.name),
      {
        kind: SpanKind.INTERNAL,
        startTime: meta.startTimeMs,
        attributes: { ...this.httpAttributes(meta), ...red.attributes(a.attributes) },
        links: a.link ? [{ context: a.link }] : [],
      },
      t?.parent ?? this.opts.tracing.extract({}),
    );
    if (a.errorMessage !== undefined)
      span.setStatus({ code: SpanStatusCode.ERROR, message: red.text(a.errorMessage) });
    const sc = span.spanContext();
    span.end(a.endTimeMs);
    record.trace_id = sc.traceId;
    record.span_id = sc.spanId;
    const trailed = this.appendTrail("action", record);
    if (this.logDecisions)
      this.logRecord(
        "action",
        JSON.stringify({ time: new Date().toISOString(), ...record }),
        trailed?.seq,
      );
    return { traceId: sc.traceId, spanId: sc.spanId };
  }

  bundleSpan(name: string, attributes: Attributes, error?: string): void {
    try {
      const span = this.opts.tracing.startSpan(
        name,
        { kind: SpanKind.INTERNAL, attributes },
        this.opts.tracing.extract({}),
      );
      if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
      span.end();
    } catch {
      // tracing never gets in the way of policy
    }
  }

  trailStats(): TrailStats | undefined {
    return this.opts.trail?.stats();
  }

  backlog(): number {
    return 0;
  }

  /** Redacts with the shared redactor (for action reports, approvals, ...). */
  redact<T>(value: T, mask?: readonly MaskOp[]): T {
    return this.opts.redactor.redact(value, mask);
  }

  async flush(): Promise<void> {
    await Promise.all([this.opts.tracing.flush(), this.opts.trail?.flush(), this.opts.log.flush()]);
  }

  async close(): Promise<void> {
    await this.opts.tracing.shutdown();
    await this.opts.trail?.close();
    await this.opts.log.flush();
  }
}
