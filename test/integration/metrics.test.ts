/** Prometheus metrics on the control port, from real decisions. */
import { bearer, token } from "../helpers/tokens";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

function sample(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || !line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{([^}]*)\})? ([0-9.e+-]+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[3] ?? "").split(",").filter(Boolean);
    if (want.every((w) => have.includes(w)) && (want.length > 0 || have.length === 0))
      return Number(m[4]);
  }
  return undefined;
}

test("decisions, refusals, approvals and readiness are counted", async () => {
  const tg = await startTestToolgate({ TOOLGATE_CONTROL_PORT: "0" });
  try {
    const base = tg.agentServer.url;
    await postJson(base, "/v1/decisions", refRequest({ tool: "tickets.read" }));
    await postJson(base, "/v1/decisions", refRequest({ tool: "tickets.read" }));
    await postJson(base, "/access/v1/evaluation", refRequest({ tool: "billing.update" }));
    await postJson(base, "/v1/decisions", refRequest({ tool: "made.up.tool.${random}" }));
    const na = await postJson(
      base,
      "/v1/decisions",
      refRequest({ tool: "refunds.issue", args: { amount: 120 } }),
    );
    const evaluationId = (na.json as { access_request: { evaluation_id: string } }).access_request
      .evaluation_id;
    await postJson(base, "/access/v1/requests", {
      ...refRequest({ tool: "refunds.issue", args: { amount: 120 } }),
      denial: { evaluation_id: evaluationId },
    });
    await postJson(base, "/v1/decisions", {
      ...refRequest({ tool: "tickets.read" }),
      context: { agent_id: "x" },
    });

    const res = await http(tg.controlServer?.url ?? "", "GET", "/metrics");
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
    const m = res.text;
    expect(
      sample(m, "toolgate_decisions_total", {
        outcome: "allow",
        tool: "tickets.read",
        reason: "granted",
      }),
    ).toBe(2);
    expect(sample(m, "toolgate_decisions_total", { outcome: "deny", tool: "billing.update" })).toBe(
      1,
    );
    // a tool the policy does not know is one label value, whatever its name: no cardinality blow-up
    expect(
      sample(m, "toolgate_decisions_total", {
        outcome: "deny",
        tool: "unknown",
        reason: "unknown_tool",
      }),
    ).toBe(1);
    expect(
      sample(m, "toolgate_decisions_total", { outcome: "needs_approval", tool: "refunds.issue" }),
    ).toBe(1);
    expect(sample(m, "toolgate_decision_refusals_total", { code: "agent_mismatch" })).toBe(1);
    expect(sample(m, "toolgate_decision_duration_seconds_count")).toBe(5);
    expect(sample(m, "toolgate_decision_duration_seconds_bucket", { le: "+Inf" })).toBe(5);
    expect(sample(m, "toolgate_approval_events_total", { event: "requested" })).toBe(1);
    expect(sample(m, "toolgate_approvals_pending")).toBe(1);
    expect(sample(m, "toolgate_ready")).toBe(1);
    expect(sample(m, "toolgate_bundle_events_total", { result: "activated" })).toBe(1);
    expect(m).toMatch(
      /^toolgate_bundle_active\{bundle="support-triage",revision="[0-9a-f]{16}"\} 1$/m,
    );
    expect(m).toMatch(/^# TYPE toolgate_decisions_total counter$/m);
    expect(m).toMatch(/^# TYPE toolgate_decision_duration_seconds histogram$/m);
  } finally {
    await tg.stop();
  }
});

test("scrape authentication can be required", async () => {
  const tg = await startTestToolgate({
    TOOLGATE_CONTROL_PORT: "0",
    TOOLGATE_CONTROL_METRICS_AUTH: "true",
  });
  try {
    const url = tg.controlServer?.url ?? "";
    expect((await http(url, "GET", "/metrics")).status).toBe(401);
    expect(
      (await http(url, "GET", "/metrics", undefined, bearer(await token("prometheus")))).status,
    ).toBe(200);
  } finally {
    await tg.stop();
  }
});
