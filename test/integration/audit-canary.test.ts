/**
 * The no-leak invariant: secrets in tool arguments never reach an exported
 * span (real OTLP/HTTP JSON export to a receiver on loopback), a log line or a
 * trail record in clear text — unless the policy reveals that field.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { captureLogger } from "../helpers/capture";
import { startOtlpReceiver } from "../helpers/otlp";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

const CANARIES = {
  openai: "sk-proj-Zq8mN3vT5wY1aB4cD7eF0gH2jK6lP9rS",
  jwt: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTk5OTk5OTk5OX0.kR8h2v3CbXhQm9yZpL4sT1uW6aE0dF5gJ7iK3nO2qPs",
  github: "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5",
  card: "4111 1111 1111 1111",
  aws: "AKIAIOSFODNN7EXAMPLE",
  plainUnderSecretKey: "correct horse battery staple",
};

describe("canary: no secret in clear text in spans, logs or the trail", () => {
  let tg: Toolgate;
  let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
  const logs = captureLogger("debug");

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    tg = await startTestToolgate(
      { TOOLGATE_TRACING_SCHEDULED_DELAY_MS: "20" },
      {
        otelEnv: {
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_SERVICE_NAME: "toolgate-canary",
        },
        log: logs.log,
      },
    );
  });
  afterAll(async () => {
    await tg.stop();
    await receiver.close();
  });

  test("every face, every outcome, an action report: the canaries stay hidden", async () => {
    const args = {
      amount: 20,
      note: `customer pasted ${CANARIES.openai} and card ${CANARIES.card} in the chat`,
      auth_header: `Bearer ${CANARIES.jwt}`,
      password: CANARIES.plainUnderSecretKey,
      nested: { items: [{ gh: CANARIES.github }, { key_id: CANARIES.aws }] },
    };
    const base = tg.agentServer.url;
    const requests = [
      refRequest({ tool: "refunds.issue", args }),
      refRequest({ tool: "refunds.issue", args: { ...args, amount: 120 } }),
      refRequest({ tool: "billing.update", args }),
    ];
    let allowId = "";
    for (const r of requests) {
      const res = await postJson(base, "/v1/decisions", r);
      expect(res.status).toBe(200);
      if ((res.json as { outcome: string }).outcome === "allow")
        allowId = (res.json as { decision_id: string }).decision_id;
      expect((await postJson(base, "/access/v1/evaluation", r)).status).toBe(200);
      expect((await postJson(base, "/v1/data/toolgate/decision", { input: r })).status).toBe(200);
    }
    expect((await postJson(base, "/access/v1/evaluations", { evaluations: requests })).status).toBe(
      200,
    );
    // a refused request and a security event carry arguments too
    expect(
      (await postJson(base, "/v1/decisions", { ...requests[0], context: { agent_id: "evil" } }))
        .status,
    ).toBe(403);
    const report = await postJson(base, "/v1/actions", {
      decision_id: allowId,
      status: "error",
      error: { type: "upstream", message: `gateway said token ${CANARIES.github}` },
      changed: [
        {
          resource: { type: "refund", id: "rf_9" },
          fields: [{ path: "memo", before: "", after: CANARIES.openai }],
        },
      ],
    });
    expect(report.status).toBe(200);
    expect(
      (
        await postJson(base, "/v1/actions", {
          decision_id: allowId,
          status: "ok",
          error: { message: CANARIES.jwt },
        })
      ).status,
    ).toBe(409);

    await tg.auditor?.flush();
    const exported = JSON.stringify(receiver.bodies);
    const logText = logs.raw();
    const dir = tg.config.audit.trail.dir;
    const trail = readdirSync(dir)
      .map((f) => readFileSync(join(dir, f), "utf8"))
      .join("");

    // the sinks really received the records
    expect(receiver.spans().length).toBeGreaterThanOrEqual(13);
    expect(exported).toContain("authorize refunds.issue");
    expect(logText).toContain('"event":"decision"');
    expect(trail).toContain('"kind":"action"');

    for (const [name, secret] of Object.entries(CANARIES)) {
      const probes = [secret, secret.replace(/ /g, ""), secret.slice(0, 16)];
      for (const p of probes) {
        expect({ name, probe: p, inSpans: exported.includes(p) }).toEqual({
          name,
          probe: p,
          inSpans: false,
        });
        expect({ name, probe: p, inLogs: logText.includes(p) }).toEqual({
          name,
          probe: p,
          inLogs: false,
        });
        expect({ name, probe: p, inTrail: trail.includes(p) }).toEqual({
          name,
          probe: p,
          inTrail: false,
        });
      }
    }
    // innocent data survives, and hashed values correlate across sinks
    expect(trail).toContain("customer pasted");
    const hashes = trail.match(/hmac-sha256:[A-Za-z0-9._-]+:[A-Za-z0-9_-]+/g) ?? [];
    expect(hashes.length).toBeGreaterThan(0);
    expect(logText).toContain(hashes[0] as string);
  });
});
