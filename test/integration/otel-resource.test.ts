/**
 * The spans' resource as a real OTLP receiver gets it from toolgates whose
 * audit runs on the worker thread: OTEL_RESOURCE_ATTRIBUTES (percent-decoded),
 * OTEL_SERVICE_NAME, host and process attributes, and a service.instance.id
 * that tells two toolgates apart.
 */
import { startOtlpReceiver } from "../helpers/otlp";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

type Resource = { attributes: Array<{ key: string; value: Record<string, unknown> }> };

function resources(bodies: unknown[]): Array<Record<string, unknown>> {
  return bodies.flatMap((b) =>
    ((b as { resourceSpans?: Array<{ resource: Resource }> }).resourceSpans ?? []).map((rs) =>
      Object.fromEntries(
        rs.resource.attributes.map((a) => [a.key, Object.values(a.value)[0]] as const),
      ),
    ),
  );
}

test("a decision span's resource carries OTEL_RESOURCE_ATTRIBUTES and a service.instance.id per toolgate", async () => {
  const receiver = await startOtlpReceiver();
  const otelEnv = {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_SERVICE_NAME: "tg-under-test",
    OTEL_RESOURCE_ATTRIBUTES:
      "deployment.environment=ci, k8s.pod.name=agent-7f%2C9 ,k8s.namespace.name=agents,,service.name=ignored",
  };
  const env = { TOOLGATE_TRACING_SCHEDULED_DELAY_MS: "10" };
  const a = await startTestToolgate(env, { otelEnv });
  const b = await startTestToolgate(env, { otelEnv });
  try {
    for (const tg of [a, b]) {
      const r = await postJson(
        tg.agentServer.url,
        "/v1/decisions",
        refRequest({ tool: "tickets.read" }),
      );
      expect(r.status).toBe(200);
    }
    const instances = (): number =>
      new Set(resources(receiver.bodies).map((r) => r["service.instance.id"])).size;
    for (let i = 0; i < 200 && instances() < 2; i++) await new Promise((r) => setTimeout(r, 25));
    const got = resources(receiver.bodies);
    expect(got.length).toBeGreaterThanOrEqual(2);
    for (const res of got) {
      expect(res).toMatchObject({
        "deployment.environment": "ci",
        "k8s.pod.name": "agent-7f,9",
        "k8s.namespace.name": "agents",
        "service.name": "tg-under-test", // OTEL_SERVICE_NAME wins over the attribute
        "process.pid": process.pid,
        "process.runtime.name": "nodejs",
        "process.runtime.version": process.versions.node,
        "telemetry.sdk.language": "nodejs",
      });
      expect(typeof res["host.name"]).toBe("string");
      expect(typeof res["service.version"]).toBe("string");
      expect(res["service.instance.id"]).toMatch(/^[0-9a-f-]{36}$/);
      expect(res["process.command_args"]).toBeUndefined(); // the command line is not exported
    }
    const ids = new Set(got.map((r) => r["service.instance.id"]));
    expect(ids.size).toBe(2);
  } finally {
    await a.stop();
    await b.stop();
    await receiver.close();
  }
}, 30_000);
