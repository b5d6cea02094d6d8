/**
 * Audit as a lifecycle component: adapts the AuditService (an AuditClient
 * with its worker thread, or an Auditor on this thread) to start / stop /
 * status without changing it.
 *
 * Status:
 * - ERROR while the audit worker is gone (it stopped and no new one is ready
 *   yet, or it cannot be restarted: AuditClient.workerDown), while the trail cannot be written
 *   (write errors, and no line written since), or while the records not yet
 *   written are past audit.max_backlog_bytes (decisions are denied audit_unavailable);
 * - OK otherwise, with dropped spans in the detail: spans are best effort and
 *   a collector outage never blocks a decision (docs/audit.md), so drops do
 *   not make the sidecar unready;
 * - NOT_READY before start and after stop.
 */
import { type Component, type ComponentStatus, notRunning } from "../shared/lifecycle";
import type { TrailStats } from "../trail";
import type { AuditService } from "./auditor";

/** Whether the trail fails now: new write errors since the last look, and no line written since. */
class TrailWatch {
  private errors = 0;
  private writtenAtError = 0;
  private failing = false;

  observe(t: TrailStats | undefined): string | undefined {
    if (t === undefined) return undefined;
    if (t.writeErrors < this.errors) {
      // another trail instance (a restarted audit worker): its counts start again
      this.errors = 0;
      this.failing = false;
    }
    if (t.writeErrors > this.errors) {
      this.errors = t.writeErrors;
      this.writtenAtError = t.written;
      this.failing = true;
    } else if (this.failing && (t.written > this.writtenAtError || t.pending === 0)) {
      this.failing = false;
    }
    if (!this.failing) return undefined;
    return `the audit trail cannot be written (${t.file}): ${t.writeErrors} write error(s) since start, ${t.pending} record(s) waiting; see audit.trail_error in the log`;
  }
}

export class AuditComponent implements Component {
  readonly name = "audit";
  private started = false;
  private stopped = false;
  private readonly trail = new TrailWatch();

  constructor(private readonly audit: AuditService) {}

  /** Audit was started when it was built (the worker is ready): nothing more to do. */
  start(): Promise<void> {
    this.started = true;
    return Promise.resolve();
  }

  /** Flushes and closes audit (spans, at most 5 s; the trail, fsynced); stops the worker. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.audit.close();
  }

  status(): ComponentStatus {
    const idle = notRunning(this.started, this.stopped);
    if (idle !== undefined) return idle;
    const problems: string[] = [];
    const down = this.audit.workerDown();
    if (down !== undefined) problems.push(`audit worker: ${down}`);
    const trail = this.trail.observe(this.audit.trailStats());
    if (trail !== undefined) problems.push(trail);
    const full = this.audit.overloaded();
    if (full !== undefined) problems.push(`${full}; decisions are denied audit_unavailable`);
    if (problems.length > 0) return { state: "ERROR", detail: problems.join("; ") };
    const dropped = this.audit.tracingStats().dropped;
    return dropped > 0
      ? {
          state: "OK",
          detail: `${dropped} span(s) dropped since start (queue full, export failed or timed out); the trail and the log have every record`,
        }
      : { state: "OK" };
  }
}
