/**
 * #19 — policy that sees the session, end to end on a real sidecar with the
 * committed reference bundle: web.post is allowed in a session until that
 * session reads customer_pii; then it needs a support_manager's approval
 * (egress_after_sensitive_read, naming the earlier read); other sessions are
 * unaffected; the session comes from the token in identity mode jwt.
 */
import type { Toolgate } from "../../src/app";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { decideAt, http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
  approval?: { approver_roles: string[] };
  access_request?: { evaluation_id: string };
}

const inSession = (tool: string, session: string | undefined, user = "alice") => {
  const r = refRequest({ tool, user });
  if (session !== undefined) r.context = { ...(r.context as object), session: { id: session } };
  return r;
};

describe("trusted mode (npm start's configuration)", () => {
  let tg: Toolgate;
  let agent: string;
  let control: string;
  beforeAll(async () => {
    tg = await startTestToolgate({ TOOLGATE_STATE_DIR: tempDir(), TOOLGATE_CONTROL_PORT: "0" });
    agent = tg.agentServer.url;
    control = tg.controlServer?.url ?? "";
  });
  afterAll(async () => {
    await tg.stop();
  });

  const decide = (req: Record<string, unknown>, headers: Record<string, string> = {}) =>
    decideAt(agent, req, headers);

  test("web.post: allowed in s-1 until s-1 reads customer_pii; then a manager must approve; s-2 unaffected", async () => {
    expect((await decide(inSession("web.post", "s-1"))).outcome).toBe("allow");

    const read = await decide(inSession("accounts.summary.read", "s-1"));
    expect(read.outcome).toBe("allow");
    const report = await postJson(agent, "/v1/actions", {
      decision_id: read.decision_id,
      status: "ok",
    });
    expect(report.status).toBeLessThan(300);

    const gated = await decide(inSession("web.post", "s-1"));
    expect(gated.outcome).toBe("needs_approval");
    expect(gated.reasons.map((r) => r.code)).toEqual(["egress_after_sensitive_read"]);
    expect(gated.reasons[0]?.message).toContain("accounts.summary.read");
    expect(gated.reasons[0]?.message).toContain(read.decision_id);
    expect(gated.approval?.approver_roles).toEqual(["support_manager"]);

    expect((await decide(inSession("web.post", "s-2"))).outcome).toBe("allow");
    // a denied read touches nothing: s-3 reads another customer's record (out of scope)
    const denied = await decide({
      ...inSession("tickets.read", "s-3"),
      resource: { type: "customer", id: "cust_9" },
    });
    expect(denied.outcome).toBe("deny");
    expect((await decide(inSession("web.post", "s-3"))).outcome).toBe("allow");
  });

  test("the approval round trip: maria approves, the same call goes through once", async () => {
    await decide(inSession("tickets.read", "s-4"));
    const req = inSession("web.post", "s-4");
    const gated = await decide(req);
    expect(gated.outcome).toBe("needs_approval");
    const sub = await postJson(agent, "/access/v1/requests", {
      ...req,
      denial: { evaluation_id: gated.access_request?.evaluation_id },
      justification: "post the status page update",
    });
    expect(sub.status).toBe(201);
    const id = (sub.json as { task: { id: string } }).task.id;
    // a support agent may not approve egress after a sensitive read
    const sam = await postJson(
      control,
      `/v1/approvals/${id}/approve`,
      {},
      bearer(await token("sam", { roles: ["support_agent"] })),
    );
    expect(sam.status).toBe(403);
    const ok = await postJson(
      control,
      `/v1/approvals/${id}/approve`,
      { comment: "fine" },
      bearer(await token("maria", { roles: ["support_manager"] })),
    );
    expect(ok.status).toBe(200);
    const task = (await http(agent, "GET", `/access/v1/requests/${id}`)).json as {
      result: { approval: unknown };
    };
    const approved = await decide({
      ...req,
      context: { ...(req.context as object), approval: task.result.approval },
    });
    expect(approved.outcome).toBe("allow");
    expect(approved.reasons.map((r) => r.code)).toContain("approved");
  });

  test("sessions are per subject: sam's s-9 does not see alice's reads in her s-9", async () => {
    await decide(inSession("accounts.summary.read", "s-9", "alice"));
    expect((await decide(inSession("web.post", "s-9", "alice"))).outcome).toBe("needs_approval");
    expect((await decide(inSession("web.post", "s-9", "sam"))).outcome).toBe("allow");
  });

  test("action search sees the session as a decision does", async () => {
    const search = async (session: string) => {
      const { subject, resource, context } = inSession("x", session);
      const r = await postJson(agent, "/access/v1/search/action", { subject, resource, context });
      return (
        r.json as { results: Array<{ name: string; properties?: Record<string, unknown> }> }
      ).results.find((x) => x.name === "web.post");
    };
    expect((await search("s-10"))?.properties).toBeUndefined();
    await decide(inSession("tickets.read", "s-10"));
    expect((await search("s-10"))?.properties).toMatchObject({ needs_approval: true });
  });

  test("egress that names no session needs an approval", async () => {
    const d = await decide(inSession("web.post", undefined));
    expect(d.outcome).toBe("needs_approval");
    expect(d.reasons.map((r) => r.code)).toEqual(["egress_without_session"]);
  });

  test("a session id that is not a short string is refused", async () => {
    for (const session of [{ id: 7 }, { id: "" }, { id: "x".repeat(257) }]) {
      const r = await postJson(agent, "/v1/decisions", {
        ...refRequest({ tool: "web.post" }),
        context: { ...(refRequest({ tool: "x" }).context as object), session },
      });
      expect(r.status).toBe(400);
      expect((r.json as { code: string }).code).toBe("invalid_request");
    }
  });
});

describe("identity mode jwt: the token's sid is the session", () => {
  let tg: Toolgate;
  let agent: string;
  beforeAll(async () => {
    tg = await startTestToolgate({ TOOLGATE_STATE_DIR: tempDir(), TOOLGATE_IDENTITY_MODE: "jwt" });
    agent = tg.agentServer.url;
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("a token whose sid is not a session id is refused, not read as no sid", async () => {
    for (const sid of [7, "", "x".repeat(257), ["a"]]) {
      const t = bearer(await token("alice", { claims: { sid } }));
      const r = await postJson(agent, "/v1/decisions", inSession("web.post", "body-a"), t);
      expect([sid, r.status, (r.json as { code: string }).code]).toEqual([
        sid,
        401,
        "unauthenticated",
      ]);
    }
  });

  test("a body that names another session cannot launder the read", async () => {
    const alice = bearer(await token("alice", { claims: { sid: "tok-1" } }));
    const read = await postJson(agent, "/v1/decisions", inSession("tickets.read", "body-a"), alice);
    expect((read.json as Decision).outcome).toBe("allow");
    const post = await postJson(agent, "/v1/decisions", inSession("web.post", "body-b"), alice);
    const d = post.json as Decision;
    expect(d.outcome).toBe("needs_approval");
    expect(d.reasons.map((r) => r.code)).toEqual(["egress_after_sensitive_read"]);
    // another token session is clean
    const other = bearer(await token("alice", { claims: { sid: "tok-2" } }));
    const clean = await postJson(agent, "/v1/decisions", inSession("web.post", "body-a"), other);
    expect((clean.json as Decision).outcome).toBe("allow");
  });
});
