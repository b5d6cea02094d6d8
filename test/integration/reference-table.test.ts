/**
 * BRIEF.md's reference deployment as a table, through all three faces of a
 * real sidecar (real HTTP on loopback, the committed wasm bundle).
 */
import type { Toolgate } from "../../src/app";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

interface Row {
  name: string;
  req: Record<string, unknown>;
  outcome: "allow" | "deny" | "needs_approval";
  /** A reason code the decision must carry. */
  code: string;
  approverRoles?: string[];
}

const table: Row[] = [
  {
    name: "alice reads her job customer's tickets",
    req: refRequest({ tool: "tickets.read" }),
    outcome: "allow",
    code: "granted",
  },
  {
    name: "alice reads another customer's tickets",
    req: refRequest({ tool: "tickets.read", customer: "cust_2" }),
    outcome: "deny",
    code: "out_of_scope",
  },
  {
    name: "alice reads the account summary (payment fields redacted)",
    req: refRequest({ tool: "accounts.summary.read" }),
    outcome: "allow",
    code: "granted",
  },
  {
    name: "alice reads another customer's account summary",
    req: refRequest({ tool: "accounts.summary.read", customer: "cust_9" }),
    outcome: "deny",
    code: "out_of_scope",
  },
  {
    name: "alice drafts a reply",
    req: refRequest({ tool: "replies.draft" }),
    outcome: "allow",
    code: "granted",
  },
  {
    name: "alice drafts a reply to another customer",
    req: refRequest({ tool: "replies.draft", customer: "cust_2" }),
    outcome: "deny",
    code: "out_of_scope",
  },
  {
    name: "alice sends a reply (supervised)",
    req: refRequest({ tool: "replies.send" }),
    outcome: "needs_approval",
    code: "approval_required",
    approverRoles: ["support_agent", "support_manager"],
  },
  {
    name: "alice refunds 20",
    req: refRequest({ tool: "refunds.issue", args: { amount: 20 } }),
    outcome: "allow",
    code: "granted",
  },
  {
    name: "alice refunds exactly 50",
    req: refRequest({ tool: "refunds.issue", args: { amount: 50 } }),
    outcome: "allow",
    code: "granted",
  },
  {
    name: "alice refunds 120",
    req: refRequest({ tool: "refunds.issue", args: { amount: 120 } }),
    outcome: "needs_approval",
    code: "approval_required",
    approverRoles: ["support_manager"],
  },
  {
    name: "alice refunds exactly 5000",
    req: refRequest({ tool: "refunds.issue", args: { amount: 5000 } }),
    outcome: "needs_approval",
    code: "approval_required",
    approverRoles: ["support_manager"],
  },
  {
    name: "alice refunds 9000",
    req: refRequest({ tool: "refunds.issue", args: { amount: 9000 } }),
    outcome: "deny",
    code: "limit_exceeded",
  },
  {
    name: "alice refunds 20 to another customer",
    req: refRequest({ tool: "refunds.issue", args: { amount: 20 }, customer: "cust_2" }),
    outcome: "deny",
    code: "out_of_scope",
  },
  {
    name: "carol (contractor) refunds 20",
    req: refRequest({ user: "carol", tool: "refunds.issue", args: { amount: 20 } }),
    outcome: "deny",
    code: "role_not_permitted",
  },
  {
    name: "carol claims a manager role in caller-asserted properties",
    req: {
      ...refRequest({ user: "carol", tool: "refunds.issue", args: { amount: 20 } }),
      subject: { type: "user", id: "carol", properties: { roles: ["support_manager"] } },
    },
    outcome: "deny",
    code: "role_not_permitted",
  },
  {
    name: "refund without an amount",
    req: refRequest({ tool: "refunds.issue", args: {} }),
    outcome: "deny",
    code: "invalid_arguments",
  },
  {
    name: "refund with a string amount",
    req: refRequest({ tool: "refunds.issue", args: { amount: "20" } }),
    outcome: "deny",
    code: "invalid_arguments",
  },
  {
    name: "billing.update",
    req: refRequest({ tool: "billing.update" }),
    outcome: "deny",
    code: "not_granted",
  },
  {
    name: "records.delete",
    req: refRequest({ tool: "records.delete" }),
    outcome: "deny",
    code: "not_granted",
  },
  {
    name: "customers.message_all",
    req: refRequest({ tool: "customers.message_all" }),
    outcome: "deny",
    code: "purpose_not_permitted",
  },
  {
    name: "an unknown tool",
    req: refRequest({ tool: "shell.exec" }),
    outcome: "deny",
    code: "unknown_tool",
  },
  {
    name: "an unknown user",
    req: refRequest({ user: "mallory", tool: "tickets.read" }),
    outcome: "deny",
    code: "unknown_subject",
  },
  {
    name: "a job with another purpose",
    req: refRequest({ tool: "tickets.read", purpose: "marketing" }),
    outcome: "deny",
    code: "purpose_not_permitted",
  },
  {
    name: "no job in the context",
    req: { ...refRequest({ tool: "tickets.read" }), context: {} },
    outcome: "deny",
    code: "missing_job",
  },
  {
    name: "maria (manager) sends a reply: still supervised",
    req: refRequest({ user: "maria", tool: "replies.send" }),
    outcome: "needs_approval",
    code: "approval_required",
  },
];

interface NativeDecision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
  obligations: Array<{ id: string; type: string; properties?: { fields?: string[] } }>;
  approval?: {
    approver_roles: string[];
    single_use: boolean;
    ttl_seconds: number;
    exclude: string[];
  };
  access_request?: { evaluation_id: string; expires_at: string };
  policy: { bundle: string; revision: string };
}

interface AuthzenDecision {
  decision: boolean;
  context?: {
    reason?: string;
    reasons?: Array<{ code: string }>;
    evaluation_id?: string;
    access_request?: { expires_at: string };
    obligations?: unknown[];
  };
}

let tg: Toolgate;
let base: string;

beforeAll(async () => {
  tg = await startTestToolgate();
  base = tg.agentServer.url;
});
afterAll(async () => {
  await tg.stop();
});

describe("native face: POST /v1/decisions", () => {
  test.each(table)("$name → $outcome ($code)", async (row) => {
    const res = await postJson(base, "/v1/decisions", row.req);
    expect(res.status).toBe(200);
    const d = res.json as NativeDecision;
    expect(d.outcome).toBe(row.outcome);
    expect(d.reasons.map((r) => r.code)).toContain(row.code);
    expect(d.decision_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(d.policy.bundle).toBe("support-triage");
    expect(d.policy.revision).toMatch(/^[0-9a-f]{16}$/);
    if (row.outcome === "needs_approval") {
      expect(d.approval?.approver_roles.sort()).toEqual(
        (row.approverRoles ?? d.approval?.approver_roles ?? []).sort(),
      );
      expect(d.approval?.exclude).toEqual(
        expect.arrayContaining([(row.req.subject as { id: string }).id, "support-triage"]),
      );
      expect(d.access_request?.evaluation_id).toBe(d.decision_id);
      expect(Date.parse(d.access_request?.expires_at ?? "")).toBeGreaterThan(Date.now());
    } else {
      expect(d.approval).toBeUndefined();
      expect(d.access_request).toBeUndefined();
    }
  });

  test("the account summary carries the redact obligation for payment fields", async () => {
    const d = (await postJson(base, "/v1/decisions", refRequest({ tool: "accounts.summary.read" })))
      .json as NativeDecision;
    const redact = d.obligations.find((o) => o.type === "redact");
    expect(redact?.properties?.fields).toEqual(expect.arrayContaining(["payment.card_number"]));
  });

  test("execute-class approvals are single use", async () => {
    const d = (
      await postJson(
        base,
        "/v1/decisions",
        refRequest({ tool: "refunds.issue", args: { amount: 120 } }),
      )
    ).json as NativeDecision;
    expect(d.approval?.single_use).toBe(true);
    expect(d.approval?.ttl_seconds).toBeGreaterThan(0);
  });
});

describe("AuthZEN face: POST /access/v1/evaluation", () => {
  test.each(table)("$name → $outcome", async (row) => {
    const res = await postJson(base, "/access/v1/evaluation", row.req, {
      "x-request-id": "req-42",
    });
    expect(res.status).toBe(200);
    expect(res.headers["x-request-id"]).toBe("req-42");
    const d = res.json as AuthzenDecision;
    expect(d.decision).toBe(row.outcome === "allow");
    if (row.outcome === "needs_approval") {
      expect(d.context?.reason).toBe("approval_required");
      expect(typeof d.context?.evaluation_id).toBe("string");
      expect(Date.parse(d.context?.access_request?.expires_at ?? "")).toBeGreaterThan(Date.now());
    } else if (row.outcome === "deny") {
      expect(d.context?.reason).toBe(d.context?.reasons?.[0]?.code);
      expect(d.context?.reasons?.map((r) => r.code)).toContain(row.code);
      expect(d.context?.access_request).toBeUndefined();
    }
  });

  test("the whole table as one /access/v1/evaluations batch (execute_all)", async () => {
    const res = await postJson(base, "/access/v1/evaluations", {
      evaluations: table.map((r) => r.req),
    });
    expect(res.status).toBe(200);
    const body = res.json as { evaluations: AuthzenDecision[] };
    expect(body.evaluations.map((e) => e.decision)).toEqual(
      table.map((r) => r.outcome === "allow"),
    );
  });

  test("evaluations: top-level defaults, item overrides replace the member whole", async () => {
    const defaults = refRequest({ tool: "tickets.read" });
    const res = await postJson(base, "/access/v1/evaluations", {
      ...defaults,
      evaluations: [
        {},
        { resource: { type: "customer", id: "cust_2" } },
        { action: { name: "refunds.issue", properties: { arguments: { amount: 20 } } } },
        {
          subject: { type: "user", id: "carol" },
          action: { name: "refunds.issue", properties: { arguments: { amount: 20 } } },
        },
      ],
    });
    expect(res.status).toBe(200);
    expect(
      (res.json as { evaluations: AuthzenDecision[] }).evaluations.map((e) => e.decision),
    ).toEqual([true, false, true, false]);
  });

  test.each([
    ["deny_on_first_deny", [true, false]],
    ["permit_on_first_permit", [false, true]],
    ["execute_all", [false, true, false, true]],
  ] as const)("evaluations_semantic %s stops where the spec says", async (semantic, expected) => {
    const allow = refRequest({ tool: "tickets.read" });
    const deny = refRequest({ tool: "billing.update" });
    const items =
      semantic === "deny_on_first_deny" ? [allow, deny, allow, deny] : [deny, allow, deny, allow];
    const res = await postJson(base, "/access/v1/evaluations", {
      evaluations: items,
      options: { evaluations_semantic: semantic },
    });
    expect(res.status).toBe(200);
    expect(
      (res.json as { evaluations: AuthzenDecision[] }).evaluations.map((e) => e.decision),
    ).toEqual(expected);
  });

  test("an empty evaluations list behaves as a single evaluation", async () => {
    const res = await postJson(base, "/access/v1/evaluations", {
      ...refRequest({ tool: "tickets.read" }),
      evaluations: [],
    });
    expect(res.status).toBe(200);
    expect((res.json as AuthzenDecision).decision).toBe(true);
  });

  test("GET /.well-known/authzen-configuration names the endpoints", async () => {
    const res = await fetch(`${base}/.well-known/authzen-configuration`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const meta = (await res.json()) as Record<string, string>;
    expect(meta.policy_decision_point).toBe(base);
    expect(meta.access_evaluation_endpoint).toBe(`${base}/access/v1/evaluation`);
    expect(meta.access_evaluations_endpoint).toBe(`${base}/access/v1/evaluations`);
  });
});

describe("OPA Data API face: POST /v1/data/{path}", () => {
  test.each(table)("$name → $outcome", async (row) => {
    const res = await postJson(base, "/v1/data/toolgate/decision", { input: row.req });
    expect(res.status).toBe(200);
    const body = res.json as { result: NativeDecision; decision_id: string };
    expect(body.result.outcome).toBe(row.outcome);
    expect(body.result.reasons.map((r) => r.code)).toContain(row.code);
    expect(body.decision_id).toBe(body.result.decision_id);

    const allow = await postJson(base, "/v1/data/toolgate/allow", { input: row.req });
    expect(allow.status).toBe(200);
    expect((allow.json as { result: boolean }).result).toBe(row.outcome === "allow");
  });

  test("an undefined document has no result", async () => {
    const res = await postJson(base, "/v1/data/toolgate/nothing_here", {
      input: refRequest({ tool: "tickets.read" }),
    });
    expect(res.status).toBe(200);
    expect(res.json).not.toHaveProperty("result");
  });
});
