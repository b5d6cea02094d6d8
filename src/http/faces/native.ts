import {
  mapMaybe,
  type Decider,
  type Decision,
  type DecisionRequest,
  type MaybePromise,
  type RequestContext,
} from "../../decision";

/** POST /v1/decisions: the request in AuthZEN's model, the Decision as it is. */
export function nativeDecision(
  decider: Decider,
  req: DecisionRequest,
  ctx: RequestContext,
  /** The body's JSON text, as received (audit). */
  text: string,
): MaybePromise<Decision> {
  return mapMaybe(decider.decide(req, ctx, text), (r) => r.decision);
}
