/**
 * `FleetStore` on PostgreSQL (npm `pg`, one `Pool` per store, plus one
 * dedicated client per `listen`). See types.ts for the contract of every
 * method and migrations.ts for the schema.
 *
 * Concurrency, in short:
 * - switch writes take one transaction advisory lock (so `switch_changes.seq`
 *   is allocated in commit order and a reader of `changesSince(last)` never
 *   skips a change that commits late), and NOTIFY inside the transaction (sent
 *   on commit only);
 * - task state changes are conditional UPDATEs (`WHERE status='pending'`,
 *   `used_at IS NULL` …): of concurrent writers exactly one changes the row;
 * - a submission locks its evaluation row (FOR UPDATE) and, with a limit, an
 *   advisory lock per initiator, so "one task per evaluation" and the
 *   per-initiator count hold across replicas;
 * - budget reservations lock each key (advisory, in a fixed order), rate
 *   buckets their row (FOR UPDATE).
 *
 * Errors: connection and query failures become `fleet_store_unavailable`
 * (503), with the driver's message (which never carries the password; the
 * connection URL itself is never put in a message or a log — `redactUrl` is
 * the form to log). A row that fails its checks is the same error.
 */
import { Client, Pool, type ClientConfig, type PoolClient, type PoolConfig } from "pg";
import { randomBytes } from "node:crypto";
import { isToolgateError, toolgateError, type ToolgateError } from "../../errors";
import { forbiddenKey, describeForbiddenKey, isObject, nullProto } from "../../shared/guards";
import type { Logger } from "../../shared/log";
import {
  LIMITED_STATUSES,
  TASK_STATUSES,
  checkJustification,
  newTaskId,
  toReasons,
  type ApprovalReason,
  type EvaluationInput,
  type RequestStats,
} from "../../approvals/store";
import { SCOPE_KEYS } from "../../containment/store";
import type { ApprovalRequirement } from "../../model";
import { runMigrations } from "./migrations";
import type {
  BudgetUsage,
  EvaluationRecord,
  FleetDecideInput,
  FleetStore,
  FleetTask,
  LeaseInput,
  LeaseResult,
  ListTasksQuery,
  ListenEvents,
  PruneResult,
  RequestLimit,
  ReserveInput,
  ReserveResult,
  ResolveResult,
  SessionEventInput,
  SessionLabelRow,
  SessionToolRow,
  SessionTouchInput,
  SidecarRow,
  SidecarUpsert,
  SubmitInput,
  SwitchChange,
  SwitchRow,
  SwitchScope,
  TaskEvent,
  TaskStatus,
  UseResult,
} from "./types";

/** The channel switch changes are announced on; the payload is the seq. */
export const SWITCH_CHANNEL = "toolgate_switches";

/** Advisory transaction-lock classes (first int4 of the two-int4 key). */
const LOCK_SWITCHES = 1;
// 2: a budget key (taken by toolgate_budget_reserve, migrations.ts version 4)
const LOCK_INITIATOR = 3;

/** Budget rows older than this (counting from) can no longer count (Containment's MAX_WINDOW_SECONDS). */
const MAX_WINDOW_MS = 31 * 24 * 3600 * 1000;
const MAX_ITEMS = 64;
const DAY_MS = 24 * 3600 * 1000;

export interface PgFleetStoreOptions {
  /** `postgres://…` (fleet.postgres_url). Never logged as is: see redactUrl. */
  url: string;
  /** Pool size (default 10). */
  max?: number;
  /** Per-statement timeout in ms (default 10 000; 0 disables). */
  statementTimeoutMs?: number;
  /** Connect timeout in ms (default 5 000). */
  connectTimeoutMs?: number;
  /** application_name (default "toolgate-control"). */
  applicationName?: string;
  log?: Logger;
}

/** The URL with its password replaced by `***` (for logs and status details). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "***";
    for (const k of [...u.searchParams.keys()]) {
      if (/pass|secret|key/i.test(k)) u.searchParams.set(k, "***");
    }
    return u.toString();
  } catch {
    return "<unparsable postgres url>";
  }
}

// -- row checks -------------------------------------------------------------------

type Row = Record<string, unknown>;

class RowError extends Error {
  override readonly name = "RowError";
}

function text(r: Row, k: string): string {
  const v = r[k];
  if (typeof v !== "string") throw new RowError(`column ${k} is not text`);
  return v;
}
function textOrNull(r: Row, k: string): string | null {
  const v = r[k];
  return v === null || v === undefined ? null : text(r, k);
}
/** A bigint ms column: pg hands int8 over as a decimal string. */
function ms(r: Row, k: string): number {
  const v = r[k];
  const n =
    typeof v === "number" ? v : typeof v === "string" && /^-?\d{1,16}$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new RowError(`column ${k} is not an integer`);
  return n;
}
function msOrNull(r: Row, k: string): number | null {
  const v = r[k];
  return v === null || v === undefined ? null : ms(r, k);
}
/** A double precision (or numeric/int8 aggregate) column. */
function dbl(r: Row, k: string): number {
  const v = r[k];
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  if (!Number.isFinite(n)) throw new RowError(`column ${k} is not a finite number`);
  return n;
}
/** A jsonb column selected as `::text`: parsed, refused with a forbidden key anywhere. */
function json(r: Row, k: string): unknown {
  let v: unknown;
  try {
    v = JSON.parse(text(r, k)) as unknown;
  } catch (e) {
    throw new RowError(`column ${k}: ${(e as Error).message}`);
  }
  const hit = forbiddenKey(v);
  if (hit !== undefined) throw new RowError(`column ${k}: ${describeForbiddenKey(hit)}`);
  return v;
}
function stringArray(v: unknown, k: string): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string"))
    throw new RowError(`column ${k} is not an array of strings`);
  return v as string[];
}
function status(r: Row): TaskStatus {
  const s = text(r, "status");
  if (!(TASK_STATUSES as readonly string[]).includes(s)) throw new RowError(`unknown status ${s}`);
  return s as TaskStatus;
}

function toScope(v: unknown): SwitchScope {
  if (!isObject(v)) throw new RowError("column scope is not an object");
  const out = nullProto({}) as SwitchScope;
  for (const [k, val] of Object.entries(v)) {
    if (!(SCOPE_KEYS as readonly string[]).includes(k) || typeof val !== "string")
      throw new RowError(`column scope: unexpected member ${JSON.stringify(k)}`);
    out[k as keyof SwitchScope] = val;
  }
  return out;
}

const SWITCH_COLS =
  "id, scope::text AS scope, reason, created_by, created_at, expires_at, deleted_at, deleted_by";

function toSwitch(r: Row): SwitchRow {
  return {
    id: text(r, "id"),
    scope: toScope(json(r, "scope")),
    reason: text(r, "reason"),
    createdBy: text(r, "created_by"),
    createdAt: ms(r, "created_at"),
    expiresAt: msOrNull(r, "expires_at"),
    deletedAt: msOrNull(r, "deleted_at"),
    deletedBy: textOrNull(r, "deleted_by"),
  };
}

const TASK_COLS = `id, evaluation_id, agent_id, status, idempotency_key, requester, created_at,
  expires_at, decided_at, decided_by, decided_by_roles::text AS decided_by_roles, comment,
  approved_until, used_at, used_by_decision_id, revoked_at, revoked_by, justification`;

function toTask(r: Row): FleetTask {
  const roles = r.decided_by_roles;
  return {
    id: text(r, "id"),
    evaluationId: text(r, "evaluation_id"),
    agentId: text(r, "agent_id"),
    status: status(r),
    idempotencyKey: textOrNull(r, "idempotency_key"),
    requester: textOrNull(r, "requester"),
    createdAt: ms(r, "created_at"),
    expiresAt: ms(r, "expires_at"),
    decidedAt: msOrNull(r, "decided_at"),
    decidedBy: textOrNull(r, "decided_by"),
    decidedByRoles:
      roles === null || roles === undefined
        ? null
        : stringArray(json(r, "decided_by_roles"), "decided_by_roles"),
    comment: textOrNull(r, "comment"),
    approvedUntil: msOrNull(r, "approved_until"),
    usedAt: msOrNull(r, "used_at"),
    usedByDecisionId: textOrNull(r, "used_by_decision_id"),
    revokedAt: msOrNull(r, "revoked_at"),
    revokedBy: textOrNull(r, "revoked_by"),
    justification: textOrNull(r, "justification"),
  };
}

const EVAL_COLS = `evaluation_id, decision_id, agent_id, binding_hash,
  binding_context_members::text AS binding_context_members, redacted_request::text AS redacted_request,
  requirement::text AS requirement, reasons::text AS reasons, initiator, tool, policy_revision,
  created_at, expires_at, tool_class, tool_stage`;

function toRequirement(v: unknown): ApprovalRequirement {
  if (!isObject(v)) throw new RowError("column requirement is not an object");
  const req = v as unknown as ApprovalRequirement;
  if (
    !Array.isArray(req.approver_roles) ||
    req.approver_roles.some((x) => typeof x !== "string") ||
    typeof req.single_use !== "boolean" ||
    typeof req.ttl_seconds !== "number" ||
    !Array.isArray(req.exclude) ||
    req.exclude.some((x) => typeof x !== "string")
  )
    throw new RowError("column requirement does not have the requirement's shape");
  return req;
}

function reasonsOf(v: unknown): ApprovalReason[] {
  try {
    return toReasons(v, "column reasons");
  } catch (e) {
    throw new RowError((e as Error).message);
  }
}

function toEvaluation(r: Row): EvaluationRecord {
  return {
    evaluationId: text(r, "evaluation_id"),
    decisionId: text(r, "decision_id"),
    agentId: text(r, "agent_id"),
    bindingHash: text(r, "binding_hash"),
    bindingContextMembers: stringArray(
      json(r, "binding_context_members"),
      "binding_context_members",
    ),
    redactedRequest: json(r, "redacted_request"),
    requirement: toRequirement(json(r, "requirement")),
    reasons: reasonsOf(json(r, "reasons")),
    initiator: text(r, "initiator"),
    tool: text(r, "tool"),
    toolClass: textOrNull(r, "tool_class"),
    toolStage: textOrNull(r, "tool_stage"),
    policyRevision: textOrNull(r, "policy_revision"),
    createdAt: ms(r, "created_at"),
    expiresAt: ms(r, "expires_at"),
  };
}

// -- input checks -----------------------------------------------------------------

function checkTime(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0)
    throw toolgateError("invalid_request", `${name} must be epoch milliseconds (an integer)`);
  return v;
}
/**
 * The labels $6 of a session's allowed call, upserted (parameters: $1 agent,
 * $2 session, $3 now, $4 tool, $5 decision): counted, the tool remembered
 * (at most 16), the last decision. Shared by touchSession and recordSessionEvent.
 */
const SESSION_LABELS_UPSERT = `INSERT INTO session_labels AS s (agent_id, session_id, label, count, first_at, last_at,
                                          tools, first_decision_id, last_decision_id)
         SELECT $1, $2, l, 1, $3, $3, ARRAY[$4::text], $5, $5 FROM unnest($6::text[]) AS l
         ON CONFLICT (agent_id, session_id, label) DO UPDATE SET
           count = s.count + 1,
           last_at = GREATEST(s.last_at, EXCLUDED.last_at),
           tools = CASE WHEN $4 = ANY (s.tools) OR cardinality(s.tools) >= 16 THEN s.tools
                        ELSE s.tools || $4::text END,
           last_decision_id = EXCLUDED.last_decision_id
         RETURNING 1`;

function checkText(name: string, v: unknown, max = 512): string {
  if (typeof v !== "string" || v === "" || v.length > max)
    throw toolgateError("invalid_request", `${name} must be a non-empty string of ≤ ${max} chars`);
  return v;
}
function checkTextOrNull(name: string, v: unknown, max = 512): string | null {
  return v === null || v === undefined ? null : checkText(name, v, max);
}
function checkNumber(name: string, v: unknown, min: number, minExclusive = false): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || (minExclusive && v === min))
    throw toolgateError(
      "invalid_request",
      `${name} must be a finite number ${minExclusive ? ">" : "≥"} ${min}`,
    );
  return v;
}
/** JSON text for a jsonb parameter; refuses forbidden keys on the way in too. */
function jsonParam(name: string, v: unknown): string {
  const hit = forbiddenKey(v);
  if (hit !== undefined)
    throw toolgateError("invalid_request", `${name}: ${describeForbiddenKey(hit)}`);
  const s = JSON.stringify(v ?? null);
  if (s === undefined) throw toolgateError("invalid_request", `${name} is not JSON`);
  return s;
}

/** A domain error to throw after the transaction committed (e.g. an expiry recorded). */
class AfterCommit extends Error {
  constructor(readonly error: ToolgateError) {
    super(error.message);
  }
}

function pgCode(e: unknown): string | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === "string" ? c : undefined;
}

// -- the store ----------------------------------------------------------------------

export class PgFleetStore implements FleetStore {
  private readonly pool: Pool;
  private readonly clientConfig: ClientConfig;
  private readonly log: Logger | undefined;
  private readonly listeners = new Set<() => Promise<void>>();
  private readonly guarded = new WeakSet<PoolClient>();
  private closed = false;

  constructor(opts: PgFleetStoreOptions) {
    if (typeof opts.url !== "string" || opts.url === "")
      throw toolgateError("fleet_store_unavailable", "fleet store: no PostgreSQL URL configured");
    const statementTimeout = opts.statementTimeoutMs ?? 10_000;
    this.clientConfig = {
      connectionString: opts.url,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
      application_name: opts.applicationName ?? "toolgate-control",
      ...(statementTimeout > 0 ? { statement_timeout: statementTimeout } : {}),
    };
    const poolConfig: PoolConfig = {
      ...this.clientConfig,
      max: opts.max ?? 10,
      idleTimeoutMillis: 30_000,
    };
    this.log = opts.log;
    this.pool = new Pool(poolConfig);
    // An idle client losing its connection emits here; without a handler it would crash the process.
    this.pool.on("error", (e) => {
      this.log?.warn("fleet store: an idle PostgreSQL connection failed", {
        event: "fleet.store_connection_error",
        error: e.message,
      });
    });
  }

  // -- lifecycle ----------------------------------------------------------------

  async migrate(): Promise<number[]> {
    if (this.closed) throw toolgateError("fleet_store_unavailable", "fleet store: closed");
    // A dedicated session without statement_timeout: waiting for another replica's
    // migration (the advisory lock) may take longer than any one statement should.
    const client = new Client({ ...this.clientConfig, statement_timeout: 0 });
    client.on("error", () => undefined); // the query in flight fails on its own
    try {
      await client.connect();
      return await runMigrations(client);
    } catch (e) {
      throw this.unavailable("migrate", e);
    } finally {
      // Ending the session also releases the advisory lock, should unlock have failed.
      await client.end().catch(() => undefined);
    }
  }

  async ping(): Promise<void> {
    await this.query("ping", "SELECT 1");
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.listeners].map((stop) => stop()));
    await this.pool.end().catch(() => undefined);
  }

  // -- switches -----------------------------------------------------------------

  async createSwitch(row: SwitchRow): Promise<number> {
    checkText("id", row.id, 128);
    checkText("reason", row.reason, 4096);
    checkText("createdBy", row.createdBy);
    checkTime("createdAt", row.createdAt);
    if (row.expiresAt !== null) checkTime("expiresAt", row.expiresAt);
    const scope: Record<string, string> = {};
    for (const k of SCOPE_KEYS) {
      const v = row.scope[k];
      if (v !== undefined) scope[k] = checkText(`scope.${k}`, v);
    }
    return this.tx("create kill switch", async (c) => {
      await c.query("SELECT pg_advisory_xact_lock($1, 0)", [LOCK_SWITCHES]);
      try {
        await c.query(
          `INSERT INTO killswitches (id, scope, reason, created_by, created_at, expires_at)
           VALUES ($1, $2::jsonb, $3, $4, $5, $6)`,
          [row.id, JSON.stringify(scope), row.reason, row.createdBy, row.createdAt, row.expiresAt],
        );
      } catch (e) {
        if (pgCode(e) === "23505")
          throw toolgateError("invalid_request", `a kill switch ${row.id} already exists`);
        throw e;
      }
      return this.change(c, row.id, "create", row.createdAt);
    });
  }

  async deleteSwitch(
    id: string,
    by: string,
    at: number,
  ): Promise<{ seq: number; row: SwitchRow } | undefined> {
    checkText("by", by);
    checkTime("at", at);
    if (typeof id !== "string" || id === "" || id.length > 128) return undefined;
    return this.tx("delete kill switch", async (c) => {
      await c.query("SELECT pg_advisory_xact_lock($1, 0)", [LOCK_SWITCHES]);
      const res = await c.query<Row>(
        `UPDATE killswitches SET deleted_at = $2, deleted_by = $3
         WHERE id = $1 AND deleted_at IS NULL RETURNING ${SWITCH_COLS}`,
        [id, at, by],
      );
      const r = res.rows[0];
      if (r === undefined) return undefined;
      const row = toSwitch(r);
      const seq = await this.change(c, id, "delete", at);
      return { seq, row };
    });
  }

  async listActiveSwitches(now: number): Promise<SwitchRow[]> {
    checkTime("now", now);
    const rows = await this.query(
      "list kill switches",
      `SELECT ${SWITCH_COLS} FROM killswitches WHERE deleted_at IS NULL
         AND (expires_at IS NULL OR expires_at > $1) ORDER BY created_at, id`,
      [now],
    );
    return this.rows("list kill switches", rows, toSwitch);
  }

  async switchHistory(limit: number): Promise<SwitchRow[]> {
    const n = clamp(limit, 1000, 100);
    const rows = await this.query(
      "list kill switch history",
      `SELECT ${SWITCH_COLS} FROM killswitches ORDER BY created_at DESC, id LIMIT $1`,
      [n],
    );
    return this.rows("list kill switch history", rows, toSwitch);
  }

  async changesSince(seq: number, limit = 1000): Promise<SwitchChange[]> {
    if (!Number.isSafeInteger(seq) || seq < 0)
      throw toolgateError("invalid_request", "seq must be a non-negative integer");
    const rows = await this.query(
      "read kill switch changes",
      `SELECT c.seq, c.op, c.at AS change_at, ${SWITCH_COLS.split(", ")
        .map((col) => `k.${col}`)
        .join(", ")}
       FROM switch_changes c JOIN killswitches k ON k.id = c.switch_id
       WHERE c.seq > $1 ORDER BY c.seq LIMIT $2`,
      [seq, clamp(limit, 10_000, 1000)],
    );
    return this.rows("read kill switch changes", rows, (r) => {
      const op = text(r, "op");
      if (op !== "create" && op !== "delete") throw new RowError(`unknown op ${op}`);
      const row = toSwitch(r);
      // A create shows the switch as created, whatever happened to it later.
      const sw = op === "create" ? { ...row, deletedAt: null, deletedBy: null } : row;
      return { seq: ms(r, "seq"), op, switch: sw, at: ms(r, "change_at") };
    });
  }

  async currentSeq(): Promise<number> {
    const rows = await this.query(
      "read kill switch seq",
      "SELECT COALESCE(MAX(seq), 0) AS seq FROM switch_changes",
    );
    return this.rows("read kill switch seq", rows, (r) => ms(r, "seq"))[0] ?? 0;
  }

  async listen(events: ListenEvents): Promise<() => Promise<void>> {
    if (this.closed) throw toolgateError("fleet_store_unavailable", "fleet store: closed");
    let stopped = false;
    let current: Client | undefined;
    let timer: NodeJS.Timeout | undefined;
    let delay = 100;
    let up: boolean | undefined;
    const state = (connected: boolean, error?: Error): void => {
      if (up === connected) return; // transitions only
      up = connected;
      try {
        if (error === undefined) events.onState?.(connected);
        else events.onState?.(connected, error);
      } catch (e) {
        this.log?.error("fleet store: a listen state handler threw", { error: String(e) });
      }
    };
    const deliver = (seq: number): void => {
      try {
        events.onSeq(seq);
      } catch (e) {
        this.log?.error("fleet store: a switch change handler threw", { error: String(e) });
      }
    };
    const schedule = (): void => {
      if (stopped || timer !== undefined) return;
      timer = setTimeout(() => {
        timer = undefined;
        void connect();
      }, delay);
      timer.unref();
      delay = Math.min(5_000, delay * 2);
    };
    const down = (c: Client, e: Error): void => {
      if (c !== current) return;
      current = undefined;
      c.end().catch(() => undefined);
      if (stopped) return;
      state(false, e);
      schedule();
    };
    const connect = async (): Promise<void> => {
      if (stopped) return;
      const c = new Client(this.clientConfig);
      c.on("error", (e) => down(c, e));
      c.on("end", () => down(c, new Error("the listening connection ended")));
      c.on("notification", (n) => {
        if (n.channel !== SWITCH_CHANNEL || n.payload === undefined) return;
        const seq = /^\d{1,15}$/.test(n.payload) ? Number(n.payload) : NaN;
        if (Number.isSafeInteger(seq)) deliver(seq);
      });
      current = c;
      try {
        await c.connect();
        await c.query(`LISTEN ${SWITCH_CHANNEL}`);
        const res = await c.query<Row>("SELECT COALESCE(MAX(seq), 0) AS seq FROM switch_changes");
        const first = res.rows[0];
        const seq = first === undefined ? 0 : ms(first, "seq");
        if (stopped || c !== current) {
          await c.end().catch(() => undefined);
          return;
        }
        delay = 100;
        state(true);
        deliver(seq);
      } catch (e) {
        if (c === current) {
          current = undefined;
          c.end().catch(() => undefined);
          if (!stopped) {
            state(false, e instanceof Error ? e : new Error(String(e)));
            schedule();
          }
        }
      }
    };
    const stop = async (): Promise<void> => {
      if (stopped) return;
      stopped = true;
      this.listeners.delete(stop);
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      const c = current;
      current = undefined;
      if (c !== undefined) await c.end().catch(() => undefined);
    };
    this.listeners.add(stop);
    await connect();
    return stop;
  }

  // -- approvals --------------------------------------------------------------------

  async submit(
    input: SubmitInput,
  ): Promise<{ task: FleetTask; evaluation: EvaluationRecord; created: boolean }> {
    const now = checkTime("now", input.now);
    const agentId = checkText("agentId", input.agentId);
    checkTime("expiresAt", input.expiresAt);
    const key = checkTextOrNull("idempotencyKey", input.idempotencyKey, 255);
    const requester = checkTextOrNull("requester", input.requester);
    const justification = checkJustification(input.justification);
    const e = this.checkEvaluation(input.evaluation);
    if (e.agentId !== agentId)
      throw toolgateError("approval_not_found", "no recorded evaluation with that id");
    const limit = input.limit;
    if (
      limit !== undefined &&
      (!Number.isSafeInteger(limit.max) || limit.max < 1 || !Number.isSafeInteger(limit.windowMs))
    )
      throw toolgateError("invalid_request", "limit must be a positive max and a window in ms");

    return this.tx("create access request", async (c) => {
      await c.query(
        `INSERT INTO approval_evaluations (evaluation_id, decision_id, agent_id, binding_hash,
           binding_context_members, redacted_request, requirement, reasons, initiator, tool,
           policy_revision, created_at, expires_at, tool_class, tool_stage)
         VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8::jsonb, $9, $10, $11, $12, $13,
           $14, $15)
         ON CONFLICT (evaluation_id) DO NOTHING`,
        [
          e.evaluationId,
          e.decisionId,
          e.agentId,
          e.bindingHash,
          jsonParam("bindingContextMembers", e.bindingContextMembers),
          jsonParam("redactedRequest", e.redactedRequest ?? null),
          jsonParam("requirement", e.requirement),
          jsonParam("reasons", e.reasons ?? []),
          e.initiator,
          e.tool,
          e.policyRevision ?? null,
          e.createdAt,
          e.expiresAt,
          checkTextOrNull("evaluation.toolClass", e.toolClass ?? null, 64),
          checkTextOrNull("evaluation.toolStage", e.toolStage ?? null, 64),
        ],
      );
      // The evaluation row lock serializes submissions citing it, on every replica.
      const evRes = await c.query<Row>(
        `SELECT ${EVAL_COLS} FROM approval_evaluations WHERE evaluation_id = $1 FOR UPDATE`,
        [e.evaluationId],
      );
      const evRow = evRes.rows[0];
      const ev = evRow === undefined ? undefined : this.row("read evaluation", evRow, toEvaluation);
      if (ev === undefined || ev.agentId !== agentId)
        throw toolgateError("approval_not_found", "no recorded evaluation with that id");
      if (ev.decisionId !== e.decisionId || ev.bindingHash !== e.bindingHash)
        throw toolgateError(
          "idempotency_conflict",
          "an evaluation with this id was recorded with another decision or binding",
        );

      if (key !== null) {
        const kr = await c.query<Row>(
          `SELECT ${TASK_COLS} FROM approval_tasks WHERE agent_id = $1 AND idempotency_key = $2`,
          [agentId, key],
        );
        const r = kr.rows[0];
        if (r !== undefined) {
          const task = this.row("read task", r, toTask);
          if (task.evaluationId !== ev.evaluationId)
            throw toolgateError(
              "idempotency_conflict",
              "this Idempotency-Key was already used for another evaluation",
            );
          return { task, evaluation: ev, created: false };
        }
      }
      const ex = await c.query<Row>(
        `SELECT ${TASK_COLS} FROM approval_tasks WHERE evaluation_id = $1`,
        [ev.evaluationId],
      );
      const exRow = ex.rows[0];
      if (exRow !== undefined) {
        const task = this.row("read task", exRow, toTask);
        const st = task.status === "pending" && task.expiresAt <= now ? "expired" : task.status;
        if (st === "pending" || st === "approved") return { task, evaluation: ev, created: false };
        throw toolgateError(
          "access_request_closed",
          `evaluation ${ev.evaluationId} already had access request ${task.id}, which is ${st}; ` +
            "one evaluation gives one request: evaluate again to ask anew",
        );
      }
      if (ev.expiresAt <= now)
        throw toolgateError("approval_expired", "the evaluation has expired; ask again");
      if (limit !== undefined) await this.checkLimit(c, agentId, ev.initiator, limit, now);
      const id = newTaskId();
      let ins;
      try {
        ins = await c.query<Row>(
          `INSERT INTO approval_tasks (id, evaluation_id, agent_id, status, idempotency_key,
             requester, created_at, expires_at, justification)
           VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8) RETURNING ${TASK_COLS}`,
          [id, ev.evaluationId, agentId, key, requester, now, input.expiresAt, justification],
        );
      } catch (err) {
        if (pgCode(err) === "23505")
          throw toolgateError(
            "idempotency_conflict",
            "this Idempotency-Key was used concurrently for another evaluation",
          );
        throw err;
      }
      await this.event(c, id, now, "requested", agentId, {
        evaluation_id: ev.evaluationId,
        ...(requester !== null ? { requester } : {}),
      });
      const row = ins.rows[0];
      if (row === undefined) throw new Error("INSERT … RETURNING gave no row");
      return { task: this.row("read task", row, toTask), evaluation: ev, created: true };
    });
  }

  async getTask(id: string): Promise<FleetTask | undefined> {
    if (typeof id !== "string" || id === "" || id.length > 128) return undefined;
    const rows = await this.query(
      "read task",
      `SELECT ${TASK_COLS} FROM approval_tasks WHERE id = $1`,
      [id],
    );
    return this.rows("read task", rows, toTask)[0];
  }

  async getEvaluation(evaluationId: string): Promise<EvaluationRecord | undefined> {
    if (typeof evaluationId !== "string" || evaluationId === "" || evaluationId.length > 512)
      return undefined;
    const rows = await this.query(
      "read evaluation",
      `SELECT ${EVAL_COLS} FROM approval_evaluations WHERE evaluation_id = $1`,
      [evaluationId],
    );
    return this.rows("read evaluation", rows, toEvaluation)[0];
  }

  async listTasks(q: ListTasksQuery): Promise<FleetTask[]> {
    const limit = clamp(q.limit ?? 100, 1000, 100);
    if (q.status !== undefined && !TASK_STATUSES.includes(q.status))
      throw toolgateError("invalid_request", `unknown task status ${String(q.status)}`);
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.status !== undefined) {
      args.push(q.status);
      where.push(`status = $${args.length}`);
    }
    if (q.agentId !== undefined) {
      args.push(q.agentId);
      where.push(`agent_id = $${args.length}`);
    }
    args.push(limit);
    const rows = await this.query(
      "list tasks",
      `SELECT ${TASK_COLS} FROM approval_tasks ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY ${q.order === "newest" ? "created_at DESC, id DESC" : "created_at, id"} LIMIT $${args.length}`,
      args,
    );
    return this.rows("list tasks", rows, toTask);
  }

  async requestStats(agentId: string, tool: string, sinceMs: number): Promise<RequestStats> {
    checkText("agentId", agentId);
    checkText("tool", tool);
    checkTime("sinceMs", sinceMs);
    const rows = await this.query(
      "read request stats",
      `SELECT COUNT(*)::bigint AS requested,
         COUNT(*) FILTER (WHERE t.status = 'approved')::bigint AS approved
       FROM approval_tasks t JOIN approval_evaluations e ON e.evaluation_id = t.evaluation_id
       WHERE t.agent_id = $1 AND e.tool = $2 AND t.created_at > $3`,
      [agentId, tool, sinceMs],
    );
    return (
      this.rows("read request stats", rows, (r) => ({
        requested: ms(r, "requested"),
        approved: ms(r, "approved"),
      }))[0] ?? { requested: 0, approved: 0 }
    );
  }

  async taskEvents(id: string): Promise<TaskEvent[]> {
    const rows = await this.query(
      "list task events",
      `SELECT task_id, at, event, actor, details::text AS details FROM approval_task_events
       WHERE task_id = $1 ORDER BY seq`,
      [id],
    );
    return this.rows("list task events", rows, (r) => {
      const details = json(r, "details");
      if (!isObject(details)) throw new RowError("column details is not an object");
      return {
        taskId: text(r, "task_id"),
        at: ms(r, "at"),
        event: text(r, "event"),
        actor: text(r, "actor"),
        details,
      };
    });
  }

  async decide(id: string, d: FleetDecideInput): Promise<FleetTask> {
    const now = checkTime("now", d.now);
    checkText("by", d.by);
    if (!Array.isArray(d.roles) || d.roles.some((r) => typeof r !== "string"))
      throw toolgateError("invalid_request", "roles must be an array of strings");
    const comment = d.comment ?? null;
    if (comment !== null && (typeof comment !== "string" || comment.length > 4096))
      throw toolgateError("invalid_request", "comment must be a string of ≤ 4096 chars");
    let approvedUntil: number | null = null;
    if (d.approve) {
      approvedUntil = checkTime("approvedUntil", d.approvedUntil);
      if (approvedUntil <= now)
        throw toolgateError("invalid_request", "approvedUntil must lie in the future");
    }
    const st: TaskStatus = d.approve ? "approved" : "denied";
    return this.tx("decide task", async (c) => {
      const res = await c.query<Row>(
        `UPDATE approval_tasks SET status = $2, decided_at = $3, decided_by = $4,
           decided_by_roles = $5::jsonb, comment = $6, approved_until = $7
         WHERE id = $1 AND status = 'pending' AND expires_at > $3 RETURNING ${TASK_COLS}`,
        [id, st, now, d.by, JSON.stringify(d.roles), comment, approvedUntil],
      );
      const r = res.rows[0];
      if (r === undefined) return this.explainNotPending(c, id, now);
      await this.event(c, id, now, st, d.by, {
        roles: d.roles,
        ...(comment !== null ? { comment } : {}),
        ...(approvedUntil !== null ? { approved_until: approvedUntil } : {}),
      });
      return this.row("read task", r, toTask);
    });
  }

  async revoke(id: string, by: string, now: number): Promise<FleetTask> {
    checkText("by", by);
    checkTime("now", now);
    return this.tx("revoke approval", async (c) => {
      const res = await c.query<Row>(
        `UPDATE approval_tasks SET revoked_at = $2, revoked_by = $3
         WHERE id = $1 AND status = 'approved' AND revoked_at IS NULL RETURNING ${TASK_COLS}`,
        [id, now, by],
      );
      const r = res.rows[0];
      if (r === undefined) {
        const t = await this.taskIn(c, id);
        if (t === undefined) throw toolgateError("approval_not_found");
        throw toolgateError(
          "approval_not_approved",
          t.revokedAt !== null ? "the approval is already revoked" : `the task is ${t.status}`,
        );
      }
      await this.event(c, id, now, "revoked", by, {});
      return this.row("read task", r, toTask);
    });
  }

  async cancel(id: string, agentId: string, now: number): Promise<FleetTask> {
    checkText("agentId", agentId);
    checkTime("now", now);
    return this.tx("cancel task", async (c) => {
      const res = await c.query<Row>(
        `UPDATE approval_tasks SET status = 'cancelled', decided_at = $3, decided_by = $2
         WHERE id = $1 AND agent_id = $2 AND status = 'pending' RETURNING ${TASK_COLS}`,
        [id, agentId, now],
      );
      const r = res.rows[0];
      if (r === undefined) {
        const t = await this.taskIn(c, id);
        if (t === undefined || t.agentId !== agentId) throw toolgateError("approval_not_found");
        throw toolgateError("approval_not_pending", `the task is ${t.status}`);
      }
      await this.event(c, id, now, "cancelled", agentId, {});
      return this.row("read task", r, toTask);
    });
  }

  async expireDue(now: number): Promise<string[]> {
    checkTime("now", now);
    return this.tx("expire tasks", async (c) => {
      const res = await c.query<Row>(
        `UPDATE approval_tasks SET status = 'expired', decided_at = $1
         WHERE status = 'pending' AND expires_at <= $1 RETURNING id`,
        [now],
      );
      const ids = this.rows("expire tasks", res.rows, (r) => text(r, "id"));
      for (const id of ids) await this.event(c, id, now, "expired", "toolgate", {});
      return ids;
    });
  }

  async useApproval(
    id: string,
    agentId: string,
    decisionId: string,
    singleUse: boolean,
    now: number,
  ): Promise<UseResult> {
    checkText("agentId", agentId);
    checkText("decisionId", decisionId);
    checkTime("now", now);
    if (typeof id !== "string" || id === "" || id.length > 128)
      throw toolgateError("approval_not_found");
    return this.tx("use approval", async (c) => {
      const cur = await c.query<Row>(
        `SELECT e.requirement::text AS requirement FROM approval_tasks t
         JOIN approval_evaluations e ON e.evaluation_id = t.evaluation_id
         WHERE t.id = $1 AND t.agent_id = $2`,
        [id, agentId],
      );
      const curRow = cur.rows[0];
      if (curRow === undefined) throw toolgateError("approval_not_found");
      const requirement = this.row("read evaluation", curRow, (r) =>
        toRequirement(json(r, "requirement")),
      );
      // The policy's requirement wins over what the caller says.
      const once = singleUse || requirement.single_use;
      if (once) {
        const res = await c.query<Row>(
          `UPDATE approval_tasks SET used_at = $3, used_by_decision_id = $4
           WHERE id = $1 AND agent_id = $2 AND status = 'approved' AND revoked_at IS NULL
             AND approved_until > $3 AND used_at IS NULL
           RETURNING ${TASK_COLS}`,
          [id, agentId, now, decisionId],
        );
        const r = res.rows[0];
        if (r !== undefined) {
          await this.event(c, id, now, "used", agentId, {
            decision_id: decisionId,
            single_use: true,
          });
          return { claimed: true as const, task: this.row("read task", r, toTask) };
        }
      }
      const t = await this.taskIn(c, id);
      if (t === undefined || t.agentId !== agentId) throw toolgateError("approval_not_found");
      const reason =
        t.status !== "approved"
          ? ("not_approved" as const)
          : t.revokedAt !== null
            ? ("revoked" as const)
            : once && t.usedAt !== null
              ? ("used" as const)
              : t.approvedUntil === null || t.approvedUntil <= now
                ? ("expired" as const)
                : undefined;
      if (reason !== undefined || once) {
        return { claimed: false as const, reason: reason ?? "used", task: t };
      }
      await this.event(c, id, now, "used", agentId, { decision_id: decisionId, single_use: false });
      return { claimed: true as const, task: t };
    });
  }

  // -- sessions -----------------------------------------------------------------------

  async touchSession(input: SessionTouchInput): Promise<void> {
    const now = checkTime("now", input.now);
    const agentId = checkText("agentId", input.agentId);
    const sessionId = checkText("sessionId", input.sessionId);
    const tool = checkText("tool", input.tool);
    const decisionId = checkText("decisionId", input.decisionId);
    if (!Array.isArray(input.labels) || input.labels.length === 0 || input.labels.length > 32)
      throw toolgateError("invalid_request", "labels must be an array of 1..32");
    const labels = [...new Set(input.labels.map((l, i) => checkText(`labels[${i}]`, l, 64)))];
    const r = await this.single(
      "touch session",
      "toolgate_session_touch",
      `WITH up AS (
         ${SESSION_LABELS_UPSERT})
       SELECT count(*)::int AS n FROM up`,
      [agentId, sessionId, now, tool, decisionId, labels],
    );
    this.row("touch session", r, (row) => {
      if (dbl(row, "n") !== labels.length) throw new RowError("not every label was written");
    });
  }

  async sessionLabels(
    agentId: string,
    sessionId: string,
    since: number,
  ): Promise<SessionLabelRow[]> {
    checkText("agentId", agentId);
    checkText("sessionId", sessionId);
    checkTime("since", since);
    const c = await this.connect("read session labels");
    let broken: Error | undefined;
    let rows: Row[];
    try {
      const res = await c.query<Row>({
        name: "toolgate_session_labels",
        text: `SELECT label, count, first_at, last_at, tools, first_decision_id, last_decision_id
               FROM session_labels WHERE agent_id = $1 AND session_id = $2 AND last_at >= $3
               ORDER BY label LIMIT 32`,
        values: [agentId, sessionId, since],
      });
      rows = res.rows;
    } catch (e) {
      broken = e as Error;
      throw this.unavailable("read session labels", e);
    } finally {
      c.release(broken);
    }
    return this.rows("read session labels", rows, (row): SessionLabelRow => ({
      label: text(row, "label"),
      count: ms(row, "count"),
      firstAt: ms(row, "first_at"),
      lastAt: ms(row, "last_at"),
      tools: stringArray(row.tools, "tools"),
      firstDecisionId: text(row, "first_decision_id"),
      lastDecisionId: text(row, "last_decision_id"),
    }));
  }

  async recordSessionEvent(input: SessionEventInput): Promise<void> {
    const now = checkTime("now", input.now);
    const agentId = checkText("agentId", input.agentId);
    const sessionId = checkText("sessionId", input.sessionId);
    const tool = checkText("tool", input.tool);
    const decisionId = checkText("decisionId", input.decisionId);
    if (!Array.isArray(input.labels) || input.labels.length > 32)
      throw toolgateError("invalid_request", "labels must be an array of at most 32");
    const labels = [...new Set(input.labels.map((l, i) => checkText(`labels[${i}]`, l, 64)))];
    if (!isObject(input.sums)) throw toolgateError("invalid_request", "sums must be an object");
    const sums = Object.entries(input.sums);
    if (sums.length > 8) throw toolgateError("invalid_request", "sums has more than 8 arguments");
    for (const [k, v] of sums) {
      checkText("sums key", k, 256);
      if (typeof v !== "number" || !Number.isFinite(v))
        throw toolgateError("invalid_request", "sums values must be finite numbers");
    }
    // the event and its labels in one statement (one round trip, one transaction)
    const r = await this.single(
      "record session event",
      "toolgate_session_event",
      `WITH ev AS (
         INSERT INTO session_events (agent_id, session_id, at, tool, decision_id, sums)
         VALUES ($1, $2, $3, $4, $5, $7::jsonb)
         RETURNING 1),
       up AS (
         ${SESSION_LABELS_UPSERT})
       SELECT (SELECT count(*) FROM ev)::int AS e, (SELECT count(*) FROM up)::int AS n`,
      [agentId, sessionId, now, tool, decisionId, labels, JSON.stringify(Object.fromEntries(sums))],
    );
    this.row("record session event", r, (row) => {
      if (dbl(row, "e") !== 1 || dbl(row, "n") !== labels.length)
        throw new RowError("the event or a label was not written");
    });
  }

  async sessionTools(
    agentId: string,
    sessionId: string,
    since: number,
    now: number,
  ): Promise<SessionToolRow[]> {
    checkText("agentId", agentId);
    checkText("sessionId", sessionId);
    checkTime("since", since);
    checkTime("now", now);
    const c = await this.connect("read session tools");
    let broken: Error | undefined;
    let counts: Row[];
    let sums: Row[];
    try {
      const w = [now - 60_000, now - 3_600_000, now - 86_400_000];
      counts = (
        await c.query<Row>({
          name: "toolgate_session_tools",
          text: `SELECT tool, count(*) AS allowed,
                   count(*) FILTER (WHERE at > $4) AS w60,
                   count(*) FILTER (WHERE at > $5) AS w3600,
                   count(*) FILTER (WHERE at > $6) AS w86400
                 FROM session_events WHERE agent_id = $1 AND session_id = $2 AND at >= $3
                 GROUP BY tool ORDER BY tool LIMIT 1000`,
          values: [agentId, sessionId, since, ...w],
        })
      ).rows;
      sums = (
        await c.query<Row>({
          name: "toolgate_session_sums",
          text: `SELECT e.tool, s.key AS arg,
                   COALESCE(sum(s.value::text::float8) FILTER (WHERE e.at > $4), 0) AS w60,
                   COALESCE(sum(s.value::text::float8) FILTER (WHERE e.at > $5), 0) AS w3600,
                   COALESCE(sum(s.value::text::float8) FILTER (WHERE e.at > $6), 0) AS w86400
                 FROM session_events e, jsonb_each(e.sums) s
                 WHERE e.agent_id = $1 AND e.session_id = $2 AND e.at >= $3
                   AND jsonb_typeof(s.value) = 'number'
                 GROUP BY e.tool, s.key ORDER BY e.tool, s.key LIMIT 8000`,
          values: [agentId, sessionId, since, ...w],
        })
      ).rows;
    } catch (e) {
      broken = e as Error;
      throw this.unavailable("read session tools", e);
    } finally {
      c.release(broken);
    }
    const out = new Map<string, SessionToolRow>();
    for (const row of this.rows("read session tools", counts, (r) => ({
      tool: text(r, "tool"),
      allowed: ms(r, "allowed"),
      windows: { "60": ms(r, "w60"), "3600": ms(r, "w3600"), "86400": ms(r, "w86400") },
      sums: nullProto({}),
    })))
      out.set(row.tool, row);
    for (const s of this.rows("read session tools", sums, (r) => ({
      tool: text(r, "tool"),
      arg: text(r, "arg"),
      w: { "60": dbl(r, "w60"), "3600": dbl(r, "w3600"), "86400": dbl(r, "w86400") },
    }))) {
      const t = out.get(s.tool);
      if (t !== undefined) t.sums[s.arg] = s.w;
    }
    return [...out.values()];
  }

  // -- budgets ------------------------------------------------------------------------

  async reserve(input: ReserveInput): Promise<ReserveResult> {
    const now = checkTime("now", input.now);
    const decisionId = checkText("decisionId", input.decisionId);
    const agentId = checkText("agentId", input.agentId);
    const ttlMs = Math.ceil(checkNumber("ttlMs", input.ttlMs, 0, true));
    if (!Number.isSafeInteger(ttlMs) || ttlMs > MAX_WINDOW_MS)
      throw toolgateError("invalid_request", "ttlMs must be at most 31 days");
    if (!Array.isArray(input.items) || input.items.length > MAX_ITEMS)
      throw toolgateError("invalid_request", `items must be an array of ≤ ${MAX_ITEMS}`);
    const items = input.items.map((it, i) => ({
      budgetId: checkText(`items[${i}].budgetId`, it.budgetId, 256),
      key: checkText(`items[${i}].key`, it.key, 1024),
      amount: checkNumber(`items[${i}].amount`, it.amount, 0),
      maxTotal: checkNumber(`items[${i}].maxTotal`, it.maxTotal, 0),
      windowSeconds: checkNumber(`items[${i}].windowSeconds`, it.windowSeconds, 0, true),
    }));
    const keys = [...new Set(items.map((it) => it.key))];
    if (keys.length !== items.length)
      throw toolgateError("invalid_request", "items name the same budget key twice");
    if (items.length === 0) return { ok: true };
    const expiresAt = now + ttlMs;

    // One statement, one round trip (migration 4, toolgate_budget_reserve): the
    // locks, the retry check, the window sums and the inserts, in its own transaction.
    const r = await this.single(
      "reserve budget",
      "toolgate_budget_reserve",
      `SELECT o_ok, o_budget_id, o_used, o_max_total, o_amount, o_window_seconds, o_retry_after
       FROM toolgate_budget_reserve($1, $2, $3, $4, $5::text[], $6::text[],
         $7::float8[], $8::float8[], $9::float8[])`,
      [
        decisionId,
        agentId,
        now,
        expiresAt,
        items.map((it) => it.key),
        items.map((it) => it.budgetId),
        items.map((it) => it.amount),
        items.map((it) => it.maxTotal),
        items.map((it) => it.windowSeconds),
      ],
    );
    return this.row("reserve budget", r, (row): ReserveResult => {
      if (row.o_ok === true) return { ok: true };
      if (row.o_ok !== false) throw new RowError("column o_ok is not a boolean");
      return {
        ok: false,
        budgetId: text(row, "o_budget_id"),
        used: dbl(row, "o_used"),
        maxTotal: dbl(row, "o_max_total"),
        amount: dbl(row, "o_amount"),
        windowSeconds: dbl(row, "o_window_seconds"),
        retryAfter: dbl(row, "o_retry_after"),
      };
    });
  }

  async resolve(
    decisionId: string,
    agentId: string,
    outcome: "commit" | "release",
    now: number,
  ): Promise<ResolveResult> {
    checkText("decisionId", decisionId);
    checkText("agentId", agentId);
    checkTime("now", now);
    if (outcome !== "commit" && outcome !== "release")
      throw toolgateError("invalid_request", "outcome must be commit or release");
    // One statement (migration 4, toolgate_budget_resolve): lock the rows, check, commit or delete.
    const r = await this.single(
      "resolve budget",
      "toolgate_budget_resolve",
      "SELECT toolgate_budget_resolve($1, $2, $3, $4) AS resolution",
      [decisionId, agentId, outcome === "commit", now],
    );
    return this.row("resolve budget", r, (row) => {
      const v = text(row, "resolution");
      if (v !== "committed" && v !== "released" && v !== "expired" && v !== "none")
        throw new RowError(`resolution ${JSON.stringify(v)} is unknown`);
      return v;
    });
  }

  async usage(now: number): Promise<BudgetUsage[]> {
    checkTime("now", now);
    const rows = await this.query(
      "read budget usage",
      `WITH w AS (
         SELECT DISTINCT ON (key) key, budget_id, window_seconds
         FROM budget_reservations ORDER BY key, at DESC
       )
       SELECT w.key, w.budget_id, w.window_seconds,
         COALESCE(SUM(r.amount) FILTER (WHERE r.committed_at IS NOT NULL OR r.expires_at <= $1), 0) AS spent,
         COALESCE(SUM(r.amount) FILTER (WHERE r.committed_at IS NULL AND r.expires_at > $1), 0) AS pending,
         COUNT(*) AS entries
       FROM w JOIN budget_reservations r ON r.key = w.key
         AND COALESCE(r.committed_at, r.expires_at) > $1 - w.window_seconds * 1000
       GROUP BY w.key, w.budget_id, w.window_seconds
       ORDER BY w.key LIMIT 1000`,
      [now],
    );
    return this.rows("read budget usage", rows, (r) => ({
      key: text(r, "key"),
      budgetId: text(r, "budget_id"),
      windowSeconds: dbl(r, "window_seconds"),
      spent: dbl(r, "spent"),
      pending: dbl(r, "pending"),
      entries: ms(r, "entries"),
    }));
  }

  // -- rates --------------------------------------------------------------------------

  async lease(input: LeaseInput): Promise<LeaseResult> {
    const now = checkTime("now", input.now);
    const key = checkText("key", input.key, 1024);
    const rate = checkNumber("ratePerSecond", input.ratePerSecond, 0, true);
    const burst = checkNumber("burst", input.burst, 1);
    if (!Number.isSafeInteger(input.want) || input.want < 1 || input.want > 1_000_000)
      throw toolgateError("invalid_request", "want must be an integer in 1..1000000");
    const want = input.want;
    return this.tx("lease rate tokens", async (c) => {
      await c.query(
        `INSERT INTO rate_buckets (key, tokens, last_ms) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO NOTHING`,
        [key, burst, now],
      );
      const res = await c.query<Row>(
        "SELECT tokens, last_ms FROM rate_buckets WHERE key = $1 FOR UPDATE",
        [key],
      );
      const r = res.rows[0];
      if (r === undefined) throw new Error("the rate bucket vanished");
      const b = this.row("read rate bucket", r, (row) => ({
        tokens: dbl(row, "tokens"),
        last: ms(row, "last_ms"),
      }));
      // Replicas' clocks differ: never refill backwards, never twice for the same span.
      const tokens = Math.min(burst, b.tokens + (Math.max(0, now - b.last) / 1000) * rate);
      const last = Math.max(b.last, now);
      const granted = Math.max(0, Math.min(want, Math.floor(tokens)));
      const left = tokens - granted;
      await c.query("UPDATE rate_buckets SET tokens = $2, last_ms = $3 WHERE key = $1", [
        key,
        left,
        last,
      ]);
      return {
        granted,
        retryAfter: granted > 0 ? 0 : Math.max(1, Math.ceil((1 - left) / rate)),
      };
    });
  }

  // -- sidecars ----------------------------------------------------------------------

  async upsertSidecar(s: SidecarUpsert): Promise<void> {
    const instance = checkText("instance", s.instance, 256);
    const agentId = checkText("agentId", s.agentId);
    const replica = checkText("replica", s.replica, 256);
    const now = checkTime("now", s.now);
    const bundle = s.bundle;
    if (bundle !== undefined && bundle !== null) {
      checkText("bundle.name", bundle.name, 256);
      checkText("bundle.revision", bundle.revision, 256);
    }
    const version =
      s.version === undefined ? undefined : checkTextOrNull("version", s.version, 128);
    await this.query(
      "register sidecar",
      `INSERT INTO sidecars (agent_id, instance, replica, connected_at, last_seen, bundle_name,
         bundle_revision, version)
       VALUES ($1, $2, $3, $4, $4, $5, $6, $7)
       ON CONFLICT (agent_id, instance) DO UPDATE SET
         replica = EXCLUDED.replica,
         connected_at = CASE WHEN sidecars.replica = EXCLUDED.replica THEN sidecars.connected_at
                             ELSE EXCLUDED.connected_at END,
         last_seen = GREATEST(sidecars.last_seen, EXCLUDED.last_seen),
         bundle_name = CASE WHEN $8 THEN EXCLUDED.bundle_name ELSE sidecars.bundle_name END,
         bundle_revision = CASE WHEN $8 THEN EXCLUDED.bundle_revision ELSE sidecars.bundle_revision END,
         version = CASE WHEN $9 THEN EXCLUDED.version ELSE sidecars.version END`,
      [
        agentId,
        instance,
        replica,
        now,
        bundle?.name ?? null,
        bundle?.revision ?? null,
        version ?? null,
        bundle !== undefined,
        version !== undefined,
      ],
    );
  }

  async listSidecars(since?: number): Promise<SidecarRow[]> {
    const from = since === undefined ? 0 : checkTime("since", since);
    const rows = await this.query(
      "list sidecars",
      `SELECT agent_id, instance, replica, connected_at, last_seen, bundle_name, bundle_revision,
         version FROM sidecars WHERE last_seen >= $1 ORDER BY last_seen DESC, agent_id, instance
       LIMIT 10000`,
      [from],
    );
    return this.rows("list sidecars", rows, (r) => ({
      instance: text(r, "instance"),
      agentId: text(r, "agent_id"),
      replica: text(r, "replica"),
      connectedAt: ms(r, "connected_at"),
      lastSeen: ms(r, "last_seen"),
      bundleName: textOrNull(r, "bundle_name"),
      bundleRevision: textOrNull(r, "bundle_revision"),
      version: textOrNull(r, "version"),
    }));
  }

  async prune(now: number, limit = 1000): Promise<PruneResult> {
    checkTime("now", now);
    const n = clamp(limit, 100_000, 1000);
    const count = async (what: string, sql: string, args: unknown[]): Promise<number> => {
      const c = await this.connect(what);
      let broken: Error | undefined;
      try {
        const res = await c.query(sql, args);
        return res.rowCount ?? 0;
      } catch (e) {
        broken = e as Error;
        throw this.unavailable(what, e);
      } finally {
        c.release(broken);
      }
    };
    const budgetRows = await count(
      "prune budget reservations",
      `DELETE FROM budget_reservations WHERE ctid IN (
         SELECT ctid FROM budget_reservations
         WHERE COALESCE(committed_at, expires_at) < $1 LIMIT $2)`,
      [now - MAX_WINDOW_MS, n],
    );
    const evaluations = await count(
      "prune evaluations",
      `DELETE FROM approval_evaluations WHERE evaluation_id IN (
         SELECT e.evaluation_id FROM approval_evaluations e
         WHERE e.expires_at < $1
           AND NOT EXISTS (SELECT 1 FROM approval_tasks t WHERE t.evaluation_id = e.evaluation_id)
         LIMIT $2)`,
      [now - 3600_000, n],
    );
    const rateBuckets = await count(
      "prune rate buckets",
      `DELETE FROM rate_buckets WHERE key IN (
         SELECT key FROM rate_buckets WHERE last_ms < $1 LIMIT $2)`,
      [now - DAY_MS, n],
    );
    const sidecars = await count(
      "prune sidecars",
      `DELETE FROM sidecars WHERE (agent_id, instance) IN (
         SELECT agent_id, instance FROM sidecars WHERE last_seen < $1 LIMIT $2)`,
      [now - 7 * DAY_MS, n],
    );
    const sessionLabels = await count(
      "prune session labels",
      `DELETE FROM session_labels WHERE (agent_id, session_id, label) IN (
         SELECT agent_id, session_id, label FROM session_labels WHERE last_at < $1 LIMIT $2)`,
      [now - MAX_WINDOW_MS, n],
    );
    const sessionEvents = await count(
      "prune session events",
      `DELETE FROM session_events WHERE ctid IN (
         SELECT ctid FROM session_events WHERE at < $1 LIMIT $2)`,
      [now - MAX_WINDOW_MS, n],
    );
    return { budgetRows, evaluations, rateBuckets, sidecars, sessionLabels, sessionEvents };
  }

  // -- internals ---------------------------------------------------------------------

  private checkEvaluation(e: EvaluationInput): EvaluationInput {
    if (!isObject(e)) throw toolgateError("invalid_request", "evaluation must be an object");
    checkText("evaluation.evaluationId", e.evaluationId);
    checkText("evaluation.decisionId", e.decisionId);
    checkText("evaluation.bindingHash", e.bindingHash);
    checkText("evaluation.initiator", e.initiator);
    checkText("evaluation.agentId", e.agentId);
    checkText("evaluation.tool", e.tool);
    checkTextOrNull("evaluation.policyRevision", e.policyRevision);
    checkTime("evaluation.createdAt", e.createdAt);
    checkTime("evaluation.expiresAt", e.expiresAt);
    if (
      !Array.isArray(e.bindingContextMembers) ||
      e.bindingContextMembers.some((m) => typeof m !== "string")
    )
      throw toolgateError("invalid_request", "evaluation.bindingContextMembers must be strings");
    if (e.reasons !== undefined) {
      try {
        toReasons(e.reasons, "evaluation.reasons");
      } catch (err) {
        throw toolgateError("invalid_request", (err as Error).message);
      }
    }
    try {
      toRequirement(e.requirement);
    } catch {
      throw toolgateError("invalid_request", "evaluation.requirement is malformed");
    }
    return e;
  }

  /** Throws access_request_rate_limited when `initiator` used up `limit` (inside submit's transaction). */
  /**
   * Per initiator of one agent, as on a single sidecar: the initiator is the
   * sidecar's word, so counting across agents would let a compromised sidecar
   * of one agent use up a person's requests through every other agent.
   */
  private async checkLimit(
    c: PoolClient,
    agentId: string,
    initiator: string,
    limit: RequestLimit,
    now: number,
  ): Promise<void> {
    await c.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [
      LOCK_INITIATOR,
      `${agentId}|${initiator}`,
    ]);
    const since = now - limit.windowMs;
    const res = await c.query<Row>(
      `SELECT t.created_at FROM approval_tasks t
       JOIN approval_evaluations e ON e.evaluation_id = t.evaluation_id
       WHERE e.initiator = $1 AND t.agent_id = $4 AND t.status = ANY($2::text[]) AND t.created_at > $3
       ORDER BY t.created_at`,
      [initiator, [...LIMITED_STATUSES], since, agentId],
    );
    const times = this.rows("count access requests", res.rows, (r) => ms(r, "created_at"));
    const count = times.length;
    if (count < limit.max) return;
    // The window frees a place when the (n - max + 1)-th oldest counted task leaves it.
    const freeAt = (times[count - limit.max] ?? now) + limit.windowMs;
    const retryAfter = Math.max(1, Math.ceil((freeAt - now) / 1000));
    throw toolgateError(
      "access_request_rate_limited",
      `${initiator} has ${count} access requests that are not approved within the last ` +
        `${Math.round(limit.windowMs / 1000)} s (limit ${limit.max}); retry in ${retryAfter} s`,
      { retry_after: retryAfter },
    );
  }

  /** After a pending-only UPDATE changed nothing: expire an overdue task (committed), or explain. */
  private async explainNotPending(c: PoolClient, id: string, now: number): Promise<never> {
    const res = await c.query<Row>(
      `SELECT ${TASK_COLS} FROM approval_tasks WHERE id = $1 FOR UPDATE`,
      [id],
    );
    const r = res.rows[0];
    if (r === undefined) throw toolgateError("approval_not_found");
    const t = this.row("read task", r, toTask);
    if (t.status === "pending" && t.expiresAt <= now) {
      await c.query(
        `UPDATE approval_tasks SET status = 'expired', decided_at = $2
         WHERE id = $1 AND status = 'pending'`,
        [id, now],
      );
      await this.event(c, id, now, "expired", "toolgate", {});
      throw new AfterCommit(toolgateError("approval_expired", "the approval task has expired"));
    }
    throw toolgateError("approval_not_pending", `the task is ${t.status}`);
  }

  private async taskIn(c: PoolClient, id: string): Promise<FleetTask | undefined> {
    const res = await c.query<Row>(`SELECT ${TASK_COLS} FROM approval_tasks WHERE id = $1`, [id]);
    const r = res.rows[0];
    return r === undefined ? undefined : this.row("read task", r, toTask);
  }

  private async event(
    c: PoolClient,
    taskId: string,
    at: number,
    event: string,
    actor: string,
    details: Record<string, unknown>,
  ): Promise<void> {
    await c.query(
      `INSERT INTO approval_task_events (task_id, at, event, actor, details)
       VALUES ($1, $2, $3, $4, $5::jsonb)`,
      [taskId, at, event, actor, JSON.stringify(details)],
    );
  }

  /** Appends a switch change and announces it (delivered on commit). Returns its seq. */
  private async change(
    c: PoolClient,
    switchId: string,
    op: "create" | "delete",
    at: number,
  ): Promise<number> {
    const res = await c.query<Row>(
      "INSERT INTO switch_changes (switch_id, op, at) VALUES ($1, $2, $3) RETURNING seq",
      [switchId, op, at],
    );
    const r = res.rows[0];
    if (r === undefined) throw new Error("INSERT … RETURNING gave no row");
    const seq = ms(r, "seq");
    await c.query("SELECT pg_notify($1, $2)", [SWITCH_CHANNEL, String(seq)]);
    return seq;
  }

  private async connect(what: string): Promise<PoolClient> {
    if (this.closed) throw toolgateError("fleet_store_unavailable", "fleet store: closed");
    let c: PoolClient;
    try {
      c = await this.pool.connect();
    } catch (e) {
      throw this.unavailable(what, e);
    }
    // pg-pool listens for errors on idle clients only: a connection lost while checked
    // out emits "error" on the client, which would crash the process unhandled. The
    // query in flight fails on its own (and the client is then discarded by tx).
    if (!this.guarded.has(c)) {
      this.guarded.add(c);
      c.on("error", (e) => {
        this.log?.warn("fleet store: a PostgreSQL connection failed", {
          event: "fleet.store_connection_error",
          error: e.message,
        });
      });
    }
    return c;
  }

  /**
   * One statement that returns one row, as a named prepared statement (parsed
   * once per connection), in its own implicit transaction: one round trip. A
   * refusal raised by the statement (SQLSTATE TGB01) is `invalid_request` and
   * keeps the connection; any other failure discards it.
   */
  private async single(what: string, name: string, sql: string, args: unknown[]): Promise<Row> {
    const c = await this.connect(what);
    let broken: Error | undefined;
    try {
      const res = await c.query<Row>({ name, text: sql, values: args });
      const r = res.rows[0];
      if (r === undefined) throw new RowError("the statement returned no row");
      return r;
    } catch (e) {
      if (pgCode(e) === "TGB01") throw toolgateError("invalid_request", (e as Error).message);
      broken = e instanceof Error ? e : new Error(String(e));
      throw this.unavailable(what, e);
    } finally {
      c.release(broken);
    }
  }

  private async query(what: string, sql: string, args: unknown[] = []): Promise<Row[]> {
    if (this.closed) throw toolgateError("fleet_store_unavailable", "fleet store: closed");
    try {
      const res = await this.pool.query<Row>(sql, args);
      return res.rows;
    } catch (e) {
      throw this.unavailable(what, e);
    }
  }

  /**
   * One transaction on one pooled connection: committed when `fn` resolves,
   * rolled back when it throws (an `AfterCommit` commits, then throws its
   * error). A connection that fails is discarded, not returned to the pool.
   */
  private async tx<T>(what: string, fn: (c: PoolClient) => Promise<T>): Promise<T> {
    const c = await this.connect(what);
    let broken: Error | undefined;
    try {
      await c.query("BEGIN");
      let out: T;
      try {
        out = await fn(c);
      } catch (e) {
        if (e instanceof AfterCommit) {
          await c.query("COMMIT");
          throw e.error;
        }
        throw e;
      }
      await c.query("COMMIT");
      return out;
    } catch (e) {
      if (!isToolgateError(e) || e.code === "fleet_store_unavailable") {
        // the session may be in any state: discard it
        broken = e instanceof Error ? e : new Error(String(e));
      } else {
        await c.query("ROLLBACK").catch((re: unknown) => {
          broken = re instanceof Error ? re : new Error(String(re));
        });
      }
      throw this.unavailable(what, e);
    } finally {
      c.release(broken);
    }
  }

  private row<T>(what: string, r: Row, f: (r: Row) => T): T {
    try {
      return f(r);
    } catch (e) {
      throw this.unavailable(what, e);
    }
  }

  private rows<T>(what: string, rows: Row[], f: (r: Row) => T): T[] {
    return rows.map((r) => this.row(what, r, f));
  }

  /** A coded error passes; anything else becomes fleet_store_unavailable (logged once here). */
  private unavailable(what: string, e: unknown): ToolgateError {
    if (isToolgateError(e)) return e;
    const msg = e instanceof Error ? e.message : String(e);
    const bad = e instanceof RowError;
    this.log?.error(`fleet store: ${what} failed`, {
      event: bad ? "fleet.store_row_invalid" : "fleet.store_unavailable",
      error: msg,
      ...(pgCode(e) !== undefined ? { pg_code: pgCode(e) } : {}),
    });
    return toolgateError(
      "fleet_store_unavailable",
      `fleet store: ${what}: ${bad ? "a stored row is malformed: " : ""}${msg}`,
      { cause: e },
    );
  }
}

function clamp(v: number, max: number, dflt: number): number {
  const n = typeof v === "number" && Number.isFinite(v) ? Math.trunc(v) : dflt;
  return Math.min(max, Math.max(1, n));
}

/** An id for a control replica: `rep_` + 64 random bits (for the sidecars view). */
export function newReplicaId(): string {
  return `rep_${randomBytes(8).toString("base64url")}`;
}
