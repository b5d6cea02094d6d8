/**
 * Job-scoped containment keys on the job toolgate verified (VerifiedFacts.job,
 * from identity.jwt.job_claim) when there is one, else on context.job.id:
 * kill switches, per-job rates and per-job budgets. A real Containment on a
 * real containment.db; the limits are a bundle's data document.
 */
import { Containment, ContainmentStore } from "../../src/containment";
import type { DecisionRequest, VerifiedFacts } from "../../src/model";
import { tempDir } from "../helpers/opa";

const data = {
  toolgate: {
    deployment: {
      limits: {
        rates: [{ per: "job", tool: "tickets.read", rate_per_second: 0.001, burst: 1 }],
        budgets: [
          {
            tool: "refunds.issue",
            argument: "amount",
            per: "job",
            window_seconds: 60,
            max_total: 10,
          },
        ],
      },
    },
  },
};
const engine = { data };
const now = Date.parse("2031-01-01T00:00:00Z");

function request(tool: string, job: string, amount?: number): DecisionRequest {
  return {
    subject: { type: "user", id: "alice" },
    action: {
      name: tool,
      ...(amount !== undefined ? { properties: { arguments: { amount } } } : {}),
    },
    resource: { type: "customer", id: "cust_1" },
    context: { job: { id: job, customer_id: "cust_1" } },
  };
}

function verified(job?: string): VerifiedFacts {
  return {
    agent: { id: "support-triage" },
    subject: { id: "alice", method: "jwt" },
    time_ns: now * 1e6,
    ...(job !== undefined ? { job: { id: job, method: "jwt" as const } } : {}),
  };
}

let c: Containment;
beforeEach(() => {
  c = new Containment({
    store: ContainmentStore.open(tempDir()),
    agentId: "support-triage",
    now: () => now,
  });
});
afterEach(() => c.stop());

describe("the job containment keys on", () => {
  test("a job kill switch matches the verified job, not the job the request names", () => {
    c.createSwitch({ scope: { job: "job_real" }, reason: "stop job_real" }, "olga");
    // the request claims another job; toolgate verified job_real
    expect(
      c.check(request("tickets.read", "job_other"), verified("job_real"), undefined, now)?.code,
    ).toBe("job_disabled");
    // the request names job_real, but the verified job is another one
    expect(
      c.check(request("tickets.read", "job_real"), verified("job_x"), undefined, now),
    ).toBeUndefined();
    // nothing verified: context.job.id
    expect(c.check(request("tickets.read", "job_real"), verified(), undefined, now)?.code).toBe(
      "job_disabled",
    );
  });

  test("per-job rates and budgets count against the verified job", async () => {
    expect(
      c.check(request("tickets.read", "job_a"), verified("job_real"), engine, now),
    ).toBeUndefined();
    // a different context job, same verified job: the same bucket, now empty
    expect(c.check(request("tickets.read", "job_b"), verified("job_real"), engine, now)?.code).toBe(
      "rate_limited",
    );
    const refund = request("refunds.issue", "job_a", 10);
    expect(c.check(refund, verified("job_real"), engine, now)).toBeUndefined();
    expect(await c.reserve("d1", refund, verified("job_real"), engine, now)).toBeUndefined();
    // the budget of job_real is held, whatever job the request names
    const other = request("refunds.issue", "job_b", 1);
    expect(c.check(other, verified("job_real"), engine, now)?.code).toBe("budget_exceeded");
    expect(c.check(other, verified(), engine, now)).toBeUndefined();
  });
});
