/**
 * The notification payloads and the agent's justification, without a network:
 * what a message says, read from the approvers' (redacted) view; text from the
 * agent or the policy cannot smuggle mentions, links or formatting into Slack
 * or Teams; the CloudEvents envelope; the justification's checks and redaction.
 */
import {
  cloudEvent,
  consoleLink,
  messageFacts,
  slackEscape,
  slackMessage,
  teamsEscape,
  teamsMessage,
} from "../../src/approvals/notify";
import { approverView } from "../../src/approvals/rules";
import { redactJustification } from "../../src/approvals/service";
import type { ApprovalTask, EvaluationRecord } from "../../src/approvals/store";
import { Redactor } from "../../src/redaction/redact";

const redactor = new Redactor({ hmacKey: Buffer.alloc(32, 7), keyId: "k1", mode: "hash" });
const redact = <T>(v: T): T => redactor.redact(v);

const task: ApprovalTask = {
  id: "apr_abc/def",
  evaluationId: "ev1",
  agentId: "support-triage",
  status: "pending",
  idempotencyKey: null,
  createdAt: Date.UTC(2031, 0, 1),
  expiresAt: Date.UTC(2031, 0, 1, 1),
  decidedAt: null,
  decidedBy: null,
  decidedByRoles: null,
  comment: null,
  approvedUntil: null,
  usedAt: null,
  usedByDecisionId: null,
  revokedAt: null,
  revokedBy: null,
  justification: "Customer <!channel> was charged twice; see <https://evil.example|the ticket>",
};
const evaluation: EvaluationRecord = {
  evaluationId: "ev1",
  decisionId: "d1",
  bindingHash: "h",
  bindingContextMembers: ["job"],
  redactedRequest: {
    subject: { type: "user", id: "alice" },
    action: { name: "refunds.issue", properties: { arguments: { amount: 120, currency: "EUR" } } },
    resource: { type: "customer", id: "cust_1" },
    context: { job: { id: "job_1", customer_id: "cust_42" } },
  },
  requirement: {
    approver_roles: ["support_manager"],
    single_use: true,
    ttl_seconds: 900,
    exclude: [],
  },
  reasons: [
    { code: "refund_above_50", message: "argument 'amount' > 50 needs an approval" },
    { code: "old_code", message: "" },
  ],
  initiator: "alice",
  agentId: "support-triage",
  tool: "refunds.issue",
  toolClass: "execute",
  toolStage: "autonomous",
  policyRevision: "rev-1",
  createdAt: Date.UTC(2031, 0, 1),
  expiresAt: Date.UTC(2031, 0, 1, 0, 15),
};

describe("the approvers' view", () => {
  test("reasons with words, the agent's justification labelled as the agent's, stats when read", () => {
    const v = approverView(task, evaluation, { requested: 3, approved: 1 });
    expect(v.reasons).toEqual(evaluation.reasons);
    expect(v.agent_justification).toBe(task.justification);
    expect(v.stats).toEqual({ requested_today: 3, approved_today: 1 });
    expect(v).toMatchObject({ tool_class: "execute", tool_stage: "autonomous" });
    expect("justification" in v).toBe(false);
    expect(approverView(task, evaluation).stats).toBeUndefined();
  });
});

describe("message facts", () => {
  const facts = messageFacts(approverView(task, evaluation), "https://c.example/");
  test("tool, requester, amount, customer, reasons in words (the code when a reason has none), the link", () => {
    expect(facts).toMatchObject({
      tool: "refunds.issue",
      toolKind: "execute, autonomous",
      initiator: "alice",
      agent: "support-triage",
      argument: "amount: 120 EUR",
      customer: "cust_42",
      reasons: ["argument 'amount' > 50 needs an approval", "old_code"],
      link: "https://c.example/console/requests/apr_abc%2Fdef",
    });
    expect(consoleLink(null, "x")).toBeUndefined();
  });

  test("without an amount: up to three key arguments", () => {
    const e = {
      ...evaluation,
      redactedRequest: {
        action: { properties: { arguments: { to: "bob", subject: "hi", body: "x", cc: "y" } } },
      },
    };
    expect(messageFacts(approverView(task, e), null).argument).toBe(
      "to: bob, subject: hi, body: x",
    );
  });
});

describe("Slack", () => {
  test("mentions and links in the agent's text are escaped; the justification is quoted as the agent's", () => {
    const m = slackMessage(messageFacts(approverView(task, evaluation), "https://c.example"));
    const s = JSON.stringify(m);
    expect(s).not.toContain("<!channel>");
    expect(s).not.toContain("<https://evil.example");
    expect(s).toContain("&lt;!channel&gt;");
    expect(s).toContain("The agent's justification* (the agent's own words, not toolgate's)");
    expect(slackEscape("a & <b>")).toBe("a &amp; &lt;b&gt;");
    const blocks = m.blocks as Array<{ type: string }>;
    expect(blocks.map((b) => b.type)).toEqual([
      "header",
      "section",
      "section",
      "section",
      "actions",
      "context",
    ]);
  });
  test("no console base: no button", () => {
    const m = slackMessage(messageFacts(approverView(task, evaluation), null));
    expect((m.blocks as Array<{ type: string }>).some((b) => b.type === "actions")).toBe(false);
  });
});

describe("Teams", () => {
  test("an Adaptive Card whose text cannot carry links or formatting", () => {
    const m = teamsMessage(messageFacts(approverView(task, evaluation), "https://c.example"));
    const card = (m.attachments as Array<{ content: Record<string, unknown> }>)[0]?.content;
    expect(card).toMatchObject({ type: "AdaptiveCard", version: "1.4" });
    expect(JSON.stringify(card)).not.toContain("[the ticket](");
    expect(teamsEscape("[x](http://e) *b*")).toBe("\\[x\\]\\(http://e\\) \\*b\\*");
  });
});

describe("CloudEvents", () => {
  test("the required attributes, data the payload", () => {
    const ce = cloudEvent({ id: "apr_1" }, { id: "e1", now: new Date(Date.UTC(2031, 0, 1)) });
    expect(ce).toEqual({
      specversion: "1.0",
      id: "e1",
      source: "/toolgate",
      type: "dev.toolgate.approval.requested",
      subject: "apr_1",
      time: "2031-01-01T00:00:00.000Z",
      datacontenttype: "application/json",
      data: {
        event: "approval.pending",
        approval: { id: "apr_1" },
        sent_at: "2031-01-01T00:00:00.000Z",
      },
    });
  });
});

describe("the agent's justification", () => {
  test("secret shapes are redacted, the rest kept, lines and tabs too", () => {
    const jwt =
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTk5OTk5OTk5OX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
    const out = redactJustification(
      `charged twice\n\tbearer ${jwt}\npassword=hunter2hunter2`,
      redact,
    );
    expect(out).toMatch(/^charged twice\n\t/);
    expect(out).not.toContain(jwt);
    expect(out).not.toContain("hunter2hunter2");
  });
  test("absent is null; control characters, non-strings and > 2000 characters are refused", () => {
    expect(redactJustification(undefined, redact)).toBeNull();
    expect(redactJustification(null, redact)).toBeNull();
    for (const bad of ["a\u0000b", "a\rb", "\u001b[2J", "\u0085", "x".repeat(2001), 7, {}])
      expect(() => redactJustification(bad, redact)).toThrow(/justification/);
    const words = "word ".repeat(400);
    expect(redactJustification(words, redact)).toBe(words);
  });
  test("a long line is redacted in pieces, none cut, a secret across the old 1024 cut still found", () => {
    const jwt =
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTk5OTk5OTk5OX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
    const line = `${"a ".repeat(495)}password: ${jwt} ${"b ".repeat(300)}`;
    const out = redactJustification(line, redact) ?? "";
    expect(out).not.toContain(jwt);
    expect(out.startsWith("a ".repeat(495))).toBe(true);
    expect(out.endsWith("b ".repeat(300))).toBe(true);
  });
});
