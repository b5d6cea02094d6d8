/**
 * Span batching against a real OTLP/HTTP receiver (scripts/bench/otlp-receiver.mjs,
 * the benchmark's: protobuf, counts the spans it gets): a burst of several
 * batches leaves without waiting for the schedule delay and every span
 * arrives; sustained load faster than one batch per schedule delay loses
 * nothing; with the receiver stopped the queue stays bounded and every span
 * that cannot be delivered is counted as dropped and logged;
 * tracing.max_concurrent_exports bounds the exports in flight of a toolgate's
 * audit worker.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { ROOT_CONTEXT, SpanKind } from "@opentelemetry/api";
import { Tracing } from "../../src/telemetry/tracing";
import { silentLogger, type Logger } from "../../src/shared/log";
import { captureLogger } from "../helpers/capture";
import { startOtlpReceiver } from "../helpers/otlp";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

const RECEIVER = path.join(__dirname, "..", "..", "scripts", "bench", "otlp-receiver.mjs");

interface Receiver {
  url: string;
  stats(): Promise<{ requests: number; spans: number; undecodable: number }>;
  stop(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const child: ChildProcess = spawn(process.execPath, [RECEIVER], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString("utf8");
      if (out.includes("\n")) resolve(Number(out.trim()));
    });
    child.once("exit", (code) => reject(new Error(`receiver exited (${code})`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    stats: async () =>
      (await (await fetch(`${url}/stats`)).json()) as {
        requests: number;
        spans: number;
        undecodable: number;
      },
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGKILL");
      }),
  };
}

function tracingTo(receiver: Receiver, bsp: Record<string, string>, log: Logger = silentLogger) {
  return new Tracing({
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
      ...bsp,
    },
    log,
    serviceVersion: "1.0.0",
    exportTimeoutMs: 2000,
  });
}

function spans(tracing: Tracing, n: number): void {
  for (let i = 0; i < n; i++)
    tracing.prepareSpan("authorize tickets.read", SpanKind.INTERNAL, ROOT_CONTEXT, { i }).finish();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until `ok` holds for the receiver's stats, or `ms` passed; the last stats. */
async function until(
  receiver: Receiver,
  ok: (s: { spans: number }) => boolean,
  ms = 10_000,
): Promise<{ requests: number; spans: number; undecodable: number }> {
  const end = Date.now() + ms;
  for (;;) {
    const s = await receiver.stats();
    if (ok(s) || Date.now() > end) return s;
    await sleep(25);
  }
}

test("a burst of several batches leaves at once: every span arrives long before the schedule delay", async () => {
  const receiver = await startReceiver();
  // the schedule delay is a minute: only full batches can leave within the test
  const tracing = tracingTo(receiver, {
    OTEL_BSP_SCHEDULE_DELAY: "60000",
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "100",
    OTEL_BSP_MAX_QUEUE_SIZE: "2048",
  });
  try {
    const started = Date.now();
    spans(tracing, 1000); // ten batches, queued in one go
    const s = await until(receiver, (x) => x.spans >= 1000);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(s).toMatchObject({ spans: 1000, requests: 10, undecodable: 0 });
    expect(tracing.stats()).toMatchObject({ exported: 1000, dropped: 0, queued: 0 });
  } finally {
    await tracing.shutdown();
    await receiver.stop();
  }
}, 30_000);

test("sustained load above one batch per schedule delay: nothing dropped", async () => {
  const receiver = await startReceiver();
  // 10,000 spans at ~10,000/s through a 1,024-span queue, batches of 256, delay 500 ms:
  // one batch per delay would carry 512 spans/s and drop most of them
  const tracing = tracingTo(receiver, {
    OTEL_BSP_SCHEDULE_DELAY: "500",
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "256",
    OTEL_BSP_MAX_QUEUE_SIZE: "1024",
  });
  try {
    for (let i = 0; i < 50; i++) {
      spans(tracing, 200);
      expect(tracing.stats().queued).toBeLessThanOrEqual(1024);
      await sleep(20);
    }
    const s = await until(receiver, (x) => x.spans >= 10_000);
    expect(s.spans).toBe(10_000);
    expect(tracing.stats()).toMatchObject({ exported: 10_000, dropped: 0, exportFailures: 0 });
  } finally {
    await tracing.shutdown();
    await receiver.stop();
  }
}, 30_000);

test("receiver stopped: the queue stays bounded, every undelivered span is counted as dropped and logged", async () => {
  const receiver = await startReceiver();
  const logs = captureLogger();
  // the exporter reads its own timeout from the process environment: retries of a refused
  // connection give up after 500 ms instead of 10 s
  const savedTimeout = process.env.OTEL_EXPORTER_OTLP_TIMEOUT;
  process.env.OTEL_EXPORTER_OTLP_TIMEOUT = "500";
  const tracing = tracingTo(
    receiver,
    {
      OTEL_BSP_SCHEDULE_DELAY: "60000",
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "50",
      OTEL_BSP_MAX_QUEUE_SIZE: "200",
    },
    logs.log,
  );
  try {
    spans(tracing, 100);
    expect((await until(receiver, (x) => x.spans >= 100)).spans).toBe(100);
    await tracing.flush();
    expect(tracing.stats()).toMatchObject({ exported: 100, dropped: 0 });
    await receiver.stop();
    // 1,000 spans at once: two exports of 50 in flight (to nowhere), 200 waiting, the rest dropped
    spans(tracing, 1000);
    const now = tracing.stats();
    expect(now.queued).toBe(200);
    expect(now.dropped).toBe(700);
    await tracing.flush(); // the exports fail (connection refused)
    const after = tracing.stats();
    expect(after).toMatchObject({ exported: 100, dropped: 1000, queued: 0 });
    expect(after.exportFailures).toBeGreaterThanOrEqual(6); // 300 spans in batches of 50
    const dropped = logs.lines().filter((l) => l.event === "audit.spans_dropped");
    expect(dropped.length).toBeGreaterThanOrEqual(1);
    expect(dropped[0]).toMatchObject({ reason: "queue_full", level: "warn" });
  } finally {
    if (savedTimeout === undefined) delete process.env.OTEL_EXPORTER_OTLP_TIMEOUT;
    else process.env.OTEL_EXPORTER_OTLP_TIMEOUT = savedTimeout;
    await tracing.shutdown();
    await receiver.stop();
  }
}, 60_000);

test("tracing.max_concurrent_exports reaches the audit worker: exports in flight to a collector that never answers", async () => {
  // a collector that accepts and never answers: each export stays in flight until its timeout
  const stuck = await startOtlpReceiver("hang");
  const tg = await startTestToolgate(
    { TOOLGATE_TRACING_MAX_CONCURRENT_EXPORTS: "3", TOOLGATE_TRACING_SCHEDULED_DELAY_MS: "10" },
    {
      otelEnv: {
        OTEL_EXPORTER_OTLP_ENDPOINT: stuck.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "2",
        OTEL_BSP_EXPORT_TIMEOUT: "2000", // the hung exports fail, so stop() need not wait long
      },
    },
  );
  try {
    // 8 decisions: 4 batches of 2, three of them in flight
    for (let i = 0; i < 8; i++) {
      const r = await postJson(
        tg.agentServer.url,
        "/v1/decisions",
        refRequest({ tool: "tickets.read" }),
      );
      expect(r.status).toBe(200);
    }
    for (let i = 0; i < 100 && stuck.requests() < 3; i++) await sleep(20);
    await sleep(300); // and no fourth
    expect(stuck.requests()).toBe(3);
  } finally {
    await tg.stop();
    await stuck.close();
  }
}, 30_000);
