/**
 * Action reports are checked against their decision (issue #13, item 7): a
 * read-class tool that reports changes, or a reported record outside the
 * decision's resource or the job's customer, is recorded (the action
 * happened) and flagged loudly: a security event (span, log line, trail
 * record), toolgate_action_anomalies_total{kind}, and `anomalies` in the
 * action record and the response. Real HTTP, the reference bundle, the audit
 * worker thread.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { captureLogger } from "../helpers/capture";
import { startWithClock } from "../helpers/containment";
import { http, postJson, refRequest } from "../helpers/toolgate";

interface Decision {
  decision_id: string;
  outcome: string;
}

let tg: Toolgate;
const logs = captureLogger();
beforeAll(async () => {
  tg = await startWithClock({}, { log: logs.log });
});
afterAll(async () => {
  await tg.stop();
});

async function allow(req: Record<string, unknown>): Promise<string> {
  const res = await postJson(tg.agentServer.url, "/v1/decisions", req);
  const d = res.json as Decision;
  expect(d.outcome).toBe("allow");
  return d.decision_id;
}

async function reportOf(body: Record<string, unknown>) {
  const res = await postJson(tg.agentServer.url, "/v1/actions", body);
  await tg.auditor?.flush();
  return res;
}

function trail(): Array<Record<string, unknown>> {
  const dir = tg.config.audit.trail.dir;
  return readdirSync(dir)
    .filter((f) => f.endsWith(".jsonl"))
    .sort()
    .flatMap((f) =>
      readFileSync(join(dir, f), "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    );
}

const anomalyLines = (id: string) =>
  logs.lines().filter((l) => l.event === "security.action_anomaly" && l.decision_id === id);

async function metric(kind: string): Promise<number> {
  const text = (await http(tg.controlServer?.url ?? "", "GET", "/metrics")).text;
  const m = new RegExp(`^toolgate_action_anomalies_total\\{kind="${kind}"\\} (\\d+)$`, "m").exec(
    text,
  );
  return m ? Number(m[1]) : 0;
}

describe("action reports that contradict their decision", () => {
  test("tickets.read on cust_1 reporting a changed balance of cust_2: recorded, flagged twice", async () => {
    const before = {
      read: await metric("read_tool_changed"),
      out: await metric("changed_outside_boundary"),
    };
    const id = await allow(refRequest({ tool: "tickets.read" }));
    const res = await reportOf({
      decision_id: id,
      tool: "tickets.read",
      status: "ok",
      changed: [
        {
          resource: { type: "customer", id: "cust_2" },
          fields: [{ path: "balance", before: 10, after: 5000 }],
        },
      ],
    });
    // the action happened: it is recorded, not refused
    expect(res.status).toBe(200);
    const body = res.json as { recorded: boolean; anomalies: Array<Record<string, unknown>> };
    expect(body.recorded).toBe(true);
    expect(body.anomalies).toEqual([
      { kind: "read_tool_changed", resource: { type: "customer", id: "cust_2" } },
      { kind: "changed_outside_boundary", resource: { type: "customer", id: "cust_2" } },
    ]);
    // a security event: log line (warn), span, trail record
    const lines = anomalyLines(id);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: "warn",
      tool: "tickets.read",
      tool_class: "read",
      decided_resource: { type: "customer", id: "cust_1" },
      job_customer: "cust_1",
    });
    const records = trail();
    expect(
      records.some(
        (r) =>
          r.kind === "security" &&
          (r.record as Record<string, unknown>).event === "action_anomaly" &&
          (r.record as Record<string, unknown>).decision_id === id,
      ),
    ).toBe(true);
    // the action record itself carries the anomalies
    const action = records.find(
      (r) => r.kind === "action" && (r.record as Record<string, unknown>).decision_id === id,
    );
    expect((action?.record as Record<string, unknown>).anomalies).toEqual(body.anomalies);
    // and the counter moved, by kind
    expect(await metric("read_tool_changed")).toBe(before.read + 1);
    expect(await metric("changed_outside_boundary")).toBe(before.out + 1);
  });

  test("a read outside the job's customer is flagged read_outside_boundary", async () => {
    const before = await metric("read_outside_boundary");
    const id = await allow(refRequest({ tool: "accounts.summary.read" }));
    const res = await reportOf({
      decision_id: id,
      status: "ok",
      read: [
        { type: "customer", id: "cust_1" },
        { type: "customer", id: "cust_3" },
      ],
    });
    expect(res.status).toBe(200);
    expect((res.json as { anomalies: unknown[] }).anomalies).toEqual([
      { kind: "read_outside_boundary", resource: { type: "customer", id: "cust_3" } },
    ]);
    expect(anomalyLines(id)).toHaveLength(1);
    expect(await metric("read_outside_boundary")).toBe(before + 1);
  });

  test("the job's customer bounds records of the customer type even when the decision named another record", async () => {
    const req = refRequest({ tool: "replies.draft" });
    req.resource = { type: "ticket", id: "t_1", properties: { customer_id: "cust_1" } };
    const id = await allow(req);
    const res = await reportOf({
      decision_id: id,
      status: "ok",
      changed: [
        { resource: { type: "ticket", id: "t_1" }, fields: [{ path: "draft" }] },
        { resource: { type: "customer", id: "cust_1" }, fields: [{ path: "last_contact" }] },
        { resource: { type: "customer", id: "cust_2" }, fields: [{ path: "last_contact" }] },
        { resource: { type: "ticket", id: "t_2" }, fields: [{ path: "draft" }] },
      ],
    });
    expect(res.status).toBe(200);
    expect((res.json as { anomalies: unknown[] }).anomalies).toEqual([
      { kind: "changed_outside_boundary", resource: { type: "customer", id: "cust_2" } },
      { kind: "changed_outside_boundary", resource: { type: "ticket", id: "t_2" } },
    ]);
  });

  test("a report that matches its decision raises nothing", async () => {
    const id = await allow(refRequest({ tool: "refunds.issue", args: { amount: 20 } }));
    const res = await reportOf({
      decision_id: id,
      status: "ok",
      read: [{ type: "customer", id: "cust_1" }],
      changed: [
        { resource: { type: "refund", id: "rf_1" }, fields: [{ path: "amount", after: 20 }] },
      ],
    });
    expect(res.status).toBe(200);
    expect((res.json as { anomalies: unknown[] }).anomalies).toEqual([]);
    expect(anomalyLines(id)).toHaveLength(0);
    expect(logs.lines().some((l) => l.event === "action" && l.decision_id === id)).toBe(true);
  });
});
