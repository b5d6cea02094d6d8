/**
 * Audit through a real sidecar: every decision and action leaves a span (real
 * OTel SDK, in-memory exporter), a JSON log line and a hash-chained trail
 * record, all redacted.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace";
import type { Toolgate } from "../../src/app";
import { verifyTrail } from "../../src/trail";
import { captureLogger } from "../helpers/capture";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID = "00f067aa0ba902b7";
const traceparent = `00-${TRACE_ID}-${PARENT_ID}-01`;

interface Harness {
  tg: Toolgate;
  base: string;
  exporter: InMemorySpanExporter;
  logs: ReturnType<typeof captureLogger>;
  spans(): ReadableSpan[];
  trailText(): string;
}

async function harness(env: Record<string, string> = {}): Promise<Harness> {
  const exporter = new InMemorySpanExporter();
  const logs = captureLogger();
  const tg = await startTestToolgate(env, { spanExporter: exporter, log: logs.log });
  return {
    tg,
    base: tg.agentServer.url,
    exporter,
    logs,
    spans: () => exporter.getFinishedSpans(),
    trailText: () => {
      const dir = tg.config.audit.trail.dir;
      return readdirSync(dir)
        .filter((f) => f.endsWith(".jsonl"))
        .sort()
        .map((f) => readFileSync(join(dir, f), "utf8"))
        .join("");
    },
  };
}

async function settle(h: Harness): Promise<void> {
  await h.tg.auditor?.flush();
}

describe("a span, a log line and a trail record for every decision", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness();
  });
  afterAll(async () => {
    await h.tg.stop();
  });

  test.each([
    ["native", "/v1/decisions", (r: unknown) => r],
    ["authzen", "/access/v1/evaluation", (r: unknown) => r],
    ["opa", "/v1/data/toolgate/decision", (r: unknown) => ({ input: r })],
  ])("%s face: the decision span is a child of the agent's span", async (face, path, wrap) => {
    const req = refRequest({ tool: "refunds.issue", args: { amount: 120, currency: "EUR" } });
    (req.action as { properties: Record<string, unknown> }).properties.call_id = `call-${face}`;
    const res = await postJson(h.base, path, wrap(req), {
      traceparent,
      "x-request-id": `rid-${face}`,
    });
    expect(res.status).toBe(200);
    await settle(h);
    const span = h.spans().find((s) => s.attributes["gen_ai.tool.call.id"] === `call-${face}`);
    expect(span).toBeDefined();
    const s = span as ReadableSpan;
    expect(s.name).toBe("authorize refunds.issue");
    expect(s.spanContext().traceId).toBe(TRACE_ID);
    expect(s.parentSpanContext?.spanId).toBe(PARENT_ID);
    expect(s.attributes).toMatchObject({
      "gen_ai.tool.name": "refunds.issue",
      "gen_ai.agent.id": "support-triage",
      "toolgate.face": face,
      "toolgate.request_id": `rid-${face}`,
      "toolgate.decision.outcome": "needs_approval",
      "toolgate.decision.reasons": ["approval_required"],
      "toolgate.policy.bundle": "support-triage",
      "toolgate.tool.class": "execute",
      "toolgate.subject.id": "alice",
      "toolgate.subject.method": "trusted",
      "toolgate.job.id": "job_1",
      "toolgate.job.purpose": "support_triage",
      "toolgate.job.customer_id": "cust_1",
      "toolgate.resource.type": "customer",
      "toolgate.resource.id": "cust_1",
      "toolgate.approval.required_roles": ["support_manager"],
      "http.request.method": "POST",
      "url.path": path,
    });
    expect(JSON.parse(s.attributes["toolgate.tool.arguments"] as string)).toEqual({
      amount: 120,
      currency: "EUR",
    });
    expect(s.attributes["toolgate.policy.revision"]).toMatch(/^[0-9a-f]{16}$/);
    const decisionId = s.attributes["toolgate.decision.id"] as string;

    const line = h.logs.lines().find((l) => l.decision_id === decisionId);
    expect(line).toMatchObject({
      event: "decision",
      level: "info",
      outcome: "needs_approval",
      face,
      request_id: `rid-${face}`,
      trace_id: TRACE_ID,
      span_id: s.spanContext().spanId,
      subject: { id: "alice" },
      tool: { name: "refunds.issue", class: "execute", call_id: `call-${face}` },
    });
    expect(h.trailText()).toContain(`"decision_id":"${decisionId}"`);
  });

  test("an AuthZEN batch: one request span, one child span per item", async () => {
    const res = await postJson(
      h.base,
      "/access/v1/evaluations",
      {
        evaluations: [refRequest({ tool: "tickets.read" }), refRequest({ tool: "billing.update" })],
      },
      { traceparent },
    );
    expect(res.status).toBe(200);
    await settle(h);
    const batch = h.spans().find((s) => s.name === "POST /access/v1/evaluations");
    expect(batch?.parentSpanContext?.spanId).toBe(PARENT_ID);
    const children = h
      .spans()
      .filter((s) => s.parentSpanContext?.spanId === batch?.spanContext().spanId);
    expect(children.map((c) => c.attributes["toolgate.decision.outcome"])).toEqual([
      "allow",
      "deny",
    ]);
  });

  test("a refused request (agent mismatch) is recorded too", async () => {
    const req = { ...refRequest({ tool: "tickets.read" }), context: { agent: { id: "intruder" } } };
    const res = await postJson(h.base, "/v1/decisions", req);
    expect(res.status).toBe(403);
    await settle(h);
    expect(h.spans().some((s) => s.attributes["toolgate.error.code"] === "agent_mismatch")).toBe(
      true,
    );
    expect(
      h.logs
        .lines()
        .some(
          (l) =>
            l.event === "decision.refused" &&
            (l.error as { code: string }).code === "agent_mismatch",
        ),
    ).toBe(true);
    expect(h.trailText()).toContain('"kind":"refusal"');
  });

  test("the trail verifies, and holds every decision", async () => {
    await h.tg.auditor?.flush();
    const decisions = h.logs.lines().filter((l) => l.event === "decision").length;
    const result = verifyTrail([h.tg.config.audit.trail.dir]);
    expect(result.ok).toBe(true);
    expect(
      h
        .trailText()
        .split("\n")
        .filter((l) => l.includes('"kind":"decision"')),
    ).toHaveLength(decisions);
  });
});

describe("action reports: POST /v1/actions", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness();
  });
  afterAll(async () => {
    await h.tg.stop();
  });

  async function decide(req: Record<string, unknown>): Promise<string> {
    const res = await postJson(h.base, "/v1/decisions", req);
    return (res.json as { decision_id: string }).decision_id;
  }

  test("an allowed call's report becomes an execute_tool span linked to its decision", async () => {
    const id = await decide(refRequest({ tool: "refunds.issue", args: { amount: 20 } }));
    const res = await postJson(
      h.base,
      "/v1/actions",
      {
        decision_id: id,
        tool: "refunds.issue",
        call_id: "call-77",
        status: "ok",
        read: [{ type: "customer", id: "cust_1" }],
        changed: [
          {
            resource: { type: "refund", id: "rf_1" },
            fields: [{ path: "amount", before: null, after: 20 }],
          },
        ],
      },
      { traceparent },
    );
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ recorded: true, decision_id: id });
    await settle(h);
    const decisionSpan = h
      .spans()
      .find((s) => s.attributes["toolgate.decision.id"] === id && s.name.startsWith("authorize"));
    const action = h.spans().find((s) => s.name === "execute_tool refunds.issue");
    expect(action).toBeDefined();
    expect(action?.attributes).toMatchObject({
      "gen_ai.operation.name": "execute_tool",
      "gen_ai.tool.name": "refunds.issue",
      "gen_ai.tool.call.id": "call-77",
      "gen_ai.agent.id": "support-triage",
      "toolgate.decision.id": id,
      "toolgate.action.status": "ok",
    });
    expect(action?.spanContext().traceId).toBe(TRACE_ID);
    expect(action?.links.map((l) => l.context.spanId)).toEqual([
      decisionSpan?.spanContext().spanId,
    ]);
    expect(JSON.parse(action?.attributes["toolgate.action.changed"] as string)).toEqual([
      {
        resource: { type: "refund", id: "rf_1" },
        fields: [{ path: "amount", before: null, after: 20 }],
      },
    ]);
    expect(h.logs.lines().some((l) => l.event === "action" && l.decision_id === id)).toBe(true);
    expect(h.trailText()).toContain('"kind":"action"');
  });

  test("values under the decision's redact obligation are hashed in the report", async () => {
    const id = await decide(refRequest({ tool: "accounts.summary.read" }));
    const res = await postJson(h.base, "/v1/actions", {
      decision_id: id,
      status: "ok",
      changed: [
        {
          resource: { type: "customer", id: "cust_1" },
          fields: [
            { path: "payment.iban_hint", before: "none", after: "ends 3000" },
            { path: "payment.card_number", before: "x-1", after: "x-2" },
          ],
        },
      ],
    });
    expect(res.status).toBe(200);
    await settle(h);
    const line = h.logs.lines().find((l) => l.event === "action" && l.decision_id === id);
    const text = JSON.stringify(line);
    expect(text).not.toContain("x-1");
    expect(text).not.toContain("x-2");
    expect(text).toContain("ends 3000");
  });

  const refusals: Array<[string, () => Promise<Record<string, unknown>>, string]> = [
    [
      "an unknown decision",
      () => Promise.resolve({ decision_id: "00000000-0000-0000-0000-000000000000", status: "ok" }),
      "action_unknown_decision",
    ],
    [
      "a denied decision",
      async () => ({
        decision_id: await decide(refRequest({ tool: "billing.update" })),
        status: "ok",
      }),
      "action_not_allowed",
    ],
    [
      "a decision that needed approval",
      async () => ({
        decision_id: await decide(refRequest({ tool: "refunds.issue", args: { amount: 900 } })),
        status: "ok",
      }),
      "action_not_allowed",
    ],
    [
      "another tool than decided",
      async () => ({
        decision_id: await decide(refRequest({ tool: "tickets.read" })),
        tool: "refunds.issue",
        status: "ok",
      }),
      "action_tool_mismatch",
    ],
  ];

  test.each(refusals)("%s → 409 and a security event", async (_name, make, code) => {
    const body = await make();
    const res = await postJson(h.base, "/v1/actions", body);
    expect(res.status).toBe(409);
    expect((res.json as { code: string }).code).toBe(code);
    await settle(h);
    const events = h.logs
      .lines()
      .filter((l) => l.event === "security.action_without_permission" && l.code === code);
    expect(events.length).toBeGreaterThan(0);
    expect(h.spans().some((s) => s.name === "toolgate.security action_without_permission")).toBe(
      true,
    );
  });

  test("a second report for one decision is refused", async () => {
    const id = await decide(refRequest({ tool: "tickets.read" }));
    expect((await postJson(h.base, "/v1/actions", { decision_id: id, status: "ok" })).status).toBe(
      200,
    );
    const again = await postJson(h.base, "/v1/actions", { decision_id: id, status: "ok" });
    expect(again.status).toBe(409);
    expect((again.json as { code: string }).code).toBe("action_already_reported");
  });

  test("a malformed report is a 400 naming the field", async () => {
    const res = await postJson(h.base, "/v1/actions", { decision_id: "x", status: "maybe" });
    expect(res.status).toBe(400);
    expect((res.json as { message: string }).message).toMatch(/status/);
  });
});
