/**
 * Tracing.prepareSpan (the decision span's light path) against the SDK's own
 * tracer: same sampling (OTEL_TRACES_SAMPLER), parenting, ids, resource and
 * scope; only sampled spans reach the exporter.
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { ForcedIdGenerator } from "../../src/telemetry/ids";
import { Tracing } from "../../src/telemetry/tracing";
import { silentLogger } from "../../src/shared/log";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = "00f067aa0ba902b7";

function parentCtx(sampled: boolean): Context {
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: TRACE,
    spanId: PARENT,
    traceFlags: sampled ? 1 : 0,
    isRemote: true,
  });
}

function make(env: Record<string, string> = {}) {
  const exporter = new InMemorySpanExporter();
  const tracing = new Tracing({
    env,
    log: silentLogger,
    serviceVersion: "9.9.9",
    exporter,
    scheduledDelayMs: 10,
  });
  const spans = async (): Promise<ReadableSpan[]> => {
    await tracing.flush();
    return exporter.getFinishedSpans();
  };
  return { tracing, spans };
}

describe("Tracing.prepareSpan", () => {
  test("a sampled span: the same shape as the SDK's, with the last attributes added", async () => {
    const { tracing, spans } = make({ OTEL_SERVICE_NAME: "tg-test" });
    const sdk = tracing.startSpan(
      "sdk",
      { kind: SpanKind.SERVER, attributes: { a: "x" } },
      parentCtx(true),
    );
    sdk.end();
    const p = tracing.prepareSpan(
      "light",
      SpanKind.SERVER,
      parentCtx(true),
      { a: "x", n: 1 },
      Date.now() - 5,
    );
    expect(p.spanContext.traceId).toBe(TRACE);
    expect(p.spanContext.traceFlags).toBe(1);
    p.finish({ "toolgate.audit.trail_seq": 7 }, { code: SpanStatusCode.ERROR, message: "m" });
    const [a, b] = await spans();
    expect(b?.name).toBe("light");
    expect(b?.spanContext().spanId).toBe(p.spanContext.spanId);
    expect(b?.parentSpanContext?.spanId).toBe(PARENT);
    expect(b?.attributes).toEqual({ a: "x", n: 1, "toolgate.audit.trail_seq": 7 });
    expect(b?.status).toEqual({ code: SpanStatusCode.ERROR, message: "m" });
    expect(b?.kind).toBe(a?.kind);
    expect(b?.resource.attributes["service.name"]).toBe("tg-test");
    expect(b?.resource).toBe(a?.resource);
    expect(b?.instrumentationScope).toEqual(a?.instrumentationScope);
    expect(b?.ended).toBe(true);
    // started 5 ms ago: a duration of at least that
    expect(b!.duration[0] * 1e3 + b!.duration[1] / 1e6).toBeGreaterThanOrEqual(4);
  });

  test("a root span gets a new trace id; forced ids are taken", () => {
    const ids = new ForcedIdGenerator();
    const exporter = new InMemorySpanExporter();
    const tracing = new Tracing({
      env: {},
      log: silentLogger,
      serviceVersion: "1",
      exporter,
      idGenerator: ids,
    });
    const forced = { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" };
    const p = ids.use(forced, () => tracing.prepareSpan("x", SpanKind.INTERNAL, ROOT_CONTEXT, {}));
    expect(p.spanContext).toMatchObject(forced);
    const q = tracing.prepareSpan("y", SpanKind.INTERNAL, ROOT_CONTEXT, {});
    expect(q.spanContext.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(q.spanContext.traceId).not.toBe(forced.traceId);
  });

  test.each([
    ["always_off", true],
    ["parentbased_always_on", false],
    ["traceidratio", true],
  ])(
    "OTEL_TRACES_SAMPLER=%s (parent sampled: %s): not exported, as the SDK",
    async (sampler, sampled) => {
      const { tracing, spans } = make({
        OTEL_TRACES_SAMPLER: sampler,
        OTEL_TRACES_SAMPLER_ARG: "0",
      });
      const p = tracing.prepareSpan("light", SpanKind.INTERNAL, parentCtx(sampled), {});
      const s = tracing.startSpan("sdk", {}, parentCtx(sampled));
      expect(p.spanContext.traceFlags).toBe(0);
      expect(s.spanContext().traceFlags).toBe(0);
      p.finish();
      s.end();
      expect(await spans()).toHaveLength(0);
    },
  );

  test("tracing disabled: the parent's context, or the invalid one, and nothing recorded", () => {
    const { tracing } = make({ OTEL_SDK_DISABLED: "true" });
    expect(
      tracing.prepareSpan("x", SpanKind.INTERNAL, parentCtx(true), {}).spanContext.spanId,
    ).toBe(PARENT);
    const root = tracing.prepareSpan("x", SpanKind.INTERNAL, ROOT_CONTEXT, {});
    expect(trace.isSpanContextValid(root.spanContext)).toBe(false);
    expect(() => root.finish()).not.toThrow();
  });
});
