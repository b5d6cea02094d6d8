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
import { encodeTraceRequest } from "../../src/telemetry/otlp-proto";
import { Tracing } from "../../src/telemetry/tracing";
import { silentLogger } from "../../src/shared/log";

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
