import {
  drive,
  mapMaybe,
  wait,
  type Decider,
  type Decision,
  type DecisionRequest,
  type MaybePromise,
  type RequestContext,
  type Steps,
} from "../../decision";
import { isToolgateError, toolgateError, type ToolgateError } from "../../errors";
import { validateDecisionRequest } from "../../shared/validate";
import { isObject } from "../../shared/guards";

/** AuthZEN 1.0 decision object. */
export interface AuthzenDecision {
  decision: boolean;
  context?: Record<string, unknown>;
}

export const EVALUATIONS_SEMANTICS = [
  "execute_all",
  "deny_on_first_deny",
  "permit_on_first_permit",
] as const;
type Semantic = (typeof EVALUATIONS_SEMANTICS)[number];

/**
 * Shapes a toolgate Decision as an AuthZEN decision. needs_approval (and a
 * deny that offers a fresh request, e.g. approval_expired) becomes the Access
 * Request and Approval profile's requestable denial.
 */
export function toAuthzen(d: Decision, baseUrl?: string): AuthzenDecision {
  const context: Record<string, unknown> = { decision_id: d.decision_id };
  if (d.outcome === "allow") {
    if (d.obligations.length > 0) context.obligations = d.obligations;
    if (d.grant !== undefined) context.grant = d.grant;
    return { decision: true, context };
  }
  context.reason =
    d.outcome === "needs_approval" ? "approval_required" : (d.reasons[0]?.code ?? "denied");
  context.reasons = d.reasons;
  if (d.retry_after !== undefined) context.retry_after = d.retry_after;
  if (d.access_request !== undefined) {
    context.evaluation_id = d.access_request.evaluation_id;
    context.evaluated_at = d.evaluated_at;
    const ar: Record<string, unknown> = { expires_at: d.access_request.expires_at };
    if (baseUrl !== undefined) ar.endpoint = `${baseUrl}/access/v1/requests`;
    context.access_request = ar;
    if (d.approval !== undefined) context.approval_requirement = d.approval;
  }
  return { decision: false, context };
}

/** POST /access/v1/evaluation (`text`: the body's JSON text, as received). */
export function authzenEvaluation(
  decider: Decider,
  req: DecisionRequest,
  ctx: RequestContext,
  text: string,
  baseUrl?: string,
): MaybePromise<AuthzenDecision> {
  return mapMaybe(decider.decide(req, ctx, text), (r) => toAuthzen(r.decision, baseUrl));
}

function itemError(err: ToolgateError): AuthzenDecision {
  return {
    decision: false,
    context: { error: { status: err.status, code: err.code, message: err.message } },
  };
}

/**
 * POST /access/v1/evaluations. Top-level subject/action/resource/context are
 * defaults; an item's member replaces the default whole. An empty or absent
 * list behaves as a single evaluation. A bad item is a `false` decision with
 * `context.error`; policy unavailability fails the whole request.
 */
export function authzenEvaluations(
  decider: Decider,
  top: unknown,
  maxEvaluations: number,
  ctx: RequestContext,
  /** Opens a span for the whole batch (audit): returns the items' context and its closer. */
  batchSpan?: (ctx: RequestContext) => { ctx: RequestContext; end(): void },
): MaybePromise<AuthzenDecision | { evaluations: AuthzenDecision[] }> {
  if (!isObject(top)) throw toolgateError("invalid_request", "the body must be a JSON object");
  const { evaluations, options } = top;
  if (options !== undefined && !isObject(options))
    throw toolgateError("invalid_request", "options must be an object");
  const semantic = (options?.evaluations_semantic ?? "execute_all") as Semantic;
  if (!EVALUATIONS_SEMANTICS.includes(semantic)) {
    throw toolgateError(
      "invalid_request",
      `options/evaluations_semantic must be one of ${EVALUATIONS_SEMANTICS.join(", ")}, got ${JSON.stringify(semantic)}`,
    );
  }
  if (evaluations !== undefined && !Array.isArray(evaluations)) {
    throw toolgateError("invalid_request", "evaluations must be an array");
  }
  if (evaluations === undefined || evaluations.length === 0) {
    const single = {
      subject: top.subject,
      action: top.action,
      resource: top.resource,
      context: top.context,
    };
    if (single.context === undefined) delete single.context;
    return mapMaybe(decider.decide(validateDecisionRequest(single), ctx), (r) =>
      toAuthzen(r.decision),
    );
  }
  if (evaluations.length > maxEvaluations) {
    throw toolgateError(
      "invalid_request",
      `evaluations has ${evaluations.length} items; the limit is ${maxEvaluations}`,
    );
  }
  return drive(batchSteps(decider, top, evaluations, semantic, ctx, batchSpan));
}

/** The items in order (each may wait on a fleet port), stopping as the semantic says. */
function* batchSteps(
  decider: Decider,
  top: Record<string, unknown>,
  evaluations: unknown[],
  semantic: Semantic,
  ctx: RequestContext,
  batchSpan?: (ctx: RequestContext) => { ctx: RequestContext; end(): void },
): Steps<{ evaluations: AuthzenDecision[] }> {
  const results: AuthzenDecision[] = [];
  const batch = batchSpan?.(ctx);
  try {
    for (let i = 0; i < evaluations.length; i++) {
      const result = yield* wait(evaluateItem(decider, top, evaluations[i], i, batch?.ctx ?? ctx));
      results.push(result);
      if (semantic === "deny_on_first_deny" && !result.decision) break;
      if (semantic === "permit_on_first_permit" && result.decision) break;
    }
  } finally {
    batch?.end();
  }
  return { evaluations: results };
}

/** One batch item: defaults merged (an item's member replaces the default whole), then decided. */
function evaluateItem(
  decider: Decider,
  top: Record<string, unknown>,
  item: unknown,
  i: number,
  ctx: RequestContext,
): MaybePromise<AuthzenDecision> {
  if (!isObject(item)) {
    return itemError(toolgateError("invalid_request", `evaluations/${i} must be an object`));
  }
  const merged: Record<string, unknown> = {};
  for (const k of ["subject", "action", "resource", "context"] as const) {
    const v = Object.hasOwn(item, k) ? item[k] : top[k];
    if (v !== undefined) merged[k] = v;
  }
  try {
    const req: DecisionRequest = validateDecisionRequest(merged, `evaluations/${i}`);
    return mapMaybe(decider.decide(req, ctx), (r) => toAuthzen(r.decision));
  } catch (e) {
    if (isToolgateError(e) && e.status < 500) return itemError(e);
    throw e;
  }
}

/** GET /.well-known/authzen-configuration */
export function authzenConfiguration(baseUrl: string): Record<string, unknown> {
  return {
    policy_decision_point: baseUrl,
    access_evaluation_endpoint: `${baseUrl}/access/v1/evaluation`,
    access_evaluations_endpoint: `${baseUrl}/access/v1/evaluations`,
    search_action_endpoint: `${baseUrl}/access/v1/search/action`,
  };
}
