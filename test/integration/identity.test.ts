/**
 * Verified subjects on the agent port (identity.mode jwt), approval events in
 * audit, and the development identity.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace";
import type { Toolgate } from "../../src/app";
import { captureLogger } from "../helpers/capture";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

describe("identity.mode jwt on the agent port", () => {
  let tg: Toolgate;
  const exporter = new InMemorySpanExporter();
  beforeAll(async () => {
    tg = await startTestToolgate({ TOOLGATE_IDENTITY_MODE: "jwt" }, { spanExporter: exporter });
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("a verified token whose sub is the subject: decided, marked jwt", async () => {
    const res = await postJson(
      tg.agentServer.url,
      "/v1/decisions",
      refRequest({ tool: "tickets.read" }),
      bearer(await token("alice")),
    );
    expect(res.status).toBe(200);
    expect((res.json as { outcome: string }).outcome).toBe("allow");
    await tg.auditor?.flush();
    const span = exporter.getFinishedSpans().find((s) => s.name === "authorize tickets.read");
    expect(span?.attributes["toolgate.subject.method"]).toBe("jwt");
  });

  test.each([
    ["no token", () => Promise.resolve({}), 401, "unauthenticated"],
    [
      "a forged token",
      async () => bearer(await token("alice", { forged: true })),
      401,
      "unauthenticated",
    ],
    [
      "an expired token",
      async () => bearer(await token("alice", { expiresInSeconds: -300 })),
      401,
      "unauthenticated",
    ],
    [
      "a control-port-only token",
      async () => bearer(await token("alice", { audience: "toolgate-control" })),
      401,
      "unauthenticated",
    ],
    [
      "someone else's token (claiming to act for alice)",
      async () => bearer(await token("carol")),
      403,
      "subject_mismatch",
    ],
  ])("%s: refused on every face, before any evaluation", async (_name, headers, status, code) => {
    const h = await headers();
    const req = refRequest({ tool: "tickets.read" });
    for (const [path, body] of [
      ["/v1/decisions", req],
      ["/access/v1/evaluation", req],
      ["/v1/data/toolgate/allow", { input: req }],
    ] as const) {
      const res = await postJson(tg.agentServer.url, path, body, h);
      expect(res.status).toBe(status);
      expect(JSON.stringify(res.json)).toContain(code);
      expect(res.text).not.toContain("eyJ"); // never echoes a token
    }
  });
});

describe("approval events are audited with the approver's identity", () => {
  test("requested, approved and used: spans linked to the decision, log lines, trail", async () => {
    const exporter = new InMemorySpanExporter();
    const logs = captureLogger();
    const tg = await startTestToolgate(
      { TOOLGATE_CONTROL_PORT: "0" },
      { spanExporter: exporter, log: logs.log },
    );
    try {
      const req = refRequest({ tool: "refunds.issue", args: { amount: 150 } });
      const d = (await postJson(tg.agentServer.url, "/v1/decisions", req)).json as {
        decision_id: string;
        access_request: { evaluation_id: string };
      };
      const sub = await postJson(tg.agentServer.url, "/access/v1/requests", {
        ...req,
        denial: { evaluation_id: d.access_request.evaluation_id },
      });
      const id = (sub.json as { task: { id: string } }).task.id;
      const control = tg.controlServer?.url ?? "";
      expect(
        (
          await postJson(
            control,
            `/v1/approvals/${id}/approve`,
            {},
            bearer(await token("maria", { roles: ["support_manager"] })),
          )
        ).status,
      ).toBe(200);
      // a refused approver is a security-relevant event too
      await postJson(
        control,
        `/v1/approvals/${id}/approve`,
        {},
        bearer(await token("alice", { roles: ["support_manager"] })),
      );
      const st = (await http(tg.agentServer.url, "GET", `/access/v1/requests/${id}`)).json as {
        result: { approval: unknown };
      };
      const allow = await postJson(tg.agentServer.url, "/v1/decisions", {
        ...req,
        context: { ...(req.context as object), approval: st.result.approval },
      });
      expect((allow.json as { outcome: string }).outcome).toBe("allow");
      await tg.auditor?.flush();

      const spans = exporter.getFinishedSpans();
      const decisionSpan = spans.find(
        (s) =>
          s.attributes["toolgate.decision.id"] === d.decision_id && s.name.startsWith("authorize"),
      );
      for (const event of ["requested", "approved", "used", "refused"]) {
        const s = spans.find((x) => x.name === `toolgate.approval ${event}`);
        expect(s).toBeDefined();
        expect(s?.attributes["toolgate.approval.id"]).toBe(id);
        expect(s?.links[0]?.context.spanId).toBe(decisionSpan?.spanContext().spanId);
      }
      expect(
        spans.find((x) => x.name === "toolgate.approval approved")?.attributes[
          "toolgate.approver.id"
        ],
      ).toBe("maria");
      expect(
        spans.find((x) => x.name === "toolgate.approval refused")?.attributes[
          "toolgate.approval.refusal"
        ],
      ).toContain("initiator");
      const events = logs.lines().map((l) => l.event);
      expect(events).toEqual(
        expect.arrayContaining([
          "approval.requested",
          "approval.approved",
          "approval.used",
          "approval.refused",
        ]),
      );
      expect(logs.lines().find((l) => l.event === "approval.approved")).toMatchObject({
        approver: "maria",
        approver_roles: ["support_manager"],
      });
    } finally {
      await tg.stop();
    }
  });
});

describe("toolgate dev-token", () => {
  const root = join(__dirname, "..", "..");
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [join(root, "bin", "toolgate.js"), "dev-token", ...args], {
      cwd: root,
      encoding: "utf8",
      env: { ...process.env, ...env },
    });

  test("prints a token the default configuration accepts", async () => {
    const r = run(["maria"]);
    expect(r.status).toBe(0);
    const t = r.stdout.trim();
    const tg = await startTestToolgate({
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_STATE_DIR: tempDir(),
    });
    try {
      const res = await http(
        tg.controlServer?.url ?? "",
        "GET",
        "/v1/approvals",
        undefined,
        bearer(t),
      );
      expect(res.status).toBe(200);
      const claims = JSON.parse(Buffer.from(t.split(".")[1] ?? "", "base64url").toString()) as {
        sub: string;
        roles: string[];
      };
      expect(claims).toMatchObject({ sub: "maria", roles: ["support_manager"] });
    } finally {
      await tg.stop();
    }
  });

  test("is refused when the configuration is not the development one", () => {
    const r = run(["maria"], {
      TOOLGATE_CONTROL_JWT_JWKS_URL: "https://idp.example.com/jwks.json",
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("only works with the development identity");
  });
});
