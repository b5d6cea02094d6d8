/**
 * Session state for the policy (#19): a bounded summary of what a session has
 * already done — the tools it called with their class and outcome, the data
 * labels its allowed calls touched, counts and sums within windows — kept by
 * toolgate from its own decisions and action reports, never taken from the
 * caller. The policy reads it as `input.verified.session` (docs/sessions.md).
 *
 * Bounded: at most `maxSessions` sessions (least recently active forgotten
 * first), each forgotten after `retentionSeconds` idle, each keeping at most
 * `maxEvents` recent decisions for the windows. Totals per tool and per label
 * are O(registered tools + labels) and survive the event cap: a label touched
 * 10,001 decisions ago still counts.
 */
import type { SessionPort } from "../decision/ports";
import type { Decision, DecisionRequest } from "../model";
import { toolgateError } from "../errors";
import { isObject } from "../shared/guards";
import { OrderedMap } from "../shared/ordered-map";

/** The windows counts and sums are kept for, in seconds (`in_window["3600"]`). */
export const SESSION_WINDOWS_SECONDS = [60, 3600, 86_400] as const;
/** Numeric arguments summed per tool at most (the first seen). */
const MAX_SUMMED_ARGUMENTS = 8;
/** Decisions remembered for their action report (decision id → session) at most. */
const MAX_PENDING_REPORTS = 10_000;
/** Labels one tool may declare it reads, at most (a bundle declaring more is refused). */
export const MAX_TOOL_LABELS = 32;
/** What a data label may look like (a bundle with another is refused). */
export const LABEL_PATTERN = /^[A-Za-z0-9_.:/-]{1,64}$/;

export interface SessionOptions {
  maxEvents: number;
  maxSessions: number;
  /** Events kept over all sessions together; beyond, the least recently active sessions go. */
  maxTotalEvents?: number;
  retentionSeconds: number;
  /** Told when a session is forgotten to make room (not when it retires idle). */
  onEvict?: (sessionId: string) => void;
}

/**
 * Sessions forgotten to make room must not come back clean: an agent that
 * opens `max_sessions` new sessions would otherwise evict the one that read
 * sensitive data, then egress from it. Each (label, session) pair of an
 * evicted session goes into one Bloom filter (2^23 bits = 1 MiB, 3 hashes);
 * a session found there with a label starts with that label marked touched
 * (`forgotten: true`). A false positive (about 0.004 % after 100,000 pairs)
 * fails closed: egress then needs an approval.
 */
class EvictedLabels {
  private static readonly BITS = 1 << 23;
  private filter: Uint8Array | undefined;
  private readonly labels = new Set<string>();

  private static hashes(label: string, id: string): [number, number, number] {
    // FNV-1a, three seeds: collisions only ever add false positives (fail closed)
    const key = `${label}\u0000${id}`;
    const h = [0x811c9dc5, 0x01000193, 0x9e3779b9].map((seed) => {
      let x = seed >>> 0;
      for (let i = 0; i < key.length; i++) {
        x ^= key.charCodeAt(i);
        x = Math.imul(x, 0x01000193) >>> 0;
      }
      return x % EvictedLabels.BITS;
    });
    return h as [number, number, number];
  }

  add(id: string, labels: Iterable<string>): void {
    const f = (this.filter ??= new Uint8Array(EvictedLabels.BITS / 8));
    for (const label of labels) {
      // every name is kept: labels come from checked bundles (≤ 64 characters each), and a
      // catch-all name would be one the policy does not know as sensitive (fail open)
      this.labels.add(label);
      for (const b of EvictedLabels.hashes(label, id))
        f[b >>> 3] = (f[b >>> 3] as number) | (1 << (b & 7));
    }
  }

  /** The labels an evicted session of this id may have touched. */
  of(id: string): string[] {
    const f = this.filter;
    if (f === undefined) return [];
    const out: string[] = [];
    for (const label of this.labels) {
      const hs = EvictedLabels.hashes(label, id);
      if (hs.every((b) => ((f[b >>> 3] as number) & (1 << (b & 7))) !== 0)) out.push(label);
    }
    return out;
  }
}

/** What the registry says of a tool: `data.toolgate.deployment.tools[name]`. */
export interface ToolFacts {
  class: string | null;
  reads: string[];
  egress: boolean;
}

/** The tool registry of a bundle, read once per engine. */
export interface RegistrySource {
  readonly data: unknown;
}

const registries = new WeakMap<RegistrySource, Map<string, ToolFacts>>();

/**
 * Checks a bundle's session facts: every `reads` is a list of at most 32
 * labels matching LABEL_PATTERN, every `egress` a boolean. Throws
 * `bundle_data_invalid` naming the tool: a label toolgate would have to drop
 * would silently stop gating (fail open), so the bundle is refused instead.
 */
export function checkToolRegistry(data: unknown): void {
  const d = isObject(data) && isObject(data.toolgate) ? data.toolgate.deployment : undefined;
  const tools = isObject(d) && isObject(d.tools) ? d.tools : {};
  for (const [name, t] of Object.entries(tools)) {
    if (!isObject(t)) continue;
    const bad = (why: string) =>
      toolgateError(
        "bundle_data_invalid",
        `data.toolgate.deployment.tools["${name.slice(0, 64)}"]: ${why}`,
      );
    if (Object.hasOwn(t, "reads")) {
      const r = t.reads;
      if (!Array.isArray(r) || r.length > MAX_TOOL_LABELS)
        throw bad(`reads must be a list of at most ${MAX_TOOL_LABELS} labels`);
      for (const l of r)
        if (typeof l !== "string" || !LABEL_PATTERN.test(l))
          throw bad(
            `reads: ${JSON.stringify(l).slice(0, 80)} is not a label (${LABEL_PATTERN.source})`,
          );
    }
    if (Object.hasOwn(t, "egress") && typeof t.egress !== "boolean")
      throw bad("egress must be true or false");
  }
}

/** The tools a bundle registers, with their class, the labels they read and whether they send data out. */
export function toolRegistry(engine: RegistrySource): Map<string, ToolFacts> {
  let reg = registries.get(engine);
  if (reg !== undefined) return reg;
  reg = new Map();
  const d = engine.data;
  const tools = isObject(d) && isObject(d.toolgate) ? d.toolgate.deployment : undefined;
  const entries = isObject(tools) && isObject(tools.tools) ? tools.tools : {};
  for (const [name, t] of Object.entries(entries)) {
    if (!isObject(t) || name.length === 0 || name.length > 256) continue;
    // checkToolRegistry refused the bundle otherwise; the filter is a second line
    const reads = Array.isArray(t.reads)
      ? [
          ...new Set(
            t.reads.filter((l): l is string => typeof l === "string" && LABEL_PATTERN.test(l)),
          ),
        ]
      : [];
    reg.set(name, {
      class: typeof t.class === "string" ? t.class : null,
      reads,
      egress: t.egress === true,
    });
  }
  registries.set(engine, reg);
  return reg;
}

type Outcome = Decision["outcome"];

interface ToolTotals {
  class: string | null;
  allowed: number;
  denied: number;
  needs_approval: number;
  reported_ok: number;
  reported_error: number;
  last_ns: number;
  last_outcome: Outcome;
  last_decision_id: string;
}

/** A tool's totals before its first counted call (also the fleet's, src/fleet/sessions.ts). */
export function toolTotals(
  cls: string | null,
  lastNs: number,
  lastOutcome: Outcome,
  lastDecisionId: string,
): ToolTotals {
  return {
    class: cls,
    allowed: 0,
    denied: 0,
    needs_approval: 0,
    reported_ok: 0,
    reported_error: 0,
    last_ns: lastNs,
    last_outcome: lastOutcome,
    last_decision_id: lastDecisionId,
  };
}

interface LabelTotals {
  /** Set when the session was forgotten to make room and came back: the label may have been read. */
  forgotten?: true;
  count: number;
  first_ns: number;
  last_ns: number;
  tools: string[];
  first_decision_id: string;
  last_decision_id: string;
}

/**
 * One window's running totals: counts per tool and sums per tool and
 * argument of the events from number `tail` to the newest. An event enters
 * every window when recorded and leaves each as it ages out (or is dropped
 * from the ring), so a view costs O(tools × windows), never O(events).
 */
interface WindowTotals {
  tail: number;
  count: Map<string, number>;
  sums: Map<string, Map<string, number>>;
}

function enter(w: WindowTotals, e: WindowEvent): void {
  w.count.set(e.tool, (w.count.get(e.tool) ?? 0) + 1);
  if (e.sums === undefined) return;
  let per = w.sums.get(e.tool);
  if (per === undefined) w.sums.set(e.tool, (per = new Map<string, number>()));
  for (const [a, v] of e.sums) per.set(a, (per.get(a) ?? 0) + v);
}

function leave(w: WindowTotals, e: WindowEvent): void {
  const n = (w.count.get(e.tool) ?? 1) - 1;
  if (n > 0) w.count.set(e.tool, n);
  else {
    // the last of this tool in the window: exact zeros, no floating-point residue
    w.count.delete(e.tool);
    w.sums.delete(e.tool);
    return;
  }
  const per = w.sums.get(e.tool);
  if (e.sums === undefined || per === undefined) return;
  for (const [a, v] of e.sums) per.set(a, (per.get(a) ?? 0) - v);
}

/** One allowed decision in the window ring: when, which tool, its numeric arguments. */
interface WindowEvent {
  atMs: number;
  tool: string;
  sums: Array<[string, number]> | undefined;
}

class Session {
  readonly id: string;
  startedMs: number;
  lastMs: number;
  decisions = 0;
  /**
   * Allowed decisions, at most maxEvents: event number `seq` (0, 1, …) sits
   * at `ring[seq % maxEvents]`; `seq` is the next number. Their times never
   * go backwards (a clock step back is clamped).
   */
  ring: WindowEvent[] = [];
  seq = 0;
  lastAtMs = -Infinity;
  dropped = 0;
  /** Per window: running counts and sums of the events inside it, from event `tail` on. */
  windows: WindowTotals[] = SESSION_WINDOWS_SECONDS.map(() => ({
    tail: 0,
    count: new Map<string, number>(),
    sums: new Map<string, Map<string, number>>(),
  }));
  tools = new Map<string, ToolTotals>();
  labels = new Map<string, LabelTotals>();
  egress = { count: 0, last_ns: 0 };
  /** Argument names summed per tool (the first MAX_SUMMED_ARGUMENTS numeric ones seen). */
  summed = new Map<string, string[]>();

  constructor(id: string, nowMs: number) {
    this.id = id;
    this.startedMs = nowMs;
    this.lastMs = nowMs;
  }
}

/** A label an evicted session may have touched (see EvictedLabels). */
function forgottenLabel(nowMs: number): LabelTotals {
  return {
    forgotten: true,
    count: 1,
    first_ns: nowMs * 1e6,
    last_ns: nowMs * 1e6,
    tools: [],
    first_decision_id: "",
    last_decision_id: "",
  };
}

/** The decision a later action report names: its session and tool. */
interface Pending {
  session: string;
  tool: string;
}

/** `input.verified.session`: what the policy sees (docs/sessions.md). */
export type SessionView = {
  id: string;
  started_ns: number;
  decisions: number;
  /** Allowed decisions no longer in the windows (beyond session.max_events). */
  dropped: number;
  tools: Record<
    string,
    ToolTotals & { in_window: Record<string, number>; sums: Record<string, Record<string, number>> }
  >;
  labels: Record<string, LabelTotals>;
  egress: { count: number; last_ns: number };
};

export class SessionStore implements SessionPort {
  private readonly opts: SessionOptions;
  /** Least recently active first. */
  private readonly sessions = new OrderedMap<string, Session>();
  private readonly pending = new OrderedMap<string, Pending>();
  private readonly evicted = new EvictedLabels();
  /** Events kept in every session's ring together. */
  private totalEvents = 0;

  constructor(opts: SessionOptions) {
    this.opts = opts;
  }

  get enabled(): boolean {
    return this.opts.maxEvents > 0;
  }

  size(): number {
    return this.sessions.size;
  }

  private live(id: string, nowMs: number): Session | undefined {
    const s = this.sessions.get(id);
    if (s === undefined) return undefined;
    if (s.lastMs + this.opts.retentionSeconds * 1000 <= nowMs) {
      this.forget(id, s, false);
      return undefined;
    }
    return s;
  }

  /** The summary the policy sees for this session now (a fresh one when it has no history). */
  view(id: string, nowMs: number): SessionView {
    const s = this.live(id, nowMs);
    const out: SessionView = {
      // the key is "<subject digest>:<id>" (the Decider's); the policy sees the id
      id: id.slice(id.indexOf(":") + 1),
      started_ns: (s?.startedMs ?? nowMs) * 1e6,
      decisions: s?.decisions ?? 0,
      dropped: s?.dropped ?? 0,
      tools: Object.create(null) as SessionView["tools"],
      labels: Object.create(null) as SessionView["labels"],
      egress: { ...(s?.egress ?? { count: 0, last_ns: 0 }) },
    };
    if (s === undefined) {
      for (const label of this.evicted.of(id)) out.labels[label] = forgottenLabel(nowMs);
      return out;
    }
    for (const [name, t] of s.tools) {
      const in_window = Object.create(null) as Record<string, number>;
      const sums = Object.create(null) as Record<string, Record<string, number>>;
      for (const w of SESSION_WINDOWS_SECONDS) in_window[w] = 0;
      for (const a of s.summed.get(name) ?? []) {
        const per = Object.create(null) as Record<string, number>;
        for (const w of SESSION_WINDOWS_SECONDS) per[w] = 0;
        sums[a] = per;
      }
      out.tools[name] = { ...t, in_window, sums };
    }
    for (const [name, l] of s.labels) out.labels[name] = { ...l, tools: [...l.tools] };
    this.expire(s, nowMs);
    SESSION_WINDOWS_SECONDS.forEach((seconds, i) => {
      const w = s.windows[i] as WindowTotals;
      for (const [tool, n] of w.count) {
        const t = out.tools[tool];
        if (t !== undefined) t.in_window[seconds] = n;
      }
      for (const [tool, per] of w.sums) {
        const t = out.tools[tool];
        if (t === undefined) continue;
        for (const [a, v] of per) {
          const sums = t.sums[a];
          if (sums !== undefined) sums[seconds] = v;
        }
      }
    });
    return out;
  }

  /**
   * Records one decision of the session. Only tools the registry knows are
   * recorded by name (an unknown name cannot grow the summary); an allow
   * touches the tool's labels and counts its egress.
   */
  record(
    id: string,
    decision: Decision,
    req: DecisionRequest,
    engine: RegistrySource,
    nowMs: number,
  ): void {
    if (!this.enabled) return;
    const facts = toolRegistry(engine).get(req.action.name);
    let s = this.live(id, nowMs);
    if (s === undefined) {
      s = new Session(id, nowMs);
      for (const label of this.evicted.of(id)) s.labels.set(label, forgottenLabel(nowMs));
      this.sessions.set(id, s);
      this.sweep(nowMs);
    } else {
      // most recently active last
      this.sessions.delete(id);
      this.sessions.set(id, s);
    }
    s.lastMs = nowMs;
    s.decisions++;
    if (facts === undefined) return;
    const tool = req.action.name;
    const nowNs = nowMs * 1e6;
    let t = s.tools.get(tool);
    if (t === undefined) {
      t = toolTotals(facts.class, nowNs, decision.outcome, decision.decision_id);
      s.tools.set(tool, t);
    }
    t.last_ns = nowNs;
    t.last_outcome = decision.outcome;
    t.last_decision_id = decision.decision_id;
    if (decision.outcome === "deny") {
      t.denied++;
      return;
    }
    if (decision.outcome === "needs_approval") {
      t.needs_approval++;
      return;
    }
    t.allowed++;
    for (const label of facts.reads) {
      let l = s.labels.get(label);
      if (l === undefined) {
        l = {
          count: 0,
          first_ns: nowNs,
          last_ns: nowNs,
          tools: [],
          first_decision_id: decision.decision_id,
          last_decision_id: decision.decision_id,
        };
        s.labels.set(label, l);
      }
      l.count++;
      l.last_ns = nowNs;
      l.last_decision_id = decision.decision_id;
      if (!l.tools.includes(tool)) l.tools.push(tool);
    }
    if (facts.egress) {
      s.egress.count++;
      s.egress.last_ns = nowNs;
    }
    this.window(s, tool, req, nowMs);
    if (this.opts.maxTotalEvents !== undefined && this.totalEvents > this.opts.maxTotalEvents)
      this.trim();
    this.pending.set(decision.decision_id, { session: id, tool });
    if (this.pending.size > MAX_PENDING_REPORTS) this.pending.shift();
  }

  /** An action report for an allowed decision of a session: counted on its tool. */
  reported(decisionId: string, status: "ok" | "error", nowMs: number): void {
    const p = this.pending.get(decisionId);
    if (p === undefined) return;
    this.pending.delete(decisionId);
    const t = this.live(p.session, nowMs)?.tools.get(p.tool);
    if (t === undefined) return;
    if (status === "ok") t.reported_ok++;
    else t.reported_error++;
  }

  /** Adds an allowed decision to the session's window ring (dropping the oldest beyond maxEvents). */
  private window(s: Session, tool: string, req: DecisionRequest, nowMs: number): void {
    const args = req.action.properties?.arguments;
    let sums: Array<[string, number]> | undefined;
    if (isObject(args)) {
      let names = s.summed.get(tool);
      for (const [a, v] of Object.entries(args)) {
        if (typeof v !== "number" || !Number.isFinite(v)) continue;
        if (names === undefined) s.summed.set(tool, (names = []));
        if (!names.includes(a)) {
          if (names.length >= MAX_SUMMED_ARGUMENTS) continue;
          names.push(a);
        }
        (sums ??= []).push([a, v]);
      }
    }
    const atMs = Math.max(nowMs, s.lastAtMs);
    s.lastAtMs = atMs;
    const e: WindowEvent = { atMs, tool, sums };
    const cap = this.opts.maxEvents;
    if (s.ring.length === cap) {
      // the oldest leaves the ring, and every window it is still in
      const oldest = s.seq - cap;
      const gone = s.ring[oldest % cap] as WindowEvent;
      for (const w of s.windows) {
        if (w.tail > oldest) continue;
        leave(w, gone);
        w.tail = oldest + 1;
      }
      s.dropped++;
      s.ring[s.seq % cap] = e;
    } else {
      s.ring.push(e);
      this.totalEvents++;
    }
    s.seq++;
    for (const w of s.windows) enter(w, e);
  }

  /** Moves each window's tail past the events that have aged out of it by `nowMs`. */
  private expire(s: Session, nowMs: number): void {
    const cap = this.opts.maxEvents;
    SESSION_WINDOWS_SECONDS.forEach((seconds, i) => {
      const w = s.windows[i] as WindowTotals;
      const limit = nowMs - seconds * 1000;
      while (w.tail < s.seq) {
        const e = s.ring[w.tail % cap] as WindowEvent;
        if (e.atMs > limit) break;
        leave(w, e);
        w.tail++;
      }
    });
  }

  /** Forgets sessions idle beyond retention (oldest first), then the least active beyond the caps. */
  private sweep(nowMs: number): void {
    const idle = nowMs - this.opts.retentionSeconds * 1000;
    // oldest() rather than an iterator: iterating a Map walks the slots its deletions left
    for (let f = this.sessions.oldest(); f !== undefined && f[1].lastMs <= idle;) {
      this.forget(f[0], f[1], false);
      f = this.sessions.oldest();
    }
    this.trim();
  }

  /** Beyond max_sessions, or max_total_events kept in all, the least recently active go first. */
  private trim(): void {
    const maxTotal = Math.max(this.opts.maxTotalEvents ?? Infinity, this.opts.maxEvents);
    while (this.sessions.size > this.opts.maxSessions || this.totalEvents > maxTotal) {
      const first = this.sessions.oldest();
      if (first === undefined) break;
      this.forget(first[0], first[1], true);
    }
  }

  /** Drops a session; one evicted to make room is remembered by the labels it touched. */
  private forget(id: string, s: Session, evicted: boolean): void {
    this.sessions.delete(id);
    this.totalEvents -= s.ring.length;
    if (!evicted) return;
    if (s.labels.size > 0) this.evicted.add(id, s.labels.keys());
    this.opts.onEvict?.(id);
  }
}
