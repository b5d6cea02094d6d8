import type { SpanIds, SpanRef } from "../model";
import type { AuditedEvent } from "./auditor";
import type { LogLevel } from "../shared/log";
import type { TrailStats } from "../trail";
import type { TracingStats } from "../telemetry/tracing";

/**
 * The messages between the main thread's AuditClient and the audit worker
 * (./worker). Everything here is plain JSON data. Main posts arrays of
 * ToWorker as JSON text, in order, one array per few milliseconds.
 */

export type ToWorker =
  /** An event as recorded (a decision as the Auditor reads it), with what the main thread adds. */
  | {
      t: "event";
      event: AuditedEvent;
      /** The ids its span takes (drawn on the main thread: the ledger and action reports use them). */
      ids: SpanIds;
      /** An approval event's decision span, from the main thread's ledger. */
      link?: SpanRef;
    }
  | { t: "flush"; id: number }
  | { t: "close"; id: number }
  /**
   * The sidecar went idle after activity: run one memory-reducing collection
   * (../metrics/memory releaseMemory). No reply; the worker logs it (debug,
   * audit.memory_released).
   */
  | { t: "release_memory" };

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
  tracing: { maxQueueSize: number; scheduledDelayMs: number; maxConcurrentExports?: number };
  statsIntervalMs: number;
  /**
   * The backlog's counters, shared with the client (BACKLOG_*; set by the
   * client per worker): read at every decision, so kept current without a
   * message.
   */
  backlog?: SharedArrayBuffer;
}

/** Int32 slots of AuditWorkerData.backlog. */
export const BACKLOG_IN_FLIGHT = 0; // characters posted and not yet handled: the client adds, the worker subtracts
export const BACKLOG_TRAIL = 1; // the worker's trail: characters of lines not yet written (the worker stores)
export const BACKLOG_SLOTS = 2;
