/**
 * The audit backlog's bound (audit.max_backlog_bytes). Audit records that
 * cannot be written yet — the trail's disk is full or failing, the audit
 * worker stopped and no new one is ready — wait in memory. Past the bound,
 * the Decider denies new decisions `audit_unavailable` (fail closed: no
 * action goes unrecorded, and memory stays bounded), and those denials are
 * counted here instead of recorded; past twice the bound, any event that is
 * not a decision is dropped and counted. (A decision made before the bound
 * was reached — one that waited on the control service meanwhile — is
 * recorded.) One log line starts an episode (audit.backlog_full), one ends it
 * with the counts (audit.backlog_recovered): when the backlog is back under
 * RESUME_AT of the bound, or at close.
 */
import type { Logger } from "../shared/log";

/** The reason code of a decision the Decider denies because audit cannot keep its record. */
export const AUDIT_UNAVAILABLE = "audit_unavailable";

const MB = 1024 * 1024;
/**
 * An episode ends once the backlog is back under this fraction of the bound,
 * not at the bound itself: records in flight to the worker are counted as
 * their event's JSON and then as the (redacted, often shorter) trail line, so
 * near the bound the count dips as each batch is handled.
 */
const RESUME_AT = 0.75;
const mb = (n: number): string => (n / MB).toFixed(1);

export class BacklogGate {
  private full = false;
  private refused = 0;
  private dropped = 0;

  /** `bytes()`: the records waiting now, in characters of JSON text. */
  constructor(
    private readonly maxBytes: number,
    private readonly bytes: () => number,
    private readonly log: Logger,
  ) {}

  /**
   * Why decisions cannot be recorded now, or undefined: from the first call
   * that finds the backlog past the bound until one finds it back under
   * RESUME_AT of it; those two calls log the episode's start and end.
   * Cheap: called once per decision.
   */
  overloaded(): string | undefined {
    const bytes = this.bytes();
    if (!this.full) {
      if (bytes <= this.maxBytes) return undefined;
      this.full = true;
      this.log.error(
        "audit records cannot be written and their backlog is past its limit; decisions are denied audit_unavailable until it is written",
        { event: "audit.backlog_full", backlog_bytes: bytes, limit_bytes: this.maxBytes },
      );
    } else if (bytes <= this.maxBytes * RESUME_AT) {
      this.recovered(bytes);
      return undefined;
    }
    return `${mb(bytes)} MB of audit records wait to be written, past audit.max_backlog_bytes (${mb(this.maxBytes)} MB)`;
  }

  /**
   * Whether `event` is to be recorded. Not, and counted instead: a decision
   * denied `audit_unavailable` (the Decider's refusal past the bound); past
   * twice the bound, any event that is not a decision (a decision checked the
   * bound before it was made, and is always recorded).
   */
  admit(event: { kind: string; decision?: { reasons: readonly { code: string }[] } }): boolean {
    if (event.kind === "decision") {
      if (event.decision?.reasons[0]?.code !== AUDIT_UNAVAILABLE) return true;
      this.refused++;
      return false;
    }
    if (this.bytes() <= 2 * this.maxBytes) return true;
    this.dropped++;
    return false;
  }

  /** Logs the end of an episode (also at close, if one is open or anything was counted). */
  recovered(bytes = this.bytes()): void {
    if (!this.full && this.refused === 0 && this.dropped === 0) return;
    this.full = false;
    this.log.warn(
      "the audit backlog episode is over; the decisions denied audit_unavailable in it have no record of their own",
      {
        event: "audit.backlog_recovered",
        decisions: this.refused,
        events_dropped: this.dropped,
        backlog_bytes: bytes,
        limit_bytes: this.maxBytes,
      },
    );
    this.refused = 0;
    this.dropped = 0;
  }
}
