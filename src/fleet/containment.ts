/**
 * FleetContainment: the decider's containment port in fleet mode, over the
 * control service (FleetClient). Same rules and the same denies as the
 * sidecar's own Containment (the shared functions of src/containment), with
 * the state held fleet-wide:
 *
 * - kill switches from the client's cache (synchronous); when the cache is
 *   stale (no snapshot yet, or the stream silent longer than
 *   fleet.max_staleness_seconds) tools of class approve, execute or admin
 *   (`data.toolgate.deployment.tools[tool].class`; unknown or missing counts
 *   as execute) are denied `containment_stale`; reads and drafts go on;
 * - rates through leases: per rate key a few tokens leased from the fleet's
 *   bucket (POST /fleet/v1/rates/lease) and taken locally, synchronously;
 *   a lease's tokens expire 1 s after it was granted; below half a lease a
 *   new one is fetched in the background; only when a key has no token left
 *   does check() answer with a promise (lease, then take or deny);
 * - budgets only at reserve (POST /fleet/v1/budgets/reserve, a promise), with
 *   the items the sidecar's Containment.reserve would write; any failure
 *   denies `budget_unavailable` (fail closed); unreserve and the action
 *   report resolve (POST /fleet/v1/budgets/resolve) in the background, with
 *   retries, a failure logged.
 */
import type { DecisionRequest, VerifiedFacts } from "../model";
import {
  budgetDeny,
  budgetItems,
  limitsOf,
  rateDeny,
  rateWho,
  reservationTtlMs,
  switchDeny,
  switchView,
  type ContainmentDeny,
  type KillSwitch,
  type LimitsSource,
  type RateSpec,
  type SwitchScope,
} from "../containment";
import { hasOwn, isObject } from "../shared/guards";
import type { Logger } from "../shared/log";
import type { FleetClient } from "./client";
import { bool, int, member, num, obj, str } from "./wire";
import { OrderedMap } from "../shared/ordered-map";

/** Tool classes that go on while the switch cache is stale. */
const SAFE_WHEN_STALE: ReadonlySet<string> = new Set(["read", "draft"]);
/** Leased tokens not taken within this are gone (under-admission, never over). */
export const LEASE_TTL_MS = 1000;
/** Rounds of leasing one check waits for before it gives up (a very busy key). */
const LEASE_ROUNDS = 3;
/** Reservations this sidecar remembers for their reports. */
const MAX_OPEN = 100_000;
const MAX_LEASES = 100_000;

interface Lease {
  tokens: number;
  expiresAt: number;
  /** A lease request on its way (shared by every check waiting for this key). */
  pending: Promise<LeaseAnswer> | undefined;
}

interface LeaseAnswer {
  granted: number;
  retryAfter: number;
}

interface RateNeed {
  rate: RateSpec;
  who: string;
  key: string;
}

export interface FleetContainmentOptions {
  client: FleetClient;
  agentId: string;
  log: Logger;
  /** As Containment's: seconds a reservation of `tool` waits for its report. */
  reservationTtlSeconds: (tool: string) => number;
  now?: () => number;
}

/** The class of `tool` in the bundle's data; execute when unknown. */
export function toolClass(engine: LimitsSource | undefined, tool: string): string {
  const tg = isObject(engine?.data) ? engine.data.toolgate : undefined;
  const dep = isObject(tg) ? tg.deployment : undefined;
  const tools = isObject(dep) ? dep.tools : undefined;
  const t = isObject(tools) && hasOwn(tools, tool) ? tools[tool] : undefined;
  const c = isObject(t) ? t.class : undefined;
  return typeof c === "string" ? c : "execute";
}

export class FleetContainment {
  private readonly client: FleetClient;
  private readonly agentId: string;
  private readonly log: Logger;
  private readonly ttlSeconds: (tool: string) => number;
  private readonly now: () => number;
  private readonly leases = new OrderedMap<string, Lease>();
  /** Decisions that reserved here, until their TTL: what a report may still resolve. */
  private readonly open = new OrderedMap<string, number>();

  constructor(opts: FleetContainmentOptions) {
    this.client = opts.client;
    this.agentId = opts.agentId;
    this.log = opts.log;
    this.ttlSeconds = opts.reservationTtlSeconds;
    this.now = opts.now ?? Date.now;
  }

  /** Kill switches (the cache), staleness, then rates (leases). No budget work. */
  check(
    req: DecisionRequest,
    verified: VerifiedFacts,
    engine: LimitsSource | undefined,
    nowMs: number,
  ): ContainmentDeny | undefined | Promise<ContainmentDeny | undefined> {
    const stopped = switchDeny(this.client.switches(), this.agentId, req, verified, nowMs);
    if (stopped !== undefined) return stopped;
    const stale = this.staleDeny(req.action.name, engine, nowMs);
    if (stale !== undefined) return stale;
    if (engine === undefined) return undefined;
    const limits = limitsOf(engine);
    if (limits.rates.length === 0) return undefined;
    const needs: RateNeed[] = [];
    for (const r of limits.rates) {
      if (r.tool !== undefined && r.tool !== req.action.name) continue;
      const who = rateWho(r, req, verified, this.agentId);
      needs.push({ rate: r, who, key: `${r.id}|${who}` });
    }
    if (needs.length === 0) return undefined;
    if (this.takeAll(needs, nowMs)) return undefined;
    return this.takeLeased(needs);
  }

  /** The containment_stale deny for a tool that must not run on a stale cache. */
  private staleDeny(
    tool: string,
    engine: LimitsSource | undefined,
    nowMs: number,
  ): ContainmentDeny | undefined {
    const f = this.client.freshness(nowMs);
    if (f.fresh) return undefined;
    const cls = toolClass(engine, tool);
    if (SAFE_WHEN_STALE.has(cls)) return undefined;
    const secs = Math.round(f.silentForMs / 1000);
    const since = f.neverSynced
      ? `has not delivered its first snapshot (waiting ${secs} s)`
      : `has been down for ${secs} s`;
    return {
      code: "containment_stale",
      message: `kill switches may be out of date: the fleet's kill-switch stream (${this.client.url}) ${since}; ${cls}-class tools are denied until it is back, reads and drafts go on`,
    };
  }

  /** Takes one token of every need if each has one (all or nothing); prefetches below half. */
  private takeAll(needs: RateNeed[], nowMs: number): boolean {
    for (const n of needs) if (this.available(n.key, nowMs) < 1) return false;
    for (const n of needs) {
      const l = this.leases.get(n.key) as Lease;
      l.tokens -= 1;
      if (l.tokens < want(n.rate) / 2 && l.pending === undefined) this.prefetch(n);
    }
    return true;
  }

  private available(key: string, nowMs: number): number {
    const l = this.leases.get(key);
    if (l === undefined) return 0;
    if (l.expiresAt <= nowMs) l.tokens = 0;
    return l.tokens;
  }

  private lease(key: string): Lease {
    let l = this.leases.get(key);
    if (l === undefined) {
      l = { tokens: 0, expiresAt: 0, pending: undefined };
      this.leases.set(key, l);
      if (this.leases.size > MAX_LEASES) {
        const oldest = this.leases.oldest();
        if (oldest !== undefined && oldest[0] !== key) this.leases.delete(oldest[0]);
      }
    }
    return l;
  }

  /** Leases more tokens for a need (one request per key at a time). */
  private refill(n: RateNeed): Promise<LeaseAnswer> {
    const l = this.lease(n.key);
    l.pending ??= this.client
      .call(
        "POST",
        "/fleet/v1/rates/lease",
        {
          rate_id: n.rate.id,
          key: n.key,
          rate_per_second: n.rate.ratePerSecond,
          burst: n.rate.burst,
          want: want(n.rate),
        },
        (v) => leaseAnswer(v, want(n.rate)),
        "rate lease",
      )
      .then((a) => {
        const now = this.now();
        const left = l.expiresAt > now ? l.tokens : 0;
        l.tokens = left + a.granted;
        if (a.granted > 0) l.expiresAt = now + LEASE_TTL_MS;
        return a;
      })
      .finally(() => {
        l.pending = undefined;
      });
    return l.pending;
  }

  private prefetch(n: RateNeed): void {
    this.refill(n).catch((e: unknown) =>
      this.log.debug("fleet: rate lease prefetch failed", {
        event: "fleet.rate_lease_failed",
        key: n.key,
        error: (e as Error).message,
      }),
    );
  }

  /** Leases for every key without a token, then takes (or denies rate_limited). */
  private async takeLeased(needs: RateNeed[]): Promise<ContainmentDeny | undefined> {
    for (let round = 0; round < LEASE_ROUNDS; round++) {
      const now = this.now();
      const empty = needs.filter((n) => this.available(n.key, now) < 1);
      if (empty.length === 0 && this.takeAll(needs, now)) return undefined;
      let answers: LeaseAnswer[];
      try {
        answers = await Promise.all(empty.map((n) => this.refill(n)));
      } catch (e) {
        const n = empty[0] as RateNeed;
        return {
          code: "rate_limited",
          message: `rate limit ${n.rate.id}: no token could be leased from the fleet; denied (fail closed): ${(e as Error).message}`,
          retry_after: 1,
        };
      }
      for (let i = 0; i < empty.length; i++) {
        const a = answers[i] as LeaseAnswer;
        const n = empty[i] as RateNeed;
        if (a.granted === 0) return rateDeny(n.rate, n.who, Math.max(1, a.retryAfter));
      }
      if (this.takeAll(needs, this.now())) return undefined;
      // others took the tokens first: lease again
    }
    const n = needs[0] as RateNeed;
    return rateDeny(n.rate, n.who, 1);
  }

  /** What the policy sees as `input.verified.containment`: the cached switches in force. */
  view(nowMs: number): { killswitches: Array<{ id: string; scope: SwitchScope; reason: string }> } {
    return {
      killswitches: this.active(nowMs).map((s) => ({ id: s.id, scope: s.scope, reason: s.reason })),
    };
  }

  /** The cached switches in force, as the control port lists them. */
  listSwitches(): KillSwitch[] {
    return this.active(this.now()).map((s) => switchView(s));
  }

  activeCount(): number {
    return this.active(this.now()).length;
  }

  private active(nowMs: number) {
    return this.client.switches().filter((s) => s.expiresAt === null || s.expiresAt > nowMs);
  }

  /**
   * An allow reserves its budget amounts fleet-wide before it is answered:
   * one item per budget of the tool (key, amount, max, window as the
   * sidecar's Containment computes them). Denies budget_exceeded with the
   * control's numbers, budget_unavailable on any failure.
   */
  reserve(
    decisionId: string,
    req: DecisionRequest,
    verified: VerifiedFacts,
    engine: LimitsSource,
    nowMs: number,
  ): ContainmentDeny | undefined | Promise<ContainmentDeny | undefined> {
    const tool = req.action.name;
    const items = budgetItems(limitsOf(engine), req, verified);
    if (items.length === 0) return undefined;
    const ttlMs = reservationTtlMs(this.ttlSeconds, tool);
    const body = {
      decision_id: decisionId,
      ttl_seconds: ttlMs / 1000,
      items: items.map((it) => ({
        budget_id: it.budget.id,
        key: it.key,
        amount: it.amount,
        max_total: it.budget.maxTotal,
        window_seconds: it.budget.windowSeconds,
      })),
    };
    const unavailable = (why: string): ContainmentDeny => ({
      code: "budget_unavailable",
      message: `the budget reservation could not be recorded; denied (fail closed): ${why}`,
    });
    return this.client
      .call("POST", "/fleet/v1/budgets/reserve", body, reserveAnswer, "budget reservation")
      .then(
        (a): ContainmentDeny | undefined => {
          if (a.ok) {
            if (items.some((it) => it.amount > 0)) this.remember(decisionId, nowMs + ttlMs);
            return undefined;
          }
          const it = items.find((i) => i.budget.id === a.budgetId);
          if (it === undefined)
            return unavailable(`the control service named an unknown budget ${a.budgetId}`);
          return budgetDeny(it.budget, a.used, it.amount, Math.max(1, a.retryAfter));
        },
        (e: unknown) => {
          this.log.error("a fleet budget reservation failed; the allow is denied", {
            event: "fleet.budget_reserve_failed",
            decision_id: decisionId,
            tool,
            error: (e as Error).message,
          });
          // it may have been written with its answer lost: released, so it does not count for nothing
          this.resolve(decisionId, "release");
          return unavailable((e as Error).message);
        },
      );
  }

  private remember(decisionId: string, until: number): void {
    this.open.set(decisionId, until);
    if (this.open.size > MAX_OPEN) this.open.shift();
  }

  /** The decision that reserved became a deny after all: its reservations go (background). */
  unreserve(decisionId: string): void {
    if (this.open.delete(decisionId)) this.resolve(decisionId, "release");
  }

  /**
   * The action report of a decision: ok, or an error that changed something,
   * commits its reservations; an error that changed nothing releases them.
   * Sent in the background: the answer says what was asked (`committing`,
   * `releasing`), `expired` past the TTL (nothing to resolve: it counts as
   * spent), `none` when this sidecar reserved nothing for it.
   */
  reported(decisionId: string, status: "ok" | "error", changedSomething: boolean): string {
    const until = this.open.get(decisionId);
    if (until === undefined) return "none";
    this.open.delete(decisionId);
    if (this.now() >= until) return "expired";
    const outcome = status === "ok" || changedSomething ? "commit" : "release";
    this.resolve(decisionId, outcome);
    return outcome === "commit" ? "committing" : "releasing";
  }

  private resolve(decisionId: string, outcome: "commit" | "release"): void {
    this.client.background(
      () =>
        this.client.call(
          "POST",
          "/fleet/v1/budgets/resolve",
          { decision_id: decisionId, outcome },
          resolveAnswer,
          "budget resolve",
        ),
      () => undefined,
      (e) =>
        this.log.error(
          outcome === "commit"
            ? "a budget commit could not be sent to the control service; the reservation counts as spent at its TTL"
            : "a budget release could not be sent to the control service; the reservation keeps counting until its TTL",
          {
            event: `fleet.budget_${outcome}_failed`,
            decision_id: decisionId,
            error: e.message,
          },
        ),
    );
  }
}

/** Tokens asked per lease: a quarter of the burst, at least one. */
function want(r: RateSpec): number {
  return Math.max(1, Math.ceil(r.burst / 4));
}

/** A lease answer, checked: never more tokens than were asked for (a lying peer cannot widen a rate). */
function leaseAnswer(v: unknown, asked: number): LeaseAnswer {
  const o = obj(v, "rate lease");
  const granted = int(o, "granted", "rate lease");
  const retryAfter = num(o, "retry_after", "rate lease");
  if (granted < 0 || granted > asked || retryAfter < 0)
    throw new Error(`rate lease: ${granted} granted of ${asked} asked, or a negative retry_after`);
  return { granted, retryAfter: Math.ceil(retryAfter) };
}

type ReserveAnswer =
  { ok: true } | { ok: false; budgetId: string; used: number; retryAfter: number };

function reserveAnswer(v: unknown): ReserveAnswer {
  const what = "budget reservation";
  const o = obj(v, what);
  if (bool(o, "ok", what)) return { ok: true };
  return {
    ok: false,
    budgetId: str(o, "budget_id", what, 512),
    used: num(o, "used", what),
    retryAfter: Math.ceil(num(o, "retry_after", what)),
  };
}

const RESOLUTIONS: ReadonlySet<unknown> = new Set(["committed", "released", "expired", "none"]);

function resolveAnswer(v: unknown): string {
  const r = member(obj(v, "budget resolve"), "resolution");
  if (!RESOLUTIONS.has(r)) throw new Error("budget resolve: resolution is unknown");
  return r as string;
}
