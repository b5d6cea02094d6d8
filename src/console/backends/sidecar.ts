/**
 * The console over one sidecar: its ApprovalService (approvals.db), its
 * Containment (kill switches, budgets), its BundleManager (tools' class and
 * stage from the active bundle's data, as the rollout report reads them)
 * and its audit trail (the request's timeline). Every action goes through
 * the same methods the control port's API calls, so it enforces the same:
 * ApprovalService.decide checks eligibility, pending and expiry and audits a
 * refusal; the containment panel checks the admin role here, as the API's
 * route guard does.
 */
import { existsSync } from "node:fs";
import type { ApprovalService } from "../../approvals/service";
import type { BundleManager } from "../../bundles";
import { compileLimits, type Containment, type KillSwitch } from "../../containment";
import { toolgateError } from "../../errors";
import type { Principal } from "../../model";
import { isObject } from "../../shared/guards";
import { listTrailFiles, readTrail } from "../../trail";
import { validator } from "../../shared/validate";
import type { NewKillSwitch } from "../../containment";
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
import { deploymentData, detailOf, listedFor } from "./views";

export interface SidecarBackendOptions {
  agentId: string;
  adminRole: string;
  approvals: ApprovalService | undefined;
  containment: Containment | undefined;
  bundles: BundleManager;
  /** The audit trail's directory (audit.trail.dir), or null when the trail is off. */
  trailDir: string | null;
  /** Fleet mode: approvals and switches live on the control service at this URL. */
  fleetUrl?: string | undefined;
  now?: () => number;
}

/** Trail files read for a timeline, newest last (older ones are rotated history). */
const TIMELINE_FILES = 8;
/** Timeline events kept per request. */
const TIMELINE_MAX = 200;
const ZERO_TRACE = /^0+$/;

/** The API's own schema for a new switch (POST /v1/killswitches): the page sets nothing the API would refuse. */
let killSwitchSchema: ((v: unknown) => NewKillSwitch) | undefined;

const str = (v: unknown): string | null => (typeof v === "string" ? v : null);

export class SidecarConsoleBackend implements ConsoleBackend {
  private readonly now: () => number;

  constructor(private readonly opts: SidecarBackendOptions) {
    this.now = opts.now ?? Date.now;
  }

  deployment(): Promise<ConsoleDeployment> {
    return Promise.resolve({
      kind: "sidecar",
      name: this.opts.agentId,
      adminRole: this.opts.adminRole,
    });
  }

  private isAdmin(p: Principal): boolean {
    return p.roles.includes(this.opts.adminRole);
  }

  private need(): ApprovalService {
    if (this.opts.approvals === undefined)
      throw toolgateError(
        "not_found",
        this.opts.fleetUrl !== undefined
          ? `this sidecar is in fleet mode: approvals are decided in the control service's console, ${this.opts.fleetUrl}/console/`
          : "approvals are not enabled",
      );
    return this.opts.approvals;
  }

  private tools(): ReturnType<typeof deploymentData>["tools"] {
    return deploymentData(this.opts.bundles.active()?.data).tools;
  }

  inbox(viewer: Principal): Promise<Inbox> {
    return run(() => {
      const svc = this.need();
      const now = this.now();
      const admin = this.isAdmin(viewer);
      const tools = this.tools();
      const full = (v: Record<string, unknown>) =>
        detailOf(v, viewer, now, tools.get(str(v.tool) ?? ""), this.opts.agentId);
      const inbox: Inbox = { pending: [], readOnly: [], decided: [] };
      for (const v of svc.list(viewer, "pending", true, 500)) {
        if (!listedFor(v, viewer, admin)) continue;
        const s = full(v);
        (s.can_decide ? inbox.pending : inbox.readOnly).push(s);
      }
      // the most recent 200 (pending ones are listed above)
      for (const v of svc.list(viewer, undefined, true, 200, "newest")) {
        if (v.status === "pending" || !listedFor(v, viewer, admin)) continue;
        inbox.decided.push(full(v));
      }
      const byCreated = (a: { created_at: string | null }, b: { created_at: string | null }) =>
        (a.created_at ?? "").localeCompare(b.created_at ?? "");
      inbox.pending.sort(byCreated);
      inbox.readOnly.sort(byCreated);
      inbox.decided.sort((a, b) =>
        (b.decided_at ?? b.created_at ?? "").localeCompare(a.decided_at ?? a.created_at ?? ""),
      );
      return inbox;
    });
  }

  request(id: string, viewer: Principal): Promise<RequestDetail> {
    return run(() => {
      const v = this.need().detail(id);
      const tool = str(v.tool);
      return detailOf(
        v,
        viewer,
        this.now(),
        tool === null ? undefined : this.tools().get(tool),
        this.opts.agentId,
      );
    });
  }

  timeline(id: string, viewer: Principal): Promise<TimelineEvent[]> {
    return run(() => {
      const v = this.need().detail(id); // not found → approval_not_found, as the API
      void viewer;
      const events = this.trailTimeline(id);
      // the trail is written in the background: what the task itself tells fills what it lacks yet
      const has = new Set(events.map((e) => e.kind));
      const add = (at: unknown, kind: TimelineEvent["kind"], actor: unknown, detail: string) => {
        if (typeof at === "string" && !has.has(kind))
          events.push({ at, kind, actor: str(actor), detail, trace_id: null });
      };
      add(
        v.created_at,
        "access_request",
        v.initiator,
        v.kind === "plan" ? "plan submitted" : "access request submitted",
      );
      const comment = typeof v.comment === "string" && v.comment !== "" ? `: “${v.comment}”` : "";
      if (v.status === "approved")
        add(v.decided_at, "approval", v.decided_by, `approved${comment}`);
      if (v.status === "denied") add(v.decided_at, "denial", v.decided_by, `denied${comment}`);
      if (v.status === "expired")
        add(v.expires_at, "expired", "toolgate", "expired before a decision");
      add(v.used_at, "use", v.initiator, "approval used by a re-ask");
      add(v.revoked_at, "revoked", v.revoked_by, "approval revoked");
      return events.sort((a, b) => a.at.localeCompare(b.at));
    });
  }

  /**
   * The request's story from the trail: its approval events, the decision
   * that needed the approval, re-asks presenting it, and action reports of
   * those decisions. Two passes over the newest trail files.
   */
  private trailTimeline(id: string): TimelineEvent[] {
    const dir = this.opts.trailDir;
    if (dir === null || !existsSync(dir)) return [];
    const files = listTrailFiles(dir).slice(-TIMELINE_FILES);
    const out: TimelineEvent[] = [];
    const decisions = new Set<string>();
    const trace = (r: Record<string, unknown>): string | null => {
      const t = str(r.trace_id);
      return t !== null && /^[0-9a-f]{32}$/.test(t) && !ZERO_TRACE.test(t) ? t : null;
    };
    const at = (time: unknown, r: Record<string, unknown>): string =>
      str(r.time) ?? str(time) ?? "";
    try {
      for (const line of readTrail(files)) {
        const e = line.entry();
        if (e === undefined) continue;
        const r = e.record;
        if (e.kind === "approval" && r.approval_id === id) {
          const d = str(r.decision_id);
          if (d !== null) decisions.add(d);
          const used = str(r.used_by_decision_id);
          if (used !== null) decisions.add(used);
          out.push(approvalEvent(at(e.time, {}), r));
        } else if (e.kind === "decision") {
          const ctx = isObject(r.context) ? r.context : {};
          const ap = isObject(ctx.approval) ? ctx.approval : {};
          if (ap.id === id) {
            const d = str(r.decision_id);
            if (d !== null) decisions.add(d);
            out.push({
              at: at(e.time, r),
              kind: "reask",
              actor: str(isObject(r.subject) ? r.subject.id : null),
              detail: `re-asked with the approval: ${str(r.outcome) ?? "?"}${reasonWords(r.reasons)}`,
              trace_id: trace(r),
            });
          }
        }
      }
      for (const line of readTrail(files)) {
        const e = line.entry();
        if (e === undefined) continue;
        const r = e.record;
        const d = str(r.decision_id);
        if (d === null || !decisions.has(d)) continue;
        if (e.kind === "decision") {
          const ctx = isObject(r.context) ? r.context : {};
          if (isObject(ctx.approval) && ctx.approval.id === id) continue; // a re-ask, above
          out.push({
            at: at(e.time, r),
            kind: "decision",
            actor: str(isObject(r.subject) ? r.subject.id : null),
            detail: `decision: ${str(r.outcome) ?? "?"}${reasonWords(r.reasons)}`,
            trace_id: trace(r),
          });
        } else if (e.kind === "action") {
          out.push({
            at: at(e.time, r),
            kind: "action_report",
            actor: str(r.agent_id),
            detail: `action reported: ${str(r.status) ?? str(r.outcome) ?? "?"}`,
            trace_id: trace(r),
          });
        }
        if (out.length >= TIMELINE_MAX) break;
      }
    } catch {
      // an unreadable trail: the timeline shows what was found
    }
    return out.slice(0, TIMELINE_MAX);
  }

  decide(
    id: string,
    viewer: Principal,
    approve: boolean,
    comment: string | null,
  ): Promise<RequestDetail> {
    return run(() => {
      const v = this.need().decide(id, viewer, approve, comment ?? undefined);
      const tool = str(v.tool);
      return detailOf(
        v,
        viewer,
        this.now(),
        tool === null ? undefined : this.tools().get(tool),
        this.opts.agentId,
      );
    });
  }

  private admin(viewer: Principal, what: string): Containment {
    if (!this.isAdmin(viewer))
      throw toolgateError("forbidden", `${what} the ${this.opts.adminRole} role`);
    if (this.opts.containment === undefined)
      throw toolgateError(
        "not_found",
        this.opts.fleetUrl !== undefined
          ? `this sidecar is in fleet mode: kill switches are set in the control service's console, ${this.opts.fleetUrl}/console/containment`
          : "containment is not enabled",
      );
    return this.opts.containment;
  }

  listSwitches(viewer: Principal): Promise<KillSwitch[]> {
    return run(() => this.admin(viewer, "kill switches need").listSwitches());
  }

  setSwitch(input: NewSwitchInput, viewer: Principal): Promise<KillSwitch> {
    return run(() => {
      const c = this.admin(viewer, "kill switches need");
      killSwitchSchema ??= validator<NewKillSwitch>("kill-switch.schema.json");
      const checked = killSwitchSchema({
        scope: input.scope,
        reason: input.reason,
        expires_at: input.expires_at,
      });
      return c.createSwitch(checked, viewer.id);
    });
  }

  liftSwitch(id: string, viewer: Principal): Promise<KillSwitch> {
    return run(() => this.admin(viewer, "kill switches need").deleteSwitch(id, viewer.id));
  }

  budgets(viewer: Principal): Promise<BudgetUse[]> {
    return run(() => {
      const c = this.admin(viewer, "budgets need");
      const engine = this.opts.bundles.active();
      if (engine === undefined) return [];
      let limits;
      try {
        limits = compileLimits(engine.data);
      } catch {
        return [];
      }
      return c.budgetUse(limits).map(({ budget, keys }) => ({
        name: budget.id,
        tools: [budget.tool],
        per: budget.per,
        limit: budget.maxTotal,
        window_seconds: budget.windowSeconds,
        keys,
      }));
    });
  }

  rollout(viewer: Principal): Promise<RolloutStage[]> {
    return run(() => {
      if (!this.isAdmin(viewer))
        throw toolgateError("forbidden", `rollout stages need the ${this.opts.adminRole} role`);
      return [...this.tools()]
        .map(([tool, t]) => ({ tool, stage: t.stage, tool_class: t.class }))
        .sort((a, b) => a.tool.localeCompare(b.tool));
    });
  }
}

/** Runs a synchronous call as a promise (its throw a rejection). */
function run<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
}

function reasonWords(v: unknown): string {
  if (!Array.isArray(v)) return "";
  const words = v
    .map((r) => (isObject(r) ? (str(r.message) ?? str(r.code)) : str(r)))
    .filter((s): s is string => s !== null && s !== "");
  return words.length === 0 ? "" : ` — ${words.slice(0, 3).join("; ")}`;
}

function approvalEvent(at: string, r: Record<string, unknown>): TimelineEvent {
  const event = str(r.event) ?? "other";
  const approver = str(r.approver);
  const comment = str(r.comment);
  const c = comment !== null && comment !== "" ? `: “${comment}”` : "";
  switch (event) {
    case "requested":
      return {
        at,
        kind: "access_request",
        actor: str(r.initiator),
        detail: "access request submitted",
        trace_id: null,
      };
    case "approved":
      return { at, kind: "approval", actor: approver, detail: `approved${c}`, trace_id: null };
    case "denied":
      return { at, kind: "denial", actor: approver, detail: `denied${c}`, trace_id: null };
    case "used":
      return {
        at,
        kind: "use",
        actor: str(r.initiator),
        detail: "approval used by a re-ask",
        trace_id: null,
      };
    case "expired":
      return {
        at,
        kind: "expired",
        actor: "toolgate",
        detail: "expired before a decision",
        trace_id: null,
      };
    case "cancelled":
      return {
        at,
        kind: "cancelled",
        actor: str(r.initiator),
        detail: "cancelled",
        trace_id: null,
      };
    case "revoked":
      return {
        at,
        kind: "revoked",
        actor: str(r.revoked_by),
        detail: "approval revoked",
        trace_id: null,
      };
    case "refused":
      return {
        at,
        kind: "refused",
        actor: approver,
        detail: `a decision was refused: ${str(r.why) ?? "not eligible"}`,
        trace_id: null,
      };
    default:
      return { at, kind: "other", actor: approver, detail: event, trace_id: null };
  }
}
