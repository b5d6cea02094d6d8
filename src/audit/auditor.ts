import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type SpanContext,
} from "@opentelemetry/api";
import type * as OtelCore from "@opentelemetry/core";
import type {
  ActionEvent,
  ApprovalEvent,
  AuditEvent,
  BundleEvent,
  ContainmentEvent,
  Decision,
  DecisionEvent,
  DecisionNotes,
  DecisionRequest,
  DecisionSink,
  GrantInfo,
  RefusalEvent,
  RequestContext,
  RequestSpanEnd,
  RequestSpanStart,
  SecurityEvent,
  SpanIds,
  SpanRef,
  VerifiedFacts,
} from "../model";
import { isObject } from "../shared/guards";
import { BacklogGate } from "./backlog";
import type { Logger } from "../shared/log";
import { SecretsSeen, type MaskOp, type Redactor } from "../redaction/redact";
import type { AuditTrail, TrailStats } from "../trail";
import type { Tracing, TracingStats } from "../telemetry/tracing";

export { traceParentOf } from "../telemetry/trace-context";
export type { SpanIds } from "../model";

/**
 * Audit as the rest of toolgate sees it: a sink for every AuditEvent.
 * `Auditor` does the work on the calling thread; `AuditClient` (./client)
 * hands it to an Auditor in a worker thread so the decision path pays only
 * for a message.
 */
export interface AuditService extends DecisionSink {
  /** Recent decisions, for checking action reports (on the calling thread in both). */
  readonly ledger: DecisionLedger;
  /**
   * Records one event. Returns the ids of the span it makes (an action
   * report answers with them; a batch's items are children of its request
   * span); for a request span's end, that span's.
   */
  record(event: AuditEvent): SpanIds;
  /** Redacts with the shared redactor (action reports, approval display copies). */
  /** With `seen`, what the mask hides is collected, and later strings quoting it are redacted too. */
  redact<T>(value: T, mask?: readonly MaskOp[], seen?: SecretsSeen): T;
  tracingStats(): TracingStats;
  trailStats(): TrailStats | undefined;
  /** Audit records waiting for another thread (0 when audit runs on the calling thread). */
  backlog(): number;
  /** Audit records not yet written (parked, in flight, in the trail's buffer), in characters of JSON text. */
  backlogBytes(): number;
  /** Why decisions cannot be recorded now (backlog past audit.max_backlog_bytes; ./backlog), or undefined. */
  overloaded(): string | undefined;
  /** Why the audit worker thread is gone (stopped, or cannot be restarted); undefined while it runs or without one. */
  workerDown(): string | undefined;
  /** Asks the audit worker thread, if there is one, to give back memory it no longer needs (idle). */
  releaseMemory?(): void;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/**
 * What audit reads of a decision event: all of it but the grant token (a
 * bearer credential that no record, span or log line holds: `grant` has its
 * id, audience and expiry) and, of what toolgate verified, only how the
 * subject was established. The audit worker is handed exactly this
 * (./client, `forWorker`), so the token never leaves the main thread.
 */
export type AuditedDecision = Omit<DecisionEvent, "decision" | "verified"> & {
  decision: Omit<Decision, "grant">;
  verified: { subject: Pick<VerifiedFacts["subject"], "method"> };
};

/** An event as the Auditor reads it: an AuditEvent, a decision as AuditedDecision. */
export type AuditedEvent = Exclude<AuditEvent, DecisionEvent> | AuditedDecision;

/** Span attributes of an approval event, from its (redacted) fields. */
const APPROVAL_ATTRIBUTES: ReadonlyArray<readonly [string, string]> = [
  ["toolgate.approval.id", "approval_id"],
  ["toolgate.approval.status", "status"],
  ["toolgate.approval.evaluation_id", "evaluation_id"],
  ["toolgate.decision.id", "decision_id"],
  ["gen_ai.tool.name", "tool"],
  ["toolgate.approval.initiator", "initiator"],
  ["toolgate.approver.id", "approver"],
  ["toolgate.approver.roles", "approver_roles"],
  ["toolgate.approval.approved_until", "approved_until"],
  ["toolgate.approval.refusal", "why"],
];

/** A span's start time when the request's arrival is known (else the SDK's now). */
const startTime = (ms: number | undefined): { startTime?: number } =>
  ms === undefined ? {} : { startTime: ms };

/** Where a record landed in the trail. */
type Trailed = { seq: number; hash: string };

/** A span that spans several decisions (an AuthZEN batch request): ended by the face. */
export interface RequestSpan {
  /** The context for the batch's items: their spans are the request span's children. */
  readonly ctx: RequestContext;
  end(): void;
}

/** Opens the request span of a request that carries several decisions (an AuthZEN batch). */
export function startRequestSpan(
  audit: AuditService,
  ctx: RequestContext,
  name: string,
): RequestSpan {
  const ids = audit.record({ kind: "request_span", name, ctx });
  const span: SpanIds = { traceId: ids.traceId, spanId: ids.spanId };
  return {
    ctx: { ...ctx, requestSpan: span },
    end: () => audit.record({ kind: "request_span_end", span }),
  };
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
  spanContext: SpanRef | undefined;
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
  d: Pick<Decision, "decision_id" | "outcome" | "tool" | "obligations">,
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
  const c = isObject(job) ? job.customer_id : undefined;
  return typeof c === "string" && c !== "" ? c : undefined;
}

/**
 * Recent decisions by id, bounded in size and age (oldest evicted first): what
 * POST /v1/actions checks a report against. In memory only.
 */
export class DecisionLedger {
  private readonly map = new Map<string, LedgerEntry>();
  /** Entries in the order they were added, the oldest at `head` (slots before it are spent). */
  private order: Array<LedgerEntry | undefined> = [];
  private head = 0;
  constructor(
    private readonly maxEntries = 100_000,
    private readonly maxAgeMs = 60 * 60 * 1000,
  ) {}

  /**
   * Adds an entry and evicts from the oldest: entries beyond the count or
   * past the age go; one already gone or replaced is skipped. O(1) amortised.
   * (Not `map.keys().next()`: a Map keeps deleted slots at the front of its
   * table until it rehashes, and finding the first live key walked them all,
   * up to ~90 µs per decision once the ledger was full.)
   */
  add(e: LedgerEntry): void {
    this.map.set(e.decisionId, e);
    this.order.push(e);
    for (;;) {
      const old = this.order[this.head];
      if (old === undefined) break;
      const live = this.map.get(old.decisionId) === old;
      if (live && this.map.size <= this.maxEntries && e.at - old.at <= this.maxAgeMs) break;
      if (live) this.map.delete(old.decisionId);
      this.order[this.head++] = undefined;
    }
    if (this.head >= 1024 && this.head * 2 >= this.order.length) {
      this.order = this.order.slice(this.head);
      this.head = 0;
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
  /**
   * audit.max_backlog_bytes, for an Auditor on the decision path's thread:
   * the trail's unwritten lines past it deny decisions (./backlog). None in
   * the audit worker, whose client keeps the bound.
   */
  maxBacklogBytes?: number;
}

/**
 * The redacted, flattened account of one decision: the trail record and the
 * log line as they are, and the span's attributes (decisionAttributes).
 */
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

/** The decision span's attributes, all from the record. */
function decisionAttributes(r: DecisionRecord): Attributes {
  const attrs: Attributes = {
    "gen_ai.tool.name": r.tool.name,
    "gen_ai.agent.id": r.agent_id,
    "toolgate.decision.id": r.decision_id,
    "toolgate.decision.outcome": r.outcome,
    "toolgate.decision.reasons": r.reasons.map((x) => x.code),
    "toolgate.policy.bundle": r.policy.bundle,
    "toolgate.policy.revision": r.policy.revision,
    "toolgate.subject.type": r.subject.type,
    "toolgate.subject.id": r.subject.id,
    "toolgate.resource.type": r.resource.type,
    "toolgate.resource.id": r.resource.id,
  };
  if (r.tool.call_id !== undefined) attrs["gen_ai.tool.call.id"] = r.tool.call_id;
  if (r.subject.method !== undefined) attrs["toolgate.subject.method"] = r.subject.method;
  if (r.tool.class) attrs["toolgate.tool.class"] = r.tool.class;
  if (r.tool.stage) attrs["toolgate.tool.stage"] = r.tool.stage;
  if (typeof r.job.id === "string") attrs["toolgate.job.id"] = r.job.id;
  if (typeof r.job.purpose === "string") attrs["toolgate.job.purpose"] = r.job.purpose;
  if (typeof r.job.customer_id === "string") attrs["toolgate.job.customer_id"] = r.job.customer_id;
  if (r.arguments !== undefined) attrs["toolgate.tool.arguments"] = json(r.arguments);
  if (r.context !== undefined) attrs["toolgate.request.context"] = json(r.context);
  if (r.obligations.length > 0) attrs["toolgate.decision.obligations"] = json(r.obligations);
  if (r.approval) {
    attrs["toolgate.approval.required_roles"] = r.approval.approver_roles;
    attrs["toolgate.approval.single_use"] = r.approval.single_use;
    attrs["toolgate.approval.ttl_seconds"] = r.approval.ttl_seconds;
  }
  if (r.access_request) {
    attrs["toolgate.access_request.evaluation_id"] = r.access_request.evaluation_id;
    attrs["toolgate.access_request.expires_at"] = r.access_request.expires_at;
  }
  if (r.grant !== undefined) {
    attrs["toolgate.grant.jti"] = r.grant.jti;
    attrs["toolgate.grant.audience"] = r.grant.aud;
    attrs["toolgate.grant.expires_at"] = r.grant.exp;
  }
  if (r.retry_after !== undefined) attrs["toolgate.decision.retry_after"] = r.retry_after;
  if (r.killswitch_id !== undefined) attrs["toolgate.killswitch.id"] = r.killswitch_id;
  if (r.shadow !== undefined) {
    attrs["toolgate.shadow.outcome"] = r.shadow.outcome;
    attrs["toolgate.shadow.reasons"] = r.shadow.reasons.map((x) => x.code);
  }
  if (r.candidate !== undefined) {
    attrs["toolgate.candidate.outcome"] = r.candidate.outcome;
    attrs["toolgate.candidate.diverged"] = r.candidate.diverged;
    attrs["toolgate.candidate.revision"] = r.candidate.revision;
  }
  return attrs;
}

function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

function json(v: unknown): string {
  return v === undefined ? "" : JSON.stringify(v);
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const INVALID_IDS: SpanIds = {
  traceId: "00000000000000000000000000000000",
  spanId: "0000000000000000",
};

/** A span context as plain data (the tracestate as its text, when not empty). */
function refOf(sc: SpanContext): SpanRef {
  const ref: SpanRef = { traceId: sc.traceId, spanId: sc.spanId, traceFlags: sc.traceFlags };
  const state = sc.traceState?.serialize();
  if (state) ref.traceState = state;
  return ref;
}

let core: typeof OtelCore | undefined;
/** @opentelemetry/core, loaded where spans are made (not on a main thread that hands audit to its worker). */
function otelCore(): typeof OtelCore {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  core ??= require("@opentelemetry/core") as typeof OtelCore;
  return core;
}

/** The OpenTelemetry span context of a plain one (`isRemote` for a caller's trace parent). */
function spanContextOf(ref: SpanRef, isRemote?: boolean): SpanContext {
  const sc: SpanContext = { traceId: ref.traceId, spanId: ref.spanId, traceFlags: ref.traceFlags };
  if (isRemote !== undefined) sc.isRemote = isRemote;
  if (ref.traceState !== undefined) sc.traceState = new (otelCore().TraceState)(ref.traceState);
  return sc;
}

/** The caller's trace context as OpenTelemetry's parent context, or the root. */
function parentOf(ctx: RequestContext): Context {
  return ctx.traceParent
    ? trace.setSpanContext(ROOT_CONTEXT, spanContextOf(ctx.traceParent, true))
    : ROOT_CONTEXT;
}

/** The caller-chosen parts of a request's context, redacted (what records and spans show). */
interface RequestView {
  face: RequestContext["face"];
  requestId: string | undefined;
  http: { method: string; path: string } | undefined;
}

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
  request(ctx: RequestContext): RequestView {
    const { requestId, http } = ctx;
    return {
      face: ctx.face,
      // usually the UUID toolgate drew itself
      requestId:
        requestId !== undefined && !UUID_RE.test(requestId) ? this.text(requestId) : requestId,
      http: http ? { method: http.method, path: this.text(http.path) } : undefined,
    };
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

/**
 * Audit: every event becomes one span and, but for bundle and request spans,
 * one log line and one trail record, all built from one redacted record.
 * Never throws into the decision path and never changes what it records.
 */
export class Auditor implements AuditService {
  readonly ledger: DecisionLedger;
  private readonly logDecisions: boolean;
  /** Request spans of AuthZEN batches, open until the face ends them, by span id. */
  private readonly open = new Map<string, Span>();

  /** The backlog's bound, when this Auditor is on the decision path's thread (maxBacklogBytes). */
  private readonly gate: BacklogGate | undefined;

  constructor(private readonly opts: AuditorOptions) {
    this.ledger = opts.ledger ?? new DecisionLedger();
    this.logDecisions = opts.logDecisions ?? true;
    this.gate =
      opts.maxBacklogBytes === undefined
        ? undefined
        : new BacklogGate(opts.maxBacklogBytes, () => this.backlogBytes(), opts.log);
  }

  tracingStats(): TracingStats {
    return this.opts.tracing.stats();
  }

  /**
   * Records one event: one handler per kind. `link` is the decision span an
   * approval event links to, when another thread keeps the ledger (the
   * audit worker's client); else this auditor's ledger names it.
   */
  record(event: AuditedEvent, link?: SpanRef): SpanIds {
    if (this.gate !== undefined && !this.gate.admit(event)) return INVALID_IDS;
    const handle = this.handlers[event.kind] as (e: AuditedEvent, l?: SpanRef) => SpanIds;
    return handle(event, link);
  }

  /** One handler per event kind (the compiler checks every kind has one). */
  private readonly handlers: {
    [K in AuditedEvent["kind"]]: (e: Extract<AuditedEvent, { kind: K }>, link?: SpanRef) => SpanIds;
  } = {
    decision: (e) => this.decision(e),
    refusal: (e) => this.refusal(e),
    action: (e) => this.action(e),
    security: (e) => this.security(e),
    approval: (e, link) => this.approval(e, link),
    containment: (e) => this.containment(e),
    bundle: (e) => this.bundle(e),
    request_span: (e) => this.requestSpan(e),
    request_span_end: (e) => this.requestSpanEnd(e),
  };

  // -- placement ----------------------------------------------------------------------

  private httpAttributes(view: RequestView): Attributes {
    const a: Attributes = { "toolgate.face": view.face };
    if (view.http) {
      a["http.request.method"] = view.http.method;
      a["url.path"] = view.http.path;
    }
    if (view.requestId !== undefined) a["toolgate.request_id"] = view.requestId;
    return a;
  }

  /**
   * Where a request's span goes: under the batch's request span (INTERNAL),
   * or as the request's own span (SERVER, with the HTTP attributes) under the
   * caller's trace context.
   */
  private placement(
    ctx: RequestContext,
    view: RequestView,
    attributes: Attributes,
  ): { kind: SpanKind; parent: Context; attributes: Attributes } {
    const parent = parentOf(ctx);
    const batch = ctx.requestSpan && this.open.get(ctx.requestSpan.spanId);
    if (batch !== undefined)
      return { kind: SpanKind.INTERNAL, parent: trace.setSpan(parent, batch), attributes };
    return {
      kind: view.http ? SpanKind.SERVER : SpanKind.INTERNAL,
      parent,
      attributes: { ...this.httpAttributes(view), ...attributes },
    };
  }

  /** A refusal's or security event's span, placed as a decision's. */
  private spanFor(
    name: string,
    ctx: RequestContext,
    view: RequestView,
    attributes: Attributes,
  ): Span {
    const p = this.placement(ctx, view, attributes);
    return this.opts.tracing.startSpan(
      name,
      { kind: p.kind, ...startTime(ctx.startTimeMs), attributes: p.attributes },
      p.parent,
    );
  }

  // -- one handler per kind -------------------------------------------------------------

  private decision(e: AuditedDecision): SpanIds {
    const { decision: d, notes } = e;
    try {
      const red = new Redaction(this.opts.redactor);
      const redacted = red.data(e.request, e.mask as readonly MaskOp[] | undefined);
      // what the policy answered quotes the caller (reason messages, the tool name)
      const said = red.data({
        tool: d.tool,
        reasons: d.reasons,
        obligations: d.obligations,
        approval: d.approval,
        shadow: notes?.shadow,
        candidate: notes?.candidate,
      });
      const view = red.request(e.ctx);
      const job = isObject(redacted.context?.job) ? redacted.context.job : {};
      const record: DecisionRecord = {
        decision_id: d.decision_id,
        time: d.evaluated_at,
        face: view.face,
        request_id: view.requestId,
        trace_id: undefined, // the span's, below (in their place in the record)
        span_id: undefined,
        agent_id: this.opts.agentId,
        subject: {
          type: redacted.subject.type,
          id: redacted.subject.id,
          method: e.verified.subject.method,
        },
        tool: {
          name: said.tool?.name ?? redacted.action.name,
          class: said.tool?.class ?? null,
          stage: said.tool?.stage ?? null,
          call_id: callIdOf(redacted),
        },
        resource: { type: redacted.resource.type, id: redacted.resource.id },
        job: { id: job.id, purpose: job.purpose, customer_id: job.customer_id },
        arguments: redacted.action.properties?.arguments,
        context: redacted.context,
        outcome: d.outcome,
        reasons: said.reasons,
        obligations: said.obligations,
        approval: said.approval,
        access_request: d.access_request,
        policy: d.policy,
        duration_us: undefined,
        grant:
          e.grant === undefined
            ? undefined
            : { jti: e.grant.jti, aud: e.grant.aud, exp: e.grant.exp },
        retry_after: d.retry_after,
        killswitch_id: notes?.killswitch_id,
        shadow: said.shadow,
        candidate: said.candidate,
      };
      const p = this.placement(e.ctx, view, decisionAttributes(record));
      const span = this.opts.tracing.prepareSpan(
        `authorize ${record.tool.name}`,
        p.kind,
        p.parent,
        p.attributes,
        e.ctx.startTimeMs,
      );
      const sc = span.spanContext;
      record.trace_id = sc.traceId;
      record.span_id = sc.spanId;
      if (e.ctx.startTimeMs !== undefined)
        record.duration_us = Math.round((nowMs() - e.ctx.startTimeMs) * 1000);
      // Serialised once: the trail stores this text as is, the log line embeds it.
      const recordJson = JSON.stringify(record);
      const trailed = this.appendTrailJson("decision", recordJson);
      span.finish(trailed ? { "toolgate.audit.trail_seq": trailed.seq } : undefined);
      if (this.logDecisions) this.logRecord("decision", recordJson, trailed?.seq);
      if (record.candidate?.diverged === true) {
        this.opts.log.info("the candidate policy answered differently", {
          event: "candidate.divergence",
          decision_id: record.decision_id,
          tool: record.tool.name,
          outcome: record.outcome,
          candidate_outcome: record.candidate.outcome,
          candidate_reasons: record.candidate.reasons,
          candidate_revision: record.candidate.revision,
          trail_seq: trailed?.seq,
        });
      }
      this.ledger.add(ledgerEntry(d, e.request, this.opts.agentId, refOf(sc)));
      return sc;
    } catch (err) {
      this.opts.log.error("audit failed for a decision", {
        event: "audit.error",
        decision_id: d.decision_id,
        error: (err as Error).message,
      });
      return INVALID_IDS;
    }
  }

  private refusal(e: RefusalEvent): SpanIds {
    return this.guarded("a refusal", () => {
      const red = new Redaction(this.opts.redactor);
      const redacted = red.data(e.request);
      // the message may quote what the caller sent (agent_mismatch echoes the value)
      const message = red.text(e.error.message);
      const view = red.request(e.ctx);
      const tool = redacted.action.name;
      const span = this.spanFor(`authorize ${tool}`, e.ctx, view, {
        "gen_ai.tool.name": tool,
        "gen_ai.agent.id": this.opts.agentId,
        "toolgate.decision.outcome": "refused",
        "toolgate.error.code": e.error.code,
        "toolgate.subject.id": redacted.subject.id,
        "error.type": e.error.code,
      });
      span.setStatus({ code: SpanStatusCode.ERROR, message });
      const sc = span.spanContext();
      span.end();
      const record = {
        error: { code: e.error.code, message, status: e.error.status },
        face: view.face,
        request_id: view.requestId,
        trace_id: sc.traceId,
        span_id: sc.spanId,
        agent_id: this.opts.agentId,
        subject: redacted.subject,
        tool,
        resource: redacted.resource,
        context: redacted.context,
      };
      const trailed = this.appendTrail("refusal", record);
      const level = e.error.code === "agent_mismatch" ? "warn" : "error";
      this.opts.log[level]("decision refused", {
        event: "decision.refused",
        ...record,
        trail_seq: trailed?.seq,
      });
      return sc;
    });
  }

  /** The execute_tool span of an action report (./actions), linked to its decision's span. */
  private action(e: ActionEvent): SpanIds {
    // the report was redacted where it was built; the tool name, call id, record references
    // and anything else it carries from the caller pass here again (redacting twice is a no-op)
    const red = new Redaction(this.opts.redactor);
    const record: Record<string, unknown> = red.data(e.record);
    const view = red.request(e.ctx);
    const span = this.opts.tracing.startSpan(
      red.whole(e.name),
      {
        kind: SpanKind.INTERNAL,
        ...startTime(e.startTimeMs ?? e.ctx.startTimeMs),
        attributes: { ...this.httpAttributes(view), ...red.attributes(e.attributes) },
        links: e.link ? [{ context: spanContextOf(e.link) }] : [],
      },
      parentOf(e.ctx),
    );
    if (e.errorMessage !== undefined)
      span.setStatus({ code: SpanStatusCode.ERROR, message: red.text(e.errorMessage) });
    const sc = span.spanContext();
    span.end(e.endTimeMs);
    record.trace_id = sc.traceId;
    record.span_id = sc.spanId;
    const trailed = this.appendTrail("action", record);
    if (this.logDecisions)
      this.logRecord(
        "action",
        JSON.stringify({ time: new Date().toISOString(), ...record }),
        trailed?.seq,
      );
    return sc;
  }

  /** A security event: a span, a log line with its own event name, and a trail record. */
  private security(e: SecurityEvent): SpanIds {
    return this.guarded("a security event", () => {
      const red = new Redaction(this.opts.redactor);
      const redacted = red.data(e.fields);
      const message = red.text(e.message);
      const view = red.request(e.ctx);
      const span = this.spanFor(`toolgate.security ${e.event}`, e.ctx, view, {
        "gen_ai.agent.id": this.opts.agentId,
        "toolgate.security.event": e.event,
        "toolgate.security.details": json(redacted),
      });
      span.setStatus({ code: SpanStatusCode.ERROR, message });
      const sc = span.spanContext();
      span.end();
      const record = {
        event: e.event,
        message,
        ...redacted,
        trace_id: sc.traceId,
        span_id: sc.spanId,
        request_id: view.requestId,
      };
      const trailed = this.appendTrail("security", record);
      this.opts.log.warn(message, {
        ...record,
        event: `security.${e.event}`,
        trail_seq: trailed?.seq,
      });
      return sc;
    });
  }

  /**
   * An approval event (requested, approved, denied, expired, cancelled, used,
   * refused, revoked): a span linked to the decision it answers, a log line
   * `approval.<event>` with the approver's identity, and a trail record.
   */
  private approval(e: ApprovalEvent, link: SpanRef | undefined): SpanIds {
    const { event, fields } = e;
    return this.guarded("an approval event", () => {
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
      for (const [attribute, field] of APPROVAL_ATTRIBUTES) put(attribute, redacted[field]);
      return this.eventRecord("approval", event, redacted, attrs, {
        level: event === "refused" ? "warn" : "info",
        ...(linked ? { link: linked } : {}),
        ...(event === "refused"
          ? { error: typeof redacted.why === "string" ? redacted.why : "refused" }
          : {}),
      });
    });
  }

  /**
   * A containment change (kill switch created or deleted): a span, a log line
   * `containment.<event>` naming who, and a trail record.
   */
  private containment(e: ContainmentEvent): SpanIds {
    const { event } = e;
    return this.guarded("a containment event", () => {
      const redacted = new Redaction(this.opts.redactor).data(e.fields);
      const attrs: Attributes = {
        "gen_ai.agent.id": this.opts.agentId,
        "toolgate.containment.event": event,
        "toolgate.containment.details": json(redacted),
      };
      if (typeof redacted.actor === "string") attrs["toolgate.actor.id"] = redacted.actor;
      const ks = isObject(redacted.killswitch) ? redacted.killswitch : undefined;
      if (typeof ks?.id === "string") attrs["toolgate.killswitch.id"] = ks.id;
      return this.eventRecord("containment", event, redacted, attrs, { level: "warn" });
    });
  }

  /**
   * The span, trail record and log line of an approval or containment event:
   * `toolgate.<kind> <event>` (INTERNAL, a root), then `{event, ...fields,
   * trace_id, span_id}` in the trail and as log line `<kind>.<event>`.
   */
  private eventRecord(
    kind: "approval" | "containment",
    event: string,
    redacted: Record<string, unknown>,
    attributes: Attributes,
    opts: { level: "info" | "warn"; link?: SpanRef; error?: string },
  ): SpanIds {
    const span = this.opts.tracing.startSpan(
      `toolgate.${kind} ${event}`,
      {
        kind: SpanKind.INTERNAL,
        attributes,
        links: opts.link ? [{ context: spanContextOf(opts.link) }] : [],
      },
      ROOT_CONTEXT,
    );
    if (opts.error !== undefined)
      span.setStatus({ code: SpanStatusCode.ERROR, message: opts.error });
    const sc = span.spanContext();
    span.end();
    const record = { event, ...redacted, trace_id: sc.traceId, span_id: sc.spanId };
    const trailed = this.appendTrail(kind, record);
    this.opts.log[opts.level](`${kind} ${event}`, {
      ...record,
      event: `${kind}.${event}`,
      trail_seq: trailed?.seq,
    });
    return sc;
  }

  /** Audit never throws at its caller: a failure is logged and the event has no span. */
  private guarded(what: string, fn: () => SpanIds): SpanIds {
    try {
      return fn();
    } catch (err) {
      this.opts.log.error(`audit failed for ${what}`, {
        event: "audit.error",
        error: (err as Error).message,
      });
      return INVALID_IDS;
    }
  }

  /** A span per bundle activation or rejection (BundleManager). */
  private bundle(e: BundleEvent): SpanIds {
    try {
      const span = this.opts.tracing.startSpan(
        e.name,
        { kind: SpanKind.INTERNAL, attributes: e.attributes },
        ROOT_CONTEXT,
      );
      if (e.error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: e.error });
      span.end();
      return span.spanContext();
    } catch {
      // tracing never gets in the way of policy
      return INVALID_IDS;
    }
  }

  /** A SERVER span for a request that carries several decisions (AuthZEN batch). */
  private requestSpan(e: RequestSpanStart): SpanIds {
    const red = new Redaction(this.opts.redactor);
    const span = this.opts.tracing.startSpan(
      red.whole(e.name),
      {
        kind: SpanKind.SERVER,
        ...startTime(e.ctx.startTimeMs),
        attributes: this.httpAttributes(red.request(e.ctx)),
      },
      parentOf(e.ctx),
    );
    const sc = span.spanContext();
    this.open.set(sc.spanId, span);
    return sc;
  }

  private requestSpanEnd(e: RequestSpanEnd): SpanIds {
    this.open.get(e.span.spanId)?.end();
    this.open.delete(e.span.spanId);
    return e.span;
  }

  // -- trail and log --------------------------------------------------------------------

  /** Appends a record serialised by the caller; a trail failure is logged, never thrown. */
  private appendTrailJson(kind: string, recordJson: string): Trailed | undefined {
    return this.trailed((t) => t.appendJson(kind, recordJson));
  }

  /** Appends to the trail; a trail failure is logged, never thrown. */
  private appendTrail(kind: string, record: Record<string, unknown>): Trailed | undefined {
    return this.trailed((t) => t.append(kind, record));
  }

  private trailed(append: (t: AuditTrail) => Trailed): Trailed | undefined {
    if (this.opts.trail === undefined) return undefined;
    try {
      return append(this.opts.trail);
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
   * the log stream (a per-line field serialiser — winston's format pipeline
   * when this was written — cost more than the decision itself), in the same
   * shape as every other line.
   */
  private logRecord(event: string, recordJson: string, trailSeq: number | undefined): void {
    const head = `{"level":"info","msg":"${event}","event":"${event}"${trailSeq === undefined ? "" : `,"trail_seq":${trailSeq}`}`;
    this.opts.log.line(recordJson === "{}" ? `${head}}` : `${head},${recordJson.slice(1)}`, "info");
  }

  // -- state ----------------------------------------------------------------------------

  /** Runs on the calling thread: there is no worker to lose. */
  workerDown(): string | undefined {
    return undefined;
  }

  trailStats(): TrailStats | undefined {
    return this.opts.trail?.stats();
  }

  backlog(): number {
    return 0;
  }

  /** The trail's lines not yet written (this thread has no other backlog). */
  backlogBytes(): number {
    return this.opts.trail?.backlogBytes() ?? 0;
  }

  overloaded(): string | undefined {
    return this.gate?.overloaded();
  }

  /** Redacts with the shared redactor (for action reports, approvals, ...). */
  redact<T>(value: T, mask?: readonly MaskOp[], seen?: SecretsSeen): T {
    return this.opts.redactor.redact(value, mask, seen);
  }

  async flush(): Promise<void> {
    await Promise.all([this.opts.tracing.flush(), this.opts.trail?.flush(), this.opts.log.flush()]);
  }

  /** Ends the request spans still open, then flushes and closes tracing, trail and log. */
  async close(): Promise<void> {
    this.gate?.recovered();
    for (const span of this.open.values()) span.end();
    this.open.clear();
    await this.opts.tracing.shutdown();
    await this.opts.trail?.close();
    await this.opts.log.flush();
  }
}
