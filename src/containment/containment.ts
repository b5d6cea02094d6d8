/**
 * Containment: kill switches, rate limits and budgets, enforced by toolgate
 * itself before the policy is evaluated (a wrong or broken bundle cannot
 * bypass them). See docs/containment.md.
 *
 * - Kill switches live in SQLite (./store.ts) and in an in-memory copy that
 *   is updated in the same synchronous call that commits the row: a switch
 *   applies to every decision that starts after its API call returns.
 *   When SQLite cannot take the change (disk full, read-only), the switch
 *   still applies (or is lifted) in memory at once, the change is reported as
 *   not persisted, and a background retry writes it, in order, until it
 *   succeeds.
 * - Rates (token buckets) and budgets (sliding windows) are declared in the
 *   active bundle's data, `data.toolgate.deployment.limits`. Buckets live in
 *   memory. Budgets count reservations: an allow reserves its amount before
 *   it is answered (persisted); the action report bound to the decision
 *   commits it (ok) or releases it (error, nothing changed); a reservation
 *   never resolved keeps counting (pending until its TTL, spent from then on).
 *   At every decision, spent-in-window + pending + this call <= max_total.
 */
import type { DecisionRequest, VerifiedFacts } from "../model";
import { normalizeError, toolgateError } from "../errors";
import type { Metrics } from "../metrics";
import type { Logger } from "../shared/log";
import { type Component, type ComponentStatus, notRunning } from "../shared/lifecycle";
import type { ContainmentStore, Reservation } from "./store";
import {
  newSwitchId,
  SCOPE_KEYS,
  type KillSwitch,
  type SwitchRow,
  type SwitchScope,
} from "./store";
import { isObject } from "../shared/guards";
import { OrderedMap } from "../shared/ordered-map";

export { ContainmentStore } from "./store";
export type { ContainmentStoreOptions, KillSwitch, SwitchScope } from "./store";

/** Why containment denied a decision; `retry_after` in seconds (rates and budgets). */
export interface ContainmentDeny {
  code:
    | "tool_disabled"
    | "agent_disabled"
    | "job_disabled"
    | "subject_disabled"
    | "rate_limited"
    | "budget_exceeded"
    | "budget_unavailable"
    /** Fleet mode: the kill-switch stream is stale; approve/execute/admin-class tools are denied. */
    | "containment_stale";
  message: string;
  retry_after?: number;
  killswitch_id?: string;
}

export type RatePer = "tool" | "agent" | "subject" | "job";
export type BudgetPer = "job" | "subject" | "customer";

export interface RateSpec {
  id: string;
  per: RatePer;
  tool: string | undefined;
  ratePerSecond: number;
  burst: number;
}

export interface BudgetSpec {
  id: string;
  tool: string;
  argument: string | undefined;
  per: BudgetPer;
  windowSeconds: number;
  maxTotal: number;
}

export interface Limits {
  rates: RateSpec[];
  budgets: BudgetSpec[];
}

/** The longest budget window honoured (and kept in memory after a restart). */
export const MAX_WINDOW_SECONDS = 31 * 24 * 3600;
const MAX_BUCKETS = 100_000;
/** Reservations a report may still resolve; beyond, the oldest just keep counting. */
const MAX_OPEN = 100_000;
/** The default reservation TTL when the composition root gives none. */
export const DEFAULT_RESERVATION_TTL_SECONDS = 360;
/** Background retries of unpersisted kill switch changes: 1 s doubling to 30 s. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;
const EMPTY_LIMITS: Limits = { rates: [], budgets: [] };

function invalid(msg: string): never {
  throw toolgateError("limits_invalid", `data.toolgate.deployment.limits: ${msg}`);
}

const positive = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v) && v > 0;

/**
 * Reads and checks `data.toolgate.deployment.limits` of a bundle's data.
 * Absent: no limits. Malformed: throws `limits_invalid` (the bundle is then
 * refused at load time by the smoke test, and would deny every decision).
 */
export function compileLimits(data: unknown): Limits {
  const tg = isObject(data) ? data.toolgate : undefined;
  const dep = isObject(tg) ? tg.deployment : undefined;
  const limits = isObject(dep) ? dep.limits : undefined;
  if (limits === undefined) return EMPTY_LIMITS;
  if (!isObject(limits)) invalid("must be an object {rates?, budgets?}");
  const rates: RateSpec[] = [];
  const budgets: BudgetSpec[] = [];
  const rawRates = limits.rates ?? [];
  const rawBudgets = limits.budgets ?? [];
  if (!Array.isArray(rawRates)) invalid("rates must be an array");
  if (!Array.isArray(rawBudgets)) invalid("budgets must be an array");
  rawRates.forEach((r: unknown, i) => {
    if (!isObject(r)) invalid(`rates[${i}] must be an object`);
    const per = r.per;
    if (per !== "tool" && per !== "agent" && per !== "subject" && per !== "job")
      invalid(`rates[${i}].per must be tool, agent, subject or job`);
    if (r.tool !== undefined && (typeof r.tool !== "string" || r.tool === ""))
      invalid(`rates[${i}].tool must be a tool name`);
    if (!positive(r.rate_per_second)) invalid(`rates[${i}].rate_per_second must be > 0`);
    if (!positive(r.burst) || !Number.isInteger(r.burst))
      invalid(`rates[${i}].burst must be a whole number ≥ 1`);
    const tool = r.tool;
    rates.push({
      id:
        typeof r.id === "string"
          ? r.id
          : `rate:${per}:${tool ?? "*"}:${String(r.rate_per_second)}:${String(r.burst)}`,
      per,
      tool,
      ratePerSecond: r.rate_per_second,
      burst: r.burst,
    });
  });
  rawBudgets.forEach((b: unknown, i) => {
    if (!isObject(b)) invalid(`budgets[${i}] must be an object`);
    if (typeof b.tool !== "string" || b.tool === "") invalid(`budgets[${i}].tool is required`);
    if (b.argument !== undefined && (typeof b.argument !== "string" || b.argument === ""))
      invalid(`budgets[${i}].argument must be an argument name`);
    const per = b.per;
    if (per !== "job" && per !== "subject" && per !== "customer")
      invalid(`budgets[${i}].per must be job, subject or customer`);
    if (
      !positive(b.window_seconds) ||
      !Number.isInteger(b.window_seconds) ||
      b.window_seconds > MAX_WINDOW_SECONDS
    )
      invalid(
        `budgets[${i}].window_seconds must be a whole number from 1 to ${MAX_WINDOW_SECONDS}`,
      );
    if (typeof b.max_total !== "number" || !Number.isFinite(b.max_total) || b.max_total < 0)
      invalid(`budgets[${i}].max_total must be a number ≥ 0`);
    const argument = b.argument;
    budgets.push({
      id:
        typeof b.id === "string"
          ? b.id
          : `budget:${b.tool}:${argument ?? "count"}:${per}:${b.window_seconds}`,
      tool: b.tool,
      argument,
      per,
      windowSeconds: b.window_seconds,
      maxTotal: b.max_total,
    });
  });
  return { rates, budgets };
}

/** Where the limits come from: the active engine's bundle data. */
export interface LimitsSource {
  readonly data: unknown;
}

const LIMITS = new WeakMap<object, Limits>();

/** The limits of a bundle's data, checked once per engine (a pure function of its data). */
export function limitsOf(engine: LimitsSource): Limits {
  const key = engine as object;
  let l = LIMITS.get(key);
  if (l === undefined) {
    l = compileLimits(engine.data);
    LIMITS.set(key, l);
  }
  return l;
}

export interface ContainmentEvents {
  containmentEvent(event: string, fields: Record<string, unknown>): void;
}

export interface ContainmentOptions {
  store: ContainmentStore;
  agentId: string;
  events?: ContainmentEvents;
  now?: () => number;
  /**
   * Seconds a budget reservation of `tool` waits for its action report
   * before it counts as spent (default 360 s). The composition root passes
   * `containment.reservation_ttl_seconds`, or the tool's grant
   * lifetime + 300 s.
   */
  reservationTtlSeconds?: (tool: string) => number;
  /** Error lines for store failures (kill switch changes not persisted, retries). */
  log?: Logger;
  /** Store failures by op; gauges for unpersisted changes and pending reservations. */
  metrics?: Metrics;
}

interface Bucket {
  tokens: number;
  last: number;
}

/**
 * What counts against one budget key: a spend, or a reservation. `at` is
 * when it was spent (committed by a report) or reserved; a reservation has
 * `until`: pending (counted in full) before it, spent at `until` from then on.
 */
interface Spend {
  at: number;
  amount: number;
  until?: number;
}

/** When a spend counts from: its `at`, or an unresolved reservation's `until`. */
const countsFrom = (s: Spend): number => s.until ?? s.at;

/** A decision's reservations, while an action report may still resolve them. */
interface OpenReservation {
  until: number;
  items: Array<{ key: string; spend: Spend }>;
}

/** A kill switch change applied in memory and not yet on disk, in order. */
type Unpersisted =
  { op: "create"; row: SwitchRow } | { op: "delete"; id: string; by: string; at: number };

/** What an action report did to a decision's budget reservations. */
export type BudgetResolution =
  | "committed"
  | "released"
  /** Not released: the store refused the delete, or the report listed changes. */
  | "kept"
  /** The TTL had run out: already counted as spent, nothing to resolve. */
  | "expired"
  | "none";

function jobOf(req: DecisionRequest): Record<string, unknown> {
  const job = req.context?.job;
  return isObject(job) ? job : {};
}

/** The job id containment keys on: the verified one (jwt job claim), else context.job.id. */
function jobIdOf(req: DecisionRequest, verified: VerifiedFacts): string | undefined {
  return verified.job?.id ?? str(jobOf(req).id);
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

export function switchView(s: SwitchRow, persisted = true): KillSwitch {
  const v: KillSwitch = {
    id: s.id,
    scope: s.scope,
    reason: s.reason,
    created_by: s.createdBy,
    created_at: new Date(s.createdAt).toISOString(),
    expires_at: s.expiresAt === null ? null : new Date(s.expiresAt).toISOString(),
    persisted,
  };
  if (s.deletedAt !== null) {
    v.deleted_at = new Date(s.deletedAt).toISOString();
    v.deleted_by = s.deletedBy;
  }
  return v;
}

/** A switch as switchDeny reads it: a stored row, or an entry of view() (in force, so no expiry). */
export interface SwitchLike {
  id: string;
  scope: SwitchScope;
  reason: string;
  expiresAt?: number | null;
}

/** The most specific member of a scope decides the deny code. */
function switchCode(scope: SwitchScope): ContainmentDeny["code"] {
  if (scope.tool !== undefined) return "tool_disabled";
  if (scope.job !== undefined) return "job_disabled";
  if (scope.subject !== undefined) return "subject_disabled";
  return "agent_disabled";
}

function describe(scope: SwitchScope): string {
  const parts = SCOPE_KEYS.filter((k) => scope[k] !== undefined).map(
    (k) => `${k} '${scope[k] as string}'`,
  );
  return parts.length === 0 ? "everything" : parts.join(", ");
}

// -- pure rules, shared with the fleet's containment (src/fleet) -------------------

/** Whether a switch in force at `nowMs` (not expired) stops this request of `agentId`. */
function stops(
  s: SwitchLike,
  agentId: string,
  tool: string,
  subject: string,
  jobId: string | undefined,
  nowMs: number,
): boolean {
  if (s.expiresAt != null && s.expiresAt <= nowMs) return false;
  const sc = s.scope;
  if (sc.agent !== undefined && sc.agent !== agentId) return false;
  if (sc.tool !== undefined && sc.tool !== tool) return false;
  if (sc.subject !== undefined && sc.subject !== subject) return false;
  if (sc.job !== undefined && sc.job !== jobId) return false;
  return true;
}

/** The deny of the first switch in `switches` that stops this request, or undefined. */
export function switchDeny(
  switches: readonly SwitchLike[],
  agentId: string,
  req: DecisionRequest,
  verified: VerifiedFacts,
  nowMs: number,
): ContainmentDeny | undefined {
  const tool = req.action.name;
  const jobId = jobIdOf(req, verified);
  const subject = verified.subject.id;
  for (const s of switches) {
    if (!stops(s, agentId, tool, subject, jobId, nowMs)) continue;
    return {
      code: switchCode(s.scope),
      message: `stopped by kill switch ${s.id} (${describe(s.scope)}): ${s.reason}`,
      killswitch_id: s.id,
    };
  }
  return undefined;
}

/** Whom a rate counts per: the tool, the agent, the subject or the job ("" without one). */
export function rateWho(
  r: RateSpec,
  req: DecisionRequest,
  verified: VerifiedFacts,
  agentId: string,
): string {
  return r.per === "tool"
    ? req.action.name
    : r.per === "agent"
      ? agentId
      : r.per === "subject"
        ? verified.subject.id
        : (jobIdOf(req, verified) ?? "");
}

/** The deny of a rate with no token left for `who`. */
export function rateDeny(r: RateSpec, who: string, retryAfter: number): ContainmentDeny {
  return {
    code: "rate_limited",
    message: `rate limit ${r.id} (${r.ratePerSecond}/s, burst ${r.burst} per ${r.per} '${who}') reached`,
    retry_after: retryAfter,
  };
}

/** The key a budget counts under: `<budget id>|<job, subject or customer>`. */
export function budgetKey(bd: BudgetSpec, req: DecisionRequest, verified: VerifiedFacts): string {
  const job = jobOf(req);
  const who =
    bd.per === "job"
      ? (jobIdOf(req, verified) ?? "")
      : bd.per === "subject"
        ? verified.subject.id
        : (str(job.customer_id) ?? req.resource.id);
  return `${bd.id}|${who}`;
}

/** What a call counts against a budget: 1, or its argument's positive amount (else 0). */
export function amountOf(bd: BudgetSpec, req: DecisionRequest): number {
  if (bd.argument === undefined) return 1;
  const args = req.action.properties?.arguments;
  const v = isObject(args) ? args[bd.argument] : undefined;
  // a missing or negative amount never replenishes a budget (the policy checks the type)
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : 0;
}

/** Every budget of the requested tool, with the key and amount this call counts. */
export function budgetItems(
  limits: Limits,
  req: DecisionRequest,
  verified: VerifiedFacts,
): Array<{ budget: BudgetSpec; key: string; amount: number }> {
  const tool = req.action.name;
  const out: Array<{ budget: BudgetSpec; key: string; amount: number }> = [];
  for (const bd of limits.budgets) {
    if (bd.tool !== tool) continue;
    out.push({ budget: bd, key: budgetKey(bd, req, verified), amount: amountOf(bd, req) });
  }
  return out;
}

/** The deny when `amount` more would exceed a budget where `used` is spent or reserved. */
export function budgetDeny(
  bd: BudgetSpec,
  used: number,
  amount: number,
  retryAfter: number,
): ContainmentDeny {
  return {
    code: "budget_exceeded",
    message: `budget ${bd.id}: ${used} of ${bd.maxTotal} spent or reserved in the last ${bd.windowSeconds} s per ${bd.per}; this call needs ${amount}`,
    retry_after: retryAfter,
  };
}

/** How long a reservation of `tool` stays pending (ms, at least 1 s). */
export function reservationTtlMs(ttlSeconds: (tool: string) => number, tool: string): number {
  return Math.max(1, ttlSeconds(tool)) * 1000;
}

/**
 * A new kill switch as POST /v1/killswitches gives it, its shape checked
 * (schemas/kill-switch.schema.json); what it means is checked here.
 */
export interface NewKillSwitch {
  /** Absent or null: everything (the empty scope). */
  scope?: SwitchScope | null;
  reason: string;
  /** A date-time in the future; absent or null: until deleted. */
  expires_at?: string | null;
}

/**
 * The containment module: one instance per sidecar, built by the
 * composition root. Every method but the lifecycle's is synchronous.
 */
export class Containment implements Component {
  readonly name = "containment";
  private readonly store: ContainmentStore;
  private readonly agentId: string;
  private readonly events: ContainmentEvents | undefined;
  private readonly now: () => number;
  private readonly ttlSeconds: (tool: string) => number;
  private readonly log: Logger | undefined;
  private readonly metrics: Metrics | undefined;
  /** Active (not deleted) switches; expiry is checked on read. */
  private switches: SwitchRow[];
  private readonly buckets = new OrderedMap<string, Bucket>();
  /** Per budget key: spends and reservations (see Spend). */
  private readonly spent = new Map<string, Spend[]>();
  /** Per decision: reservations an action report may still resolve (oldest first). */
  private readonly open = new OrderedMap<string, OpenReservation>();
  /** Kill switch changes in force but not yet in the store, oldest first. */
  private readonly unpersisted: Unpersisted[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelayMs = RETRY_FIRST_MS;
  private started = false;
  private closed = false;

  constructor(opts: ContainmentOptions) {
    this.store = opts.store;
    this.agentId = opts.agentId;
    this.events = opts.events;
    this.now = opts.now ?? Date.now;
    this.ttlSeconds = opts.reservationTtlSeconds ?? (() => DEFAULT_RESERVATION_TTL_SECONDS);
    this.log = opts.log;
    this.metrics = opts.metrics;
    const now = this.now();
    const horizon = now - MAX_WINDOW_SECONDS * 1000;
    this.switches = this.store.activeSwitches(now);
    for (const e of this.store.budgetEventsSince(horizon)) {
      this.pushSpend(e.key, { at: e.at, amount: e.amount });
    }
    // unresolved reservations count on after a restart: pending, or spent at their expiry
    for (const r of this.store.reservationsSince(horizon)) {
      const spend: Spend = { at: r.at, amount: r.amount, until: r.expiresAt };
      this.pushSpend(r.key, spend);
      if (r.expiresAt > now) this.openItem(r.decisionId, r.expiresAt, r.key, spend);
    }
    try {
      this.store.pruneReservations(horizon);
    } catch {
      // a full disk at start: they are outside every window anyway
    }
    const m = this.metrics;
    if (m !== undefined) {
      m.addGauge({
        name: "toolgate_killswitch_changes_unpersisted",
        help: "Kill switch changes (set or lifted) in force in memory but not yet written to containment.db; a restart would lose them. Retried in the background.",
        read: () => [{ value: this.unpersisted.length }],
      });
      m.addGauge({
        name: "toolgate_budget_reservations_pending",
        help: "Budget reservations of allowed decisions awaiting their action report (within their TTL).",
        read: () => [{ value: this.pendingCount() }],
      });
    }
  }

  /** The store was read when this was built: nothing more to do. */
  start(): Promise<void> {
    this.started = true;
    return Promise.resolve();
  }

  /**
   * ERROR while the store cannot serve (its file removed, replaced or
   * unreadable, a read failing) or kill switch changes in force wait to be
   * written (a restart would lose them); NOT_READY before start and after
   * stop.
   */
  status(): ComponentStatus {
    const idle = notRunning(this.started, this.closed);
    if (idle !== undefined) return idle;
    const problem = this.store.problem();
    if (problem !== undefined) return { state: "ERROR", detail: problem };
    if (this.unpersisted.length > 0) {
      return {
        state: "ERROR",
        detail: `${this.unpersisted.length} kill switch change(s) in force but not yet written to containment.db (retrying)`,
      };
    }
    return { state: "OK" };
  }

  /**
   * Stops the retry; one last attempt to write what is not persisted (logged
   * if it fails); closes the store. The writes are synchronous: when this
   * returns, nothing is in flight.
   */
  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.close();
      resolve();
    });
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.flushUnpersisted(false);
    if (this.unpersisted.length > 0) {
      this.log?.error("kill switch changes were never written to containment.db and are lost", {
        event: "containment.killswitch_changes_lost",
        changes: this.unpersisted.map((u) =>
          u.op === "create" ? { op: u.op, id: u.row.id } : { op: u.op, id: u.id },
        ),
      });
    }
    this.store.close();
  }

  // -- kill switches -----------------------------------------------------------

  /**
   * Creates a switch: in force in memory at once, committed to SQLite, then
   * audited. If the store refuses it (or earlier changes still wait), the
   * switch stays in force, the view says `persisted: false`, and a
   * background retry writes it.
   */
  createSwitch(input: NewKillSwitch, by: string): KillSwitch {
    const scope: SwitchScope = { ...input.scope };
    if (scope.agent !== undefined && scope.agent !== this.agentId) {
      throw toolgateError(
        "invalid_request",
        `scope.agent '${scope.agent}' is not the agent this sidecar serves ('${this.agentId}')`,
      );
    }
    const reason = input.reason;
    const now = this.now();
    let expiresAt: number | null = null;
    if (input.expires_at !== undefined && input.expires_at !== null) {
      const t = Date.parse(input.expires_at);
      if (!Number.isFinite(t))
        throw toolgateError("invalid_request", "expires_at must be an RFC 3339 date-time");
      if (t <= now) throw toolgateError("invalid_request", "expires_at must lie in the future");
      expiresAt = t;
    }
    const row: SwitchRow = {
      id: newSwitchId(),
      scope,
      reason,
      createdBy: by,
      createdAt: now,
      expiresAt,
      deletedAt: null,
      deletedBy: null,
    };
    // in force first: an operator can always stop a tool, whatever the disk says
    this.switches = [...this.switches, row];
    const error = this.persist({ op: "create", row });
    const view = switchView(row, error === undefined);
    if (error !== undefined) view.persist_error = error;
    this.events?.containmentEvent("killswitch.created", { killswitch: view, actor: by });
    return view;
  }

  /**
   * Deletes (lifts) a switch: lifted in memory at once; the row stays as
   * history. Not persisted (the store refused it): as for createSwitch.
   */
  deleteSwitch(id: string, by: string): KillSwitch {
    const row = this.switches.find((s) => s.id === id);
    const now = this.now();
    if (row === undefined) {
      // not in memory (e.g. expired before this start): the store decides
      const stored = this.store.deleteSwitch(id, by, now);
      if (stored === undefined)
        throw toolgateError("killswitch_not_found", `no active kill switch ${JSON.stringify(id)}`);
      const view = switchView(stored);
      this.events?.containmentEvent("killswitch.deleted", { killswitch: view, actor: by });
      return view;
    }
    this.switches = this.switches.filter((s) => s.id !== id);
    const error = this.persist({ op: "delete", id, by, at: now });
    const view = switchView({ ...row, deletedAt: now, deletedBy: by }, error === undefined);
    if (error !== undefined) view.persist_error = error;
    this.events?.containmentEvent("killswitch.deleted", { killswitch: view, actor: by });
    return view;
  }

  /** Switches in force now (not deleted, not expired). */
  listSwitches(): KillSwitch[] {
    const pending = this.unpersistedIds();
    return this.active(this.now()).map((s) => switchView(s, !pending.has(s.id)));
  }

  /**
   * Every switch ever set, newest first (deleted and expired included), with
   * changes not yet persisted laid over what the store holds.
   */
  switchHistory(limit?: number): KillSwitch[] {
    const rows = new Map(this.store.allSwitches(limit).map((r) => [r.id, r]));
    const pending = this.unpersistedIds();
    for (const u of this.unpersisted) {
      if (u.op === "create") rows.set(u.row.id, u.row);
      else {
        const r = rows.get(u.id);
        if (r !== undefined) rows.set(u.id, { ...r, deletedAt: u.at, deletedBy: u.by });
      }
    }
    return [...rows.values()]
      .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? -1 : 1))
      .slice(0, Math.max(1, Math.min(1000, Math.trunc(limit ?? 100) || 100)))
      .map((r) => switchView(r, !pending.has(r.id)));
  }

  activeCount(): number {
    return this.active(this.now()).length;
  }

  /** Kill switch changes in force but not yet on disk. */
  unpersistedCount(): number {
    return this.unpersisted.length;
  }

  private active(now: number): SwitchRow[] {
    return this.switches.filter((s) => s.expiresAt === null || s.expiresAt > now);
  }

  private unpersistedIds(): Set<string> {
    return new Set(this.unpersisted.map((u) => (u.op === "create" ? u.row.id : u.id)));
  }

  /**
   * Writes one change, after any that still wait (order matters: a lift
   * after its switch). Returns undefined when it is on disk, else the
   * store's error message (the change is queued and retried).
   */
  private persist(change: Unpersisted): string | undefined {
    if (this.unpersisted.length === 0) {
      try {
        this.write(change);
        return undefined;
      } catch (e) {
        this.unpersisted.push(change);
        this.scheduleRetry();
        return this.storeFailure(`killswitch_${change.op}`, e);
      }
    }
    this.unpersisted.push(change);
    this.scheduleRetry();
    return "earlier kill switch changes are not yet written to containment.db; this one waits behind them";
  }

  private write(change: Unpersisted): void {
    if (change.op === "create") this.store.insertSwitch(change.row);
    else this.store.deleteSwitch(change.id, change.by, change.at);
  }

  /** Counts and describes a failed store write. */
  private storeFailure(op: string, e: unknown): string {
    this.metrics?.containmentStoreFailures.inc({ op });
    return normalizeError(e).message;
  }

  /**
   * Writes a budget change; a refused write is counted and logged as
   * `containment.<op>_failed` (never thrown). Returns the error, if any.
   */
  private budgetWrite(
    op: "budget_reserve" | "budget_commit" | "budget_release",
    write: () => void,
    message: string,
    fields: Record<string, unknown>,
  ): string | undefined {
    try {
      write();
      return undefined;
    } catch (e) {
      const error = this.storeFailure(op, e);
      this.log?.error(message, { event: `containment.${op}_failed`, ...fields, error });
      return error;
    }
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== undefined || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.flushUnpersisted();
      if (this.unpersisted.length > 0) {
        this.retryDelayMs = Math.min(RETRY_MAX_MS, this.retryDelayMs * 2);
        this.scheduleRetry();
      } else {
        this.retryDelayMs = RETRY_FIRST_MS;
      }
    }, this.retryDelayMs);
    this.retryTimer.unref();
  }

  /**
   * Writes waiting changes in order; stops at the first the store refuses.
   * `announce`: a containment event per written change (not at close, when
   * audit has already stopped; a log line then).
   */
  private flushUnpersisted(announce = true): void {
    while (this.unpersisted.length > 0) {
      const change = this.unpersisted[0] as Unpersisted;
      try {
        this.write(change);
      } catch (e) {
        const error = this.storeFailure(`killswitch_${change.op}`, e);
        this.log?.error("kill switch change still not written to containment.db; retrying", {
          event: "containment.killswitch_persist_retry_failed",
          op: change.op,
          killswitch_id: change.op === "create" ? change.row.id : change.id,
          waiting: this.unpersisted.length,
          retry_in_ms: Math.min(RETRY_MAX_MS, this.retryDelayMs * 2),
          error,
        });
        return;
      }
      this.unpersisted.shift();
      const fields = {
        op: change.op,
        killswitch_id: change.op === "create" ? change.row.id : change.id,
        actor: change.op === "create" ? change.row.createdBy : change.by,
      };
      if (announce) this.events?.containmentEvent("killswitch.persisted", fields);
      else
        this.log?.info("kill switch change written to containment.db", {
          event: "containment.killswitch.persisted",
          ...fields,
        });
    }
  }

  /** What the policy sees as `input.verified.containment`. */
  view(nowMs: number): { killswitches: Array<{ id: string; scope: SwitchScope; reason: string }> } {
    return {
      killswitches: this.active(nowMs).map((s) => ({ id: s.id, scope: s.scope, reason: s.reason })),
    };
  }

  /**
   * Each budget's current use (the approver console's containment panel):
   * per key holding spends or reservations, what counts in the window now.
   * Read-only; keys with nothing in the window are left out.
   */
  budgetUse(
    limits: Limits,
    nowMs: number = this.now(),
  ): Array<{ budget: BudgetSpec; keys: Array<{ key: string; used: number }> }> {
    return limits.budgets.map((bd) => {
      const prefix = `${bd.id}|`;
      const keys: Array<{ key: string; used: number }> = [];
      for (const key of [...this.spent.keys()]) {
        if (!key.startsWith(prefix)) continue;
        const used = this.counting(key, nowMs - bd.windowSeconds * 1000).reduce(
          (n, s) => n + s.amount,
          0,
        );
        if (used > 0) keys.push({ key: key.slice(prefix.length), used });
      }
      keys.sort((a, b) => b.used - a.used || (a.key < b.key ? -1 : 1));
      return { budget: bd, keys };
    });
  }

  // -- the decision path ---------------------------------------------------------

  /**
   * Kill switches, then rates, then budgets. Returns the deny, or undefined
   * when the request may go on to the policy. Consumes a rate token only when
   * every rate and budget passes. Throws `limits_invalid` for malformed
   * limits (the Decider denies). Reserves nothing: an allow reserves through
   * `reserve`.
   */
  check(
    req: DecisionRequest,
    verified: VerifiedFacts,
    engine: LimitsSource | undefined,
    nowMs: number,
  ): ContainmentDeny | undefined {
    const tool = req.action.name;
    const stopped = switchDeny(this.switches, this.agentId, req, verified, nowMs);
    if (stopped !== undefined) return stopped;
    if (engine === undefined) return undefined;
    const limits = limitsOf(engine);
    if (limits.rates.length === 0 && limits.budgets.length === 0) return undefined;
    const take: Bucket[] = [];
    for (const r of limits.rates) {
      if (r.tool !== undefined && r.tool !== tool) continue;
      const who = rateWho(r, req, verified, this.agentId);
      const key = `${r.id}|${who}`;
      let b = this.buckets.get(key);
      if (b === undefined) {
        b = { tokens: r.burst, last: nowMs };
        this.buckets.set(key, b);
        if (this.buckets.size > MAX_BUCKETS) this.buckets.shift();
      }
      b.tokens = Math.min(
        r.burst,
        b.tokens + (Math.max(0, nowMs - b.last) / 1000) * r.ratePerSecond,
      );
      b.last = nowMs;
      if (b.tokens < 1) {
        return rateDeny(r, who, Math.max(1, Math.ceil((1 - b.tokens) / r.ratePerSecond)));
      }
      take.push(b);
    }
    for (const bd of limits.budgets) {
      if (bd.tool !== tool) continue;
      const over = this.overBudget(bd, budgetKey(bd, req, verified), amountOf(bd, req), nowMs);
      if (over !== undefined) return over;
    }
    for (const b of take) b.tokens -= 1;
    return undefined;
  }

  /**
   * An allow is about to be answered: reserves its amount against every
   * budget of the tool, on disk, before the allow leaves toolgate. Checks the
   * budgets again first (so allowed + pending never exceeds a max, whoever
   * calls). Returns a deny when a budget would be exceeded, or when the
   * reservation cannot be written (`budget_unavailable`: fail closed); with
   * reservation_fsync, a promise of the answer that settles once the
   * reservation is on disk (store.syncReservations) or could not be made so
   * (`budget_unavailable`, the reservation released).
   */
  reserve(
    decisionId: string,
    req: DecisionRequest,
    verified: VerifiedFacts,
    engine: LimitsSource,
    nowMs: number,
  ): ContainmentDeny | undefined | Promise<ContainmentDeny | undefined> {
    const tool = req.action.name;
    const limits = limitsOf(engine);
    const items = new Map<string, number>();
    for (const { budget, key, amount } of budgetItems(limits, req, verified)) {
      const over = this.overBudget(budget, key, amount, nowMs);
      if (over !== undefined) return over;
      if (amount > 0) items.set(key, amount);
    }
    if (items.size === 0) return undefined;
    const until = nowMs + reservationTtlMs(this.ttlSeconds, tool);
    const rows: Reservation[] = [...items].map(([key, amount]) => ({
      decisionId,
      key,
      amount,
      at: nowMs,
      expiresAt: until,
    }));
    const error = this.budgetWrite(
      "budget_reserve",
      () => this.store.addReservations(rows),
      "a budget reservation could not be written; the allow is denied",
      { decision_id: decisionId, tool },
    );
    if (error !== undefined) {
      return {
        code: "budget_unavailable",
        message: `the budget reservation could not be recorded; denied (fail closed): ${error}`,
      };
    }
    for (const r of rows) {
      const spend: Spend = { at: nowMs, amount: r.amount, until };
      this.pushSpend(r.key, spend);
      this.openItem(decisionId, until, r.key, spend);
    }
    // counted above (so decisions made meanwhile see it); answered once on disk
    const durable = this.store.syncReservations();
    return durable === undefined
      ? undefined
      : durable.then(
          () => undefined,
          (e: unknown) => {
            const error = this.storeFailure("budget_reserve", e);
            this.log?.error("a budget reservation could not be made durable; the allow is denied", {
              event: "containment.budget_reserve_failed",
              decision_id: decisionId,
              tool,
              error,
            });
            this.release(decisionId);
            return {
              code: "budget_unavailable",
              message: `the budget reservation could not be made durable; denied (fail closed): ${error}`,
            };
          },
        );
  }

  /**
   * The decision that reserved turned into a deny after all (e.g. its grant
   * could not be signed): its reservations go, as if reported failed.
   */
  unreserve(decisionId: string): void {
    this.release(decisionId);
  }

  /**
   * The action report bound to `decisionId` (checked by the caller against
   * the decision ledger) resolves its reservations: status ok, or an error
   * that still changed something, commits them (spent now); an error that
   * changed nothing releases them. After the TTL nothing is resolved: the
   * reservation already counts as spent. A store failure never frees budget:
   * a failed release keeps counting, a failed commit counts in memory and
   * stays a reservation on disk (which counts after a restart).
   */
  reported(
    decisionId: string,
    status: "ok" | "error",
    changedSomething: boolean,
  ): BudgetResolution {
    if (status === "ok" || changedSomething) return this.commit(decisionId);
    return this.release(decisionId);
  }

  private commit(decisionId: string): BudgetResolution {
    const o = this.open.get(decisionId);
    if (o === undefined) return "none";
    this.open.delete(decisionId);
    const now = this.now();
    if (now >= o.until) return "expired";
    this.budgetWrite(
      "budget_commit",
      () => this.store.commitReservations(decisionId, now),
      "a budget commit could not be written; the reservation keeps counting",
      { decision_id: decisionId },
    );
    for (const it of o.items) {
      it.spend.at = now;
      delete it.spend.until;
    }
    return "committed";
  }

  private release(decisionId: string): BudgetResolution {
    const o = this.open.get(decisionId);
    if (o === undefined) return "none";
    const now = this.now();
    if (now >= o.until) {
      this.open.delete(decisionId);
      return "expired";
    }
    const failed = this.budgetWrite(
      "budget_release",
      () => this.store.releaseReservations(decisionId),
      "a budget release could not be written; the reservation keeps counting",
      { decision_id: decisionId },
    );
    if (failed !== undefined) return "kept";
    this.open.delete(decisionId);
    for (const it of o.items) {
      const list = this.spent.get(it.key);
      const i = list === undefined ? -1 : list.indexOf(it.spend);
      if (list !== undefined && i >= 0) list.splice(i, 1);
    }
    return "released";
  }

  private openItem(decisionId: string, until: number, key: string, spend: Spend): void {
    let o = this.open.get(decisionId);
    if (o === undefined) {
      o = { until, items: [] };
      this.open.set(decisionId, o);
      // bounded: the oldest can no longer be resolved by a report, and so keep counting
      if (this.open.size > MAX_OPEN) this.open.shift();
    }
    o.items.push({ key, spend });
  }

  private pendingCount(): number {
    const now = this.now();
    let n = 0;
    for (const o of this.open.values()) if (o.until > now) n++;
    return n;
  }

  /**
   * The deny, when `amount` more would take the key's spent-in-window plus
   * pending reservations above the budget's max; `retry_after` is the time
   * until enough has slid out (an unresolved reservation slides out one
   * window after its TTL).
   */
  private overBudget(
    bd: BudgetSpec,
    key: string,
    amount: number,
    nowMs: number,
  ): ContainmentDeny | undefined {
    const windowMs = bd.windowSeconds * 1000;
    const counted = this.counting(key, nowMs - windowMs);
    const used = counted.reduce((n, e) => n + e.amount, 0);
    if (used + amount <= bd.maxTotal) return undefined;
    let retry = bd.windowSeconds;
    let freed = 0;
    for (const e of counted.sort((a, b) => countsFrom(a) - countsFrom(b))) {
      freed += e.amount;
      if (used - freed + amount <= bd.maxTotal) {
        retry = Math.max(1, Math.ceil((countsFrom(e) + windowMs - nowMs) / 1000));
        break;
      }
    }
    return budgetDeny(bd, used, amount, retry);
  }

  private pushSpend(key: string, spend: Spend): void {
    let list = this.spent.get(key);
    if (list === undefined) {
      list = [];
      this.spent.set(key, list);
    }
    list.push(spend);
  }

  /**
   * What counts against a key now: spends after `since` and reservations
   * (pending, or spent at their expiry after `since`). Drops what left the
   * longest window.
   */
  private counting(key: string, since: number): Spend[] {
    const list = this.spent.get(key);
    if (list === undefined) return [];
    const horizon = this.now() - MAX_WINDOW_SECONDS * 1000;
    const counted: Spend[] = [];
    let stale = 0;
    for (const e of list) {
      const t = countsFrom(e);
      if (t < horizon) stale++;
      else if (t > since) counted.push(e);
    }
    if (stale > 0) {
      const kept = list.filter((e) => countsFrom(e) >= horizon);
      if (kept.length === 0) this.spent.delete(key);
      else this.spent.set(key, kept);
    }
    return counted;
  }
}
