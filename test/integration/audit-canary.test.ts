/**
 * The no-leak invariant: secrets in tool arguments never reach an exported
 * span (real OTLP/HTTP JSON export to a receiver on loopback), a log line, a
 * trail record or the approvals store's human-facing copies in clear text —
 * unless the policy reveals that field. That includes caller values quoted in
 * free text: policy reason messages, refusal messages and tool names.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { Toolgate } from "../../src/app";
import { captureLogger } from "../helpers/capture";
import { buildWasmBundle } from "../helpers/opa";
import { startOtlpReceiver } from "../helpers/otlp";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

/** Every sink's text: exported OTLP bodies, log lines, trail files, approvals.db rows. */
async function sinks(
  tg: Toolgate,
  receiver: Awaited<ReturnType<typeof startOtlpReceiver>>,
  logs: ReturnType<typeof captureLogger>,
): Promise<Record<"spans" | "logs" | "trail" | "approvals", string>> {
  await tg.auditor?.flush();
  const dir = tg.config.audit.trail.dir;
  const db = new DatabaseSync(join(tg.config.state.dir, "approvals.db"), { readOnly: true });
  let approvals = "";
  try {
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
      .all()
      .map((r) => String(r.name));
    for (const t of tables)
      approvals += JSON.stringify(db.prepare(`SELECT * FROM "${t}"`).all()) + "\n";
  } finally {
    db.close();
  }
  return {
    spans: JSON.stringify(receiver.bodies),
    logs: logs.raw(),
    trail: readdirSync(dir)
      .map((f) => readFileSync(join(dir, f), "utf8"))
      .join(""),
    approvals,
  };
}

/** No probe appears in any sink, neither as is nor JSON-escaped (inside a JSON text attribute). */
function expectHidden(
  text: Record<string, string>,
  probes: Record<string, string>,
  except: Partial<Record<string, string[]>> = {},
): void {
  const found: string[] = [];
  for (const [sink, t] of Object.entries(text))
    for (const [name, p] of Object.entries(probes)) {
      if (except[sink]?.includes(name)) continue;
      const escaped = JSON.stringify(p).slice(1, -1);
      const twice = JSON.stringify(escaped).slice(1, -1);
      if (t.includes(p) || t.includes(escaped) || t.includes(twice))
        found.push(`${name} (${p}) in ${sink}`);
    }
  expect(found).toEqual([]);
}

const CANARIES = {
  openai: "sk-proj-Zq8mN3vT5wY1aB4cD7eF0gH2jK6lP9rS",
  jwt: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTk5OTk5OTk5OX0.kR8h2v3CbXhQm9yZpL4sT1uW6aE0dF5gJ7iK3nO2qPs",
  github: "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5",
  card: "4111 1111 1111 1111",
  aws: "AKIAIOSFODNN7EXAMPLE",
  plainUnderSecretKey: "correct horse battery staple",
};

describe.each([
  ["on the audit worker thread", "true"],
  ["on the main thread", "false"],
])("canary: no secret in clear text in spans, logs or the trail (audit %s)", (_where, worker) => {
  let tg: Toolgate;
  let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
  const logs = captureLogger("debug");

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    tg = await startTestToolgate(
      { TOOLGATE_TRACING_SCHEDULED_DELAY_MS: "20", TOOLGATE_AUDIT_WORKER: worker },
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

  test("caller values quoted in reasons, refusals and tool names stay hidden", async () => {
    const base = tg.agentServer.url;
    const decide = async (req: unknown, status = 200): Promise<Record<string, unknown>> => {
      const res = await postJson(base, "/v1/decisions", req);
      expect(res.status).toBe(status);
      return res.json as Record<string, unknown>;
    };
    // (a) a policy reason message quoting the job's customer
    const scoped = await decide(
      refRequest({ tool: "tickets.read", jobCustomer: "password=Cust0merCanary" }),
    );
    expect(JSON.stringify(scoped)).toContain("out_of_scope");
    // the caller gets its own value back in the HTTP answer: only the sinks are redacted
    expect(JSON.stringify(scoped)).toContain("Cust0merCanary");
    // (b) a tool name, and a subject, quoted in reasons and used in span names
    const unknown = await decide(refRequest({ tool: "token=T00lCanary" }));
    expect(JSON.stringify(unknown)).toContain("unknown_tool");
    await decide(refRequest({ tool: "tickets.read", user: "pw=Subj3ctCanary" }));
    for (const face of ["/access/v1/evaluation", "/v1/data/toolgate/decision"]) {
      const body = refRequest({ tool: "pin=T00lCanary2" });
      const res = await postJson(base, face, face.startsWith("/v1/data") ? { input: body } : body);
      expect(res.status).toBe(200);
    }
    // (c) refusal messages echoing the caller's value (agent_mismatch)
    const req = refRequest({ tool: "tickets.read" });
    const ctx = req.context as Record<string, unknown>;
    const refused = await decide(
      { ...req, context: { ...ctx, agent_id: { password: "Ag3ntCanary" } } },
      403,
    );
    expect(JSON.stringify(refused)).toContain("agent_mismatch");
    await decide({ ...req, context: { ...ctx, agent_id: { secret: { v: "N3stedCanary" } } } }, 403);
    await decide(
      {
        ...req,
        subject: { type: "user", id: "alice", properties: { act: { sub: "token=ActSubCanary" } } },
      },
      403,
    );
    // widened key names and card disguises in the arguments
    await decide(
      refRequest({
        tool: "refunds.issue",
        args: {
          amount: 20,
          pw: "PwArgCanary9",
          security_code: "SecCodeCanary",
          cvv: "CvvCanary77",
          parts: ["5555", "5555", "5555", "4444"],
          wide: "card ５１０５ １０５１ ０５１０ ５１００ please",
          dotted: "amex 3782.822463.10005 please",
          under: "visa 4012_8888_8888_1881 please",
        },
      }),
    );

    const text = await sinks(tg, receiver, logs);
    expect(text.trail).toContain("out_of_scope");
    expect(text.trail).toContain("agent_mismatch");
    expect(text.spans).toContain("unknown_tool");
    expectHidden(text, {
      customer: "Cust0merCanary",
      tool: "T00lCanary",
      tool2: "T00lCanary2",
      subject: "Subj3ctCanary",
      agent: "Ag3ntCanary",
      nested: "N3stedCanary",
      act: "ActSubCanary",
      pw: "PwArgCanary9",
      securityCode: "SecCodeCanary",
      cvv: "CvvCanary77",
      splitCard: '"5555","5555"',
      splitCardDigits: "5555555555554444",
      wideCard: "５１０５ １０５１",
      wideCardDigits: "5105105105105100",
      dotted: "3782.822463",
      dottedDigits: "378282246310005",
      under: "4012_8888",
      underDigits: "4012888888881881",
    });
    // the messages keep their text, quoting the redacted value
    expect(text.trail).toContain(
      "resource does not belong to the job's customer 'password=hmac-sha256:",
    );
    expect(text.trail).toMatch(/tool 'token=hmac-sha256:[^']+' is not in the tool registry/);
  });

  test("a needs_approval and its access request: no canary in the approvals store", async () => {
    const base = tg.agentServer.url;
    const req = refRequest({
      tool: "refunds.issue",
      args: {
        amount: 120,
        note: `customer pasted ${CANARIES.openai}`,
        password: "Appr0valPwCanary",
        pin: "PinCanary4",
        parts: ["4111", "1111", "1111", "1111"],
      },
    });
    const ctx = req.context as Record<string, unknown>;
    const asked = { ...req, context: { ...ctx, justification: "urgent, password=Just1fyCanary" } };
    const res = await postJson(base, "/v1/decisions", asked);
    expect(res.status).toBe(200);
    const d = res.json as { outcome: string; access_request: { evaluation_id: string } };
    expect(d.outcome).toBe("needs_approval");
    const submitted = await postJson(base, "/access/v1/requests", {
      ...req,
      context: { ...ctx, justification: `please, token=ReqJust1fyCanary ${CANARIES.jwt}` },
      denial: { evaluation_id: d.access_request.evaluation_id },
    });
    expect(submitted.status).toBe(201);

    const text = await sinks(tg, receiver, logs);
    expect(text.approvals).toContain(d.access_request.evaluation_id);
    expect(text.approvals).toContain("customer pasted hmac-sha256:");
    expectHidden(text, {
      openai: CANARIES.openai,
      jwt: CANARIES.jwt.slice(0, 40),
      password: "Appr0valPwCanary",
      pin: "PinCanary4",
      splitCard: '"4111","1111"',
      justify: "Just1fyCanary",
      requestJustify: "ReqJust1fyCanary",
    });
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

describe("canary: a policy's mask and messages quoting masked values", () => {
  const policy = `package toolgate
import rego.v1
customer := c if {
  c := input.request.context.job.customer_id
} else := "-"
decision := {
  "outcome": "needs_approval",
  "reasons": [{"code": "needs_human", "message": concat("", ["tool '", input.request.action.name, "' for customer '", customer, "' needs a human"])}],
  "obligations": [],
  "approval": {"approver_roles": ["lead"], "single_use": true, "ttl_seconds": 600},
  "tool": {"name": input.request.action.name, "class": "execute", "stage": "supervised"},
  "mask": [{"op": "hash", "path": "/context/job/customer_id"}],
  "shadow": {"outcome": "deny", "reasons": [{"code": "s", "message": concat("", ["shadow saw ", input.request.action.name, " for ", customer])}]},
}
`;
  let tg: Toolgate;
  let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
  const logs = captureLogger("debug");

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    tg = await startTestToolgate(
      {
        TOOLGATE_BUNDLE: buildWasmBundle({ "p.rego": policy }),
        TOOLGATE_TRACING_SCHEDULED_DELAY_MS: "20",
      },
      {
        otelEnv: {
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        },
        log: logs.log,
      },
    );
  });
  afterAll(async () => {
    await tg.stop();
    await receiver.close();
  });

  test("a value the policy hashes is hashed where its messages quote it; tool names everywhere", async () => {
    const base = tg.agentServer.url;
    const req = refRequest({ tool: "token=T00lNameCanary", jobCustomer: "cust_Hidd3nByPolicy" });
    const res = await postJson(base, "/v1/decisions", req);
    expect(res.status).toBe(200);
    const d = res.json as { outcome: string; access_request: { evaluation_id: string } };
    expect(d.outcome).toBe("needs_approval");
    const submitted = await postJson(base, "/access/v1/requests", {
      ...req,
      denial: { evaluation_id: d.access_request.evaluation_id },
    });
    expect(submitted.status).toBe(201);

    const text = await sinks(tg, receiver, logs);
    expect(text.trail).toContain("needs_human");
    expect(text.approvals).toContain(d.access_request.evaluation_id);
    // the approvals store's copy for approvers applies the policy's mask too
    expectHidden(text, { tool: "T00lNameCanary", customer: "cust_Hidd3nByPolicy" });
    expect(text.trail).toContain("for customer 'hmac-sha256:");
  });
});
