import type { Decider, Decision, DecisionRequest, RequestContext } from "../../decision";

/** POST /v1/decisions: the request in AuthZEN's model, the Decision as it is. */
export function nativeDecision(
  decider: Decider,
  req: DecisionRequest,
  ctx: RequestContext,
  /** The body's JSON text, as received (audit). */
  text: string,
): Decision {
  return decider.decide(req, ctx, text).decision;
}
