import { toolgateError } from "../errors";
import type { DecisionRequest, VerifiedFacts } from "../model";
import type { TokenVerifier } from "./jwt";
import { bearerToken, type Principal } from "./jwt";
import { isObject } from "../shared/guards";

export { bearerToken, TokenVerifier, type Principal } from "./jwt";
export { devKeyWarning } from "./devkey";

export interface IdentityOptions {
  /** The agent this sidecar serves: configuration, never a request field. */
  agentId: string;
  mode: "trusted" | "jwt";
  /** Verifies users' tokens in `jwt` mode. */
  verifier?: TokenVerifier;
  /** identity.jwt.job_claim (jwt mode): the token claim naming the caller's job. */
  jobClaim?: string;
}

/**
 * Establishes who is asking, from what toolgate can vouch for itself.
 *
 * The agent is anchored to configuration: a request that names an agent
 * (`context.agent.id`, `context.agent_id`, or the actor `subject.properties.act.sub`)
 * other than the configured one is refused with `agent_mismatch`; it never
 * overrides the configured identity.
 *
 * Subject: in `jwt` mode the user's bearer token is verified and `subject.id`
 * must equal its `sub` (else `subject_mismatch`, before any evaluation); in
 * `trusted` mode (development, loopback only) the caller's `subject.id` is
 * taken as given and marked `method: "trusted"`, so a policy can tell.
 */
export class Identity {
  private readonly opts: IdentityOptions;

  constructor(opts: IdentityOptions) {
    if (opts.mode === "jwt" && opts.verifier === undefined) {
      throw new Error("Identity: jwt mode needs a TokenVerifier");
    }
    this.opts = opts;
  }

  get agentId(): string {
    return this.opts.agentId;
  }

  /** True when identity mode jwt trusts the committed development key. */
  get devKeyTrusted(): boolean {
    return this.opts.mode === "jwt" && this.opts.verifier?.dev === true;
  }

  get mode(): "trusted" | "jwt" {
    return this.opts.mode;
  }

  /** In jwt mode: verifies the caller's bearer token (async: keys may be remote). */
  async authenticate(
    headers: Record<string, string | string[] | undefined>,
  ): Promise<Principal | undefined> {
    if (this.opts.mode !== "jwt") return undefined;
    return (this.opts.verifier as TokenVerifier).verify(bearerToken(headers));
  }

  /** Throws `agent_mismatch` when the request names another agent. */
  anchorAgent(req: DecisionRequest): void {
    const named: Array<[string, unknown]> = [];
    const ctx = req.context;
    if (isObject(ctx)) {
      if (isObject(ctx.agent) && Object.hasOwn(ctx.agent, "id"))
        named.push(["context.agent.id", ctx.agent.id]);
      if (Object.hasOwn(ctx, "agent_id")) named.push(["context.agent_id", ctx.agent_id]);
    }
    const act = req.subject.properties?.act;
    if (isObject(act) && Object.hasOwn(act, "sub"))
      named.push(["subject.properties.act.sub", act.sub]);
    for (const [where, value] of named) {
      if (value !== this.opts.agentId) {
        throw toolgateError(
          "agent_mismatch",
          `${where} is ${JSON.stringify(value)}, but this sidecar serves agent "${this.opts.agentId}"`,
        );
      }
    }
  }

  /**
   * identity.jwt.job_claim: the token names the job; the request's
   * context.job.id must be that job (absent or different: `job_mismatch`).
   */
  private verifyJob(req: DecisionRequest, caller: Principal): { id: string; method: "jwt" } {
    const claim = this.opts.jobClaim as string;
    if (caller.job === undefined) {
      throw toolgateError(
        "job_mismatch",
        `the bearer token carries no job claim "${claim}" (identity.jwt.job_claim)`,
      );
    }
    const ctx = req.context;
    const job = isObject(ctx) && Object.hasOwn(ctx, "job") ? ctx.job : undefined;
    const sent = isObject(job) && Object.hasOwn(job, "id") ? job.id : undefined;
    if (sent !== caller.job) {
      throw toolgateError(
        "job_mismatch",
        `context.job.id must be the token's job ${JSON.stringify(caller.job)} (claim "${claim}")`,
      );
    }
    return { id: caller.job, method: "jwt" };
  }

  /** The verified facts handed to the policy as `input.verified`. */
  verify(req: DecisionRequest, nowNs: number, caller?: Principal): VerifiedFacts {
    this.anchorAgent(req);
    if (this.opts.mode === "jwt") {
      if (caller === undefined)
        throw toolgateError("unauthenticated", "a bearer token is required in identity mode jwt");
      if (req.subject.id !== caller.id) {
        throw toolgateError(
          "subject_mismatch",
          `subject.id ${JSON.stringify(req.subject.id)} is not the token's subject ${JSON.stringify(caller.id)}`,
        );
      }
      const verified: VerifiedFacts = {
        agent: { id: this.opts.agentId },
        subject: {
          id: caller.id,
          method: "jwt",
          claims: { ...caller.claims, roles: caller.roles },
        },
        time_ns: nowNs,
      };
      if (this.opts.jobClaim !== undefined) verified.job = this.verifyJob(req, caller);
      return verified;
    }
    return {
      agent: { id: this.opts.agentId },
      subject: { id: req.subject.id, method: "trusted" },
      time_ns: nowNs,
    };
  }
}
