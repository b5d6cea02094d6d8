/**
 * The hand-off from the decision path to audit: the decision ledger stays
 * cheap when full (eviction is O(1), not a walk over a Map's deleted slots),
 * the audit worker is handed a decision without the grant token or verified
 * facts it never reads, and a long queue (a worker that was restarting) goes
 * in bounded batches — every record, in order, counted one by one.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { DecisionLedger, type LedgerEntry } from "../../src/audit/auditor";
import { AuditClient, forWorker } from "../../src/audit/client";
import type { ToWorker } from "../../src/audit/protocol";
import type { DecisionEvent } from "../../src/model";
import { Redactor } from "../../src/redaction/redact";
import { captureLogger } from "../helpers/capture";

const entry = (id: string, at = Date.now()): LedgerEntry => ({
  decisionId: id,
  outcome: "allow",
  tool: "tickets.read",
  subjectId: "alice",
  agentId: "support-triage",
  callId: undefined,
  obligations: [],
  spanContext: undefined,
  reported: false,
  at,
  toolClass: "read",
  resource: { type: "customer", id: "cust_1" },
  jobCustomer: "cust_1",
});

describe("DecisionLedger", () => {
  test("keeps the newest entries up to its size, evicting the oldest first", () => {
    const l = new DecisionLedger(3);
    for (const id of ["a", "b", "c", "d", "e"]) l.add(entry(id));
    expect(l.size).toBe(3);
    expect(["a", "b", "c", "d", "e"].map((id) => l.get(id)?.decisionId)).toEqual([
      undefined,
      undefined,
      "c",
      "d",
      "e",
    ]);
  });

  test("entries past the age are not returned, and are evicted by later adds", () => {
    const now = Date.now();
    const l = new DecisionLedger(100, 1000);
    l.add(entry("old", now - 5000));
    expect(l.get("old", now)).toBeUndefined();
    l.add(entry("older", now - 5000));
    l.add(entry("new", now));
    expect(l.size).toBe(1);
    expect(l.get("new", now)?.decisionId).toBe("new");
  });

  test("an id added again counts once and keeps its newest entry", () => {
    const l = new DecisionLedger(2);
    l.add(entry("a"));
    l.add(entry("b"));
    const again = entry("a");
    l.add(again);
    expect(l.size).toBe(2);
    expect(l.get("a")).toBe(again);
    l.add(entry("c"));
    expect(l.size).toBe(2);
    expect(l.get("b")).toBeUndefined();
    expect(l.get("a")).toBe(again);
  });

  test("stays cheap when full: 400,000 adds to a ledger of 100,000", () => {
    // Evicting with map.keys().next() walked the deleted slots at the front of the
    // Map's table: ~90 µs per add once full, ~20 s for this loop. O(1): well under a second.
    const l = new DecisionLedger(100_000);
    const at = Date.now();
    const t0 = performance.now();
    for (let i = 0; i < 400_000; i++) l.add(entry(`d-${i}`, at));
    const ms = performance.now() - t0;
    expect(l.size).toBe(100_000);
    expect(l.get("d-299999")).toBeUndefined();
    expect(l.get("d-300000")?.decisionId).toBe("d-300000");
    expect(ms).toBeLessThan(4000);
  });
});

const TOKEN =
  "eyJhbGciOiJFUzI1NiIsInR5cCI6InRvb2xnYXRlLWdyYW50K2p3dCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLXRoZS1ncmFudA";

function decisionEvent(i: number, extra: Partial<DecisionEvent> = {}): DecisionEvent {
  return {
    kind: "decision",
    decision: {
      decision_id: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
      outcome: "allow",
      reasons: [{ code: "granted", message: "tool 'tickets.read' is granted" }],
      obligations: [],
      policy: { bundle: "support-triage", revision: "r1" },
      evaluated_at: new Date(0).toISOString(),
      tool: { name: "tickets.read", class: "read", stage: "autonomous" },
      grant: TOKEN,
    },
    request: {
      subject: { type: "user", id: "alice" },
      action: { name: "tickets.read" },
      resource: { type: "customer", id: "cust_1" },
      context: { job: { id: "job_1", purpose: "support_triage", customer_id: "cust_1" } },
    },
    verified: {
      agent: { id: "support-triage" },
      subject: { id: "alice", method: "jwt", claims: { email: "alice@example.com" } },
      time_ns: 1796161729605000000,
      containment: { killswitches: [] },
      session: { id: "s-1", history: ["x"] },
    },
    ctx: {
      face: "native",
      requestId: "req-1",
      startTimeMs: 1796161729601.25,
      http: { method: "POST", path: "/v1/decisions" },
      principal: {
        id: "alice",
        roles: ["agent"],
        method: "jwt",
        claims: { iss: "idp", sub: "alice", aud: "toolgate", exp: 1 },
      },
    },
    grant: { jti: "jti-1", aud: "tool:tickets.read", exp: 1796161789 },
    ...extra,
  };
}

describe("forWorker", () => {
  test("a decision goes without the grant token, the verified facts but the method, the principal", () => {
    const e = decisionEvent(1, { notes: { killswitch_id: "ks-1" }, mask: [] });
    const w = forWorker(e);
    const text = JSON.stringify(w);
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain("alice@example.com");
    expect(text).not.toContain("principal");
    expect(text).not.toContain("history");
    expect(w).toEqual({
      kind: "decision",
      decision: (({ grant: _token, ...d }) => d)(e.decision),
      request: e.request,
      verified: { subject: { method: "jwt" } },
      ctx: {
        face: "native",
        requestId: "req-1",
        startTimeMs: 1796161729601.25,
        http: { method: "POST", path: "/v1/decisions" },
      },
      grant: e.grant,
      notes: e.notes,
      mask: [],
    });
    // the caller's objects are left as they were
    expect(e.decision.grant).toBe(TOKEN);
    expect(e.ctx.principal?.id).toBe("alice");
  });

  test("other events go as they are", () => {
    const e = { kind: "bundle" as const, name: "bundle.activated", attributes: {} };
    expect(forWorker(e)).toBe(e);
  });
});

describe("AuditClient hand-off", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "toolgate-handoff-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
    jest.restoreAllMocks();
  });

  test("5,000 decisions in one turn: bounded batches, every record once, in order", async () => {
    const key = Buffer.alloc(32, 7);
    const logs = captureLogger("info");
    const client = await AuditClient.start({
      log: logs.log,
      redactor: new Redactor({ hmacKey: key, keyId: "k1" }),
      maxBacklogBytes: 16 * 1024 * 1024,
      data: {
        env: { OTEL_SDK_DISABLED: "true" },
        serviceVersion: "0.0.0-test",
        logLevel: "info",
        agentId: "support-triage",
        logDecisions: true,
        redaction: { key: new Uint8Array(key), keyId: "k1", mode: "hash" },
        trail: { dir, maxFileBytes: 64 * 1024 * 1024 },
        tracing: { maxQueueSize: 2048, scheduledDelayMs: 5000 },
        statsIntervalMs: 250,
      },
    });
    // what goes to the worker (the spy passes every call on)
    const post = jest.spyOn(Worker.prototype, "postMessage");
    const n = 5000;
    try {
      for (let i = 0; i < n; i++) client.record(decisionEvent(i));
      expect(client.backlog()).toBe(n);
      await client.flush();
      expect(client.backlog()).toBe(0);
    } finally {
      await client.close();
    }
    const posted = post.mock.calls.flatMap(([v]) => (typeof v === "string" ? [v] : []));
    post.mockRestore();
    const batches = posted.map((t) => JSON.parse(t) as ToWorker[]);
    expect(batches.every((b) => b.length <= 2048)).toBe(true);
    expect(batches.length).toBeGreaterThanOrEqual(3);
    const ids = batches
      .flat()
      .flatMap((m) =>
        m.t === "event" && m.event.kind === "decision" ? [m.event.decision.decision_id] : [],
      );
    expect(ids).toEqual(Array.from({ length: n }, (_, i) => decisionEvent(i).decision.decision_id));
    expect(posted.some((t) => t.includes(TOKEN))).toBe(false);
    // the worker handled each: one log line and one trail record per decision, in order
    const logged = logs
      .lines()
      .filter((l) => l.event === "decision")
      .map((l) => l.decision_id);
    expect(logged).toEqual(ids);
    const trail = readdirSync(dir)
      .flatMap((f) => readFileSync(join(dir, f), "utf8").split("\n"))
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as { kind: string; record: { decision_id?: string } })
      .filter((r) => r.kind === "decision")
      .map((r) => r.record.decision_id);
    expect(trail).toEqual(ids);
    expect(logs.raw()).not.toContain(TOKEN);
  }, 60_000);
});
