/**
 * The console over the fleet: `toolgate control`'s approvals (FleetApprovals),
 * kill switches (FleetSwitches) and PostgreSQL store, the same objects its
 * human API calls — so a page enforces what the API enforces:
 * FleetApprovals.decide checks eligibility (src/approvals/rules.ts
 * `ineligible`: never the initiator, never the agent, not excluded, holds a
 * role; audited as refused otherwise), the store's conditional UPDATE makes a
 * decision single and refuses an expired task; the panel checks the admin
 * role here as the API's route guard does, and a body is checked against the
 * API's own schemas (kill-switch, approval-decision) before it is used.
 *
 * The control service is floor 7 and this file floor 6: it takes what it
 * needs as structural interfaces (below), which src/control/server.ts fills.
 *
 * What the fleet does not know: a tool's class and rollout stage (they are
 * in each sidecar's bundle; the control service has none) — the rollout view
 * shows the bundle revisions the fleet's sidecars report, and says so; a
 * budget's maximum (also in the bundle) — the panel shows each key's use;
 * action reports (they stay in the sidecar's trail) — the timeline ends with
 * the approval's use.
 */
import { approverView, iso, STATS_WINDOW_MS } from "../../approvals/rules";
import type {
  ApprovalTask,
  EvaluationRecord,
  RequestStats,
  TaskStatus,
} from "../../approvals/store";
import type { KillSwitch, NewKillSwitch } from "../../containment";
import { toolgateError } from "../../errors";
import type { Principal } from "../../model";
import { isObject } from "../../shared/guards";
import { validator } from "../../shared/validate";
import type {
  BudgetUse,
  ConsoleBackend,
  ConsoleDeployment,
  Inbox,
  NewSwitchInput,
  RequestDetail,
  RolloutStage,
  TimelineEvent,
} from "../backend";
import { detailOf, listedFor } from "./views";

/** What the console calls of FleetApprovals (src/control/approvals.ts). */
export interface FleetApprovalsPort {
  /** Moves overdue pending tasks to expired (audited once). */
  expire(): Promise<number>;
  /** The approvers' view (with today's stats), or approval_not_found. */
  detail(id: string): Promise<Record<string, unknown>>;
  /** Exactly POST /v1/approvals/{id}/approve|deny: eligibility, pending, expiry, audit. */
  decide(
    id: string,
    principal: Principal,
    approve: boolean,
    comment: string | undefined,
  ): Promise<Record<string, unknown>>;
  /** This agent's access requests for this tool since `sinceMs`, and how many were approved. */
  requestStats(agentId: string, tool: string, sinceMs: number): Promise<RequestStats>;
}

/** What the console calls of FleetSwitches (src/control/switches.ts). */
export interface FleetSwitchesPort {
  create(input: NewKillSwitch, by: string): Promise<KillSwitch>;
  delete(id: string, by: string): Promise<KillSwitch>;
  list(): Promise<KillSwitch[]>;
}

/** What the console reads of the FleetStore (src/control/store/types.ts). */
export interface FleetStorePort {
  listTasks(q: {
    status?: TaskStatus | undefined;
    limit?: number | undefined;
    order?: "oldest" | "newest" | undefined;
  }): Promise<ApprovalTask[]>;
  getTask(id: string): Promise<ApprovalTask | undefined>;
  getEvaluation(evaluationId: string): Promise<EvaluationRecord | undefined>;
  taskEvents(
    id: string,
  ): Promise<Array<{ at: number; event: string; actor: string; details: Record<string, unknown> }>>;
  usage(now: number): Promise<
    Array<{
      key: string;
      budgetId: string;
      windowSeconds: number;
      spent: number;
      pending: number;
    }>
  >;
  listSidecars(): Promise<
    Array<{
      instance: string;
      agentId: string;
      lastSeen: number;
      bundleName: string | null;
      bundleRevision: string | null;
    }>
  >;
}

export interface FleetBackendOptions {
  approvals: FleetApprovalsPort;
  switches: FleetSwitchesPort;
  store: FleetStorePort;
  /** The store's health: writes wait for it as the API's do (503 fleet_store_unavailable). */
  health?: { assertUp(): Promise<void> } | undefined;
  /** config.control.admin_role. */
  adminRole: string;
  /** The display name (default "fleet"). */
  name?: string;
  /** A sidecar seen within this long counts as connected (default 60 s, as GET /v1/fleet/sidecars). */
  connectedWithinMs?: number;
  now?: () => number;
}

/** Pending requests read for an inbox (oldest first); decided ones, the newest of each status. */
const PENDING_MAX = 500;
const DECIDED_PER_STATUS = 400;
const DECIDED_SHOWN = 100;
/** Decided tasks looked at (newest first) to fill the viewer's list: a bound on reads per page. */
const DECIDED_SCANNED = 400;
const DECIDED: TaskStatus[] = ["approved", "denied", "expired", "cancelled", "failed"];

const str = (v: unknown): string | null => (typeof v === "string" ? v : null);

type Decision = { comment?: string } | unknown[] | string | number | boolean | null;

export class FleetConsoleBackend implements ConsoleBackend {
  private readonly now: () => number;
  private readonly killSwitch = validator<NewKillSwitch>("kill-switch.schema.json");
  private readonly decisionBody = validator<Decision>("approval-decision.schema.json");

  constructor(private readonly opts: FleetBackendOptions) {
    this.now = opts.now ?? Date.now;
  }

  deployment(): Promise<ConsoleDeployment> {
    return Promise.resolve({
      kind: "fleet",
      name: this.opts.name ?? "fleet",
      adminRole: this.opts.adminRole,
    });
  }

  private isAdmin(p: Principal): boolean {
    return p.roles.includes(this.opts.adminRole);
  }

  private admin(viewer: Principal, what: string): void {
    if (!this.isAdmin(viewer))
      throw toolgateError("forbidden", `${what} the ${this.opts.adminRole} role`);
  }

  /**
   * Approvers' views of tasks, in order, with today's stats (read once per
   * agent and tool; left out if they cannot be read), each evaluation read
   * once, lazily (a caller that stops early reads no more).
   */
  private async *views(
    tasks: ApprovalTask[],
  ): AsyncGenerator<Record<string, unknown>, void, undefined> {
    const evaluations = new Map<string, EvaluationRecord | undefined>();
    const stats = new Map<string, RequestStats | undefined>();
    const since = this.now() - STATS_WINDOW_MS;
    for (const t of tasks) {
      if (!evaluations.has(t.evaluationId))
        evaluations.set(t.evaluationId, await this.opts.store.getEvaluation(t.evaluationId));
      const e = evaluations.get(t.evaluationId);
      if (e === undefined) continue;
      const k = JSON.stringify([e.agentId, e.tool]);
      if (!stats.has(k))
        stats.set(
          k,
          await this.opts.approvals.requestStats(e.agentId, e.tool, since).catch(() => undefined),
        );
      yield approverView(t, e, stats.get(k));
    }
  }

  async inbox(viewer: Principal): Promise<Inbox> {
    await this.opts.approvals.expire();
    const now = this.now();
    const admin = this.isAdmin(viewer);
    const inbox: Inbox = { pending: [], readOnly: [], decided: [] };
    const pending = await this.opts.store.listTasks({ status: "pending", limit: PENDING_MAX });
    for await (const v of this.views(pending)) {
      if (!listedFor(v, viewer, admin)) continue;
      // the row in full: class, stage, customer, job, arguments (as redacted), today's stats
      const s = detailOf(v, viewer, now, undefined);
      (s.can_decide ? inbox.pending : inbox.readOnly).push(s);
    }
    // the newest of each terminal status, then newest first across them
    const decided: ApprovalTask[] = [];
    for (const status of DECIDED)
      decided.push(
        ...(await this.opts.store.listTasks({
          status,
          limit: DECIDED_PER_STATUS,
          order: "newest",
        })),
      );
    decided.sort((a, b) => (b.decidedAt ?? b.createdAt) - (a.decidedAt ?? a.createdAt));
    for await (const v of this.views(decided.slice(0, DECIDED_SCANNED))) {
      if (listedFor(v, viewer, admin)) inbox.decided.push(detailOf(v, viewer, now, undefined));
      if (inbox.decided.length >= DECIDED_SHOWN) break;
    }
    return inbox;
  }

  async request(id: string, viewer: Principal): Promise<RequestDetail> {
    await this.opts.approvals.expire();
    return detailOf(await this.opts.approvals.detail(id), viewer, this.now(), undefined);
  }

  async timeline(id: string, viewer: Principal): Promise<TimelineEvent[]> {
    void viewer; // the same visibility as `request`
    const task = await this.opts.store.getTask(id);
    if (task === undefined) throw toolgateError("approval_not_found", `no approval ${id}`);
    const e = await this.opts.store.getEvaluation(task.evaluationId);
    const out: TimelineEvent[] = [];
    if (e !== undefined) {
      out.push({
        at: iso(e.createdAt) ?? "",
        kind: "decision",
        actor: e.initiator,
        detail: `decision ${e.decisionId}: needs approval${reasonWords(e.reasons)}`,
        trace_id: null,
      });
    }
    for (const ev of await this.opts.store.taskEvents(id)) out.push(taskEvent(ev, e));
    return out.sort((a, b) => a.at.localeCompare(b.at));
  }

  async decide(
    id: string,
    viewer: Principal,
    approve: boolean,
    comment: string | null,
  ): Promise<RequestDetail> {
    // the body the API would have taken, checked by its schema
    const body = this.decisionBody(comment === null ? {} : { comment });
    const text =
      typeof body === "object" && body !== null && !Array.isArray(body) ? body.comment : undefined;
    await this.opts.health?.assertUp();
    // the decided view as the API answers it (a later read failing must not hide a decision made)
    const decided = await this.opts.approvals.decide(id, viewer, approve, text);
    return detailOf(decided, viewer, this.now(), undefined);
  }

  async listSwitches(viewer: Principal): Promise<KillSwitch[]> {
    this.admin(viewer, "kill switches need");
    return this.opts.switches.list();
  }

  async setSwitch(input: NewSwitchInput, viewer: Principal): Promise<KillSwitch> {
    this.admin(viewer, "kill switches need");
    const body = this.killSwitch({
      scope: { ...input.scope },
      reason: input.reason,
      expires_at: input.expires_at,
    });
    await this.opts.health?.assertUp();
    return this.opts.switches.create(body, viewer.id);
  }

  async liftSwitch(id: string, viewer: Principal): Promise<KillSwitch> {
    this.admin(viewer, "kill switches need");
    await this.opts.health?.assertUp();
    return this.opts.switches.delete(id, viewer.id);
  }

  /**
   * Each budget's keys and their use (spent + pending) in the window, as
   * GET /v1/budgets reads them. The maximum lives in the sidecars' bundle,
   * not in the fleet's store: `limit` is null.
   */
  async budgets(viewer: Principal): Promise<BudgetUse[]> {
    this.admin(viewer, "budgets need");
    const byBudget = new Map<string, BudgetUse>();
    for (const u of await this.opts.store.usage(this.now())) {
      let b = byBudget.get(u.budgetId);
      if (b === undefined) {
        b = {
          name: u.budgetId,
          tools: [],
          per: "",
          limit: null,
          window_seconds: u.windowSeconds,
          keys: [],
        };
        byBudget.set(u.budgetId, b);
      }
      b.keys.push({ key: u.key, used: u.spent + u.pending });
    }
    return [...byBudget.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Per-tool rollout stages are set in the bundle and not reported to the
   * control service: what it knows is which bundle revision each sidecar
   * runs. One row per agent, bundle and revision, saying so.
   */
  async rollout(viewer: Principal): Promise<RolloutStage[]> {
    this.admin(viewer, "rollout stages need");
    const now = this.now();
    const within = this.opts.connectedWithinMs ?? 60_000;
    const rows = new Map<
      string,
      { agent: string; bundle: string; revision: string; all: number; connected: number }
    >();
    for (const s of await this.opts.store.listSidecars()) {
      const bundle = s.bundleName ?? "(no bundle reported)";
      const revision =
        s.bundleRevision === null || s.bundleRevision === "" ? "?" : s.bundleRevision;
      const k = JSON.stringify([s.agentId, bundle, revision]);
      const r = rows.get(k) ?? { agent: s.agentId, bundle, revision, all: 0, connected: 0 };
      r.all += 1;
      if (now - s.lastSeen <= within) r.connected += 1;
      rows.set(k, r);
    }
    return [...rows.values()]
      .sort((a, b) => a.agent.localeCompare(b.agent) || a.bundle.localeCompare(b.bundle))
      .map((r) => ({
        tool: r.agent,
        tool_class: `bundle ${r.bundle}`,
        stage: `revision ${r.revision} on ${r.connected} connected sidecar${r.connected === 1 ? "" : "s"} (${r.all} seen); per-tool stages are set in the bundle and not reported to the control service`,
      }));
  }
}

function reasonWords(v: unknown): string {
  if (!Array.isArray(v)) return "";
  const words = v
    .map((r) => (isObject(r) ? str(r.message) || str(r.code) : str(r)))
    .filter((s): s is string => s !== null && s !== "");
  return words.length === 0 ? "" : ` — ${words.slice(0, 3).join("; ")}`;
}

/** One row of approval_task_events as a timeline step. */
function taskEvent(
  ev: { at: number; event: string; actor: string; details: Record<string, unknown> },
  e: EvaluationRecord | undefined,
): TimelineEvent {
  const at = iso(ev.at) ?? "";
  const d = ev.details;
  const comment = str(d.comment);
  const c = comment !== null && comment !== "" ? `: “${comment}”` : "";
  const base = { at, trace_id: null };
  switch (ev.event) {
    case "requested": {
      const who = str(d.requester) ?? e?.initiator ?? null;
      return {
        ...base,
        kind: "access_request",
        actor: who,
        detail: `access request submitted through a sidecar of agent ${ev.actor}`,
      };
    }
    case "approved":
      return { ...base, kind: "approval", actor: ev.actor, detail: `approved${c}` };
    case "denied":
      return { ...base, kind: "denial", actor: ev.actor, detail: `denied${c}` };
    case "used": {
      const decision = str(d.decision_id);
      return {
        ...base,
        kind: "use",
        actor: ev.actor,
        detail: `approval used by a re-ask${decision !== null ? ` (decision ${decision})` : ""}`,
      };
    }
    case "expired":
      return { ...base, kind: "expired", actor: "toolgate", detail: "expired before a decision" };
    case "cancelled":
      return { ...base, kind: "cancelled", actor: ev.actor, detail: "cancelled by the agent" };
    case "revoked":
      return { ...base, kind: "revoked", actor: ev.actor, detail: "approval revoked" };
    default:
      return { ...base, kind: "other", actor: ev.actor, detail: ev.event };
  }
}
