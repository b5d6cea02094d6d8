/**
 * Audit as a lifecycle component: adapts the AuditService (an AuditClient
 * with its worker thread, or an Auditor on this thread) to start / stop /
 * status without changing it.
 *
 * Status:
 * - ERROR while the audit worker is gone (it stopped and no new one answers
 *   yet, or it cannot be restarted), or while the trail cannot be written
 *   (write errors, and no line written since);
 * - OK otherwise, with dropped spans in the detail: spans are best effort and
 *   a collector outage never blocks a decision (docs/audit.md), so drops do
 *   not make the sidecar unready;
 * - NOT_READY before start and after stop.
 */
import type { Component, ComponentStatus } from "../shared/lifecycle";
import type { Logger } from "../shared/log";
import type { TrailStats } from "../trail";
import type { AuditService } from "./auditor";

/**
 * Follows the audit worker through what the AuditClient logs: it reports a
 * worker that stopped (`audit.worker_restart`) or that failed or could not
 * be restarted (`audit.worker_error`) only there — it has no accessor for
 * its worker. Hand `log` to AuditClient.start in place of the logger.
 */
export class WorkerWatch {
  readonly log: Logger;
  /** Why the worker is gone, since it went; undefined while it runs. */
  private why: string | undefined;
  /** How many times it went: a flush answered after a later departure proves nothing. */
  private downs = 0;
  private onDown: (() => void) | undefined;
  private ignoring = false;

  constructor(base: Logger) {
    this.log = {
      level: base.level,
      error: (msg, fields) => {
        base.error(msg, fields);
        this.seen(msg, fields);
      },
      warn: (msg, fields) => base.warn(msg, fields),
      info: (msg, fields) => base.info(msg, fields),
      debug: (msg, fields) => base.debug(msg, fields),
      line: (json, level) => base.line(json, level),
      raw: (text) => base.raw(text),
      flush: () => base.flush(),
    };
  }

  get down(): string | undefined {
    return this.why;
  }

  /** Told once the worker goes (again). */
  whenDown(fn: () => void): void {
    this.onDown = fn;
  }

  /** Stamp a probe with this before it starts. */
  get departures(): number {
    return this.downs;
  }

  /** A worker answered a probe started when `departures` was `stamp`. */
  up(stamp: number): void {
    if (stamp === this.downs) this.why = undefined;
  }

  /** Closing: what the client reports from now on is not a failure. */
  ignore(): void {
    this.ignoring = true;
  }

  private seen(msg: string, fields: Record<string, unknown> | undefined): void {
    if (this.ignoring) return;
    const event = fields?.event;
    if (event === "audit.worker_restart") {
      this.why = `${msg} (exit code ${String(fields?.exit_code)})`;
    } else if (event === "audit.worker_error") {
      const error = fields?.error;
      this.why = typeof error === "string" ? `${msg}: ${error}` : msg;
    } else return;
    this.downs++;
    this.onDown?.();
  }
}

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

export interface AuditComponentOptions {
  /** The watch whose logger the AuditClient writes through (absent: audit on this thread). */
  worker?: WorkerWatch;
  /** While the worker is gone: how often a flush asks whether a new one answers (default 1 s). */
  probeIntervalMs?: number;
}

export class AuditComponent implements Component {
  readonly name = "audit";
  private started = false;
  private stopped = false;
  private probe: NodeJS.Timeout | undefined;
  private probing = false;
  private readonly trail = new TrailWatch();

  constructor(
    private readonly audit: AuditService,
    private readonly opts: AuditComponentOptions = {},
  ) {
    opts.worker?.whenDown(() => this.probeUntilUp());
  }

  /** Audit was started when it was built (the worker is ready): nothing more to do. */
  start(): Promise<void> {
    this.started = true;
    return Promise.resolve();
  }

  /** Flushes and closes audit (spans, at most 5 s; the trail, fsynced); stops the worker. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.opts.worker?.ignore();
    clearInterval(this.probe);
    this.probe = undefined;
    await this.audit.close();
  }

  status(): ComponentStatus {
    if (this.stopped) return { state: "NOT_READY", detail: "stopped" };
    if (!this.started) return { state: "NOT_READY", detail: "not started" };
    const problems: string[] = [];
    const down = this.opts.worker?.down;
    if (down !== undefined) problems.push(`audit worker: ${down}`);
    const trail = this.trail.observe(this.audit.trailStats());
    if (trail !== undefined) problems.push(trail);
    if (problems.length > 0) return { state: "ERROR", detail: problems.join("; ") };
    const dropped = this.audit.tracingStats().dropped;
    return dropped > 0
      ? {
          state: "OK",
          detail: `${dropped} span(s) dropped since start (queue full, export failed or timed out); the trail and the log have every record`,
        }
      : { state: "OK" };
  }

  /**
   * While the worker is gone, flushes every probeIntervalMs: the client
   * refuses at once without a worker, and answers once a new one has
   * handled the flush.
   */
  private probeUntilUp(): void {
    const watch = this.opts.worker;
    if (watch === undefined || this.probe !== undefined || this.stopped) return;
    this.probe = setInterval(() => {
      if (this.probing) return;
      this.probing = true;
      const stamp = watch.departures;
      this.audit.flush().then(
        () => {
          this.probing = false;
          watch.up(stamp);
          if (watch.down !== undefined || this.stopped) return;
          clearInterval(this.probe);
          this.probe = undefined;
        },
        () => {
          this.probing = false;
        },
      );
    }, this.opts.probeIntervalMs ?? 1000);
    this.probe.unref();
  }
}
