// The fixed request mix the benchmark drives: reference-table requests
// (see test/integration/reference-table.test.ts), in the shape toolgate's
// faces take, with the outcome and reason code the reference table expects.

/** A decision request in the reference deployment's shape (as test/helpers/toolgate.ts builds it). */
export function refRequest({
  user = "alice",
  tool,
  args,
  customer = "cust_1",
  purpose = "support_triage",
}) {
  const action = { name: tool };
  if (args) action.properties = { arguments: args };
  return {
    subject: { type: "user", id: user },
    action,
    resource: { type: "customer", id: customer },
    context: { job: { id: "job_1", purpose, customer_id: "cust_1" } },
  };
}

export const MIX = [
  {
    name: "read tickets",
    req: refRequest({ tool: "tickets.read" }),
    outcome: "allow",
    code: "granted",
  },
  {
    name: "read account summary",
    req: refRequest({ tool: "accounts.summary.read" }),
    outcome: "allow",
    code: "granted",
  },
  {
    name: "draft reply",
    req: refRequest({ tool: "replies.draft" }),
    outcome: "allow",
    code: "granted",
  },
  {
    name: "refund 20",
    req: refRequest({ tool: "refunds.issue", args: { amount: 20 } }),
    outcome: "allow",
    code: "granted",
  },
  {
    name: "refund 120",
    req: refRequest({ tool: "refunds.issue", args: { amount: 120 } }),
    outcome: "needs_approval",
    code: "approval_required",
  },
  {
    name: "refund 9000",
    req: refRequest({ tool: "refunds.issue", args: { amount: 9000 } }),
    outcome: "deny",
    code: "limit_exceeded",
  },
  {
    name: "carol refunds 20",
    req: refRequest({ user: "carol", tool: "refunds.issue", args: { amount: 20 } }),
    outcome: "deny",
    code: "role_not_permitted",
  },
  {
    name: "billing.update",
    req: refRequest({ tool: "billing.update" }),
    outcome: "deny",
    code: "not_granted",
  },
  {
    name: "unknown tool",
    req: refRequest({ tool: "shell.exec" }),
    outcome: "deny",
    code: "unknown_tool",
  },
  {
    name: "out of scope",
    req: refRequest({ tool: "tickets.read", customer: "cust_2" }),
    outcome: "deny",
    code: "out_of_scope",
  },
];

export const AGENT_ID = "support-triage";

/** The policy input toolgate builds for a request (src/decision: request + verified facts). */
export function policyInput(req, nowNs) {
  return {
    request: req,
    verified: {
      agent: { id: AGENT_ID },
      subject: { id: req.subject.id, method: "trusted" },
      time_ns: nowNs,
    },
  };
}
