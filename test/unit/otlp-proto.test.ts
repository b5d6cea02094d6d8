/**
 * OTLP/HTTP protobuf on the wire: the exporter toolgate builds for
 * `http/protobuf` (the default) POSTs to /v1/traces, as
 * application/x-protobuf, exactly the bytes of the transformer's stock
 * ProtobufTraceSerializer (what @opentelemetry/exporter-trace-otlp-proto
 * sends) — for the spans a real toolgate made (decisions on both faces, an
 * action report; a resource from OTEL_RESOURCE_ATTRIBUTES) and for SDK spans
 * with events, links, status, a remote parent and two scopes. A real Jaeger
 * decodes them in test/e2e/jaeger.test.ts. (A hand-written encoder with the
 * same bytes was removed after the A/B of issue #18: docs/audit.md.)
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { ExportResultCode, TraceState } from "@opentelemetry/core";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { exporterFromEnv, Tracing } from "../../src/telemetry/tracing";
import { silentLogger } from "../../src/shared/log";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

const reference = (spans: ReadableSpan[]): Buffer =>
  Buffer.from(ProtobufTraceSerializer.serializeRequest(spans) ?? new Uint8Array());

/** What the http/protobuf exporter, built as toolgate builds it, POSTs for `spans`. */
async function sent(
  spans: ReadableSpan[],
): Promise<{ path: string | undefined; type: string | undefined; body: Buffer }> {
  const got: Array<{ path: string | undefined; type: string | undefined; body: Buffer }> = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      got.push({ path: req.url, type: req.headers["content-type"], body: Buffer.concat(chunks) });
      res.writeHead(200, { "content-type": "application/x-protobuf" });
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  try {
    const { exporter, protocol } = exporterFromEnv({
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    });
    expect(protocol).toBe("http/protobuf");
    const result = await new Promise<{ code: ExportResultCode; error?: Error }>((r) =>
      exporter.export(spans, r),
    );
    expect(result.error).toBeUndefined();
    expect(result.code).toBe(ExportResultCode.SUCCESS);
    await exporter.shutdown();
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
  expect(got).toHaveLength(1);
  return got[0] as { path: string | undefined; type: string | undefined; body: Buffer };
}

async function expectStockBytes(spans: ReadableSpan[]): Promise<void> {
  const req = await sent(spans);
  expect(req.path).toBe("/v1/traces");
  expect(req.type).toBe("application/x-protobuf");
  expect(req.body.length).toBeGreaterThan(0);
  expect(req.body.equals(reference(spans))).toBe(true);
}

const remoteParent = trace.setSpanContext(ROOT_CONTEXT, {
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
  traceFlags: 1,
  isRemote: true,
  traceState: new TraceState("vendor=abc,other=x-y"),
});

describe("OTLP/HTTP protobuf: the stock serializer's bytes on the wire", () => {
  test("spans a real toolgate made: decisions, an action report, its resource", async () => {
    const exporter = new InMemorySpanExporter();
    let spans: ReadableSpan[] = [];
    const tg = await startTestToolgate(
      {},
      {
        spanExporter: exporter,
        otelEnv: {
          OTEL_SERVICE_NAME: "tg-wire",
          OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=wire-test,k8s.pod.name=p-1",
        },
      },
    );
    try {
      const base = tg.agentServer.url;
      const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
      const allow = await postJson(
        base,
        "/v1/decisions",
        refRequest({ tool: "refunds.issue", args: { amount: 20, note: "café ✓" } }),
        { traceparent },
      );
      const id = (allow.json as { decision_id: string }).decision_id;
      await postJson(base, "/v1/decisions", refRequest({ tool: "records.delete" }));
      await postJson(base, "/access/v1/evaluation", refRequest({ tool: "tickets.read" }));
      await postJson(
        base,
        "/v1/actions",
        {
          decision_id: id,
          tool: "refunds.issue",
          call_id: "call-1",
          status: "ok",
          changed: [
            {
              resource: { type: "refund", id: "rf_1" },
              fields: [{ path: "amount", before: null, after: 20 }],
            },
          ],
        },
        { traceparent },
      );
      await tg.auditor?.flush();
      spans = [...exporter.getFinishedSpans()]; // before stop() (it resets the exporter)
    } finally {
      await tg.stop();
    }
    expect(spans.length).toBeGreaterThanOrEqual(4);
    const attrs = spans[0]?.resource.attributes ?? {};
    expect(attrs["deployment.environment"]).toBe("wire-test");
    expect(attrs["service.instance.id"]).toEqual(expect.any(String));
    await expectStockBytes(spans);
  });

  test("SDK spans with events, links, status, a remote parent and two scopes", async () => {
    const exporter = new InMemorySpanExporter();
    const t = new Tracing({
      env: { OTEL_SERVICE_NAME: "tg" },
      log: silentLogger,
      serviceVersion: "1.2.3",
      exporter,
    });
    const a = t.startSpan(
      "a",
      { kind: SpanKind.CLIENT, attributes: { s: "Café 👍🏽", n: 42, f: 3.25, b: true, l: ["x"] } },
      remoteParent,
    );
    a.addEvent("something happened", { detail: "é", n: 2 });
    a.setStatus({ code: SpanStatusCode.ERROR, message: "broke: ünïcode" });
    a.end();
    const b = t.startSpan(
      "b",
      { links: [{ context: a.spanContext(), attributes: { why: "follows" } }] },
      ROOT_CONTEXT,
    );
    b.setStatus({ code: SpanStatusCode.OK });
    b.end();
    const other = (
      t as unknown as { provider: { getTracer(n: string): typeof t.tracer } }
    ).provider.getTracer("other-scope");
    other.startSpan("c", {}, ROOT_CONTEXT).end();
    await t.flush();
    const spans = exporter.getFinishedSpans();
    expect(spans).toHaveLength(3);
    await expectStockBytes(spans);
  });
});
