/**
 * Audit on a worker thread (audit.worker, the default) against audit on the
 * main thread: the same spans (exported over real OTLP/HTTP to a receiver on
 * loopback), trail records and log lines, with the ids the main thread named
 * for the decision, batch and action spans; start-up failures in the worker
 * fail the start; a failed start leaves no port open.
 */
import { createServer } from "node:net";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { Auditor } from "../../src/audit";
import { getHeapStatistics } from "node:v8";
import {
  AuditClient,
  WORKER_YOUNG_GENERATION_MB,
  workerResourceLimits,
} from "../../src/audit/client";
import { verifyTrail } from "../../src/trail";
import { captureLogger } from "../helpers/capture";
import { freePort } from "../helpers/net";
import { startOtlpReceiver } from "../helpers/otlp";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

interface OtlpSpan {
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  links?: Array<{ traceId: string; spanId: string }>;
  attributes: Array<{ key: string; value: Record<string, unknown> }>;
}

const attr = (s: OtlpSpan, key: string): unknown => {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v === undefined ? undefined : Object.values(v)[0];
};

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID = "00f067aa0ba902b7";

describe.each([
  ["a worker thread", "true"],
  ["the main thread", "false"],
])("audit on %s", (_name, worker) => {
  test("spans, trail records and log lines agree, ids included", async () => {
    const receiver = await startOtlpReceiver();
    const logs = captureLogger("info");
    const tg = await startTestToolgate(
      {
        TOOLGATE_AUDIT_WORKER: worker,
        TOOLGATE_TRACING_SCHEDULED_DELAY_MS: "20",
        TOOLGATE_CONTROL_ENABLED: "false",
      },
      {
        otelEnv: {
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        },
        log: logs.log,
      },
    );
    try {
      expect(tg.auditor).toBeInstanceOf(worker === "true" ? AuditClient : Auditor);
      const base = tg.agentServer.url;
      const allow = await postJson(
        base,
        "/v1/decisions",
        refRequest({ tool: "refunds.issue", args: { amount: 20 } }),
        { traceparent: `00-${TRACE_ID}-${PARENT_ID}-01` },
      );
      expect(allow.status).toBe(200);
      const decisionId = (allow.json as { decision_id: string; outcome: string }).decision_id;
      expect((allow.json as { outcome: string }).outcome).toBe("allow");
      const batch = await postJson(base, "/access/v1/evaluations", {
        evaluations: [refRequest({ tool: "tickets.read" }), refRequest({ tool: "shell.exec" })],
      });
      expect(batch.status).toBe(200);
      const action = await postJson(base, "/v1/actions", {
        decision_id: decisionId,
        status: "ok",
      });
      expect(action.status).toBe(200);
      const actionIds = action.json as { trace_id: string; span_id: string };
      // needs_approval, then the access request: its approval span links to the decision span
      const refund = refRequest({ tool: "refunds.issue", args: { amount: 120 } });
      const pending = await postJson(base, "/v1/decisions", refund);
      const pendingJson = pending.json as {
        decision_id: string;
        access_request?: { evaluation_id: string; expires_at: string };
      };
      const asked = await postJson(base, "/access/v1/requests", {
        ...refund,
        denial: {
          evaluation_id: pendingJson.access_request?.evaluation_id,
          expires_at: pendingJson.access_request?.expires_at,
        },
      });
      expect(asked.status).toBe(201);
      // a report for a decision that does not exist: a security event
      const bogus = await postJson(base, "/v1/actions", {
        decision_id: "no-such-decision",
        status: "ok",
      });
      expect(bogus.status).toBe(409);
      await tg.auditor?.flush();
      // everything handed over has been handled (the flush reply carries the counters)
      expect(tg.auditor?.backlog()).toBe(0);

      const spans = receiver.spans() as OtlpSpan[];
      // the decision span: a child of the caller's traceparent
      const decision = spans.find((s) => attr(s, "toolgate.decision.id") === decisionId);
      expect(decision?.name).toBe("authorize refunds.issue");
      expect(decision?.traceId).toBe(TRACE_ID);
      expect(decision?.parentSpanId).toBe(PARENT_ID);
      // the action span: the ids the agent was given, linked to the decision span
      const act = spans.find((s) => s.name === "execute_tool refunds.issue");
      expect(act?.spanId).toBe(actionIds.span_id);
      expect(act?.traceId).toBe(actionIds.trace_id);
      expect(act?.links?.map((l) => l.spanId)).toEqual([decision?.spanId]);
      // the batch: one request span, two item spans under it
      const request = spans.find((s) => s.name === "POST /access/v1/evaluations");
      expect(request).toBeDefined();
      const items = spans.filter((s) => s.parentSpanId === request?.spanId);
      expect(items.map((s) => s.name).sort()).toEqual([
        "authorize shell.exec",
        "authorize tickets.read",
      ]);
      expect(items.every((s) => s.traceId === request?.traceId)).toBe(true);
      expect(spans.some((s) => s.name === "toolgate.security action_without_permission")).toBe(
        true,
      );
      const pendingSpan = spans.find(
        (s) => attr(s, "toolgate.decision.id") === pendingJson.decision_id,
      );
      const requested = spans.find((s) => s.name === "toolgate.approval requested");
      expect(requested?.links?.map((l) => l.spanId)).toEqual([pendingSpan?.spanId]);

      // the trail holds the same ids, chained
      const dir = tg.config.audit.trail.dir;
      const records = readdirSync(dir)
        .flatMap((f) => readFileSync(join(dir, f), "utf8").split("\n"))
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as { kind: string; record: Record<string, unknown> });
      const rec = records.find((r) => r.kind === "decision" && r.record.decision_id === decisionId);
      expect(rec?.record).toMatchObject({
        trace_id: TRACE_ID,
        span_id: decision?.spanId,
        outcome: "allow",
      });
      const actRec = records.find((r) => r.kind === "action");
      expect(actRec?.record).toMatchObject({
        decision_id: decisionId,
        trace_id: actionIds.trace_id,
        span_id: actionIds.span_id,
        decision_span_id: decision?.spanId,
      });
      expect(records.map((r) => r.kind)).toEqual([
        "decision",
        "decision",
        "decision",
        "action",
        "decision",
        "approval",
        "security",
      ]);
      expect(verifyTrail([dir]).ok).toBe(true);

      // log lines: one per decision and action, written through the given logger
      const lines = logs.lines();
      const line = lines.find((l) => l.event === "decision" && l.decision_id === decisionId);
      expect(line).toMatchObject({ span_id: decision?.spanId, trail_seq: 1, level: "info" });
      expect(lines.filter((l) => l.event === "decision")).toHaveLength(4);
      expect(lines.filter((l) => l.event === "action")).toHaveLength(1);
      expect(lines.some((l) => l.event === "security.action_without_permission")).toBe(true);
    } finally {
      await tg.stop();
      await receiver.close();
    }
  }, 60_000);
});

describe("audit worker start-up", () => {
  test("the worker's young generation is capped only where V8 would size it from a large host", async () => {
    const GiB = 1024 * 1024 * 1024;
    expect(workerResourceLimits(4 * GiB)).toEqual({
      maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB,
    });
    // a memory limit (a container's cgroup, --max-old-space-size) already makes V8 choose smaller
    expect(workerResourceLimits(GiB)).toBeUndefined();
    expect(workerResourceLimits(256 * 1024 * 1024)).toBeUndefined();

    // the real worker, as V8 applied its limits
    const tg = await startTestToolgate({
      TOOLGATE_AUDIT_WORKER: "true",
      TOOLGATE_CONTROL_ENABLED: "false",
    });
    try {
      expect(tg.auditor).toBeInstanceOf(AuditClient);
      const young = (tg.auditor as AuditClient).workerLimits()?.maxYoungGenerationSizeMb;
      if (getHeapStatistics().heap_size_limit > GiB) expect(young).toBe(WORKER_YOUNG_GENERATION_MB);
      else expect(young).toBeLessThanOrEqual(WORKER_YOUNG_GENERATION_MB);
    } finally {
      await tg.stop();
    }
  });

  test("a bad OTEL_* setting fails the start with the worker's own error", async () => {
    await expect(
      startTestToolgate(
        { TOOLGATE_CONTROL_ENABLED: "false" },
        { otelEnv: { OTEL_TRACES_SAMPLER: "sometimes" } },
      ),
    ).rejects.toMatchObject({ code: "config_invalid" });
  });

  test("a failed start closes the agent port it had opened", async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, "127.0.0.1", () => r()));
    const busyPort = (busy.address() as { port: number }).port;
    const agentPort = await freePort();
    try {
      await expect(
        startTestToolgate({
          TOOLGATE_AGENT_PORT: String(agentPort),
          TOOLGATE_CONTROL_PORT: String(busyPort),
        }),
      ).rejects.toThrow();
      await expect(http(`http://127.0.0.1:${agentPort}`, "GET", "/health/live")).rejects.toThrow(
        /ECONNREFUSED/,
      );
    } finally {
      await new Promise<void>((r) => busy.close(() => r()));
    }
  });
});
