/**
 * The fleet store: what `toolgate control` keeps in PostgreSQL (issue #15,
 * /docs fleet design). One interface, implemented by `PgFleetStore`
 * (pg-store.ts); the control service codes against this file only.
 *
 * Conventions, for every method:
 * - async; times are epoch milliseconds (integers) passed in by the caller
 *   (`now`), so the control service decides the clock and tests can steer it.
 *   Stored as `bigint` ms columns.
 * - a connection or query failure rejects with the coded ToolgateError
 *   `fleet_store_unavailable` (503); domain refusals reject with the same
 *   codes as the sidecar's SQLite stores (approval_not_found,
 *   approval_not_pending, approval_expired, access_request_closed,
 *   access_request_rate_limited, idempotency_conflict, killswitch_not_found …).
 * - everything read back from a row is checked (src/shared/guards.ts) before
 *   it is returned: a row that does not have the expected shape (a JSON column
 *   with a `__proto__` key, a non-integer time …) also rejects with
 *   `fleet_store_unavailable` — it is never handed on.
 * - record types are the sidecar's own (ApprovalTask, EvaluationRecord,
 *   SwitchRow, SwitchScope), so the pure logic around them (switch matching,
 *   switchView, eligibility) is reused as is.
 */
import type {
  ApprovalTask,
  DecideInput,
  EvaluationInput,
  EvaluationRecord,
  RequestLimit,
  RequestStats,
  TaskStatus,
} from "../../approvals/store";
import type { SwitchRow, SwitchScope } from "../../containment/store";

export type {
  ApprovalTask,
  EvaluationRecord,
  SwitchRow,
  SwitchScope,
  TaskStatus,
  RequestLimit,
  RequestStats,
};

// -- kill switches --------------------------------------------------------------

/** One row of `switch_changes`: the fleet's ordered log of switch changes. */
export interface SwitchChange {
  /** bigserial, strictly increasing in commit order of the creating transactions. */
  seq: number;
  op: "create" | "delete";
  /** The switch as it is after the change (a delete carries deletedAt/deletedBy). */
  switch: SwitchRow;
  /** When the change was made (epoch ms). */
  at: number;
}

/** What `listen` reports besides sequence numbers (for /health/ready and logs). */
export interface ListenEvents {
  /** A change committed: `seq` is its switch_changes.seq (from the NOTIFY payload). */
  onSeq: (seq: number) => void;
  /**
   * The listening connection went up (`true`) or down (`false`, with the
   * error). After every (re)connect `onSeq(currentSeq)` is called once too,
   * so a consumer that reads `changesSince(lastSeen)` misses nothing that was
   * committed while it was disconnected.
   */
  onState?: (connected: boolean, error?: Error) => void;
}

// -- approvals ------------------------------------------------------------------

/** A task as the fleet stores it: the sidecar's ApprovalTask plus who asked (TaskWire.requester). */
export interface FleetTask extends ApprovalTask {
  /** The verified subject that submitted the access request through its sidecar, if any. */
  requester: string | null;
}

export interface SubmitInput {
  /**
   * The sidecar's evaluation record. Upserted: inserted if new; if a row with
   * that evaluation id exists it is authoritative and must name the same
   * agent (else approval_not_found) and the same decision id and binding
   * hash (else idempotency_conflict).
   */
  evaluation: EvaluationInput;
  /** The verified agent of the calling sidecar; must equal evaluation.agentId. */
  agentId: string;
  idempotencyKey: string | null;
  requester: string | null;
  /** The agent's justification, redacted by the sidecar (≤ 2000 chars, no control characters). */
  justification?: string | null | undefined;
  /** The task's expiry (epoch ms), e.g. now + 3600 s. */
  expiresAt: number;
  /** Fleet-wide per-initiator limit (approvals.request_limit.*); absent: none. */
  limit?: RequestLimit | undefined;
  now: number;
}

export interface ListTasksQuery {
  status?: TaskStatus | undefined;
  agentId?: string | undefined;
  /** Clamped to 1..1000 (default 100). */
  limit?: number | undefined;
  /** Oldest first (default), or newest first (the console's decided requests). */
  order?: "oldest" | "newest" | undefined;
}

/** The decision of an approver; `now` required (see approvals/store DecideInput). */
export type FleetDecideInput = Omit<DecideInput, "now"> & { now: number };

export type UseResult =
  | { claimed: true; task: FleetTask }
  | {
      claimed: false;
      /** Why not (checked in this order). */
      reason: "not_approved" | "revoked" | "used" | "expired";
      task: FleetTask;
    };

export interface TaskEvent {
  taskId: string;
  at: number;
  event: string;
  actor: string;
  details: Record<string, unknown>;
}

// -- budgets --------------------------------------------------------------------

export interface ReserveItem {
  budgetId: string;
  /** The budget key (`<budget id>|<who>` as Containment builds it); shared fleet-wide. */
  key: string;
  /** ≥ 0, finite. 0 is checked (an exhausted budget refuses even 0) but not stored. */
  amount: number;
  maxTotal: number;
  windowSeconds: number;
}

export interface ReserveInput {
  decisionId: string;
  agentId: string;
  /**
   * The reservation's TTL (> 0, rounded up to a whole ms, ≤ 31 days): pending
   * until now + ttlMs, spent at that time if never resolved.
   */
  ttlMs: number;
  items: ReserveItem[];
  now: number;
}

export type ReserveResult =
  | { ok: true }
  | {
      ok: false;
      budgetId: string;
      /** Spent in the window plus pending, before this call. */
      used: number;
      maxTotal: number;
      amount: number;
      windowSeconds: number;
      /** Seconds until enough slid out of the window (≥ 1), as Containment.overBudget. */
      retryAfter: number;
    };

export type ResolveResult = "committed" | "released" | "expired" | "none";

/** One budget key for GET /v1/budgets. */
export interface BudgetUsage {
  key: string;
  budgetId: string;
  /** The window of the most recent reservation under this key (seconds). */
  windowSeconds: number;
  /** Committed, or reservations past their TTL, counting within the window. */
  spent: number;
  /** Reservations not yet resolved and within their TTL. */
  pending: number;
  /** Number of rows counted (spent + pending). */
  entries: number;
}

// -- rates ----------------------------------------------------------------------

export interface LeaseInput {
  /** The bucket key (rate id + who), shared fleet-wide. */
  key: string;
  ratePerSecond: number;
  burst: number;
  /** Tokens wanted (integer ≥ 1). */
  want: number;
  now: number;
}

export interface LeaseResult {
  /** min(want, floor(tokens after refill)); these tokens left the bucket. */
  granted: number;
  /** 0 when granted > 0; else seconds (≥ 1) until one token is back. */
  retryAfter: number;
}

// -- sidecars -------------------------------------------------------------------

export interface SidecarUpsert {
  instance: string;
  agentId: string;
  /** The control replica the sidecar talks to. */
  replica: string;
  /** undefined: keep what is stored; null: none. */
  bundle?: { name: string; revision: string } | null | undefined;
  /** undefined: keep what is stored. */
  version?: string | null | undefined;
  now: number;
}

export interface SidecarRow {
  instance: string;
  agentId: string;
  replica: string;
  connectedAt: number;
  lastSeen: number;
  bundleName: string | null;
  bundleRevision: string | null;
  version: string | null;
}

/** A data label a session's allowed calls touched, fleet-wide (sessions.md). */
export interface SessionLabelRow {
  label: string;
  count: number;
  firstAt: number;
  lastAt: number;
  /** The tools that touched it (at most 16, first seen first). */
  tools: string[];
  firstDecisionId: string;
  lastDecisionId: string;
}

export interface SessionTouchInput {
  agentId: string;
  sessionId: string;
  labels: string[];
  tool: string;
  decisionId: string;
  now: number;
}

/** One allowed call of a session (session.fleet_scope full): its tool and numeric arguments. */
export interface SessionEventInput extends SessionTouchInput {
  /** Numeric top-level arguments (≤ 8, finite). */
  sums: Record<string, number>;
}

/** A session's allowed calls per tool, fleet-wide: in all and within the last 60 s, 1 h, 24 h. */
export interface SessionToolRow {
  tool: string;
  allowed: number;
  windows: { "60": number; "3600": number; "86400": number };
  /** Per numeric argument, its sum within each window. */
  sums: Record<string, { "60": number; "3600": number; "86400": number }>;
}

export interface PruneResult {
  sessionEvents: number;
  sessionLabels: number;
  budgetRows: number;
  evaluations: number;
  rateBuckets: number;
  sidecars: number;
}

// -- the store ------------------------------------------------------------------

export interface FleetStore {
  /**
   * Applies pending migrations (schema_migrations(version, name, applied_at)),
   * each in its own transaction, all under `pg_advisory_lock` so replicas
   * starting together migrate once. Idempotent. Refuses a database migrated
   * by a newer toolgate (unknown version) with fleet_store_unavailable.
   * Returns the versions it applied (empty when up to date).
   */
  migrate(): Promise<number[]>;
  /** `SELECT 1` through the pool; rejects with fleet_store_unavailable when down. */
  ping(): Promise<void>;
  /** Stops listeners and ends the pool. Idempotent. */
  close(): Promise<void>;

  // switches
  /**
   * Inserts the switch, its `switch_changes` row (op create) and
   * `NOTIFY toolgate_switches, '<seq>'` in one transaction. Returns the seq.
   * A duplicate id rejects (invalid_request).
   */
  createSwitch(row: SwitchRow): Promise<number>;
  /**
   * Marks a switch deleted (deleted_at/deleted_by, once) with its change row
   * and NOTIFY, one transaction. Undefined when there is no switch with that
   * id or it is already deleted (→ the caller's killswitch_not_found). As the
   * SQLite store, an expired switch may still be deleted (for the history).
   */
  deleteSwitch(
    id: string,
    by: string,
    at: number,
  ): Promise<{ seq: number; row: SwitchRow } | undefined>;
  /** Switches in force at `now` (not deleted, not expired), oldest first. */
  listActiveSwitches(now: number): Promise<SwitchRow[]>;
  /** All switches, newest first, at most `limit` (clamped 1..1000). */
  switchHistory(limit: number): Promise<SwitchRow[]>;
  /** Changes with seq > `seq`, in seq order, at most `limit` (default 1000). */
  changesSince(seq: number, limit?: number): Promise<SwitchChange[]>;
  /** The highest committed seq (0 when none). */
  currentSeq(): Promise<number>;
  /**
   * LISTEN toolgate_switches on a dedicated connection (not from the pool),
   * reconnecting with backoff (100 ms → 5 s) while it is down. Resolves once
   * the first attempt finished (connected or not). Returns an unsubscribe
   * that ends that connection.
   */
  listen(events: ListenEvents): Promise<() => Promise<void>>;

  // approvals
  /**
   * recordEvaluation + createTask in one transaction (the SQLite store's
   * createTask semantics, fleet-wide): upsert the evaluation (see
   * SubmitInput.evaluation); then, in order: a repeated idempotency key (per
   * agent) for the same evaluation returns its task (created false), for
   * another evaluation → idempotency_conflict; an evaluation that has a task:
   * pending (not overdue) or approved → that task (created false), otherwise
   * access_request_closed; an expired evaluation → approval_expired; with
   * `limit`: the initiator's tasks that are not approved created within the
   * window ≥ max → access_request_rate_limited (details.retry_after); else a
   * new pending task (created true). Concurrent submissions for one
   * evaluation serialize (row lock on the evaluation; the table also has a
   * unique index on evaluation_id), and per-initiator limit checks serialize
   * (advisory xact lock on the initiator).
   */
  submit(
    input: SubmitInput,
  ): Promise<{ task: FleetTask; evaluation: EvaluationRecord; created: boolean }>;
  getTask(id: string): Promise<FleetTask | undefined>;
  getEvaluation(evaluationId: string): Promise<EvaluationRecord | undefined>;
  listTasks(q: ListTasksQuery): Promise<FleetTask[]>;
  /** The task's history (requested, approved, denied, used, revoked …), oldest first. */
  taskEvents(id: string): Promise<TaskEvent[]>;
  /**
   * Access requests of agent `agentId` for `tool` created after `sinceMs`,
   * and how many of them were approved (fleet-wide).
   */
  requestStats(agentId: string, tool: string, sinceMs: number): Promise<RequestStats>;
  /**
   * Approves or denies a pending task (conditional UPDATE … WHERE
   * status='pending' AND expires_at > now): of concurrent deciders exactly one
   * wins, the others get approval_not_pending. A pending task past its expiry
   * is marked expired (committed) and the call rejects approval_expired;
   * unknown → approval_not_found. Eligibility is the caller's job.
   */
  decide(id: string, d: FleetDecideInput): Promise<FleetTask>;
  /** Revokes an approved, not yet revoked task (approval_not_found / approval_not_approved). */
  revoke(id: string, by: string, now: number): Promise<FleetTask>;
  /**
   * The agent withdraws its own pending task. Another agent's task is
   * approval_not_found; not pending → approval_not_pending.
   */
  cancel(id: string, agentId: string, now: number): Promise<FleetTask>;
  /** Pending tasks with expires_at ≤ now become expired; returns their ids. */
  expireDue(now: number): Promise<string[]>;
  /**
   * Uses an approval for decision `decisionId`. Another agent's or unknown
   * task → approval_not_found. single use (or the evaluation's requirement
   * says single_use, whatever the caller claims): one atomic
   * `UPDATE … SET used_at, used_by_decision_id WHERE id AND agent_id AND
   * status='approved' AND revoked_at IS NULL AND approved_until > now AND
   * used_at IS NULL RETURNING *` — claimed iff a row came back, so of any
   * number of concurrent claims exactly one wins. Not single use: claimed iff
   * approved, unrevoked and unexpired; the use is recorded as a task event.
   */
  useApproval(
    id: string,
    agentId: string,
    decisionId: string,
    singleUse: boolean,
    now: number,
  ): Promise<UseResult>;

  // budgets
  /**
   * One transaction: `pg_advisory_xact_lock` on every item's key (sorted,
   * deduplicated), then per item: used = Σ amount of the key's rows that count
   * in (now − window, …] — committed at committed_at, unresolved ones counted
   * in full while pending and at expires_at after — refuse the first item
   * with used + amount > maxTotal (nothing is written); else insert one row
   * per item with amount > 0 (at = now, expires_at = now + ttlMs). A repeated
   * decision id of the same agent is not counted twice (its existing items
   * are skipped).
   */
  reserve(input: ReserveInput): Promise<ReserveResult>;
  /**
   * Resolves the decision's unresolved reservations of `agentId`: none →
   * "none"; past their TTL → "expired" (they already count as spent; nothing
   * changes); commit → committed_at = now ("committed"); release → rows
   * deleted ("released").
   */
  resolve(
    decisionId: string,
    agentId: string,
    outcome: "commit" | "release",
    now: number,
  ): Promise<ResolveResult>;
  /** Current use per budget key with anything counting at `now`, by key. */
  usage(now: number): Promise<BudgetUsage[]>;

  // rates
  /**
   * Fleet token bucket per key (row lock): refill by elapsed time since
   * last_ms (never backwards) up to burst (a new bucket starts full), grant
   * min(want, floor(tokens)), debit. Never grants more than the bucket holds.
   */
  lease(input: LeaseInput): Promise<LeaseResult>;

  // sessions
  /**
   * An allowed call of a session read these labels: one row per (agent,
   * session, label), counted, its tool remembered (≤ 16), the last decision.
   */
  touchSession(input: SessionTouchInput): Promise<void>;
  /** The labels a session of `agentId` touched at or after `since`. */
  sessionLabels(agentId: string, sessionId: string, since: number): Promise<SessionLabelRow[]>;
  /** An allowed call of a session: its event (for the windows) and its labels, in one statement. */
  recordSessionEvent(input: SessionEventInput): Promise<void>;
  /** A session's allowed calls per tool since `since`, counted and summed in windows ending at `now`. */
  sessionTools(
    agentId: string,
    sessionId: string,
    since: number,
    now: number,
  ): Promise<SessionToolRow[]>;

  // sidecars
  /** Registers or refreshes a sidecar (connected_at set on insert, last_seen = now). */
  upsertSidecar(s: SidecarUpsert): Promise<void>;
  /** Sidecars seen since `since` (default: all), most recently seen first. */
  listSidecars(since?: number): Promise<SidecarRow[]>;

  /**
   * Housekeeping: deletes budget rows that no longer count in their window,
   * expired evaluations no task cites (expired before now − 1 h), rate buckets
   * idle for a day, sidecars not seen for 7 days, session labels untouched for
   * 31 days (the most session.retention_seconds allows). At most `limit` rows each
   * (default 1000).
   */
  prune(now: number, limit?: number): Promise<PruneResult>;
}
