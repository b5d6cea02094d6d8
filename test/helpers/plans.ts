/** The reference plan of the plan-approval tests: refunds of 51..200 EUR to cust_1 in job_1, three at most. */
export const PLAN_JOB = { id: "job_1", purpose: "support_triage", customer_id: "cust_1" };

/** A plan submission (POST /access/v1/plans) for alice; `extra` overrides top-level members. */
export function refundPlan(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    subject: { type: "user", id: "alice" },
    resource: { type: "customer", id: "cust_1" },
    context: { job: PLAN_JOB },
    plan: {
      calls: [
        {
          tool: "refunds.issue",
          arguments: { amount: { min: 51, max: 200 }, currency: "EUR" },
          max_uses: 3,
        },
      ],
      ttl_seconds: 600,
    },
    justification: "refund the three damaged orders of this customer",
    ...extra,
  };
}
