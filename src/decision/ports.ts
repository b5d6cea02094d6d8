/**
 * What the decider calls beside the policy, as small interfaces: a sidecar's
 * own SQLite-backed services answer synchronously; the fleet's (src/fleet/,
 * over the control service) answer with a promise where they need a network
 * hop. The decider stays synchronous until a port hands it a promise.
 */
import type { ApprovalCheck, PlanCheck } from "../approvals/service";
import type { PlanClaim } from "../approvals/store";
import type { ContainmentDeny, LimitsSource } from "../containment";
import type { Decision, DecisionRequest, VerifiedFacts } from "../model";
import type { SwitchScope } from "../containment";

export type MaybePromise<T> = T | Promise<T>;

/** Kill switches, rates and budgets, enforced before (and, for budgets, after) the policy. */
export interface ContainmentPort {
  /** A deny, or undefined when the request may go on to the policy. */
  check(
    req: DecisionRequest,
    verified: VerifiedFacts,
    engine: LimitsSource | undefined,
    nowMs: number,
  ): MaybePromise<ContainmentDeny | undefined>;
  /** What the policy sees as `input.verified.containment`. */
  view(nowMs: number): { killswitches: Array<{ id: string; scope: SwitchScope; reason: string }> };
  /** An allow reserves its budgets before it is answered; a deny when it cannot. */
  reserve(
    decisionId: string,
    req: DecisionRequest,
    verified: VerifiedFacts,
    engine: LimitsSource,
    nowMs: number,
  ): MaybePromise<ContainmentDeny | undefined>;
  /** The decision that reserved became a deny after all: its reservations go. */
  unreserve(decisionId: string): void;
}

/** Approvals: a presented `context.approval` checked and used; needs_approval evaluations recorded. */
export interface ApprovalPort {
  check(req: DecisionRequest, nowMs: number): MaybePromise<ApprovalCheck>;
  /** Claims a single-use approval for this decision; false if another decision won. */
  consume(taskId: string, decisionId: string, nowMs: number): MaybePromise<boolean>;
  /** Records a use of a multi-use approval (audit only). */
  used(taskId: string, decisionId: string): void;
  recordNeedsApproval(
    d: Decision,
    req: DecisionRequest,
    verified: VerifiedFacts,
    mask?: readonly unknown[],
  ): void;
  /**
   * Plan approvals (docs/approvals.md): the plan a request presents in
   * `context.plan`, checked — asked only when the policy answered
   * needs_approval. A port without it answers such a request's
   * needs_approval with reason `plan_unavailable` (fleet mode).
   */
  checkPlan?(req: DecisionRequest, nowMs: number): MaybePromise<PlanCheck>;
  /** Claims one use of the plan (one of `envelopes`) for this decision: never more than max_uses. */
  claimPlan?(
    planId: string,
    envelopes: readonly number[],
    decisionId: string,
    nowMs: number,
  ): MaybePromise<PlanClaim>;
}

/**
 * Session state (src/session): the history the policy sees for a session,
 * and each decision added to it. `engine` is the policy the decision was
 * made with: its tool registry says what a tool reads and whether it sends
 * data out.
 */
export interface SessionPort {
  /** A promise in fleet mode when the tool sends data out (the fleet's labels are read fresh). */
  view(
    sessionId: string,
    nowMs: number,
    req: DecisionRequest,
    engine: { readonly data: unknown },
  ): MaybePromise<{ id: string } & Record<string, unknown>>;
  /**
   * Before an allow is answered: in fleet mode, a call that reads labelled
   * data is recorded fleet-wide first (a rejection denies `session_unavailable`).
   */
  touch?(
    sessionId: string,
    decision: Decision,
    req: DecisionRequest,
    engine: { readonly data: unknown },
    nowMs: number,
  ): MaybePromise<void>;
  record(
    sessionId: string,
    decision: Decision,
    req: DecisionRequest,
    engine: { readonly data: unknown },
    nowMs: number,
  ): void;
}

/** The steps of a decision: a generator that yields only the promises it must wait for. */
export type Steps<T> = Generator<Promise<unknown>, T, unknown>;

/** Waits for `v` inside Steps only when it is a promise (`yield* wait(v)`). */
export function* wait<T>(v: MaybePromise<T>): Generator<Promise<unknown>, T, unknown> {
  return v instanceof Promise ? ((yield v) as T) : v;
}

/**
 * Runs Steps synchronously up to the first promise a step yields; from there
 * on asynchronously. A rejected promise is thrown into the steps where they
 * wait (their try/catch sees it).
 */
export function drive<T>(steps: Steps<T>): MaybePromise<T> {
  const r = steps.next();
  return r.done ? r.value : resume(steps, r.value);
}

async function resume<T>(steps: Steps<T>, pending: Promise<unknown>): Promise<T> {
  let p = pending;
  for (;;) {
    let value: unknown;
    let error: unknown;
    let rejected = false;
    try {
      value = await p;
    } catch (e) {
      rejected = true;
      error = e;
    }
    // a rejection goes into the steps where they wait; their own throw comes out of here
    const r = rejected ? steps.throw(error) : steps.next(value);
    if (r.done) return r.value;
    p = r.value;
  }
}

/** `f` of `v`, at once when `v` is a value, after it when it is a promise. */
export function mapMaybe<T, U>(v: MaybePromise<T>, f: (t: T) => U): MaybePromise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}
