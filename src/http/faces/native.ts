import type { Decider, Decision, RequestContext } from "../../decision";
import type { ParsedBody } from "../body";
import { validateDecisionRequest } from "../validate";

/** POST /v1/decisions: the request in AuthZEN's model, the Decision as it is. */
export function nativeDecision(decider: Decider, body: ParsedBody, ctx: RequestContext): Decision {
  const req = validateDecisionRequest(body.value);
  return decider.decide(req, ctx, body.text).decision;
}
