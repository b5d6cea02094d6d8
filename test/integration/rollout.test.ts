/**
 * Rollout stages (each stage's answers, the shadow decision recorded but not
 * returned), the promotion report over a trail produced here (golden
 * output), and a candidate policy's divergences counted.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { reportCommand } from "../../src/cli/report";
import { listTrailFiles } from "../../src/trail";
import { captureLogger } from "../helpers/capture";
import { libraryBundle, startWithClock } from "../helpers/containment";
import { bearer, token } from "../helpers/tokens";
import { decideAt, http, postJson, refRequest } from "../helpers/toolgate";

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string }>;
  access_request?: { evaluation_id: string };
  shadow?: unknown;
}
const codes = (d: Decision): string[] => d.reasons.map((r) => r.code);

const stagesBundle = libraryBundle((data) => {
  const tools = data.tools as Record<string, Record<string, unknown>>;
  tools["tickets.read"] = { class: "read", stage: "disabled" };
  tools["replies.draft"] = { class: "draft", stage: "shadow" };
  tools["refunds.issue"] = { class: "execute", stage: "draft_only" };
  tools["accounts.summary.read"] = { class: "read", stage: "draft_only" };
  data.rollout = { thresholds: { min_decisions: 3, min_approvals: 2 } };
}, "rollout-1");

let tg: Toolgate;
const decide = (req: Record<string, unknown>): Promise<Decision> =>
  decideAt(tg.agentServer.url, req);

describe("rollout stages", () => {
  beforeAll(async () => {
    tg = await startWithClock({ TOOLGATE_BUNDLE: stagesBundle });
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("disabled: tool_disabled", async () => {
    expect(codes(await decide(refRequest({ tool: "tickets.read" })))).toEqual(["tool_disabled"]);
  });

  test("shadow: the agent is told shadow_mode; what draft_only would answer is recorded, not returned", async () => {
    const d = await decide(refRequest({ tool: "replies.draft" }));
    expect(d.outcome).toBe("deny");
    expect(codes(d)).toEqual(["shadow_mode"]);
    expect(d.shadow).toBeUndefined();
    const az = await postJson(
      tg.agentServer.url,
      "/access/v1/evaluation",
      refRequest({ tool: "replies.draft" }),
    );
    expect(JSON.stringify(az.json)).not.toContain('shadow":');
    await tg.auditor?.flush();
    const dir = tg.config.audit.trail.dir;
    const lines = listTrailFiles(dir)
      .flatMap((f) => readFileSync(f, "utf8").trim().split("\n"))
      .map((l) => JSON.parse(l) as { kind: string; record: Record<string, unknown> });
    const rec = lines.find((l) => l.kind === "decision" && l.record.decision_id === d.decision_id);
    expect(rec?.record.shadow).toEqual({
      outcome: "allow",
      reasons: [expect.objectContaining({ code: "granted" })],
    });
  });

  test("draft_only: drafts and reads allowed, execution denied", async () => {
    expect((await decide(refRequest({ tool: "accounts.summary.read" }))).outcome).toBe("allow");
    const d = await decide(refRequest({ tool: "refunds.issue", args: { amount: 10 } }));
    expect(codes(d)).toEqual(["stage_draft_only"]);
  });

  test("supervised: even a harmless call needs approval", async () => {
    const d = await decide(refRequest({ tool: "replies.send" }));
    expect(d.outcome).toBe("needs_approval");
  });

  test("autonomous: the policy decides alone (reference deployment)", async () => {
    const ref = await startWithClock({});
    try {
      const res = await postJson(
        ref.agentServer.url,
        "/v1/decisions",
        refRequest({ tool: "refunds.issue", args: { amount: 10 } }),
      );
      expect((res.json as Decision).outcome).toBe("allow");
    } finally {
      await ref.stop();
    }
  });
});

describe("the promotion report", () => {
  test("over a trail produced here: golden output and recommendations", async () => {
    tg = await startWithClock({ TOOLGATE_BUNDLE: stagesBundle });
    const agent = tg.agentServer.url;
    const control = tg.controlServer?.url ?? "";
    const maria = bearer(await token("maria", { roles: ["support_manager"] }));
    try {
      // replies.draft (shadow): 4 decisions that draft_only would have allowed → promote
      for (let i = 0; i < 4; i++) await decide(refRequest({ tool: "replies.draft" }));
      // replies.send (supervised): 3 approvals granted and used unchanged → promote
      for (let i = 0; i < 3; i++) {
        const req = refRequest({ tool: "replies.send", args: { body: `hello ${i}` } });
        const d = await decide(req);
        const sub = await postJson(agent, "/access/v1/requests", {
          ...req,
          denial: { evaluation_id: d.access_request?.evaluation_id },
        });
        const id = (sub.json as { task: { id: string } }).task.id;
        expect((await postJson(control, `/v1/approvals/${id}/approve`, {}, maria)).status).toBe(
          200,
        );
        const st = (await http(agent, "GET", `/access/v1/requests/${id}`)).json as {
          result: { approval: unknown };
        };
        const allowed = await decide({
          ...req,
          context: { ...(req.context as object), approval: st.result.approval },
        });
        expect(allowed.outcome).toBe("allow");
        await postJson(agent, "/v1/actions", { decision_id: allowed.decision_id, status: "ok" });
      }
      // accounts.summary.read (draft_only): 3 allows, 2 action errors → demote
      for (let i = 0; i < 3; i++) {
        const d = await decide(refRequest({ tool: "accounts.summary.read" }));
        await postJson(agent, "/v1/actions", {
          decision_id: d.decision_id,
          status: i < 2 ? "error" : "ok",
          error: i < 2 ? { type: "timeout", message: "backend timed out" } : undefined,
        });
      }
      // tickets.read (disabled): 1 decision → stay
      await decide(refRequest({ tool: "tickets.read" }));
      await tg.auditor?.flush();
    } finally {
      await tg.stop();
    }
    const dir = tg.config.audit.trail.dir;
    let stdout = "";
    const out = { stdout: (s: string) => (stdout += s), stderr: () => undefined };
    expect(await reportCommand(["rollout", "--audit", dir, "--bundle", stagesBundle], out)).toBe(0);
    // durations are wall-clock: normalised; everything else is exact
    const text = stdout.replace(/\b\d+\.\ds\b/g, "N.Ns");
    const golden = join(__dirname, "..", "golden", "rollout-report.txt");
    if (process.env.UPDATE_GOLDEN === "1") writeFileSync(golden, text);
    expect(text).toBe(readFileSync(golden, "utf8"));

    let json = "";
    await reportCommand(["rollout", "--audit", dir, "--json"], {
      stdout: (s) => (json += s),
      stderr: () => undefined,
    });
    const report = JSON.parse(json) as {
      trail: { ok: boolean };
      tools: Array<{
        tool: string;
        recommendation: string;
        next_stage: string | null;
        approvals: Record<string, unknown>;
      }>;
    };
    expect(report.trail.ok).toBe(true);
    const by = Object.fromEntries(report.tools.map((t) => [t.tool, t]));
    // defaults (min_decisions 20) without --bundle: not enough evidence anywhere but the demotion
    expect(by["accounts.summary.read"]).toMatchObject({
      recommendation: "demote",
      next_stage: "shadow",
    });
    expect(by["replies.send"]?.approvals).toMatchObject({
      requested: 3,
      granted: 3,
      granted_unchanged: 3,
    });

    // a broken chain is said, and exits 1
    const file = listTrailFiles(dir)[0] as string;
    const lines = readFileSync(file, "utf8").split("\n");
    lines[2] = (lines[2] as string).replace('"outcome":"deny"', '"outcome":"allow"');
    writeFileSync(file, lines.join("\n"));
    let broken = "";
    expect(
      await reportCommand(["rollout", "--audit", dir], {
        stdout: (s) => (broken += s),
        stderr: () => undefined,
      }),
    ).toBe(1);
    expect(broken).toMatch(/hash chain is BROKEN/);
  });
});

describe("candidate policy in shadow", () => {
  test("divergences are counted and logged without changing answers", async () => {
    const candidate = libraryBundle((data) => {
      const tools = data.tools as Record<string, Record<string, unknown>>;
      tools["refunds.issue"] = { class: "execute", stage: "disabled" };
    }, "candidate-1");
    const cap = captureLogger();
    tg = await startWithClock({ TOOLGATE_CANDIDATE_BUNDLE: candidate }, { log: cap.log });
    try {
      for (let i = 0; i < 3; i++) {
        const d = await decide(refRequest({ tool: "refunds.issue", args: { amount: 10 } }));
        expect(d.outcome).toBe("allow"); // the active policy's answer
      }
      expect((await decide(refRequest({ tool: "tickets.read" }))).outcome).toBe("allow");
      const m = await http(tg.controlServer?.url ?? "", "GET", "/metrics");
      expect(m.text).toContain(
        'toolgate_candidate_divergences_total{tool="refunds.issue",outcome="allow",candidate="deny"} 3',
      );
      expect(m.text).not.toMatch(/toolgate_candidate_divergences_total\{tool="tickets.read"/);
      await tg.auditor?.flush();
      const recs = listTrailFiles(tg.config.audit.trail.dir)
        .flatMap((f) => readFileSync(f, "utf8").trim().split("\n"))
        .map(
          (l) =>
            JSON.parse(l) as {
              kind: string;
              record: { candidate?: { diverged: boolean; outcome: string } };
            },
        )
        .filter((l) => l.kind === "decision");
      expect(recs.filter((r) => r.record.candidate?.diverged === true)).toHaveLength(3);
      expect(recs.filter((r) => r.record.candidate?.diverged === false)).toHaveLength(1);
      await cap.log.flush();
      const div = cap.lines().filter((l) => l.event === "candidate.divergence");
      expect(div).toHaveLength(3);
      expect(div[0]).toMatchObject({
        tool: "refunds.issue",
        outcome: "allow",
        candidate_outcome: "deny",
      });
    } finally {
      await tg.stop();
    }
  });
});
