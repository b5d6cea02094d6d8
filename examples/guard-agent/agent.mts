/**
 * A tiny "agent" that guards its tools with toolgate/client, against the
 * reference deployment that `npm start` serves. Each tool is a stand-in
 * function over in-memory data; what matters is what toolgate lets run.
 *
 *   node_modules/.bin/node examples/guard-agent/agent.mts            # waits for approvals
 *   node_modules/.bin/node examples/guard-agent/agent.mts --no-wait  # shows approval_required instead
 *
 * See README.md.
 */
import {
  createClient,
  ToolDenied,
  ToolgateError,
  type AccessRequestTask,
  type CallDescription,
} from "toolgate/client";

const agentUrl = process.env.TOOLGATE_URL ?? "http://127.0.0.1:8181";
const controlUrl = process.env.TOOLGATE_CONTROL_URL ?? "http://127.0.0.1:8182";
const wait = !process.argv.includes("--no-wait");

const tg = createClient({
  url: agentUrl,
  // identity mode jwt: the user's token (npm start runs the trusted development mode: none needed)
  ...(process.env.TOOLGATE_TOKEN ? { token: process.env.TOOLGATE_TOKEN } : {}),
});

// alice works customer cust_1's support case
const alice: CallDescription = {
  subject: { type: "user", id: "alice" },
  resource: { type: "customer", id: "cust_1" },
  context: { job: { id: "job_demo", purpose: "support_triage", customer_id: "cust_1" } },
};

const announced = new Set<string>();

// --- the tools (stand-ins) -------------------------------------------------
const readTicket = tg.guard(
  "tickets.read",
  (args: { ticket: string }) => ({ id: args.ticket, subject: "Charged twice for March" }),
  () => alice,
  { report: (t) => ({ read: [{ type: "ticket", id: t.id }] }) },
);

const accountSummary = tg.guard(
  "accounts.summary.read",
  () => ({
    customer: "cust_1",
    plan: "pro",
    payment: { brand: "visa", card_number: "4111 1111 1111 1111", card_cvc: "123" },
  }),
  () => alice,
);

const updateBilling = tg.guard(
  "billing.update",
  (args: { plan: string }) => `plan set to ${args.plan}`,
  () => alice,
);

const issueRefund = tg.guard(
  "refunds.issue",
  (args: { amount: number }, call) =>
    // a real backend verifies call.grant (toolgate/verify, examples/refund-service)
    `refunded ${args.amount} EUR (grant ${call.grant ? call.grant.slice(0, 16) + "…" : "none"})`,
  (args) => ({ ...alice, justification: `duplicate charge of ${args.amount} EUR on ticket t_42` }),
  {
    approval: wait ? "wait" : "throw",
    onProgress: (t: AccessRequestTask) => {
      if (t.task.status !== "pending" || announced.has(t.task.id)) return;
      announced.add(t.task.id);
      console.log(`  … waiting for an approver: ${controlUrl}/console/requests/${t.task.id}`);
      console.log(
        `    or: curl -X POST ${controlUrl}/v1/approvals/${t.task.id}/approve -H "Authorization: Bearer $(npx toolgate dev-token maria)"`,
      );
    },
    report: () => ({ changed: [{ resource: { type: "refund", id: "rf_demo" } }] }),
  },
);

// --- the agent's plan ------------------------------------------------------
async function step(what: string, run: () => Promise<unknown>): Promise<void> {
  console.log(`▶ ${what}`);
  try {
    console.log("  ✔ ran:", JSON.stringify(await run()));
  } catch (e) {
    if (e instanceof ToolDenied && e.code === "redaction_not_applicable") {
      // the tool ran (and was reported), but its result could not be redacted: withheld
      console.log(`  ✘ ran, result withheld: ${e.message}`);
    } else if (e instanceof ToolDenied) {
      console.log(`  ✘ not run: ${e.code} (${e.outcome ?? "—"})`);
      for (const r of e.reasons) console.log(`    - ${r.code}: ${r.message}`);
      if (e.task) console.log(`    access request ${e.task.task.id}: ${e.task.task.status}`);
    } else if (e instanceof ToolgateError) {
      console.log(`  ✘ toolgate error, not run: ${e.code} (HTTP ${e.status}) ${e.message}`);
    } else if (e instanceof Error && (e.name === "AbortError" || e.name === "TimeoutError")) {
      console.log(`  ✘ gave up waiting (${e.name}); the access request was cancelled`);
    } else throw e;
  }
}

const tools = await tg.searchActions({
  subject: alice.subject,
  resource: alice.resource,
  ...(alice.context ? { context: alice.context } : {}),
});
console.log(
  "tools alice may use here:",
  tools.results
    .map((r) => (r.properties?.needs_approval ? `${r.name} (approval)` : r.name))
    .join(", "),
);

await step("tickets.read t_42", () => readTicket({ ticket: "t_42" }));
await step("accounts.summary.read (payment fields redacted)", () => accountSummary({}));
await step("billing.update plan=enterprise", () => updateBilling({ plan: "enterprise" }));
await step("refunds.issue 20 EUR", () => issueRefund({ amount: 20 }));
await step("refunds.issue 120 EUR (above 50: needs an approval)", () =>
  issueRefund({ amount: 120 }, { signal: AbortSignal.timeout(10 * 60_000) }),
);
