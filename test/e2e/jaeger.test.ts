/**
 * End to end against a real Jaeger (v2, pinned, built by scripts/tools.sh from
 * the Go module proxy) receiving OTLP over HTTP (protobuf, port 4318's
 * receiver) and over gRPC (4317's), each on a free port: one toolgate per
 * protocol. Decisions and an action report made with the agent's traceparent
 * are found in Jaeger under the agent's trace, with their attributes (Jaeger's
 * /api/v3 API), and each toolgate's trace is found by a resource attribute
 * alone — its own `deployment.environment` from OTEL_RESOURCE_ATTRIBUTES
 * (Jaeger's search API, /api/traces?tags=, which matches resource attributes).
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { tempDir } from "../helpers/opa";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";
import { freePort } from "../helpers/net";

const root = join(__dirname, "..", "..");

interface OtlpAttr {
  key: string;
  value: {
    stringValue?: string;
    intValue?: string;
    boolValue?: boolean;
    arrayValue?: { values: Array<{ stringValue?: string }> };
  };
}
interface JaegerSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes: OtlpAttr[];
  links?: Array<{ traceId: string; spanId: string }>;
}

function attrs(span: JaegerSpan): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const a of span.attributes) {
    const v = a.value;
    out[a.key] =
      v.stringValue ?? v.intValue ?? v.boolValue ?? v.arrayValue?.values.map((x) => x.stringValue);
  }
  return out;
}

/** A trace as Jaeger's search API (/api/traces) gives it; process tags are the resource's attributes. */
interface JaegerV1Trace {
  traceID: string;
  spans: Array<{ traceID: string; spanID: string; operationName: string; processID: string }>;
  processes: Record<string, { serviceName: string; tags: Array<{ key: string; value: unknown }> }>;
}

/** Jaeger's JSON may give ids as hex or base64: normalise to hex. */
function hex(id: string): string {
  return /^[0-9a-f]+$/.test(id) ? id : Buffer.from(id, "base64").toString("hex");
}

type Protocol = "http/protobuf" | "grpc";
const PROTOCOLS: Protocol[] = ["http/protobuf", "grpc"];
/** One random environment per run and protocol: only that toolgate's spans carry it. */
const runId = randomBytes(4).toString("hex");
const environment = (p: Protocol): string => `test-${runId}-${p === "grpc" ? "grpc" : "http"}`;

describe("real Jaeger receives toolgate's spans over OTLP/HTTP and OTLP/gRPC", () => {
  let jaeger: ChildProcess;
  const tgs = new Map<Protocol, Toolgate>();
  let queryUrl: string;
  let jaegerLog = "";

  beforeAll(async () => {
    const bin = execFileSync("bash", [join(root, "scripts", "tools.sh"), "jaeger"], {
      encoding: "utf8",
    }).trim();
    const [otlpPort, otlpGrpcPort, queryPort, grpcPort] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const dir = tempDir();
    const config = join(dir, "jaeger.yaml");
    writeFileSync(
      config,
      `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:${queryPort}
    grpc:
      endpoint: 127.0.0.1:${grpcPort}
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:${otlpPort}
      grpc:
        endpoint: 127.0.0.1:${otlpGrpcPort}
processors:
  batch:
    timeout: 50ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`,
    );
    jaeger = spawn(bin, ["--config", config], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    jaeger.stdout?.on("data", (c: Buffer) => (jaegerLog += c.toString()));
    jaeger.stderr?.on("data", (c: Buffer) => (jaegerLog += c.toString()));
    queryUrl = `http://127.0.0.1:${queryPort}`;
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        if ((await fetch(`${queryUrl}/api/v3/services`)).ok) break;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error(`jaeger did not start:\n${jaegerLog}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const protocol of PROTOCOLS) {
      const endpoint =
        protocol === "grpc" ? `http://127.0.0.1:${otlpGrpcPort}` : `http://127.0.0.1:${otlpPort}`;
      tgs.set(
        protocol,
        await startTestToolgate(
          { TOOLGATE_TRACING_SCHEDULED_DELAY_MS: "20" },
          {
            otelEnv: {
              OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
              OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
              OTEL_SERVICE_NAME: "toolgate-e2e",
              OTEL_RESOURCE_ATTRIBUTES: `deployment.environment=${environment(protocol)}`,
            },
          },
        ),
      );
    }
  }, 600_000);

  afterAll(async () => {
    for (const tg of tgs.values()) await tg.stop();
    if (jaeger && jaeger.exitCode === null) {
      const exited = new Promise<void>((r) => jaeger.once("exit", () => r()));
      jaeger.kill("SIGTERM");
      const timer = setTimeout(() => jaeger.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
  });

  async function trace(traceId: string, wantSpans: number): Promise<JaegerSpan[]> {
    const deadline = Date.now() + 20_000;
    let last = "";
    for (;;) {
      const res = await fetch(`${queryUrl}/api/v3/traces/${traceId}`);
      last = await res.text();
      if (res.ok) {
        const body = JSON.parse(last) as {
          result?: {
            resourceSpans: Array<{
              resource: { attributes: OtlpAttr[] };
              scopeSpans: Array<{ spans: JaegerSpan[] }>;
            }>;
          };
        };
        const rs = body.result?.resourceSpans ?? [];
        const spans = rs.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans));
        if (spans.length >= wantSpans) {
          const service = rs[0]?.resource.attributes.find((a) => a.key === "service.name")?.value
            .stringValue;
          expect(service).toBe("toolgate-e2e");
          return spans;
        }
      }
      if (Date.now() > deadline) throw new Error(`trace ${traceId} incomplete in Jaeger: ${last}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /**
   * The traces Jaeger's search finds for `toolgate-e2e` spans whose resource
   * has deployment.environment = `env` (the v1 search API: /api/v3 cannot
   * filter by attribute), once they hold `wantTraces` traces.
   */
  async function tracesByEnvironment(env: string, wantTraces: number): Promise<JaegerV1Trace[]> {
    const deadline = Date.now() + 20_000;
    let last = "";
    for (;;) {
      const q = new URLSearchParams({
        service: "toolgate-e2e",
        tags: JSON.stringify({ "deployment.environment": env }),
        lookback: "1h",
        limit: "100",
      });
      const res = await fetch(`${queryUrl}/api/traces?${q.toString()}`);
      last = await res.text();
      if (res.ok) {
        const traces = (JSON.parse(last) as { data: JaegerV1Trace[] | null }).data ?? [];
        if (traces.length >= wantTraces) return traces;
      }
      if (Date.now() > deadline)
        throw new Error(`no traces with deployment.environment=${env} in Jaeger: ${last}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  test.each(PROTOCOLS)(
    "over %s: decisions and an action report join the agent's trace with their attributes, found by a resource attribute",
    async (protocol) => {
      const tg = tgs.get(protocol) as Toolgate;
      // a trace id of its own per protocol (both toolgates export to the one Jaeger)
      const traceId =
        protocol === "grpc"
          ? "4bf92f3577b34da6a3ce929d0e0e4736"
          : "0af7651916cd43dd8448eb211c80319c";
      const agentSpan = "b7ad6b7169203331";
      const traceparent = `00-${traceId}-${agentSpan}-01`;
      const base = tg.agentServer.url;

      const allow = await postJson(
        base,
        "/v1/decisions",
        refRequest({
          tool: "refunds.issue",
          args: { amount: 20, api_key: "sk-live-51HfakefakefakeKEYvalue123" },
        }),
        { traceparent },
      );
      const allowId = (allow.json as { decision_id: string }).decision_id;
      const deny = await postJson(
        base,
        "/access/v1/evaluation",
        refRequest({ tool: "records.delete" }),
        { traceparent },
      );
      expect(deny.json).toMatchObject({ decision: false });
      const report = await postJson(
        base,
        "/v1/actions",
        { decision_id: allowId, status: "ok", call_id: "c-1" },
        { traceparent },
      );
      expect(report.status).toBe(200);
      await tg.auditor?.flush();

      const spans = await trace(traceId, 3);
      for (const s of spans) {
        expect(hex(s.traceId)).toBe(traceId);
        expect(hex(s.parentSpanId ?? "")).toBe(agentSpan);
      }
      const byName = new Map(spans.map((s) => [s.name, s]));
      const refund = byName.get("authorize refunds.issue") as JaegerSpan;
      expect(attrs(refund)).toMatchObject({
        "gen_ai.tool.name": "refunds.issue",
        "gen_ai.agent.id": "support-triage",
        "toolgate.decision.id": allowId,
        "toolgate.decision.outcome": "allow",
        "toolgate.decision.reasons": ["granted"],
        "toolgate.subject.id": "alice",
        "toolgate.job.customer_id": "cust_1",
        "toolgate.policy.bundle": "support-triage",
      });
      const args = JSON.parse(attrs(refund)["toolgate.tool.arguments"] as string) as Record<
        string,
        unknown
      >;
      expect(args.amount).toBe(20);
      expect(JSON.stringify(spans)).not.toContain("sk-live-51Hfakefakefake");
      expect(attrs(byName.get("authorize records.delete") as JaegerSpan)).toMatchObject({
        "toolgate.decision.outcome": "deny",
        "toolgate.face": "authzen",
      });
      const action = byName.get("execute_tool refunds.issue") as JaegerSpan;
      expect(attrs(action)).toMatchObject({
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.call.id": "c-1",
        "toolgate.decision.id": allowId,
      });
      expect(action.links?.map((l) => hex(l.spanId))).toEqual([hex(refund.spanId)]);

      // found by the resource attribute alone: this toolgate's trace, not the other's
      const found = await tracesByEnvironment(environment(protocol), 1);
      const otherTraceId =
        protocol === "grpc"
          ? "0af7651916cd43dd8448eb211c80319c"
          : "4bf92f3577b34da6a3ce929d0e0e4736";
      const foundIds = found.map((t) => hex(t.traceID));
      expect(foundIds).toContain(traceId);
      expect(foundIds).not.toContain(otherTraceId);
      const agentTrace = found.find((t) => hex(t.traceID) === traceId) as JaegerV1Trace;
      expect(agentTrace.spans.map((s) => s.operationName).sort()).toEqual(
        [...byName.keys()].sort(),
      );
      for (const proc of Object.values(agentTrace.processes)) {
        const tags = Object.fromEntries(proc.tags.map((t) => [t.key, t.value]));
        expect(proc.serviceName).toBe("toolgate-e2e");
        expect(tags["deployment.environment"]).toBe(environment(protocol));
        expect(tags["service.instance.id"]).toEqual(expect.stringMatching(/^[0-9a-f-]{36}$/));
      }
    },
    60_000,
  );
});
