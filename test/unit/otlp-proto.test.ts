/**
 * toolgate's OTLP protobuf encoder against @opentelemetry/otlp-transformer's
 * ProtobufTraceSerializer: the same bytes for the same spans (SDK spans and
 * decision spans; every attribute value type; links, events, status, trace
 * state, remote parents, several resources and scopes; strings past the one-
 * and two-byte length prefixes; non-ASCII text).
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { TraceState } from "@opentelemetry/core";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { ExportResultCode } from "@opentelemetry/core";
import { encodeTraceRequest } from "../../src/telemetry/otlp-proto";
import { exporterFromEnv, Tracing } from "../../src/telemetry/tracing";
import { silentLogger } from "../../src/shared/log";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

async function spansFrom(
  env: Record<string, string>,
  make: (t: Tracing) => void,
): Promise<ReadableSpan[]> {
  const exporter = new InMemorySpanExporter();
  const tracing = new Tracing({ env, log: silentLogger, serviceVersion: "1.2.3", exporter });
  make(tracing);
  await tracing.flush();
  return exporter.getFinishedSpans();
}

const reference = (spans: ReadableSpan[]): Buffer =>
  Buffer.from(ProtobufTraceSerializer.serializeRequest(spans) ?? new Uint8Array());

const remoteParent = trace.setSpanContext(ROOT_CONTEXT, {
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
  traceFlags: 1,
  isRemote: true,
  traceState: new TraceState("vendor=abc,other=x-y"),
});

const ATTRS = {
  ascii: "refunds.issue",
  accents: "Café crème — naïve",
  emoji: "ok 👍🏽 done",
  long: "x".repeat(200),
  longer: "é".repeat(20_000),
  empty: "",
  int: 42,
  zero: 0,
  negative: -17,
  big: 2 ** 40 + 3,
  float: 3.25,
  yes: true,
  no: false,
  list: ["a", "b", "ç"],
  emptyList: [] as string[],
  numbers: [1, 2.5, -3],
};

describe("encodeTraceRequest", () => {
  test("decision spans (the light path) encode as the transformer encodes them", async () => {
    const spans = await spansFrom({ OTEL_SERVICE_NAME: "tg" }, (t) => {
      for (let i = 0; i < 5; i++) {
        const p = t.prepareSpan(
          `authorize tool.${i}`,
          i % 2 ? SpanKind.SERVER : SpanKind.INTERNAL,
          i % 2 ? remoteParent : ROOT_CONTEXT,
          { ...ATTRS, i },
          Date.now() - i,
        );
        p.finish({ "toolgate.audit.trail_seq": i + 1 });
      }
    });
    expect(spans).toHaveLength(5);
    expect(reference(spans).length).toBeGreaterThan(5 * 40_000); // the 20,000-char "é" value, 5 times
    expect(Buffer.from(encodeTraceRequest(spans)).equals(reference(spans))).toBe(true);
  });

  test("SDK spans with links, events, status and two scopes encode as the transformer encodes them", async () => {
    const spans = await spansFrom({}, (t) => {
      const a = t.startSpan("a", { kind: SpanKind.CLIENT, attributes: ATTRS }, remoteParent);
      a.addEvent("something happened", { detail: "é", n: 2 });
      a.setStatus({ code: SpanStatusCode.ERROR, message: "broke: ünïcode" });
      a.end();
      const b = t.startSpan(
        "b",
        {
          links: [
            { context: a.spanContext(), attributes: { why: "follows" } },
            { context: trace.getSpanContext(remoteParent)! },
          ],
        },
        ROOT_CONTEXT,
      );
      b.setStatus({ code: SpanStatusCode.OK });
      b.end();
      // a second scope on the same resource
      const other = (
        t as unknown as { provider: { getTracer(n: string): typeof t.tracer } }
      ).provider.getTracer("other-scope");
      other.startSpan("c", {}, ROOT_CONTEXT).end();
    });
    expect(spans).toHaveLength(3);
    expect(Buffer.from(encodeTraceRequest(spans)).equals(reference(spans))).toBe(true);
  });

  test("a batch mixing two resources", async () => {
    const one = await spansFrom({ OTEL_SERVICE_NAME: "one" }, (t) =>
      t.prepareSpan("x", SpanKind.INTERNAL, ROOT_CONTEXT, { k: "v" }).finish(),
    );
    const two = await spansFrom({ OTEL_SERVICE_NAME: "two" }, (t) =>
      t.prepareSpan("y", SpanKind.INTERNAL, ROOT_CONTEXT, { k: 1 }).finish(),
    );
    const spans = [...one, ...two, ...one];
    expect(Buffer.from(encodeTraceRequest(spans)).equals(reference(spans))).toBe(true);
  });

  test("no spans: an empty request", () => {
    expect(encodeTraceRequest([])).toHaveLength(0);
    expect(reference([])).toHaveLength(0);
  });
});

/**
 * TEMPORARY (issue #18's encoder A/B): the OTLP/HTTP protobuf exporter with
 * TOOLGATE_OTLP_ENCODER=stock (the transformer's ProtobufTraceSerializer) and
 * with toolgate's encoder sends the same request bodies for the same spans —
 * spans a real toolgate made (decisions on both faces, an action report; a
 * resource from OTEL_RESOURCE_ATTRIBUTES) and SDK spans with events, links,
 * status and two scopes.
 */
describe("on the wire, TOOLGATE_OTLP_ENCODER=stock and toolgate's encoder send the same bytes", () => {
  const saved = process.env.TOOLGATE_OTLP_ENCODER;
  afterAll(() => {
    if (saved === undefined) delete process.env.TOOLGATE_OTLP_ENCODER;
    else process.env.TOOLGATE_OTLP_ENCODER = saved;
  });

  /** What the exporter, built as toolgate builds it with `encoder`, POSTs for `spans`. */
  async function sent(
    encoder: string,
    spans: ReadableSpan[],
  ): Promise<{ body: Buffer; type: string | undefined }> {
    const got: Array<{ body: Buffer; type: string | undefined }> = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        got.push({ body: Buffer.concat(chunks), type: req.headers["content-type"] });
        res.writeHead(200, { "content-type": "application/x-protobuf" });
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    try {
      process.env.TOOLGATE_OTLP_ENCODER = encoder;
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
    return got[0] as { body: Buffer; type: string | undefined };
  }

  async function same(spans: ReadableSpan[]): Promise<void> {
    const stock = await sent("stock", spans);
    const ours = await sent("toolgate", spans);
    expect(stock.type).toBe("application/x-protobuf");
    expect(ours.type).toBe(stock.type);
    expect(stock.body.length).toBeGreaterThan(0);
    expect(stock.body.equals(reference(spans))).toBe(true); // the stock path is the transformer's
    expect(ours.body.equals(stock.body)).toBe(true);
  }

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
    await same(spans);
  });

  test("SDK spans with events, links, status, a remote parent and two scopes", async () => {
    const spans = await spansFrom({ OTEL_SERVICE_NAME: "tg" }, (t) => {
      const a = t.startSpan("a", { kind: SpanKind.CLIENT, attributes: ATTRS }, remoteParent);
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
    });
    expect(spans).toHaveLength(3);
    await same(spans);
  });
});
