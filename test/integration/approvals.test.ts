/**
 * needs_approval end to end (AuthZEN Access Request and Approval profile):
 * real HTTP on both ports, real ES256 tokens, the real SQLite store — and an
 * attack table where each row asserts the refusal and that nothing was granted.
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { decideAt, http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
  access_request?: { evaluation_id: string; expires_at: string };
}
interface TaskView {
  task: { id: string; status: string; status_endpoint: string; expires_at: string };
  result?: { mode: string; approval: { id: string; approved_until: string; state: string } };
}

const refund = (amount: number, extra: Record<string, unknown> = {}) =>
  refRequest({ tool: "refunds.issue", args: { amount, ...extra } });

let stateDir: string;
let tg: Toolgate;
let agent: string;
let control: string;

async function start(): Promise<void> {
  tg = await startTestToolgate({ TOOLGATE_STATE_DIR: stateDir, TOOLGATE_CONTROL_PORT: "0" });
  agent = tg.agentServer.url;
  control = tg.controlServer?.url ?? "";
}

beforeAll(async () => {
  stateDir = tempDir();
  await start();
});
afterAll(async () => {
  await tg.stop();
});

const decide = (req: Record<string, unknown>): Promise<Decision> => decideAt(agent, req);

/** alice's agent asks, gets needs_approval, and submits the access request. */
async function requestApproval(
  req: Record<string, unknown>,
  key?: string,
): Promise<TaskView & { evaluationId: string }> {
  const d = await decide(req);
  expect(d.outcome).toBe("needs_approval");
  const res = await postJson(
    agent,
    "/access/v1/requests",
    {
      ...req,
      denial: {
        evaluation_id: d.access_request?.evaluation_id,
        expires_at: d.access_request?.expires_at,
      },
    },
    key ? { "idempotency-key": key } : {},
  );
  expect(res.status).toBe(201);
  return { ...(res.json as TaskView), evaluationId: d.access_request?.evaluation_id ?? "" };
}

async function approve(id: string, who: string, roles: string[]) {
  return postJson(
    control,
    `/v1/approvals/${id}/approve`,
    { comment: "ok" },
    bearer(await token(who, { roles })),
  );
}

async function status(id: string): Promise<TaskView> {
  return (await http(agent, "GET", `/access/v1/requests/${id}`)).json as TaskView;
}

function withApproval(req: Record<string, unknown>, approval: unknown): Record<string, unknown> {
  return { ...req, context: { ...(req.context as object), approval } };
}

describe("the refund scenario from the README", () => {
  test("120 → needs_approval → request → maria approves → allow → a second use is denied", async () => {
    const req = refund(120);
    const view = await requestApproval(req, "idem-1");
    expect(view.task.status).toBe("pending");
    expect(view.task.status_endpoint).toBe(`${agent}/access/v1/requests/${view.task.id}`);
    expect(view.task.id).toMatch(/^apr_[A-Za-z0-9_-]{20,}$/);

    // the agent repeats itself with the same key: the same task, not a new one
    const again = await postJson(
      agent,
      "/access/v1/requests",
      { ...req, denial: { evaluation_id: view.evaluationId } },
      { "idempotency-key": "idem-1" },
    );
    expect(again.status).toBe(200);
    expect((again.json as TaskView).task.id).toBe(view.task.id);
    // the same key for another evaluation is a conflict
    const d = await decide(req);
    const conflict = await postJson(
      agent,
      "/access/v1/requests",
      { ...req, denial: { evaluation_id: d.access_request?.evaluation_id } },
      { "idempotency-key": "idem-1" },
    );
    expect(conflict.status).toBe(409);
    expect((conflict.json as { code: string }).code).toBe("idempotency_conflict");

    // maria sees what waits for her, with enough context and no secrets
    const list = await http(
      control,
      "GET",
      "/v1/approvals?status=pending",
      undefined,
      bearer(await token("maria", { roles: ["support_manager"] })),
    );
    expect(list.status).toBe(200);
    const entry = (list.json as { approvals: Array<Record<string, unknown>> }).approvals.find(
      (a) => a.id === view.task.id,
    );
    expect(entry).toMatchObject({
      initiator: "alice",
      agent: "support-triage",
      tool: "refunds.issue",
      reasons: [
        {
          code: "approval_required",
          message: "argument 'amount' > 50 needs an approval (rule 'refund_above_50')",
        },
      ],
      requirement: { approver_roles: ["support_manager"], single_use: true },
    });
    expect(
      (entry?.request as { action: { properties: { arguments: { amount: number } } } }).action
        .properties.arguments.amount,
    ).toBe(120);

    const ok = await approve(view.task.id, "maria", ["support_manager"]);
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ status: "approved", decided_by: "maria" });

    const st = await status(view.task.id);
    expect(st.task.status).toBe("approved");
    expect(st.result?.mode).toBe("reevaluate");
    expect(st.result?.approval.id).toBe(view.task.id);

    const allowed = await decide(withApproval(req, st.result?.approval));
    expect(allowed.outcome).toBe("allow");
    expect(allowed.reasons.map((r) => r.code)).toContain("approved");

    const replay = await decide(withApproval(req, st.result?.approval));
    expect(replay.outcome).toBe("deny");
    expect(replay.reasons.map((r) => r.code)).toEqual(["approval_used"]);
  });

  test("AuthZEN face: the requestable denial names the request endpoint", async () => {
    const res = await postJson(agent, "/access/v1/evaluation", refund(300));
    expect(res.json).toMatchObject({
      decision: false,
      context: {
        reason: "approval_required",
        access_request: { endpoint: `${agent}/access/v1/requests` },
      },
    });
    const meta = await http(agent, "GET", "/.well-known/authzen-configuration");
    expect((meta.json as Record<string, string>).access_request_endpoint).toBe(
      `${agent}/access/v1/requests`,
    );
  });

  test("the agent may cancel its own pending request; terminal states never change", async () => {
    const view = await requestApproval(refund(77));
    const cancel = await http(agent, "POST", `/access/v1/requests/${view.task.id}/cancel`);
    expect(cancel.status).toBe(200);
    expect((cancel.json as TaskView).task.status).toBe("cancelled");
    const late = await approve(view.task.id, "maria", ["support_manager"]);
    expect(late.status).toBe(409);
    expect((late.json as { code: string }).code).toBe("approval_not_pending");
    expect((await status(view.task.id)).task.status).toBe("cancelled");
  });

  test("a denied request stays denied, and its approval is refused", async () => {
    const req = refund(88);
    const view = await requestApproval(req);
    const deny = await postJson(
      control,
      `/v1/approvals/${view.task.id}/deny`,
      { comment: "no" },
      bearer(await token("maria", { roles: ["support_manager"] })),
    );
    expect(deny.status).toBe(200);
    const d = await decide(withApproval(req, { id: view.task.id }));
    expect(d.outcome).toBe("deny");
    expect(d.reasons.map((r) => r.code)).toEqual(["approval_denied"]);
  });

  test("replies.send: a support agent other than the initiator may approve", async () => {
    const req = refRequest({ tool: "replies.send", args: { body: "Hello" } });
    const view = await requestApproval(req);
    expect((await approve(view.task.id, "sam", ["support_agent"])).status).toBe(200);
    const st = await status(view.task.id);
    expect((await decide(withApproval(req, st.result?.approval))).outcome).toBe("allow");
  });
});

describe("attack table: each refused, nothing granted", () => {
  async function pendingTask(
    amount: number,
  ): Promise<{ req: Record<string, unknown>; id: string }> {
    const req = refund(amount);
    const view = await requestApproval(req);
    return { req, id: view.task.id };
  }

  async function expectNotGranted(req: Record<string, unknown>, id: string): Promise<void> {
    expect((await status(id)).task.status).toBe("pending");
    const d = await decide(withApproval(req, { id }));
    expect(d.outcome).not.toBe("allow");
  }

  test("approving on the agent port: no such route", async () => {
    const { req, id } = await pendingTask(101);
    for (const path of [`/v1/approvals/${id}/approve`, `/access/v1/requests/${id}/approve`]) {
      const r = await postJson(
        agent,
        path,
        {},
        bearer(await token("maria", { roles: ["support_manager"] })),
      );
      expect(r.status).toBe(404);
    }
    await expectNotGranted(req, id);
  });

  test.each([
    ["no token", () => Promise.resolve({})],
    [
      "a forged token",
      async () => bearer(await token("maria", { roles: ["support_manager"], forged: true })),
    ],
    [
      "an expired token",
      async () =>
        bearer(await token("maria", { roles: ["support_manager"], expiresInSeconds: -120 })),
    ],
    [
      "a wrong-audience token",
      async () =>
        bearer(await token("maria", { roles: ["support_manager"], audience: "someone-else" })),
    ],
    [
      "a wrong-issuer token",
      async () => bearer(await token("maria", { roles: ["support_manager"], issuer: "evil" })),
    ],
    ["garbage", () => Promise.resolve({ authorization: "Bearer not.a.jwt" })],
  ])("%s on the control port → 401", async (_name, headers) => {
    const { req, id } = await pendingTask(102);
    const r = await postJson(control, `/v1/approvals/${id}/approve`, {}, await headers());
    expect(r.status).toBe(401);
    expect(r.headers["www-authenticate"]).toMatch(/^Bearer/);
    expect((r.json as { code: string }).code).toBe("unauthenticated");
    expect((await http(control, "GET", "/v1/approvals", undefined, await headers())).status).toBe(
      401,
    );
    await expectNotGranted(req, id);
  });

  test.each([
    ["the initiator approving her own request", "alice", ["support_manager"], "initiator"],
    ["an approver without the required role", "sam", ["support_agent"], "roles"],
    ["the agent approving", "support-triage", ["support_manager"], "agent"],
    ["a contractor", "carol", ["contractor"], "roles"],
  ])("%s → 403", async (_name, who, roles, why) => {
    const { req, id } = await pendingTask(103);
    const r = await approve(id, who, roles);
    expect(r.status).toBe(403);
    expect((r.json as { code: string; message: string }).code).toBe("forbidden");
    expect((r.json as { message: string }).message).toContain(why);
    await expectNotGranted(req, id);
  });

  async function approved(amount: number): Promise<{
    req: Record<string, unknown>;
    approval: NonNullable<TaskView["result"]>["approval"];
  }> {
    const req = refund(amount);
    const view = await requestApproval(req);
    expect((await approve(view.task.id, "maria", ["support_manager"])).status).toBe(200);
    const st = await status(view.task.id);
    return { req, approval: st.result?.approval as NonNullable<TaskView["result"]>["approval"] };
  }

  test("arguments changed after approval → needs_approval again", async () => {
    const { req, approval } = await approved(120);
    const changed = refund(4999);
    const d = await decide(withApproval(changed, approval));
    expect(d.outcome).toBe("needs_approval");
    expect(d.reasons.map((r) => r.code)).toContain("approval_mismatch");
    // the original is still usable once
    expect((await decide(withApproval(req, approval))).outcome).toBe("allow");
  });

  test("another customer after approval → not allowed", async () => {
    const { approval } = await approved(121);
    const other = refRequest({
      tool: "refunds.issue",
      args: { amount: 121 },
      customer: "cust_2",
      jobCustomer: "cust_2",
    });
    const d = await decide(withApproval(other, approval));
    expect(d.outcome).toBe("needs_approval");
    expect(d.reasons.map((r) => r.code)).toContain("approval_mismatch");
  });

  test("another subject after approval → not allowed", async () => {
    const { approval } = await approved(122);
    const d = await decide(
      withApproval(
        refRequest({ user: "sam", tool: "refunds.issue", args: { amount: 122 } }),
        approval,
      ),
    );
    expect(d.outcome).not.toBe("allow");
  });

  test("an expired approval → deny approval_expired with a fresh access request", async () => {
    const { req, approval } = await approved(123);
    // time passes: the approval's validity ends (written straight into the store)
    const db = new DatabaseSync(join(stateDir, "approvals.db"));
    db.prepare("UPDATE tasks SET approved_until = ? WHERE id = ?").run(
      Date.now() - 1000,
      approval.id,
    );
    db.close();
    const d = await decide(withApproval(req, approval));
    expect(d.outcome).toBe("deny");
    expect(d.reasons[0]?.code).toBe("approval_expired");
    expect(d.access_request?.evaluation_id).toBe(d.decision_id);
    // the fresh access request can be submitted
    const res = await postJson(agent, "/access/v1/requests", {
      ...req,
      denial: { evaluation_id: d.access_request?.evaluation_id },
    });
    expect(res.status).toBe(201);
  });

  test("an access request that differs from its evaluation is refused", async () => {
    const d = await decide(refund(124));
    const res = await postJson(agent, "/access/v1/requests", {
      ...refund(1),
      denial: { evaluation_id: d.access_request?.evaluation_id },
    });
    expect(res.status).toBe(400);
    expect((res.json as { code: string }).code).toBe("invalid_denial_binding");
  });

  test("two concurrent uses of one single-use approval: exactly one wins", async () => {
    const { req, approval } = await approved(125);
    const results = await Promise.all(
      Array.from({ length: 8 }, () => decide(withApproval(req, approval))),
    );
    expect(results.filter((r) => r.outcome === "allow")).toHaveLength(1);
    expect(results.filter((r) => r.reasons.some((x) => x.code === "approval_used"))).toHaveLength(
      7,
    );
  });

  test("a restart between approval and use: still valid, still single-use", async () => {
    const { req, approval } = await approved(126);
    await tg.stop();
    await start();
    expect((await decide(withApproval(req, approval))).outcome).toBe("allow");
    expect((await decide(withApproval(req, approval))).outcome).toBe("deny");
  });
});
