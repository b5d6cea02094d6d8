/**
 * Issue #13, items 6 and 8 — who may read or cancel an access request, and
 * how many access requests (and so how many approvals) one evaluation and one
 * initiator can produce. Real HTTP on both ports, real ES256 tokens, the real
 * SQLite store; each attack asserts the refusal and that nothing was granted.
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";
import type { HttpResult } from "../helpers/toolgate";

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string }>;
  access_request?: { evaluation_id: string; expires_at: string };
}
interface TaskView {
  task: { id: string; status: string };
  result?: { mode: string; approval: { id: string } };
}
interface ErrorBody {
  code: string;
  message: string;
  retry_after?: number;
}

const refund = (amount: number, user = "alice") =>
  refRequest({ user, tool: "refunds.issue", args: { amount } });
const withApproval = (req: Record<string, unknown>, approval: unknown) => ({
  ...req,
  context: { ...(req.context as object), approval },
});
const code = (r: HttpResult): string => (r.json as ErrorBody).code;
const maria = async () => bearer(await token("maria", { roles: ["support_manager"] }));

/** Tasks the store holds for one evaluation (read straight from approvals.db). */
function tasksFor(stateDir: string, evaluationId: string): number {
  const db = new DatabaseSync(join(stateDir, "approvals.db"), { readOnly: true });
  try {
    const row = db
      .prepare("SELECT COUNT(*) AS n FROM tasks WHERE evaluation_id = ?")
      .get(evaluationId) as { n: number };
    return Number(row.n);
  } finally {
    db.close();
  }
}

interface Running {
  tg: Toolgate;
  agent: string;
  control: string;
  stateDir: string;
}

async function run(env: Record<string, string> = {}): Promise<Running> {
  const stateDir = tempDir();
  const tg = await startTestToolgate({
    TOOLGATE_STATE_DIR: stateDir,
    TOOLGATE_CONTROL_PORT: "0",
    ...env,
  });
  return { tg, agent: tg.agentServer.url, control: tg.controlServer?.url ?? "", stateDir };
}

/** POST /v1/decisions → needs_approval; returns the request and its evaluation id. */
async function evaluate(
  r: Running,
  req: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<string> {
  const res = await postJson(r.agent, "/v1/decisions", req, headers);
  expect(res.status).toBe(200);
  const d = res.json as Decision;
  expect(d.outcome).toBe("needs_approval");
  return d.access_request?.evaluation_id ?? "";
}

function submit(
  r: Running,
  req: Record<string, unknown>,
  evaluationId: string,
  headers: Record<string, string> = {},
): Promise<HttpResult> {
  return postJson(
    r.agent,
    "/access/v1/requests",
    { ...req, denial: { evaluation_id: evaluationId } },
    headers,
  );
}

describe("item 6: in identity mode jwt only the initiator reads or cancels her request", () => {
  let r: Running;
  beforeAll(async () => {
    r = await run({ TOOLGATE_IDENTITY_MODE: "jwt" });
  });
  afterAll(async () => {
    await r.tg.stop();
  });

  async function alicesTask(amount: number): Promise<{ id: string; req: Record<string, unknown> }> {
    const alice = bearer(await token("alice"));
    const req = refund(amount);
    const sub = await submit(r, req, await evaluate(r, req, alice), alice);
    expect(sub.status).toBe(201);
    return { id: (sub.json as TaskView).task.id, req };
  }

  async function statusAs(id: string, headers: Record<string, string>): Promise<HttpResult> {
    return http(r.agent, "GET", `/access/v1/requests/${id}`, undefined, headers);
  }

  test.each([
    ["no token", () => Promise.resolve({})],
    ["a forged token", async () => bearer(await token("alice", { forged: true }))],
    ["an expired token", async () => bearer(await token("alice", { expiresInSeconds: -120 }))],
    ["garbage", () => Promise.resolve({ authorization: "Bearer not.a.jwt" })],
  ])("%s → 401 on read and on cancel; the task stays pending", async (_name, headers) => {
    const { id } = await alicesTask(130);
    const h = await headers();
    for (const [method, path] of [
      ["GET", `/access/v1/requests/${id}`],
      ["POST", `/access/v1/requests/${id}/cancel`],
    ] as const) {
      const res = await http(r.agent, method, path, undefined, h);
      expect(res.status).toBe(401);
      expect(code(res)).toBe("unauthenticated");
      expect(res.headers["www-authenticate"]).toMatch(/^Bearer/);
      expect(res.text).not.toContain(id);
    }
    const mine = await statusAs(id, bearer(await token("alice")));
    expect((mine.json as TaskView).task.status).toBe("pending");
  });

  test("bob's token cannot read or cancel alice's request: 404, as for an id that does not exist", async () => {
    const { id } = await alicesTask(131);
    const bob = bearer(await token("bob"));
    const read = await statusAs(id, bob);
    expect(read.status).toBe(404);
    expect(read.json).toEqual({ code: "approval_not_found", message: `no approval ${id}` });
    const cancel = await http(r.agent, "POST", `/access/v1/requests/${id}/cancel`, undefined, bob);
    expect(cancel.status).toBe(404);
    expect(cancel.json).toEqual({ code: "approval_not_found", message: `no approval ${id}` });
    // indistinguishable from an id that was never issued
    const ghost = "apr_AAAAAAAAAAAAAAAAAAAAAA";
    expect((await statusAs(ghost, bob)).json).toEqual({
      code: "approval_not_found",
      message: `no approval ${ghost}`,
    });
    // alice's request is untouched and hers to read
    const mine = await statusAs(id, bearer(await token("alice")));
    expect(mine.status).toBe(200);
    expect((mine.json as TaskView).task).toMatchObject({ id, status: "pending" });
  });

  test("alice's token reads and cancels her own request", async () => {
    const { id } = await alicesTask(132);
    const alice = bearer(await token("alice"));
    expect((await statusAs(id, alice)).status).toBe(200);
    const cancel = await http(
      r.agent,
      "POST",
      `/access/v1/requests/${id}/cancel`,
      undefined,
      alice,
    );
    expect(cancel.status).toBe(200);
    expect((cancel.json as TaskView).task.status).toBe("cancelled");
  });

  test("the approval object goes to the initiator only; bob cannot fetch it once approved", async () => {
    const { id, req } = await alicesTask(133);
    expect(
      (await postJson(r.control, `/v1/approvals/${id}/approve`, {}, await maria())).status,
    ).toBe(200);
    const bobRead = await statusAs(id, bearer(await token("sam")));
    expect(bobRead.status).toBe(404);
    expect(bobRead.text).not.toContain("reevaluate");
    const alice = bearer(await token("alice"));
    const st = (await statusAs(id, alice)).json as TaskView;
    expect(st.result?.approval.id).toBe(id);
    const allowed = await postJson(
      r.agent,
      "/v1/decisions",
      withApproval(req, st.result?.approval),
      alice,
    );
    expect((allowed.json as Decision).outcome).toBe("allow");
  });

  test("another user citing alice's evaluation gets 404, and no task is created", async () => {
    const alice = bearer(await token("alice"));
    const req = refund(134);
    const evaluationId = await evaluate(r, req, alice);
    const sam = bearer(await token("sam"));
    const theirs = await submit(r, refund(134, "sam"), evaluationId, sam);
    expect(theirs.status).toBe(404);
    expect(code(theirs)).toBe("approval_not_found");
    expect(tasksFor(r.stateDir, evaluationId)).toBe(0);
    expect((await submit(r, req, evaluationId, alice)).status).toBe(201);
  });
});

describe("item 8: one evaluation gives at most one access request", () => {
  let r: Running;
  beforeAll(async () => {
    r = await run();
  });
  afterAll(async () => {
    await r.tg.stop();
  });

  test("two Idempotency-Keys on one evaluation → one task, and one allow after approval", async () => {
    const req = refund(140);
    const evaluationId = await evaluate(r, req);
    const first = await submit(r, req, evaluationId, { "idempotency-key": "k-140-a" });
    expect(first.status).toBe(201);
    const id = (first.json as TaskView).task.id;
    const second = await submit(r, req, evaluationId, { "idempotency-key": "k-140-b" });
    expect(second.status).toBe(200);
    expect((second.json as TaskView).task.id).toBe(id);
    const keyless = await submit(r, req, evaluationId);
    expect(keyless.status).toBe(200);
    expect((keyless.json as TaskView).task.id).toBe(id);
    expect(tasksFor(r.stateDir, evaluationId)).toBe(1);

    expect(
      (await postJson(r.control, `/v1/approvals/${id}/approve`, {}, await maria())).status,
    ).toBe(200);
    // after approval, a resubmission still returns that one task (no second approval to win)
    const late = await submit(r, req, evaluationId, { "idempotency-key": "k-140-c" });
    expect(late.status).toBe(200);
    expect((late.json as TaskView).task.id).toBe(id);
    expect(tasksFor(r.stateDir, evaluationId)).toBe(1);

    const approval = (late.json as TaskView).result?.approval;
    const outcomes: string[] = [];
    for (let i = 0; i < 3; i++) {
      const d = await postJson(r.agent, "/v1/decisions", withApproval(req, approval));
      outcomes.push((d.json as Decision).outcome);
    }
    expect(outcomes).toEqual(["allow", "deny", "deny"]);
  });

  test("concurrent submissions with distinct keys on one evaluation: one task, one 201", async () => {
    const req = refund(141);
    const evaluationId = await evaluate(r, req);
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        submit(r, req, evaluationId, { "idempotency-key": `k-141-${i}` }),
      ),
    );
    expect(results.map((x) => x.status).sort()).toEqual([200, 200, 200, 200, 200, 201]);
    expect(new Set(results.map((x) => (x.json as TaskView).task.id)).size).toBe(1);
    expect(tasksFor(r.stateDir, evaluationId)).toBe(1);
  });

  test.each([
    ["denied", "deny"],
    ["cancelled", "cancel"],
  ])(
    "a %s request cannot be reopened by citing the same evaluation: 409 access_request_closed",
    async (status, how) => {
      const req = refund(how === "deny" ? 142 : 143);
      const evaluationId = await evaluate(r, req);
      const sub = await submit(r, req, evaluationId, { "idempotency-key": `k-${how}-1` });
      expect(sub.status).toBe(201);
      const id = (sub.json as TaskView).task.id;
      const closed =
        how === "deny"
          ? await postJson(r.control, `/v1/approvals/${id}/deny`, { comment: "no" }, await maria())
          : await http(r.agent, "POST", `/access/v1/requests/${id}/cancel`);
      expect(closed.status).toBe(200);

      for (const headers of [{}, { "idempotency-key": `k-${how}-2` }] as Array<
        Record<string, string>
      >) {
        const again = await submit(r, req, evaluationId, headers);
        expect(again.status).toBe(409);
        expect(code(again)).toBe("access_request_closed");
        expect((again.json as ErrorBody).message).toContain(status);
      }
      expect(tasksFor(r.stateDir, evaluationId)).toBe(1);
      // the same key as the closed submission still names that task (a retry sees its outcome)
      const retry = await submit(r, req, evaluationId, { "idempotency-key": `k-${how}-1` });
      expect(retry.status).toBe(200);
      expect((retry.json as TaskView).task).toMatchObject({ id, status });

      // nothing was granted: the closed task's approval is refused on re-evaluation
      const d = await postJson(r.agent, "/v1/decisions", withApproval(req, { id }));
      expect((d.json as Decision).outcome).not.toBe("allow");

      // the way forward is a new evaluation (and with it a new request the approver sees)
      const fresh = await evaluate(r, req);
      expect(fresh).not.toBe(evaluationId);
      expect((await submit(r, req, fresh)).status).toBe(201);
    },
  );
});

describe("item 8: access requests are rate-limited per initiator", () => {
  let r: Running;
  beforeAll(async () => {
    r = await run({
      TOOLGATE_APPROVAL_REQUEST_LIMIT_MAX: "3",
      TOOLGATE_APPROVAL_REQUEST_LIMIT_WINDOW_SECONDS: "600",
    });
  });
  afterAll(async () => {
    await r.tg.stop();
  });

  test("the fourth open or denied request in the window → 429 with retry_after; others unaffected", async () => {
    const ids: string[] = [];
    const reqs: Array<[Record<string, unknown>, string]> = [];
    for (const amount of [150, 151, 152]) {
      const req = refund(amount);
      const ev = await evaluate(r, req);
      const sub = await submit(r, req, ev);
      expect(sub.status).toBe(201);
      ids.push((sub.json as TaskView).task.id);
      reqs.push([req, ev]);
    }
    // one is denied: it still counts (a "no" is not an invitation to ask again at once)
    expect(
      (await postJson(r.control, `/v1/approvals/${ids[0]}/deny`, {}, await maria())).status,
    ).toBe(200);

    const req = refund(153);
    const ev = await evaluate(r, req);
    const limited = await submit(r, req, ev);
    expect(limited.status).toBe(429);
    const body = limited.json as ErrorBody;
    expect(body.code).toBe("access_request_rate_limited");
    expect(body.retry_after).toEqual(expect.any(Number));
    expect(body.retry_after).toBeGreaterThanOrEqual(1);
    expect(body.retry_after).toBeLessThanOrEqual(600);
    expect(limited.headers["retry-after"]).toBe(String(body.retry_after));
    expect(tasksFor(r.stateDir, ev)).toBe(0);

    // resubmitting a request that already exists is not a new request: still answered
    const [req1, ev1] = reqs[1] as [Record<string, unknown>, string];
    const same = await submit(r, req1, ev1);
    expect(same.status).toBe(200);
    expect((same.json as TaskView).task.id).toBe(ids[1]);

    // another initiator has a budget of her own
    const sams = refund(154, "sam");
    expect((await submit(r, sams, await evaluate(r, sams))).status).toBe(201);

    // an approved request no longer counts: alice may ask once more
    expect(
      (await postJson(r.control, `/v1/approvals/${ids[1]}/approve`, {}, await maria())).status,
    ).toBe(200);
    expect((await submit(r, req, ev)).status).toBe(201);
    const next = refund(155);
    expect(code(await submit(r, next, await evaluate(r, next)))).toBe(
      "access_request_rate_limited",
    );
  });
});
