/**
 * Issue #13, item 8, at the store: one evaluation has at most one task (in
 * createTask's transaction, across connections, and — second line — by a
 * trigger), a closed request is not reopened, and the per-initiator limit's
 * window arithmetic. Real SQLite files in a temp dir, a fixed clock.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  ApprovalStore,
  APPROVALS_DB_FILE,
  type CreateTaskInput,
  type EvaluationInput,
} from "../../src/approvals/store";
import { isToolgateError, type ToolgateError } from "../../src/errors";

const dirs: string[] = [];
const stores: ApprovalStore[] = [];
function open(dir: string): ApprovalStore {
  const s = ApprovalStore.open(dir);
  stores.push(s);
  return s;
}
function fresh(): { dir: string; store: ApprovalStore } {
  const dir = mkdtempSync(join(tmpdir(), "toolgate-approval-limits-"));
  dirs.push(dir);
  return { dir, store: open(dir) };
}
afterAll(() => {
  for (const s of stores) s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const T0 = 1_800_000_000_000;
const MIN = 60_000;

function evaluation(id: string, initiator = "alice"): EvaluationInput {
  return {
    evaluationId: id,
    decisionId: `dec_${id}`,
    bindingHash: "l0ugE2lupDlzVCE-RxH7_vnpivDDkZ585VWMB0HJN_c",
    bindingContextMembers: ["job"],
    redactedRequest: { subject: { type: "user", id: initiator } },
    requirement: {
      approver_roles: ["support_manager"],
      single_use: true,
      ttl_seconds: 900,
      exclude: [],
    },
    initiator,
    agentId: "support-triage",
    tool: "refunds.issue",
    createdAt: T0,
    expiresAt: T0 + 60 * MIN,
  };
}

const deny = { approve: false, by: "maria", roles: ["support_manager"], now: T0 + 1 };

const task = (evaluationId: string, over: Partial<CreateTaskInput> = {}): CreateTaskInput => ({
  evaluationId,
  agentId: "support-triage",
  expiresAt: T0 + 120 * MIN,
  now: T0,
  ...over,
});

function thrown(fn: () => unknown): ToolgateError {
  try {
    fn();
  } catch (e) {
    if (isToolgateError(e)) return e;
    throw e;
  }
  throw new Error("expected a coded error, got none");
}

describe("one evaluation, one task", () => {
  test("a second connection asking with another key gets the first connection's task", () => {
    const { dir, store } = fresh();
    store.recordEvaluation(evaluation("ev1"));
    const other = open(dir);
    const a = store.createTask(task("ev1", { idempotencyKey: "a" }));
    const b = other.createTask(task("ev1", { idempotencyKey: "b", now: T0 + 1 }));
    expect(a.created).toBe(true);
    expect(b).toEqual({ task: a.task, created: false });
    expect(store.listTasks().length).toBe(1);
  });

  test("the trigger refuses a second task row for one evaluation, whoever writes it", () => {
    const { dir, store } = fresh();
    store.recordEvaluation(evaluation("ev1"));
    store.createTask(task("ev1"));
    const raw = new DatabaseSync(join(dir, APPROVALS_DB_FILE));
    try {
      expect(() =>
        raw
          .prepare(
            `INSERT INTO tasks (id, evaluation_id, agent_id, status, created_at, expires_at)
             VALUES ('apr_second', 'ev1', 'support-triage', 'pending', ?, ?)`,
          )
          .run(T0, T0 + MIN),
      ).toThrow(/already has an access request/);
    } finally {
      raw.close();
    }
    expect(store.listTasks().length).toBe(1);
  });

  test.each([
    ["denied", (s: ApprovalStore, id: string) => s.decide(id, deny)],
    ["cancelled", (s: ApprovalStore, id: string) => s.cancel(id, "support-triage", T0 + 1)],
    ["failed", (s: ApprovalStore, id: string) => s.fail(id, "broken", "toolgate", T0 + 1)],
  ])("a %s request is closed: a new key, or none, is refused", (status, close) => {
    const { store } = fresh();
    store.recordEvaluation(evaluation("ev1"));
    const { task: t } = store.createTask(task("ev1", { idempotencyKey: "k1" }));
    close(store, t.id);
    for (const key of [null, "k2"]) {
      const e = thrown(() => store.createTask(task("ev1", { idempotencyKey: key, now: T0 + 2 })));
      expect(e.code).toBe("access_request_closed");
      expect(e.message).toContain(status);
    }
    // the original key still names the (closed) task: a retry learns its outcome
    expect(store.createTask(task("ev1", { idempotencyKey: "k1", now: T0 + 3 })).task).toMatchObject(
      { id: t.id, status },
    );
    expect(store.listTasks().length).toBe(1);
  });

  test("an overdue pending task counts as expired: closed, not returned", () => {
    const { store } = fresh();
    store.recordEvaluation(evaluation("ev1"));
    store.createTask(task("ev1", { expiresAt: T0 + MIN }));
    const e = thrown(() => store.createTask(task("ev1", { now: T0 + 2 * MIN })));
    expect(e.code).toBe("access_request_closed");
    expect(e.message).toContain("expired");
  });
});

describe("the per-initiator limit", () => {
  const limit = { max: 2, windowMs: 10 * MIN };

  test("max requests in the window, then access_request_rate_limited with retry_after", () => {
    const { store } = fresh();
    for (const id of ["e1", "e2", "e3", "e4"]) store.recordEvaluation(evaluation(id));
    store.createTask(task("e1", { limit, now: T0 }));
    store.createTask(task("e2", { limit, now: T0 + MIN }));
    const e = thrown(() => store.createTask(task("e3", { limit, now: T0 + 2 * MIN })));
    expect(e.code).toBe("access_request_rate_limited");
    expect(e.status).toBe(429);
    // the oldest (T0) leaves the 10-minute window at T0 + 10 min: 8 minutes on
    expect(e.details).toEqual({ retry_after: 480 });
    expect(store.listTasks().length).toBe(2);
    // one millisecond early is still too early; at the boundary it is free again
    expect(
      thrown(() => store.createTask(task("e3", { limit, now: T0 + 10 * MIN - 1 }))).details,
    ).toEqual({ retry_after: 1 });
    expect(store.createTask(task("e3", { limit, now: T0 + 10 * MIN })).created).toBe(true);
    expect(thrown(() => store.createTask(task("e4", { limit, now: T0 + 10 * MIN }))).code).toBe(
      "access_request_rate_limited",
    );
  });

  test("denied requests count; approved ones and other initiators' do not", () => {
    const { store } = fresh();
    for (const id of ["a1", "a2", "a3", "a4"]) store.recordEvaluation(evaluation(id));
    store.recordEvaluation(evaluation("s1", "sam"));
    const first = store.createTask(task("a1", { limit })).task;
    const second = store.createTask(task("a2", { limit })).task;
    store.decide(first.id, deny);
    expect(thrown(() => store.createTask(task("a3", { limit, now: T0 + 2 }))).code).toBe(
      "access_request_rate_limited",
    );
    expect(store.createTask(task("s1", { limit, now: T0 + 2 })).created).toBe(true);
    store.decide(second.id, {
      approve: true,
      by: "maria",
      roles: ["support_manager"],
      approvedUntil: T0 + 30 * MIN,
      now: T0 + 3,
    });
    expect(store.createTask(task("a3", { limit, now: T0 + 4 })).created).toBe(true);
    expect(thrown(() => store.createTask(task("a4", { limit, now: T0 + 5 }))).code).toBe(
      "access_request_rate_limited",
    );
  });

  test("a lowered limit: retry_after waits until enough requests left the window", () => {
    const { store } = fresh();
    for (let i = 0; i < 5; i++) store.recordEvaluation(evaluation(`e${i}`));
    for (let i = 0; i < 4; i++) store.createTask(task(`e${i}`, { now: T0 + i * MIN }));
    // 4 counted (T0 … T0+3min) against a limit of 2: a place frees when the
    // third-oldest (T0+2min) leaves the window, at T0+12min
    const e = thrown(() => store.createTask(task("e4", { limit, now: T0 + 5 * MIN })));
    expect(e.details).toEqual({ retry_after: 7 * 60 });
  });

  test("resubmitting an existing request is never rate-limited", () => {
    const { store } = fresh();
    for (const id of ["e1", "e2", "e3"]) store.recordEvaluation(evaluation(id));
    const t1 = store.createTask(task("e1", { limit })).task;
    store.createTask(task("e2", { limit }));
    expect(store.createTask(task("e1", { limit, now: T0 + 1 }))).toEqual({
      task: t1,
      created: false,
    });
  });
});
