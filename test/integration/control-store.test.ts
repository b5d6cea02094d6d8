// The fleet store (src/control/store) against a real PostgreSQL server: the jest run's throwaway server, one fresh
// database per test file (test/helpers/postgres.ts). "Two pools" means two PgFleetStore instances, i.e. two
// independent connection pools, as two control replicas would have.

import { Client } from "pg";
import { PgFleetStore, redactUrl } from "../../src/control/store/pg-store";
import { MIGRATIONS, SCHEMA_VERSION } from "../../src/control/store/migrations";
import type { FleetTask, SubmitInput, SwitchRow } from "../../src/control/store/types";
import type { EvaluationInput } from "../../src/approvals/store";
import { isToolgateError } from "../../src/errors";
import { freshDatabase, type FreshDatabase } from "../helpers/postgres";

jest.setTimeout(60_000);

let db: FreshDatabase;
const stores: PgFleetStore[] = [];

function store(opts: { applicationName?: string; max?: number } = {}): PgFleetStore {
  const s = new PgFleetStore({ url: db.url, ...opts });
  stores.push(s);
  return s;
}

async function sql<T = Record<string, unknown>>(text: string, args: unknown[] = []): Promise<T[]> {
  const c = new Client({ connectionString: db.url });
  await c.connect();
  try {
    return (await c.query(text, args)).rows as T[];
  } finally {
    await c.end();
  }
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isToolgateError(e)) return e.code;
    throw e;
  }
  return "resolved";
}

const T0 = 1_800_000_000_000;
let uniq = 0;
const id = (p: string): string => `${p}_${++uniq}`;

function evaluation(over: Partial<EvaluationInput> = {}): EvaluationInput {
  return {
    evaluationId: id("ev"),
    decisionId: id("dec"),
    bindingHash: "sha256:abc",
    bindingContextMembers: ["job"],
    redactedRequest: { action: { name: "refund" }, arguments: { amount: "[redacted]" } },
    requirement: { approver_roles: ["finance"], single_use: true, ttl_seconds: 900, exclude: [] },
    reasons: [{ code: "large_refund", message: "large refund" }],
    initiator: "alice",
    agentId: "agent-a",
    tool: "refund",
    policyRevision: "rev1",
    createdAt: T0,
    expiresAt: T0 + 3_600_000,
    ...over,
  };
}

function submitInput(ev: EvaluationInput, over: Partial<SubmitInput> = {}): SubmitInput {
  return {
    evaluation: ev,
    agentId: ev.agentId,
    idempotencyKey: null,
    requester: ev.initiator,
    expiresAt: T0 + 3_600_000,
    now: T0,
    ...over,
  };
}

beforeAll(async () => {
  db = await freshDatabase();
  await store().migrate();
});

afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await db.drop();
});

describe("migrations", () => {
  test("two stores migrating a fresh database at once apply each migration once; again is a no-op", async () => {
    const fresh = await freshDatabase();
    const a = new PgFleetStore({ url: fresh.url });
    const b = new PgFleetStore({ url: fresh.url });
    try {
      const [ra, rb] = await Promise.all([a.migrate(), b.migrate()]);
      expect([...ra, ...rb].sort((x, y) => x - y)).toEqual(MIGRATIONS.map((m) => m.version));
      expect(await a.migrate()).toEqual([]);
      expect(await b.migrate()).toEqual([]);
      const c = new Client({ connectionString: fresh.url });
      await c.connect();
      const rows = (await c.query("SELECT version, name FROM schema_migrations ORDER BY version"))
        .rows as Array<{ version: number; name: string }>;
      expect(rows.map((r) => r.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(SCHEMA_VERSION).toBe(8);
      // a version this toolgate does not know: refused
      await c.query("INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')");
      await c.end();
      await expect(a.migrate()).rejects.toMatchObject({
        code: "fleet_store_unavailable",
        message: expect.stringMatching(/newer toolgate/) as unknown,
      });
    } finally {
      await a.close();
      await b.close();
      await fresh.drop();
    }
  });
});

describe("connection failures", () => {
  test("an unreachable server is fleet_store_unavailable, and the password is nowhere", async () => {
    const url = "postgres://toolgate:s3cretPassw0rd@127.0.0.1:1/toolgate";
    const s = new PgFleetStore({ url, connectTimeoutMs: 2000 });
    try {
      const err = (await s.ping().then(
        () => undefined,
        (e: unknown) => e,
      )) as Error & { code?: string; status?: number };
      expect(err.code).toBe("fleet_store_unavailable");
      expect(err.status).toBe(503);
      expect(err.message).not.toContain("s3cretPassw0rd");
      expect(await code(s.createSwitch(switchRow()))).toBe("fleet_store_unavailable");
      expect(await code(s.reserve(reserveInput("d", 1)))).toBe("fleet_store_unavailable");
    } finally {
      await s.close();
    }
    expect(redactUrl(url)).toBe("postgres://toolgate:***@127.0.0.1:1/toolgate");
    expect(redactUrl("postgres://h/db?password=x")).not.toContain("=x");
  });
});

function switchRow(over: Partial<SwitchRow> = {}): SwitchRow {
  return {
    id: id("ks"),
    scope: { agent: "agent-a" },
    reason: "incident 42",
    createdBy: "olga",
    createdAt: T0,
    expiresAt: null,
    deletedAt: null,
    deletedBy: null,
    ...over,
  };
}

describe("a connection lost mid-transaction", () => {
  test("rejects fleet_store_unavailable, does not crash, and the next call gets a fresh connection", async () => {
    const s = store({ applicationName: "tg-killed-mid-tx" });
    const key = id("locked");
    // hold the key's budget lock in another session, so the reserve waits inside its transaction
    const holder = new Client({ connectionString: db.url });
    await holder.connect();
    await holder.query("BEGIN");
    await holder.query("SELECT pg_advisory_xact_lock(2, hashtext($1))", [key]);
    const pending = code(
      s.reserve({
        ...reserveInput(id("d"), 1),
        items: [{ budgetId: "b", key, amount: 1, maxTotal: 5, windowSeconds: 60 }],
      }),
    );
    await waitForAsync(
      async () =>
        (
          await sql(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'tg-killed-mid-tx' AND wait_event_type = 'Lock'",
          )
        ).length > 0,
    );
    await sql(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tg-killed-mid-tx'",
    );
    expect(await pending).toBe("fleet_store_unavailable");
    await holder.query("ROLLBACK");
    await holder.end();
    await s.ping();
    expect(
      await s.reserve({
        ...reserveInput(id("d"), 1),
        items: [{ budgetId: "b", key, amount: 1, maxTotal: 5, windowSeconds: 60 }],
      }),
    ).toEqual({ ok: true });
  });
});

describe("kill switches", () => {
  test("create → NOTIFY reaches a listener on another pool; changesSince returns create and delete", async () => {
    const writer = store();
    const listener = store();
    const seen: number[] = [];
    const states: boolean[] = [];
    const stop = await listener.listen({
      onSeq: (s) => seen.push(s),
      onState: (up) => states.push(up),
    });
    expect(states).toEqual([true]);
    const before = await writer.currentSeq();
    expect(seen).toEqual([before]); // the catch-up seq after connecting

    const row = switchRow({ scope: { agent: "agent-a", tool: "refund" } });
    const seq = await writer.createSwitch(row);
    expect(seq).toBeGreaterThan(before);
    await waitFor(() => seen.includes(seq));
    expect(await writer.currentSeq()).toBe(seq);

    const changes = await listener.changesSince(before);
    expect(changes).toHaveLength(1);
    expect(changes[0]).toMatchObject({ seq, op: "create", at: T0 });
    expect(changes[0]?.switch).toEqual({ ...row, scope: { agent: "agent-a", tool: "refund" } });
    expect((await listener.listActiveSwitches(T0 + 1)).map((s) => s.id)).toContain(row.id);

    expect(await code(writer.createSwitch(row))).toBe("invalid_request"); // duplicate id

    const del = await writer.deleteSwitch(row.id, "maria", T0 + 10);
    expect(del?.row).toMatchObject({ id: row.id, deletedAt: T0 + 10, deletedBy: "maria" });
    await waitFor(() => seen.includes(del?.seq ?? -1));
    expect(await writer.deleteSwitch(row.id, "maria", T0 + 11)).toBeUndefined();
    expect(await writer.deleteSwitch("ks_unknown", "maria", T0 + 11)).toBeUndefined();

    const all = await listener.changesSince(before);
    expect(all.map((c) => c.op)).toEqual(["create", "delete"]);
    expect(all[0]?.switch.deletedAt).toBeNull(); // the create shows the switch as created
    expect(all[1]?.switch.deletedBy).toBe("maria");
    expect((await listener.listActiveSwitches(T0 + 20)).map((s) => s.id)).not.toContain(row.id);
    expect((await listener.switchHistory(10)).map((s) => s.id)).toContain(row.id);

    // expired switches are not active
    const exp = switchRow({ expiresAt: T0 + 100 });
    await writer.createSwitch(exp);
    expect((await writer.listActiveSwitches(T0 + 99)).map((s) => s.id)).toContain(exp.id);
    expect((await writer.listActiveSwitches(T0 + 100)).map((s) => s.id)).not.toContain(exp.id);
    await stop();
  });

  test("the listener reconnects after its connection is killed, and reports the current seq again", async () => {
    const writer = store();
    const listener = store({ applicationName: "tg-listen-reconnect" });
    const seen: number[] = [];
    const states: boolean[] = [];
    const stop = await listener.listen({
      onSeq: (s) => seen.push(s),
      onState: (up) => states.push(up),
    });
    await sql(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tg-listen-reconnect'",
    );
    await waitFor(() => states.length >= 3);
    expect(states.slice(0, 3)).toEqual([true, false, true]);
    const seq = await writer.createSwitch(switchRow());
    await waitFor(() => seen.includes(seq));
    await stop();
  });

  test("seq follows commit order under concurrent writers", async () => {
    const a = store();
    const b = store();
    const before = await a.currentSeq();
    const seqs = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).createSwitch(switchRow())),
    );
    const changes = await a.changesSince(before);
    expect(changes.map((c) => c.seq)).toEqual([...seqs].sort((x, y) => x - y));
  });
});

describe("approvals", () => {
  test("one task per evaluation, resubmission, idempotency", async () => {
    const s = store();
    const ev = evaluation();
    const first = await s.submit(submitInput(ev, { idempotencyKey: "k1" }));
    expect(first.created).toBe(true);
    expect(first.task).toMatchObject({
      evaluationId: ev.evaluationId,
      agentId: "agent-a",
      status: "pending",
      idempotencyKey: "k1",
      requester: "alice",
      createdAt: T0,
    });
    expect(first.evaluation).toEqual({
      ...ev,
      policyRevision: "rev1",
      toolClass: null,
      toolStage: null,
    });
    expect(await s.getEvaluation(ev.evaluationId)).toEqual(first.evaluation);

    const again = await s.submit(submitInput(ev));
    expect(again).toMatchObject({ created: false, task: { id: first.task.id } });
    const byKey = await s.submit(submitInput(ev, { idempotencyKey: "k1" }));
    expect(byKey).toMatchObject({ created: false, task: { id: first.task.id } });

    // the key for another evaluation: conflict
    expect(await code(s.submit(submitInput(evaluation(), { idempotencyKey: "k1" })))).toBe(
      "idempotency_conflict",
    );
    // same evaluation id recorded with another binding: conflict
    expect(await code(s.submit(submitInput({ ...ev, bindingHash: "sha256:other" })))).toBe(
      "idempotency_conflict",
    );
    // another agent citing it: not found
    expect(
      await code(s.submit(submitInput({ ...ev, agentId: "agent-b" }, { agentId: "agent-b" }))),
    ).toBe("approval_not_found");
    expect(await code(s.submit(submitInput(ev, { agentId: "agent-b" })))).toBe(
      "approval_not_found",
    );
    // expired evaluation
    expect(await code(s.submit(submitInput(evaluation({ expiresAt: T0 }))))).toBe(
      "approval_expired",
    );

    // a closed request is not reopened
    await s.cancel(first.task.id, "agent-a", T0 + 1);
    expect(await code(s.submit(submitInput(ev, { now: T0 + 2 })))).toBe("access_request_closed");
    expect((await s.taskEvents(first.task.id)).map((e) => e.event)).toEqual([
      "requested",
      "cancelled",
    ]);
  });

  test("concurrent submissions of one evaluation from two pools create one task", async () => {
    const a = store();
    const b = store();
    const ev = evaluation();
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).submit(submitInput(ev))),
    );
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(new Set(results.map((r) => r.task.id)).size).toBe(1);
  });

  test("the per-initiator limit counts tasks that are not approved, fleet-wide", async () => {
    const a = store();
    const b = store();
    const initiator = id("bob");
    const limit = { max: 3, windowMs: 60_000 };
    const mk = (now: number) =>
      submitInput(evaluation({ initiator, createdAt: now }), { limit, now });
    const t1 = await a.submit(mk(T0));
    await b.submit(mk(T0 + 1000));
    // an approved one does not count
    await a.decide(t1.task.id, {
      approve: true,
      by: "maria",
      roles: ["finance"],
      approvedUntil: T0 + 600_000,
      now: T0 + 1500,
    });
    await a.submit(mk(T0 + 2000));
    await b.submit(mk(T0 + 3000));
    const err = await a.submit(mk(T0 + 4000)).then(
      () => undefined,
      (e: unknown) => e as { code: string; details?: Record<string, unknown> },
    );
    expect(err?.code).toBe("access_request_rate_limited");
    // the oldest counted (T0+1000) leaves the window at T0+61000: 57 s after T0+4000
    expect(err?.details?.retry_after).toBe(57);
    // after the window: allowed again
    expect((await b.submit(mk(T0 + 61_001))).created).toBe(true);

    // concurrent: a fresh initiator with max 3 gets exactly 3 out of 12 parallel submissions
    const who = id("carol");
    const outcomes = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        code(
          (i % 2 ? a : b).submit(
            submitInput(evaluation({ initiator: who }), { limit, now: T0 + i }),
          ),
        ),
      ),
    );
    expect(outcomes.filter((o) => o === "resolved")).toHaveLength(3);
    expect(outcomes.filter((o) => o === "access_request_rate_limited")).toHaveLength(9);
  });

  test("the per-initiator limit is per agent: another agent's sidecar cannot use up a person's requests", async () => {
    const a = store();
    const initiator = id("dora");
    const limit = { max: 2, windowMs: 60_000 };
    const of = (agentId: string, now: number) =>
      submitInput(evaluation({ initiator, agentId, createdAt: now }), { limit, now });
    // a (compromised) sidecar of agent-b names dora until her limit there is reached
    await a.submit(of("agent-b", T0));
    await a.submit(of("agent-b", T0 + 1));
    expect(await code(a.submit(of("agent-b", T0 + 2)))).toBe("access_request_rate_limited");
    // her requests through agent-a are untouched
    expect((await a.submit(of("agent-a", T0 + 3))).created).toBe(true);
    expect((await a.submit(of("agent-a", T0 + 4))).created).toBe(true);
    expect(await code(a.submit(of("agent-a", T0 + 5)))).toBe("access_request_rate_limited");
  });

  test("decide only a pending task; of concurrent deciders one wins; overdue → expired", async () => {
    const a = store();
    const b = store();
    const { task } = await a.submit(submitInput(evaluation()));
    const decisions = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        code(
          (i % 2 ? a : b).decide(task.id, {
            approve: i % 3 === 0,
            by: `approver${i}`,
            roles: ["finance"],
            approvedUntil: T0 + 600_000,
            comment: "ok",
            now: T0 + 10,
          }),
        ),
      ),
    );
    expect(decisions.filter((d) => d === "resolved")).toHaveLength(1);
    expect(decisions.filter((d) => d === "approval_not_pending")).toHaveLength(9);
    const decided = (await a.getTask(task.id)) as FleetTask;
    expect(["approved", "denied"]).toContain(decided.status);
    expect(decided.decidedByRoles).toEqual(["finance"]);
    expect(decided.comment).toBe("ok");

    expect(
      await code(a.decide("apr_unknown", { approve: false, by: "x", roles: [], now: T0 })),
    ).toBe("approval_not_found");

    // overdue pending task: expired (and stays so), approval_expired
    const late = await a.submit(submitInput(evaluation(), { expiresAt: T0 + 100 }));
    expect(
      await code(
        a.decide(late.task.id, {
          approve: true,
          by: "maria",
          roles: ["finance"],
          approvedUntil: T0 + 600_000,
          now: T0 + 100,
        }),
      ),
    ).toBe("approval_expired");
    expect((await a.getTask(late.task.id))?.status).toBe("expired");

    // expireDue
    const due = await a.submit(submitInput(evaluation(), { expiresAt: T0 + 200 }));
    const expired = await b.expireDue(T0 + 200);
    expect(expired).toContain(due.task.id);
    expect((await a.getTask(due.task.id))?.status).toBe("expired");
    expect(await b.expireDue(T0 + 200)).not.toContain(due.task.id);

    // listTasks
    const pending = await a.listTasks({ status: "pending", agentId: "agent-a", limit: 1000 });
    expect(pending.every((t) => t.status === "pending" && t.agentId === "agent-a")).toBe(true);
    expect(await code(a.listTasks({ status: "bogus" as never }))).toBe("invalid_request");
  });

  test("useApproval single use: of 40 concurrent claims from two pools exactly one wins", async () => {
    const a = store({ max: 20 });
    const b = store({ max: 20 });
    const { task } = await a.submit(submitInput(evaluation()));
    await a.decide(task.id, {
      approve: true,
      by: "maria",
      roles: ["finance"],
      approvedUntil: T0 + 600_000,
      now: T0 + 1,
    });
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        (i % 2 ? a : b).useApproval(task.id, "agent-a", `dec-use-${i}`, true, T0 + 2),
      ),
    );
    const winners = results.filter((r) => r.claimed);
    expect(winners).toHaveLength(1);
    expect(results.filter((r) => !r.claimed && r.reason === "used")).toHaveLength(39);
    const used = (await a.getTask(task.id)) as FleetTask;
    expect(used.usedAt).toBe(T0 + 2);
    expect(used.usedByDecisionId).toBe(winners[0]?.task.usedByDecisionId);
    expect(
      (await a.taskEvents(task.id)).filter((e) => e.event === "used").map((e) => e.actor),
    ).toEqual(["agent-a"]);

    // another agent: not found; revoke; unknown
    expect(await code(a.useApproval(task.id, "agent-b", "d", true, T0 + 3))).toBe(
      "approval_not_found",
    );
    expect(await code(a.useApproval("apr_nope", "agent-a", "d", true, T0 + 3))).toBe(
      "approval_not_found",
    );
    const revoked = await b.revoke(task.id, "olga", T0 + 4);
    expect(revoked).toMatchObject({ status: "approved", revokedAt: T0 + 4, revokedBy: "olga" });
    expect(await code(b.revoke(task.id, "olga", T0 + 5))).toBe("approval_not_approved");
  });

  test("useApproval not single use: valid uses are all claimed; the requirement's single_use wins", async () => {
    const s = store();
    const multi = evaluation({
      requirement: {
        approver_roles: ["finance"],
        single_use: false,
        ttl_seconds: 900,
        exclude: [],
      },
    });
    const { task } = await s.submit(submitInput(multi));
    expect((await s.useApproval(task.id, "agent-a", "d0", false, T0 + 1)).claimed).toBe(false); // pending
    await s.decide(task.id, {
      approve: true,
      by: "maria",
      roles: ["finance"],
      approvedUntil: T0 + 1000,
      now: T0 + 1,
    });
    const uses = await Promise.all(
      [1, 2, 3].map((i) => s.useApproval(task.id, "agent-a", `d${i}`, false, T0 + 10)),
    );
    expect(uses.every((u) => u.claimed)).toBe(true);
    expect(await s.useApproval(task.id, "agent-a", "d9", false, T0 + 1000)).toMatchObject({
      claimed: false,
      reason: "expired",
    });

    // the evaluation says single use: a caller saying false still consumes it once
    const once = await s.submit(submitInput(evaluation()));
    await s.decide(once.task.id, {
      approve: true,
      by: "maria",
      roles: ["finance"],
      approvedUntil: T0 + 1000,
      now: T0 + 1,
    });
    expect((await s.useApproval(once.task.id, "agent-a", "x1", false, T0 + 2)).claimed).toBe(true);
    expect(await s.useApproval(once.task.id, "agent-a", "x2", false, T0 + 3)).toMatchObject({
      claimed: false,
      reason: "used",
    });
  });

  test("cancel: own pending only", async () => {
    const s = store();
    const { task } = await s.submit(submitInput(evaluation()));
    expect(await code(s.cancel(task.id, "agent-b", T0 + 1))).toBe("approval_not_found");
    expect((await s.cancel(task.id, "agent-a", T0 + 1)).status).toBe("cancelled");
    expect(await code(s.cancel(task.id, "agent-a", T0 + 2))).toBe("approval_not_pending");
  });
});

function reserveInput(decisionId: string, amount: number, over: Record<string, unknown> = {}) {
  return {
    decisionId,
    agentId: "agent-a",
    ttlMs: 60_000,
    now: T0,
    items: [
      { budgetId: "refunds", key: "refunds|cust-1", amount, maxTotal: 100, windowSeconds: 3600 },
    ],
    ...over,
  };
}

describe("approvals: justification, reasons with messages, request stats (migration 5)", () => {
  test("a task keeps the agent's justification; a bad one is refused", async () => {
    const s = store();
    const ev = evaluation();
    const { task } = await s.submit(
      submitInput(ev, { justification: "charged twice\n(ticket 42)" }),
    );
    expect(task.justification).toBe("charged twice\n(ticket 42)");
    expect((await s.getTask(task.id))?.justification).toBe("charged twice\n(ticket 42)");
    await expect(
      s.submit(submitInput(evaluation(), { justification: "esc\u001b[31m" })),
    ).rejects.toMatchObject({ code: "invalid_request" });
    await expect(
      s.submit(submitInput(evaluation(), { justification: "x".repeat(2001) })),
    ).rejects.toMatchObject({ code: "invalid_request" });
    const none = await s.submit(submitInput(evaluation()));
    expect(none.task.justification).toBeNull();
  });

  test("reasons are kept with their messages; a row of codes alone reads as {code, message: ''}", async () => {
    const s = store();
    const ev = evaluation({ toolClass: "execute", toolStage: "supervised" });
    await s.submit(submitInput(ev));
    expect(await s.getEvaluation(ev.evaluationId)).toMatchObject({
      toolClass: "execute",
      toolStage: "supervised",
    });
    expect((await s.getEvaluation(ev.evaluationId))?.reasons).toEqual([
      { code: "large_refund", message: "large refund" },
    ]);
    await sql(`UPDATE approval_evaluations SET reasons = '["old_code"]' WHERE evaluation_id = $1`, [
      ev.evaluationId,
    ]);
    expect((await s.getEvaluation(ev.evaluationId))?.reasons).toEqual([
      { code: "old_code", message: "" },
    ]);
    await sql(
      `UPDATE approval_evaluations SET reasons = '[{"code": 1}]' WHERE evaluation_id = $1`,
      [ev.evaluationId],
    );
    await expect(s.getEvaluation(ev.evaluationId)).rejects.toMatchObject({
      code: "fleet_store_unavailable",
    });
    await sql(`UPDATE approval_evaluations SET reasons = '[]' WHERE evaluation_id = $1`, [
      ev.evaluationId,
    ]);
  });

  test("requestStats counts an agent's requests for a tool since a time, and the approved ones", async () => {
    const s = store();
    const agentId = id("agent-stats");
    const tool = id("tool");
    const mk = () => evaluation({ agentId, tool });
    const a = await s.submit(submitInput(mk(), { now: T0 + 10 }));
    await s.submit(submitInput(mk(), { now: T0 + 20 }));
    await s.submit(submitInput(evaluation({ agentId, tool: id("other") }), { now: T0 + 20 }));
    await s.decide(a.task.id, {
      approve: true,
      by: "maria",
      roles: ["finance"],
      approvedUntil: T0 + 60_000,
      now: T0 + 30,
    });
    expect(await s.requestStats(agentId, tool, T0)).toEqual({ requested: 2, approved: 1 });
    expect(await s.requestStats(agentId, tool, T0 + 10)).toEqual({ requested: 1, approved: 0 });
    expect(await s.requestStats("nobody", tool, T0)).toEqual({ requested: 0, approved: 0 });
  });
});

describe("budgets", () => {
  test("400 concurrent reserves from 4 pools never reserve more than the max", async () => {
    const pools = [store(), store(), store(), store()];
    const key = id("budget|cust");
    const max = 100;
    const amounts = Array.from({ length: 400 }, (_, i) => 1 + (i % 3));
    const results = await Promise.all(
      amounts.map((amount, i) =>
        (pools[i % 4] as PgFleetStore).reserve({
          decisionId: id("dec-b"),
          agentId: `agent-${i % 4}`,
          ttlMs: 60_000,
          now: T0 + i,
          items: [{ budgetId: "b", key, amount, maxTotal: max, windowSeconds: 3600 }],
        }),
      ),
    );
    const granted = amounts.filter((_, i) => results[i]?.ok).reduce((n, a) => n + a, 0);
    expect(granted).toBeLessThanOrEqual(max);
    expect(granted).toBeGreaterThan(max - 3); // and the budget was used up
    const [row] = await sql<{ total: number }>(
      "SELECT SUM(amount)::float8 AS total FROM budget_reservations WHERE key = $1",
      [key],
    );
    expect(row?.total).toBe(granted);
    const refused = results.find((r) => !r.ok);
    expect(refused).toMatchObject({ ok: false, budgetId: "b", maxTotal: max, windowSeconds: 3600 });
    const usage = (await pools[0]?.usage(T0 + 1000))?.find((u) => u.key === key);
    expect(usage).toMatchObject({ budgetId: "b", spent: 0, pending: granted, windowSeconds: 3600 });
  });

  test("commit, release, expired, none; only the reserving agent resolves", async () => {
    const s = store();
    const key = id("k");
    const item = { budgetId: "b", key, amount: 10, maxTotal: 20, windowSeconds: 100 };
    const r = (decisionId: string, now: number, amount = 10) =>
      s.reserve({ decisionId, agentId: "agent-a", ttlMs: 1000, now, items: [{ ...item, amount }] });

    expect(await r("d1", T0)).toEqual({ ok: true });
    expect(await r("d1", T0)).toEqual({ ok: true }); // a retry is not counted twice
    expect(await s.resolve("d1", "agent-b", "release", T0 + 1)).toBe("none");
    expect(await s.resolve("d1", "agent-a", "release", T0 + 1)).toBe("released");
    expect(await s.resolve("d1", "agent-a", "release", T0 + 2)).toBe("none");

    expect(await r("d2", T0 + 10)).toEqual({ ok: true });
    expect(await s.resolve("d2", "agent-a", "commit", T0 + 20)).toBe("committed");
    expect(await s.resolve("d2", "agent-a", "commit", T0 + 21)).toBe("none");

    expect(await r("d3", T0 + 30)).toEqual({ ok: true });
    // full: 10 committed + 10 pending
    expect(await r("d4", T0 + 40, 1)).toMatchObject({ ok: false, used: 20, amount: 1 });
    expect(await s.resolve("d3", "agent-a", "release", T0 + 30 + 1000)).toBe("expired");
    expect(await s.resolve("d3", "agent-a", "commit", T0 + 30 + 1000)).toBe("expired");

    // d2 committed at T0+20 counts until T0+20+100 s; d3 never resolved counts from its expiry T0+1030
    const over = await r("d5", T0 + 50_000, 1);
    expect(over).toMatchObject({ ok: false, used: 20 });
    // one must go: d2 leaves the window at T0+100_020 → 50.02 s → 51
    expect(over.ok === false && over.retryAfter).toBe(51);
    expect(await r("d6", T0 + 100_021, 10)).toEqual({ ok: true });
    // d3 (spent at T0+1030) counts while it lies after now − window: until T0+101_030 exclusive
    expect(await r("d7", T0 + 101_029, 10)).toMatchObject({ ok: false });
    expect(await r("d8", T0 + 101_030, 10)).toEqual({ ok: true });

    // at the max, 0 still fits; over it (the max was lowered since), even 0 is refused
    expect(await r("d9", T0 + 101_031, 0)).toEqual({ ok: true });
    expect(
      await s.reserve({
        decisionId: "d10",
        agentId: "agent-a",
        ttlMs: 1000,
        now: T0 + 101_031,
        items: [{ ...item, amount: 0, maxTotal: 15 }],
      }),
    ).toMatchObject({ ok: false, used: 20, amount: 0, maxTotal: 15 });
    // a decision id of another agent is refused
    expect(
      await code(
        s.reserve({ decisionId: "d8", agentId: "agent-b", ttlMs: 1000, now: T0, items: [item] }),
      ),
    ).toBe("invalid_request");
    expect(await code(s.reserve({ ...reserveInput("x", -1) }))).toBe("invalid_request");
    expect(await code(s.reserve({ ...reserveInput("x", 1), items: [item, item] }))).toBe(
      "invalid_request",
    );
  });

  test("an unresolved reservation counts as spent after its TTL (TTL counting)", async () => {
    const s = store();
    const key = id("k");
    const item = { budgetId: "b", key, amount: 5, maxTotal: 5, windowSeconds: 10 };
    const r = (decisionId: string, now: number, amount: number) =>
      s.reserve({ decisionId, agentId: "agent-a", ttlMs: 1000, now, items: [{ ...item, amount }] });
    expect(await r("t1", T0, 5)).toEqual({ ok: true });
    expect(await s.usage(T0 + 500)).toContainEqual(
      expect.objectContaining({ key, pending: 5, spent: 0 }),
    );
    expect(await s.usage(T0 + 2000)).toContainEqual(
      expect.objectContaining({ key, pending: 0, spent: 5 }),
    );
    // past the TTL it is spent at T0+1000: counting while T0+1000 > now − 10 s, i.e. before T0+11000
    expect(await r("t2", T0 + 2000, 1)).toMatchObject({ ok: false, used: 5, retryAfter: 9 });
    expect(await r("t3", T0 + 10_999, 1)).toMatchObject({ ok: false });
    expect(await r("t4", T0 + 11_000, 1)).toEqual({ ok: true });
    // prune keeps what can still count
    const before = await sql("SELECT 1 FROM budget_reservations WHERE key = $1", [key]);
    await s.prune(T0 + 12_000);
    expect(await sql("SELECT 1 FROM budget_reservations WHERE key = $1", [key])).toHaveLength(
      before.length,
    );
  });
});

/**
 * The reserve/resolve of the store before migration 4 (a transaction of
 * single statements, the counting done here), kept as the reference the one
 * statement version must agree with.
 */
class ReferenceBudgets {
  private rows: Array<{
    decisionId: string;
    key: string;
    agentId: string;
    amount: number;
    expiresAt: number;
    committedAt: number | null;
  }> = [];

  reserve(input: {
    decisionId: string;
    agentId: string;
    ttlMs: number;
    now: number;
    items: Array<{
      budgetId: string;
      key: string;
      amount: number;
      maxTotal: number;
      windowSeconds: number;
    }>;
  }): unknown {
    const { decisionId, agentId, now } = input;
    const mine = this.rows.filter((r) => r.decisionId === decisionId);
    if (mine.some((r) => r.agentId !== agentId)) return "invalid_request";
    const already = new Set(mine.map((r) => r.key));
    const insert: typeof input.items = [];
    for (const it of input.items) {
      if (already.has(it.key)) continue;
      const windowMs = it.windowSeconds * 1000;
      const counted = this.rows
        .filter((r) => r.key === it.key)
        .map((r) => ({ amount: r.amount, from: r.committedAt ?? r.expiresAt }))
        .filter((c) => c.from > now - windowMs);
      const used = counted.reduce((n, c) => n + c.amount, 0);
      if (used + it.amount > it.maxTotal) {
        let retry = it.windowSeconds;
        let freed = 0;
        for (const c of counted.sort((a, b) => a.from - b.from)) {
          freed += c.amount;
          if (used - freed + it.amount <= it.maxTotal) {
            retry = Math.max(1, Math.ceil((c.from + windowMs - now) / 1000));
            break;
          }
        }
        return {
          ok: false,
          budgetId: it.budgetId,
          used,
          maxTotal: it.maxTotal,
          amount: it.amount,
          windowSeconds: it.windowSeconds,
          retryAfter: retry,
        };
      }
      if (it.amount > 0) insert.push(it);
    }
    const expiresAt = now + Math.ceil(input.ttlMs);
    for (const it of insert) {
      this.rows.push({
        decisionId,
        key: it.key,
        agentId,
        amount: it.amount,
        expiresAt,
        committedAt: null,
      });
    }
    return { ok: true };
  }

  resolve(decisionId: string, agentId: string, outcome: "commit" | "release", now: number) {
    const open = this.rows.filter(
      (r) => r.decisionId === decisionId && r.agentId === agentId && r.committedAt === null,
    );
    if (open.length === 0) return "none";
    if (now >= Math.min(...open.map((r) => r.expiresAt))) return "expired";
    if (outcome === "commit") {
      for (const r of open) r.committedAt = now;
      return "committed";
    }
    this.rows = this.rows.filter((r) => !open.includes(r));
    return "released";
  }
}

describe("budgets: the one-statement reserve and resolve (migration 4)", () => {
  test("agree with the reference (the transaction they replace) over a random history", async () => {
    const s = store();
    const ref = new ReferenceBudgets();
    const keys = [id("ka"), id("kb"), id("kc")];
    const agents = ["agent-a", "agent-b"];
    let seed = 42;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const decisions: Array<{ id: string; agent: string }> = [];
    let now = T0;
    let refusals = 0;
    let retries = 0;
    for (let step = 0; step < 400; step++) {
      now += rnd(4000);
      if (decisions.length > 0 && rnd(3) === 0) {
        const d = decisions[rnd(decisions.length)] as { id: string; agent: string };
        const agent = rnd(8) === 0 ? (agents[rnd(2)] as string) : d.agent;
        const outcome = rnd(2) === 0 ? "commit" : "release";
        const got = await s.resolve(d.id, agent, outcome, now);
        expect([step, got]).toEqual([step, ref.resolve(d.id, agent, outcome, now)]);
        continue;
      }
      // a new decision, or (sometimes) a retry of an earlier one, by its agent or another
      const again = decisions.length > 0 && rnd(6) === 0;
      const d = again
        ? (decisions[rnd(decisions.length)] as { id: string; agent: string })
        : { id: id("rd"), agent: agents[rnd(2)] as string };
      if (!again) decisions.push(d);
      const agent = again && rnd(3) === 0 ? (agents[rnd(2)] as string) : d.agent;
      const n = 1 + rnd(3);
      const items = keys
        .slice(rnd(3 - n + 1), undefined)
        .slice(0, n)
        .map((key) => ({
          budgetId: `b-${key}`,
          key,
          // halves: sums are exact in any order
          amount: rnd(12) / 2,
          maxTotal: 10 + rnd(30),
          windowSeconds: [10, 30.5, 60][rnd(3)] as number,
        }));
      const input = { decisionId: d.id, agentId: agent, ttlMs: 2000 + rnd(8000), now, items };
      const want = ref.reserve(input);
      const got = await s.reserve(input).catch((e: unknown) => {
        if (isToolgateError(e)) return e.code;
        throw e;
      });
      expect([step, got]).toEqual([step, want]);
      if (typeof want === "object" && (want as { ok: boolean }).ok === false) {
        refusals++;
        if ((want as { retryAfter: number }).retryAfter !== items[0]?.windowSeconds) retries++;
      }
    }
    // the history went through the interesting paths
    expect(refusals).toBeGreaterThan(20);
    expect(retries).toBeGreaterThan(5);
  });

  test("over budget: retry_after is when enough of the oldest has left the window", async () => {
    const s = store();
    const key = id("k");
    const item = { budgetId: "b", key, amount: 4, maxTotal: 10, windowSeconds: 100 };
    const r = (decisionId: string, now: number, amount: number, ttlMs = 1000) =>
      s.reserve({ decisionId, agentId: "agent-a", ttlMs, now, items: [{ ...item, amount }] });
    expect(await r("o1", T0, 4)).toEqual({ ok: true });
    expect(await s.resolve("o1", "agent-a", "commit", T0 + 10)).toBe("committed"); // from T0+10
    expect(await r("o2", T0 + 20_000, 3)).toEqual({ ok: true }); // unresolved: from T0+21_000
    expect(await r("o3", T0 + 30_000, 3, 600_000)).toEqual({ ok: true }); // pending until T0+630_000
    // used 10; 7 more must go: o1 (4) is not enough, o1 + o2 (7) is: o2 leaves at T0+121_000
    expect(await r("o4", T0 + 40_000, 7)).toEqual({
      ok: false,
      budgetId: "b",
      used: 10,
      maxTotal: 10,
      amount: 7,
      windowSeconds: 100,
      retryAfter: 81,
    });
    // more than the max never fits: the window
    expect(await r("o5", T0 + 40_000, 11)).toMatchObject({ ok: false, retryAfter: 100 });
    // the first item that does not fit is the one answered, and nothing is written
    const other = id("k");
    expect(
      await s.reserve({
        decisionId: "o6",
        agentId: "agent-a",
        ttlMs: 1000,
        now: T0 + 40_000,
        items: [
          { budgetId: "free", key: other, amount: 1, maxTotal: 10, windowSeconds: 100 },
          { ...item, amount: 1 },
        ],
      }),
    ).toMatchObject({ ok: false, budgetId: "b", used: 10, amount: 1, retryAfter: 61 }); // o1 leaves at T0+100_010
    expect(await sql("SELECT 1 FROM budget_reservations WHERE key = $1", [other])).toHaveLength(0);
  });
});

describe("rate leases", () => {
  test("never grant more than the bucket holds, across pools", async () => {
    const pools = [store(), store()];
    const key = id("rate|agent-a");
    const grants = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        (pools[i % 2] as PgFleetStore).lease({
          key,
          ratePerSecond: 2,
          burst: 10,
          want: 1,
          now: T0,
        }),
      ),
    );
    expect(grants.reduce((n, g) => n + g.granted, 0)).toBe(10);
    const empty = grants.find((g) => g.granted === 0);
    expect(empty?.retryAfter).toBe(1);
    // 1.5 s later: 3 tokens back
    const s = pools[0] as PgFleetStore;
    expect(await s.lease({ key, ratePerSecond: 2, burst: 10, want: 5, now: T0 + 1500 })).toEqual({
      granted: 3,
      retryAfter: 0,
    });
    // a replica with a clock behind refills nothing (and never goes backwards)
    expect(await s.lease({ key, ratePerSecond: 2, burst: 10, want: 5, now: T0 + 1000 })).toEqual({
      granted: 0,
      retryAfter: 1,
    });
    // refill is capped at burst
    expect(
      (await s.lease({ key, ratePerSecond: 2, burst: 10, want: 100, now: T0 + 3_600_000 })).granted,
    ).toBe(10);
    expect(await code(s.lease({ key, ratePerSecond: 0, burst: 10, want: 1, now: T0 }))).toBe(
      "invalid_request",
    );
  });
});

describe("sidecars", () => {
  test("upsert and list", async () => {
    const s = store();
    await s.upsertSidecar({
      instance: "i-1",
      agentId: "agent-a",
      replica: "rep_1",
      bundle: { name: "main", revision: "r1" },
      version: "1.2.3",
      now: T0,
    });
    await s.upsertSidecar({ instance: "i-1", agentId: "agent-a", replica: "rep_1", now: T0 + 5 });
    const [row] = (await s.listSidecars()).filter((r) => r.instance === "i-1");
    expect(row).toEqual({
      instance: "i-1",
      agentId: "agent-a",
      replica: "rep_1",
      connectedAt: T0,
      lastSeen: T0 + 5,
      bundleName: "main",
      bundleRevision: "r1",
      version: "1.2.3",
    });
    await s.upsertSidecar({
      instance: "i-1",
      agentId: "agent-a",
      replica: "rep_2",
      bundle: null,
      now: T0 + 9,
    });
    const [moved] = (await s.listSidecars(T0 + 9)).filter((r) => r.instance === "i-1");
    expect(moved).toMatchObject({
      replica: "rep_2",
      connectedAt: T0 + 9,
      bundleName: null,
      version: "1.2.3",
    });
  });
});

describe("prune", () => {
  test("removes only what can no longer matter", async () => {
    const s = store();
    const later = T0 + 40 * 24 * 3600_000;
    const key = id("prune");
    await s.reserve({
      ...reserveInput(id("d"), 1),
      items: [{ budgetId: "b", key, amount: 1, maxTotal: 9, windowSeconds: 60 }],
    });
    const orphan = evaluation({ expiresAt: T0 + 1000 });
    const kept = evaluation({ expiresAt: T0 + 1000 });
    // an evaluation with a task stays; one without goes once expired (+1 h)
    await s.submit(submitInput(kept));
    await sql(
      `INSERT INTO approval_evaluations (evaluation_id, decision_id, agent_id, binding_hash, binding_context_members,
         redacted_request, requirement, reasons, initiator, tool, created_at, expires_at)
       VALUES ($1, 'd', 'agent-a', 'h', '[]', 'null', '{}', '[]', 'alice', 'refund', $2, $3)`,
      [orphan.evaluationId, T0, T0 + 1000],
    );
    const rateKey = id("rate");
    await s.lease({ key: rateKey, ratePerSecond: 1, burst: 1, want: 1, now: T0 });
    await s.upsertSidecar({ instance: id("i"), agentId: "agent-a", replica: "r", now: T0 });
    const r = await s.prune(later, 100_000);
    expect(r.budgetRows).toBeGreaterThanOrEqual(1);
    expect(r.evaluations).toBeGreaterThanOrEqual(1);
    expect(r.rateBuckets).toBeGreaterThanOrEqual(1);
    expect(r.sidecars).toBeGreaterThanOrEqual(1);
    expect(await sql("SELECT 1 FROM budget_reservations WHERE key = $1", [key])).toHaveLength(0);
    expect(await s.getEvaluation(orphan.evaluationId)).toBeUndefined();
    expect(await s.getEvaluation(kept.evaluationId)).toBeDefined();
    expect(await sql("SELECT 1 FROM rate_buckets WHERE key = $1", [rateKey])).toHaveLength(0);
  });
});

describe("hostile rows", () => {
  test("a __proto__ key in a stored scope is refused, not handed on", async () => {
    const s = store();
    const row = switchRow();
    await s.createSwitch(row);
    // the immutability trigger refuses such an update: bypass it, as a hostile writer would
    await sql("ALTER TABLE killswitches DISABLE TRIGGER killswitches_guard");
    await sql(
      `UPDATE killswitches SET scope = '{"__proto__": {"admin": true}}'::jsonb WHERE id = $1`,
      [row.id],
    );
    await sql("ALTER TABLE killswitches ENABLE TRIGGER killswitches_guard");
    const err = await s.listActiveSwitches(T0 + 1).then(
      () => undefined,
      (e: unknown) => e as Error & { code?: string },
    );
    expect(err?.code).toBe("fleet_store_unavailable");
    expect(err?.message).toMatch(/__proto__/);
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
    await sql("ALTER TABLE switch_changes DISABLE TRIGGER switch_changes_append_only");
    await sql("DELETE FROM switch_changes WHERE switch_id = $1", [row.id]);
    await sql("ALTER TABLE switch_changes ENABLE TRIGGER switch_changes_append_only");
    await sql("DELETE FROM killswitches WHERE id = $1", [row.id]);
  });

  test("hostile JSON on the way in and in evaluation columns is refused", async () => {
    const s = store();
    const hostile = JSON.parse('{"a": {"constructor": {"prototype": 1}}}') as unknown;
    expect(await code(s.submit(submitInput(evaluation({ redactedRequest: hostile }))))).toBe(
      "invalid_request",
    );
    const ev = evaluation();
    await s.submit(submitInput(ev));
    await sql(
      `UPDATE approval_evaluations SET requirement = '{"approver_roles": [], "single_use": true, "ttl_seconds": 1, "exclude": [], "__proto__": 1}'::jsonb WHERE evaluation_id = $1`,
      [ev.evaluationId],
    );
    expect(await code(s.getEvaluation(ev.evaluationId))).toBe("fleet_store_unavailable");
  });
});

async function waitForAsync(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}
