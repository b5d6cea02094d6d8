/**
 * The audit worker: an Auditor on its own thread. The main thread's
 * AuditClient posts each AuditEvent as recorded, with the ids of its span;
 * this thread redacts, builds and exports the spans, hashes and
 * writes the trail and writes the decision log lines, so none of that is on
 * the decision path. Entry point of a worker_threads Worker; see ./client.
 */
import { Writable } from "node:stream";
import { parentPort, workerData } from "node:worker_threads";
import { isToolgateError } from "../errors";
import { hasOwn } from "../shared/guards";
import { createLogger } from "../shared/log";
import { ForcedIdGenerator } from "../telemetry/ids";
import { Auditor, DecisionLedger } from "./auditor";
import {
  BACKLOG_IN_FLIGHT,
  BACKLOG_TRAIL,
  type AuditWorkerData,
  type FromWorker,
  type ToWorker,
  type WorkerStats,
} from "./protocol";
import { Redactor } from "../redaction/redact";
import { AuditTrail } from "../trail";
import { Tracing } from "../telemetry/tracing";
import { releaseMemory } from "../metrics/memory";

if (parentPort === null) throw new Error("src/audit/worker is a worker_threads entry point");
// Defence in depth, as bin/toolgate.js does for the main thread (a worker has
// its own realm): without the Object.prototype.__proto__ accessor, writing a
// key "__proto__" creates an own property instead of swapping a prototype.
if (hasOwn(Object.prototype, "__proto__")) {
  delete (Object.prototype as { __proto__?: unknown }).__proto__;
}
const port = parentPort;
const data = workerData as AuditWorkerData;
const send = (m: FromWorker): void => port.postMessage(m);
const mb = (bytes: number): number => Math.round(bytes / 104857.6) / 10;

function start(): void {
  // Lines go to the main thread's logger in batches (one message per write).
  const log = createLogger(
    data.logLevel,
    new Writable({
      decodeStrings: false,
      write(chunk: string | Buffer, _enc, cb) {
        send({ t: "log", text: typeof chunk === "string" ? chunk : chunk.toString("utf8") });
        cb();
      },
    }),
  );
  const ids = new ForcedIdGenerator();
  let tracing: Tracing;
  let trail: AuditTrail | undefined;
  try {
    tracing = new Tracing({
      env: data.env,
      log,
      serviceVersion: data.serviceVersion,
      maxQueueSize: data.tracing.maxQueueSize,
      scheduledDelayMs: data.tracing.scheduledDelayMs,
      ...(data.tracing.maxConcurrentExports !== undefined
        ? { maxConcurrentExports: data.tracing.maxConcurrentExports }
        : {}),
      idGenerator: ids,
    });
    trail = data.trail
      ? AuditTrail.open({
          dir: data.trail.dir,
          maxFileBytes: data.trail.maxFileBytes,
          flushIntervalMs: 50,
          fsyncIntervalMs: 1000,
          onError: (e) =>
            log.error("audit trail write failed", { event: "audit.trail_error", error: e.message }),
        })
      : undefined;
  } catch (e) {
    const err = e as Error;
    send({
      t: "failed",
      code: isToolgateError(err) ? err.code : "internal_error",
      message: err.message,
    });
    return;
  }
  const auditor = new Auditor({
    tracing,
    log,
    redactor: new Redactor({
      hmacKey: Buffer.from(data.redaction.key),
      keyId: data.redaction.keyId,
      mode: data.redaction.mode,
    }),
    trail,
    agentId: data.agentId,
    logDecisions: data.logDecisions,
    // the main thread keeps the ledger (action reports, approval links); none needed here
    ledger: new DecisionLedger(1),
  });

  let handled = 0;
  const stats = (): WorkerStats => ({
    tracing: tracing.stats(),
    trail: trail?.stats(),
    handled,
  });

  const backlog = data.backlog === undefined ? undefined : new Int32Array(data.backlog);
  /** The trail's unwritten lines, for the client's bound (after each batch, each flush and each report). */
  const trailBacklog = (): void => {
    if (backlog !== undefined)
      Atomics.store(backlog, BACKLOG_TRAIL, Math.min(trail?.backlogBytes() ?? 0, 0x7fffffff));
  };

  const handle = (m: ToWorker): void => {
    switch (m.t) {
      case "event":
        ids.use(m.ids, () => auditor.record(m.event, m.link));
        return;
      case "flush":
        auditor.flush().then(
          () => {
            trailBacklog();
            send({ t: "flushed", id: m.id, stats: stats() });
          },
          (e: unknown) =>
            send({ t: "flushed", id: m.id, stats: stats(), error: (e as Error).message }),
        );
        return;
      case "release_memory": {
        const r = releaseMemory();
        if (r !== undefined)
          log.debug("audit worker memory released", {
            event: "audit.memory_released",
            heap_mb: [mb(r.heapBefore), mb(r.heapAfter)],
            gc_ms: Math.round(r.ms),
          });
        return;
      }
      case "close": {
        clearInterval(timer);
        auditor.close().then(
          () => {
            send({ t: "closed", id: m.id, stats: stats() });
            port.close();
          },
          (e: unknown) => {
            const err = e as Error;
            send({
              t: "closed",
              id: m.id,
              stats: stats(),
              error: {
                code: isToolgateError(err) ? err.code : "internal_error",
                message: err.message,
              },
            });
            port.close();
          },
        );
        return;
      }
    }
  };

  port.on("message", (text: string) => {
    const batch = JSON.parse(text) as ToWorker[];
    for (const m of batch) {
      handled++;
      try {
        handle(m);
      } catch (e) {
        // the Auditor catches its own failures; this is the last line of defence
        log.error("audit worker failed to handle a message", {
          event: "audit.error",
          kind: m.t === "event" ? m.event.kind : m.t,
          error: (e as Error).message,
        });
      }
    }
    if (backlog !== undefined) {
      trailBacklog(); // what this batch added to the trail's buffer, before it leaves the in-flight count
      Atomics.sub(backlog, BACKLOG_IN_FLIGHT, text.length);
    }
  });
  const timer = setInterval(() => {
    trailBacklog();
    send({ t: "stats", stats: stats() });
  }, data.statsIntervalMs);
  timer.unref();
  // start-up is done: give back the young generation it grew and its garbage (idle RSS, #20)
  releaseMemory();
  send({ t: "ready", tracingEnabled: tracing.enabled, stats: stats() });
}

start();
