import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { AuditEvent, DecisionEvent, DecisionSink } from "../model";

/**
 * Prometheus metrics with prom-client, in the text exposition format (0.0.4).
 *
 * One Registry per Metrics (per toolgate, per control service): several can
 * live in one process (tests) without "already registered". prom-client's
 * default process and Node metrics (process_*, nodejs_*) are process-wide, so
 * they are collected once per process into a registry of their own and the
 * same metric objects are registered on every instance's registry.
 *
 * Counters updated per decision are tallied as plain numbers and added to
 * their prom-client counters when scraped (Tally); gauges that mirror other
 * modules' state are read when scraped.
 */

type Labels = Record<string, string>;

/** A gauge read at scrape time. */
export interface GaugeSource {
  name: string;
  help: string;
  read(): Array<{ labels?: Labels; value: number }>;
}

let processRegistry: Registry | undefined;

/** prom-client's default metrics, collected once per process (their observers are process-wide). */
function processMetrics(): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** A gauge whose samples are read from their owner at each scrape (labels as the owner gives them). */
class ScrapeGauge extends Gauge {
  constructor(
    private readonly source: GaugeSource,
    registry: Registry,
  ) {
    super({ name: source.name, help: source.help, registers: [registry] });
  }
  override async get(): ReturnType<Gauge["get"]> {
    const base = await super.get();
    return {
      ...base,
      values: this.source.read().map((s) => ({ labels: s.labels ?? {}, value: s.value })),
    };
  }
}

/** One series of a tally: its labels (built once) and its count, part of it already in the counter. */
interface Tallied {
  readonly labels: Labels;
  n: number;
  flushed: number;
}

/**
 * Counts for a counter's series on the decision path, kept as plain numbers
 * and added to the prom-client counter when it is scraped (flush(), from the
 * counter's collect). A decision costs map lookups and an add: no label
 * object, no label hash, no validation per call (prom-client's inc() builds
 * and checks a hash each time). Series are keyed by label values in nested
 * maps (no key string per call); their number is bounded by the label values
 * (tools the policy knows, reason codes, outcomes).
 */
class Tally {
  private readonly root = new Map<string, unknown>();
  private readonly series: Tallied[] = [];
  constructor(
    private readonly counter: Counter<string>,
    private readonly labelNames: readonly string[],
  ) {}

  /** The series for these label values (in labelNames order), made on first use. */
  private make(values: readonly string[]): Tallied {
    const labels: Labels = {};
    this.labelNames.forEach((name, i) => (labels[name] = values[i] ?? ""));
    const t: Tallied = { labels, n: 0, flushed: 0 };
    this.series.push(t);
    return t;
  }

  one(a: string): Tallied {
    let t = this.root.get(a) as Tallied | undefined;
    if (t === undefined) this.root.set(a, (t = this.make([a])));
    return t;
  }

  three(a: string, b: string, c: string): Tallied {
    let byA = this.root.get(a) as Map<string, Map<string, Tallied>> | undefined;
    if (byA === undefined) this.root.set(a, (byA = new Map<string, Map<string, Tallied>>()));
    let byB = byA.get(b);
    if (byB === undefined) byA.set(b, (byB = new Map<string, Tallied>()));
    let t = byB.get(c);
    if (t === undefined) byB.set(c, (t = this.make([a, b, c])));
    return t;
  }

  /** Adds what was counted since the last scrape to the counter. */
  flush(): void {
    for (const t of this.series) {
      if (t.n > t.flushed) {
        this.counter.inc(t.labels, t.n - t.flushed);
        t.flushed = t.n;
      }
    }
  }
}

export class Metrics {
  /** This instance's registry: its toolgate_* metrics and the process-wide default metrics. */
  readonly registry = new Registry();
  readonly decisions = new Counter({
    name: "toolgate_decisions_total",
    help: 'Decisions by outcome, tool (unknown tools grouped as "unknown") and first reason code.',
    labelNames: ["outcome", "tool", "reason"] as const,
    registers: [this.registry],
    collect: (): void => this.decisionTally.flush(),
  });
  readonly refusals = new Counter({
    name: "toolgate_decision_refusals_total",
    help: "Decision requests refused before evaluation, by error code (e.g. policy_unavailable, agent_mismatch).",
    labelNames: ["code"] as const,
    registers: [this.registry],
    collect: (): void => this.refusalTally.flush(),
  });
  readonly evaluationErrors = new Counter({
    name: "toolgate_evaluation_errors_total",
    help: "Decisions denied because the policy failed (evaluation_error, policy_output_invalid, unknown_obligation).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
    collect: (): void => this.evaluationErrorTally.flush(),
  });
  readonly latency = new Histogram({
    name: "toolgate_decision_duration_seconds",
    help: "Time to decide (identity, policy evaluation, approvals), excluding HTTP.",
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
    registers: [this.registry],
  });
  readonly approvals = new Counter({
    name: "toolgate_approval_events_total",
    help: "Approval events by kind (requested, approved, denied, expired, cancelled, used, refused, revoked).",
    labelNames: ["event"] as const,
    registers: [this.registry],
  });
  readonly bundleEvents = new Counter({
    name: "toolgate_bundle_events_total",
    help: "Bundle activations and rejections (result=activated|rejected, code for rejections).",
    labelNames: ["result", "code"] as const,
    registers: [this.registry],
  });
  readonly candidateDivergences = new Counter({
    name: "toolgate_candidate_divergences_total",
    help: "Decisions where the candidate policy (policy.candidate.bundle) answered a different outcome than the active one, by tool, outcome and candidate outcome.",
    labelNames: ["tool", "outcome", "candidate"] as const,
    registers: [this.registry],
  });
  readonly containmentStoreFailures = new Counter({
    name: "toolgate_containment_store_failures_total",
    help: "Writes containment.db refused (disk full, read-only, ...), by op: killswitch_create, killswitch_delete (the change applies in memory and is retried), budget_reserve (the allow is denied), budget_commit, budget_release (the reservation keeps counting).",
    labelNames: ["op"] as const,
    registers: [this.registry],
  });
  readonly sessionsEvicted = new Counter({
    name: "toolgate_sessions_evicted_total",
    help: "Sessions forgotten to make room (session.max_sessions) before they went idle: their next decision starts a fresh history.",
    registers: [this.registry],
  });
  readonly actionAnomalies = new Counter({
    name: "toolgate_action_anomalies_total",
    help: "Action reports that contradict their decision (recorded and flagged), by kind: read_tool_changed, changed_outside_boundary, read_outside_boundary.",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });

  /** The per-decision counts (toolgate_decisions_total and the two below), flushed at scrape. */
  readonly decisionTally: Tally = new Tally(this.decisions, ["outcome", "tool", "reason"]);
  readonly refusalTally: Tally = new Tally(this.refusals, ["code"]);
  readonly evaluationErrorTally: Tally = new Tally(this.evaluationErrors, ["reason"]);

  constructor() {
    for (const m of processMetrics().getMetricsAsArray()) {
      this.registry.registerMetric(m as unknown as Counter);
    }
  }

  addGauge(g: GaugeSource): void {
    new ScrapeGauge(g, this.registry);
  }

  /** The exposition text: `text/plain; version=0.0.4; charset=utf-8` (the registry's contentType). */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}

const FAIL_CLOSED = new Set(["evaluation_error", "policy_output_invalid", "unknown_obligation"]);

/** Counts decisions and refusals, then hands every event on (to audit): a decorator of the sink. */
export function meteredSink(metrics: Metrics, next: DecisionSink | undefined): DecisionSink {
  return {
    record(event: AuditEvent): void {
      if (event.kind === "decision") countDecision(metrics, event);
      else if (event.kind === "refusal") metrics.refusalTally.one(event.error.code).n++;
      next?.record(event);
    },
    overloaded: () => next?.overloaded?.(),
  };
}

function countDecision(metrics: Metrics, { decision: d, ctx, notes }: DecisionEvent): void {
  const tool = d.tool !== undefined && d.tool.class !== null ? d.tool.name : "unknown";
  const reason = d.reasons[0]?.code ?? "";
  metrics.decisionTally.three(d.outcome, tool, reason).n++;
  if (FAIL_CLOSED.has(reason)) metrics.evaluationErrorTally.one(reason).n++;
  if (ctx.startTimeMs !== undefined) {
    metrics.latency.observe((performance.timeOrigin + performance.now() - ctx.startTimeMs) / 1000);
  }
  if (notes?.candidate?.diverged === true) {
    metrics.candidateDivergences.inc({
      tool,
      outcome: d.outcome,
      candidate: notes.candidate.outcome,
    });
  }
}
