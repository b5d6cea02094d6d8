import type { AccessRequestTask, Decision, Reason } from "./types";

/**
 * The sidecar could not be asked or answered with an error: an HTTP error
 * (`code` from its `{code, message}` body, `status` the HTTP status), or a
 * transport failure (`network_error`, `timeout`, `invalid_response`; status 0).
 * Treat it as "do not call".
 */
export class ToolgateError extends Error {
  override readonly name = "ToolgateError";
  readonly code: string;
  readonly status: number;
  /** Seconds to wait before retrying (429 `retry_after` / `Retry-After`, 503 `Retry-After`). */
  readonly retryAfter?: number;
  /** The response's X-Request-ID, when there was a response. */
  readonly requestId?: string;

  constructor(
    code: string,
    status: number,
    message: string,
    extra: { retryAfter?: number; requestId?: string; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.code = code;
    this.status = status;
    if (extra.retryAfter !== undefined) this.retryAfter = extra.retryAfter;
    if (extra.requestId !== undefined) this.requestId = extra.requestId;
  }
}

/**
 * The call must not be made: the policy denied it (`code` = the first reason's
 * code), it needs an approval the caller did not wait for (`approval_required`),
 * the approval was refused or ran out (`approval_denied`, `approval_cancelled`,
 * `approval_expired`, `approval_failed`), or the decision carries an obligation
 * this client cannot honour (`unknown_obligation`). One code comes after the
 * tool ran: `redaction_not_applicable` — the decision requires redaction and
 * the result cannot be redacted field by field (not JSON-like), so it is
 * withheld rather than returned as is.
 */
export class ToolDenied extends Error {
  override readonly name = "ToolDenied";
  readonly code: string;
  readonly reasons: Reason[];
  readonly outcome: Decision["outcome"] | undefined;
  readonly decision?: Decision;
  /** The access request, with `approval_required` (approval: "throw") and the approval_* codes. */
  readonly task?: AccessRequestTask;
  /** Seconds, when the deny says when to retry (budget, rate limit). */
  readonly retryAfter?: number;

  constructor(
    code: string,
    message: string,
    extra: { reasons?: Reason[]; decision?: Decision; task?: AccessRequestTask } = {},
  ) {
    super(message);
    this.code = code;
    this.reasons = extra.reasons ?? extra.decision?.reasons ?? [];
    this.outcome = extra.decision?.outcome;
    if (extra.decision !== undefined) this.decision = extra.decision;
    if (extra.task !== undefined) this.task = extra.task;
    if (extra.decision?.retry_after !== undefined) this.retryAfter = extra.decision.retry_after;
  }

  /** A ToolDenied for a deny (or an unusable needs_approval) decision. */
  static fromDecision(d: Decision, task?: AccessRequestTask): ToolDenied {
    const first = d.reasons[0];
    const code = first?.code ?? (d.outcome === "needs_approval" ? "approval_required" : "denied");
    const why = d.reasons.map((r) => `${r.code}: ${r.message}`).join("; ");
    const tool = d.tool?.name === undefined ? "the call" : `${d.tool.name}`;
    return new ToolDenied(code, `${tool}: ${d.outcome}${why === "" ? "" : ` (${why})`}`, {
      decision: d,
      ...(task === undefined ? {} : { task }),
    });
  }
}
