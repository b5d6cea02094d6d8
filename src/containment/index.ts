/**
 * Containment: kill switches, rate limits and budgets, enforced by toolgate
 * itself before the policy is evaluated (a wrong or broken bundle cannot
 * bypass them). See docs/containment.md.
 *
 * - Kill switches live in SQLite (./store.ts) and in an in-memory copy that
 *   is updated in the same synchronous call that commits the row: a switch
 *   applies to every decision that starts after its API call returns.
 * - Rates (token buckets) and budgets (sliding windows) are declared in the
 *   active bundle's data, `data.toolgate.deployment.limits`. Buckets live in
 *   memory; budget consumption is counted when an action report confirms the
 *   action (status ok), persisted, and reloaded at start.
 */
import type { DecisionRequest, VerifiedFacts } from "../decision/types";
import { toolgateError } from "../errors";
import type { ContainmentStore } from "./store";
import {
  newSwitchId,
  SCOPE_KEYS,
  type KillSwitch,
  type SwitchRow,
  type SwitchScope,
} from "./store";

export { ContainmentStore } from "./store";
export type { KillSwitch, SwitchScope } from "./store";

/** Why containment denied a decision; `retry_after` in seconds (rates and budgets). */
export interface ContainmentDeny {
  code:
    | "tool_disabled"
    | "agent_disabled"
    | "job_disabled"
    | "subject_disabled"
    | "rate_limited"
    | "budget_exceeded";
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
const MAX_PENDING = 100_000;
const EMPTY_LIMITS: Limits = { rates: [], budgets: [] };

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

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

export interface ContainmentEvents {
  containmentEvent(event: string, fields: Record<string, unknown>): void;
}

export interface ContainmentOptions {
  store: ContainmentStore;
  agentId: string;
  events?: ContainmentEvents;
  now?: () => number;
}

interface Bucket {
  tokens: number;
  last: number;
}

function jobOf(req: DecisionRequest): Record<string, unknown> {
  const job = req.context?.job;
  return isObject(job) ? job : {};
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

export function switchView(s: SwitchRow): KillSwitch {
  const v: KillSwitch = {
    id: s.id,
    scope: s.scope,
    reason: s.reason,
    created_by: s.createdBy,
    created_at: new Date(s.createdAt).toISOString(),
    expires_at: s.expiresAt === null ? null : new Date(s.expiresAt).toISOString(),
  };
  if (s.deletedAt !== null) {
    v.deleted_at = new Date(s.deletedAt).toISOString();
    v.deleted_by = s.deletedBy;
  }
  return v;
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

/**
 * The containment module: one instance per sidecar, built by the
 * composition root. Every method is synchronous.
 */
export class Containment {
  private readonly store: ContainmentStore;
  private readonly agentId: string;
  private readonly events: ContainmentEvents | undefined;
  private readonly now: () => number;
  /** Active (not deleted) switches; expiry is checked on read. */
  private switches: SwitchRow[];
  private readonly limitsCache = new WeakMap<object, Limits>();
  private readonly buckets = new Map<string, Bucket>();
  /** Confirmed consumption per budget key, oldest first. */
  private readonly spent = new Map<string, Array<{ at: number; amount: number }>>();
  /** Allowed decisions whose action report would count against a budget. */
  private readonly pending = new Map<string, Array<{ key: string; amount: number }>>();

  constructor(opts: ContainmentOptions) {
    this.store = opts.store;
    this.agentId = opts.agentId;
    this.events = opts.events;
    this.now = opts.now ?? Date.now;
    const now = this.now();
    this.switches = this.store.activeSwitches(now);
    for (const e of this.store.budgetEventsSince(now - MAX_WINDOW_SECONDS * 1000)) {
      this.pushSpent(e.key, e.at, e.amount);
    }
  }

  close(): void {
    this.store.close();
  }

  // -- kill switches -----------------------------------------------------------

  /** Creates a switch: committed to SQLite, then applied in memory, then audited. */
  createSwitch(body: unknown, by: string): KillSwitch {
    if (!isObject(body)) throw toolgateError("invalid_request", "the body must be a JSON object");
    for (const k of Object.keys(body)) {
      if (!["scope", "reason", "expires_at"].includes(k))
        throw toolgateError("invalid_request", `unknown member ${JSON.stringify(k)}`);
    }
    const rawScope = body.scope ?? {};
    if (!isObject(rawScope)) throw toolgateError("invalid_request", "scope must be an object");
    const scope: SwitchScope = {};
    for (const [k, v] of Object.entries(rawScope)) {
      if (!(SCOPE_KEYS as readonly string[]).includes(k))
        throw toolgateError(
          "invalid_request",
          `scope.${k} is unknown; scope may name ${SCOPE_KEYS.join(", ")}`,
        );
      if (typeof v !== "string" || v === "" || v.length > 256)
        throw toolgateError("invalid_request", `scope.${k} must be a non-empty string`);
      scope[k as keyof SwitchScope] = v;
    }
    if (scope.agent !== undefined && scope.agent !== this.agentId) {
      throw toolgateError(
        "invalid_request",
        `scope.agent '${scope.agent}' is not the agent this sidecar serves ('${this.agentId}')`,
      );
    }
    const reason = body.reason;
    if (typeof reason !== "string" || reason.trim() === "" || reason.length > 2000)
      throw toolgateError("invalid_request", "reason must be a non-empty string (≤ 2000 chars)");
    const now = this.now();
    let expiresAt: number | null = null;
    if (body.expires_at !== undefined && body.expires_at !== null) {
      const t = typeof body.expires_at === "string" ? Date.parse(body.expires_at) : NaN;
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
    this.store.insertSwitch(row);
    this.switches = [...this.switches, row];
    const view = switchView(row);
    this.events?.containmentEvent("killswitch.created", { killswitch: view, actor: by });
    return view;
  }

  /** Deletes (lifts) a switch; the row stays as history. */
  deleteSwitch(id: string, by: string): KillSwitch {
    const row = this.store.deleteSwitch(id, by, this.now());
    if (row === undefined)
      throw toolgateError("killswitch_not_found", `no active kill switch ${JSON.stringify(id)}`);
    this.switches = this.switches.filter((s) => s.id !== id);
    const view = switchView(row);
    this.events?.containmentEvent("killswitch.deleted", { killswitch: view, actor: by });
    return view;
  }

  /** Switches in force now (not deleted, not expired). */
  listSwitches(): KillSwitch[] {
    return this.active(this.now()).map(switchView);
  }

  /** Every switch ever set, newest first (deleted and expired included). */
  switchHistory(limit?: number): KillSwitch[] {
    return this.store.allSwitches(limit).map(switchView);
  }

  activeCount(): number {
    return this.active(this.now()).length;
  }

  private active(now: number): SwitchRow[] {
    return this.switches.filter((s) => s.expiresAt === null || s.expiresAt > now);
  }

  /** What the policy sees as `input.verified.containment`. */
  view(nowMs: number): { killswitches: Array<{ id: string; scope: SwitchScope; reason: string }> } {
    return {
      killswitches: this.active(nowMs).map((s) => ({ id: s.id, scope: s.scope, reason: s.reason })),
    };
  }

  // -- the decision path ---------------------------------------------------------

  /** The limits of a bundle's data, checked once per engine. */
  limitsOf(engine: LimitsSource): Limits {
    const key = engine as object;
    let l = this.limitsCache.get(key);
    if (l === undefined) {
      l = compileLimits(engine.data);
      this.limitsCache.set(key, l);
    }
    return l;
  }

  /**
   * Kill switches, then rates, then budgets. Returns the deny, or undefined
   * when the request may go on to the policy. Consumes a rate token only when
   * every rate and budget passes. Throws `limits_invalid` for malformed
   * limits (the Decider denies).
   */
  check(
    req: DecisionRequest,
    verified: VerifiedFacts,
    engine: LimitsSource | undefined,
    nowMs: number,
  ): ContainmentDeny | undefined {
    const tool = req.action.name;
    const job = jobOf(req);
    const jobId = str(job.id);
    const subject = verified.subject.id;
    for (const s of this.switches) {
      if (s.expiresAt !== null && s.expiresAt <= nowMs) continue;
      const sc = s.scope;
      if (sc.agent !== undefined && sc.agent !== this.agentId) continue;
      if (sc.tool !== undefined && sc.tool !== tool) continue;
      if (sc.subject !== undefined && sc.subject !== subject) continue;
      if (sc.job !== undefined && sc.job !== jobId) continue;
      return {
        code: switchCode(sc),
        message: `stopped by kill switch ${s.id} (${describe(sc)}): ${s.reason}`,
        killswitch_id: s.id,
      };
    }
    if (engine === undefined) return undefined;
    const limits = this.limitsOf(engine);
    if (limits.rates.length === 0 && limits.budgets.length === 0) return undefined;
    const take: Bucket[] = [];
    for (const r of limits.rates) {
      if (r.tool !== undefined && r.tool !== tool) continue;
      const who =
        r.per === "tool"
          ? tool
          : r.per === "agent"
            ? this.agentId
            : r.per === "subject"
              ? subject
              : (jobId ?? "");
      const key = `${r.id}|${who}`;
      let b = this.buckets.get(key);
      if (b === undefined) {
        b = { tokens: r.burst, last: nowMs };
        this.buckets.set(key, b);
        if (this.buckets.size > MAX_BUCKETS) {
          const oldest = this.buckets.keys().next().value;
          if (oldest !== undefined) this.buckets.delete(oldest);
        }
      }
      b.tokens = Math.min(
        r.burst,
        b.tokens + (Math.max(0, nowMs - b.last) / 1000) * r.ratePerSecond,
      );
      b.last = nowMs;
      if (b.tokens < 1) {
        return {
          code: "rate_limited",
          message: `rate limit ${r.id} (${r.ratePerSecond}/s, burst ${r.burst} per ${r.per} '${who}') reached`,
          retry_after: Math.max(1, Math.ceil((1 - b.tokens) / r.ratePerSecond)),
        };
      }
      take.push(b);
    }
    for (const bd of limits.budgets) {
      if (bd.tool !== tool) continue;
      const key = this.budgetKey(bd, req, verified);
      const amount = this.amountOf(bd, req);
      const windowMs = bd.windowSeconds * 1000;
      const events = this.inWindow(key, nowMs - windowMs);
      const used = events.reduce((n, e) => n + e.amount, 0);
      if (used + amount > bd.maxTotal) {
        let retry = bd.windowSeconds;
        let freed = 0;
        for (const e of events) {
          freed += e.amount;
          if (used - freed + amount <= bd.maxTotal) {
            retry = Math.max(1, Math.ceil((e.at + windowMs - nowMs) / 1000));
            break;
          }
        }
        return {
          code: "budget_exceeded",
          message: `budget ${bd.id}: ${used} of ${bd.maxTotal} used in the last ${bd.windowSeconds} s per ${bd.per}; this call needs ${amount}`,
          retry_after: retry,
        };
      }
    }
    for (const b of take) b.tokens -= 1;
    return undefined;
  }

  /** After an allow: remembers what the action would consume, to count it when confirmed. */
  allowed(decisionId: string, req: DecisionRequest, verified: VerifiedFacts, engine: LimitsSource) {
    let limits: Limits;
    try {
      limits = this.limitsOf(engine);
    } catch {
      return;
    }
    const items: Array<{ key: string; amount: number }> = [];
    for (const bd of limits.budgets) {
      if (bd.tool !== req.action.name) continue;
      items.push({ key: this.budgetKey(bd, req, verified), amount: this.amountOf(bd, req) });
    }
    if (items.length === 0) return;
    this.pending.set(decisionId, items);
    if (this.pending.size > MAX_PENDING) {
      const oldest = this.pending.keys().next().value;
      if (oldest !== undefined) this.pending.delete(oldest);
    }
  }

  /**
   * An action report confirmed the action (status ok): its budget
   * consumption is persisted and counted. Unknown decisions are ignored.
   */
  confirmed(decisionId: string): void {
    const items = this.pending.get(decisionId);
    if (items === undefined) return;
    this.pending.delete(decisionId);
    const at = this.now();
    for (const it of items) {
      if (this.store.addBudgetEvent(it.key, decisionId, at, it.amount)) {
        this.pushSpent(it.key, at, it.amount);
      }
    }
  }

  /** A failed action consumes nothing. */
  discarded(decisionId: string): void {
    this.pending.delete(decisionId);
  }

  private budgetKey(bd: BudgetSpec, req: DecisionRequest, verified: VerifiedFacts): string {
    const job = jobOf(req);
    const who =
      bd.per === "job"
        ? (str(job.id) ?? "")
        : bd.per === "subject"
          ? verified.subject.id
          : (str(job.customer_id) ?? req.resource.id);
    return `${bd.id}|${who}`;
  }

  private amountOf(bd: BudgetSpec, req: DecisionRequest): number {
    if (bd.argument === undefined) return 1;
    const args = req.action.properties?.arguments;
    const v = isObject(args) ? args[bd.argument] : undefined;
    // a missing or negative amount never replenishes a budget (the policy checks the type)
    return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : 0;
  }

  private pushSpent(key: string, at: number, amount: number): void {
    let list = this.spent.get(key);
    if (list === undefined) {
      list = [];
      this.spent.set(key, list);
    }
    list.push({ at, amount });
  }

  /** Events after `since` (drops those older than the longest window). */
  private inWindow(key: string, since: number): Array<{ at: number; amount: number }> {
    const list = this.spent.get(key);
    if (list === undefined) return [];
    const horizon = this.now() - MAX_WINDOW_SECONDS * 1000;
    while (list.length > 0 && (list[0] as { at: number }).at < horizon) list.shift();
    return list.filter((e) => e.at > since);
  }
}
