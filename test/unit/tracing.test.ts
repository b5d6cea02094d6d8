/**
 * Tracing.prepareSpan (the decision span's light path) against the SDK's own
 * tracer: same sampling (OTEL_TRACES_SAMPLER), parenting, ids, resource and
 * scope; only sampled spans reach the exporter. exporterFromEnv: the OTLP
 * protocols, their endpoints, and OTLP/gRPC's request on the wire (an h2c
 * server standing in for the collector).
 */
import { createServer, type Http2Server, type ServerHttp2Stream } from "node:http2";
import type { AddressInfo } from "node:net";
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context } from "@opentelemetry/api";
import { OTLPTraceExporter as OTLPGrpcExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { OTLPTraceExporter as OTLPHttpJsonExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { ForcedIdGenerator } from "../../src/telemetry/ids";
import { exporterFromEnv, Tracing } from "../../src/telemetry/tracing";
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
      // the clock toolgate stamps requests with (foundation.ts): Date.now() drifts from it in a long-lived worker
      performance.timeOrigin + performance.now() - 5,
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

describe("exporterFromEnv: OTLP protocols", () => {
  test("grpc: the gRPC exporter; _TRACES_ENDPOINT, else _ENDPOINT, as they are; default :4317", () => {
    const a = exporterFromEnv({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" });
    expect(a.exporter).toBeInstanceOf(OTLPGrpcExporter);
    expect(a).toMatchObject({ protocol: "grpc", endpoint: "http://localhost:4317" });
    expect(
      exporterFromEnv({
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4317/",
      }),
    ).toMatchObject({ protocol: "grpc", endpoint: "http://collector:4317/" });
    expect(
      exporterFromEnv({
        OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4317",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://traces:4317",
      }).endpoint,
    ).toBe("https://traces:4317");
    // a blank variable is unset, as the spec says
    expect(
      exporterFromEnv({
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: " ",
        OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "",
        OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4317",
      }),
    ).toMatchObject({ protocol: "grpc", endpoint: "collector:4317" });
  });

  test("http/protobuf (default) and http/json: /v1/traces appended to _ENDPOINT only", () => {
    expect(exporterFromEnv({})).toMatchObject({
      protocol: "http/protobuf",
      endpoint: "http://localhost:4318/v1/traces",
    });
    expect(exporterFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/" }).endpoint).toBe(
      "http://c:4318/v1/traces",
    );
    const json = exporterFromEnv({
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c:4318/custom",
    });
    expect(json.exporter).toBeInstanceOf(OTLPHttpJsonExporter);
    expect(json.endpoint).toBe("http://c:4318/custom");
  });

  /** The error exporterFromEnv throws for `env` (a test failure if it throws none). */
  const thrown = (env: Record<string, string>): { code?: unknown; message?: unknown } => {
    try {
      exporterFromEnv(env);
    } catch (e) {
      return e as { code?: unknown; message?: unknown };
    }
    throw new Error("no error");
  };

  test("an unknown protocol or an unusable gRPC endpoint is config_invalid", () => {
    const unknown = thrown({ OTEL_EXPORTER_OTLP_PROTOCOL: "thrift" });
    expect(unknown.code).toBe("config_invalid");
    expect(unknown.message).toContain("http/protobuf (default), http/json or grpc");
    const badUrl = thrown({
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://[not a host",
    });
    expect(badUrl.code).toBe("config_invalid");
  });

  test("an endpoint's credentials never reach the error message", () => {
    // http/protobuf to a scheme it cannot speak; gRPC to an endpoint it cannot use
    const cases = [
      {
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:
          "ftp://otel:s3cret-pw@collector:21/v1/traces?token=s3cret-q",
      },
      {
        OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel:s3cret-pw@[not a host?token=s3cret-q",
      },
      {
        OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT: "unix://otel:s3cret-pw@/x?token=s3cret-q",
      },
    ];
    for (const env of cases) {
      const e = thrown(env);
      expect(e.code).toBe("config_invalid");
      expect(String(e.message)).toMatch(/OTEL_EXPORTER_OTLP_/);
      expect(String(e.message)).not.toContain("s3cret");
    }
  });
});

describe("OTLP/gRPC through toolgate's batch processor", () => {
  /** An h2c server answering the OTLP trace service's Export: what a collector sees. */
  async function fakeCollector(reply: "ok" | "never"): Promise<{
    url: string;
    requests: Array<{ path: string; headers: Record<string, unknown>; body: Buffer }>;
    close: () => Promise<void>;
  }> {
    const requests: Array<{ path: string; headers: Record<string, unknown>; body: Buffer }> = [];
    const open = new Set<ServerHttp2Stream>();
    const server: Http2Server = createServer();
    server.on("stream", (stream, headers) => {
      open.add(stream);
      stream.on("close", () => open.delete(stream));
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        requests.push({
          path: String(headers[":path"]),
          headers: { ...headers },
          body: Buffer.concat(chunks),
        });
        if (reply === "never") return;
        stream.respond(
          { ":status": 200, "content-type": "application/grpc" },
          { waitForTrailers: true },
        );
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        // one gRPC message: uncompressed, zero length (an empty ExportTraceServiceResponse)
        stream.end(Buffer.from([0, 0, 0, 0, 0]));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    return {
      url: `http://127.0.0.1:${port}`,
      requests,
      close: () =>
        new Promise<void>((resolve) => {
          for (const s of open) s.close();
          server.close(() => resolve());
        }),
    };
  }

  const saved = { ...process.env };
  afterEach(() => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  });

  test("spans reach the collector's Export over h2c, with OTEL_EXPORTER_OTLP_HEADERS as metadata", async () => {
    const collector = await fakeCollector("ok");
    // headers are read by the exporter from the process environment (the worker's copy of it)
    process.env.OTEL_EXPORTER_OTLP_HEADERS = "x-tenant=acme,authorization=Bearer%20t0k";
    const tracing = new Tracing({
      env: {
        OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=unit-grpc",
      },
      log: silentLogger,
      serviceVersion: "9.9.9",
      scheduledDelayMs: 5,
    });
    try {
      tracing
        .prepareSpan("authorize refunds.issue", SpanKind.INTERNAL, parentCtx(true), {
          "gen_ai.tool.name": "refunds.issue",
        })
        .finish();
      await tracing.flush();
      expect(tracing.stats()).toMatchObject({
        exported: 1,
        dropped: 0,
        exportFailures: 0,
        endpoint: collector.url,
      });
      expect(collector.requests).toHaveLength(1);
      const req = collector.requests[0] as (typeof collector.requests)[number];
      expect(req.path).toBe("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
      expect(req.headers).toMatchObject({
        "content-type": "application/grpc",
        "x-tenant": "acme",
        authorization: "Bearer t0k",
      });
      const body = req.body.toString("latin1");
      for (const s of ["authorize refunds.issue", "deployment.environment", "unit-grpc", TRACE])
        expect(body.includes(s) || req.body.includes(Buffer.from(s, "hex"))).toBe(true);
    } finally {
      await tracing.shutdown();
      await collector.close();
    }
  });

  test("a collector that never answers: the batch is dropped and counted after the export timeout", async () => {
    const collector = await fakeCollector("never");
    const tracing = new Tracing({
      env: { OTEL_EXPORTER_OTLP_PROTOCOL: "grpc", OTEL_EXPORTER_OTLP_ENDPOINT: collector.url },
      log: silentLogger,
      serviceVersion: "9.9.9",
      scheduledDelayMs: 5,
      exportTimeoutMs: 300,
    });
    try {
      tracing.prepareSpan("x", SpanKind.INTERNAL, ROOT_CONTEXT, {}).finish();
      await tracing.flush();
      expect(tracing.stats()).toMatchObject({ exported: 0, dropped: 1, exportFailures: 1 });
    } finally {
      await collector.close();
      await tracing.shutdown();
    }
  });
});
