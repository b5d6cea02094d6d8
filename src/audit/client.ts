/**
 * AuditClient: audit on a worker thread. The decision path calls it exactly
 * like the in-thread Auditor; it names each event's span (ids drawn here, so
 * the ledger and action reports know them at once), keeps the ledger, and
 * queues the event, plain data, as the Auditor reads it (forWorker: a decision
 * without its grant token). Queued messages go to the worker every few
 * milliseconds as one JSON text, in order; the worker (./worker) runs a real Auditor and does the
 * redaction, spans, export, trail and decision log lines. The worker's log
 * lines come back in batches and are written by the main thread's logger, so
 * one writer owns the log stream.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { getHeapStatistics } from "node:v8";
import { Worker, type ResourceLimits } from "node:worker_threads";
import type { AuditEvent } from "../model";
import { toolgateError } from "../errors";
import type { Logger } from "../shared/log";
import { packageRoot } from "../shared/paths";
import { newSpanId, newTraceId, type SpanIds } from "../telemetry/ids";
import {
  DecisionLedger,
  ledgerEntry,
  type AuditedDecision,
  type AuditedEvent,
  type AuditService,
} from "./auditor";
import { BacklogGate } from "./backlog";
import {
  BACKLOG_IN_FLIGHT,
  BACKLOG_SLOTS,
  BACKLOG_TRAIL,
  type AuditWorkerData,
  type FromWorker,
  type ToWorker,
  type WorkerStats,
} from "./protocol";
import type { MaskOp, Redactor, SecretsSeen } from "../redaction/redact";
import type { TrailStats } from "../trail";
import type { TracingStats } from "../telemetry/tracing";

/** Messages waiting for the next batch at most (a few ms' worth); beyond this they are dropped and counted. */
const MAX_QUEUED = 100_000;
const RESTART_DELAY_MS = 1000;
const BATCH_DELAY_MS = 5;
/** Messages per batch at most: a longer queue (a worker that was restarting) goes in several, a turn apart. */
const MAX_BATCH = 2048;
const CLOSE_TIMEOUT_MS = 15_000;
const INVALID_IDS: SpanIds = {
  traceId: "00000000000000000000000000000000",
  spanId: "0000000000000000",
};

/**
 * What the worker is sent of an event: a decision without what audit never
 * reads (AuditedDecision: the grant token, the verified facts but the
 * subject's method, the caller's principal); other events as they are.
 */
export function forWorker(event: AuditEvent): AuditedEvent {
  if (event.kind !== "decision") return event;
  // eslint-disable-next-line @typescript-eslint/no-unused-vars -- left out on purpose
  const { grant: _token, ...decision } = event.decision;
  let ctx = event.ctx;
  if (ctx.principal !== undefined) {
    // eslint-disable-next-line @typescript-eslint/no-unused-vars -- left out on purpose
    const { principal: _principal, ...rest } = ctx;
    ctx = rest;
  }
  const m: AuditedDecision = {
    kind: "decision",
    decision,
    request: event.request,
    verified: { subject: { method: event.verified.subject.method } },
    ctx,
  };
  if (event.mask !== undefined) m.mask = event.mask;
  if (event.grant !== undefined) m.grant = event.grant;
  if (event.notes !== undefined) m.notes = event.notes;
  return m;
}

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

/** The audit worker's young generation at most (MB), where V8 would size it from a large host. */
export const WORKER_YOUNG_GENERATION_MB = 16;

/**
 * The audit worker's resource limits. V8 sizes an isolate's young generation
 * from the heap limit, which on a host with no memory limit follows the
 * host's memory: there the worker's grew to ~105 MB under sustained load, all
 * of it resident, for nothing (#20: capped at 16 MB, peak RSS ~460 → ~390 MB
 * under `memload`, throughput unchanged or better in httpab A/Bs). Under a
 * memory limit (a container with a cgroup limit, or --max-old-space-size
 * below 1 GiB) V8's own choice is already smaller, and a cap could only raise
 * it: there nothing is set.
 */
export function workerResourceLimits(
  heapSizeLimit: number = getHeapStatistics().heap_size_limit,
): ResourceLimits | undefined {
  return heapSizeLimit > 1024 * 1024 * 1024
    ? { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB }
    : undefined;
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
  /** audit.max_backlog_bytes: records not yet written past it deny decisions (./backlog). */
  maxBacklogBytes: number;
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
  /** The running worker's backlog counters (protocol BACKLOG_*), shared with it. */
  private counters: Int32Array | undefined;
  /** Batches serialised while no worker runs, in order, for the next one; their messages and characters. */
  private parked: string[] = [];
  private parkedCount = 0;
  private parkedBytes = 0;
  private readonly gate: BacklogGate;
  private dropped = 0;
  private restarts = 0;
  /** Why the worker is gone, from its exit (or a failed restart) until a new one is ready. */
  private down: string | undefined;

  private constructor(private readonly opts: AuditClientOptions) {
    this.gate = new BacklogGate(opts.maxBacklogBytes, () => this.backlogBytes(), opts.log);
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
      const resourceLimits = workerResourceLimits();
      const counters = new Int32Array(new SharedArrayBuffer(BACKLOG_SLOTS * 4));
      const workerData: AuditWorkerData = { ...this.opts.data, backlog: counters.buffer };
      const worker = new Worker(auditWorkerFile(), {
        workerData,
        ...(resourceLimits !== undefined ? { resourceLimits } : {}),
      });
      let ready = false;
      worker.on("message", (m: FromWorker) => {
        switch (m.t) {
          case "ready":
            ready = true;
            this.worker = worker;
            this.counters = counters;
            this.down = undefined;
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
        this.down = `the audit worker stopped; starting a new one (exit code ${code})`;
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
        this.down = `the audit worker could not be restarted; trying again: ${(e as Error).message}`;
        this.opts.log.error("the audit worker could not be restarted; trying again", {
          event: "audit.worker_error",
          attempt,
          error: (e as Error).message,
        });
        this.restart(attempt + 1);
      });
    }, delay).unref();
  }

  /** The running worker's resource limits as V8 applied them (its young generation among them). */
  workerLimits(): ResourceLimits | undefined {
    return this.worker?.resourceLimits;
  }

  workerDown(): string | undefined {
    return this.closing !== undefined ? undefined : this.down;
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

  /**
   * Hands the queue to the worker in one message (MAX_BATCH at most; the
   * rest a turn later), in order; what was parked first. With no worker
   * running, the batch is serialised all the same and parked for the next
   * one: compact text whose size the backlog's bound counts.
   */
  private send(): void {
    this.scheduled = false;
    const worker = this.worker;
    if (worker !== undefined && this.parked.length > 0) {
      for (const text of this.parked) worker.postMessage(text);
      if (this.counters !== undefined)
        Atomics.add(this.counters, BACKLOG_IN_FLIGHT, this.parkedBytes);
      this.posted += this.parkedCount;
      this.parked = [];
      this.parkedCount = this.parkedBytes = 0;
    }
    if (this.queue.length === 0) return;
    let batch = this.queue;
    if (batch.length <= MAX_BATCH) this.queue = [];
    else {
      // the rest in the next turn: no text of 100,000 records, no long stall on this thread
      batch = this.queue.splice(0, MAX_BATCH);
      this.scheduled = true;
      setImmediate(() => this.send());
    }
    // JSON text: serialising plain records to a string and copying it is
    // several times cheaper for this thread than structured-cloning them.
    let text: string | undefined;
    try {
      text = JSON.stringify(batch);
    } catch {
      text = undefined; // e.g. a BigInt somewhere: send one by one, skipping what cannot go
    }
    const hand = (t: string): void => {
      if (worker === undefined) {
        this.parked.push(t);
        this.parkedBytes += t.length;
      } else {
        if (this.counters !== undefined) Atomics.add(this.counters, BACKLOG_IN_FLIGHT, t.length);
        worker.postMessage(t);
      }
    };
    if (text !== undefined) hand(text);
    else {
      for (const m of batch) {
        try {
          hand(JSON.stringify([m]));
        } catch (e) {
          this.opts.log.error("an audit record could not be handed to the audit worker", {
            event: "audit.error",
            kind: m.t === "event" ? m.event.kind : m.t,
            error: (e as Error).message,
          });
        }
      }
    }
    if (worker === undefined) this.parkedCount += batch.length;
    else this.posted += batch.length;
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

  // -- events ---------------------------------------------------------------------------

  /**
   * Queues an event for the worker with the ids its span will have; a
   * decision goes into the ledger here, and an approval event is told the
   * decision span it links to (the ledger is on this thread).
   */
  record(event: AuditEvent): SpanIds {
    if (!this.gate.admit(event)) return INVALID_IDS;
    const ids = this.idsFor(event);
    const m: ToWorker = { t: "event", event: forWorker(event), ids };
    if (event.kind === "decision") {
      const sc = { ...ids, traceFlags: 1 };
      this.ledger.add(ledgerEntry(event.decision, event.request, this.opts.data.agentId, sc));
    } else if (event.kind === "approval") {
      const id = event.fields.decision_id;
      const link = typeof id === "string" ? this.ledger.get(id)?.spanContext : undefined;
      if (link !== undefined) m.link = link;
    }
    this.post(m);
    return ids;
  }

  /** The ids the worker's span will have: what its tracer would pick given the parent. */
  private idsFor(event: AuditEvent): SpanIds {
    if (event.kind === "request_span_end") return event.span;
    // the batch's request span, or the caller's trace parent
    const ctx = "ctx" in event ? event.ctx : undefined;
    const parent = ctx?.requestSpan ?? ctx?.traceParent;
    // a disabled SDK's no-op tracer hands back the parent's context, or the invalid one
    if (!this.tracingEnabled)
      return parent ? { traceId: parent.traceId, spanId: parent.spanId } : INVALID_IDS;
    return { traceId: parent?.traceId ?? newTraceId(), spanId: newSpanId() };
  }

  redact<T>(value: T, mask?: readonly MaskOp[], seen?: SecretsSeen): T {
    return this.opts.redactor.redact(value, mask, seen);
  }

  // -- state --------------------------------------------------------------------------------

  /** Audit messages not yet handled by the worker (as of its last report, every 250 ms). */
  backlog(): number {
    return Math.max(0, this.posted - this.stats.handled) + this.queue.length + this.parkedCount;
  }

  /**
   * Records not yet written, in characters of JSON text: parked for the
   * next worker; and, while one runs, posted to it and not yet handled plus
   * its trail's unwritten lines (shared counters the worker keeps current
   * after each batch; the trail's writes are seen within its report
   * interval). What the queue holds between batches (a few ms) is not counted.
   */
  backlogBytes(): number {
    const c = this.worker === undefined ? undefined : this.counters;
    const running =
      c === undefined
        ? 0
        : Math.max(0, Atomics.load(c, BACKLOG_IN_FLIGHT)) + Atomics.load(c, BACKLOG_TRAIL);
    return this.parkedBytes + running;
  }

  overloaded(): string | undefined {
    return this.gate.overloaded();
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

  /**
   * Asks the worker to run one memory-reducing collection of its heap (the
   * sidecar went idle after activity; ../metrics/memory IdleMemoryRelease),
   * after what is queued. No reply: the worker logs it at debug
   * (audit.memory_released). Nothing while no worker runs or when closing.
   */
  releaseMemory(): void {
    if (this.worker === undefined || this.closing !== undefined) return;
    this.queue.push({ t: "release_memory" });
    this.send();
  }

  /** Flushes and stops the worker; later calls are ignored. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.gate.recovered();
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
