/**
 * FleetSessions: the decider's session port in fleet mode (docs/sessions.md).
 * A session may span sidecars (an agent service behind a load balancer), so
 * the data labels a session's allowed calls touched are kept fleet-wide by
 * the control service, and the two moments that matter wait for it:
 *
 * - an allowed call of a tool that reads labels is recorded there before the
 *   allow is answered (`touch`, POST /fleet/v1/sessions/touch); if it cannot
 *   be, the decider denies `session_unavailable` (fail closed);
 * - a call of an egress tool sees the session's fleet-wide labels, read fresh
 *   (`view`, POST /fleet/v1/sessions/labels), merged into this sidecar's own
 *   summary; if they cannot be read, the decision is denied
 *   `session_unavailable`.
 *
 * Everything else — per-tool counts, windows and sums — is this sidecar's
 * own SessionStore, as in single-pod mode: a call that neither reads labels
 * nor sends data out makes no network hop.
 */
import type { Decision, DecisionRequest } from "../model";
import type { SessionPort } from "../decision/ports";
import type { SessionStore } from "../session";
import {
  LABEL_PATTERN,
  toolRegistry,
  toolTotals,
  type RegistrySource,
  type SessionView,
} from "../session";
import type { FleetClient } from "./client";
import { int, obj, str } from "./wire";

interface RemoteLabel {
  label: string;
  count: number;
  first_at: number;
  last_at: number;
  tools: string[];
  first_decision_id: string;
  last_decision_id: string;
}

/** POST /fleet/v1/sessions/labels's answer, checked: at most 32 labels. */
function labelsAnswer(v: unknown): RemoteLabel[] {
  const what = "session labels";
  const o = obj(v, what);
  const list = o.labels;
  if (!Array.isArray(list) || list.length > 32) throw new Error(`${what}: labels is not a list`);
  return list.map((x) => {
    const l = obj(x, what);
    const tools = l.tools;
    if (!Array.isArray(tools) || tools.length > 16 || !tools.every((t) => typeof t === "string"))
      throw new Error(`${what}: tools is not a list of names`);
    const label = str(l, "label", what, 64);
    if (!LABEL_PATTERN.test(label)) throw new Error(`${what}: a label is malformed`);
    return {
      label,
      count: int(l, "count", what, 1),
      first_at: int(l, "first_at", what),
      last_at: int(l, "last_at", what),
      tools: tools,
      first_decision_id: str(l, "first_decision_id", what, 256),
      last_decision_id: str(l, "last_decision_id", what, 256),
    };
  });
}

interface RemoteTool {
  tool: string;
  allowed: number;
  in_window: Record<string, number>;
  sums: Record<string, Record<string, number>>;
}

const WINDOWS = ["60", "3600", "86400"] as const;

/** Three windows' numbers, checked. */
function windows(v: unknown, what: string): Record<string, number> {
  const o = obj(v, what);
  const out = Object.create(null) as Record<string, number>;
  for (const w of WINDOWS) {
    const n = o[w];
    if (typeof n !== "number" || !Number.isFinite(n)) throw new Error(`${what}: window ${w}`);
    out[w] = n;
  }
  return out;
}

/** POST /fleet/v1/sessions/summary's answer, checked: labels as above, tools ≤ 1000. */
function summaryAnswer(v: unknown): { labels: RemoteLabel[]; tools: RemoteTool[] } {
  const what = "session summary";
  const o = obj(v, what);
  const tools = o.tools;
  if (!Array.isArray(tools) || tools.length > 1000) throw new Error(`${what}: tools is not a list`);
  return {
    labels: labelsAnswer({ labels: o.labels }),
    tools: tools.map((x) => {
      const t = obj(x, what);
      const sums = obj(t.sums, what);
      const entries = Object.entries(sums);
      if (entries.length > 64) throw new Error(`${what}: too many sums`);
      const out = Object.create(null) as Record<string, Record<string, number>>;
      for (const [a, w] of entries) out[a] = windows(w, what);
      return {
        tool: str(t, "tool", what, 256),
        allowed: int(t, "allowed", what),
        in_window: windows(t.in_window, what),
        sums: out,
      };
    }),
  };
}

/** Numeric top-level arguments of a call (at most 8, the first), as session state sums them. */
function numericArguments(req: DecisionRequest): Record<string, number> {
  const out: Record<string, number> = {};
  const args = req.action.properties?.arguments;
  if (args === null || typeof args !== "object" || Array.isArray(args)) return out;
  let n = 0;
  for (const [a, v] of Object.entries(args)) {
    if (typeof v !== "number" || !Number.isFinite(v) || a.length === 0 || a.length > 256) continue;
    out[a] = v;
    if (++n === 8) break;
  }
  return out;
}

function okAnswer(v: unknown): true {
  const o = obj(v, "session touch");
  if (o.ok !== true) throw new Error("session touch: not ok");
  return true;
}

export class FleetSessions implements SessionPort {
  constructor(
    private readonly local: SessionStore,
    private readonly client: FleetClient,
    private readonly retentionSeconds: number,
    /** labels: only labels are fleet-wide; full: every allowed call too (session.fleet_scope). */
    private readonly scope: "labels" | "full" = "labels",
  ) {}

  size(): number {
    return this.local.size();
  }

  view(
    sessionId: string,
    nowMs: number,
    req: DecisionRequest,
    engine: RegistrySource,
  ): SessionView | Promise<SessionView> {
    const mine = this.local.view(sessionId, nowMs);
    if (this.scope === "full" && req.action.name !== "") {
      return this.client
        .call(
          "POST",
          "/fleet/v1/sessions/summary",
          { session_id: sessionId, retention_seconds: this.retentionSeconds },
          summaryAnswer,
          "session summary",
        )
        .then((fleet) => mergeTools(merge(mine, fleet.labels), fleet.tools, engine));
    }
    if (toolRegistry(engine).get(req.action.name)?.egress !== true) return mine;
    return this.client
      .call(
        "POST",
        "/fleet/v1/sessions/labels",
        { session_id: sessionId, retention_seconds: this.retentionSeconds },
        labelsAnswer,
        "session labels",
      )
      .then((remote) => merge(mine, remote));
  }

  touch(
    sessionId: string,
    decision: Decision,
    req: DecisionRequest,
    engine: RegistrySource,
  ): Promise<void> | undefined {
    const facts = toolRegistry(engine).get(req.action.name);
    const reads = facts?.reads ?? [];
    if (decision.outcome !== "allow") return undefined;
    if (this.scope === "full" && facts !== undefined) {
      return this.client
        .call(
          "POST",
          "/fleet/v1/sessions/record",
          {
            session_id: sessionId,
            tool: req.action.name,
            decision_id: decision.decision_id,
            labels: reads,
            sums: numericArguments(req),
          },
          okAnswer,
          "session record",
        )
        .then(() => undefined);
    }
    if (reads.length === 0) return undefined;
    return this.client
      .call(
        "POST",
        "/fleet/v1/sessions/touch",
        {
          session_id: sessionId,
          labels: reads,
          tool: req.action.name,
          decision_id: decision.decision_id,
        },
        okAnswer,
        "session touch",
      )
      .then(() => undefined);
  }

  record(
    sessionId: string,
    decision: Decision,
    req: DecisionRequest,
    engine: RegistrySource,
    nowMs: number,
  ): void {
    this.local.record(sessionId, decision, req, engine, nowMs);
  }

  reported(decisionId: string, status: "ok" | "error", nowMs: number): void {
    this.local.reported(decisionId, status, nowMs);
  }
}

/** This sidecar's summary with the fleet's labels folded in (the larger count, both tool lists). */
function merge(mine: SessionView, remote: RemoteLabel[]): SessionView {
  for (const r of remote) {
    const l = mine.labels[r.label];
    if (l === undefined) {
      mine.labels[r.label] = {
        count: r.count,
        first_ns: r.first_at * 1e6,
        last_ns: r.last_at * 1e6,
        tools: [...r.tools],
        first_decision_id: r.first_decision_id,
        last_decision_id: r.last_decision_id,
      };
      continue;
    }
    if (r.count > l.count) l.count = r.count;
    for (const t of r.tools) if (!l.tools.includes(t)) l.tools.push(t);
    if (r.first_at * 1e6 < l.first_ns) {
      l.first_ns = r.first_at * 1e6;
      l.first_decision_id = r.first_decision_id;
    }
    if (r.last_at * 1e6 > l.last_ns) {
      l.last_ns = r.last_at * 1e6;
      l.last_decision_id = r.last_decision_id;
    }
  }
  return mine;
}

/**
 * scope full: the fleet's counts, windows and sums of allowed calls replace
 * this sidecar's own (they include them: every allow was recorded there
 * first); only tools the registry knows become keys.
 */
function mergeTools(mine: SessionView, fleet: RemoteTool[], engine: RegistrySource): SessionView {
  const registry = toolRegistry(engine);
  for (const f of fleet) {
    const facts = registry.get(f.tool);
    if (facts === undefined) continue;
    let t = mine.tools[f.tool];
    if (t === undefined) {
      t = {
        ...toolTotals(facts.class, 0, "allow", ""),
        in_window: Object.create(null) as Record<string, number>,
        sums: Object.create(null) as Record<string, Record<string, number>>,
      };
      mine.tools[f.tool] = t;
    }
    t.allowed = Math.max(t.allowed, f.allowed);
    t.in_window = f.in_window;
    t.sums = f.sums;
  }
  return mine;
}
