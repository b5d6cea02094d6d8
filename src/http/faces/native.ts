import type { Decider, Decision, DecisionMeta } from "../../decision";
import type { ParsedBody } from "../body";
import { validateDecisionRequest } from "../validate";

/** POST /v1/decisions: the request in AuthZEN's model, the Decision as it is. */
export function nativeDecision(decider: Decider, body: ParsedBody, meta: DecisionMeta): Decision {
  const req = validateDecisionRequest(body.value);
  return decider.decide(req, body.text, meta);
}
