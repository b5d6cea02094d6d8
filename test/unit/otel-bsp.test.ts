/**
 * OTEL_BSP_* (the spec's batch span processor variables) over toolgate's own
 * tracing settings, and the processor keeping to them: queue bound, batch
 * size, schedule delay, export timeout; a full batch leaving at once, and the
 * bound on exports in flight.
 */
import { ROOT_CONTEXT, SpanKind } from "@opentelemetry/api";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace";
import {
  BoundedBatchProcessor,
  Tracing,
  batchSettingsFromEnv,
  type BatchSettings,
} from "../../src/telemetry/tracing";
import { silentLogger } from "../../src/shared/log";
import { compileConfig } from "../../src/config";
import { captureLogger } from "../helpers/capture";

const given: BatchSettings = {
  maxQueueSize: 8192,
  scheduledDelayMs: 500,
  maxExportBatchSize: 512,
  exportTimeoutMs: 30_000,
  maxConcurrentExports: 2,
};

describe("batchSettingsFromEnv", () => {
  test("unset: toolgate's settings", () => {
    expect(batchSettingsFromEnv({}, silentLogger, given)).toEqual(given);
  });

  test("OTEL_BSP_* win over tracing.max_queue_size / scheduled_delay_ms", () => {
    expect(
      batchSettingsFromEnv(
        {
          OTEL_BSP_SCHEDULE_DELAY: "0",
          OTEL_BSP_EXPORT_TIMEOUT: "1500",
          OTEL_BSP_MAX_QUEUE_SIZE: " 100 ",
          OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "20",
        },
        silentLogger,
        given,
      ),
    ).toEqual({
      maxQueueSize: 100,
      scheduledDelayMs: 0,
      maxExportBatchSize: 20,
      exportTimeoutMs: 1500,
      maxConcurrentExports: 2,
    });
  });

  test.each([
    ["OTEL_BSP_MAX_QUEUE_SIZE", "0"],
    ["OTEL_BSP_MAX_QUEUE_SIZE", "lots"],
    ["OTEL_BSP_SCHEDULE_DELAY", "-5"],
    ["OTEL_BSP_EXPORT_TIMEOUT", "1.5"],
    ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1e3"],
  ])("%s=%s is ignored with a warning", (name, value) => {
    const logs = captureLogger();
    expect(batchSettingsFromEnv({ [name]: value }, logs.log, given)).toEqual(given);
    expect(logs.lines().some((l) => l.event === "telemetry.bsp_invalid")).toBe(true);
  });

  test("a batch larger than the queue is cut to the queue", () => {
    const s = batchSettingsFromEnv({ OTEL_BSP_MAX_QUEUE_SIZE: "64" }, silentLogger, given);
    expect(s.maxExportBatchSize).toBe(64);
  });
});

/** An in-memory exporter that records the size of each export call. */
class CountingExporter extends InMemorySpanExporter {
  readonly batches: number[] = [];
  override export(spans: ReadableSpan[], cb: (r: ExportResult) => void): void {
    this.batches.push(spans.length);
    super.export(spans, cb);
  }
}

describe("the processor keeps to OTEL_BSP_*", () => {
  test("queue bound and batch size", async () => {
    const exporter = new CountingExporter();
    const tracing = new Tracing({
      env: {
        OTEL_BSP_MAX_QUEUE_SIZE: "5",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "2",
        OTEL_BSP_SCHEDULE_DELAY: "60000",
      },
      log: silentLogger,
      serviceVersion: "1.0.0",
      exporter,
      maxQueueSize: 1000, // tracing.max_queue_size: OTEL_BSP_MAX_QUEUE_SIZE wins
    });
    // full batches of 2 leave at once, two exports in flight; then 5 wait and 3 are dropped
    for (let i = 0; i < 12; i++)
      tracing.prepareSpan(`s${i}`, SpanKind.SERVER, ROOT_CONTEXT, {}).finish();
    expect(tracing.stats()).toMatchObject({ queued: 5, dropped: 3 });
    await tracing.flush();
    expect(exporter.batches).toEqual([2, 2, 2, 2, 1]);
    expect(tracing.stats()).toMatchObject({ queued: 0, exported: 9 });
    await tracing.shutdown();
  });

  test("schedule delay: spans leave on their own after OTEL_BSP_SCHEDULE_DELAY", async () => {
    const exporter = new CountingExporter();
    const tracing = new Tracing({
      env: { OTEL_BSP_SCHEDULE_DELAY: "20" },
      log: silentLogger,
      serviceVersion: "1.0.0",
      exporter,
      scheduledDelayMs: 60_000, // tracing.scheduled_delay_ms: the variable wins
    });
    tracing.prepareSpan("s", SpanKind.SERVER, ROOT_CONTEXT, {}).finish();
    for (let i = 0; i < 100 && exporter.batches.length === 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(exporter.batches).toEqual([1]);
    await tracing.shutdown();
  });

  test("an export that never answers fails after OTEL_BSP_EXPORT_TIMEOUT; a late answer changes nothing", async () => {
    let late: ((r: ExportResult) => void) | undefined;
    const stuck = new CountingExporter();
    stuck.export = (spans, cb) => {
      stuck.batches.push(spans.length);
      late = cb; // never called in time
    };
    const reasons: string[] = [];
    const p = new BoundedBatchProcessor(
      stuck,
      batchSettingsFromEnv({ OTEL_BSP_EXPORT_TIMEOUT: "50" }, silentLogger, {
        ...given,
        scheduledDelayMs: 60_000,
      }),
      (_n, why) => reasons.push(why),
    );
    const span = await new Promise<ReadableSpan>((resolve) => {
      const probe = new InMemorySpanExporter();
      const tr = new Tracing({ env: {}, log: silentLogger, serviceVersion: "1", exporter: probe });
      tr.prepareSpan("s", SpanKind.SERVER, ROOT_CONTEXT, {}).finish();
      void tr.flush().then(() => resolve(probe.getFinishedSpans()[0]!));
    });
    p.onEnd(span);
    p.onEnd(span);
    const started = Date.now();
    await p.forceFlush();
    expect(Date.now() - started).toBeLessThan(2000);
    expect(p.exportFailures).toBe(1);
    expect(p.dropped).toBe(2);
    expect(reasons).toEqual(["export_timeout"]);
    late?.({ code: ExportResultCode.SUCCESS });
    expect(p.exported).toBe(0);
  });
});

/** A sampled span, as Tracing.prepareSpan hands it to the processor. */
async function oneSpan(): Promise<ReadableSpan> {
  const probe = new InMemorySpanExporter();
  const tr = new Tracing({ env: {}, log: silentLogger, serviceVersion: "1", exporter: probe });
  tr.prepareSpan("s", SpanKind.SERVER, ROOT_CONTEXT, {}).finish();
  await tr.flush();
  return probe.getFinishedSpans()[0]!;
}

/** An exporter whose exports end when the test says so. */
class HeldExporter extends CountingExporter {
  readonly held: Array<(r: ExportResult) => void> = [];
  maxOpen = 0;
  override export(spans: ReadableSpan[], cb: (r: ExportResult) => void): void {
    this.batches.push(spans.length);
    this.held.push(cb);
    this.maxOpen = Math.max(this.maxOpen, this.held.length);
  }
  /** Ends the oldest open export. */
  release(code = ExportResultCode.SUCCESS): void {
    this.held.shift()?.({ code });
  }
}

/** Lets exports that ended call back (InMemorySpanExporter answers on a 0 ms timer). */
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

describe("full batches and exports in flight", () => {
  test("a full batch leaves at once, not when the schedule delay has passed", async () => {
    const exporter = new CountingExporter();
    const p = new BoundedBatchProcessor(
      exporter,
      { ...given, maxExportBatchSize: 4, scheduledDelayMs: 60_000 },
      () => undefined,
    );
    const span = await oneSpan();
    for (let i = 0; i < 3; i++) p.onEnd(span);
    await tick();
    expect(exporter.batches).toEqual([]); // less than a batch waits for the timer
    p.onEnd(span);
    await tick();
    expect(exporter.batches).toEqual([4]);
    for (let i = 0; i < 9; i++) p.onEnd(span);
    await tick();
    expect(exporter.batches).toEqual([4, 4, 4]);
    expect(p.queued).toBe(1);
    await p.shutdown();
    expect(exporter.batches).toEqual([4, 4, 4, 1]);
    expect(p.exported).toBe(13);
  });

  test("at most maxConcurrentExports exports run at once; the rest waits, bounded, and leaves as they end", async () => {
    const exporter = new HeldExporter();
    const drops: string[] = [];
    const p = new BoundedBatchProcessor(
      exporter,
      { ...given, maxQueueSize: 10, maxExportBatchSize: 2, scheduledDelayMs: 60_000 },
      (n, why) => drops.push(`${n} ${why}`),
    );
    const span = await oneSpan();
    for (let i = 0; i < 16; i++) p.onEnd(span);
    await tick();
    // two exports of 2 in flight, 10 waiting (the queue's bound), 2 dropped
    expect(exporter.batches).toEqual([2, 2]);
    expect(p.exporting).toBe(2);
    expect(p.queued).toBe(10);
    expect(p.dropped).toBe(2);
    expect(drops).toEqual(["1 queue_full", "1 queue_full"]);
    exporter.release();
    await tick();
    expect(exporter.batches).toEqual([2, 2, 2]); // a slot freed: the next full batch leaves
    expect(p.exporting).toBe(2);
    const flushed = p.forceFlush();
    for (let i = 0; i < 20 && exporter.held.length > 0; i++) {
      exporter.release();
      await tick();
    }
    await flushed;
    expect(exporter.maxOpen).toBe(2);
    expect(exporter.batches.reduce((a, b) => a + b, 0)).toBe(14);
    expect(p.exported).toBe(14);
    expect(p.exported + p.dropped).toBe(16);
  });

  test("less than a batch whose timer fired while every export ran leaves as soon as one ends", async () => {
    const exporter = new HeldExporter();
    const p = new BoundedBatchProcessor(
      exporter,
      { ...given, maxExportBatchSize: 2, maxConcurrentExports: 1, scheduledDelayMs: 200 },
      () => undefined,
    );
    const span = await oneSpan();
    for (let i = 0; i < 3; i++) p.onEnd(span); // a full batch leaves; one span waits
    await new Promise((r) => setTimeout(r, 300)); // its timer fired: no export could start
    expect(exporter.batches).toEqual([2]);
    exporter.release();
    await tick(); // not another 200 ms
    expect(exporter.batches).toEqual([2, 1]);
    exporter.release();
    await tick();
    expect(p.exported).toBe(3);
    await p.shutdown();
  });

  test("one export at a time when maxConcurrentExports is 1; 0 is refused", async () => {
    const exporter = new HeldExporter();
    const p = new BoundedBatchProcessor(
      exporter,
      { ...given, maxExportBatchSize: 2, maxConcurrentExports: 1, scheduledDelayMs: 60_000 },
      () => undefined,
    );
    const span = await oneSpan();
    for (let i = 0; i < 6; i++) p.onEnd(span);
    await tick();
    expect(exporter.batches).toEqual([2]);
    const flushed = p.forceFlush();
    for (let i = 0; i < 10 && exporter.held.length > 0; i++) {
      exporter.release();
      await tick();
    }
    await flushed;
    expect(exporter.batches).toEqual([2, 2, 2]);
    expect(exporter.maxOpen).toBe(1);
    expect(
      () => new BoundedBatchProcessor(exporter, { ...given, maxConcurrentExports: 0 }, () => 0),
    ).toThrow(/maxConcurrentExports/);
  });
});

describe("tracing.max_concurrent_exports", () => {
  test("default 2; 1 to 8; anything else refused naming the key", () => {
    expect(compileConfig({}, {}).tracing.maxConcurrentExports).toBe(2);
    expect(
      compileConfig({}, { TOOLGATE_TRACING_MAX_CONCURRENT_EXPORTS: "1" }).tracing
        .maxConcurrentExports,
    ).toBe(1);
    for (const bad of [0, 9, "two"])
      expect(() => compileConfig({ tracing: { max_concurrent_exports: bad } }, {})).toThrow(
        /tracing\.max_concurrent_exports/,
      );
  });
});
