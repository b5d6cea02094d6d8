import type { Attributes } from "@opentelemetry/api";
import type {
  Decision,
  DecisionMeta,
  DecisionNotes,
  DecisionRequest,
  GrantInfo,
  VerifiedFacts,
} from "../model/decision";
import type { LogLevel } from "../shared/log";
import type { SpanIds } from "../telemetry/ids";
import type { ActionAudit } from "./auditor";
import type { TrailStats } from "../trail/trail";
import type { TracingStats } from "../telemetry/tracing";

/**
 * The messages between the main thread's AuditClient and the audit worker
 * (./worker). Everything here is plain JSON data. Main posts arrays of
 * ToWorker as JSON text, in order, one array per event-loop turn.
 */

/** A span context as plain data; traceState is its W3C tracestate text. */
export interface PlainSpanContext {
  traceId: string;
  spanId: string;
  traceFlags: number;
  isRemote?: boolean;
  traceState?: string;
}

/** DecisionMeta.trace under the AuditClient. */
export interface PlainTrace {
  /** The caller's traceparent/tracestate, when valid. */
  parent?: PlainSpanContext;
  /** The request span of an AuthZEN batch: item spans are its children. */
  requestSpan?: PlainSpanContext;
}

export type WireMeta = Omit<DecisionMeta, "trace"> & { trace?: PlainTrace };

export type ToWorker =
  | {
      t: "decided";
      ids: SpanIds;
      d: Decision;
      req: DecisionRequest;
      verified: VerifiedFacts | undefined;
      meta: WireMeta;
      mask: readonly unknown[] | undefined;
      grant: GrantInfo | undefined;
      notes: DecisionNotes | undefined;
    }
  | {
      t: "refused";
      err: { code: string; message: string; status: number };
      req: DecisionRequest;
      meta: WireMeta;
    }
  | {
      t: "security";
      event: string;
      message: string;
      fields: Record<string, unknown>;
      meta: WireMeta;
    }
  | {
      t: "approval";
      event: string;
      fields: Record<string, unknown>;
      /** The decision's span, from the main thread's ledger. */
      link: PlainSpanContext | undefined;
    }
  | { t: "containment"; event: string; fields: Record<string, unknown> }
  | { t: "bundle"; name: string; attributes: Attributes; error: string | undefined }
  | {
      t: "action";
      ids: SpanIds;
      a: Omit<ActionAudit, "meta" | "link"> & {
        meta: WireMeta;
        link: PlainSpanContext | undefined;
      };
    }
  | { t: "reqspan.start"; ids: SpanIds; meta: WireMeta; name: string }
  | { t: "reqspan.end"; spanId: string }
  | { t: "flush"; id: number }
  | { t: "close"; id: number };

export interface WorkerStats {
  tracing: TracingStats;
  trail: TrailStats | undefined;
  /** Messages handled since the worker started. */
  handled: number;
}

export type FromWorker =
  | { t: "ready"; tracingEnabled: boolean; stats: WorkerStats }
  | { t: "failed"; code: string; message: string }
  | { t: "stats"; stats: WorkerStats }
  /** Log lines written by the worker's logger, for the main thread's log stream. */
  | { t: "log"; text: string }
  | { t: "flushed"; id: number; stats: WorkerStats; error?: string }
  | { t: "closed"; id: number; stats: WorkerStats; error?: { code: string; message: string } };

/** What the worker is built from (workerData). */
export interface AuditWorkerData {
  /** The OTEL_* variables the worker's Tracing reads. */
  env: Record<string, string | undefined>;
  serviceVersion: string;
  logLevel: LogLevel;
  agentId: string;
  logDecisions: boolean;
  redaction: { key: Uint8Array; keyId: string; mode: "hash" | "erase" };
  trail: { dir: string; maxFileBytes: number } | null;
  tracing: { maxQueueSize: number; scheduledDelayMs: number };
  statsIntervalMs: number;
}
