/**
 * The approval store on real SQLite files in a temp dir: schema and
 * migrations, the task lifecycle and its transition table, idempotency,
 * single-use consumption raced across connections and worker threads,
 * revocation, persistence across reopen, and failing closed.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { Worker } from "node:worker_threads";
import ts from "typescript";
import {
  ApprovalStore,
  APPROVALS_DB_FILE,
  SCHEMA_VERSION,
  TERMINAL_STATUSES,
  type ApprovalTask,
  type EvaluationInput,
  type TaskStatus,
} from "../../src/approvals/store";
import { isToolgateError } from "../../src/errors";

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "toolgate-approvals-"));
  dirs.push(d);
  return d;
}
const stores: ApprovalStore[] = [];
function open(dir: string): ApprovalStore {
  const s = ApprovalStore.open(dir);
  stores.push(s);
  return s;
}
afterAll(() => {
  for (const s of stores) s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

// A fixed clock: no test depends on wall-clock time.
const T0 = 1_800_000_000_000;
const MIN = 60_000;

function evaluation(id: string, over: Partial<EvaluationInput> = {}): EvaluationInput {
  return {
    evaluationId: id,
    decisionId: `dec_${id}`,
    bindingHash: "l0ugE2lupDlzVCE-RxH7_vnpivDDkZ585VWMB0HJN_c",
    bindingContextMembers: ["job"],
    redactedRequest: {
      subject: { type: "user", id: "alice" },
      action: { name: "refunds.issue", properties: { arguments: { amount: 120 } } },
      resource: { type: "customer", id: "cust_1" },
      context: { job: { id: "job_1", purpose: "triage", customer_id: "cust_1" } },
    },
    requirement: {
      approver_roles: ["support_manager"],
      single_use: true,
      ttl_seconds: 900,
      exclude: [],
    },
    reasons: [{ code: "refund_needs_manager", message: "refunds over 100 need a manager" }],
    initiator: "alice",
    agentId: "support-triage",
    tool: "refunds.issue",
    policyRevision: "rev-1",
    createdAt: T0,
    expiresAt: T0 + 15 * MIN,
    ...over,
  };
}

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isToolgateError(e) ? e.code : `uncoded: ${String(e)}`;
  }
  return undefined;
}

/** A store with one recorded evaluation and one pending task. */
function withPending(): { store: ApprovalStore; dir: string; task: ApprovalTask } {
  const dir = tmp();
  const store = open(dir);
  store.recordEvaluation(evaluation("ev1"));
  const { task } = store.createTask({
    evaluationId: "ev1",
    agentId: "support-triage",
    expiresAt: T0 + 10 * MIN,
    now: T0,
  });
  return { store, dir, task };
}

function approve(store: ApprovalStore, id: string, until = T0 + 30 * MIN): ApprovalTask {
  return store.decide(id, {
    approve: true,
    by: "maria",
    roles: ["support_manager"],
    comment: "ok",
    approvedUntil: until,
    now: T0 + MIN,
  });
}

describe("opening, schema and migrations", () => {
  test("creates approvals.db in WAL mode, owner-only, at the current schema version", () => {
    const dir = join(tmp(), "nested", "state");
    const store = open(dir);
    expect(store.path).toBe(join(dir, APPROVALS_DB_FILE));
    expect(store.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(SCHEMA_VERSION).toBe(6);
    expect(statSync(store.path).mode & 0o777).toBe(0o600);
    const raw = new DatabaseSync(store.path);
    try {
      expect(raw.prepare("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
      expect(raw.prepare("PRAGMA user_version").get()).toEqual({ user_version: 6 });
      const migrations = raw.prepare("SELECT version, name FROM schema_migrations").all();
      expect(migrations).toEqual([
        { version: 1, name: "create evaluations, tasks, task_events" },
        { version: 2, name: "index evaluations by expiry (pruning)" },
        { version: 3, name: "one task per evaluation" },
        {
          version: 4,
          name: "the agent's justification on a task; reasons with their messages",
        },
        { version: 5, name: "the tool's class and stage on an evaluation" },
        { version: 6, name: "plan approvals: plans, their envelopes' uses, plan_events" },
      ]);
      const tables = raw
        .prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        .all()
        .map((r) => r.name);
      expect(tables).toEqual(
        expect.arrayContaining(["evaluations", "schema_migrations", "task_events", "tasks"]),
      );
    } finally {
      raw.close();
    }
  });

  test("reopening does not migrate again; a second connection sees the same schema", () => {
    const dir = tmp();
    open(dir).close();
    const a = open(dir);
    const b = open(dir);
    expect(a.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(b.schemaVersion()).toBe(SCHEMA_VERSION);
    const raw = new DatabaseSync(join(dir, APPROVALS_DB_FILE));
    expect(raw.prepare("SELECT COUNT(*) AS n FROM schema_migrations").get()).toEqual({
      n: SCHEMA_VERSION,
    });
    raw.close();
  });

  test("foreign keys are enforced", () => {
    const { store } = withPending();
    expect(
      code(() =>
        store.createTask({ evaluationId: "nope", agentId: "support-triage", expiresAt: T0 + MIN }),
      ),
    ).toBe("approval_not_found");
    const raw = new DatabaseSync(store.path, { enableForeignKeyConstraints: true });
    expect(() =>
      raw
        .prepare(
          "INSERT INTO tasks (id, evaluation_id, agent_id, status, created_at, expires_at) VALUES ('x','nope','a','pending',1,2)",
        )
        .run(),
    ).toThrow(/FOREIGN KEY/);
    raw.close();
  });

  test("a database from a newer toolgate is refused, not guessed at", () => {
    const dir = tmp();
    open(dir).close();
    const raw = new DatabaseSync(join(dir, APPROVALS_DB_FILE));
    raw.prepare("INSERT INTO schema_migrations VALUES (99, 'future', 0)").run();
    raw.close();
    expect(code(() => ApprovalStore.open(dir))).toBe("approval_store_unavailable");
  });

  test("an unusable directory or file fails closed with approval_store_unavailable (503)", () => {
    const file = join(tmp(), "not-a-dir");
    writeFileSync(file, "x");
    let err: unknown;
    try {
      ApprovalStore.open(file);
    } catch (e) {
      err = e;
    }
    expect(isToolgateError(err) && err.code).toBe("approval_store_unavailable");
    expect(isToolgateError(err) && err.status).toBe(503);

    const dir = tmp();
    writeFileSync(join(dir, APPROVALS_DB_FILE), "this is not a database, just text ".repeat(200));
    expect(code(() => ApprovalStore.open(dir))).toBe("approval_store_unavailable");
  });

  test("a closed store refuses every call", () => {
    const { store, task } = withPending();
    store.close();
    store.close(); // idempotent
    expect(code(() => store.getTask(task.id))).toBe("approval_store_unavailable");
    expect(code(() => store.consume(task.id, "d", T0))).toBe("approval_store_unavailable");
  });
});

describe("evaluations", () => {
  test("round-trip, including the redacted request and the requirement", () => {
    const store = open(tmp());
    const input = evaluation("ev1");
    const rec = store.recordEvaluation(input);
    expect(rec).toEqual({ ...input, policyRevision: "rev-1", toolClass: null, toolStage: null });
    expect(store.getEvaluation("ev1")).toEqual(rec);
    expect(store.getEvaluation("missing")).toBeUndefined();
    const noRev = store.recordEvaluation(evaluation("ev2", { policyRevision: undefined }));
    expect(noRev.policyRevision).toBeNull();
  });

  test("bad input is a 400, not a crash", () => {
    const store = open(tmp());
    expect(code(() => store.recordEvaluation(evaluation("")))).toBe("invalid_request");
    expect(code(() => store.recordEvaluation(evaluation("e", { expiresAt: 1.5 })))).toBe(
      "invalid_request",
    );
  });

  test("the same id twice is refused (503, fail closed); the next record still works", () => {
    const store = open(tmp());
    const first = store.recordEvaluation(evaluation("ev1"));
    expect(code(() => store.recordEvaluation(evaluation("ev1", { tool: "other" })))).toBe(
      "approval_store_unavailable",
    );
    expect(store.getEvaluation("ev1")).toEqual(first);
    expect(store.recordEvaluation(evaluation("ev2")).evaluationId).toBe("ev2");
  });

  test("addEvaluation (the decision path's write) stores the same row, without reading it back", () => {
    const store = open(tmp());
    expect(store.addEvaluation(evaluation("ev1"))).toBeUndefined();
    const readBack = store.recordEvaluation(evaluation("ev2"));
    expect(store.getEvaluation("ev1")).toEqual({
      ...readBack,
      evaluationId: "ev1",
      decisionId: "dec_ev1",
    });
    expect(code(() => store.addEvaluation(evaluation("ev1", { tool: "other" })))).toBe(
      "approval_store_unavailable",
    );
    expect(code(() => store.addEvaluation(evaluation("")))).toBe("invalid_request");
    expect(store.getEvaluation("ev1")?.tool).toBe(readBack.tool);
  });

  test("a closed store refuses to record", () => {
    const store = open(tmp());
    store.close();
    expect(code(() => store.recordEvaluation(evaluation("ev1")))).toBe(
      "approval_store_unavailable",
    );
  });
});

describe("tasks: creation and idempotency", () => {
  test("a new task is pending with an unguessable id and a 'requested' event", () => {
    const { store, task } = withPending();
    expect(task.id).toMatch(/^apr_[A-Za-z0-9_-]{22}$/);
    expect(task).toMatchObject({
      evaluationId: "ev1",
      agentId: "support-triage",
      status: "pending",
      idempotencyKey: null,
      createdAt: T0,
      expiresAt: T0 + 10 * MIN,
      decidedAt: null,
      usedAt: null,
      revokedAt: null,
    });
    expect(store.listEvents(task.id)).toEqual([
      {
        taskId: task.id,
        at: T0,
        event: "requested",
        actor: "support-triage",
        details: { evaluation_id: "ev1" },
      },
    ]);
  });

  test("a repeated Idempotency-Key returns the same task; for another evaluation it conflicts", () => {
    const store = open(tmp());
    store.recordEvaluation(evaluation("ev1"));
    store.recordEvaluation(evaluation("ev2"));
    const args = {
      evaluationId: "ev1",
      agentId: "support-triage",
      expiresAt: T0 + 10 * MIN,
      now: T0,
    };
    const first = store.createTask({ ...args, idempotencyKey: "k1" });
    expect(first.created).toBe(true);
    const again = store.createTask({ ...args, idempotencyKey: "k1" });
    expect(again).toEqual({ task: first.task, created: false });
    expect(
      code(() => store.createTask({ ...args, evaluationId: "ev2", idempotencyKey: "k1" })),
    ).toBe("idempotency_conflict");
    // Still the same after the task was decided (and after the evaluation expired).
    approve(store, first.task.id);
    const late = store.createTask({ ...args, idempotencyKey: "k1", now: T0 + 60 * MIN });
    expect(late.created).toBe(false);
    expect(late.task.status).toBe("approved");
    // Another key for the same evaluation returns that evaluation's one task (issue #13).
    const other = store.createTask({ ...args, idempotencyKey: "k2" });
    expect(other).toEqual({ task: late.task, created: false });
  });

  test("keys are per agent", () => {
    const store = open(tmp());
    store.recordEvaluation(evaluation("ev1"));
    store.recordEvaluation(evaluation("ev2", { agentId: "other-agent" }));
    const a = store.createTask({
      evaluationId: "ev1",
      agentId: "support-triage",
      idempotencyKey: "k",
      expiresAt: T0 + MIN,
      now: T0,
    });
    const b = store.createTask({
      evaluationId: "ev2",
      agentId: "other-agent",
      idempotencyKey: "k",
      expiresAt: T0 + MIN,
      now: T0,
    });
    expect(a.created && b.created).toBe(true);
  });

  test("without a key, a still-pending task for the same evaluation is returned; a cancelled one is closed", () => {
    const { store, task } = withPending();
    const again = store.createTask({
      evaluationId: "ev1",
      agentId: "support-triage",
      expiresAt: T0 + 10 * MIN,
      now: T0 + 1,
    });
    expect(again).toEqual({ task, created: false });
    store.cancel(task.id, "support-triage", T0 + 2);
    expect(
      code(() =>
        store.createTask({
          evaluationId: "ev1",
          agentId: "support-triage",
          expiresAt: T0 + 10 * MIN,
          now: T0 + 3,
        }),
      ),
    ).toBe("access_request_closed");
    expect(store.listTasks().length).toBe(1);
  });

  test("unknown, another agent's, or expired evaluations cannot get a task", () => {
    const store = open(tmp());
    store.recordEvaluation(evaluation("ev1"));
    const base = { agentId: "support-triage", expiresAt: T0 + MIN };
    expect(code(() => store.createTask({ ...base, evaluationId: "nope", now: T0 }))).toBe(
      "approval_not_found",
    );
    expect(
      code(() => store.createTask({ ...base, agentId: "intruder", evaluationId: "ev1", now: T0 })),
    ).toBe("approval_not_found");
    expect(code(() => store.createTask({ ...base, evaluationId: "ev1", now: T0 + 15 * MIN }))).toBe(
      "approval_expired",
    );
    expect(store.listTasks()).toEqual([]);
  });

  test("listTasks filters by status and agent, oldest first, with a limit", () => {
    const store = open(tmp());
    for (let i = 0; i < 5; i++) {
      store.recordEvaluation(evaluation(`ev${i}`));
      store.createTask({
        evaluationId: `ev${i}`,
        agentId: "support-triage",
        expiresAt: T0 + MIN,
        now: T0 + i,
      });
    }
    const all = store.listTasks({ limit: 10 });
    expect(all.map((t) => t.evaluationId)).toEqual(["ev0", "ev1", "ev2", "ev3", "ev4"]);
    store.cancel(all[0]!.id, "support-triage", T0 + 10);
    expect(store.listTasks({ status: "pending" }).length).toBe(4);
    expect(store.listTasks({ status: "cancelled" }).map((t) => t.id)).toEqual([all[0]!.id]);
    expect(store.listTasks({ status: "pending", limit: 2 }).length).toBe(2);
    expect(store.listTasks({ agentId: "other" })).toEqual([]);
    // newest first: the console's decided list shows the latest, not the first 200 ever
    expect(store.listTasks({ limit: 2, order: "newest" }).map((t) => t.evaluationId)).toEqual([
      "ev4",
      "ev3",
    ]);
    expect(code(() => store.listTasks({ status: "bogus" as TaskStatus }))).toBe("invalid_request");
  });
});

describe("tasks: decisions and the transition table", () => {
  test("approve records who, with which roles, until when; events follow", () => {
    const { store, task } = withPending();
    const t = approve(store, task.id);
    expect(t).toMatchObject({
      status: "approved",
      decidedAt: T0 + MIN,
      decidedBy: "maria",
      decidedByRoles: ["support_manager"],
      comment: "ok",
      approvedUntil: T0 + 30 * MIN,
    });
    expect(store.listEvents(task.id).map((e) => [e.event, e.actor])).toEqual([
      ["requested", "support-triage"],
      ["approved", "maria"],
    ]);
  });

  test("deny", () => {
    const { store, task } = withPending();
    const t = store.decide(task.id, { approve: false, by: "maria", roles: [], now: T0 + 1 });
    expect(t).toMatchObject({ status: "denied", decidedBy: "maria", approvedUntil: null });
  });

  test("approving needs a future approvedUntil", () => {
    const { store, task } = withPending();
    const d = { approve: true, by: "maria", roles: ["support_manager"], now: T0 + 1 };
    expect(code(() => store.decide(task.id, d))).toBe("invalid_request");
    expect(code(() => store.decide(task.id, { ...d, approvedUntil: T0 }))).toBe("invalid_request");
    expect(store.getTask(task.id)?.status).toBe("pending");
  });

  test("deciding a task past its expiry marks it expired and answers approval_expired (410)", () => {
    const { store, task } = withPending();
    let err: unknown;
    try {
      store.decide(task.id, {
        approve: true,
        by: "maria",
        roles: ["support_manager"],
        approvedUntil: T0 + 60 * MIN,
        now: T0 + 10 * MIN,
      });
    } catch (e) {
      err = e;
    }
    expect(isToolgateError(err) && [err.code, err.status]).toEqual(["approval_expired", 410]);
    expect(store.getTask(task.id)).toMatchObject({ status: "expired", decidedBy: null });
    expect(store.listEvents(task.id).map((e) => e.event)).toEqual(["requested", "expired"]);
  });

  test("unknown task ids are approval_not_found (404)", () => {
    const store = open(tmp());
    expect(code(() => store.decide("apr_x", { approve: false, by: "m", roles: [] }))).toBe(
      "approval_not_found",
    );
    expect(code(() => store.cancel("apr_x", "a"))).toBe("approval_not_found");
    expect(code(() => store.revoke("apr_x", "a"))).toBe("approval_not_found");
    expect(code(() => store.fail("apr_x", "r"))).toBe("approval_not_found");
    expect(store.getTask("apr_x")).toBeUndefined();
  });

  // How to bring a pending task into each terminal state.
  const into: Record<Exclude<TaskStatus, "pending">, (s: ApprovalStore, id: string) => void> = {
    approved: (s, id) => approve(s, id),
    denied: (s, id) => s.decide(id, { approve: false, by: "maria", roles: [], now: T0 + 1 }),
    expired: (s) => expect(s.expireDue(T0 + 10 * MIN).length).toBe(1),
    cancelled: (s, id) => s.cancel(id, "support-triage", T0 + 1),
    failed: (s, id) => s.fail(id, "webhook rejected", "toolgate", T0 + 1),
  };
  // Every transition out of pending, tried on a task already in a terminal state.
  const attempts: Record<string, (s: ApprovalStore, id: string) => unknown> = {
    approve: (s, id) => approve(s, id),
    deny: (s, id) => s.decide(id, { approve: false, by: "sam", roles: [], now: T0 + 2 }),
    cancel: (s, id) => s.cancel(id, "support-triage", T0 + 2),
    fail: (s, id) => s.fail(id, "x", "toolgate", T0 + 2),
  };
  const table = TERMINAL_STATUSES.flatMap((state) =>
    Object.keys(attempts).map((attempt) => [state, attempt] as const),
  );

  test.each(table)(
    "%s is terminal: %s → approval_not_pending, nothing changes",
    (state, attempt) => {
      const { store, task } = withPending();
      into[state as Exclude<TaskStatus, "pending">](store, task.id);
      const before = store.getTask(task.id);
      const events = store.listEvents(task.id).length;
      expect(before?.status).toBe(state);
      expect(code(() => attempts[attempt]!(store, task.id))).toBe("approval_not_pending");
      expect(store.expireDue(T0 + 999 * MIN)).toEqual([]);
      expect(store.getTask(task.id)).toEqual(before);
      expect(store.listEvents(task.id).length).toBe(events);
    },
  );

  test.each(TERMINAL_STATUSES)(
    "%s: even raw SQL cannot change a terminal status (trigger)",
    (state) => {
      const { store, task } = withPending();
      into[state as Exclude<TaskStatus, "pending">](store, task.id);
      const raw = new DatabaseSync(store.path);
      try {
        expect(() =>
          raw.prepare("UPDATE tasks SET status = 'pending' WHERE id = ?").run(task.id),
        ).toThrow(/terminal/);
        expect(() => raw.prepare("DELETE FROM task_events").run()).toThrow(/append-only/);
      } finally {
        raw.close();
      }
      expect(store.getTask(task.id)?.status).toBe(state);
    },
  );

  test("an agent cancels only its own pending task; another agent gets not_found", () => {
    const { store, task } = withPending();
    expect(code(() => store.cancel(task.id, "other-agent", T0 + 1))).toBe("approval_not_found");
    expect(store.getTask(task.id)?.status).toBe("pending");
    expect(store.cancel(task.id, "support-triage", T0 + 1)).toMatchObject({
      status: "cancelled",
      decidedBy: "support-triage",
    });
  });

  test("expireDue expires exactly the pending tasks due by now", () => {
    const store = open(tmp());
    store.recordEvaluation(evaluation("ev1"));
    store.recordEvaluation(evaluation("ev2"));
    const mk = (ev: string, exp: number) =>
      store.createTask({ evaluationId: ev, agentId: "support-triage", expiresAt: exp, now: T0 })
        .task;
    const soon = mk("ev1", T0 + MIN);
    const later = mk("ev2", T0 + 5 * MIN);
    expect(store.expireDue(T0 + MIN - 1)).toEqual([]);
    expect(store.expireDue(T0 + MIN)).toEqual([soon.id]);
    expect(store.getTask(soon.id)).toMatchObject({ status: "expired", decidedAt: T0 + MIN });
    expect(store.getTask(later.id)?.status).toBe("pending");
    expect(store.expireDue(T0 + MIN)).toEqual([]);
  });
});

describe("single-use consumption and revocation", () => {
  test("consume once; the second is 'used'", () => {
    const { store, task } = withPending();
    approve(store, task.id);
    const first = store.consume(task.id, "dec_a", T0 + 2 * MIN);
    expect(first.consumed).toBe(true);
    expect(first.task).toMatchObject({ usedAt: T0 + 2 * MIN, usedByDecisionId: "dec_a" });
    const second = store.consume(task.id, "dec_b", T0 + 3 * MIN);
    expect(second).toMatchObject({ consumed: false, reason: "used" });
    expect(store.getTask(task.id)?.usedByDecisionId).toBe("dec_a");
    expect(store.listEvents(task.id).map((e) => e.event)).toEqual([
      "requested",
      "approved",
      "used",
    ]);
  });

  test("not found, not approved, expired approval, revoked: not consumed, with the reason", () => {
    const { store, task } = withPending();
    expect(store.consume("apr_nope", "d", T0)).toMatchObject({
      consumed: false,
      reason: "not_found",
    });
    expect(store.consume(task.id, "d", T0)).toMatchObject({
      consumed: false,
      reason: "not_approved",
    });
    approve(store, task.id, T0 + 30 * MIN);
    expect(store.consume(task.id, "d", T0 + 30 * MIN)).toMatchObject({
      consumed: false,
      reason: "expired",
    });
    store.revoke(task.id, "maria", T0 + 5 * MIN);
    expect(store.consume(task.id, "d", T0 + 6 * MIN)).toMatchObject({
      consumed: false,
      reason: "revoked",
    });
    expect(store.getTask(task.id)?.usedAt).toBeNull();

    const denied = withPending();
    denied.store.decide(denied.task.id, { approve: false, by: "maria", roles: [], now: T0 + 1 });
    expect(denied.store.consume(denied.task.id, "d", T0 + 2)).toMatchObject({
      consumed: false,
      reason: "not_approved",
    });
  });

  test("revoke: only an approved, unrevoked task; status stays approved; once", () => {
    const { store, task } = withPending();
    expect(code(() => store.revoke(task.id, "maria", T0))).toBe("approval_not_approved");
    approve(store, task.id);
    const r = store.revoke(task.id, "maria", T0 + 2 * MIN);
    expect(r).toMatchObject({ status: "approved", revokedAt: T0 + 2 * MIN, revokedBy: "maria" });
    expect(code(() => store.revoke(task.id, "sam", T0 + 3 * MIN))).toBe("approval_not_approved");
    expect(store.getTask(task.id)?.revokedBy).toBe("maria");
    const raw = new DatabaseSync(store.path);
    expect(() =>
      raw
        .prepare("UPDATE tasks SET revoked_at = NULL, revoked_by = NULL WHERE id = ?")
        .run(task.id),
    ).toThrow(/already revoked/);
    raw.close();
  });

  test("a used approval cannot be un-used, even by raw SQL (trigger)", () => {
    const { store, task } = withPending();
    approve(store, task.id);
    expect(store.consume(task.id, "dec_a", T0 + 2 * MIN).consumed).toBe(true);
    const raw = new DatabaseSync(store.path);
    expect(() => raw.prepare("UPDATE tasks SET used_at = NULL WHERE id = ?").run(task.id)).toThrow(
      /already used/,
    );
    raw.close();
  });

  test("two connections on one file: exactly one consumer wins", () => {
    const { store, dir, task } = withPending();
    approve(store, task.id);
    const a = open(dir);
    const b = open(dir);
    const results = [
      a.consume(task.id, "dec_a", T0 + 2 * MIN),
      b.consume(task.id, "dec_b", T0 + 2 * MIN),
      store.consume(task.id, "dec_c", T0 + 2 * MIN),
    ];
    expect(results.filter((r) => r.consumed).length).toBe(1);
    expect(results.filter((r) => !r.consumed && r.reason === "used").length).toBe(2);
  });

  test("worker threads racing on one file: exactly one consumer wins", async () => {
    const { store, dir, task } = withPending();
    approve(store, task.id);
    // Workers run plain JS: transpile the store and the error registry into a temp tree.
    const out = tmp();
    const root = join(__dirname, "..", "..");
    for (const rel of [
      "src/approvals/store.ts",
      "src/errors/index.ts",
      "src/errors/registry.ts",
      "src/shared/sqlite.ts",
      "src/shared/checkpointer.ts",
      "src/shared/checkpoint-worker.ts",
      "src/shared/guards.ts",
      "src/shared/paths.ts",
    ]) {
      const { outputText } = ts.transpileModule(ts.sys.readFile(join(root, rel)) ?? "", {
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
      });
      const target = join(out, rel.replace(/\.ts$/, ".js"));
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, outputText);
    }
    const storeJs = join(out, "src/approvals/store.js");
    const source = `
      const { workerData, parentPort } = require("node:worker_threads");
      const { ApprovalStore } = require(workerData.storeJs);
      const store = ApprovalStore.open(workerData.dir);
      const gate = new Int32Array(workerData.gate);
      parentPort.postMessage({ ready: true });
      Atomics.wait(gate, 0, 0);
      try {
        const r = store.consume(workerData.taskId, workerData.decisionId, workerData.now);
        parentPort.postMessage({ consumed: r.consumed, reason: r.consumed ? null : r.reason });
      } catch (e) {
        parentPort.postMessage({ error: String(e && e.code) + ": " + String(e && e.message) });
      } finally {
        store.close();
      }
    `;
    const N = 8;
    const gate = new Int32Array(new SharedArrayBuffer(4));
    const readies: Array<Promise<void>> = [];
    const results: Array<Promise<{ consumed?: boolean; reason?: string; error?: string }>> = [];
    const exits: Array<Promise<unknown>> = [];
    for (let i = 0; i < N; i++) {
      const w = new Worker(source, {
        eval: true,
        workerData: {
          storeJs,
          dir,
          gate: gate.buffer,
          taskId: task.id,
          decisionId: `dec_w${i}`,
          now: T0 + 2 * MIN,
        },
      });
      exits.push(new Promise((r) => w.once("exit", r)));
      let onReady!: () => void;
      readies.push(new Promise<void>((r) => (onReady = r)));
      results.push(
        new Promise((resolve, reject) => {
          w.on("error", (e: Error) => {
            onReady();
            reject(e);
          });
          w.on("message", (m: { ready?: boolean; consumed?: boolean }) => {
            if (m.ready) onReady();
            else resolve(m);
          });
        }),
      );
    }
    await Promise.all(readies);
    Atomics.store(gate, 0, 1);
    Atomics.notify(gate, 0);
    const got = await Promise.all(results);
    await Promise.all(exits);
    expect(got.filter((g) => g.error !== undefined)).toEqual([]);
    expect(got.filter((g) => g.consumed === true).length).toBe(1);
    expect(got.filter((g) => g.consumed === false && g.reason === "used").length).toBe(N - 1);
    const used = store.getTask(task.id);
    expect(used?.usedByDecisionId).toMatch(/^dec_w\d$/);
    expect(store.listEvents(task.id).filter((e) => e.event === "used").length).toBe(1);
  });

  test("two connections deciding at once: exactly one decision sticks", () => {
    const { store, dir, task } = withPending();
    const other = open(dir);
    approve(store, task.id);
    expect(
      code(() => other.decide(task.id, { approve: false, by: "sam", roles: [], now: T0 + 2 })),
    ).toBe("approval_not_pending");
    expect(other.getTask(task.id)?.status).toBe("approved");
  });
});

describe("durability", () => {
  test("evaluations commit on a synchronous=NORMAL connection; everything else stays FULL", () => {
    const dir = tmp();
    const store = open(dir);
    expect(store.synchronousModes()).toEqual({ main: "FULL", evaluations: "NORMAL" });
    store.close();
    expect(open(dir).synchronousModes()).toEqual({ main: "FULL", evaluations: "NORMAL" });
  });

  test("a recorded evaluation is visible at once to other connections and survives reopen", () => {
    const dir = tmp();
    const store = open(dir);
    const rec = store.recordEvaluation(evaluation("ev1"));
    // Another store (its own connections) sees the commit without any close.
    const other = open(dir);
    expect(other.getEvaluation("ev1")).toEqual(rec);
    expect(
      other.createTask({
        evaluationId: "ev1",
        agentId: "support-triage",
        expiresAt: T0 + 10 * MIN,
        now: T0,
      }).created,
    ).toBe(true);
    other.close();
    store.close();

    const raw = new DatabaseSync(join(dir, APPROVALS_DB_FILE));
    expect(raw.prepare("SELECT evaluation_id FROM evaluations").all()).toEqual([
      { evaluation_id: "ev1" },
    ]);
    raw.close();
    const reopened = open(dir);
    expect(reopened.getEvaluation("ev1")).toEqual(rec);
    expect(reopened.listTasks({ agentId: "support-triage" })).toHaveLength(1);
  });

  test("close() closes both connections (the last one out checkpoints and removes the WAL)", () => {
    const dir = tmp();
    const store = open(dir);
    store.recordEvaluation(evaluation("ev1"));
    const wal = join(dir, `${APPROVALS_DB_FILE}-wal`);
    expect(existsSync(wal)).toBe(true);
    store.close();
    expect(existsSync(wal)).toBe(false);
    expect(statSync(join(dir, APPROVALS_DB_FILE)).mode & 0o777).toBe(0o600);
  });

  test("write, close, reopen, read: tasks, decisions, consumption and events survive", () => {
    const { store, dir, task } = withPending();
    approve(store, task.id);
    expect(store.consume(task.id, "dec_a", T0 + 2 * MIN).consumed).toBe(true);
    const before = store.getTask(task.id);
    const events = store.listEvents(task.id);
    const ev = store.getEvaluation("ev1");
    store.close();

    const reopened = open(dir);
    expect(reopened.getTask(task.id)).toEqual(before);
    expect(reopened.listEvents(task.id)).toEqual(events);
    expect(reopened.getEvaluation("ev1")).toEqual(ev);
    // Still single-use after the restart.
    expect(reopened.consume(task.id, "dec_b", T0 + 3 * MIN)).toMatchObject({
      consumed: false,
      reason: "used",
    });
  });

  test("an approval granted before a restart is consumable after it, once", () => {
    const { store, dir, task } = withPending();
    approve(store, task.id);
    store.close();
    const reopened = open(dir);
    expect(reopened.consume(task.id, "dec_a", T0 + 2 * MIN).consumed).toBe(true);
    expect(reopened.consume(task.id, "dec_b", T0 + 2 * MIN).consumed).toBe(false);
  });
});

describe("pruning evaluations", () => {
  test("expired evaluations no task cites are deleted, in batches; cited and unexpired ones stay", () => {
    const { store } = withPending(); // ev1: expires T0 + 15 min, cited by a task
    for (let i = 0; i < 5; i++)
      store.recordEvaluation(evaluation(`old${i}`, { expiresAt: T0 + MIN }));
    store.recordEvaluation(evaluation("fresh", { expiresAt: T0 + 60 * MIN }));
    // cut-off after the old ones and ev1 expired, before "fresh" does
    expect(store.pruneEvaluations(T0 + 30 * MIN, 3)).toBe(3);
    expect(store.pruneEvaluations(T0 + 30 * MIN, 3)).toBe(2);
    expect(store.pruneEvaluations(T0 + 30 * MIN, 3)).toBe(0);
    for (let i = 0; i < 5; i++) expect(store.getEvaluation(`old${i}`)).toBeUndefined();
    expect(store.getEvaluation("ev1")?.evaluationId).toBe("ev1"); // its task still refers to it
    expect(store.getEvaluation("fresh")?.evaluationId).toBe("fresh");
  });

  test("a migrated database of schema 1 gets the index and keeps its rows", () => {
    const dir = tmp();
    const v1 = open(dir);
    v1.recordEvaluation(evaluation("kept"));
    v1.close();
    // back to schema 1: drop what migrations 2 to 6 added
    const raw = new DatabaseSync(join(dir, APPROVALS_DB_FILE));
    raw.exec(
      "DROP TABLE plan_events; DROP TABLE plan_envelopes; DROP TABLE plans;" +
        " DROP INDEX evaluations_by_expiry; DROP TRIGGER tasks_one_per_evaluation;" +
        " DROP INDEX tasks_by_agent_created; ALTER TABLE tasks DROP COLUMN justification;" +
        " ALTER TABLE evaluations DROP COLUMN tool_class; ALTER TABLE evaluations DROP COLUMN tool_stage;" +
        " DELETE FROM schema_migrations WHERE version >= 2;",
    );
    raw.exec("PRAGMA user_version = 1");
    raw.close();
    const store = open(dir);
    expect(store.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(store.getEvaluation("kept")?.evaluationId).toBe("kept");
    const check = new DatabaseSync(join(dir, APPROVALS_DB_FILE));
    try {
      const idx = check
        .prepare(
          "SELECT name FROM sqlite_master WHERE type='index' AND name='evaluations_by_expiry'",
        )
        .all();
      expect(idx).toHaveLength(1);
    } finally {
      check.close();
    }
  });

  test("migration 4: a schema-3 file's reasons (codes alone) read as {code, message}; tasks get a justification", () => {
    const dir = tmp();
    const v3 = open(dir);
    v3.recordEvaluation(evaluation("old"));
    v3.createTask({
      evaluationId: "old",
      agentId: "support-triage",
      expiresAt: T0 + 60 * MIN,
      now: T0,
    });
    v3.close();
    const raw = new DatabaseSync(join(dir, APPROVALS_DB_FILE));
    raw.exec(
      `UPDATE evaluations SET reasons_json = '["refund_needs_manager","second"]';` +
        " DROP TABLE plan_events; DROP TABLE plan_envelopes; DROP TABLE plans;" +
        " DROP INDEX tasks_by_agent_created; ALTER TABLE tasks DROP COLUMN justification;" +
        " ALTER TABLE evaluations DROP COLUMN tool_class; ALTER TABLE evaluations DROP COLUMN tool_stage;" +
        " DELETE FROM schema_migrations WHERE version >= 4; PRAGMA user_version = 3;",
    );
    raw.close();
    const store = open(dir);
    expect(store.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(store.getEvaluation("old")).toMatchObject({ toolClass: null, toolStage: null });
    expect(store.getEvaluation("old")?.reasons).toEqual([
      { code: "refund_needs_manager", message: "" },
      { code: "second", message: "" },
    ]);
    const [task] = store.listTasks();
    expect(task?.justification).toBeNull();
    store.recordEvaluation(evaluation("new", { toolClass: "execute", toolStage: "autonomous" }));
    expect(store.getEvaluation("new")).toMatchObject({
      toolClass: "execute",
      toolStage: "autonomous",
    });
    const { task: t2 } = store.createTask({
      evaluationId: "new",
      agentId: "support-triage",
      expiresAt: T0 + 60 * MIN,
      now: T0,
      justification: "the customer was charged twice\n(see ticket 42)",
    });
    expect(store.getTask(t2.id)?.justification).toBe(
      "the customer was charged twice\n(see ticket 42)",
    );
    expect(() =>
      store.createTask({
        evaluationId: "new",
        agentId: "support-triage",
        expiresAt: T0 + 60 * MIN,
        justification: "bell\u0007",
      }),
    ).toThrow(/justification/);
    expect(store.requestStats("support-triage", "refunds.issue", T0 - 1)).toEqual({
      requested: 2,
      approved: 0,
    });
    store.decide(t2.id, {
      approve: true,
      by: "maria",
      roles: ["support_manager"],
      approvedUntil: T0 + 60 * MIN,
      now: T0 + 1,
    });
    expect(store.requestStats("support-triage", "refunds.issue", T0 - 1)).toEqual({
      requested: 2,
      approved: 1,
    });
    expect(store.requestStats("support-triage", "refunds.issue", T0)).toEqual({
      requested: 0,
      approved: 0,
    });
    expect(store.requestStats("support-triage", "other.tool", T0 - 1)).toEqual({
      requested: 0,
      approved: 0,
    });
  });
});
