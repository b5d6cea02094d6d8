/**
 * AuditClient: audit on a worker thread. The decision path calls it exactly
 * like the in-thread Auditor; it names the span (ids drawn here, so the
 * ledger and action reports know them at once), keeps the ledger, and queues
 * a plain-data message. Queued messages go to the worker every few
 * milliseconds as one JSON text, in order; the worker (./worker) runs a real Auditor and does the
 * redaction, spans, export, trail and decision log lines. The worker's log
 * lines come back in batches and are written by the main thread's logger, so
 * one writer owns the log stream.
 */
import { trace, type Attributes } from "@opentelemetry/api";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import type {
  Decision,
  DecisionMeta,
  DecisionNotes,
  DecisionRequest,
  GrantInfo,
  VerifiedFacts,
} from "../model/decision";
import { toolgateError } from "../errors";
import type { Logger } from "../shared/log";
import { packageRoot } from "../shared/paths";
import { newSpanId, newTraceId, type SpanIds } from "../telemetry/ids";
import {
  DecisionLedger,
  ledgerEntry,
  type ActionAudit,
  type AuditService,
  type RequestSpan,
} from "./auditor";
import type {
  AuditWorkerData,
  FromWorker,
  PlainSpanContext,
  PlainTrace,
  ToWorker,
  WireMeta,
  WorkerStats,
} from "./protocol";
import type { MaskOp, Redactor } from "../redaction/redact";
import type { TrailStats } from "../trail/trail";
import { extractTraceContext, type TracingStats } from "../telemetry/tracing";

/** Messages kept for a worker that is (re)starting; beyond this they are dropped and counted. */
const MAX_QUEUED = 100_000;
const RESTART_DELAY_MS = 1000;
const BATCH_DELAY_MS = 5;
const CLOSE_TIMEOUT_MS = 15_000;
const INVALID_IDS: SpanIds = {
  traceId: "00000000000000000000000000000000",
  spanId: "0000000000000000",
};

/** The built worker: next to this file in dist/, or dist/ itself when running from src/ (ts-jest). */
export function auditWorkerFile(): string {
  const here = join(__dirname, "worker.js");
  if (existsSync(here)) return here;
  const built = join(packageRoot(), "dist", "src", "audit", "worker.js");
  if (existsSync(built)) return built;
  throw toolgateError(
    "config_invalid",
    `the audit worker ${built} is missing. Fix: run npm run build, or set audit.worker: false`,
  );
}

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
}

export interface AuditClientOptions {
  data: AuditWorkerData;
  log: Logger;
  /** Redacts on the main thread (action reports, approval display copies): same key as the worker's. */
  redactor: Redactor;
}

export class AuditClient implements AuditService {
  readonly ledger = new DecisionLedger();
  private worker: Worker | undefined;
  private queue: ToWorker[] = [];
  private scheduled = false;
  private tracingEnabled = true;
  private stats: WorkerStats;
  private nextId = 1;
  private readonly waiters = new Map<number, Waiter>();
  private closing: Promise<void> | undefined;
  private posted = 0;
  private dropped = 0;
  private restarts = 0;

  private constructor(private readonly opts: AuditClientOptions) {
    this.stats = {
      tracing: {
        enabled: false,
        queued: 0,
        exported: 0,
        dropped: 0,
        exportFailures: 0,
        endpoint: null,
      },
      trail: undefined,
      handled: 0,
    };
  }

  /** Starts the worker; rejects with the worker's own error (e.g. config_invalid) if it cannot start. */
  static async start(opts: AuditClientOptions): Promise<AuditClient> {
    const client = new AuditClient(opts);
    await client.spawn();
    return client;
  }

  private spawn(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const worker = new Worker(auditWorkerFile(), { workerData: this.opts.data });
      let ready = false;
      worker.on("message", (m: FromWorker) => {
        switch (m.t) {
          case "ready":
            ready = true;
            this.worker = worker;
            this.tracingEnabled = m.tracingEnabled;
            this.stats = m.stats;
            this.posted = 0;
            resolve();
            this.send();
            return;
          case "failed":
            reject(toolgateError(m.code as "config_invalid", m.message));
            void worker.terminate();
            return;
          case "stats":
            this.stats = m.stats;
            return;
          case "log":
            this.opts.log.raw(m.text);
            return;
          case "flushed":
          case "closed":
            this.stats = m.stats;
            this.settle(
              m.id,
              m.error === undefined
                ? undefined
                : typeof m.error === "string"
                  ? toolgateError("audit_write_failed", m.error)
                  : toolgateError(m.error.code as "audit_write_failed", m.error.message),
            );
            return;
        }
      });
      worker.on("error", (e: unknown) => {
        const err = e instanceof Error ? e : new Error(String(e));
        this.opts.log.error("the audit worker failed", {
          event: "audit.worker_error",
          error: err.message,
        });
        if (!ready) reject(err);
      });
      worker.on("exit", (code) => {
        if (this.worker === worker) this.worker = undefined;
        for (const w of this.waiters.values())
          w.reject(toolgateError("audit_write_failed", `the audit worker exited (code ${code})`));
        this.waiters.clear();
        if (!ready || this.closing) return;
        // Audit must go on: start a new worker (the trail resumes its chain from disk).
        const lost = Math.max(0, this.posted - this.stats.handled);
        this.restarts++;
        this.opts.log.error("the audit worker stopped; starting a new one", {
          event: "audit.worker_restart",
          exit_code: code,
          records_maybe_lost: lost,
          restarts: this.restarts,
        });
        this.restart(1);
      });
    });
  }

  /** Starts a new worker after a delay, retrying with backoff (1 s, 2 s, ... 30 s) until one runs. */
  private restart(attempt: number): void {
    const delay = Math.min(RESTART_DELAY_MS * 2 ** (attempt - 1), 30_000);
    setTimeout(() => {
      if (this.closing) return;
      this.spawn().catch((e: unknown) => {
        this.opts.log.error("the audit worker could not be restarted; trying again", {
          event: "audit.worker_error",
          attempt,
          error: (e as Error).message,
        });
        this.restart(attempt + 1);
      });
    }, delay).unref();
  }

  private post(m: ToWorker): void {
    if (this.queue.length >= MAX_QUEUED) {
      if (this.dropped++ === 0)
        this.opts.log.error("the audit worker is not keeping up; audit records are dropped", {
          event: "audit.worker_backlog",
          queued: this.queue.length,
        });
      return;
    }
    this.queue.push(m);
    if (!this.scheduled) {
      // Batched by time: one message (and one wake-up of the worker) per few ms, not per decision.
      this.scheduled = true;
      setTimeout(() => this.send(), BATCH_DELAY_MS).unref();
    }
  }

  /** Hands the queue to the worker in one message. */
  private send(): void {
    this.scheduled = false;
    const worker = this.worker;
    if (worker === undefined || this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    // JSON text: serialising plain records to a string and copying it is
    // several times cheaper for this thread than structured-cloning them.
    let text: string | undefined;
    try {
      text = JSON.stringify(batch);
    } catch {
      text = undefined; // e.g. a BigInt somewhere: send one by one, skipping what cannot go
    }
    if (text !== undefined) worker.postMessage(text);
    else {
      for (const m of batch) {
        try {
          worker.postMessage(JSON.stringify([m]));
        } catch (e) {
          this.opts.log.error("an audit record could not be handed to the audit worker", {
            event: "audit.error",
            kind: m.t,
            error: (e as Error).message,
          });
        }
      }
    }
    this.posted += batch.length;
    if (this.dropped > 0) {
      this.opts.log.error("audit records were dropped while the audit worker was behind", {
        event: "audit.worker_backlog",
        dropped: this.dropped,
      });
      this.dropped = 0;
    }
  }

  /** Resolves (or rejects with `error`) the flush or close waiting for reply `id`. */
  private settle(id: number, error: Error | undefined): void {
    const w = this.waiters.get(id);
    this.waiters.delete(id);
    if (error === undefined) w?.resolve();
    else w?.reject(error);
  }

  /** Sends what is queued and then `make(id)`; settles when the worker replies to `id`. */
  private request(make: (id: number) => ToWorker): Promise<void> {
    if (this.worker === undefined)
      return Promise.reject(toolgateError("audit_write_failed", "the audit worker is not running"));
    const id = this.nextId++;
    const done = new Promise<void>((resolve, reject) => this.waiters.set(id, { resolve, reject }));
    this.queue.push(make(id));
    this.send();
    return done;
  }

  // -- trace context ------------------------------------------------------------------

  traceMeta(headers: Record<string, string | string[] | undefined>): PlainTrace {
    if (headers.traceparent === undefined) return {};
    const sc = trace.getSpanContext(extractTraceContext(headers));
    if (sc === undefined || !trace.isSpanContextValid(sc)) return {};
    const parent: PlainSpanContext = {
      traceId: sc.traceId,
      spanId: sc.spanId,
      traceFlags: sc.traceFlags,
      isRemote: true,
    };
    const state = sc.traceState?.serialize();
    if (state) parent.traceState = state;
    return { parent };
  }

  /** The ids the worker's span will have: what its tracer would pick given the parent. */
  private idsFor(meta: DecisionMeta, requestScoped = true): SpanIds {
    const t = meta.trace as PlainTrace | undefined;
    const parent = (requestScoped ? t?.requestSpan : undefined) ?? t?.parent;
    // a disabled SDK's no-op tracer hands back the parent's context, or the invalid one
    if (!this.tracingEnabled)
      return parent ? { traceId: parent.traceId, spanId: parent.spanId } : INVALID_IDS;
    return { traceId: parent?.traceId ?? newTraceId(), spanId: newSpanId() };
  }

  private wire(meta: DecisionMeta): WireMeta {
    return meta as WireMeta;
  }

  startRequestSpan(meta: DecisionMeta, name: string): RequestSpan {
    const ids = this.idsFor(meta, false);
    this.post({ t: "reqspan.start", ids, meta: this.wire(meta), name });
    const t = meta.trace as PlainTrace | undefined;
    if (t !== undefined && this.tracingEnabled)
      t.requestSpan = { traceId: ids.traceId, spanId: ids.spanId, traceFlags: 1 };
    return { end: () => this.post({ t: "reqspan.end", spanId: ids.spanId }) };
  }

  // -- DecisionSink ---------------------------------------------------------------------

  decided(
    d: Decision,
    req: DecisionRequest,
    verified: VerifiedFacts | undefined,
    meta: DecisionMeta,
    mask: readonly unknown[] | undefined,
    grant?: GrantInfo,
    notes?: DecisionNotes,
  ): void {
    const ids = this.idsFor(meta);
    this.post({ t: "decided", ids, d, req, verified, meta: this.wire(meta), mask, grant, notes });
    this.ledger.add(
      ledgerEntry(d, req, this.opts.data.agentId, { ...ids, traceFlags: 1, isRemote: false }),
    );
  }

  refused(
    err: { code: string; message: string; status: number },
    req: DecisionRequest,
    meta: DecisionMeta,
  ): void {
    this.post({
      t: "refused",
      err: { code: err.code, message: err.message, status: err.status },
      req,
      meta: this.wire(meta),
    });
  }

  // -- events -----------------------------------------------------------------------------

  securityEvent(
    event: string,
    message: string,
    fields: Record<string, unknown>,
    meta: DecisionMeta,
  ): void {
    this.post({ t: "security", event, message, fields, meta: this.wire(meta) });
  }

  approvalEvent(event: string, fields: Record<string, unknown>): void {
    // the ledger is here, not in the worker: name the decision span the event links to
    const id = typeof fields.decision_id === "string" ? fields.decision_id : undefined;
    const sc = id === undefined ? undefined : this.ledger.get(id)?.spanContext;
    const link = sc
      ? { traceId: sc.traceId, spanId: sc.spanId, traceFlags: sc.traceFlags }
      : undefined;
    this.post({ t: "approval", event, fields, link });
  }

  containmentEvent(event: string, fields: Record<string, unknown>): void {
    this.post({ t: "containment", event, fields });
  }

  bundleSpan(name: string, attributes: Attributes, error?: string): void {
    this.post({ t: "bundle", name, attributes, error });
  }

  action(a: ActionAudit): SpanIds {
    const ids = this.idsFor(a.meta, false);
    const link: PlainSpanContext | undefined = a.link
      ? { traceId: a.link.traceId, spanId: a.link.spanId, traceFlags: a.link.traceFlags }
      : undefined;
    this.post({ t: "action", ids, a: { ...a, meta: this.wire(a.meta), link } });
    return ids;
  }

  redact<T>(value: T, mask?: readonly MaskOp[]): T {
    return this.opts.redactor.redact(value, mask);
  }

  // -- state --------------------------------------------------------------------------------

  /** Audit messages not yet handled by the worker (as of its last report, every 250 ms). */
  backlog(): number {
    return Math.max(0, this.posted - this.stats.handled) + this.queue.length;
  }

  /** The worker's tracing counters, as of its last report (every 250 ms, and on flush). */
  tracingStats(): TracingStats {
    return this.stats.tracing;
  }

  trailStats(): TrailStats | undefined {
    return this.stats.trail;
  }

  /** Everything recorded before the call is exported (or dropped and counted), written and logged. */
  flush(): Promise<void> {
    return this.request((id) => ({ t: "flush", id }));
  }

  /** Flushes and stops the worker; later calls are ignored. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const worker = this.worker;
    if (worker === undefined) return;
    const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), CLOSE_TIMEOUT_MS);
    });
    try {
      const closed = this.request((id) => ({ t: "close", id }));
      const outcome = await Promise.race([closed.then(() => exited), timeout]);
      if (outcome === "timeout") {
        this.opts.log.error("the audit worker did not finish within the close timeout", {
          event: "audit.worker_error",
          timeout_ms: CLOSE_TIMEOUT_MS,
        });
      }
    } finally {
      clearTimeout(timer);
      this.worker = undefined;
      await worker.terminate();
    }
  }
}
