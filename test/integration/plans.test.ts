/**
 * Plan approvals end to end over real HTTP on both ports, with the real
 * reference bundle (opa-wasm), real ES256 tokens and the real SQLite store:
 * an agent submits a plan, maria approves it once on the control port, and
 * each later call inside an envelope is allowed with its own grant and
 * counted; calls outside, over the uses, after revocation, on another job or
 * subject go back to needs_approval with a plan_* reason. The plan survives
 * a restart; in identity mode jwt only its initiator reads or cancels it.
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { fillContainmentDb, freeContainmentDb, limitsBundle } from "../helpers/containment";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { decideAt, http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";
import { refundPlan } from "../helpers/plans";

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
  grant?: string;
  access_request?: unknown;
}
interface PlanView {
  task: { id: string; kind: string; status: string; status_endpoint: string; expires_at: string };
  result?: {
    mode: string;
    plan: {
      id: string;
      approved_until: string;
      envelopes: Array<{ uses: number; max_uses: number }>;
    };
  };
}

const refund = (amount: number, args: Record<string, unknown> = { currency: "EUR" }) =>
  refRequest({ tool: "refunds.issue", args: { amount, ...args } });
const withPlan = (req: Record<string, unknown>, id: string): Record<string, unknown> => ({
  ...req,
  context: { ...(req.context as object), plan: { id } },
});
const maria = async () => bearer(await token("maria", { roles: ["support_manager"] }));
const admin = async () => bearer(await token("root", { roles: ["admin"] }));

let stateDir: string;
let tg: Toolgate;
let agent: string;
let control: string;

async function start(env: Record<string, string> = {}): Promise<void> {
  tg = await startTestToolgate({ TOOLGATE_STATE_DIR: stateDir, ...env });
  agent = tg.agentServer.url;
  control = tg.controlServer?.url ?? "";
}

const decide = (req: Record<string, unknown>, headers: Record<string, string> = {}) =>
  decideAt(agent, req, headers);

async function submit(body: Record<string, unknown>, headers: Record<string, string> = {}) {
  return postJson(agent, "/access/v1/plans", body, headers);
}

async function submitted(body: Record<string, unknown> = refundPlan()): Promise<PlanView> {
  const res = await submit(body);
  expect(res.status).toBe(201);
  return res.json as PlanView;
}

async function approve(id: string, headers?: Record<string, string>) {
  return postJson(
    control,
    `/v1/approvals/${id}/approve`,
    { comment: "ok" },
    headers ?? (await maria()),
  );
}

const codes = (d: Decision) => d.reasons.map((r) => r.code);

describe("plan approvals in identity mode trusted", () => {
  beforeAll(async () => {
    stateDir = tempDir();
    await start();
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("submit → maria approves → calls inside allowed with grants and counted, then used up", async () => {
    const view = await submitted();
    expect(view.task).toMatchObject({ kind: "plan", status: "pending" });
    expect(view.task.id).toMatch(/^pln_[A-Za-z0-9_-]{20,}$/);
    expect(view.task.status_endpoint).toBe(`${agent}/access/v1/plans/${view.task.id}`);
    const id = view.task.id;

    // pending: a call presenting it still needs approval, saying why
    const early = await decide(withPlan(refund(120), id));
    expect(early.outcome).toBe("needs_approval");
    expect(codes(early)).toContain("plan_pending");

    // maria sees it in the one queue, as a plan with its envelopes
    const list = await http(
      control,
      "GET",
      "/v1/approvals?status=pending",
      undefined,
      await maria(),
    );
    const entry = (list.json as { approvals: Array<Record<string, unknown>> }).approvals.find(
      (a) => a.id === id,
    );
    expect(entry).toMatchObject({
      kind: "plan",
      initiator: "alice",
      agent: "support-triage",
      agent_justification: "refund the three damaged orders of this customer",
      requirement: { approver_roles: ["support_manager"] },
      plan: {
        envelopes: [
          {
            tool: "refunds.issue",
            arguments: { amount: { min: 51, max: 200 }, currency: "EUR" },
            max_uses: 3,
            uses: 0,
          },
        ],
      },
    });
    // sam (support_agent) is not eligible: not listed, and refused
    const sam = bearer(await token("sam", { roles: ["support_agent"] }));
    const samList = await http(control, "GET", "/v1/approvals?status=pending", undefined, sam);
    expect(
      (samList.json as { approvals: Array<{ id: string }> }).approvals.map((a) => a.id),
    ).not.toContain(id);
    const refused = await approve(id, sam);
    expect(refused.status).toBe(403);
    // alice cannot approve her own plan
    const self = await approve(id, bearer(await token("alice", { roles: ["support_manager"] })));
    expect(self.status).toBe(403);

    const ok = await approve(id);
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ id, kind: "plan", status: "approved", decided_by: "maria" });

    const status = (await http(agent, "GET", `/access/v1/plans/${id}`)).json as PlanView;
    expect(status.result).toMatchObject({ mode: "plan", plan: { id } });

    // three calls inside: each allowed with its own grant, counted
    const grants = new Set<string>();
    for (const amount of [51, 200, 120.5]) {
      const d = await decide(withPlan(refund(amount), id));
      expect(d.outcome).toBe("allow");
      expect(typeof d.grant).toBe("string");
      grants.add(d.grant ?? "");
      expect(codes(d)).toContain("plan_use");
      expect(d.access_request).toBeUndefined();
    }
    expect(grants.size).toBe(3);
    const after = (await http(agent, "GET", `/access/v1/plans/${id}`)).json as PlanView;
    expect(after.result?.plan.envelopes[0]).toMatchObject({ uses: 3, max_uses: 3 });

    // the fourth: used up, needs approval again
    const fourth = await decide(withPlan(refund(100), id));
    expect(fourth.outcome).toBe("needs_approval");
    expect(codes(fourth)).toContain("plan_used_up");

    // each use is audited as an approval event, recorded with its decision
    const db = new DatabaseSync(join(stateDir, "approvals.db"), { readOnly: true });
    try {
      const events = db
        .prepare("SELECT event FROM plan_events WHERE plan_id = ? ORDER BY seq")
        .all(id)
        .map((r) => r.event);
      expect(events).toEqual(["requested", "approved", "used", "used", "used"]);
      // no argument value in clear beside the redacted copy: the matching form keeps hashes
      const row = db.prepare("SELECT envelopes_json FROM plans WHERE id = ?").get(id) as {
        envelopes_json: string;
      };
      expect(row.envelopes_json).not.toContain("EUR");
    } finally {
      db.close();
    }
  });

  test("outside the envelope: needs_approval with plan_mismatch, nothing counted", async () => {
    const { task } = await submitted();
    expect((await approve(task.id)).status).toBe(200);
    const outside: Array<[string, Record<string, unknown>]> = [
      ["amount above the bound", refund(200.01)],
      ["another currency", refund(100, { currency: "USD" })],
      ["an extra argument", refund(100, { currency: "EUR", reason: "x" })],
      [
        "another customer",
        refRequest({
          tool: "refunds.issue",
          args: { amount: 100, currency: "EUR" },
          customer: "cust_2",
          jobCustomer: "cust_2",
        }),
      ],
      [
        "another subject",
        refRequest({ tool: "refunds.issue", args: { amount: 100, currency: "EUR" }, user: "sam" }),
      ],
    ];
    for (const [what, req] of outside) {
      const d = await decide(withPlan(req, task.id));
      expect([what, d.outcome]).toEqual([what, "needs_approval"]);
      expect([what, codes(d)]).toEqual([what, expect.arrayContaining(["plan_mismatch"])]);
      expect(d.grant).toBeUndefined();
    }
    // a deny stays a deny: above the refund limit (5000), or an amount that is no number
    for (const req of [
      refund(6000),
      refRequest({ tool: "refunds.issue", args: { amount: "100", currency: "EUR" } }),
    ]) {
      const deny = await decide(withPlan(req, task.id));
      expect(deny.outcome).toBe("deny");
      expect(deny.grant).toBeUndefined();
    }
    // below the approval threshold the policy allows on its own: no use is counted
    const small = await decide(withPlan(refund(20), task.id));
    expect(small.outcome).toBe("allow");
    expect(codes(small)).not.toContain("plan_use");
    const view = (await http(agent, "GET", `/access/v1/plans/${task.id}`)).json as PlanView;
    expect(view.result?.plan.envelopes[0]?.uses).toBe(0);
    // an unknown plan id
    const unknown = await decide(withPlan(refund(100), "pln_AAAAAAAAAAAAAAAAAAAAAA"));
    expect(codes(unknown)).toContain("plan_unknown");
  });

  test("revoked by an admin: plan_revoked; denied: never usable", async () => {
    const { task } = await submitted();
    expect((await approve(task.id)).status).toBe(200);
    expect((await decide(withPlan(refund(100), task.id))).outcome).toBe("allow");
    const notAdmin = await postJson(control, `/v1/approvals/${task.id}/revoke`, {}, await maria());
    expect(notAdmin.status).toBe(403);
    const revoked = await postJson(control, `/v1/approvals/${task.id}/revoke`, {}, await admin());
    expect(revoked.status).toBe(200);
    expect(revoked.json).toMatchObject({ kind: "plan" });
    expect(typeof (revoked.json as { revoked_at: unknown }).revoked_at).toBe("string");
    const d = await decide(withPlan(refund(100), task.id));
    expect(d.outcome).toBe("needs_approval");
    expect(codes(d)).toContain("plan_revoked");

    const other = await submitted();
    const denied = await postJson(
      control,
      `/v1/approvals/${other.task.id}/deny`,
      {},
      await maria(),
    );
    expect(denied.status).toBe(200);
    expect(codes(await decide(withPlan(refund(100), other.task.id)))).toContain("plan_not_usable");
    // deciding twice: not pending
    expect((await approve(other.task.id)).status).toBe(409);
  });

  test("the agent cancels its pending plan", async () => {
    const { task } = await submitted();
    const res = await postJson(agent, `/access/v1/plans/${task.id}/cancel`, {});
    expect(res.status).toBe(200);
    expect((res.json as PlanView).task.status).toBe("cancelled");
    expect((await approve(task.id)).status).toBe(409);
  });

  test("submission is checked: denied, unneeded and malformed plans are refused", async () => {
    const denied = await submit(
      refundPlan({
        plan: {
          calls: [{ tool: "refunds.issue", arguments: { amount: { max: 9000 } }, max_uses: 1 }],
        },
      }),
    );
    expect(denied.status).toBe(409);
    expect(denied.json).toMatchObject({ code: "plan_denied" });
    expect((denied.json as { message: string }).message).toContain("plan.calls[0]");
    const unneeded = await submit(
      refundPlan({ plan: { calls: [{ tool: "tickets.read", max_uses: 5 }] } }),
    );
    expect(unneeded.status).toBe(409);
    expect(unneeded.json).toMatchObject({ code: "plan_unneeded" });
    const excluded = await submit(
      refundPlan({ plan: { calls: [{ tool: "customers.message_all", max_uses: 1 }] } }),
    );
    expect(excluded.status).toBe(409);
    expect(excluded.json).toMatchObject({ code: "plan_denied" });
    const bad: Array<[string, Record<string, unknown>]> = [
      ["no calls", refundPlan({ plan: { calls: [] } })],
      [
        "51 envelopes",
        refundPlan({
          plan: {
            calls: Array.from({ length: 51 }, () => ({ tool: "refunds.issue", max_uses: 1 })),
          },
        }),
      ],
      ["max_uses 0", refundPlan({ plan: { calls: [{ tool: "refunds.issue", max_uses: 0 }] } })],
      [
        "max_uses 1001",
        refundPlan({ plan: { calls: [{ tool: "refunds.issue", max_uses: 1001 }] } }),
      ],
      [
        "min > max",
        refundPlan({
          plan: {
            calls: [
              { tool: "refunds.issue", arguments: { amount: { min: 9, max: 1 } }, max_uses: 1 },
            ],
          },
        }),
      ],
      [
        "an unknown envelope member",
        refundPlan({ plan: { calls: [{ tool: "refunds.issue", max_uses: 1, sneaky: 1 }] } }),
      ],
      ["no job", { ...refundPlan(), context: {} }],
      ["no resource anywhere", { ...refundPlan(), resource: undefined }],
    ];
    for (const [what, body] of bad) {
      const res = await submit(body);
      expect([what, res.status]).toEqual([what, 400]);
    }
    const proto = await http(
      agent,
      "POST",
      "/access/v1/plans",
      '{"subject":{"type":"user","id":"alice"},"context":{"job":{}},"plan":{"calls":[{"tool":"x","max_uses":1,"arguments":{"__proto__":{"a":1}}}]}}',
      { "content-type": "application/json" },
    );
    expect(proto.status).toBe(400);
  });

  test("a restart keeps the plan, its approval and its count", async () => {
    const { task } = await submitted();
    expect((await approve(task.id)).status).toBe(200);
    expect((await decide(withPlan(refund(100), task.id))).outcome).toBe("allow");
    await tg.stop();
    await start();
    const view = (await http(agent, "GET", `/access/v1/plans/${task.id}`)).json as PlanView;
    expect(view.task.status).toBe("approved");
    expect(view.result?.plan.envelopes[0]?.uses).toBe(1);
    expect((await decide(withPlan(refund(100), task.id))).outcome).toBe("allow");
    expect((await decide(withPlan(refund(100), task.id))).outcome).toBe("allow");
    expect(codes(await decide(withPlan(refund(100), task.id)))).toContain("plan_used_up");
  });
});

describe("plan approvals in identity mode jwt: only the initiator", () => {
  beforeAll(async () => {
    stateDir = tempDir();
    await start({ TOOLGATE_IDENTITY_MODE: "jwt" });
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("alice submits, reads and uses her plan; sam can neither read, cancel nor use it", async () => {
    const alice = bearer(await token("alice"));
    const sam = bearer(await token("sam"));
    const noToken = await submit(refundPlan());
    expect(noToken.status).toBe(401);
    const asSam = await submit(refundPlan(), sam);
    expect(asSam.status).toBe(403);
    expect(asSam.json).toMatchObject({ code: "subject_mismatch" });
    const res = await submit(refundPlan(), alice);
    expect(res.status).toBe(201);
    const id = (res.json as PlanView).task.id;
    expect((await http(agent, "GET", `/access/v1/plans/${id}`, undefined, alice)).status).toBe(200);
    const read = await http(agent, "GET", `/access/v1/plans/${id}`, undefined, sam);
    expect(read.status).toBe(404);
    const cancel = await postJson(agent, `/access/v1/plans/${id}/cancel`, {}, sam);
    expect(cancel.status).toBe(404);
    expect((await approve(id)).status).toBe(200);
    // sam presenting alice's plan for his own call: bound to another subject
    const samCall = refRequest({
      tool: "refunds.issue",
      args: { amount: 100, currency: "EUR" },
      user: "sam",
    });
    const d = await decide(withPlan(samCall, id), sam);
    expect(d.outcome).toBe("needs_approval");
    expect(codes(d)).toContain("plan_mismatch");
    const mine = await decide(withPlan(refund(100), id), alice);
    expect(mine.outcome).toBe("allow");
  });
});

describe("plan approvals with a budget: a call denied after the policy allowed it spends no use", () => {
  // refunds are budgeted, so an allow reserves its amount in containment.db before it is answered
  const bundle = limitsBundle({
    budgets: [
      {
        tool: "refunds.issue",
        argument: "amount",
        per: "job",
        window_seconds: 3600,
        max_total: 10_000,
      },
    ],
  });
  beforeAll(async () => {
    stateDir = tempDir();
    await start({ TOOLGATE_BUNDLE: bundle });
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("use 1; the reservation cannot be written: denied, still use 1; then use 2", async () => {
    const { task } = await submitted();
    expect((await approve(task.id)).status).toBe(200);
    const uses = async () =>
      ((await http(agent, "GET", `/access/v1/plans/${task.id}`)).json as PlanView).result?.plan
        .envelopes[0]?.uses;

    const first = await decide(withPlan(refund(150), task.id));
    expect(first.outcome).toBe("allow");
    expect(first.reasons.find((r) => r.code === "plan_use")?.message).toMatch(/use 1 of 3/);
    expect(await uses()).toBe(1);

    // containment.db is full (real SQLITE_FULL): the plan and the policy allow the call, the
    // budget reservation fails, the call is denied (fail closed) — and no use is spent on it
    fillContainmentDb(tg);
    const denied = await decide(withPlan(refund(150), task.id));
    expect(denied.outcome).toBe("deny");
    expect(codes(denied)).toEqual(["budget_unavailable"]);
    expect(denied.grant).toBeUndefined();
    expect(await uses()).toBe(1);
    freeContainmentDb(tg);

    const second = await decide(withPlan(refund(60), task.id));
    expect(second.outcome).toBe("allow");
    expect(second.reasons.find((r) => r.code === "plan_use")?.message).toMatch(/use 2 of 3/);
    expect(await uses()).toBe(2);

    const db = new DatabaseSync(join(stateDir, "approvals.db"), { readOnly: true });
    try {
      const events = db
        .prepare("SELECT event FROM plan_events WHERE plan_id = ? ORDER BY seq")
        .all(task.id)
        .map((r) => r.event);
      expect(events).toEqual(["requested", "approved", "used", "used"]);
    } finally {
      db.close();
    }
  });
});
