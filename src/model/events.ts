import type { RequestContext, SpanIds, SpanRef } from "./context";
import type { Decision, DecisionNotes, GrantInfo } from "./decision";
import type { DecisionRequest } from "./request";
import type { VerifiedFacts } from "./verified";

/**
 * What audit records, one member per kind: plain data (it crosses to the
 * audit worker thread as JSON), finished by its producer and never changed
 * by audit. Each kind becomes a span, and most a log line and a trail record
 * (src/audit/auditor.ts, one handler per kind).
 */
export type AuditEvent =
  | DecisionEvent
  | RefusalEvent
  | ActionEvent
  | SecurityEvent
  | ApprovalEvent
  | ContainmentEvent
  | BundleEvent
  | RequestSpanStart
  | RequestSpanEnd;

/** Where events go: audit implements it, metrics decorates it (src/metrics meteredSink). */
export interface DecisionSink {
  record(event: AuditEvent): void;
  /**
   * Why a decision's record could not be kept now (audit's backlog is past
   * audit.max_backlog_bytes), or undefined: the Decider then denies
   * `audit_unavailable` (fail closed).
   */
  overloaded?(): string | undefined;
}

/**
 * Span attributes, as OpenTelemetry's Attributes: string keys; values
 * strings, numbers, booleans or arrays of one of them.
 */
export type SpanAttributes = Record<string, unknown>;

/** A finished decision (Decider.decide). */
export interface DecisionEvent {
  kind: "decision";
  decision: Decision;
  request: DecisionRequest;
  verified: VerifiedFacts;
  ctx: RequestContext;
  /** The policy's audit mask ops (validated), applied to the request in the record. */
  mask?: readonly unknown[];
  /** The allow's grant: its id, audience and expiry. */
  grant?: GrantInfo;
  notes?: DecisionNotes;
}

/** A decision request refused before evaluation (agent_mismatch, policy_unavailable, ...). */
export interface RefusalEvent {
  kind: "refusal";
  error: { code: string; message: string; status: number };
  request: DecisionRequest;
  ctx: RequestContext;
}

/** What an allowed tool call did (POST /v1/actions, src/audit/actions.ts): an execute_tool span and its record. */
export interface ActionEvent {
  kind: "action";
  /** The span's name. */
  name: string;
  /** The report's request. */
  ctx: RequestContext;
  /** The action's started_at (ms), if reported: the span's start (else the request's arrival). */
  startTimeMs?: number | undefined;
  /** The action's ended_at (ms), if reported. */
  endTimeMs?: number | undefined;
  attributes: SpanAttributes;
  /** The decision span the action links to. */
  link?: SpanRef | undefined;
  /** Set when the tool reported an error: the span's status message. */
  errorMessage?: string | undefined;
  /** The trail and log record; trace_id and span_id are filled in by audit (in their place). */
  record: Record<string, unknown> & { trace_id: null; span_id: null };
}

/** Something that should not happen (an action without permission, an unauthenticated control call, ...). */
export interface SecurityEvent {
  kind: "security";
  /** Its name: the log line's event is `security.<event>`. */
  event: string;
  message: string;
  fields: Record<string, unknown>;
  ctx: RequestContext;
}

/** An approval's step (requested, approved, denied, expired, cancelled, used, refused, revoked). */
export interface ApprovalEvent {
  kind: "approval";
  event: string;
  /** `decision_id`, when present, names the decision span the event links to. */
  fields: Record<string, unknown>;
}

/** A containment change (kill switch created, deleted, persisted). */
export interface ContainmentEvent {
  kind: "containment";
  event: string;
  fields: Record<string, unknown>;
}

/** A bundle activation or rejection (BundleManager): a span only. */
export interface BundleEvent {
  kind: "bundle";
  name: string;
  attributes: SpanAttributes;
  /** A rejection's message: the span's error status. */
  error?: string | undefined;
}

/** Opens the span of a request that carries several decisions (an AuthZEN batch). */
export interface RequestSpanStart {
  kind: "request_span";
  name: string;
  ctx: RequestContext;
}

/** Ends a request span (the one RequestSpanStart's record returned). */
export interface RequestSpanEnd {
  kind: "request_span_end";
  span: SpanIds;
}
