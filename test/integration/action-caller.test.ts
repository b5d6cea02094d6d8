/**
 * In identity mode jwt an action report is the decision's subject's to make:
 * a report can release a budget reservation (status error, nothing changed),
 * so another user's token must not be able to report — and learns nothing of
 * the decision (the same 409 as an unknown id).
 */
import type { Toolgate } from "../../src/app";
import { bearer, token } from "../helpers/tokens";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

describe("action reports in identity mode jwt", () => {
  let tg: Toolgate;
  let alice: Record<string, string>;
  let bob: Record<string, string>;
  beforeAll(async () => {
    tg = await startTestToolgate({ TOOLGATE_IDENTITY_MODE: "jwt" });
    alice = bearer(await token("alice"));
    bob = bearer(await token("bob"));
  });
  afterAll(() => tg.stop());

  test("only the decision's subject may report its action", async () => {
    const d = await postJson(
      tg.agentServer.url,
      "/v1/decisions",
      refRequest({ tool: "refunds.issue", args: { amount: 20 } }),
      alice,
    );
    expect(d.json).toMatchObject({ outcome: "allow" });
    const id = (d.json as { decision_id: string }).decision_id;

    const byBob = await postJson(
      tg.agentServer.url,
      "/v1/actions",
      { decision_id: id, status: "error" },
      bob,
    );
    expect(byBob.status).toBe(409);
    expect(byBob.json).toMatchObject({ code: "action_unknown_decision" });
    const unknown = await postJson(
      tg.agentServer.url,
      "/v1/actions",
      { decision_id: "00000000-0000-4000-8000-000000000000", status: "error" },
      bob,
    );
    expect((unknown.json as { message: string }).message).toBe(
      (byBob.json as { message: string }).message.replace(
        id,
        "00000000-0000-4000-8000-000000000000",
      ),
    );

    const noToken = await postJson(tg.agentServer.url, "/v1/actions", {
      decision_id: id,
      status: "ok",
    });
    expect(noToken.status).toBe(401);

    const byAlice = await postJson(
      tg.agentServer.url,
      "/v1/actions",
      { decision_id: id, status: "ok" },
      alice,
    );
    expect(byAlice.status).toBe(200);
  });
});
