/**
 * Containment end to end over real HTTP: kill switches (each scope, under a
 * concurrent stream, across a restart, expiry), token-bucket rates and
 * windowed budgets at their edges (with a controlled clock), and budgets
 * surviving a restart.
 */
import type { Toolgate } from "../../src/app";
import { libraryBundle, startWithClock } from "../helpers/containment";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { decideAt, http, postJson, refRequest } from "../helpers/toolgate";

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
  retry_after?: number;
}

let olga: Record<string, string>;
beforeAll(async () => {
  olga = bearer(await token("olga", { roles: ["admin"] }));
});

const decide = (tg: Toolgate, req: Record<string, unknown>): Promise<Decision> =>
  decideAt(tg.agentServer.url, req);
const codes = (d: Decision): string[] => d.reasons.map((r) => r.code);
const ctl = (tg: Toolgate): string => tg.controlServer?.url ?? "";

function withJob(req: Record<string, unknown>, id: string): Record<string, unknown> {
  const ctx = req.context as { job: Record<string, unknown> };
  return { ...req, context: { ...ctx, job: { ...ctx.job, id } } };
}

async function killswitch(tg: Toolgate, body: unknown, headers = olga) {
  return postJson(ctl(tg), "/v1/killswitches", body, headers);
}

describe("kill switches", () => {
  let tg: Toolgate;
  let stateDir: string;
  beforeAll(async () => {
    stateDir = tempDir();
    tg = await startWithClock({ TOOLGATE_STATE_DIR: stateDir });
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("only an admin may flip a switch; the agent port has no such route", async () => {
    const body = { scope: { tool: "tickets.read" }, reason: "test" };
    expect((await killswitch(tg, body, {})).status).toBe(401);
    const maria = bearer(await token("maria", { roles: ["support_manager"] }));
    const r = await killswitch(tg, body, maria);
    expect(r.status).toBe(403);
    expect((r.json as { code: string }).code).toBe("forbidden");
    const agentSide = await postJson(tg.agentServer.url, "/v1/killswitches", body);
    expect(agentSide.status).toBe(404);
    expect((await decide(tg, refRequest({ tool: "tickets.read" }))).outcome).toBe("allow");
  });

  test("bad bodies get a clear 400", async () => {
    for (const body of [
      { scope: { tool: "x" } },
      { scope: { colour: "red" }, reason: "r" },
      { scope: { tool: "" }, reason: "r" },
      { scope: {}, reason: "r", expires_at: "2000-01-01T00:00:00Z" },
      { scope: { agent: "someone-else" }, reason: "r" },
      [],
    ]) {
      const r = await killswitch(tg, body);
      expect(r.status).toBe(400);
      expect((r.json as { code: string }).code).toBe("invalid_request");
    }
  });

  test.each([
    ["tool", { tool: "tickets.read" }, "tool_disabled", refRequest({ tool: "replies.draft" })],
    ["agent", { agent: "support-triage" }, "agent_disabled", undefined],
    [
      "subject",
      { subject: "alice" },
      "subject_disabled",
      refRequest({ tool: "tickets.read", user: "sam" }),
    ],
    [
      "job",
      { job: "job_1" },
      "job_disabled",
      withJob(refRequest({ tool: "tickets.read" }), "job_2"),
    ],
    ["everything (empty scope)", {}, "agent_disabled", undefined],
  ])("scope %s: denied %s, others unaffected, lifted by DELETE", async (_n, scope, code, other) => {
    const req = refRequest({ tool: "tickets.read" });
    expect((await decide(tg, req)).outcome).toBe("allow");
    const created = await killswitch(tg, { scope, reason: `incident: ${code}` });
    expect(created.status).toBe(201);
    const ks = created.json as Record<string, unknown>;
    expect(ks).toMatchObject({
      scope,
      reason: `incident: ${code}`,
      created_by: "olga",
      expires_at: null,
    });
    expect(ks.id).toMatch(/^ks_/);
    const denied = await decide(tg, req);
    expect(denied.outcome).toBe("deny");
    expect(codes(denied)).toEqual([code]);
    expect(denied.reasons[0]?.message).toContain(String(ks.id));
    if (other !== undefined) expect((await decide(tg, other)).outcome).toBe("allow");
    const list = await http(ctl(tg), "GET", "/v1/killswitches", undefined, olga);
    expect((list.json as { killswitches: unknown[] }).killswitches).toEqual([ks]);
    const del = await http(ctl(tg), "DELETE", `/v1/killswitches/${String(ks.id)}`, undefined, olga);
    expect(del.status).toBe(200);
    expect(del.json).toMatchObject({ id: ks.id, deleted_by: "olga" });
    expect((await decide(tg, req)).outcome).toBe("allow");
    const again = await http(
      ctl(tg),
      "DELETE",
      `/v1/killswitches/${String(ks.id)}`,
      undefined,
      olga,
    );
    expect(again.status).toBe(404);
    expect((again.json as { code: string }).code).toBe("killswitch_not_found");
  });

  test("a switch flipped during a concurrent stream: no allow for any decision started after the API call returned", async () => {
    const req = refRequest({ tool: "tickets.read" });
    let returnedAt = Infinity;
    let stop = false;
    const seen: Array<{ started: number; outcome: string; code: string | undefined }> = [];
    const worker = async (): Promise<void> => {
      while (!stop) {
        const started = performance.now();
        const d = await decide(tg, req);
        seen.push({ started, outcome: d.outcome, code: d.reasons[0]?.code });
      }
    };
    const workers = Array.from({ length: 8 }, () => worker());
    await new Promise((r) => setTimeout(r, 50));
    const created = await killswitch(tg, { scope: { tool: "tickets.read" }, reason: "stream" });
    returnedAt = performance.now();
    expect(created.status).toBe(201);
    await new Promise((r) => setTimeout(r, 100));
    stop = true;
    await Promise.all(workers);
    const before = seen.filter((s) => s.started < returnedAt);
    const after = seen.filter((s) => s.started > returnedAt);
    expect(before.some((s) => s.outcome === "allow")).toBe(true);
    expect(after.length).toBeGreaterThan(0);
    for (const s of after) expect(s).toMatchObject({ outcome: "deny", code: "tool_disabled" });
    const id = (created.json as { id: string }).id;
    await http(ctl(tg), "DELETE", `/v1/killswitches/${id}`, undefined, olga);
  });

  test("switches survive a restart, are listed with who/when/why, and the gauge counts them", async () => {
    const created = await killswitch(tg, {
      scope: { tool: "refunds.issue" },
      reason: "refund backend misbehaving",
    });
    expect(created.status).toBe(201);
    await tg.stop();
    tg = await startWithClock({ TOOLGATE_STATE_DIR: stateDir });
    const d = await decide(tg, refRequest({ tool: "refunds.issue", args: { amount: 10 } }));
    expect(codes(d)).toEqual(["tool_disabled"]);
    const list = await http(ctl(tg), "GET", "/v1/killswitches", undefined, olga);
    expect((list.json as { killswitches: unknown[] }).killswitches).toEqual([created.json]);
    const hist = await http(ctl(tg), "GET", "/v1/killswitches?history=true", undefined, olga);
    expect((hist.json as { killswitches: unknown[] }).killswitches.length).toBeGreaterThan(5);
    const metrics = await http(ctl(tg), "GET", "/metrics");
    expect(metrics.text).toMatch(/^toolgate_killswitches_active 1$/m);
    await http(
      ctl(tg),
      "DELETE",
      `/v1/killswitches/${(created.json as { id: string }).id}`,
      undefined,
      olga,
    );
  });
});

describe("switch expiry, rates and budgets (controlled clock)", () => {
  let now = Date.parse("2030-01-01T00:00:00Z");
  let tg: Toolgate;
  let stateDir: string;
  const bundle = (): string =>
    libraryBundle((data) => {
      data.limits = {
        rates: [{ per: "tool", tool: "tickets.read", rate_per_second: 2, burst: 3 }],
        budgets: [
          {
            tool: "refunds.issue",
            argument: "amount",
            per: "job",
            window_seconds: 86400,
            max_total: 500,
          },
          { tool: "replies.draft", per: "customer", window_seconds: 3600, max_total: 3 },
        ],
      };
    }, "limits-1");
  let bundlePath: string;
  const start = async (): Promise<void> => {
    tg = await startWithClock(
      { TOOLGATE_STATE_DIR: stateDir, TOOLGATE_BUNDLE: bundlePath },
      { now: () => now },
    );
  };
  beforeAll(async () => {
    stateDir = tempDir();
    bundlePath = bundle();
    await start();
  });
  afterAll(async () => {
    await tg.stop();
  });

  async function report(id: string, status: "ok" | "error" = "ok"): Promise<void> {
    const r = await postJson(tg.agentServer.url, "/v1/actions", { decision_id: id, status });
    expect(r.status).toBe(200);
  }

  test("an expired switch stops applying", async () => {
    const req = refRequest({ tool: "replies.draft", customer: "cust_9", jobCustomer: "cust_9" });
    const created = await killswitch(tg, {
      scope: { tool: "replies.draft" },
      reason: "one minute",
      expires_at: new Date(now + 60_000).toISOString(),
    });
    expect(created.status).toBe(201);
    expect(codes(await decide(tg, req))).toEqual(["tool_disabled"]);
    now += 59_999;
    expect(codes(await decide(tg, req))).toEqual(["tool_disabled"]);
    now += 1;
    expect((await decide(tg, req)).outcome).toBe("allow");
    const list = await http(ctl(tg), "GET", "/v1/killswitches", undefined, olga);
    expect((list.json as { killswitches: unknown[] }).killswitches).toEqual([]);
  });

  test("token bucket: burst, then rate_limited with retry_after, refilled at the rate", async () => {
    const req = refRequest({ tool: "tickets.read" });
    for (let i = 0; i < 3; i++) expect((await decide(tg, req)).outcome).toBe("allow");
    const limited = await decide(tg, req);
    expect(limited.outcome).toBe("deny");
    expect(codes(limited)).toEqual(["rate_limited"]);
    expect(limited.retry_after).toBe(1);
    const az = await postJson(tg.agentServer.url, "/access/v1/evaluation", req);
    expect(az.json).toMatchObject({
      decision: false,
      context: { reason: "rate_limited", retry_after: 1 },
    });
    now += 499; // 0.998 tokens: still limited
    expect(codes(await decide(tg, req))).toEqual(["rate_limited"]);
    now += 1; // 1.0 token
    expect((await decide(tg, req)).outcome).toBe("allow");
    expect(codes(await decide(tg, req))).toEqual(["rate_limited"]);
    now += 10_000; // refilled to the burst, never above
    for (let i = 0; i < 3; i++) expect((await decide(tg, req)).outcome).toBe("allow");
    expect(codes(await decide(tg, req))).toEqual(["rate_limited"]);
    // another tool has no bucket
    expect((await decide(tg, refRequest({ tool: "accounts.summary.read" }))).outcome).toBe("allow");
  });

  test("argument budget: reserved at the allow, released by an error report, exact edge allowed, survives a restart, window slides", async () => {
    const refund = (amount: number, job = "job_b") =>
      withJob(refRequest({ tool: "refunds.issue", args: { amount } }), job);
    const t0 = now;
    // 8 × 50 = 400 confirmed; a failed action is released and counts nothing
    for (let i = 0; i < 8; i++) await report((await decide(tg, refund(50))).decision_id);
    await report((await decide(tg, refund(50))).decision_id, "error");
    // an allow not (yet) reported is reserved: it counts (450)
    const unreported = await decide(tg, refund(50));
    expect(unreported.outcome).toBe("allow");
    now += 1000;
    // 450 + 50 = 500: exactly the budget, allowed
    const edge = await decide(tg, refund(50));
    expect(edge.outcome).toBe("allow");
    await report(edge.decision_id);
    // 500 + 1 > 500
    const over = await decide(tg, refund(1));
    expect(codes(over)).toEqual(["budget_exceeded"]);
    expect(over.retry_after).toBe(86400 - 1);
    // another job has its own budget
    expect((await decide(tg, refund(50, "job_c"))).outcome).toBe("allow");

    await tg.stop();
    await start();
    expect(codes(await decide(tg, refund(1)))).toEqual(["budget_exceeded"]);
    // the first 8 leave the window; the edge and the never-reported reservation still count (100)
    now = t0 + 86_400_000;
    expect((await decide(tg, refund(400))).outcome).toBe("needs_approval"); // budget ok; > 50 needs approval
    expect(codes(await decide(tg, refund(401)))).toEqual(["budget_exceeded"]);
  });

  test("count budget: messages per customer per hour ≤ 3", async () => {
    const draft = (job: string) =>
      withJob(
        refRequest({ tool: "replies.draft", customer: "cust_7", jobCustomer: "cust_7" }),
        job,
      );
    for (let i = 0; i < 3; i++) await report((await decide(tg, draft(`job_${i}`))).decision_id);
    const fourth = await decide(tg, draft("job_9"));
    expect(codes(fourth)).toEqual(["budget_exceeded"]);
    expect(fourth.retry_after).toBe(3600);
    now += 3_600_000;
    expect((await decide(tg, draft("job_9"))).outcome).toBe("allow");
  });
});
