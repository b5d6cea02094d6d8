/**
 * Durable approval state on the built-in `node:sqlite` (`DatabaseSync`).
 *
 * One file, `<dir>/approvals.db` (created 0600 in a 0700 directory), WAL
 * journal, `synchronous=FULL` (a decided approval survives power loss),
 * `busy_timeout` so concurrent connections (another process, a worker) wait
 * instead of failing, foreign keys on. Every call is synchronous, as
 * node:sqlite is; every state change is one transaction together with its
 * `task_events` row.
 *
 * Durability: two connections to that file. Tasks, decisions, consumption,
 * revocation and events go through the main one, `synchronous=FULL` (each
 * commit fsyncs the WAL). The evaluation insert alone (`addEvaluation`, and
 * `recordEvaluation`, which reads the row back) — run synchronously on the
 * decision path for every needs_approval answer — uses a second connection
 * with `synchronous=NORMAL`: its commit is not fsynced (an fsync per
 * needs_approval decision blocked the event loop for ~0.3–1 ms). In WAL mode
 * that never corrupts the file; the cost is that evaluations recorded since
 * the last fsync (the last FULL commit or WAL checkpoint) may be lost on power
 * loss or an OS crash (not on a process crash). That fails closed: the
 * agent's follow-up access request gets `approval_not_found` ("no recorded
 * evaluation") and it asks again. A task never outlives its evaluation: the
 * task's FULL commit is appended to the WAL after the evaluation's frames and
 * its fsync covers them (WAL recovery keeps only an unbroken prefix of
 * commits). WAL checkpoints (which fsync the WAL, then the database) run on
 * a worker thread (`Checkpointer`, src/shared/checkpointer.ts): SQLite's
 * auto-checkpoint inside an evaluation's commit stalled the event loop
 * ~5–18 ms every ~250 evaluations; it remains only as a safety net at 4000
 * pages.
 *
 * What is stored — the database is NOT a copy of the tool arguments:
 * - `evaluations` keeps, per needs_approval decision, the binding hash (and
 *   the context-member set it covers) that a re-submission or re-evaluation
 *   must reproduce, and a *redacted* copy of the request for approvers to
 *   read. The caller redacts (src/redaction) before `recordEvaluation`;
 *   the store never sees arguments in clear unless the caller passes them.
 *   Still protect the file like the audit trail: it names users, tools and
 *   the redacted arguments.
 * - `tasks` keeps the lifecycle of an access request, `task_events` an
 *   append-only history of it (for audit and the approver UI).
 *
 * Schema versioning: the `schema_migrations` table (version, name,
 * applied_at) is authoritative; `PRAGMA user_version` mirrors the highest
 * version for quick inspection with the sqlite3 shell. Migrations run in one
 * `BEGIN IMMEDIATE` transaction each, so two processes opening the same file
 * migrate it once. A file migrated by a newer toolgate (unknown version) is
 * refused rather than guessed at.
 *
 * Lifecycle: status `pending → approved | denied | expired | cancelled |
 * failed`; only `pending` ever changes status (enforced by the UPDATEs'
 * `WHERE status='pending'` and, as a second line, by triggers). An approved
 * task may later get `used_at` (single-use consumption, once) and
 * `revoked_at` (once); neither changes its status, and neither can be unset.
 * One evaluation has at most one task, ever (checked in `createTask`'s
 * transaction and, as a second line, by a trigger): a denied, cancelled or
 * expired request is not reopened, a new evaluation is needed.
 *
 * Errors: coded `ToolgateError`s; any SQLite failure becomes
 * `approval_store_unavailable` (503) so callers fail closed.
 * Times are epoch milliseconds (integers).
 */
import { randomBytes } from "node:crypto";
import { type SQLInputValue, type StatementSync } from "node:sqlite";
import { synchronousOf, type Migration, SqliteStore, type OpenedStore } from "../shared/sqlite";
import { toolgateError } from "../errors";
import { parseUntrustedJson } from "../shared/guards";
import type { ApprovalRequirement } from "../model";
import type { Envelope, PlanRequirement } from "./plans";

export const APPROVALS_DB_FILE = "approvals.db";
export const BUSY_TIMEOUT_MS = 5000;

export const TASK_STATUSES = [
  "pending",
  "approved",
  "denied",
  "expired",
  "cancelled",
  "failed",
] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];
export const TERMINAL_STATUSES: readonly TaskStatus[] = TASK_STATUSES.filter(
  (s) => s !== "pending",
);

/** What the policy required of the approval (from its needs_approval output). */
export type { ApprovalRequirement };

/** A reason of the policy's answer, as approvers read it: its code and its (redacted) words. */
export interface ApprovalReason {
  code: string;
  /** The policy's human-readable message; "" for rows recorded before messages were kept. */
  message: string;
}

/**
 * Reasons as stored or sent: `[{code, message}]`, or the codes alone
 * (`string[]`, rows and sidecars from before messages were kept) — read as
 * `{code, message: ""}`. Throws on anything else.
 */
export function toReasons(v: unknown, what = "reasons"): ApprovalReason[] {
  if (!Array.isArray(v)) throw new Error(`${what} is not an array`);
  return v.map((r: unknown) => {
    if (typeof r === "string") return { code: r, message: "" };
    if (
      r !== null &&
      typeof r === "object" &&
      !Array.isArray(r) &&
      typeof (r as { code?: unknown }).code === "string" &&
      typeof (r as { message?: unknown }).message === "string"
    ) {
      const { code, message } = r as ApprovalReason;
      return { code, message };
    }
    throw new Error(`${what} holds an entry that is neither a code nor {code, message}`);
  });
}

/** An agent's justification: at most this many characters. */
export const MAX_JUSTIFICATION = 2000;
/** Control characters other than tab and newline (C0, DEL, C1). */
// eslint-disable-next-line no-control-regex -- control characters are what it refuses
const CONTROL_RE = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F]/;

/** A justification as stored: a string of ≤ 2000 characters without control characters but \t and \n. */
export function checkJustification(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== "string" || v.length > MAX_JUSTIFICATION || CONTROL_RE.test(v)) {
    throw toolgateError(
      "invalid_request",
      `justification must be a string of ≤ ${MAX_JUSTIFICATION} characters without control characters (tab and newline allowed)`,
    );
  }
  return v;
}

export interface EvaluationInput {
  evaluationId: string;
  decisionId: string;
  bindingHash: string;
  /** The context members the hash covers (the profile's `binding_context_members`). */
  bindingContextMembers: string[];
  /** The request as decided, already redacted for display. Never the clear arguments. */
  redactedRequest: unknown;
  requirement: ApprovalRequirement;
  /** The policy's reasons with their (redacted) messages. */
  reasons?: ApprovalReason[];
  initiator: string;
  agentId: string;
  tool: string;
  /** The tool's class and rollout stage as the policy named them (null: unknown). */
  toolClass?: string | null | undefined;
  toolStage?: string | null | undefined;
  policyRevision?: string | null | undefined;
  createdAt: number;
  expiresAt: number;
}

export type EvaluationRecord = Required<
  Omit<EvaluationInput, "policyRevision" | "toolClass" | "toolStage">
> & {
  policyRevision: string | null;
  toolClass: string | null;
  toolStage: string | null;
};

/** What an access request's task and a plan share: pending, decided, maybe revoked. */
export interface DecidableRecord {
  id: string;
  agentId: string;
  status: TaskStatus;
  idempotencyKey: string | null;
  createdAt: number;
  expiresAt: number;
  decidedAt: number | null;
  decidedBy: string | null;
  decidedByRoles: string[] | null;
  comment: string | null;
  approvedUntil: number | null;
  revokedAt: number | null;
  revokedBy: string | null;
  /** The agent's words on why it needs this (redacted before it is stored); null if none. */
  justification: string | null;
}

export interface ApprovalTask extends DecidableRecord {
  evaluationId: string;
  usedAt: number | null;
  usedByDecisionId: string | null;
}

/** Access requests of one agent for one tool within a window, and how many were approved. */
export interface RequestStats {
  requested: number;
  approved: number;
}

export interface TaskEvent {
  taskId: string;
  at: number;
  event: string;
  actor: string;
  details: Record<string, unknown>;
}

export interface CreateTaskInput {
  evaluationId: string;
  idempotencyKey?: string | null;
  agentId: string;
  expiresAt: number;
  now?: number;
  /** The agent's justification, already redacted (see checkJustification). */
  justification?: string | null;
  /**
   * Per initiator (the evaluation's verified subject): at most `max` tasks that
   * are not approved may have been created within the last `windowMs`.
   */
  limit?: RequestLimit;
}

export interface RequestLimit {
  max: number;
  windowMs: number;
}

/** Statuses a per-initiator request limit counts: everything an approver did not approve. */
export const LIMITED_STATUSES: readonly TaskStatus[] = TASK_STATUSES.filter(
  (s) => s !== "approved",
);

export interface DecideInput {
  approve: boolean;
  by: string;
  roles: string[];
  comment?: string | null;
  /** Required when approving; must lie after `now`. */
  approvedUntil?: number | null;
  now?: number;
}

export type ConsumeResult =
  | { consumed: true; task: ApprovalTask }
  | {
      consumed: false;
      reason: "not_found" | "not_approved" | "revoked" | "expired" | "used";
      task: ApprovalTask | undefined;
    };

/** A plan as kept (src/approvals/plans.ts has the rules). */
export interface PlanRecord extends DecidableRecord {
  initiator: string;
  bindingHash: string;
  subjectHash: string;
  jobHash: string;
  /** The envelopes' matching form (exact values and enum members only as hashes). */
  envelopes: Envelope[];
  /** What approvers read: subject, resource, job and envelopes, redacted. */
  redacted: unknown;
  requirement: PlanRequirement;
  ttlSeconds: number;
  policyRevision: string | null;
  /** Per envelope, in order: uses claimed, the most, and when it stops (null: with the plan). */
  uses: Array<{ uses: number; maxUses: number; expiresAt: number | null }>;
}

/** A new plan: the record's own fields as given, the rest optional. */
export interface CreatePlanInput extends Pick<
  PlanRecord,
  | "agentId"
  | "initiator"
  | "bindingHash"
  | "subjectHash"
  | "jobHash"
  | "envelopes"
  | "redacted"
  | "requirement"
  | "ttlSeconds"
  | "expiresAt"
> {
  idempotencyKey?: string | null;
  justification?: string | null;
  policyRevision?: string | null;
  now?: number;
  limit?: RequestLimit;
}

export type PlanClaim =
  | { claimed: true; envelope: number; uses: number; maxUses: number }
  | { claimed: false; reason: "not_found" | "not_approved" | "revoked" | "expired" | "used_up" };

const STATUS_CHECK = TASK_STATUSES.map((s) => `'${s}'`).join(", ");

/** Append only: never edit a released migration, add the next one. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "create evaluations, tasks, task_events",
    sql: `
CREATE TABLE evaluations (
  evaluation_id TEXT PRIMARY KEY,
  decision_id TEXT NOT NULL,
  binding_hash TEXT NOT NULL,
  binding_context_members_json TEXT NOT NULL,
  redacted_request_json TEXT NOT NULL,
  requirement_json TEXT NOT NULL,
  reasons_json TEXT NOT NULL,
  initiator TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  tool TEXT NOT NULL,
  policy_revision TEXT,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) STRICT;

CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  evaluation_id TEXT NOT NULL REFERENCES evaluations(evaluation_id),
  agent_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN (${STATUS_CHECK})),
  idempotency_key TEXT,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  decided_at INTEGER,
  decided_by TEXT,
  decided_by_roles_json TEXT,
  comment TEXT,
  approved_until INTEGER,
  used_at INTEGER,
  used_by_decision_id TEXT,
  revoked_at INTEGER,
  revoked_by TEXT,
  UNIQUE (agent_id, idempotency_key)
) STRICT;
CREATE INDEX tasks_by_status ON tasks (status, created_at);
CREATE INDEX tasks_by_evaluation ON tasks (evaluation_id);

CREATE TABLE task_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL REFERENCES tasks(id),
  at INTEGER NOT NULL,
  event TEXT NOT NULL,
  actor TEXT NOT NULL,
  details_json TEXT NOT NULL
) STRICT;
CREATE INDEX task_events_by_task ON task_events (task_id, seq);

-- Second line of defence behind the guarded UPDATEs: terminal states never change.
CREATE TRIGGER tasks_terminal_status BEFORE UPDATE OF status ON tasks
WHEN OLD.status <> 'pending' AND NEW.status IS NOT OLD.status
BEGIN SELECT RAISE(ABORT, 'approval task status is terminal'); END;
CREATE TRIGGER tasks_used_once BEFORE UPDATE OF used_at, used_by_decision_id ON tasks
WHEN OLD.used_at IS NOT NULL
  AND (NEW.used_at IS NOT OLD.used_at OR NEW.used_by_decision_id IS NOT OLD.used_by_decision_id)
BEGIN SELECT RAISE(ABORT, 'approval already used'); END;
CREATE TRIGGER tasks_revoked_once BEFORE UPDATE OF revoked_at, revoked_by ON tasks
WHEN OLD.revoked_at IS NOT NULL
  AND (NEW.revoked_at IS NOT OLD.revoked_at OR NEW.revoked_by IS NOT OLD.revoked_by)
BEGIN SELECT RAISE(ABORT, 'approval already revoked'); END;
CREATE TRIGGER task_events_append_only_u BEFORE UPDATE ON task_events
BEGIN SELECT RAISE(ABORT, 'task_events is append-only'); END;
CREATE TRIGGER task_events_append_only_d BEFORE DELETE ON task_events
BEGIN SELECT RAISE(ABORT, 'task_events is append-only'); END;
`,
  },
  {
    version: 2,
    name: "index evaluations by expiry (pruning)",
    sql: `CREATE INDEX evaluations_by_expiry ON evaluations (expires_at);`,
  },
  {
    version: 3,
    name: "one task per evaluation",
    // A trigger, not a UNIQUE index: a file written before this version may
    // already hold two tasks for one evaluation, and must still open.
    sql: `
CREATE TRIGGER tasks_one_per_evaluation BEFORE INSERT ON tasks
WHEN EXISTS (SELECT 1 FROM tasks WHERE evaluation_id = NEW.evaluation_id)
BEGIN SELECT RAISE(ABORT, 'the evaluation already has an access request'); END;
`,
  },
  {
    version: 4,
    name: "the agent's justification on a task; reasons with their messages",
    // reasons_json held the codes alone (["code", …]); rows are rewritten to
    // [{code, message: ""}] (the message was not kept). Readers accept both.
    sql: `
ALTER TABLE tasks ADD COLUMN justification TEXT;
UPDATE evaluations SET reasons_json = (
  SELECT json_group_array(
    CASE WHEN j.type = 'text' THEN json_object('code', j.value, 'message', '') ELSE json(j.value) END)
  FROM json_each(evaluations.reasons_json) j)
WHERE json_valid(reasons_json) AND json_type(reasons_json) = 'array'
  AND EXISTS (SELECT 1 FROM json_each(evaluations.reasons_json) k WHERE k.type = 'text');
CREATE INDEX tasks_by_agent_created ON tasks (agent_id, created_at);
`,
  },
  {
    version: 5,
    name: "the tool's class and stage on an evaluation",
    sql: `
ALTER TABLE evaluations ADD COLUMN tool_class TEXT;
ALTER TABLE evaluations ADD COLUMN tool_stage TEXT;
`,
  },
  {
    version: 6,
    name: "plan approvals: plans, their envelopes' uses, plan_events",
    sql: `
CREATE TABLE plans (
  id TEXT PRIMARY KEY,
  agent_id TEXT NOT NULL,
  initiator TEXT NOT NULL,
  binding_hash TEXT NOT NULL,
  subject_hash TEXT NOT NULL,
  job_hash TEXT NOT NULL,
  envelopes_json TEXT NOT NULL,
  redacted_json TEXT NOT NULL,
  requirement_json TEXT NOT NULL,
  ttl_seconds INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN (${STATUS_CHECK})),
  idempotency_key TEXT,
  justification TEXT,
  policy_revision TEXT,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  decided_at INTEGER,
  decided_by TEXT,
  decided_by_roles_json TEXT,
  comment TEXT,
  approved_until INTEGER,
  revoked_at INTEGER,
  revoked_by TEXT,
  UNIQUE (agent_id, idempotency_key)
) STRICT;
CREATE INDEX plans_by_status ON plans (status, created_at);

CREATE TABLE plan_envelopes (
  plan_id TEXT NOT NULL REFERENCES plans(id),
  idx INTEGER NOT NULL,
  max_uses INTEGER NOT NULL CHECK (max_uses BETWEEN 1 AND 1000),
  uses INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
  expires_at INTEGER,
  PRIMARY KEY (plan_id, idx)
) STRICT;

CREATE TABLE plan_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  plan_id TEXT NOT NULL REFERENCES plans(id),
  at INTEGER NOT NULL,
  event TEXT NOT NULL,
  actor TEXT NOT NULL,
  details_json TEXT NOT NULL
) STRICT;
CREATE INDEX plan_events_by_plan ON plan_events (plan_id, seq);

CREATE TRIGGER plans_terminal_status BEFORE UPDATE OF status ON plans
WHEN OLD.status <> 'pending' AND NEW.status IS NOT OLD.status
BEGIN SELECT RAISE(ABORT, 'plan status is terminal'); END;
CREATE TRIGGER plans_revoked_once BEFORE UPDATE OF revoked_at, revoked_by ON plans
WHEN OLD.revoked_at IS NOT NULL
  AND (NEW.revoked_at IS NOT OLD.revoked_at OR NEW.revoked_by IS NOT OLD.revoked_by)
BEGIN SELECT RAISE(ABORT, 'plan already revoked'); END;
CREATE TRIGGER plan_uses_only_grow BEFORE UPDATE OF uses ON plan_envelopes
WHEN NEW.uses < OLD.uses
BEGIN SELECT RAISE(ABORT, 'plan uses never decrease'); END;
CREATE TRIGGER plan_events_append_only_u BEFORE UPDATE ON plan_events
BEGIN SELECT RAISE(ABORT, 'plan_events is append-only'); END;
CREATE TRIGGER plan_events_append_only_d BEFORE DELETE ON plan_events
BEGIN SELECT RAISE(ABORT, 'plan_events is append-only'); END;
`,
  },
];

export const SCHEMA_VERSION = MIGRATIONS.reduce((v, m) => Math.max(v, m.version), 0);

type Row = Record<string, SQLInputValue>;

function str(row: Row, k: string): string {
  const v = row[k];
  if (typeof v !== "string") throw new Error(`approvals.db: column ${k} is not text`);
  return v;
}
function strOrNull(row: Row, k: string): string | null {
  const v = row[k];
  if (v === null || v === undefined) return null;
  if (typeof v !== "string") throw new Error(`approvals.db: column ${k} is not text`);
  return v;
}
function num(row: Row, k: string): number {
  const v = row[k];
  if (typeof v !== "number") throw new Error(`approvals.db: column ${k} is not an integer`);
  return v;
}
function numOrNull(row: Row, k: string): number | null {
  const v = row[k];
  return v === null || v === undefined ? null : Number(v);
}
function json<T>(row: Row, k: string): T {
  return parseUntrustedJson(str(row, k)) as T;
}

function toDecidable(row: Row): DecidableRecord {
  const roles = strOrNull(row, "decided_by_roles_json");
  return {
    id: str(row, "id"),
    agentId: str(row, "agent_id"),
    status: str(row, "status") as TaskStatus,
    idempotencyKey: strOrNull(row, "idempotency_key"),
    createdAt: num(row, "created_at"),
    expiresAt: num(row, "expires_at"),
    decidedAt: numOrNull(row, "decided_at"),
    decidedBy: strOrNull(row, "decided_by"),
    decidedByRoles: roles === null ? null : (parseUntrustedJson(roles) as string[]),
    comment: strOrNull(row, "comment"),
    approvedUntil: numOrNull(row, "approved_until"),
    revokedAt: numOrNull(row, "revoked_at"),
    revokedBy: strOrNull(row, "revoked_by"),
    justification: strOrNull(row, "justification"),
  };
}

function toTask(row: Row): ApprovalTask {
  return {
    ...toDecidable(row),
    evaluationId: str(row, "evaluation_id"),
    usedAt: numOrNull(row, "used_at"),
    usedByDecisionId: strOrNull(row, "used_by_decision_id"),
  };
}

function toEvaluation(row: Row): EvaluationRecord {
  return {
    evaluationId: str(row, "evaluation_id"),
    decisionId: str(row, "decision_id"),
    bindingHash: str(row, "binding_hash"),
    bindingContextMembers: json<string[]>(row, "binding_context_members_json"),
    redactedRequest: json<unknown>(row, "redacted_request_json"),
    requirement: json<ApprovalRequirement>(row, "requirement_json"),
    reasons: toReasons(json<unknown>(row, "reasons_json"), "approvals.db: reasons_json"),
    initiator: str(row, "initiator"),
    agentId: str(row, "agent_id"),
    tool: str(row, "tool"),
    toolClass: strOrNull(row, "tool_class"),
    toolStage: strOrNull(row, "tool_stage"),
    policyRevision: strOrNull(row, "policy_revision"),
    createdAt: num(row, "created_at"),
    expiresAt: num(row, "expires_at"),
  };
}

function toPlan(row: Row, uses: Row[]): PlanRecord {
  return {
    ...toDecidable(row),
    initiator: str(row, "initiator"),
    bindingHash: str(row, "binding_hash"),
    subjectHash: str(row, "subject_hash"),
    jobHash: str(row, "job_hash"),
    envelopes: json<Envelope[]>(row, "envelopes_json"),
    redacted: json<unknown>(row, "redacted_json"),
    requirement: json<PlanRequirement>(row, "requirement_json"),
    ttlSeconds: num(row, "ttl_seconds"),
    policyRevision: strOrNull(row, "policy_revision"),
    uses: uses.map((u) => ({
      uses: num(u, "uses"),
      maxUses: num(u, "max_uses"),
      expiresAt: numOrNull(u, "expires_at"),
    })),
  };
}

/** An unguessable plan id: `pln_` + 128 random bits, base64url. */
export function newPlanId(): string {
  return `pln_${randomBytes(16).toString("base64url")}`;
}

/** An unguessable task id: `apr_` + 128 random bits, base64url. */
export function newTaskId(): string {
  return `apr_${randomBytes(16).toString("base64url")}`;
}

function checkTime(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw toolgateError("invalid_request", `${name} must be epoch milliseconds (an integer)`);
  }
  return v;
}

function checkText(name: string, v: unknown, max = 512): string {
  if (typeof v !== "string" || v === "" || v.length > max) {
    throw toolgateError("invalid_request", `${name} must be a non-empty string of ≤ ${max} chars`);
  }
  return v;
}

function optionalText(name: string, v: unknown): string | null {
  return v === null || v === undefined ? null : checkText(name, v, 64);
}

/** Which tasks or plans to list; `limit` is clamped to 1..1000 (default 100). */
export interface ListOptions {
  status?: TaskStatus;
  agentId?: string;
  limit?: number;
  order?: "oldest" | "newest";
}

/** A listing's `WHERE … ORDER BY … LIMIT ?` and its arguments. Checks `status`. */
function listQuery(options: ListOptions): { clause: string; args: SQLInputValue[] } {
  const limit = Math.min(1000, Math.max(1, Math.trunc(options.limit ?? 100)));
  if (options.status !== undefined && !TASK_STATUSES.includes(options.status)) {
    throw toolgateError("invalid_request", `unknown task status ${String(options.status)}`);
  }
  const where: string[] = [];
  const args: SQLInputValue[] = [];
  if (options.status !== undefined) {
    where.push("status = ?");
    args.push(options.status);
  }
  if (options.agentId !== undefined) {
    where.push("agent_id = ?");
    args.push(options.agentId);
  }
  const clause = `${where.length ? `WHERE ${where.join(" AND ")}` : ""}
    ORDER BY ${options.order === "newest" ? "created_at DESC, id DESC" : "created_at, id"} LIMIT ?`;
  return { clause, args: [...args, limit] };
}

/** A decision's checked input: its comment (null: none) and, when approving, its end. */
interface CheckedDecision {
  comment: string | null;
  approvedUntil: number | null;
}

/** Checks an approver's decision on a task or a plan (`by`, `roles`, `comment`, `approvedUntil`). */
function checkDecision(d: DecideInput, now: number): CheckedDecision {
  checkText("by", d.by);
  if (!Array.isArray(d.roles) || d.roles.some((r) => typeof r !== "string")) {
    throw toolgateError("invalid_request", "roles must be an array of strings");
  }
  const comment = d.comment ?? null;
  if (comment !== null && (typeof comment !== "string" || comment.length > 4096)) {
    throw toolgateError("invalid_request", "comment must be a string of ≤ 4096 chars");
  }
  let approvedUntil: number | null = null;
  if (d.approve) {
    approvedUntil = checkTime("approvedUntil", d.approvedUntil);
    if (approvedUntil <= now) {
      throw toolgateError("invalid_request", "approvedUntil must lie in the future");
    }
  }
  return { comment, approvedUntil };
}

/** What approvers decide on: an access request's task, or a plan. Its table, events and words. */
type Decidable = "task" | "plan";
const DECIDABLE = {
  task: {
    table: "tasks",
    events: "task_events",
    idColumn: "task_id",
    notFound: (): string | undefined => undefined,
    expired: "the approval task has expired",
    alreadyRevoked: "the approval is already revoked",
  },
  plan: {
    table: "plans",
    events: "plan_events",
    idColumn: "plan_id",
    notFound: (id: string): string | undefined => `no plan ${id}`,
    expired: "the plan has expired before it was decided",
    alreadyRevoked: "the plan is already revoked",
  },
} as const;

/** Runs `fn`, turning anything that is not already coded into approval_store_unavailable. */
/** The approval store: `<state.dir>/approvals.db` (see the header comment). */
export class ApprovalStore extends SqliteStore {
  /** On the synchronous=NORMAL connection: only the evaluations INSERT. */
  private readonly insertEvaluation: StatementSync;
  private expireAfterRollback: { kind: Decidable; id: string; now: number } | undefined;

  private constructor(o: OpenedStore) {
    super(o, "approval_store_unavailable", "approval store");
    this.insertEvaluation = this.normal.prepare(
      `INSERT INTO evaluations (evaluation_id, decision_id, binding_hash,
         binding_context_members_json, redacted_request_json, requirement_json, reasons_json,
         initiator, agent_id, tool, policy_revision, created_at, expires_at, tool_class, tool_stage)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
  }

  /** Opens (creating and migrating as needed) `<dir>/approvals.db`. */
  static open(dir: string, options: { busyTimeoutMs?: number } = {}): ApprovalStore {
    const o = SqliteStore.openFiles({
      dir,
      file: APPROVALS_DB_FILE,
      code: "approval_store_unavailable",
      label: "approval store",
      busyTimeoutMs: options.busyTimeoutMs ?? BUSY_TIMEOUT_MS,
      migrations: MIGRATIONS,
      normal: true,
    });
    try {
      return new ApprovalStore(o);
    } catch (e) {
      o.normal.close();
      o.db.close();
      throw toolgateError(
        "approval_store_unavailable",
        `approval store: open ${o.path}: ${(e as Error).message}`,
        { cause: e },
      );
    }
  }

  /** `PRAGMA synchronous` of each connection: `{ main: "FULL", evaluations: "NORMAL" }`. */
  synchronousModes(): { main: string; evaluations: string } {
    return this.run("read synchronous", () => ({
      main: synchronousOf(this.db),
      evaluations: synchronousOf(this.normal),
    }));
  }

  // -- evaluations ------------------------------------------------------------

  /**
   * Records a needs_approval evaluation: the decision path's write (no
   * read-back). Recording the same id twice is refused (the coded 503, as any
   * SQLite failure). Committed on the synchronous=NORMAL connection (no fsync;
   * see "Durability" above); every connection, the main one `createTask`
   * reads with included, sees it once this returns.
   */
  addEvaluation(e: EvaluationInput): void {
    checkText("evaluationId", e.evaluationId);
    checkText("decisionId", e.decisionId);
    checkText("bindingHash", e.bindingHash);
    checkText("initiator", e.initiator);
    checkText("agentId", e.agentId);
    checkText("tool", e.tool);
    checkTime("createdAt", e.createdAt);
    checkTime("expiresAt", e.expiresAt);
    this.run("record evaluation", () => {
      // Autocommit: committed (visible to every connection) when run() returns.
      const res = this.insertEvaluation.run(
        e.evaluationId,
        e.decisionId,
        e.bindingHash,
        JSON.stringify(e.bindingContextMembers),
        JSON.stringify(e.redactedRequest ?? null),
        JSON.stringify(e.requirement),
        JSON.stringify(e.reasons ?? []),
        e.initiator,
        e.agentId,
        e.tool,
        e.policyRevision ?? null,
        e.createdAt,
        e.expiresAt,
        optionalText("toolClass", e.toolClass),
        optionalText("toolStage", e.toolStage),
      );
      if (Number(res.changes) !== 1) throw toolgateError("approval_not_found");
    });
    this.wrote();
  }

  /**
   * `addEvaluation`, then the row as stored (read back). The decision path
   * uses addEvaluation: the read-back (every column, its JSON parsed again)
   * was about a third of a needs_approval's insert and nothing used it.
   */
  recordEvaluation(e: EvaluationInput): EvaluationRecord {
    this.addEvaluation(e);
    const rec = this.getEvaluation(e.evaluationId);
    if (rec === undefined) throw toolgateError("approval_not_found");
    return rec;
  }

  getEvaluation(evaluationId: string): EvaluationRecord | undefined {
    return this.run("read evaluation", () => {
      const row = this.db
        .prepare("SELECT * FROM evaluations WHERE evaluation_id = ?")
        .get(evaluationId) as Row | undefined;
      return row && toEvaluation(row);
    });
  }

  // -- tasks ------------------------------------------------------------------

  /**
   * Creates the pending task for a recorded, unexpired evaluation of this
   * agent — at most one per evaluation, ever. In one transaction, in order:
   * - a repeated `idempotencyKey` (per agent) for the same evaluation returns
   *   the task it created, whatever its status (`created: false`); for
   *   another evaluation it throws `idempotency_conflict`;
   * - if the evaluation already has a task: a pending (not overdue) or
   *   approved one is returned (`created: false`, whatever the key); a
   *   denied, cancelled, expired or failed one throws `access_request_closed`
   *   (a new evaluation is needed);
   * - an expired evaluation throws `approval_expired`;
   * - with `limit`: if the evaluation's initiator already has `limit.max`
   *   tasks that are not approved created within `limit.windowMs`, throws
   *   `access_request_rate_limited` with `details.retry_after` (seconds until
   *   one leaves the window).
   */
  createTask(input: CreateTaskInput): { task: ApprovalTask; created: boolean } {
    const now = input.now ?? Date.now();
    checkText("evaluationId", input.evaluationId);
    checkText("agentId", input.agentId);
    checkTime("expiresAt", input.expiresAt);
    const key = input.idempotencyKey ?? null;
    if (key !== null) checkText("idempotencyKey", key, 255);
    const justification = checkJustification(input.justification);
    return this.tx("create task", () => {
      const ev = this.getEvaluation(input.evaluationId);
      if (!ev || ev.agentId !== input.agentId) {
        throw toolgateError("approval_not_found", "no recorded evaluation with that id");
      }
      if (key !== null) {
        const row = this.db
          .prepare("SELECT * FROM tasks WHERE agent_id = ? AND idempotency_key = ?")
          .get(input.agentId, key) as Row | undefined;
        if (row) {
          const task = toTask(row);
          if (task.evaluationId !== input.evaluationId) {
            throw toolgateError(
              "idempotency_conflict",
              "this Idempotency-Key was already used for another evaluation",
            );
          }
          return { task, created: false };
        }
      }
      const existing = this.db
        .prepare("SELECT * FROM tasks WHERE evaluation_id = ? ORDER BY created_at, id LIMIT 1")
        .get(input.evaluationId) as Row | undefined;
      if (existing) {
        const task = toTask(existing);
        const status = task.status === "pending" && task.expiresAt <= now ? "expired" : task.status;
        if (status === "pending" || status === "approved") return { task, created: false };
        throw toolgateError(
          "access_request_closed",
          `evaluation ${input.evaluationId} already had access request ${task.id}, which is ${status}; ` +
            "one evaluation gives one request: evaluate again to ask anew",
        );
      }
      if (ev.expiresAt <= now) {
        throw toolgateError("approval_expired", "the evaluation has expired; ask again");
      }
      if (input.limit !== undefined) this.checkLimit(ev.initiator, input.limit, now);
      const id = newTaskId();
      this.db
        .prepare(
          `INSERT INTO tasks (id, evaluation_id, agent_id, status, idempotency_key, created_at,
             expires_at, justification) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)`,
        )
        .run(id, input.evaluationId, input.agentId, key, now, input.expiresAt, justification);
      this.event("task", id, now, "requested", input.agentId, {
        evaluation_id: input.evaluationId,
      });
      return { task: this.mustGetTask(id), created: true };
    });
  }

  getTask(taskId: string): ApprovalTask | undefined {
    return this.run("read task", () => {
      const row = this.db.prepare("SELECT * FROM tasks WHERE id = ?").get(taskId) as
        Row | undefined;
      return row && toTask(row);
    });
  }

  /** Tasks, oldest first (or newest first); `limit` is clamped to 1..1000. */
  listTasks(options: ListOptions = {}): ApprovalTask[] {
    const { clause, args } = listQuery(options);
    return this.run("list tasks", () =>
      (this.db.prepare(`SELECT * FROM tasks ${clause}`).all(...args) as Row[]).map(toTask),
    );
  }

  /**
   * How many access requests agent `agentId` made for `tool` (as shown to
   * approvers: the evaluation's redacted tool name) created after `sinceMs`,
   * and how many of them were approved (revoked or used ones included).
   */
  requestStats(agentId: string, tool: string, sinceMs: number): RequestStats {
    checkTime("sinceMs", sinceMs);
    return this.run("read request stats", () => {
      const row = this.db
        .prepare(
          `SELECT COUNT(*) AS requested,
             COALESCE(SUM(CASE WHEN t.status = 'approved' THEN 1 ELSE 0 END), 0) AS approved
           FROM tasks t JOIN evaluations e ON e.evaluation_id = t.evaluation_id
           WHERE t.agent_id = ? AND e.tool = ? AND t.created_at > ?`,
        )
        .get(agentId, tool, sinceMs) as Row;
      return { requested: Number(row.requested), approved: Number(row.approved) };
    });
  }

  /** The task's history, oldest first. */
  listEvents(taskId: string): TaskEvent[] {
    return this.run("list task events", () => this.eventsOf("task", taskId));
  }

  /**
   * Approves or denies a pending task, atomically (`WHERE status='pending'`):
   * of two concurrent deciders exactly one succeeds, the other gets
   * `approval_not_pending`. A pending task past its `expires_at` becomes
   * `expired` and the call throws `approval_expired`. Eligibility (roles,
   * approver ≠ initiator/agent) is the caller's job.
   */
  decide(taskId: string, d: DecideInput): ApprovalTask {
    const now = d.now ?? Date.now();
    const checked = checkDecision(d, now);
    return this.tx("decide task", () => {
      this.decideRow("task", taskId, d, checked, now);
      return this.mustGetTask(taskId);
    });
  }

  /** The agent withdraws its own pending request. Another agent's task is "not found". */
  cancel(taskId: string, byAgent: string, now: number = Date.now()): ApprovalTask {
    return this.tx("cancel task", () => {
      this.cancelRow("task", taskId, byAgent, now);
      return this.mustGetTask(taskId);
    });
  }

  /** Marks a pending task failed (e.g. it could not be processed). */
  fail(taskId: string, reason: string, actor = "toolgate", now: number = Date.now()): ApprovalTask {
    return this.tx("fail task", () => {
      const res = this.db
        .prepare(
          `UPDATE tasks SET status = 'failed', decided_at = ?, decided_by = ?, comment = ?
           WHERE id = ? AND status = 'pending'`,
        )
        .run(now, actor, reason, taskId);
      if (res.changes !== 1) this.explainNotPending("task", taskId, null);
      this.event("task", taskId, now, "failed", actor, { reason });
      return this.mustGetTask(taskId);
    });
  }

  /** Pending tasks whose `expires_at` ≤ now become `expired`. Returns their ids. */
  expireDue(now: number = Date.now()): string[] {
    return this.tx("expire tasks", () => this.expireDueRows("task", now));
  }

  /**
   * Deletes evaluations that expired before `before` and that no task cites
   * (a needs_approval answer nobody asked approval for is useless once
   * expired; its audit record is in the trail). At most `limit` per call, so
   * a large backlog is cleared over several calls without a long pause.
   * Returns how many were deleted.
   */
  pruneEvaluations(before: number, limit = 1000): number {
    checkTime("before", before);
    return this.run("prune evaluations", () =>
      Number(
        this.db
          .prepare(
            `DELETE FROM evaluations WHERE rowid IN (
               SELECT e.rowid FROM evaluations e
               WHERE e.expires_at < ?
                 AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.evaluation_id = e.evaluation_id)
               LIMIT ?)`,
          )
          .run(before, limit).changes,
      ),
    );
  }

  /**
   * Single-use consumption. One guarded UPDATE:
   *   `... WHERE id=? AND status='approved' AND used_at IS NULL AND revoked_at IS NULL
   *        AND approved_until > now`
   * `consumed: true` only when THIS call changed the row, so of any number of
   * concurrent consumers (connections, workers, processes) exactly one wins.
   * Otherwise the reason says why (checked in that order: not_found,
   * not_approved, revoked, used, expired).
   */
  consume(taskId: string, decisionId: string, now: number = Date.now()): ConsumeResult {
    checkText("decisionId", decisionId);
    return this.tx("consume approval", () => {
      const res = this.db
        .prepare(
          `UPDATE tasks SET used_at = ?, used_by_decision_id = ?
           WHERE id = ? AND status = 'approved' AND used_at IS NULL AND revoked_at IS NULL
             AND approved_until > ?`,
        )
        .run(now, decisionId, taskId, now);
      if (res.changes === 1) {
        this.event("task", taskId, now, "used", "toolgate", { decision_id: decisionId });
        return { consumed: true as const, task: this.mustGetTask(taskId) };
      }
      const task = this.getTask(taskId);
      const reason = !task
        ? "not_found"
        : task.status !== "approved"
          ? "not_approved"
          : task.revokedAt !== null
            ? "revoked"
            : task.usedAt !== null
              ? "used"
              : "expired";
      return { consumed: false as const, reason, task };
    });
  }

  /** Revokes an approved, not yet revoked approval (used or not). Status stays `approved`. */
  revoke(taskId: string, by: string, now: number = Date.now()): ApprovalTask {
    checkText("by", by);
    return this.tx("revoke approval", () => {
      this.revokeRow("task", taskId, by, now);
      return this.mustGetTask(taskId);
    });
  }

  // -- plans ------------------------------------------------------------------

  /**
   * Creates a pending plan with its envelopes' use counters (0 of max_uses
   * each), in one transaction. A repeated `idempotencyKey` (per agent)
   * returns the plan it created when the binding hash is the same, and
   * throws `idempotency_conflict` otherwise. With `limit`, the initiator's
   * plans that are not approved count against it as access requests do.
   */
  createPlan(input: CreatePlanInput): { plan: PlanRecord; created: boolean } {
    const now = input.now ?? Date.now();
    checkText("agentId", input.agentId);
    checkText("initiator", input.initiator);
    checkText("bindingHash", input.bindingHash);
    checkTime("expiresAt", input.expiresAt);
    const key = input.idempotencyKey ?? null;
    if (key !== null) checkText("idempotencyKey", key, 255);
    const justification = checkJustification(input.justification);
    return this.tx("create plan", () => {
      if (key !== null) {
        const row = this.db
          .prepare("SELECT id, binding_hash FROM plans WHERE agent_id = ? AND idempotency_key = ?")
          .get(input.agentId, key) as Row | undefined;
        if (row) {
          if (str(row, "binding_hash") !== input.bindingHash)
            throw toolgateError(
              "idempotency_conflict",
              "this Idempotency-Key was already used for another plan",
            );
          return { plan: this.mustGetPlan(str(row, "id")), created: false };
        }
      }
      if (input.limit !== undefined) this.checkPlanLimit(input.initiator, input.limit, now);
      const id = newPlanId();
      this.db
        .prepare(
          `INSERT INTO plans (id, agent_id, initiator, binding_hash, subject_hash, job_hash,
             envelopes_json, redacted_json, requirement_json, ttl_seconds, status, idempotency_key,
             justification, policy_revision, created_at, expires_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)`,
        )
        .run(
          id,
          input.agentId,
          input.initiator,
          input.bindingHash,
          input.subjectHash,
          input.jobHash,
          JSON.stringify(input.envelopes),
          JSON.stringify(input.redacted ?? null),
          JSON.stringify(input.requirement),
          input.ttlSeconds,
          key,
          justification,
          input.policyRevision ?? null,
          now,
          input.expiresAt,
        );
      const insert = this.db.prepare(
        "INSERT INTO plan_envelopes (plan_id, idx, max_uses) VALUES (?, ?, ?)",
      );
      input.envelopes.forEach((e, i) => insert.run(id, i, e.max_uses));
      this.event("plan", id, now, "requested", input.agentId, {
        envelopes: input.envelopes.length,
      });
      return { plan: this.mustGetPlan(id), created: true };
    });
  }

  getPlan(id: string): PlanRecord | undefined {
    return this.run("read plan", () => {
      const row = this.db.prepare("SELECT * FROM plans WHERE id = ?").get(id) as Row | undefined;
      if (!row) return undefined;
      const uses = this.db
        .prepare("SELECT * FROM plan_envelopes WHERE plan_id = ? ORDER BY idx")
        .all(id) as Row[];
      return toPlan(row, uses);
    });
  }

  /** Plans, oldest first (or newest first); `limit` is clamped to 1..1000. */
  listPlans(options: ListOptions = {}): PlanRecord[] {
    const { clause, args } = listQuery(options);
    return this.run("list plans", () =>
      (this.db.prepare(`SELECT id FROM plans ${clause}`).all(...args) as Row[]).map((r) =>
        this.mustGetPlan(str(r, "id")),
      ),
    );
  }

  /** The plan's history, oldest first. */
  listPlanEvents(planId: string): TaskEvent[] {
    return this.run("list plan events", () => this.eventsOf("plan", planId));
  }

  /**
   * Approves or denies a pending plan, atomically (`WHERE status='pending'`),
   * as `decide` does for a task. Approving sets `approved_until` and each
   * envelope's own end (`envelopeEnds[i]`, null: the plan's).
   */
  decidePlan(planId: string, d: DecideInput & { envelopeEnds?: Array<number | null> }): PlanRecord {
    const now = d.now ?? Date.now();
    const checked = checkDecision(d, now);
    return this.tx("decide plan", () => {
      this.decideRow("plan", planId, d, checked, now);
      if (d.approve && d.envelopeEnds) {
        const set = this.db.prepare(
          "UPDATE plan_envelopes SET expires_at = ? WHERE plan_id = ? AND idx = ?",
        );
        d.envelopeEnds.forEach((end, i) => {
          if (end !== null) set.run(end, planId, i);
        });
      }
      return this.mustGetPlan(planId);
    });
  }

  /** The agent withdraws its own pending plan. */
  cancelPlan(planId: string, byAgent: string, now: number = Date.now()): PlanRecord {
    return this.tx("cancel plan", () => {
      this.cancelRow("plan", planId, byAgent, now);
      return this.mustGetPlan(planId);
    });
  }

  /** Revokes an approved, not yet revoked plan: no use is claimed after this commits. */
  revokePlan(planId: string, by: string, now: number = Date.now()): PlanRecord {
    checkText("by", by);
    return this.tx("revoke plan", () => {
      this.revokeRow("plan", planId, by, now);
      return this.mustGetPlan(planId);
    });
  }

  /** Pending plans whose `expires_at` ≤ now become `expired`. Returns their ids. */
  expireDuePlans(now: number = Date.now()): string[] {
    return this.tx("expire plans", () => this.expireDueRows("plan", now));
  }

  /**
   * Claims one use of envelope `idx` of plan `planId` for a decision: one
   * guarded UPDATE in a transaction —
   *   `uses = uses + 1 WHERE plan_id=? AND idx=? AND uses < max_uses
   *      AND (expires_at IS NULL OR expires_at > now) AND the plan is approved,
   *      unrevoked and approved_until > now`
   * — so of any number of concurrent claimers (connections, processes) no
   * more than max_uses ever win. The use is recorded in plan_events with the
   * decision's id.
   */
  claimPlanUse(
    planId: string,
    idx: number,
    decisionId: string,
    now: number = Date.now(),
  ): PlanClaim {
    checkText("decisionId", decisionId);
    return this.tx("claim plan use", () => {
      const row = this.db
        .prepare(
          `UPDATE plan_envelopes SET uses = uses + 1
           WHERE plan_id = ? AND idx = ? AND uses < max_uses
             AND (expires_at IS NULL OR expires_at > ?)
             AND EXISTS (SELECT 1 FROM plans p WHERE p.id = plan_envelopes.plan_id
               AND p.status = 'approved' AND p.revoked_at IS NULL AND p.approved_until > ?)
           RETURNING uses, max_uses`,
        )
        .get(planId, idx, now, now) as Row | undefined;
      if (row) {
        const uses = num(row, "uses");
        this.event("plan", planId, now, "used", "toolgate", {
          decision_id: decisionId,
          envelope: idx,
          uses,
        });
        return { claimed: true as const, envelope: idx, uses, maxUses: num(row, "max_uses") };
      }
      const p = this.getPlan(planId);
      const u = p?.uses[idx];
      const reason =
        !p || !u
          ? "not_found"
          : p.status !== "approved"
            ? "not_approved"
            : p.revokedAt !== null
              ? "revoked"
              : u.uses >= u.maxUses
                ? "used_up"
                : "expired";
      return { claimed: false as const, reason };
    });
  }

  // -- internals --------------------------------------------------------------

  /** Throws access_request_rate_limited when `initiator` used up `limit` (inside createTask's transaction). */
  private checkLimit(initiator: string, limit: RequestLimit, now: number): void {
    if (!Number.isSafeInteger(limit.max) || limit.max < 1 || !Number.isSafeInteger(limit.windowMs))
      throw toolgateError("invalid_request", "limit must be a positive max and a window in ms");
    const since = now - limit.windowMs;
    const statuses = LIMITED_STATUSES.map(() => "?").join(", ");
    const from = `FROM tasks t JOIN evaluations e ON e.evaluation_id = t.evaluation_id
      WHERE e.initiator = ? AND t.status IN (${statuses}) AND t.created_at > ?`;
    const args = [initiator, ...LIMITED_STATUSES, since];
    const n = Number((this.db.prepare(`SELECT COUNT(*) AS n ${from}`).get(...args) as Row).n);
    if (n < limit.max) return;
    // The window frees a place when the (n - max + 1)-th oldest counted task leaves it.
    const row = this.db
      .prepare(`SELECT t.created_at AS at ${from} ORDER BY t.created_at LIMIT 1 OFFSET ?`)
      .get(...args, n - limit.max) as Row | undefined;
    const freeAt = (row ? num(row, "at") : now) + limit.windowMs;
    const retryAfter = Math.max(1, Math.ceil((freeAt - now) / 1000));
    throw toolgateError(
      "access_request_rate_limited",
      `${initiator} has ${n} access requests that are not approved within the last ` +
        `${Math.round(limit.windowMs / 1000)} s (limit ${limit.max}); retry in ${retryAfter} s`,
      { retry_after: retryAfter },
    );
  }

  private getDecidable(kind: Decidable, id: string): DecidableRecord | undefined {
    return kind === "task" ? this.getTask(id) : this.getPlan(id);
  }

  /**
   * Approves or denies the pending task or plan `id` (guarded by
   * `status='pending' AND expires_at > now`) and records the decision event.
   */
  private decideRow(
    kind: Decidable,
    id: string,
    d: DecideInput,
    { comment, approvedUntil }: CheckedDecision,
    now: number,
  ): void {
    const status: TaskStatus = d.approve ? "approved" : "denied";
    const res = this.db
      .prepare(
        `UPDATE ${DECIDABLE[kind].table} SET status = ?, decided_at = ?, decided_by = ?,
           decided_by_roles_json = ?, comment = ?, approved_until = ?
         WHERE id = ? AND status = 'pending' AND expires_at > ?`,
      )
      .run(status, now, d.by, JSON.stringify(d.roles), comment, approvedUntil, id, now);
    if (res.changes !== 1) this.explainNotPending(kind, id, now);
    this.event(kind, id, now, status, d.by, {
      roles: d.roles,
      ...(comment !== null ? { comment } : {}),
      ...(approvedUntil !== null ? { approved_until: approvedUntil } : {}),
    });
  }

  /** The agent `byAgent` withdraws its own pending task or plan; another agent's is "not found". */
  private cancelRow(kind: Decidable, id: string, byAgent: string, now: number): void {
    const res = this.db
      .prepare(
        `UPDATE ${DECIDABLE[kind].table} SET status = 'cancelled', decided_at = ?, decided_by = ?
         WHERE id = ? AND agent_id = ? AND status = 'pending'`,
      )
      .run(now, byAgent, id, byAgent);
    if (res.changes !== 1) {
      const row = this.getDecidable(kind, id);
      if (!row || row.agentId !== byAgent) throw toolgateError("approval_not_found");
      throw toolgateError("approval_not_pending", `the ${kind} is ${row.status}`);
    }
    this.event(kind, id, now, "cancelled", byAgent, {});
  }

  /** Revokes an approved, not yet revoked task or plan. */
  private revokeRow(kind: Decidable, id: string, by: string, now: number): void {
    const res = this.db
      .prepare(
        `UPDATE ${DECIDABLE[kind].table} SET revoked_at = ?, revoked_by = ?
         WHERE id = ? AND status = 'approved' AND revoked_at IS NULL`,
      )
      .run(now, by, id);
    if (res.changes !== 1) {
      const row = this.getDecidable(kind, id);
      if (!row) throw toolgateError("approval_not_found");
      throw toolgateError(
        "approval_not_approved",
        row.revokedAt !== null ? DECIDABLE[kind].alreadyRevoked : `the ${kind} is ${row.status}`,
      );
    }
    this.event(kind, id, now, "revoked", by, {});
  }

  /** Pending tasks or plans whose `expires_at` ≤ now become `expired`. Returns their ids. */
  private expireDueRows(kind: Decidable, now: number): string[] {
    const rows = this.db
      .prepare(
        `UPDATE ${DECIDABLE[kind].table} SET status = 'expired', decided_at = ?
         WHERE status = 'pending' AND expires_at <= ? RETURNING id`,
      )
      .all(now, now) as Row[];
    const ids = rows.map((r) => str(r, "id"));
    for (const id of ids) this.event(kind, id, now, "expired", "toolgate", {});
    return ids;
  }

  /**
   * Throws the right error after a guarded pending-only UPDATE of a task or
   * plan changed nothing (`now` null: expiry is not the question).
   */
  private explainNotPending(kind: Decidable, id: string, now: number | null): never {
    const row = this.getDecidable(kind, id);
    if (!row) throw toolgateError("approval_not_found", DECIDABLE[kind].notFound(id));
    if (row.status === "pending" && now !== null && row.expiresAt <= now) {
      // The throw rolls the transaction back; `tx` then records the expiry on its own.
      this.expireAfterRollback = { kind, id, now };
      throw toolgateError("approval_expired", DECIDABLE[kind].expired);
    }
    throw toolgateError("approval_not_pending", `the ${kind} is ${row.status}`);
  }

  /** The task's or plan's history, oldest first. */
  private eventsOf(kind: Decidable, id: string): TaskEvent[] {
    const { events, idColumn } = DECIDABLE[kind];
    return (
      this.db.prepare(`SELECT * FROM ${events} WHERE ${idColumn} = ? ORDER BY seq`).all(id) as Row[]
    ).map((r) => ({
      taskId: str(r, idColumn),
      at: num(r, "at"),
      event: str(r, "event"),
      actor: str(r, "actor"),
      details: json<Record<string, unknown>>(r, "details_json"),
    }));
  }

  /** Appends to the task's or plan's history. */
  private event(
    kind: Decidable,
    id: string,
    at: number,
    event: string,
    actor: string,
    details: Record<string, unknown>,
  ): void {
    const { events, idColumn } = DECIDABLE[kind];
    this.db
      .prepare(
        `INSERT INTO ${events} (${idColumn}, at, event, actor, details_json) VALUES (?, ?, ?, ?, ?)`,
      )
      .run(id, at, event, actor, JSON.stringify(details));
  }

  private mustGetPlan(id: string): PlanRecord {
    const p = this.getPlan(id);
    if (!p) throw toolgateError("approval_not_found", `no plan ${id}`);
    return p;
  }

  /** Plans not approved count against the initiator's access-request limit, as tasks do. */
  private checkPlanLimit(initiator: string, limit: RequestLimit, now: number): void {
    if (!Number.isSafeInteger(limit.max) || limit.max < 1 || !Number.isSafeInteger(limit.windowMs))
      throw toolgateError("invalid_request", "limit must be a positive max and a window in ms");
    const since = now - limit.windowMs;
    const statuses = LIMITED_STATUSES.map(() => "?").join(", ");
    const n = Number(
      (
        this.db
          .prepare(
            `SELECT COUNT(*) AS n FROM plans WHERE initiator = ? AND status IN (${statuses})
             AND created_at > ?`,
          )
          .get(initiator, ...LIMITED_STATUSES, since) as Row
      ).n,
    );
    if (n < limit.max) return;
    const retryAfter = Math.max(1, Math.ceil(limit.windowMs / 1000));
    throw toolgateError(
      "access_request_rate_limited",
      `${initiator} has ${n} plans that are not approved within the last ` +
        `${Math.round(limit.windowMs / 1000)} s (limit ${limit.max})`,
      { retry_after: retryAfter },
    );
  }

  private mustGetTask(id: string): ApprovalTask {
    const t = this.getTask(id);
    if (!t) throw toolgateError("approval_not_found");
    return t;
  }

  /**
   * One `BEGIN IMMEDIATE` transaction (takes the write lock up front, waiting
   * up to busy_timeout), committed on return, rolled back on throw. A
   * decision on a task found expired rolls back and then marks it expired.
   */
  private tx<T>(what: string, fn: () => T): T {
    return this.run(what, () => {
      if (this.db.isTransaction) return fn();
      this.db.exec("BEGIN IMMEDIATE");
      try {
        const out = fn();
        this.db.exec("COMMIT");
        return out;
      } catch (e) {
        if (this.db.isTransaction) this.db.exec("ROLLBACK");
        const expire = this.expireAfterRollback;
        this.expireAfterRollback = undefined;
        if (expire?.kind === "task") this.expireOne(expire.id, expire.now);
        if (expire?.kind === "plan") this.expireDuePlans(expire.now);
        throw e;
      }
    });
  }

  private expireOne(taskId: string, now: number): void {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      const res = this.db
        .prepare(
          `UPDATE tasks SET status = 'expired', decided_at = ?
           WHERE id = ? AND status = 'pending' AND expires_at <= ?`,
        )
        .run(now, taskId, now);
      if (res.changes === 1) this.event("task", taskId, now, "expired", "toolgate", {});
      this.db.exec("COMMIT");
    } catch (e) {
      if (this.db.isTransaction) this.db.exec("ROLLBACK");
      throw e;
    }
  }
}
