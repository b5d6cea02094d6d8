/** Someone toolgate verified: a token's subject and roles. */
export interface Principal {
  id: string;
  roles: string[];
  method: "jwt";
  /** The token's job claim (identity.jwt.job_claim), when configured and present. */
  job?: string;
  /** The token's session claim (identity.jwt.session_claim, `sid`), when present. */
  session?: string;
  /** The token's claims that matter to policy and audit (never the token itself). */
  claims: {
    iss: string | undefined;
    sub: string;
    aud: string | string[] | undefined;
    exp: number | undefined;
  };
}

/** Who toolgate itself established the caller to be, and the agent it serves. */
export interface VerifiedFacts {
  agent: { id: string };
  subject: { id: string; method: "trusted" | "jwt"; claims?: Record<string, unknown> };
  time_ns: number;
  /**
   * The job, when toolgate verified it (identity mode jwt with
   * identity.jwt.job_claim): it wins over context.job.id for policy and for
   * job-scoped switches, limits and budgets.
   */
  job?: { id: string; method: "jwt" };
  /** Kill switches in force (toolgate enforces them before evaluation; docs/containment.md). */
  containment?: {
    killswitches: Array<{
      id: string;
      scope: { agent?: string; tool?: string; subject?: string; job?: string };
      reason: string;
    }>;
  };
  /**
   * The session's history as toolgate recorded it (src/session, docs/sessions.md):
   * present when the request names a session (the token's session claim, else
   * context.session.id) and session state is on.
   */
  session?: { id: string } & Record<string, unknown>;
  /** Present only when toolgate verified an approval bound to this exact request. */
  approval?: {
    id: string;
    state: "approved";
    approver: { id: string; roles: string[] };
    single_use: boolean;
    expires_at_ns: number;
  };
}
