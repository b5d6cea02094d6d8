/**
 * The observability assets the chart ships: the alerting rules
 * (helm/toolgate/files/prometheus-rules.yaml) checked by the pinned promtool
 * (`check rules`, and `test rules` with unit tests for several alerts), the
 * Grafana dashboard (helm/toolgate/dashboards/toolgate.json) checked against a
 * structural schema, and every metric name either of them queries compared with
 * what real toolgates expose on /metrics (standalone and fleet mode). The chart
 * renders both when enabled.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Ajv from "ajv";
import { parseAllDocuments, parse as parseYaml, stringify } from "yaml";
import { freePort } from "../helpers/net";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

const root = join(__dirname, "..", "..");
const chart = join(root, "helm", "toolgate");
const rulesFile = join(chart, "files", "prometheus-rules.yaml");
const dashboardFile = join(chart, "dashboards", "toolgate.json");

function tool(name: string): string {
  const r = spawnSync("bash", [join(root, "scripts", "tools.sh"), name], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`scripts/tools.sh ${name}: ${r.stderr}`);
  return r.stdout.trim();
}

type Rule = {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
};
type RuleFile = { groups: Array<{ name: string; rules: Rule[] }> };

type Target = { refId: string; expr: string; datasource?: { type: string; uid: string } };
type Panel = {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
  panels?: Panel[];
};
type Dashboard = {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query?: unknown }> };
};

const rules = parseYaml(readFileSync(rulesFile, "utf8")) as RuleFile;
const dashboard = JSON.parse(readFileSync(dashboardFile, "utf8")) as Dashboard;
const allRules = rules.groups.flatMap((g) => g.rules);
const allPanels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);

/** The metric names a PromQL expression uses (toolgate's own and the Node/process defaults). */
function metricNames(expr: string): string[] {
  const noStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  return [...new Set(noStrings.match(/\b(?:toolgate|process|nodejs)_[a-zA-Z0-9_]+\b/g) ?? [])];
}

/** Names a scrape exposes, with a histogram's _bucket/_sum/_count series. */
function exposedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    names.add(name);
    if (type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(name + s);
  }
  return names;
}

describe("alerting rules (promtool)", () => {
  const promtool = tool("promtool");

  test("promtool check rules accepts the shipped rule file", () => {
    const r = spawnSync(promtool, ["check", "rules", rulesFile], { encoding: "utf8" });
    expect(r.stderr + r.stdout).toMatch(/SUCCESS: \d+ rules found/);
    expect(r.status).toBe(0);
  });

  test("the alerts asked for are there, each with a severity and a summary", () => {
    const names = allRules.map((r) => r.alert);
    for (const a of [
      "ToolgateNotReady",
      "ToolgateBundleRejected",
      "ToolgateDenyRateSpike",
      "ToolgateAuditBacklogGrowing",
      "ToolgateAuditUnavailable",
      "ToolgateSpansDropped",
      "ToolgateFleetStreamStale",
      "ToolgateEventLoopLagHigh",
      "ToolgateApprovalsPendingTooLong",
    ])
      expect(names).toContain(a);
    for (const r of allRules) {
      expect(r.labels?.severity).toMatch(/^(critical|warning)$/);
      expect(r.annotations?.summary).toBeTruthy();
    }
  });

  test("promtool test rules: alerts fire when they should and not before", () => {
    const dir = mkdtempSync(join(tmpdir(), "toolgate-rules-"));
    const pod = { namespace: "agents", pod: "tg-0", job: "tg-toolgate-control" };
    const sel = (name: string, extra: Record<string, string> = {}) =>
      `${name}{${Object.entries({ ...pod, ...extra })
        .map(([k, v]) => `${k}="${v}"`)
        .join(",")}}`;
    /** An expected alert: its labels, its summary as rendered, its description (labels filled in). */
    const alert = (name: string, labels: Record<string, string>, summary: string) => {
      const all: Record<string, string> = { ...pod, ...labels };
      const rule = allRules.find((r) => r.alert === name);
      const description = (rule?.annotations?.description ?? "").replace(
        /\{\{ \$labels\.(\w+) \}\}/g,
        (_m, k: string) => all[k] ?? "",
      );
      return { exp_labels: all, exp_annotations: { summary, description } };
    };
    const tests = {
      rule_files: [rulesFile],
      evaluation_interval: "1m",
      tests: [
        {
          // no bundle for 10 minutes: not ready fires after its 5 minutes, not at 3
          interval: "1m",
          input_series: [
            { series: sel("toolgate_ready"), values: "0x15" },
            { series: sel("toolgate_component_status", { component: "bundle" }), values: "0x15" },
          ],
          alert_rule_test: [
            { eval_time: "3m", alertname: "ToolgateNotReady", exp_alerts: [] },
            {
              eval_time: "10m",
              alertname: "ToolgateNotReady",
              exp_alerts: [
                alert(
                  "ToolgateNotReady",
                  { severity: "critical" },
                  "toolgate agents/tg-0 has no active policy bundle",
                ),
              ],
            },
          ],
        },
        {
          // a bundle refused at minute 5; nothing before
          interval: "1m",
          input_series: [
            {
              series: sel("toolgate_bundle_events_total", {
                result: "rejected",
                code: "bad_signature",
              }),
              values: "0 0 0 0 0 1 1 1 1 1",
            },
          ],
          alert_rule_test: [
            { eval_time: "4m", alertname: "ToolgateBundleRejected", exp_alerts: [] },
            {
              eval_time: "7m",
              alertname: "ToolgateBundleRejected",
              exp_alerts: [
                alert(
                  "ToolgateBundleRejected",
                  { severity: "warning", result: "rejected", code: "bad_signature" },
                  "toolgate agents/tg-0 refused a policy bundle (bad_signature)",
                ),
              ],
            },
          ],
        },
        {
          // the audit backlog climbs past 1000 and keeps climbing; spans dropped once
          interval: "1m",
          input_series: [
            { series: sel("toolgate_audit_backlog"), values: "500+100x30" },
            { series: sel("toolgate_spans_dropped"), values: "0x10 5x20" },
            {
              series: sel("toolgate_decisions_total", {
                outcome: "deny",
                tool: "a",
                reason: "audit_unavailable",
              }),
              values: "0x10 0+5x10",
            },
          ],
          alert_rule_test: [
            { eval_time: "9m", alertname: "ToolgateAuditUnavailable", exp_alerts: [] },
            {
              eval_time: "15m",
              alertname: "ToolgateAuditUnavailable",
              exp_alerts: [
                {
                  // summed per pod: the job label goes
                  exp_labels: { namespace: "agents", pod: "tg-0", severity: "critical" },
                  exp_annotations: {
                    summary:
                      "toolgate agents/tg-0 denies decisions it cannot record (audit_unavailable)",
                    description: allRules.find((r) => r.alert === "ToolgateAuditUnavailable")
                      ?.annotations?.description,
                  },
                },
              ],
            },
            { eval_time: "5m", alertname: "ToolgateAuditBacklogGrowing", exp_alerts: [] },
            {
              eval_time: "25m",
              alertname: "ToolgateAuditBacklogGrowing",
              exp_alerts: [
                alert(
                  "ToolgateAuditBacklogGrowing",
                  { severity: "warning" },
                  "toolgate agents/tg-0: audit backlog 3000 and growing",
                ),
              ],
            },
            { eval_time: "9m", alertname: "ToolgateSpansDropped", exp_alerts: [] },
            {
              eval_time: "12m",
              alertname: "ToolgateSpansDropped",
              exp_alerts: [
                alert(
                  "ToolgateSpansDropped",
                  { severity: "warning" },
                  "toolgate agents/tg-0 dropped 5 spans in 10 minutes",
                ),
              ],
            },
            { eval_time: "25m", alertname: "ToolgateSpansDropped", exp_alerts: [] },
          ],
        },
        {
          // fleet stream silent from minute 2 (silence grows 60 s a minute)
          interval: "1m",
          input_series: [
            { series: sel("toolgate_fleet_stream_silence_seconds"), values: "1 1 60+60x10" },
            { series: sel("toolgate_fleet_stream_connected"), values: "1 1 0x10" },
          ],
          alert_rule_test: [
            { eval_time: "2m", alertname: "ToolgateFleetStreamStale", exp_alerts: [] },
            {
              eval_time: "5m",
              alertname: "ToolgateFleetStreamStale",
              exp_alerts: [
                alert(
                  "ToolgateFleetStreamStale",
                  { severity: "critical" },
                  "toolgate agents/tg-0: kill-switch stream silent for 4m 0s",
                ),
              ],
            },
          ],
        },
        {
          // event-loop lag on a toolgate pod fires; the same on another Node.js app does not
          interval: "1m",
          input_series: [
            { series: sel("nodejs_eventloop_lag_p99_seconds"), values: "0.5x20" },
            { series: sel("toolgate_component_status", { component: "audit" }), values: "1x20" },
            {
              series: 'nodejs_eventloop_lag_p99_seconds{namespace="web",pod="shop-0",job="shop"}',
              values: "0.5x20",
            },
          ],
          alert_rule_test: [
            {
              eval_time: "15m",
              alertname: "ToolgateEventLoopLagHigh",
              exp_alerts: [
                alert(
                  "ToolgateEventLoopLagHigh",
                  { severity: "warning" },
                  "toolgate agents/tg-0: event-loop lag p99 500ms",
                ),
              ],
            },
          ],
        },
        {
          // approvals: a queue that drains is fine, one that never does alerts
          interval: "1m",
          input_series: [
            { series: sel("toolgate_approvals_pending"), values: "1x20 0 1x40" },
            {
              series: sel("toolgate_decisions_total", { outcome: "deny", tool: "a", reason: "r" }),
              values: "0+60x30",
            },
            {
              series: sel("toolgate_decisions_total", {
                outcome: "allow",
                tool: "a",
                reason: "granted",
              }),
              values: "0+6x30",
            },
          ],
          alert_rule_test: [
            { eval_time: "40m", alertname: "ToolgateApprovalsPendingTooLong", exp_alerts: [] },
            {
              eval_time: "55m",
              alertname: "ToolgateApprovalsPendingTooLong",
              exp_alerts: [
                alert(
                  "ToolgateApprovalsPendingTooLong",
                  { severity: "warning" },
                  "toolgate agents/tg-0: approvals waiting for 30 minutes",
                ),
              ],
            },
            {
              eval_time: "20m",
              alertname: "ToolgateDenyRateSpike",
              exp_alerts: [
                {
                  exp_labels: { namespace: "agents", pod: "tg-0", severity: "warning" },
                  exp_annotations: {
                    summary: "toolgate agents/tg-0 denies 90.91% of its decisions",
                    description: allRules.find((r) => r.alert === "ToolgateDenyRateSpike")
                      ?.annotations?.description,
                  },
                },
              ],
            },
          ],
        },
      ],
    };
    const testFile = join(dir, "rules.test.yaml");
    writeFileSync(testFile, stringify(tests));
    const r = spawnSync(promtool, ["test", "rules", testFile], { encoding: "utf8" });
    expect(r.stdout + r.stderr).toMatch(/SUCCESS/);
    expect(r.status).toBe(0);
  });
});

describe("Grafana dashboard", () => {
  test("structure: current schemaVersion, data source as a variable, unique panel ids, a query per panel", () => {
    const ds = {
      type: "object",
      required: ["type", "uid"],
      properties: { uid: { const: "${datasource}" }, type: { const: "prometheus" } },
    };
    const schema = {
      type: "object",
      required: ["uid", "title", "schemaVersion", "panels", "templating", "time"],
      properties: {
        uid: { type: "string", pattern: "^[a-zA-Z0-9_-]{1,40}$" },
        title: { type: "string", minLength: 1 },
        schemaVersion: { type: "integer", minimum: 39 },
        panels: {
          type: "array",
          minItems: 1,
          items: {
            type: "object",
            required: ["id", "type", "title", "gridPos"],
            properties: {
              id: { type: "integer" },
              type: { enum: ["row", "timeseries", "stat", "table", "gauge", "state-timeline"] },
              gridPos: {
                type: "object",
                required: ["h", "w", "x", "y"],
                properties: {
                  w: { type: "integer", minimum: 1, maximum: 24 },
                  x: { type: "integer", minimum: 0, maximum: 23 },
                },
              },
              datasource: ds,
              targets: {
                type: "array",
                items: {
                  type: "object",
                  required: ["refId", "expr"],
                  properties: { datasource: ds },
                },
              },
            },
            if: { properties: { type: { not: { const: "row" } } } },
            then: { required: ["datasource", "targets"], properties: { targets: { minItems: 1 } } },
          },
        },
      },
    };
    const ajv = new Ajv({ allErrors: true, strict: false });
    const valid = ajv.validate(schema, dashboard);
    expect(ajv.errors ?? []).toEqual([]);
    expect(valid).toBe(true);
    // the data source is a variable (of type datasource, Prometheus)
    const dsVar = dashboard.templating.list.find((v) => v.name === "datasource");
    expect(dsVar).toMatchObject({ type: "datasource", query: "prometheus" });
    const ids = allPanels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of allPanels) expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    // no uid of a data source written in
    expect(JSON.stringify(dashboard)).not.toMatch(
      /"uid":\s*"(?!\$\{datasource\}|-- Grafana --|toolgate-overview)/,
    );
  });

  test("the panels asked for are there", () => {
    const exprs = allPanels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)).join("\n");
    for (const name of [
      "toolgate_decisions_total",
      "toolgate_decision_duration_seconds_bucket",
      "toolgate_approvals_pending",
      "toolgate_killswitches_active",
      "toolgate_audit_backlog",
      "toolgate_spans_dropped",
      "toolgate_bundle_active",
      "toolgate_ready",
      "toolgate_fleet_stream_connected",
      "toolgate_fleet_stream_silence_seconds",
      "process_cpu_seconds_total",
      "process_resident_memory_bytes",
      "nodejs_eventloop_lag_p99_seconds",
      "nodejs_gc_duration_seconds_sum",
    ])
      expect(exprs).toContain(name);
  });
});

describe("every metric the dashboard and the rules query is exposed by a real toolgate", () => {
  test("scraped from a standalone toolgate and a fleet-mode one", async () => {
    const standalone = await startTestToolgate({ TOOLGATE_CONTROL_PORT: "0" });
    // fleet mode against a URL nobody answers: its fleet gauges exist all the same
    const fleet = await startTestToolgate({
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_FLEET_URL: `http://127.0.0.1:${await freePort()}`,
    });
    try {
      await postJson(
        standalone.agentServer.url,
        "/v1/decisions",
        refRequest({ tool: "tickets.read" }),
      );
      const exposed = new Set<string>();
      for (const tg of [standalone, fleet]) {
        const res = await http(tg.controlServer?.url ?? "", "GET", "/metrics");
        expect(res.status).toBe(200);
        for (const n of exposedNames(res.text)) exposed.add(n);
      }
      const used: Array<[string, string]> = [];
      for (const p of allPanels)
        for (const t of p.targets ?? []) {
          const names = metricNames(t.expr);
          expect([p.title, names.length > 0]).toEqual([p.title, true]);
          for (const n of names) used.push([`panel "${p.title}"`, n]);
        }
      for (const v of dashboard.templating.list)
        for (const n of metricNames(JSON.stringify(v.query ?? "")))
          used.push([`variable ${v.name}`, n]);
      for (const r of allRules) {
        const names = metricNames(r.expr);
        expect([r.alert, names.length > 0]).toEqual([r.alert, true]);
        for (const n of names) used.push([`alert ${r.alert ?? ""}`, n]);
      }
      expect(used.filter(([, n]) => !exposed.has(n))).toEqual([]);
    } finally {
      await standalone.stop();
      await fleet.stop();
    }
  });
});

describe("the chart renders them when enabled (off by default)", () => {
  const helm = tool("helm");
  const validator = tool("k8s-validate");
  const render = (set: string[]) =>
    spawnSync(
      helm,
      [
        "template",
        "tg",
        chart,
        "--kube-version",
        "1.33.0",
        "--namespace",
        "agents",
        ...set.flatMap((s) => ["--set", s]),
      ],
      {
        encoding: "utf8",
        env: { ...process.env, HELM_CACHE_HOME: join(tmpdir(), "toolgate-helm-cache") },
      },
    );
  type Obj = {
    apiVersion: string;
    kind: string;
    metadata: { name: string; labels?: Record<string, string> };
    spec?: unknown;
    data?: Record<string, string>;
  };
  const objects = (text: string): Obj[] =>
    parseAllDocuments(text)
      .map((d) => d.toJS() as Obj | null)
      .filter((o): o is Obj => o !== null);

  test("defaults: neither", () => {
    const r = render([]);
    expect(r.status).toBe(0);
    expect(objects(r.stdout).map((o) => o.kind)).not.toContain("PrometheusRule");
    expect(r.stdout).not.toContain("-dashboard");
  });

  test("enabled: the dashboard ConfigMap and the PrometheusRule, with the shipped files", () => {
    const r = render([
      "grafanaDashboard.enabled=true",
      "prometheusRule.enabled=true",
      "prometheusRule.labels.release=prometheus",
    ]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const objs = objects(r.stdout);
    const cm = objs.find(
      (o) => o.kind === "ConfigMap" && o.metadata.name === "tg-toolgate-dashboard",
    )!;
    expect(cm.metadata.labels?.grafana_dashboard).toBe("1");
    expect(JSON.parse(cm.data?.["toolgate.json"] ?? "")).toEqual(dashboard);
    const pr = objs.find((o) => o.kind === "PrometheusRule")!;
    expect(pr.apiVersion).toBe("monitoring.coreos.com/v1");
    expect(pr.metadata.labels?.release).toBe("prometheus");
    expect(pr.spec).toEqual(rules);
    // the ConfigMap (a core type) strictly valid; the rendered rule groups pass promtool
    const v = spawnSync(validator, ["-"], { input: stringify(cm), encoding: "utf8" });
    expect(v.stdout).toMatch(/object\(s\) valid/);
    const dir = mkdtempSync(join(tmpdir(), "toolgate-rules-"));
    writeFileSync(join(dir, "rendered.yaml"), stringify(pr.spec));
    const c = spawnSync(tool("promtool"), ["check", "rules", join(dir, "rendered.yaml")], {
      encoding: "utf8",
    });
    expect(c.status).toBe(0);
  });
});
