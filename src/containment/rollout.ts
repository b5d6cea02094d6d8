/**
 * The promotion report (`toolgate report rollout`): per tool, the evidence
 * the audit trail holds about how the tool behaves at its rollout stage, and
 * a recommendation (stay, promote, demote) against thresholds from the
 * bundle's data (`data.toolgate.deployment.rollout.thresholds`) or defaults.
 * See docs/containment.md.
 */
import { expandTrailPaths, readTrail, verifyTrail, type VerifyResult } from "../trail";
import { toolgateError } from "../errors";
import { isObject } from "../shared/guards";

export const STAGES = ["disabled", "shadow", "draft_only", "supervised", "autonomous"] as const;

export interface Thresholds {
  /** Fewer decisions (at the tool's stage) than this: stay, not enough evidence. */
  min_decisions: number;
  /** Fewer decided approvals than this: a supervised tool stays. */
  min_approvals: number;
  /** shadow → draft_only: share of shadow decisions that would have been allowed. */
  promote_shadow_allow_rate: number;
  /** draft_only → supervised: at most this share of denies. */
  promote_max_deny_rate: number;
  /** supervised → autonomous: share of decided approvals that were granted. */
  promote_approval_rate: number;
  /** supervised → autonomous: share of granted approvals used with unchanged arguments. */
  promote_unchanged_rate: number;
  /** Any promotion: at most this share of action errors among reported actions. */
  promote_max_error_rate: number;
  /** Demote when action errors exceed this share of reported actions. */
  demote_error_rate: number;
  /** Demote a supervised tool when approvers deny more than this share. */
  demote_approval_deny_rate: number;
}

export const DEFAULT_THRESHOLDS: Thresholds = {
  min_decisions: 20,
  min_approvals: 10,
  promote_shadow_allow_rate: 0.9,
  promote_max_deny_rate: 0.1,
  promote_approval_rate: 0.95,
  promote_unchanged_rate: 0.95,
  promote_max_error_rate: 0.02,
  demote_error_rate: 0.05,
  demote_approval_deny_rate: 0.2,
};

export interface ToolReport {
  tool: string;
  stage: string | null;
  decisions: { allow: number; deny: number; needs_approval: number };
  shadow: { decisions: number; would_allow: number; would_need_approval: number };
  approvals: {
    requested: number;
    granted: number;
    denied: number;
    expired: number;
    granted_unchanged: number;
    median_seconds_to_approve: number | null;
  };
  actions: { ok: number; error: number };
  recommendation: "stay" | "promote" | "demote";
  next_stage: string | null;
  evidence: string[];
}

export interface RolloutReport {
  trail: { files: number; records: number; ok: boolean; problem: string | null };
  since: string | null;
  thresholds: { source: string; values: Thresholds };
  tools: ToolReport[];
}

/** Thresholds from bundle data (`toolgate.deployment.rollout.thresholds`), over the defaults. */
export function thresholdsFrom(data: unknown): Thresholds {
  const t: Thresholds = { ...DEFAULT_THRESHOLDS };
  const tg = isObject(data) ? data.toolgate : undefined;
  const dep = isObject(tg) ? tg.deployment : undefined;
  const ro = isObject(dep) ? dep.rollout : undefined;
  const th = isObject(ro) ? ro.thresholds : undefined;
  if (th === undefined) return t;
  if (!isObject(th))
    throw toolgateError("usage", "data.toolgate.deployment.rollout.thresholds must be an object");
  for (const [k, v] of Object.entries(th)) {
    if (!(k in t)) throw toolgateError("usage", `rollout threshold ${k} is unknown`);
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0)
      throw toolgateError("usage", `rollout threshold ${k} must be a number ≥ 0`);
    t[k as keyof Thresholds] = v;
  }
  return t;
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

const rate = (n: number, d: number): number => (d === 0 ? 0 : n / d);
const pct = (x: number): string => `${(Math.round(x * 1000) / 10).toString()} %`;

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/** Builds the report from trail files (verified first) and thresholds. */
export function rolloutReport(
  paths: string[],
  opts: { since?: string; thresholds?: Thresholds; thresholdsSource?: string } = {},
): RolloutReport {
  const files = expandTrailPaths(paths);
  let verify: VerifyResult;
  try {
    verify = verifyTrail(files, { allowPartialStart: true });
  } catch (e) {
    throw toolgateError("audit_trail_unreadable", (e as Error).message);
  }
  const sinceMs = opts.since === undefined ? undefined : Date.parse(opts.since);
  if (sinceMs !== undefined && !Number.isFinite(sinceMs))
    throw toolgateError("usage", `--since must be an ISO date-time, got ${opts.since}`);
  const th = opts.thresholds ?? DEFAULT_THRESHOLDS;

  const tools = new Map<string, ToolReport>();
  const toolOf = (name: string): ToolReport => {
    let t = tools.get(name);
    if (t === undefined) {
      t = {
        tool: name,
        stage: null,
        decisions: { allow: 0, deny: 0, needs_approval: 0 },
        shadow: { decisions: 0, would_allow: 0, would_need_approval: 0 },
        approvals: {
          requested: 0,
          granted: 0,
          denied: 0,
          expired: 0,
          granted_unchanged: 0,
          median_seconds_to_approve: null,
        },
        actions: { ok: 0, error: 0 },
        recommendation: "stay",
        next_stage: null,
        evidence: [],
      };
      tools.set(name, t);
    }
    return t;
  };
  const argsByEvaluation = new Map<string, string>();
  const argsByDecision = new Map<string, string>();
  const requestedAt = new Map<string, number>();
  const waits = new Map<string, number[]>();
  const approved = new Map<string, { tool: string; evaluation: string }>();

  for (const line of readTrail(files)) {
    // every readable record, also past a break (the verification result names it)
    const l = line.entry();
    if (l === undefined) continue;
    const time = l.time as string; // unchecked: Date.parse reads anything else as a string
    if (sinceMs !== undefined && !(Date.parse(time) >= sinceMs)) continue;
    const r = l.record;
    if (l.kind === "decision") {
      const tool = isObject(r.tool) ? str(r.tool.name) : undefined;
      if (tool === undefined) continue;
      const t = toolOf(tool);
      const stage = isObject(r.tool) ? str(r.tool.stage) : undefined;
      if (stage !== undefined) t.stage = stage;
      const outcome = str(r.outcome);
      if (outcome === "allow" || outcome === "deny" || outcome === "needs_approval")
        t.decisions[outcome]++;
      if (isObject(r.shadow)) {
        t.shadow.decisions++;
        if (r.shadow.outcome === "allow") t.shadow.would_allow++;
        if (r.shadow.outcome === "needs_approval") t.shadow.would_need_approval++;
      }
      const args = JSON.stringify(r.arguments ?? null);
      const id = str(r.decision_id);
      if (id !== undefined) argsByDecision.set(id, args);
      const ev = isObject(r.access_request) ? str(r.access_request.evaluation_id) : undefined;
      if (ev !== undefined) argsByEvaluation.set(ev, args);
    } else if (l.kind === "approval") {
      const tool = str(r.tool);
      const id = str(r.approval_id);
      if (tool === undefined || id === undefined) continue;
      const t = toolOf(tool);
      const at = Date.parse(time);
      switch (r.event) {
        case "requested":
          t.approvals.requested++;
          requestedAt.set(id, at);
          break;
        case "approved": {
          t.approvals.granted++;
          const since = requestedAt.get(id);
          if (since !== undefined) {
            const w = waits.get(tool) ?? [];
            w.push((at - since) / 1000);
            waits.set(tool, w);
          }
          approved.set(id, { tool, evaluation: str(r.evaluation_id) ?? "" });
          break;
        }
        case "denied":
          t.approvals.denied++;
          break;
        case "expired":
          t.approvals.expired++;
          break;
        case "used": {
          // the approval was used by an allow: were the arguments the ones approved?
          const a = approved.get(id);
          const used = str(r.decision_id);
          if (a === undefined || used === undefined) break;
          const before = argsByEvaluation.get(a.evaluation);
          if (before !== undefined && before === argsByDecision.get(used))
            t.approvals.granted_unchanged++;
          approved.delete(id);
          break;
        }
        default:
          break;
      }
    } else if (l.kind === "action") {
      const tool = str(r.tool);
      if (tool === undefined) continue;
      const t = toolOf(tool);
      if (r.status === "error") t.actions.error++;
      else if (r.status === "ok") t.actions.ok++;
    }
  }
  for (const t of tools.values()) {
    t.approvals.median_seconds_to_approve = median(waits.get(t.tool) ?? []);
    recommend(t, th);
  }
  return {
    trail: {
      files: files.length,
      records: verify.records,
      ok: verify.ok,
      problem: verify.firstBreak
        ? `${verify.firstBreak.file}:${verify.firstBreak.line}: ${verify.firstBreak.reason}: ${verify.firstBreak.message}`
        : null,
    },
    since: opts.since ?? null,
    thresholds: { source: opts.thresholdsSource ?? "defaults", values: th },
    tools: [...tools.values()].sort((a, b) => a.tool.localeCompare(b.tool)),
  };
}

function nextStage(stage: string | null, step: 1 | -1): string | null {
  const i = STAGES.indexOf(stage as (typeof STAGES)[number]);
  if (i < 0) return null;
  return STAGES[i + step] ?? null;
}

/** The recommendation for one tool, with the numbers it rests on. */
function recommend(t: ToolReport, th: Thresholds): void {
  const ev = t.evidence;
  const total = t.decisions.allow + t.decisions.deny + t.decisions.needs_approval;
  const actions = t.actions.ok + t.actions.error;
  const errRate = rate(t.actions.error, actions);
  const decided = t.approvals.granted + t.approvals.denied;
  const set = (r: ToolReport["recommendation"], step?: 1 | -1): void => {
    t.recommendation = r;
    t.next_stage = r === "stay" || step === undefined ? null : nextStage(t.stage, step);
    if (t.next_stage === null && r !== "stay") t.recommendation = "stay";
  };
  ev.push(`${total} decisions at stage ${t.stage ?? "unknown"}`);
  if (actions > 0)
    ev.push(
      `action errors after allow: ${t.actions.error} of ${actions} (${pct(errRate)}; demote above ${pct(th.demote_error_rate)})`,
    );
  if (actions > 0 && errRate > th.demote_error_rate) {
    set("demote", -1);
    return;
  }
  if (t.stage === "supervised" && decided > 0) {
    const denyRate = rate(t.approvals.denied, decided);
    ev.push(
      `approvers denied ${t.approvals.denied} of ${decided} (${pct(denyRate)}; demote above ${pct(th.demote_approval_deny_rate)})`,
    );
    if (denyRate > th.demote_approval_deny_rate) {
      set("demote", -1);
      return;
    }
  }
  if (total < th.min_decisions) {
    ev.push(`not enough evidence: fewer than ${th.min_decisions} decisions`);
    set("stay");
    return;
  }
  const errorsOk = errRate <= th.promote_max_error_rate;
  switch (t.stage) {
    case "shadow": {
      const r = rate(t.shadow.would_allow, t.shadow.decisions);
      ev.push(
        `shadow decisions that would have been allowed: ${t.shadow.would_allow} of ${t.shadow.decisions} (${pct(r)}; promote at ${pct(th.promote_shadow_allow_rate)})`,
      );
      set(
        t.shadow.decisions >= th.min_decisions && r >= th.promote_shadow_allow_rate
          ? "promote"
          : "stay",
        1,
      );
      return;
    }
    case "draft_only": {
      const r = rate(t.decisions.deny, total);
      ev.push(
        `denied ${t.decisions.deny} of ${total} (${pct(r)}; promote at most ${pct(th.promote_max_deny_rate)})`,
      );
      set(r <= th.promote_max_deny_rate && errorsOk ? "promote" : "stay", 1);
      return;
    }
    case "supervised": {
      const g = rate(t.approvals.granted, decided);
      const u = rate(t.approvals.granted_unchanged, t.approvals.granted);
      ev.push(
        `approvals granted ${t.approvals.granted} of ${decided} decided (${pct(g)}; promote at ${pct(th.promote_approval_rate)}, with at least ${th.min_approvals})`,
      );
      ev.push(
        `granted approvals used with unchanged arguments: ${t.approvals.granted_unchanged} of ${t.approvals.granted} (${pct(u)}; promote at ${pct(th.promote_unchanged_rate)})`,
      );
      if (t.approvals.expired > 0) ev.push(`${t.approvals.expired} approval requests expired`);
      const ok =
        decided >= th.min_approvals &&
        g >= th.promote_approval_rate &&
        u >= th.promote_unchanged_rate &&
        errorsOk;
      set(ok ? "promote" : "stay", 1);
      return;
    }
    default:
      set("stay");
  }
}

function fmtSeconds(s: number | null): string {
  if (s === null) return "-";
  return s < 60 ? `${s.toFixed(1)}s` : `${(s / 60).toFixed(1)}m`;
}

/** The terminal table, then the evidence per tool. */
export function renderRollout(r: RolloutReport): string {
  const out: string[] = [];
  out.push(
    r.trail.ok
      ? `audit trail: ${r.trail.records} records in ${r.trail.files} file(s), hash chain intact`
      : `WARNING: the audit trail's hash chain is BROKEN (${r.trail.problem}); the figures below cover records that may have been altered`,
  );
  if (r.since !== null) out.push(`since: ${r.since}`);
  out.push(`thresholds: ${r.thresholds.source}`);
  out.push("");
  const head = [
    "tool",
    "stage",
    "allow",
    "deny",
    "needs_appr",
    "shadow_allow",
    "appr_req",
    "granted",
    "denied",
    "expired",
    "unchanged",
    "act_err",
    "median_appr",
    "recommendation",
  ];
  const rows = r.tools.map((t) => [
    t.tool,
    t.stage ?? "-",
    String(t.decisions.allow),
    String(t.decisions.deny),
    String(t.decisions.needs_approval),
    `${t.shadow.would_allow}/${t.shadow.decisions}`,
    String(t.approvals.requested),
    String(t.approvals.granted),
    String(t.approvals.denied),
    String(t.approvals.expired),
    String(t.approvals.granted_unchanged),
    `${t.actions.error}/${t.actions.ok + t.actions.error}`,
    fmtSeconds(t.approvals.median_seconds_to_approve),
    t.next_stage === null ? t.recommendation : `${t.recommendation} → ${t.next_stage}`,
  ]);
  const widths = head.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)),
  );
  const fmt = (cells: string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] as number))
      .join("  ")
      .trimEnd();
  out.push(fmt(head));
  out.push(fmt(widths.map((w) => "-".repeat(w))));
  for (const row of rows) out.push(fmt(row));
  out.push("");
  for (const t of r.tools) {
    out.push(`${t.tool}: ${t.recommendation}${t.next_stage ? ` → ${t.next_stage}` : ""}`);
    for (const e of t.evidence) out.push(`  - ${e}`);
  }
  return out.join("\n") + "\n";
}
