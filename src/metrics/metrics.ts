import type { AuditEvent, DecisionEvent, DecisionSink } from "../model";

/**
 * Prometheus metrics in the text exposition format (version 0.0.4), without a
 * client library: a handful of counters, gauges and one histogram. Counters
 * are updated on the decision path (a Map lookup and an add); gauges that
 * mirror other modules' state are read when scraped.
 */

type Labels = Record<string, string>;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labelText(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return "";
  return `{${keys.map((k) => `${k}="${escapeLabel(labels[k] ?? "")}"`).join(",")}}`;
}

class Counter {
  private readonly values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }
  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} counter\n`;
    for (const [k, v] of this.values) out += `${this.name}${k} ${v}\n`;
    return out;
  }
}

class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets: number[],
  ) {
    this.counts = buckets.map(() => 0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) {
      if (v <= (this.buckets[i] as number)) {
        this.counts[i] = (this.counts[i] as number) + 1;
        break;
      }
    }
  }
  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} histogram\n`;
    let cumulative = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      cumulative += this.counts[i] as number;
      out += `${this.name}_bucket{le="${this.buckets[i]}"} ${cumulative}\n`;
    }
    out += `${this.name}_bucket{le="+Inf"} ${this.count}\n${this.name}_sum ${this.sum}\n${this.name}_count ${this.count}\n`;
    return out;
  }
}

/** A gauge read at scrape time. */
export interface GaugeSource {
  name: string;
  help: string;
  read(): Array<{ labels?: Labels; value: number }>;
}

export class Metrics {
  readonly decisions = new Counter(
    "toolgate_decisions_total",
    'Decisions by outcome, tool (unknown tools grouped as "unknown") and first reason code.',
  );
  readonly refusals = new Counter(
    "toolgate_decision_refusals_total",
    "Decision requests refused before evaluation, by error code (e.g. policy_unavailable, agent_mismatch).",
  );
  readonly evaluationErrors = new Counter(
    "toolgate_evaluation_errors_total",
    "Decisions denied because the policy failed (evaluation_error, policy_output_invalid, unknown_obligation).",
  );
  readonly latency = new Histogram(
    "toolgate_decision_duration_seconds",
    "Time to decide (identity, policy evaluation, approvals), excluding HTTP.",
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
  );
  readonly approvals = new Counter(
    "toolgate_approval_events_total",
    "Approval events by kind (requested, approved, denied, expired, cancelled, used, refused, revoked).",
  );
  readonly bundleEvents = new Counter(
    "toolgate_bundle_events_total",
    "Bundle activations and rejections (result=activated|rejected, code for rejections).",
  );
  readonly candidateDivergences = new Counter(
    "toolgate_candidate_divergences_total",
    "Decisions where the candidate policy (policy.candidate.bundle) answered a different outcome than the active one, by tool, outcome and candidate outcome.",
  );
  readonly containmentStoreFailures = new Counter(
    "toolgate_containment_store_failures_total",
    "Writes containment.db refused (disk full, read-only, ...), by op: killswitch_create, killswitch_delete (the change applies in memory and is retried), budget_reserve (the allow is denied), budget_commit, budget_release (the reservation keeps counting).",
  );
  readonly actionAnomalies = new Counter(
    "toolgate_action_anomalies_total",
    "Action reports that contradict their decision (recorded and flagged), by kind: read_tool_changed, changed_outside_boundary, read_outside_boundary.",
  );
  private readonly gauges: GaugeSource[] = [];

  addGauge(g: GaugeSource): void {
    this.gauges.push(g);
  }

  render(): string {
    let out =
      this.decisions.render() +
      this.refusals.render() +
      this.evaluationErrors.render() +
      this.latency.render() +
      this.approvals.render() +
      this.bundleEvents.render() +
      this.candidateDivergences.render() +
      this.containmentStoreFailures.render() +
      this.actionAnomalies.render();
    for (const g of this.gauges) {
      out += `# HELP ${g.name} ${g.help}\n# TYPE ${g.name} gauge\n`;
      for (const s of g.read()) out += `${g.name}${labelText(s.labels ?? {})} ${s.value}\n`;
    }
    return out;
  }
}

const FAIL_CLOSED = new Set(["evaluation_error", "policy_output_invalid", "unknown_obligation"]);

/** Counts decisions and refusals, then hands every event on (to audit): a decorator of the sink. */
export function meteredSink(metrics: Metrics, next: DecisionSink | undefined): DecisionSink {
  return {
    record(event: AuditEvent): void {
      if (event.kind === "decision") countDecision(metrics, event);
      else if (event.kind === "refusal") metrics.refusals.inc({ code: event.error.code });
      next?.record(event);
    },
  };
}

function countDecision(metrics: Metrics, { decision: d, ctx, notes }: DecisionEvent): void {
  const tool = d.tool !== undefined && d.tool.class !== null ? d.tool.name : "unknown";
  const reason = d.reasons[0]?.code ?? "";
  metrics.decisions.inc({ outcome: d.outcome, tool, reason });
  if (FAIL_CLOSED.has(reason)) metrics.evaluationErrors.inc({ reason });
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
