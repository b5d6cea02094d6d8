/**
 * Job scope cannot be dodged (issue #13, item 3): the reference policy needs
 * a job id, so leaving it out is no way around a job-scoped kill switch; and
 * in identity mode jwt with identity.jwt.job_claim the token names the job,
 * so another id is refused before the policy runs.
 */
import type { Toolgate } from "../../src/app";
import { bearer, token } from "../helpers/tokens";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

interface Decision {
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
}

function withJobId(req: Record<string, unknown>, id: unknown): Record<string, unknown> {
  const ctx = req.context as { job: Record<string, unknown> };
  const job: Record<string, unknown> = { ...ctx.job };
  if (id === undefined) delete job.id;
  else job.id = id;
  return { ...req, context: { ...ctx, job } };
}

async function switchOnJob(tg: Toolgate, job: string): Promise<void> {
  const olga = bearer(await token("olga", { roles: ["admin"] }));
  const r = await postJson(
    tg.controlServer?.url ?? "",
    "/v1/killswitches",
    { scope: { job }, reason: "INC-7: job misbehaving" },
    olga,
  );
  expect(r.status).toBe(201);
}

describe("trusted mode: a job-scoped switch is not dodged by leaving the job id out", () => {
  let tg: Toolgate;
  beforeAll(async () => {
    tg = await startTestToolgate({ TOOLGATE_CONTROL_PORT: "0" });
    await switchOnJob(tg, "job_1");
  });
  afterAll(() => tg.stop());

  test.each([
    ["no id", undefined],
    ["an empty id", ""],
    ["a padded id", "job_1 "],
    ["a blank id", " \t "],
  ])("%s → deny missing_job on every face", async (_label, id) => {
    const req = withJobId(refRequest({ tool: "refunds.issue", args: { amount: 20 } }), id);
    const native = await postJson(tg.agentServer.url, "/v1/decisions", req);
    expect(native.status).toBe(200);
    expect((native.json as Decision).outcome).toBe("deny");
    expect((native.json as Decision).reasons.map((r) => r.code)).toContain("missing_job");
    const az = await postJson(tg.agentServer.url, "/access/v1/evaluation", req);
    expect(az.json).toMatchObject({ decision: false });
    const opa = await postJson(tg.agentServer.url, "/v1/data/toolgate/allow", { input: req });
    expect(opa.json).toMatchObject({ result: false });
  });

  test("the switched job itself is stopped", async () => {
    const req = refRequest({ tool: "refunds.issue", args: { amount: 20 } });
    const r = await postJson(tg.agentServer.url, "/v1/decisions", req);
    expect((r.json as Decision).reasons.map((x) => x.code)).toEqual(["job_disabled"]);
  });
});

describe("jwt mode with identity.jwt.job_claim: the token names the job", () => {
  let tg: Toolgate;
  let aliceJob1: Record<string, string>;
  beforeAll(async () => {
    tg = await startTestToolgate({
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_IDENTITY_MODE: "jwt",
      TOOLGATE_IDENTITY_JWT_JOB_CLAIM: "job",
    });
    aliceJob1 = bearer(await token("alice", { claims: { job: "job_1" } }));
  });
  afterAll(() => tg.stop());

  test("the token's job is decided as usual", async () => {
    const req = refRequest({ tool: "refunds.issue", args: { amount: 20 } });
    const r = await postJson(tg.agentServer.url, "/v1/decisions", req, aliceJob1);
    expect(r.status).toBe(200);
    expect((r.json as Decision).outcome).toBe("allow");
  });

  test.each([
    ["another job", "job_2"],
    ["another spelling", "JOB_1"],
    ["no job id", undefined],
  ])("%s → 403 job_mismatch, before the policy", async (_label, id) => {
    const req = withJobId(refRequest({ tool: "refunds.issue", args: { amount: 20 } }), id);
    for (const path of ["/v1/decisions", "/access/v1/evaluation"]) {
      const r = await postJson(tg.agentServer.url, path, req, aliceJob1);
      expect(r.status).toBe(403);
      expect(r.json).toMatchObject({ code: "job_mismatch" });
    }
  });

  test("a token without the job claim is refused", async () => {
    const noJob = bearer(await token("alice"));
    const r = await postJson(
      tg.agentServer.url,
      "/v1/decisions",
      refRequest({ tool: "tickets.read" }),
      noJob,
    );
    expect(r.status).toBe(403);
    expect(r.json).toMatchObject({ code: "job_mismatch" });
  });

  test("a switch on the token's job holds whatever job id the agent sends", async () => {
    await switchOnJob(tg, "job_1");
    const same = await postJson(
      tg.agentServer.url,
      "/v1/decisions",
      refRequest({ tool: "tickets.read" }),
      aliceJob1,
    );
    expect((same.json as Decision).reasons.map((x) => x.code)).toEqual(["job_disabled"]);
    const other = await postJson(
      tg.agentServer.url,
      "/v1/decisions",
      withJobId(refRequest({ tool: "tickets.read" }), "job_9"),
      aliceJob1,
    );
    expect(other.status).toBe(403);
  });
});
