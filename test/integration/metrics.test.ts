/** Prometheus metrics on the control port, from real decisions. */
import { Metrics } from "../../src/metrics";
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

    // counted per decision, added up at each scrape: the next scrape carries on from this one
    await postJson(base, "/v1/decisions", refRequest({ tool: "tickets.read" }));
    const again = (await http(tg.controlServer?.url ?? "", "GET", "/metrics")).text;
    const allowed = { outcome: "allow", tool: "tickets.read", reason: "granted" };
    expect(sample(again, "toolgate_decisions_total", allowed)).toBe(3);
    expect(sample(again, "toolgate_decision_refusals_total", { code: "agent_mismatch" })).toBe(1);
    expect(sample(again, "toolgate_decision_duration_seconds_count")).toBe(6);
    expect((await http(tg.controlServer?.url ?? "", "GET", "/metrics")).text).toContain(
      'toolgate_decisions_total{outcome="allow",tool="tickets.read",reason="granted"} 3\n',
    );
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

/** Every `# TYPE` line's metric name, in order. */
function typedNames(text: string): string[] {
  return [...text.matchAll(/^# TYPE (\S+) \S+$/gm)].map((m) => m[1] as string);
}

test("process and Node metrics (prom-client defaults) on two toolgates in one process", async () => {
  const a = await startTestToolgate({ TOOLGATE_CONTROL_PORT: "0" });
  const b = await startTestToolgate({ TOOLGATE_CONTROL_PORT: "0" });
  try {
    await postJson(a.agentServer.url, "/v1/decisions", refRequest({ tool: "tickets.read" }));
    for (const tg of [a, b]) {
      const res = await http(tg.controlServer?.url ?? "", "GET", "/metrics");
      expect(res.status).toBe(200);
      expect(res.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8");
      const m = res.text;
      for (const name of [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "nodejs_eventloop_lag_seconds",
        "nodejs_heap_size_used_bytes",
      ]) {
        expect(sample(m, name)).toBeGreaterThanOrEqual(0);
      }
      expect(m).toMatch(/^# TYPE nodejs_gc_duration_seconds histogram$/m);
      expect(m).toMatch(/^# TYPE process_cpu_seconds_total counter$/m);
      // no name twice (the default metrics are shared, not registered twice), no prefix clash
      const names = typedNames(m);
      expect(new Set(names).size).toBe(names.length);
      expect(names.filter((n) => !/^(toolgate|process|nodejs)_/.test(n))).toEqual([]);
    }
    // each toolgate counts its own decisions: the registries are separate
    const ma = (await http(a.controlServer?.url ?? "", "GET", "/metrics")).text;
    const mb = (await http(b.controlServer?.url ?? "", "GET", "/metrics")).text;
    expect(sample(ma, "toolgate_decisions_total", { outcome: "allow", tool: "tickets.read" })).toBe(
      1,
    );
    expect(
      sample(mb, "toolgate_decisions_total", { outcome: "allow", tool: "tickets.read" }),
    ).toBeUndefined();
  } finally {
    await a.stop();
    await b.stop();
  }
});

test("Metrics: gauges read at scrape, labelled or not; instances independent", async () => {
  const one = new Metrics();
  const two = new Metrics();
  let pending = 3;
  one.addGauge({ name: "toolgate_approvals_pending", help: "p", read: () => [{ value: pending }] });
  two.addGauge({ name: "toolgate_approvals_pending", help: "p", read: () => [{ value: 7 }] });
  one.addGauge({
    name: "toolgate_component_status",
    help: "c",
    read: () => [
      { labels: { component: "audit" }, value: 1 },
      { labels: { component: "bundle" }, value: -1 },
    ],
  });
  one.addGauge({ name: "toolgate_bundle_active", help: "b", read: () => [] });
  one.approvals.inc({ event: "requested" });
  one.bundleEvents.inc({ result: "rejected", code: "bad_signature" });
  let m = await one.render();
  expect(sample(m, "toolgate_approvals_pending")).toBe(3);
  expect(sample(m, "toolgate_component_status", { component: "bundle" })).toBe(-1);
  expect(m).toMatch(/^# TYPE toolgate_bundle_active gauge$/m);
  expect(m).not.toMatch(/^toolgate_bundle_active/m);
  expect(
    sample(m, "toolgate_bundle_events_total", { result: "rejected", code: "bad_signature" }),
  ).toBe(1);
  pending = 0;
  m = await one.render();
  expect(sample(m, "toolgate_approvals_pending")).toBe(0);
  const m2 = await two.render();
  expect(sample(m2, "toolgate_approvals_pending")).toBe(7);
  expect(sample(m2, "toolgate_approval_events_total", { event: "requested" })).toBeUndefined();
  expect(sample(m2, "process_cpu_seconds_total")).toBeGreaterThanOrEqual(0);
});
