import { mapMaybe, type Decider, type MaybePromise, type RequestContext } from "../../decision";
import { toolgateError, type ToolgateError } from "../../errors";
import { validateDecisionRequest } from "../../shared/validate";
import { isObject } from "../../shared/guards";

/** OPA Data API error body: `{code, message, errors?}` with OPA's codes. */
export function toOpaError(err: ToolgateError): {
  code: string;
  message: string;
  errors: Array<{ code: string; message: string }>;
} {
  const code =
    err.status === 404
      ? "resource_not_found"
      : err.status === 405
        ? "method_not_allowed"
        : err.status < 500
          ? "invalid_parameter"
          : "internal_error";
  return { code, message: err.message, errors: [{ code: err.code, message: err.message }] };
}

/**
 * POST /v1/data/{path}. `{input}` (the body, `envelope`) is read as a decision request. The decision
 * entrypoint's path answers the whole decision document; its sibling `allow`
 * answers a boolean. Any other path is undefined in OPA's sense: the response
 * has no `result`.
 */
export function opaData(
  decider: Decider,
  entrypoint: string,
  path: string,
  envelope: unknown,
  ctx: RequestContext,
): MaybePromise<{ result?: unknown; decision_id?: string }> {
  const normalized = path.replace(/^\/+|\/+$/g, "");
  const allowPath = entrypoint.split("/").slice(0, -1).concat("allow").join("/");
  if (normalized !== entrypoint && normalized !== allowPath) return {};
  if (envelope !== undefined && !isObject(envelope)) {
    throw toolgateError(
      "invalid_request",
      'body contains malformed input document: must be an object {"input": ...}',
    );
  }
  if (envelope?.input === undefined) {
    throw toolgateError(
      "invalid_request",
      'input is required: {"input": {subject, action, resource, context}}',
    );
  }
  const req = validateDecisionRequest(envelope.input, "input");
  return mapMaybe(decider.decide(req, ctx), ({ decision: d }) => {
    if (normalized === allowPath)
      return { result: d.outcome === "allow", decision_id: d.decision_id };
    const { decision_id, ...rest } = d;
    return { result: { decision_id, ...rest }, decision_id };
  });
}
